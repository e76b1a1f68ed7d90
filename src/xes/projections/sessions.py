"""Sessions projection: who is connected where, with which presence (RFC 6120 §7, RFC 6121 §4).

Fed by ``session.*``, ``presence.*`` and ``node.*``. Every node knows every session of the
cluster, with the node that holds its connection, so any node can route to any resource. A
``node.started`` event ends every session a node held in an earlier boot: a restarted node leaves
no ghost behind even if it died before it could record their end. ``node.down`` (recorded by the
leader when a node stays unreachable) ends the sessions of that boot and makes any later
``session.bound`` of it a rejected proposal, so a cut-off node cannot bind sessions the rest of
the cluster already gave up on (ADR 0007). A resumable stream-management session whose node is
gone is *detached* (``sm.detached``: no node) until resumed on any node (``sm.resumed`` moves it)
or ended at its deadline (ADR 0008). The ``sessions.nodes`` table maps node ids to their
Raft address and current boot.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import lmdb

from xes.events import Committed
from xes.events.catalog import (
    CarbonsToggled,
    NodeDown,
    NodeStarted,
    PresenceRouted,
    PresenceUpdated,
    SessionBound,
    SessionEnded,
    SmDetached,
    SmResumed,
)
from xes.jid import bare_of
from xes.projections.base import (
    Projection,
    Rejected,
    delete_prefix,
    dump,
    iter_prefix,
    key,
    load,
)
from xes.store.env import Store

BY_ID = "sessions.by_id"
BY_USER = "sessions.by_user"
DIRECTED = "sessions.directed"
NODES = "sessions.nodes"


@dataclass(frozen=True, slots=True)
class NodeView:
    node: str
    raft: str
    boot: str
    down: bool = False


@dataclass(frozen=True, slots=True)
class SessionView:
    session: str
    jid: str
    node: str
    boot: str
    available: bool = False
    priority: int = 0
    presence: str | None = None
    carbons: bool = False
    """The session enabled Message Carbons (XEP-0280)."""

    @property
    def bare(self) -> str:
        return bare_of(self.jid)

    @classmethod
    def from_json(cls, session: str, obj: dict[str, Any]) -> SessionView:
        return cls(session=session, **obj)


class Sessions(Projection):
    name = "sessions"
    dbs = (BY_ID, BY_USER, DIRECTED, NODES)
    handles = (
        "session.bound",
        "session.ended",
        "presence.updated",
        "presence.routed",
        "node.started",
        "node.down",
        "sm.resumed",
        "sm.detached",
        "carbons.toggled",
    )

    def _put(self, txn: lmdb.Transaction, view: SessionView) -> None:
        obj = {
            "jid": view.jid,
            "node": view.node,
            "boot": view.boot,
            "available": view.available,
            "priority": view.priority,
            "presence": view.presence,
        }
        if view.carbons:
            obj["carbons"] = True  # absent when off: older state rows read the same
        txn.put(view.session.encode(), dump(obj), db=self.db(BY_ID))

    def _get(self, txn: lmdb.Transaction, session: str) -> SessionView | None:
        raw = txn.get(session.encode(), db=self.db(BY_ID))
        return None if raw is None else SessionView.from_json(session, load(raw))

    def _end(self, txn: lmdb.Transaction, session: str) -> None:
        view = self._get(txn, session)
        if view is None:
            return
        txn.delete(session.encode(), db=self.db(BY_ID))
        bare, _, resource = view.jid.partition("/")
        ukey = key(bare, resource)
        if txn.get(ukey, db=self.db(BY_USER)) == session.encode():
            txn.delete(ukey, db=self.db(BY_USER))
        delete_prefix(txn, self.db(DIRECTED), key(session, ""))

    def on_session_bound(self, txn: lmdb.Transaction, c: Committed, ev: SessionBound) -> None:
        node = load(txn.get(ev.node.encode(), db=self.db(NODES)))
        if node is not None and node["down"] and node["boot"] == ev.boot:
            raise Rejected(f"node-down: {ev.node} boot {ev.boot} was declared down")
        bare, _, resource = ev.jid.partition("/")
        old = txn.get(key(bare, resource), db=self.db(BY_USER))
        if old is not None and old.decode() != ev.session:
            # RFC 6120 §7.7.2.2: the new session replaces the old one with the same full JID.
            self._end(txn, old.decode())
        self._put(txn, SessionView(ev.session, ev.jid, ev.node, ev.boot))
        txn.put(key(bare, resource), ev.session.encode(), db=self.db(BY_USER))

    def on_session_ended(self, txn: lmdb.Transaction, c: Committed, ev: SessionEnded) -> None:
        self._end(txn, ev.session)

    def on_presence_updated(self, txn: lmdb.Transaction, c: Committed, ev: PresenceUpdated) -> None:
        view = self._get(txn, ev.session)
        if view is None:
            return
        self._put(
            txn,
            replace(
                view,
                available=ev.available,
                priority=ev.priority,
                presence=ev.xml if ev.available else None,
            ),
        )
        if not ev.available:
            # Unavailable broadcast presence also ends directed presence (RFC 6121 §4.6.3).
            delete_prefix(txn, self.db(DIRECTED), key(ev.session, ""))

    def on_presence_routed(self, txn: lmdb.Transaction, c: Committed, ev: PresenceRouted) -> None:
        if ev.directed_session is None or self._get(txn, ev.directed_session) is None:
            return
        for target in ev.targets:
            k = key(ev.directed_session, target)
            if ev.directed_available:
                txn.put(k, b"", db=self.db(DIRECTED))
            else:
                txn.delete(k, db=self.db(DIRECTED))

    def on_sm_resumed(self, txn: lmdb.Transaction, c: Committed, ev: SmResumed) -> None:
        view = self._get(txn, ev.session)
        if view is None:
            raise Rejected(f"sm-unknown: {ev.session}")
        node = load(txn.get(ev.node.encode(), db=self.db(NODES)))
        if node is not None and node["down"] and node["boot"] == ev.boot:
            raise Rejected(f"node-down: {ev.node} boot {ev.boot} was declared down")
        self._put(txn, replace(view, node=ev.node, boot=ev.boot))

    def on_sm_detached(self, txn: lmdb.Transaction, c: Committed, ev: SmDetached) -> None:
        # Held by no node until resumed: no node's restart or loss ends it; its deadline does.
        view = self._get(txn, ev.session)
        if view is not None:
            self._put(txn, replace(view, node="", boot=""))

    def on_carbons_toggled(self, txn: lmdb.Transaction, c: Committed, ev: CarbonsToggled) -> None:
        view = self._get(txn, ev.session)
        if view is None:
            raise Rejected(f"unknown-session: {ev.session}")
        if view.carbons != ev.enabled:
            self._put(txn, replace(view, carbons=ev.enabled))

    def on_node_started(self, txn: lmdb.Transaction, c: Committed, ev: NodeStarted) -> None:
        stale = [
            k.decode()
            for k, v in txn.cursor(db=self.db(BY_ID))
            if (obj := load(v))["node"] == ev.node and obj["boot"] != ev.boot
        ]
        for session in stale:
            self._end(txn, session)
        record = {"raft": ev.raft, "boot": ev.boot, "down": False}
        txn.put(ev.node.encode(), dump(record), db=self.db(NODES))

    def on_node_down(self, txn: lmdb.Transaction, c: Committed, ev: NodeDown) -> None:
        # The proposer ends every session of the boot (with its unavailable presence) in the
        # same proposal, before this event. One left over was bound after the proposer read the
        # sessions: refuse, so it re-reads, and no session ends without its contacts told.
        for _, v in txn.cursor(db=self.db(BY_ID)):
            obj = load(v)
            if obj["node"] == ev.node and obj["boot"] == ev.boot:
                raise Rejected(f"node-has-sessions: {ev.node} boot {ev.boot}")
        node = load(txn.get(ev.node.encode(), db=self.db(NODES))) or {"raft": "", "boot": ev.boot}
        if node["boot"] == ev.boot:
            node["down"] = True
            txn.put(ev.node.encode(), dump(node), db=self.db(NODES))


def get(store: Store, txn: lmdb.Transaction, session: str) -> SessionView | None:
    raw = txn.get(session.encode(), db=store.db(BY_ID))
    return None if raw is None else SessionView.from_json(session, load(raw))


def of_user(store: Store, txn: lmdb.Transaction, bare: str) -> list[SessionView]:
    """Every bound session of ``bare``, ordered by resource."""
    views = (
        get(store, txn, v.decode()) for _, v in iter_prefix(txn, store.db(BY_USER), key(bare, ""))
    )
    return [view for view in views if view is not None]


def carbon_copies(
    store: Store, txn: lmdb.Transaction, bare: str, excluding: frozenset[str]
) -> list[str]:
    """Full JIDs of ``bare``'s carbons-enabled sessions (XEP-0280) not in ``excluding``."""
    return [
        view.jid for view in of_user(store, txn, bare) if view.carbons and view.jid not in excluding
    ]


