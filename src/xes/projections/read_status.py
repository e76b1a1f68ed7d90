"""Read status projection (``urn:xes:read-status:0``, ``docs/protocol/read-status.md``).

Who received and who displayed a message its sender asked to follow, in a room or a one-to-one
chat, folded from ``muc.message_sent`` and ``message.routed`` (v2: the proposer recorded the
body, the marker and the id it names, and the ``<request/>``; nothing here parses a stanza).

A *scope* is a room, or the messages one user sends another. Per scope:

* a XEP-0333 marker or XEP-0184 receipt names a recent body message by any of its ids (its
  stanza-id, origin-id or the sender's ``id``), which :mod:`~xes.projections.marker_targets`
  (shared with the inbox) resolves to its log position; a marker for an id not (or no longer)
  known changes nothing;
* per member (room: bare JID; one-to-one: the recipient's resource) two *watermarks*: the
  position up to which it sent ``received`` and up to which ``displayed`` (``acknowledged``
  counts as displayed). A marker marks every earlier message too (XEP-0333 §3), displayed
  implies received, and a watermark never moves back;
* the *tracked* messages (those with ``<request/>``) keep who should have them, recorded when
  sent (the room's members and occupants, or the recipient's devices the message went to; the
  sender excluded), and when each member's watermark first passed them.

When a marker moves a watermark past tracked messages, each of their originators gets one
notification per marker event listing every message now covered (a displayed marker over 50
messages is one stanza, not 50): stream-management sessions as outbox rows here (ADR 0008),
the others from delivery, which finds the stanzas under the event's position.

Bounds (constants, part of the replicated fold: changing one is a projection rebuild): a message
is followed while ``marker_targets`` keeps it (the last 1,000 body messages of its scope, none
older than 7 days before the newest); notification rows for delivery for
:data:`NOTIFY_KEEP_MS`.

Applies after ``muc`` (which refuses a message from a non-occupant first) and before
``marker_targets`` (a marker resolves against the messages before its own event), and reads the
rooms and sessions projections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import lmdb

from xes.events import Committed
from xes.events.catalog import MessageRouted, MucMessageSent, MucRoomDestroyed
from xes.jid import bare_of
from xes.muc.model import ROLE_RANK, Room, occupant_id
from xes.projections import marker_targets, stream_mgmt
from xes.projections import muc as muc_view
from xes.projections import sessions as sessions_view
from xes.projections.base import Projection, delete_prefix, dump, load
from xes.projections.marker_targets import chat_scope, room_scope
from xes.stanza import read_status as render
from xes.stanza.core import addressed
from xes.store.env import Store, from_u64, u64

TRACKED = "rs.tracked"
MARKS = "rs.marks"
NOTIFY = "rs.notify"

NOTIFY_KEEP_MS = 10 * 60 * 1000
"""How long delivery can still find a marker event's notifications (it lags by milliseconds)."""
DISPLAYED = ("displayed", "acknowledged")


def _k(scope: bytes, part: bytes) -> bytes:
    return scope + b"\x00" + part


@dataclass(slots=True)
class Tracked:
    """A message its sender follows, as stored."""

    seq: int
    sender: str
    """Bare JID of the originator."""
    id: str
    """The id the query and the notifications use (room: stanza-id; chat: the sender's id)."""
    msg_id: str | None
    at: int
    audience: list[list[str]]
    """``[member, nick]`` who should have it, when sent, in member order (nick: room only)."""
    received: dict[str, int] = field(default_factory=dict)
    """member -> when its received watermark first passed the message (ms)."""
    displayed: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.sender,
            "id": self.id,
            "mid": self.msg_id,
            "at": self.at,
            "to": self.audience,
            "r": self.received,
            "d": self.displayed,
        }

    @classmethod
    def from_json(cls, seq: int, obj: dict[str, Any]) -> Tracked:
        return cls(
            seq, obj["from"], obj["id"], obj["mid"], obj["at"], obj["to"], obj["r"], obj["d"]
        )


