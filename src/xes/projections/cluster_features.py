"""What each node of the cluster can read: the announcements the feature gate is built from
(ADR 0022).

Folds ``node.started``: a node's latest boot replaces what it announced before, so a node
restarted on an older build (which announces nothing) closes the gate again for what only the
newer build read. Rows are kept by node id with the Raft address the node gave, because the Raft
membership, which the gate must cover whole, lists addresses. Apply reads nothing but this table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import lmdb

from xes.events import Committed
from xes.events.catalog import NodeStarted
from xes.events.gate import Gate, Member
from xes.projections.base import Projection, dump, load
from xes.store.env import Store

READS = "cluster_features.reads"
"""node id -> {raft, boot, reads}: the latest ``node.started`` of each node (``reads`` null
when that build announced nothing)."""


class ClusterFeatures(Projection):
    name = "cluster_features"
    dbs = (READS,)
    handles = ("node.started",)

    def on_node_started(self, txn: lmdb.Transaction, c: Committed, ev: NodeStarted) -> None:
        row = {"raft": ev.raft, "boot": ev.boot, "reads": ev.reads}
        txn.put(ev.node.encode(), dump(row), db=self.db(READS))


def announced(store: Store, txn: lmdb.Transaction) -> dict[str, Member]:
    """Raft address -> the node that last started there and what it announced."""
    out: dict[str, Member] = {}
    for k, v in txn.cursor(db=store.db(READS)):
        row = load(v)
        if row["raft"]:
            out[row["raft"]] = Member(row["raft"], k.decode(), row["reads"])
    return out


def gate(members: Iterable[str], known: Mapping[str, Member]) -> Gate:
    """The gate over the Raft ``members`` (addresses): an address no node announced from counts
    as a member that reads only the baseline (a node added but never started, or a build from
    before the gate that started there before its announcement). No members (no status yet):
    closed, never a gate over nobody (which would let everything through)."""
    found = tuple(known.get(addr, Member(addr)) for addr in sorted(members))
    return Gate(found) if found else Gate.unknown()
