"""Roster projection (RFC 6121 §2): items per owner and the roster version (XEP-0237).

The roster version is the version of the ``roster:<owner>`` stream, which apply assigns; it only
ever grows, so a client's cached ``ver`` is either current or stale, never ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lmdb

from xes.events import Committed, to_data
from xes.events.catalog import AccountRemoved, RosterItemRemoved, RosterItemUpdated
from xes.projections.base import Projection, delete_prefix, dump, iter_prefix, key, load
from xes.store.env import Store, from_u64, u64

ITEMS = "roster.items"
VER = "roster.ver"


@dataclass(frozen=True, slots=True)
class RosterItem:
    contact: str
    name: str | None = None
    groups: list[str] = field(default_factory=list)
    subscription: str = "none"
    ask: bool = False
    pending_in: str | None = None
    approved: bool = False
    listed: bool = True

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RosterItem:
        return cls(**{k: v for k, v in obj.items() if k != "owner"})


class Roster(Projection):
    name = "roster"
    dbs = (ITEMS, VER)
    handles = ("roster.item_updated", "roster.item_removed", "account.removed")

    def on_roster_item_updated(
        self, txn: lmdb.Transaction, c: Committed, ev: RosterItemUpdated
    ) -> None:
        data = to_data(ev)
        del data["owner"]
        txn.put(key(ev.owner, ev.contact), dump(data), db=self.db(ITEMS))
        txn.put(ev.owner.encode(), u64(c.version), db=self.db(VER))

    def on_roster_item_removed(
        self, txn: lmdb.Transaction, c: Committed, ev: RosterItemRemoved
    ) -> None:
        txn.delete(key(ev.owner, ev.contact), db=self.db(ITEMS))
        txn.put(ev.owner.encode(), u64(c.version), db=self.db(VER))

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        delete_prefix(txn, self.db(ITEMS), key(ev.jid, ""))
        txn.delete(ev.jid.encode(), db=self.db(VER))


def items(store: Store, txn: lmdb.Transaction, owner: str) -> list[RosterItem]:
    return [
        RosterItem.from_json(load(v)) for _, v in iter_prefix(txn, store.db(ITEMS), key(owner, ""))
    ]


def item(store: Store, txn: lmdb.Transaction, owner: str, contact: str) -> RosterItem | None:
    raw = txn.get(key(owner, contact), db=store.db(ITEMS))
    return None if raw is None else RosterItem.from_json(load(raw))


def version(store: Store, txn: lmdb.Transaction, owner: str) -> int:
    raw = txn.get(owner.encode(), db=store.db(VER))
    return from_u64(raw) if raw else 0
