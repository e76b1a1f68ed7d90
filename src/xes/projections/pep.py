"""PEP projection (XEP-0163 on XEP-0060, ADR 0013): every account's nodes, their items, and the
cluster's XEP-0115 caps cache.

A node's row holds its configuration and whitelist; items are rows in publication order (a
republished id moves to the end, XEP-0060 §7.1.2) and the oldest beyond the node's
``max_items`` are dropped in the same apply, so every node of the cluster keeps the same items.
Apply re-checks what the proposer checked against its possibly older view (node exists or not,
publish-options preconditions, item exists), so concurrent publishers from two devices or two
nodes end as the XEP's error for the later one, never as a forked node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lmdb

from xes.events import Committed
from xes.events.catalog import (
    AccountRemoved,
    CapsLearned,
    PepItemPublished,
    PepItemRetracted,
    PepNodeConfigured,
    PepNodeDeleted,
    PepNodePurged,
)
from xes.projections.base import Projection, Rejected, delete_prefix, dump, iter_prefix, key, load
from xes.pubsub import render
from xes.pubsub.config import NodeConfig
from xes.store.env import Store, u64

NODES = "pep.nodes"
ITEMS = "pep.items"
ITEM_IDS = "pep.item_ids"
CAPS = "caps.features"


@dataclass(frozen=True, slots=True)
class NodeRow:
    owner: str
    node: str
    config: NodeConfig
    whitelist: list[str]
    seq: int
    """Sequence of the newest item ever published (items are keyed by it)."""
    count: int


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    payload: str
    publisher: str
    at: int
    """Publication time (ms), for the delay stamp of a last-published item."""


def _items_prefix(owner: str, node: str) -> bytes:
    return key(owner, node) + b"\x00"


class Pep(Projection):
    name = "pep"
    dbs = (NODES, ITEMS, ITEM_IDS, CAPS)
    handles = (
        "pep.node_configured",
        "pep.item_published",
        "pep.item_retracted",
        "pep.node_purged",
        "pep.node_deleted",
        "caps.learned",
        "account.removed",
    )

    def _row(self, txn: lmdb.Transaction, owner: str, node: str) -> dict[str, Any] | None:
        return load(txn.get(key(owner, node), db=self.db(NODES)))

    def _put_row(self, txn: lmdb.Transaction, owner: str, node: str, row: dict[str, Any]) -> None:
        txn.put(key(owner, node), dump(row), db=self.db(NODES))

    def on_pep_node_configured(
        self, txn: lmdb.Transaction, c: Committed, ev: PepNodeConfigured
    ) -> None:
        row = self._row(txn, ev.owner, ev.node)
        if row is not None and ev.create == "auto":
            return  # created meanwhile by another publish: that node stands
        if row is not None and ev.create == "explicit":
            raise Rejected("pubsub-conflict: the node exists")
        if row is None and not ev.create:
            raise Rejected("pubsub-item-not-found: no such node")
        if row is None:
            row = {"config": {}, "whitelist": [], "seq": 0, "count": 0}
        row["config"] = NodeConfig.from_json(ev.config).to_json()
        if ev.whitelist is not None:
            row["whitelist"] = sorted(set(ev.whitelist))
        row["count"] = self._trim(txn, ev.owner, ev.node, row)
        self._put_row(txn, ev.owner, ev.node, row)

    def on_pep_item_published(
        self, txn: lmdb.Transaction, c: Committed, ev: PepItemPublished
    ) -> None:
        row = self._row(txn, ev.owner, ev.node)
        if row is None:
            raise Rejected("pubsub-item-not-found: no such node")
        # Through NodeConfig, so a row written before a field existed reads its default.
        config = NodeConfig.from_json(row["config"]).to_json()
        for name, wanted in (ev.preconditions or {}).items():
            if config.get(name) != wanted:
                raise Rejected(f"pubsub-precondition-not-met: {name}")
        ids = self.db(ITEM_IDS)
        id_key = key(ev.owner, ev.node, ev.item_id)
        old = txn.get(id_key, db=ids)
        prefix = _items_prefix(ev.owner, ev.node)
        if old is not None:
            txn.delete(prefix + old, db=self.db(ITEMS))
            row["count"] -= 1
        row["seq"] += 1
        seq = u64(row["seq"])
        item = {"id": ev.item_id, "payload": ev.payload, "publisher": ev.publisher}
        item["at"] = c.envelope.at
        txn.put(prefix + seq, dump(item), db=self.db(ITEMS))
        txn.put(id_key, seq, db=ids)
        row["count"] += 1
        row["count"] = self._trim(txn, ev.owner, ev.node, row)
        self._put_row(txn, ev.owner, ev.node, row)

    def _trim(self, txn: lmdb.Transaction, owner: str, node: str, row: dict[str, Any]) -> int:
        """Drop the oldest items beyond what the configuration keeps; returns the new count."""
        keep = NodeConfig.from_json(row["config"]).kept
        count = row["count"]
        if count <= keep:
            return count
        prefix = _items_prefix(owner, node)
        cur = txn.cursor(db=self.db(ITEMS))
        if not cur.set_range(prefix):
            return count
        while count > keep and cur.key().startswith(prefix):
            item = load(cur.value())
            txn.delete(key(owner, node, item["id"]), db=self.db(ITEM_IDS))
            count -= 1
            if not cur.delete():
                break
        return count

    def on_pep_item_retracted(
        self, txn: lmdb.Transaction, c: Committed, ev: PepItemRetracted
    ) -> None:
        row = self._row(txn, ev.owner, ev.node)
        if row is None:
            raise Rejected("pubsub-item-not-found: no such node")
        id_key = key(ev.owner, ev.node, ev.item_id)
        seq = txn.get(id_key, db=self.db(ITEM_IDS))
        if seq is None:
            raise Rejected("pubsub-item-not-found: no such item")
        txn.delete(_items_prefix(ev.owner, ev.node) + seq, db=self.db(ITEMS))
        txn.delete(id_key, db=self.db(ITEM_IDS))
        row["count"] -= 1
        self._put_row(txn, ev.owner, ev.node, row)

    def _drop_items(self, txn: lmdb.Transaction, owner: str, node: str) -> None:
        delete_prefix(txn, self.db(ITEMS), _items_prefix(owner, node))
        delete_prefix(txn, self.db(ITEM_IDS), _items_prefix(owner, node))

    def on_pep_node_purged(self, txn: lmdb.Transaction, c: Committed, ev: PepNodePurged) -> None:
        row = self._row(txn, ev.owner, ev.node)
        if row is None:
            raise Rejected("pubsub-item-not-found: no such node")
        self._drop_items(txn, ev.owner, ev.node)
        row["count"] = 0
        self._put_row(txn, ev.owner, ev.node, row)

    def on_pep_node_deleted(self, txn: lmdb.Transaction, c: Committed, ev: PepNodeDeleted) -> None:
        if self._row(txn, ev.owner, ev.node) is None:
            raise Rejected("pubsub-item-not-found: no such node")
        self._drop_items(txn, ev.owner, ev.node)
        txn.delete(key(ev.owner, ev.node), db=self.db(NODES))

    def on_caps_learned(self, txn: lmdb.Transaction, c: Committed, ev: CapsLearned) -> None:
        row = dump({"hash": ev.hash, "features": ev.features})
        txn.put(_caps_key(ev.ver, ev.jid), row, db=self.db(CAPS))

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        prefix = key(ev.jid, "")
        for db in (NODES, ITEMS, ITEM_IDS):
            delete_prefix(txn, self.db(db), prefix)


# -- reads -------------------------------------------------------------------------------------


def _node_row(owner: str, node: str, obj: dict[str, Any]) -> NodeRow:
    return NodeRow(
        owner,
        node,
        NodeConfig.from_json(obj["config"]),
        obj["whitelist"],
        obj["seq"],
        obj["count"],
    )


def node(store: Store, txn: lmdb.Transaction, owner: str, name: str) -> NodeRow | None:
    obj = load(txn.get(key(owner, name), db=store.db(NODES)))
    return None if obj is None else _node_row(owner, name, obj)


def nodes(store: Store, txn: lmdb.Transaction, owner: str) -> list[NodeRow]:
    prefix = key(owner, "")
    return [
        _node_row(owner, k[len(prefix) :].decode(), load(v))
        for k, v in iter_prefix(txn, store.db(NODES), prefix)
    ]


def items(store: Store, txn: lmdb.Transaction, owner: str, name: str) -> list[Item]:
    """The node's items, oldest first."""
    out = []
    for _, raw in iter_prefix(txn, store.db(ITEMS), _items_prefix(owner, name)):
        obj = load(raw)
        out.append(Item(obj["id"], obj["payload"], obj["publisher"], obj["at"]))
    return out