class ReadStatus(Projection):
    name = "read_status"
    version = 2
    """2: the id index moved to marker_targets (shared with the inbox)."""
    dbs = (TRACKED, MARKS, NOTIFY)
    handles = ("muc.message_sent", "message.routed", "muc.room_destroyed")

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._rooms: dict[str, tuple[bytes, Room]] = {}

    def _room(self, txn: lmdb.Transaction, jid: str) -> Room | None:
        """The room, parsed once per row version (a row is big; messages do not change it)."""
        value = muc_view.raw(self.store, txn, jid)
        if value is None:
            return None
        cached = self._rooms.get(jid)
        if cached is not None and cached[0] == value:
            return cached[1]
        room = muc_view.parse(value)
        if len(self._rooms) >= 1024:
            self._rooms.clear()
        self._rooms[jid] = (value, room)
        return room

    # -- events --------------------------------------------------------------------------------

    def on_muc_message_sent(self, txn: lmdb.Transaction, c: Committed, ev: MucMessageSent) -> None:
        view = sessions_view.get(self.store, txn, ev.session)
        room = self._room(txn, ev.room)
        if view is None or room is None:
            return
        scope, member = room_scope(ev.room), view.bare
        if ev.marker and ev.marker_id:
            covered = self._mark(txn, c, scope, member, ev.marker, ev.marker_id)
            occupant = occupant_id(room.secret, member)

            def stanza(originator: str, kind: str, items: list[tuple[str, str | None]]) -> str:
                who = render.who_in_room(member, ev.nick, occupant, sees_jids(room, originator))
                return render.notification(room.jid, c.seq, kind, who, c.envelope.at, items)

            self._notify(txn, c, ev.marker, covered, stanza)
        if ev.body and ev.track:
            audience = _room_audience(room, member)
            at = c.envelope.at
            self._follow(txn, scope, Tracked(c.seq, member, ev.stanza_id, ev.msg_id, at, audience))

    def on_message_routed(self, txn: lmdb.Transaction, c: Committed, ev: MessageRouted) -> None:
        if ev.type in ("groupchat", "error", "headline") or ev.received_at is not None:
            return  # a re-routed copy (received_at) is the same message, already indexed
        sender, recipient = bare_of(ev.sender), bare_of(ev.to)
        if sender == recipient or "@" not in sender:
            return
        if ev.marker and ev.marker_id:
            device = ev.sender.partition("/")[2]
            covered = self._mark(txn, c, chat_scope(recipient, sender), device, *_m(ev))

            def stanza(originator: str, kind: str, items: list[tuple[str, str | None]]) -> str:
                who = {"with": sender, **render.who_device(device)}
                return render.notification(originator, c.seq, kind, who, c.envelope.at, items)

            self._notify(txn, c, ev.marker, covered, stanza)
        if ev.body and ev.msg_id and ev.track:
            devices = {t.partition("/")[2] for t in ev.targets if bare_of(t) == recipient}
            if ev.offline_resource:
                devices.add(ev.offline_resource)
            audience = [[d, ""] for d in sorted(devices)]
            tracked = Tracked(c.seq, sender, ev.msg_id, ev.msg_id, c.envelope.at, audience)
            self._follow(txn, chat_scope(sender, recipient), tracked)

    def on_muc_room_destroyed(
        self, txn: lmdb.Transaction, c: Committed, ev: MucRoomDestroyed
    ) -> None:
        prefix = room_scope(ev.room) + b"\x00"
        for name in (TRACKED, MARKS):
            delete_prefix(txn, self.db(name), prefix)

    # -- the fold ------------------------------------------------------------------------------

    def _follow(self, txn: lmdb.Transaction, scope: bytes, tracked: Tracked) -> None:
        """Follow a message its sender asked about; forget those ``marker_targets`` dropped
        (a marker can no longer name them, so nothing about them can change)."""
        db = self.db(TRACKED)
        txn.put(_k(scope, u64(tracked.seq)), dump(tracked.to_json()), db=db)
        kept = marker_targets.oldest(self.store, txn, scope)
        prefix = scope + b"\x00"
        cur = txn.cursor(db=db)
        if kept is None or not cur.set_range(prefix):
            return
        while cur.key().startswith(prefix) and from_u64(cur.key()[len(prefix) :]) < kept:
            if not cur.delete():
                break

    def _mark(
        self,
        txn: lmdb.Transaction,
        c: Committed,
        scope: bytes,
        member: str,
        marker: str,
        marker_id: str,
    ) -> list[Tracked]:
        """Move ``member``'s watermarks to the marked message; the tracked messages it newly
        covers at the marker's strength, in log order."""
        target = marker_targets.resolve(self.store, txn, scope, marker_id)
        if target is None:
            return []
        mk = _k(scope, member.encode())
        marks = load(txn.get(mk, db=self.db(MARKS))) or {"r": 0, "d": 0}
        old_r, old_d = marks["r"], marks["d"]
        new_d = max(old_d, target) if marker in DISPLAYED else old_d
        new_r = max(old_r, target, new_d)
        if (new_r, new_d) == (old_r, old_d):
            return []
        txn.put(mk, dump({"r": new_r, "d": new_d}), db=self.db(MARKS))
        at, covered = c.envelope.at, []
        # old_d <= old_r always: displayed implies received.
        for t in tracked_between(self.store, txn, scope, old_d, new_r):
            if t.sender == member:
                continue  # the originator's own other device: says nothing about the others
            got_r = t.seq > old_r and member not in t.received
            got_d = t.seq <= new_d and member not in t.displayed
            if got_r:
                t.received[member] = at
            if got_d:
                t.displayed[member] = at
                t.received.setdefault(member, at)
            if got_r or got_d:
                txn.put(_k(scope, u64(t.seq)), dump(t.to_json()), db=self.db(TRACKED))
            if got_d or (got_r and marker not in DISPLAYED):
                covered.append(t)
        return covered

    # -- notifications -------------------------------------------------------------------------

    def _notify(
        self,
        txn: lmdb.Transaction,
        c: Committed,
        marker: str,
        covered: list[Tracked],
        stanza: Callable[[str, str, list[tuple[str, str | None]]], str],
    ) -> None:
        """One stanza per originator listing everything this marker newly covered: outbox rows
        for its managed sessions now, and a row under the event's position for delivery."""
        if not covered:
            return
        kind = "displayed" if marker in DISPLAYED else "received"
        by_sender: dict[str, list[tuple[str, str | None]]] = {}
        for t in covered:
            by_sender.setdefault(t.sender, []).append((t.id, t.msg_id))
        at, rows = c.envelope.at, []
        for originator in sorted(by_sender):
            xml = stanza(originator, kind, by_sender[originator])
            rows.append([originator, xml])
            for view in sessions_view.of_user(self.store, txn, originator):
                if view.available:
                    copy = addressed(xml, view.jid).decode()
                    stream_mgmt.queue(self.store, txn, view.session, [copy], at)
        txn.put(u64(c.seq), dump({"at": at, "rows": rows}), db=self.db(NOTIFY))
        cur = txn.cursor(db=self.db(NOTIFY))
        if cur.first():
            while load(cur.value())["at"] < at - NOTIFY_KEEP_MS:
                if not cur.delete():
                    break


