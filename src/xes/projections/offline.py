"""Offline message store (RFC 6121 §8.5.2.1.1, XEP-0160), fed by ``message.routed``.

A message for a user with no available resource is kept here, keyed by owner and the event's
sequence number, until ``offline.flushed`` records that a session received it. The stored copy
keeps the server's receive time (the envelope's ``at``) for the XEP-0203 delay stamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import lmdb

from xes.events import Committed
from xes.events.catalog import AccountRemoved, MessageRouted, OfflineFlushed
from xes.projections.base import Projection, dump, iter_prefix, load
from xes.store.env import Store, from_u64, u64

MSGS = "offline.msgs"


@dataclass(frozen=True, slots=True)
class OfflineMessage:
    seq: int
    xml: str
    at: int


def _prefix(owner: str) -> bytes:
    return owner.encode() + b"\x00"


class Offline(Projection):
    name = "offline"
    dbs = (MSGS,)
    handles = ("message.routed", "offline.flushed", "account.removed")

    def on_message_routed(self, txn: lmdb.Transaction, c: Committed, ev: MessageRouted) -> None:
        if ev.offline_for:
            obj = {"xml": ev.xml, "at": c.envelope.at}
            txn.put(_prefix(ev.offline_for) + u64(c.seq), dump(obj), db=self.db(MSGS))

    def on_offline_flushed(self, txn: lmdb.Transaction, c: Committed, ev: OfflineFlushed) -> None:
        self._drop(txn, ev.owner, ev.upto)

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        self._drop(txn, ev.jid, 2**64 - 1)

    def _drop(self, txn: lmdb.Transaction, owner: str, upto: int) -> None:
        prefix = _prefix(owner)
        cur = txn.cursor(db=self.db(MSGS))
        if not cur.set_range(prefix):
            return
        while cur.key().startswith(prefix) and from_u64(cur.key()[len(prefix) :]) <= upto:
            if not cur.delete():
                break


def messages(store: Store, txn: lmdb.Transaction, owner: str) -> list[OfflineMessage]:
    prefix = _prefix(owner)
    out = []
    for k, v in iter_prefix(txn, store.db(MSGS), prefix):
        obj = load(v)
        out.append(OfflineMessage(from_u64(k[len(prefix) :]), obj["xml"], obj["at"]))
    return out


def count(store: Store, txn: lmdb.Transaction, owner: str) -> int:
    return len(messages(store, txn, owner))