def item(store: Store, txn: lmdb.Transaction, owner: str, name: str, item_id: str) -> Item | None:
    seq = txn.get(key(owner, name, item_id), db=store.db(ITEM_IDS))
    if seq is None:
        return None
    obj = load(txn.get(_items_prefix(owner, name) + seq, db=store.db(ITEMS)))
    return Item(obj["id"], obj["payload"], obj["publisher"], obj["at"])


def last_item(store: Store, txn: lmdb.Transaction, owner: str, name: str) -> Item | None:
    prefix = _items_prefix(owner, name)
    cur = txn.cursor(db=store.db(ITEMS))
    # The key after the node's last possible item, then one step back.
    ok = cur.prev() if cur.set_range(prefix + b"\xff" * 8) else cur.last()
    if not ok or not cur.key().startswith(prefix):
        return None
    obj = load(cur.value())
    return Item(obj["id"], obj["payload"], obj["publisher"], obj["at"])


def _caps_key(ver: str, jid: str) -> bytes:
    return key(ver, jid) if jid else ver.encode()


def caps_features(store: Store, txn: lmdb.Transaction, ver: str, jid: str = "") -> list[str] | None:
    """Features behind ``ver``: verified ones, else what ``jid`` itself answered for it."""
    obj = load(txn.get(ver.encode(), db=store.db(CAPS)))
    if obj is None and jid:
        obj = load(txn.get(_caps_key(ver, jid), db=store.db(CAPS)))
    return None if obj is None else obj["features"]


def notification(c: Committed, ev: Any) -> str | None:
    """The notification a committed PEP event sends to each of its ``notify`` JIDs (no ``to``);
    the same bytes on every node, for direct delivery and for stream management outboxes."""
    stanza_id = f"pep-{c.index}-{c.pos}"
    if isinstance(ev, PepItemPublished):
        return render.published(ev.owner, ev.node, stanza_id, ev.item_id, ev.payload)
    if isinstance(ev, PepItemRetracted):
        return render.retracted(ev.owner, ev.node, stanza_id, [ev.item_id])
    if isinstance(ev, PepNodePurged):
        return render.purged(ev.owner, ev.node, stanza_id)
    if isinstance(ev, PepNodeDeleted):
        return render.deleted(ev.owner, ev.node, stanza_id)
    return None


NOTIFYING = ("pep.item_published", "pep.item_retracted", "pep.node_purged", "pep.node_deleted")
"""Event types that carry notifications (``notify``)."""
