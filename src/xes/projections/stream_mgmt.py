"""Stream management projection (XEP-0198, ADR 0008): each managed session's outbox.

Once a session enables stream management, every stanza the server sends it is a numbered row of
its outbox, decided here at apply time from the committed event and the state of the other
projections at that point of the log: messages, routed iq and presence for its JID, roster pushes
once it asked for the roster, offline messages it flushed, and the server's own answers to it
(``sm.stanzas_queued``). Every node computes the same rows with the same numbers, so the node
holding the connection writes them in order and any other node can resend exactly the rows the
client has not acknowledged when the session resumes there. Rows the client acknowledged are
dropped when ``sm.acked`` (coalesced) or ``sm.resumed`` records it.

This projection applies before ``sessions`` (it sees a replaced session's state before the
sessions projection forgets it) and before ``offline`` (a flush reads messages the offline
projection then drops).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import lmdb

from xes.events import Committed
from xes.events.catalog import (
    BlockingChanged,
    IqRouted,
    MessageRouted,
    OfflineFlushed,
    PresenceRouted,
    PresenceUpdated,
    RosterItemRemoved,
    RosterItemUpdated,
    SessionBound,
    SessionEnded,
    SmAcked,
    SmDetached,
    SmEnabled,
    SmHandled,
    SmResumed,
    SmRosterRequested,
    SmStanzasQueued,
)
from xes.projections import blocking as blocking_view
from xes.projections import offline as offline_view
from xes.projections import pep as pep_view
from xes.projections import sessions as sessions_view
from xes.projections.base import Projection, Rejected, dump, load
from xes.projections.blocking import push_bytes as push_bytes_blocking
from xes.stanza import carbons
from xes.stanza.core import addressed, sender_of
from xes.stanza.delay import with_delay
from xes.stanza.roster import item_element, push_bytes, removed_element
from xes.store.env import Store, from_u64, u64
from xes.xml import Element

STATE = "sm.state"
OUTBOX = "sm.outbox"
DETACHED = "sm.detached"
ENDED = "sm.ended"
ENDED_BY_TIME = "sm.ended_by_time"

TOMBSTONE_MS = 24 * 3600 * 1000
"""How long the handled count of an ended session is kept for ``<failed h=.../>``."""


@dataclass(frozen=True, slots=True)
class SmState:
    session: str
    jid: str
    epoch: int
    resume: bool
    timeout: int
    next: int
    """Number of the last outbox row (rows are numbered from 1 since enable; never wrapped)."""
    acked: int
    """Rows the client is recorded to have acknowledged (they are gone)."""
    handled: int
    """Client stanzas whose effects are committed."""
    interested: bool
    deadline: int
    """While detached from any node: when the session ends unless resumed (ms); else 0."""

    @classmethod
    def from_json(cls, session: str, obj: dict[str, Any]) -> SmState:
        return cls(session=session, **obj)

    def to_json(self) -> dict[str, Any]:
        # Spelled out, not ``asdict`` (which deep-copies): this runs for every outbox row a
        # room or a message adds (issue 17, replay speed). ``session`` is the key, not stored.
        return {
            "jid": self.jid,
            "epoch": self.epoch,
            "resume": self.resume,
            "timeout": self.timeout,
            "next": self.next,
            "acked": self.acked,
            "handled": self.handled,
            "interested": self.interested,
            "deadline": self.deadline,
        }


@dataclass(frozen=True, slots=True)
class OutboxRow:
    n: int
    xml: str
    kind: str
    """message | iq | other (presence, pushes, the server's answers)."""
    at: int
    """When the server received what the row carries (ms): the XEP-0203 stamp on resend."""
    shared: bool = False
    """message: other resources of the user got the same event."""


def _row_key(session: str, n: int) -> bytes:
    return session.encode() + b"\x00" + u64(n)


class StreamManagement(Projection):
    name = "sm"
    dbs = (STATE, OUTBOX, DETACHED, ENDED, ENDED_BY_TIME)
    handles = (
        "sm.enabled",
        "sm.handled",
        "sm.acked",
        "sm.stanzas_queued",
        "sm.roster_requested",
        "sm.resumed",
        "sm.detached",
        "session.bound",
        "session.ended",
        "message.routed",
        "iq.routed",
        "presence.updated",
        "presence.routed",
        "roster.item_updated",
        "roster.item_removed",
        "offline.flushed",
        *pep_view.NOTIFYING,
        "blocking.changed",
    )

    # -- state ---------------------------------------------------------------------------------

    def _state(self, txn: lmdb.Transaction, session: str) -> SmState | None:
        raw = txn.get(session.encode(), db=self.db(STATE))
        return None if raw is None else SmState.from_json(session, load(raw))

    def _save(self, txn: lmdb.Transaction, st: SmState) -> None:
        txn.put(st.session.encode(), dump(st.to_json()), db=self.db(STATE))

    def _current(self, txn: lmdb.Transaction, session: str, epoch: int) -> SmState:
        st = self._state(txn, session)
        if st is None:
            raise Rejected(f"sm-unknown: {session}")
        if st.epoch != epoch:
            raise Rejected(f"sm-stale: epoch {epoch}, session is at {st.epoch}")
        return st

    def _append(self, txn: lmdb.Transaction, st: SmState, rows: list[dict[str, Any]]) -> SmState:
        n = st.next
        for row in rows:
            n += 1
            txn.put(_row_key(st.session, n), dump(row), db=self.db(OUTBOX))
        return replace(st, next=n)

    def _drop_rows(self, txn: lmdb.Transaction, session: str, upto: int) -> None:
        prefix = session.encode() + b"\x00"
        cur = txn.cursor(db=self.db(OUTBOX))
        if not cur.set_range(prefix):
            return
        while cur.key().startswith(prefix) and from_u64(cur.key()[len(prefix) :]) <= upto:
            if not cur.delete():
                break

    def _to_full(self, txn: lmdb.Transaction, full: str, row: dict[str, Any]) -> None:
        view = sessions_view.by_full_jid(self.store, txn, full)
        if view is not None:
            self._to_session(txn, view.session, row)

    def _managed(self, txn: lmdb.Transaction, full: str) -> bool:
        view = sessions_view.by_full_jid(self.store, txn, full)
        return view is not None and self._state(txn, view.session) is not None

    def _to_session(self, txn: lmdb.Transaction, session: str, row: dict[str, Any]) -> None:
        st = self._state(txn, session)
        if st is not None:
            self._save(txn, self._append(txn, st, [row]))

    # -- stream management events --------------------------------------------------------------

    def on_sm_enabled(self, txn: lmdb.Transaction, c: Committed, ev: SmEnabled) -> None:
        view = sessions_view.get(self.store, txn, ev.session)
        if view is None:
            raise Rejected(f"sm-unknown: {ev.session}")
        if self._state(txn, ev.session) is not None:
            raise Rejected("sm-already-enabled")
        st = SmState(ev.session, view.jid, 0, ev.resume, ev.timeout, 0, 0, 0, False, 0)
        self._save(txn, st)

    def on_sm_handled(self, txn: lmdb.Transaction, c: Committed, ev: SmHandled) -> None:
        st = self._current(txn, ev.session, ev.epoch)
        if ev.h > st.handled:
            self._save(txn, replace(st, handled=ev.h))

    def on_sm_acked(self, txn: lmdb.Transaction, c: Committed, ev: SmAcked) -> None:
        st = self._current(txn, ev.session, ev.epoch)
        h = min(ev.h, st.next)
        if h > st.acked:
            self._drop_rows(txn, ev.session, h)
            self._save(txn, replace(st, acked=h))

    def on_sm_stanzas_queued(
        self, txn: lmdb.Transaction, c: Committed, ev: SmStanzasQueued
    ) -> None:
        st = self._current(txn, ev.session, ev.epoch)
        at = c.envelope.at
        rows = [{"xml": xml, "kind": "other", "at": at} for xml in ev.stanzas]
        self._save(txn, self._append(txn, st, rows))

    def on_sm_roster_requested(
        self, txn: lmdb.Transaction, c: Committed, ev: SmRosterRequested
    ) -> None:
        st = self._state(txn, ev.session)
        if st is not None and not st.interested:
            self._save(txn, replace(st, interested=True))

    def on_sm_resumed(self, txn: lmdb.Transaction, c: Committed, ev: SmResumed) -> None:
        st = self._state(txn, ev.session)
        if st is None or not st.resume:
            raise Rejected(f"sm-unknown: {ev.session}")
        if ev.epoch != st.epoch + 1:
            raise Rejected(f"sm-conflict: resumed concurrently (epoch {st.epoch})")
        if not st.acked <= ev.h <= st.next:
            raise Rejected(f"sm-bad-h: {ev.h} outside {st.acked}..{st.next}")
        self._drop_rows(txn, ev.session, ev.h)
        if st.deadline:
            txn.delete(u64(st.deadline) + ev.session.encode(), db=self.db(DETACHED))
        self._save(txn, replace(st, epoch=ev.epoch, acked=ev.h, deadline=0))

    def on_sm_detached(self, txn: lmdb.Transaction, c: Committed, ev: SmDetached) -> None:
        st = self._state(txn, ev.session)
        if st is None or not st.resume:
            raise Rejected(f"sm-not-resumable: {ev.session}")
        if st.deadline:
            txn.delete(u64(st.deadline) + ev.session.encode(), db=self.db(DETACHED))
        txn.put(u64(ev.deadline) + ev.session.encode(), b"", db=self.db(DETACHED))
        # A detached session belongs to no connection: the next resumption starts a new epoch.
        self._save(txn, replace(st, deadline=ev.deadline, epoch=st.epoch + 1))

    # -- session lifecycle ---------------------------------------------------------------------

    def on_session_bound(self, txn: lmdb.Transaction, c: Committed, ev: SessionBound) -> None:
        old = sessions_view.by_full_jid(self.store, txn, ev.jid)
        if old is not None and old.session != ev.session:
            st = self._state(txn, old.session)
            if st is not None and st.next > st.acked:
                # Its unacknowledged stanzas must be re-routed first (the binder ends it).
                raise Rejected(f"sm-unacked: {old.session} still holds unacknowledged stanzas")
            if st is not None:
                self._forget(txn, c, st)

    def on_session_ended(self, txn: lmdb.Transaction, c: Committed, ev: SessionEnded) -> None:
        st = self._state(txn, ev.session)
        if st is None:
            return
        if st.next > st.acked and ev.outbox_upto != st.next:
            # Only rows the end would have re-routed (messages, iq) must not arrive unseen; the
            # others (presence, the server's answers, room traffic) are dropped at an end anyway.
            # Refusing for those would let every busy room, or another session of the same
            # proposal leaving a room, block the end for good.
            seen = ev.outbox_upto if ev.outbox_upto is not None else st.acked
            late = [r for r in rows(self.store, txn, ev.session, seen) if r.kind != "other"]
            if late:
                raise Rejected(
                    f"sm-outbox-changed: rows up to {st.next}, end re-routed {ev.outbox_upto}"
                )
        self._forget(txn, c, st)

    def _forget(self, txn: lmdb.Transaction, c: Committed, st: SmState) -> None:
        self._drop_rows(txn, st.session, st.next)
        if st.deadline:
            txn.delete(u64(st.deadline) + st.session.encode(), db=self.db(DETACHED))
        txn.delete(st.session.encode(), db=self.db(STATE))
        at = c.envelope.at
        tomb = {"jid": st.jid, "handled": st.handled, "at": at}
        txn.put(st.session.encode(), dump(tomb), db=self.db(ENDED))
        txn.put(u64(at) + st.session.encode(), b"", db=self.db(ENDED_BY_TIME))
        cur = txn.cursor(db=self.db(ENDED_BY_TIME))
        if cur.first():
            while from_u64(cur.key()[:8]) < at - TOMBSTONE_MS:
                txn.delete(cur.key()[8:], db=self.db(ENDED))
                if not cur.delete():
                    break

    # -- stanzas for managed sessions ----------------------------------------------------------

    def on_message_routed(self, txn: lmdb.Transaction, c: Committed, ev: MessageRouted) -> None:
        at = ev.received_at or c.envelope.at
        shared = len(ev.targets) > 1
        for target in ev.targets:
            row = {"xml": ev.xml, "kind": "message", "at": at, "shared": shared}
            self._to_full(txn, target, row)
        for target, copy in carbons.copies(ev, lambda full: self._managed(txn, full)):
            # A carbon is a copy: if unacknowledged when the session ends it is dropped, not
            # re-routed (the original is in the archive).
            self._to_full(txn, target, {"xml": copy.decode(), "kind": "other", "at": at})

    def on_iq_routed(self, txn: lmdb.Transaction, c: Committed, ev: IqRouted) -> None:
        self._to_session(txn, ev.session, {"xml": ev.xml, "kind": "iq", "at": c.envelope.at})

    def on_presence_updated(self, txn: lmdb.Transaction, c: Committed, ev: PresenceUpdated) -> None:
        self._presence(txn, c, ev.xml, ev.targets)

    def on_presence_routed(self, txn: lmdb.Transaction, c: Committed, ev: PresenceRouted) -> None:
        self._presence(txn, c, ev.xml, ev.targets)

    def _presence(self, txn: lmdb.Transaction, c: Committed, xml: str, targets: list[str]) -> None:
        row = {"xml": xml, "kind": "other", "at": c.envelope.at}
        for target in targets:
            if "/" in target:
                self._to_full(txn, target, row)
            else:
                for view in sessions_view.of_user(self.store, txn, target):
                    if view.available:
                        self._to_session(txn, view.session, row)

    def on_roster_item_updated(
        self, txn: lmdb.Transaction, c: Committed, ev: RosterItemUpdated
    ) -> None:
        if ev.listed:
            self._push(txn, c, ev.owner, item_element(ev))

    def on_roster_item_removed(
        self, txn: lmdb.Transaction, c: Committed, ev: RosterItemRemoved
    ) -> None:
        self._push(txn, c, ev.owner, removed_element(ev.contact))

    def _push(self, txn: lmdb.Transaction, c: Committed, owner: str, item: Element) -> None:
        for view in sessions_view.of_user(self.store, txn, owner):
            st = self._state(txn, view.session)
            if st is not None and st.interested:
                xml = push_bytes(view.jid, c, item).decode()
                self._save(txn, self._append(txn, st, [{"xml": xml, "kind": "other", "at": 0}]))

    def on_blocking_changed(self, txn: lmdb.Transaction, c: Committed, ev: BlockingChanged) -> None:
        for view in sessions_view.of_user(self.store, txn, ev.owner):
            st = self._state(txn, view.session)
            if st is not None and st.interested:
                rows = [
                    {"xml": x.decode(), "kind": "other", "at": 0}
                    for x in push_bytes_blocking(view.jid, c, ev)
                ]
                self._save(txn, self._append(txn, st, rows))

    def on_pep_item_published(self, txn: lmdb.Transaction, c: Committed, ev: Any) -> None:
        self._pep(txn, c, ev)

    on_pep_item_retracted = on_pep_item_published
    on_pep_node_purged = on_pep_item_published
    on_pep_node_deleted = on_pep_item_published

    def _pep(self, txn: lmdb.Transaction, c: Committed, ev: Any) -> None:
        """PEP notifications: not messages a session must not lose (XEP-0163 has the last item
        sent again at the next presence), so ``other`` rows, dropped at an end."""
        if not ev.notify:
            return
        xml = pep_view.notification(c, ev)
        assert xml is not None
        for target in ev.notify:
            row = {"xml": addressed(xml, target).decode(), "kind": "other", "at": c.envelope.at}
            self._to_full(txn, target, row)

    def on_offline_flushed(self, txn: lmdb.Transaction, c: Committed, ev: OfflineFlushed) -> None:
        st = self._state(txn, ev.session)
        if st is None:
            return
        by = ev.owner.split("@", 1)[-1]
        rows = [
            {"xml": with_delay(msg.xml, msg.at, by).decode(), "kind": "message", "at": msg.at}
            for msg in offline_view.for_device(self.store, txn, ev.owner, ev.resource, ev.after)
            if msg.seq <= ev.upto
            # Stored before the owner blocked the sender: flushed, not delivered (XEP-0191).
            and not blocking_view.blocks(self.store, txn, ev.owner, sender_of(msg.xml))
        ]
        self._save(txn, self._append(txn, st, rows))


# -- reads -------------------------------------------------------------------------------------


def state(store: Store, txn: lmdb.Transaction, session: str) -> SmState | None:
    raw = txn.get(session.encode(), db=store.db(STATE))
    return None if raw is None else SmState.from_json(session, load(raw))


def managed(store: Store, txn: lmdb.Transaction, session: str) -> bool:
    """``session`` has stream management on (:func:`state` is not None), without parsing its
    state: asked per occupant of every room message (issue 17, replay speed)."""
    return txn.get(session.encode(), db=store.db(STATE)) is not None


def rows(store: Store, txn: lmdb.Transaction, session: str, after: int = 0) -> list[OutboxRow]:
    """Outbox rows of ``session`` numbered above ``after``, in order."""
    prefix = session.encode() + b"\x00"
    out = []
    cur = txn.cursor(db=store.db(OUTBOX))
    if not cur.set_range(prefix + u64(after + 1)):
        return out
    for k, v in cur:
        if not k.startswith(prefix):
            break
        obj = load(v)
        out.append(
            OutboxRow(
                from_u64(k[len(prefix) :]),
                obj["xml"],
                obj["kind"],
                obj["at"],
                obj.get("shared", False),
            )
        )
    return out


def queue(store: Store, txn: lmdb.Transaction, session: str, stanzas: list[str], at: int) -> None:
    """Append ``stanzas`` to a managed session's outbox (for other projections' fan-out, e.g.
    a room's copies: :mod:`xes.projections.muc`). Rows are ``other``: a session that ends
    without acknowledging them drops them (group chat is caught up from the room archive)."""
    raw = txn.get(session.encode(), db=store.db(STATE))
    if raw is None:
        return
    # The state row as stored (``SmState.to_json``) with only ``next`` moved: the same bytes
    # as a round trip through SmState, without it (a room's fan-out runs this per occupant).
    state = load(raw)
    n = state["next"]
    outbox = store.db(OUTBOX)
    for xml in stanzas:
        n += 1
        txn.put(_row_key(session, n), dump({"xml": xml, "kind": "other", "at": at}), db=outbox)
    state["next"] = n
    txn.put(session.encode(), dump(state), db=store.db(STATE))


def ended(store: Store, txn: lmdb.Transaction, session: str) -> dict[str, Any] | None:
    """The tombstone of a managed session that ended in the last day: jid, handled, at."""
    return load(txn.get(session.encode(), db=store.db(ENDED)))


def detached(store: Store, txn: lmdb.Transaction) -> list[tuple[str, int, int]]:
    """Every detached session as (session, epoch, resumption timeout in seconds)."""
    out = []
    for k, _ in txn.cursor(db=store.db(DETACHED)):
        st = state(store, txn, k[8:].decode())
        if st is not None:
            out.append((st.session, st.epoch, st.timeout))
    return out


def detached_due(store: Store, txn: lmdb.Transaction, now_ms: int) -> list[str]:
    """Detached sessions whose resumption deadline has passed."""
    out = []
    for k, _ in txn.cursor(db=store.db(DETACHED)):
        if from_u64(k[:8]) > now_ms:
            break
        out.append(k[8:].decode())
    return out