def available_resources(
    store: Store, txn: lmdb.Transaction, bare: str, excluding: frozenset[str] = frozenset()
) -> list[SessionView]:
    """Sessions of ``bare`` that get messages sent to the bare JID: available, non-negative
    priority (RFC 6121 §8.5.2.1.1), except the session ids in ``excluding``."""
    return [
        view
        for view in of_user(store, txn, bare)
        if view.available and view.priority >= 0 and view.session not in excluding
    ]


def by_full_jid(store: Store, txn: lmdb.Transaction, full: str) -> SessionView | None:
    bare, _, resource = full.partition("/")
    sid = txn.get(key(bare, resource), db=store.db(BY_USER))
    return None if sid is None else get(store, txn, sid.decode())


def of_node(
    store: Store, txn: lmdb.Transaction, node: str, boot: str | None = None
) -> list[SessionView]:
    """Sessions held by ``node`` (of one ``boot`` of it, when given)."""
    return [
        SessionView.from_json(k.decode(), obj)
        for k, v in txn.cursor(db=store.db(BY_ID))
        if (obj := load(v))["node"] == node and (boot is None or obj["boot"] == boot)
    ]


def all_sessions(store: Store, txn: lmdb.Transaction) -> list[SessionView]:
    """Every bound session in the cluster (the admin API, announcements)."""
    return [SessionView.from_json(k.decode(), load(v)) for k, v in txn.cursor(db=store.db(BY_ID))]


def nodes(store: Store, txn: lmdb.Transaction) -> list[NodeView]:
    """Every node that ever started, with its latest boot and whether that boot is down."""
    return [
        NodeView(k.decode(), obj["raft"], obj["boot"], obj["down"])
        for k, v in txn.cursor(db=store.db(NODES))
        if (obj := load(v)) is not None
    ]


def node(store: Store, txn: lmdb.Transaction, node_id: str) -> NodeView | None:
    """One node's latest boot, or None if it never started."""
    obj = load(txn.get(node_id.encode(), db=store.db(NODES)))
    return None if obj is None else NodeView(node_id, obj["raft"], obj["boot"], obj["down"])


def directed_targets(store: Store, txn: lmdb.Transaction, session: str) -> list[str]:
    prefix = key(session, "")
    return [k[len(prefix) :].decode() for k, _ in iter_prefix(txn, store.db(DIRECTED), prefix)]
