"""Group chat projection (XEP-0045, ADR 0011): every room, on every node, in log order.

Each room is one row (:class:`xes.muc.model.Room` as canonical JSON: configuration,
affiliations, reserved nicknames, occupants with their sessions, subject), written by the pure
fold :func:`xes.muc.transition.apply`. Beside it: which sessions are in which rooms (so a
session cannot end while it is still an occupant: no ghosts), the discussion history (the last
messages of each room, keyed by log position) and counters.

Apply re-checks every premise the proposer checked (the room exists and is not locked for the
joiner, the nickname is free, the sender is an occupant with voice, the actor may change that
role or affiliation) and refuses the proposal when one no longer holds, so a race between two
nodes ends in an error reply, never in a room that disagrees with its rules. It also refuses to
end a session (``session.ended``, a replacing ``session.bound``, ``node.started`` of a new boot)
while that session is still an occupant: whoever ends a session must make its occupants leave
in the same proposal (:mod:`xes.features.session_end`).

Stanzas for stream-management sessions are placed in their outboxes here (ADR 0008), exactly
where the event is in the log; the holding node's delivery writes every other session's copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lmdb

from xes.events import Committed
from xes.events.catalog import (
    AccountRemoved,
    MucAffiliationSet,
    MucMessageSent,
    MucNickChanged,
    MucOccupantJoined,
    MucOccupantLeft,
    MucPrivateSent,
    MucRoleSet,
    MucRoomConfigured,
    MucRoomCreated,
    MucRoomDestroyed,
    MucSubjectSet,
    NodeStarted,
    SessionBound,
    SessionEnded,
)
from xes.jid import bare_of
from xes.muc import model, transition
from xes.muc.model import Room
from xes.muc.nick import key as nick_key
from xes.muc.transition import Context, HistoryItem
from xes.projections import sessions as sessions_view
from xes.projections import stream_mgmt
from xes.projections.base import Projection, Rejected, delete_prefix, dump, iter_prefix, load
from xes.stanza.core import addressed
from xes.store.env import Store, from_u64, u64

ROOMS = "muc.rooms"
SESSIONS = "muc.sessions"
HISTORY = "muc.history"
META = "muc.meta"

HISTORY_SLACK = 200
"""History rows kept beyond a room's history length, so a node whose delivery reaches a join
a little after later messages were applied still finds the history as it was at the join."""


def _sess_key(session: str, room: str) -> bytes:
    return session.encode() + b"\x00" + room.encode()


def _hist_prefix(room: str) -> bytes:
    return room.encode() + b"\x00"


class Muc(Projection):
    name = "muc"
    dbs = (ROOMS, SESSIONS, HISTORY, META)
    handles = (
        *transition.EVENT_TYPES,
        "session.ended",
        "session.bound",
        "node.started",
        "account.removed",
    )

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._parsed: dict[str, tuple[bytes, Room]] = {}

    # -- storage -----------------------------------------------------------------------------

    def _load(self, txn: lmdb.Transaction, room: str, mutates: bool) -> Room | None:
        """The stored room. Events that leave the room as it is (messages) share one parsed
        copy per row; the others get their own, since the fold changes it in place (and a
        refused proposal's changes must not outlive its rolled-back transaction)."""
        value = txn.get(room.encode(), db=self.db(ROOMS))
        if value is None:
            return None
        value = bytes(value)
        if mutates:
            return parse(value)
        cached = self._parsed.get(room)
        if cached is not None and cached[0] == value:
            return cached[1]
        parsed = parse(value)
        if len(self._parsed) >= 4096:
            self._parsed.clear()
        self._parsed[room] = (value, parsed)
        return parsed

    def _save(
        self,
        txn: lmdb.Transaction,
        jid: str,
        old: set[str],
        old_index: _Indexed,
        after: Room | None,
    ) -> None:
        new = _sessions_of(after)
        for session in old - new:
            txn.delete(_sess_key(session, jid), db=self.db(SESSIONS))
        for session in new - old:
            txn.put(_sess_key(session, jid), b"", db=self.db(SESSIONS))
        # Indexes kept with the row, so listings and the per-owner cap read no room row.
        new_index = _indexed(after)
        for bare in old_index.owners - new_index.owners:
            txn.delete(_owner_key(bare, jid), db=self.db(META))
        for bare in new_index.owners - old_index.owners:
            txn.put(_owner_key(bare, jid), b"", db=self.db(META))
        if new_index.listed is None:
            txn.delete(b"p\x00" + jid.encode(), db=self.db(META))
        elif new_index.listed != old_index.listed:
            txn.put(b"p\x00" + jid.encode(), new_index.listed.encode(), db=self.db(META))
        if after is not None:
            txn.put(jid.encode(), dump(after.to_json()), db=self.db(ROOMS))
        else:
            txn.delete(jid.encode(), db=self.db(ROOMS))
            delete_prefix(txn, self.db(HISTORY), _hist_prefix(jid))
            txn.delete(b"h\x00" + jid.encode(), db=self.db(META))

    # -- sessions may not end while they are occupants ----------------------------------------

    def on_session_ended(self, txn: lmdb.Transaction, c: Committed, ev: SessionEnded) -> None:
        self._no_occupant(txn, ev.session)

    def on_session_bound(self, txn: lmdb.Transaction, c: Committed, ev: SessionBound) -> None:
        old = sessions_view.by_full_jid(self.store, txn, ev.jid)
        if old is not None and old.session != ev.session:
            self._no_occupant(txn, old.session)  # the bind replaces (ends) it

    def on_node_started(self, txn: lmdb.Transaction, c: Committed, ev: NodeStarted) -> None:
        for view in sessions_view.of_node(self.store, txn, ev.node):
            if view.boot != ev.boot:
                self._no_occupant(txn, view.session)  # the new boot ends them

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        """A removed account keeps no affiliation or nickname anywhere: a user registered
        later under the same name inherits nothing (a room may be left without an owner; the
        operator can destroy it)."""
        for room in all_rooms(self.store, txn):
            if ev.jid not in room.affiliations and ev.jid not in room.reserved:
                continue
            sessions, indexed = _sessions_of(room), _indexed(room)
            room.affiliations.pop(ev.jid, None)
            room.reserved.pop(ev.jid, None)
            self._save(txn, room.jid, sessions, indexed, room)

    # -- room events -------------------------------------------------------------------------

    def _fold(self, txn: lmdb.Transaction, committed: Committed, event: Any) -> None:
        room = self._load(txn, event.room, not isinstance(event, MucMessageSent | MucPrivateSent))
        self._check(txn, room, event)
        ctx = Context(committed.seq, committed.envelope.at, self._history_reader(txn))
        if isinstance(event, MucMessageSent | MucPrivateSent):
            # Messages leave the room as it was: no row to write, no index to follow.
            after, outs = transition.apply(room, event, ctx)
            if after is not None and isinstance(event, MucMessageSent):
                self._keep_history(txn, committed, after, event)
        else:
            before, indexed = _sessions_of(room), _indexed(room)
            after, outs = transition.apply(room, event, ctx)
            self._save(txn, event.room, before, indexed, after)
        self._queue_managed(txn, committed, outs)

    on_muc_room_created = on_muc_room_configured = on_muc_room_destroyed = _fold
    on_muc_occupant_joined = on_muc_occupant_presence = on_muc_occupant_left = _fold
    on_muc_nick_changed = on_muc_role_set = on_muc_affiliation_set = _fold
    on_muc_subject_set = on_muc_message_sent = on_muc_private_sent = _fold

    def _no_occupant(self, txn: lmdb.Transaction, session: str) -> None:
        prefix = session.encode() + b"\x00"
        for k, _ in iter_prefix(txn, self.db(SESSIONS), prefix):
            room = k[len(prefix) :].decode()
            raise Rejected(f"muc-occupant-remains: {session} is in {room}")

    def _history_reader(self, txn: lmdb.Transaction) -> transition.HistoryReader:
        return lambda room, before, most: history(self.store, txn, room, before, most)

    def _keep_history(
        self, txn: lmdb.Transaction, c: Committed, room: Room, ev: MucMessageSent
    ) -> None:
        if room.config.history_length <= 0:
            return
        row = {"at": c.envelope.at, "xml": ev.xml}
        txn.put(_hist_prefix(room.jid) + u64(c.seq), dump(row), db=self.db(HISTORY))
        meta_key = b"h\x00" + room.jid.encode()
        raw = txn.get(meta_key, db=self.db(META))
        count = (from_u64(raw) if raw else 0) + 1
        keep = room.config.history_length + HISTORY_SLACK
        if count > keep:
            cur = txn.cursor(db=self.db(HISTORY))
            prefix = _hist_prefix(room.jid)
            if cur.set_range(prefix):
                while count > keep and cur.key().startswith(prefix):
                    if not cur.delete():
                        break
                    count -= 1
        txn.put(meta_key, u64(count), db=self.db(META))

    def _queue_managed(self, txn: lmdb.Transaction, c: Committed, outs: list[Any]) -> None:
        """Stream-management sessions get their copies as outbox rows (ADR 0008)."""
        at = c.envelope.at
        managed: dict[str, bool] = {}
        for out in outs:
            is_managed = managed.get(out.session)
            if is_managed is None:
                is_managed = managed[out.session] = stream_mgmt.managed(
                    self.store, txn, out.session
                )
            if is_managed:
                xml = addressed(out.xml, out.jid).decode()
                stream_mgmt.queue(self.store, txn, out.session, [xml], at)

    # -- premises ------------------------------------------------------------------------------

    def _check(self, txn: lmdb.Transaction, room: Room | None, ev: Any) -> None:
        if isinstance(ev, MucRoomCreated):
            if room is not None:
                raise Rejected(f"muc-room-exists: {ev.room}")
            return
        if room is None:
            raise Rejected(f"muc-no-room: {ev.room}")
        if isinstance(ev, MucOccupantJoined):
            self._check_join(txn, room, ev)
        elif isinstance(ev, MucRoomConfigured | MucRoomDestroyed):
            actor = ev.by
            if actor != "operator" and room.affiliation(bare_of(actor)) != "owner":
                raise Rejected("muc-forbidden: only owners configure or destroy a room")
        elif isinstance(ev, MucRoleSet):
            target = room.occupants.get(nick_key(ev.nick))
            if target is None:
                raise Rejected(f"muc-no-occupant: {ev.nick}")
            actor = _occupant_of_jid(room, ev.by)
            error = model.role_change_error(room, actor, target, ev.role)
            if error is not None:
                raise Rejected(f"muc-{error}: role {ev.role} for {ev.nick}")
        elif isinstance(ev, MucAffiliationSet):
            actor_bare = "operator" if ev.by == "operator" else bare_of(ev.by)
            if ev.registration:
                error = (
                    model.registration_error(room, ev.jid, ev.affiliation, ev.nick)
                    if actor_bare == ev.jid
                    else "forbidden"
                )
            else:
                error = model.affiliation_change_error(room, actor_bare, ev.jid, ev.affiliation)
            if error is not None:
                raise Rejected(f"muc-{error}: affiliation {ev.affiliation} for {ev.jid}")
        elif isinstance(ev, MucOccupantLeft):
            return  # leaving a room one is not in (kicked meanwhile) changes nothing: no refusal
        else:
            occupant = room.by_session(ev.session)
            if occupant is None:
                raise Rejected(f"muc-not-occupant: {ev.session}")
            if isinstance(ev, MucMessageSent) and not model.may_speak(room, occupant):
                raise Rejected("muc-forbidden: no voice")
            if isinstance(ev, MucMessageSent) and ev.nick != occupant.nick:
                # Sent before a nickname change committed: it must not go out under a nickname
                # someone else may hold by now. The client sends it again.
                raise Rejected("muc-not-acceptable: the nickname changed meanwhile")
            if isinstance(ev, MucSubjectSet) and not model.may_change_subject(room, occupant):
                raise Rejected("muc-forbidden: subject")
            if isinstance(ev, MucPrivateSent) and nick_key(ev.to_nick) not in room.occupants:
                raise Rejected(f"muc-no-occupant: {ev.to_nick}")
            if isinstance(ev, MucNickChanged):
                holder = room.occupants.get(nick_key(ev.nick))
                if holder is not None and holder is not occupant:
                    raise Rejected("muc-conflict: nickname in use")
                if model.reserved_by_other(room, occupant.bare, nick_key(ev.nick)):
                    raise Rejected("muc-conflict: nickname reserved")

    def _check_join(self, txn: lmdb.Transaction, room: Room, ev: MucOccupantJoined) -> None:
        view = sessions_view.get(self.store, txn, ev.session)
        if view is None or view.jid != ev.jid:
            raise Rejected(f"muc-no-session: {ev.session}")
        bare, k = bare_of(ev.jid), nick_key(ev.nick)
        current = room.by_session(ev.session)
        if current is not None:
            if nick_key(current.nick) != k:
                raise Rejected("muc-already-occupant: under another nickname")
            return  # a rejoin of the same session
        existing = room.occupants.get(k)
        if existing is not None and existing.bare == bare:
            return  # another session of the same user shares the nickname
        error = model.join_error(room, bare, k)
        if error is not None:
            raise Rejected(f"muc-{error}: join {ev.room}/{ev.nick}")
        if room.config.password_hash and not ev.password_ok:
            raise Rejected("muc-not-authorized: password")


@dataclass(frozen=True, slots=True)
class _Indexed:
    owners: frozenset[str]
    listed: str | None
    """The room's name if it is listed publicly (public and not locked), else None."""


def _indexed(room: Room | None) -> _Indexed:
    if room is None:
        return _Indexed(frozenset(), None)
    listed = room.config.name if room.config.public and not room.locked else None
    return _Indexed(frozenset(room.owners()), listed)


def _owner_key(bare: str, room: str) -> bytes:
    return b"o\x00" + bare.encode() + b"\x00" + room.encode()


def _sessions_of(room: Room | None) -> set[str]:
    if room is None:
        return set()
    return {s for o in room.occupants.values() for s in o.sessions}


def _occupant_of_jid(room: Room, jid: str) -> model.Occupant | None:
    for occupant in room.occupants.values():
        for s in occupant.sessions.values():
            if s.jid == jid:
                return occupant
    return None


# -- reads -------------------------------------------------------------------------------------


def get(store: Store, txn: lmdb.Transaction, room: str) -> Room | None:
    raw = txn.get(room.encode(), db=store.db(ROOMS))
    return None if raw is None else Room.from_json(load(raw))


def raw(store: Store, txn: lmdb.Transaction, room: str) -> bytes | None:
    """The room's stored row (for readers that keep a parsed copy, see :func:`parse`)."""
    value = txn.get(room.encode(), db=store.db(ROOMS))
    return None if value is None else bytes(value)


def parse(raw_row: bytes) -> Room:
    return Room.from_json(load(raw_row))


def summary(room: Room) -> dict[str, Any]:
    """One line about a room, as ``xes muc list`` and the admin API show it."""
    return {
        "room": room.jid,
        "name": room.config.name,
        "occupants": len(room.occupants),
        "persistent": room.config.persistent,
        "public": room.config.public,
        "members_only": room.config.members_only,
        "locked": room.locked,
    }


def details(room: Room, history: int, archived: int) -> dict[str, Any]:
    """A room in full, as ``xes muc show`` and ``xes audit room`` show it (the password is
    never shown, only whether there is one)."""
    config = room.config.to_json()
    config["password_protected"] = bool(config.pop("password_hash"))
    return {
        **summary(room),
        "config": config,
        "subject": room.subject,
        "subject_by": room.subject_by,
        "affiliations": dict(sorted(room.affiliations.items())),
        "reserved_nicks": dict(sorted(room.reserved.items())),
        "occupants": [
            {
                "nick": o.nick,
                "user": o.bare,
                "role": o.role,
                "affiliation": room.affiliation(o.bare),
                "sessions": {s.session: s.jid for s in o.sessions.values()},
            }
            for _, o in sorted(room.occupants.items())
        ],
        "history_messages": history,
        "archived_messages": archived,
    }


def all_rooms(store: Store, txn: lmdb.Transaction) -> list[Room]:
    return [Room.from_json(load(v)) for _, v in txn.cursor(db=store.db(ROOMS))]


def room_names(store: Store, txn: lmdb.Transaction) -> list[str]:
    return [k.decode() for k, _ in txn.cursor(db=store.db(ROOMS))]


def rooms_of_session(store: Store, txn: lmdb.Transaction, session: str) -> list[str]:
    prefix = session.encode() + b"\x00"
    return [k[len(prefix) :].decode() for k, _ in iter_prefix(txn, store.db(SESSIONS), prefix)]


def owned_by(store: Store, txn: lmdb.Transaction, bare: str) -> int:
    """How many rooms ``bare`` owns (the per-user room cap counts these)."""
    return sum(1 for _ in iter_prefix(txn, store.db(META), b"o\x00" + bare.encode() + b"\x00"))


def listed_rooms(store: Store, txn: lmdb.Transaction) -> list[tuple[str, str]]:
    """``(room JID, name)`` of every publicly listed room (public, not locked), in JID order."""
    return [(k[2:].decode(), v.decode()) for k, v in iter_prefix(txn, store.db(META), b"p\x00")]


def history(
    store: Store, txn: lmdb.Transaction, room: str, before: int, most: int
) -> list[HistoryItem]:
    """The room's last ``most`` history messages logged before position ``before``."""
    prefix = _hist_prefix(room)
    cur = txn.cursor(db=store.db(HISTORY))
    found = cur.prev() if cur.set_range(prefix + u64(before)) else cur.last()
    out: list[HistoryItem] = []
    while found and len(out) < most and cur.key().startswith(prefix):
        obj = load(cur.value())
        out.append(HistoryItem(from_u64(cur.key()[len(prefix) :]), obj["at"], obj["xml"]))
        found = cur.prev()
    out.reverse()
    return out