def _m(ev: MessageRouted) -> tuple[str, str]:
    assert ev.marker is not None and ev.marker_id is not None
    return ev.marker, ev.marker_id


def _room_audience(room: Room, sender: str) -> list[list[str]]:
    """Who should get a room message when sent: members (and above) and occupants, by bare
    JID, without the sender; with the nickname an occupant had then."""
    nicks: dict[str, str] = {}
    for k in sorted(room.occupants):
        nicks.setdefault(room.occupants[k].bare, room.occupants[k].nick)
    members = {b for b, a in room.affiliations.items() if a in ("member", "admin", "owner")}
    return [[b, nicks.get(b, "")] for b in sorted(members | set(nicks)) if b != sender]


def is_moderator(room: Room, bare: str) -> bool:
    """Moderators (and admins, owners: moderators whenever they are in the room) see real JIDs
    and may ask about anyone's message (XEP-0045 §5.1, §5.2)."""
    if room.affiliation(bare) in ("admin", "owner"):
        return True
    return any(ROLE_RANK[o.role] >= ROLE_RANK["moderator"] for o in room.occupants_of(bare))


def sees_jids(room: Room, bare: str) -> bool:
    """XEP-0045 ``whois``: a semi-anonymous room shows real JIDs to moderators only."""
    return room.non_anonymous or is_moderator(room, bare)


# -- reads -------------------------------------------------------------------------------------


def tracked_between(
    store: Store, txn: lmdb.Transaction, scope: bytes, after: int, upto: int
) -> Iterator[Tracked]:
    """Tracked messages of ``scope`` at positions in ``(after, upto]``, in log order, that
    ``marker_targets`` still keeps."""
    prefix = scope + b"\x00"
    kept = marker_targets.oldest(store, txn, scope)
    if kept is None:
        return
    cur = txn.cursor(db=store.db(TRACKED))
    if not cur.set_range(prefix + u64(max(after + 1, kept))):
        return
    for k, v in cur:
        if not k.startswith(prefix) or (seq := from_u64(k[len(prefix) :])) > upto:
            return
        yield Tracked.from_json(seq, load(v))


def find(store: Store, txn: lmdb.Transaction, scope: bytes, msg_id: str) -> Tracked | None:
    """The tracked message ``msg_id`` names in ``scope`` (any of its ids), if still tracked."""
    seq = marker_targets.resolve(store, txn, scope, msg_id)
    if seq is None:
        return None
    row = txn.get(_k(scope, u64(seq)), db=store.db(TRACKED))
    return None if row is None else Tracked.from_json(seq, load(row))


def notifications(store: Store, txn: lmdb.Transaction, seq: int) -> list[tuple[str, str]]:
    """``(originator bare JID, stanza without to)`` the event at ``seq`` sends, for delivery."""
    obj = load(txn.get(u64(seq), db=store.db(NOTIFY)))
    return [] if obj is None else [(bare, xml) for bare, xml in obj["rows"]]
