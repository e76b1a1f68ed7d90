"""External components (XEP-0114, ADR 0018): which node holds each component's connection.

Folds ``component.connected`` and ``component.disconnected``, and releases the components of a
node's boot on ``node.started`` (a later boot: the node restarted) and ``node.down`` (the leader
gave up on it, ADR 0007), so a component whose node died can connect to any other node at once.
A name is held by one connection in the whole cluster: a second ``component.connected`` while
it is held is refused (Prosody's rule: the newcomer gets ``<conflict/>``), as is one from a boot
already declared down. Apply reads nothing but this projection's own tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import lmdb

from xes.events import Committed
from xes.events.catalog import (
    ComponentConnected,
    ComponentDisconnected,
    NodeDown,
    NodeStarted,
)
from xes.projections.base import Projection, Rejected, dump, load
from xes.store.env import Store

HELD = "components.held"
"""component domain -> {node, boot, conn, since}: the connection holding it."""
BOOTS = "components.boots"
"""node id -> {boot, down}: each node's latest boot, so a down boot cannot take a name."""


@dataclass(frozen=True, slots=True)
class Holder:
    domain: str
    node: str
    boot: str
    conn: str
    since: int
    """Log index of its ``component.connected``."""


class Components(Projection):
    name = "components"
    dbs = (HELD, BOOTS)
    handles = ("component.connected", "component.disconnected", "node.started", "node.down")

    def on_component_connected(
        self, txn: lmdb.Transaction, c: Committed, ev: ComponentConnected
    ) -> None:
        boot = load(txn.get(ev.node.encode(), db=self.db(BOOTS)))
        if boot is not None and boot["down"] and boot["boot"] == ev.boot:
            raise Rejected(f"node-down: {ev.node} boot {ev.boot} was declared down")
        held = load(txn.get(ev.domain.encode(), db=self.db(HELD)))
        if held is not None and held["conn"] != ev.conn:
            raise Rejected(f"component-conflict: {ev.domain} is held by node {held['node']}")
        row = {"node": ev.node, "boot": ev.boot, "conn": ev.conn, "since": c.index}
        txn.put(ev.domain.encode(), dump(row), db=self.db(HELD))

    def on_component_disconnected(
        self, txn: lmdb.Transaction, c: Committed, ev: ComponentDisconnected
    ) -> None:
        held = load(txn.get(ev.domain.encode(), db=self.db(HELD)))
        if held is not None and held["conn"] == ev.conn:
            txn.delete(ev.domain.encode(), db=self.db(HELD))

    def _release(self, txn: lmdb.Transaction, node: str, keep_boot: str | None, boot: str) -> None:
        """Free the names ``node`` holds under ``boot`` (or, with ``keep_boot``, any other)."""
        stale = [
            k
            for k, v in txn.cursor(db=self.db(HELD))
            if (row := load(v))["node"] == node
            and (row["boot"] != keep_boot if keep_boot is not None else row["boot"] == boot)
        ]
        for k in stale:
            txn.delete(k, db=self.db(HELD))

    def on_node_started(self, txn: lmdb.Transaction, c: Committed, ev: NodeStarted) -> None:
        self._release(txn, ev.node, ev.boot, ev.boot)
        txn.put(ev.node.encode(), dump({"boot": ev.boot, "down": False}), db=self.db(BOOTS))

    def on_node_down(self, txn: lmdb.Transaction, c: Committed, ev: NodeDown) -> None:
        self._release(txn, ev.node, None, ev.boot)
        boot = load(txn.get(ev.node.encode(), db=self.db(BOOTS)))
        if boot is None or boot["boot"] == ev.boot:
            txn.put(ev.node.encode(), dump({"boot": ev.boot, "down": True}), db=self.db(BOOTS))


def holder(store: Store, txn: lmdb.Transaction, domain: str) -> Holder | None:
    """The connection holding ``domain`` in the cluster, or None when it is not connected."""
    row = load(txn.get(domain.encode(), db=store.db(HELD)))
    return None if row is None else Holder(domain, **row)


def held(store: Store, txn: lmdb.Transaction) -> list[Holder]:
    """Every connected component, by domain (the admin view, tests)."""
    return [Holder(k.decode(), **load(v)) for k, v in txn.cursor(db=store.db(HELD))]
