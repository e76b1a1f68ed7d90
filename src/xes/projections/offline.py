"""Offline message store (RFC 6121 §8.5.2.1.1, XEP-0160) shared by a user's devices.

A message for a user with no available resource is kept here, keyed by owner and the event's
sequence number, with the server's receive time for the XEP-0203 delay stamp. A user's *devices*
are the client-chosen resources it has bound (a server-generated resource never comes back);
each device has a cursor, the last offline ``seq`` it received. A message stays until every
device remembered has received it, so the phone coming online does not take away what the
desktop still needs; a device not seen for ``offline.device_ttl`` is forgotten (the proposer
puts the cut-off time in ``offline.flushed``, so apply stays deterministic). With no device
known, the first session to come online takes the messages (RFC 6121 behaviour).

A message re-routed from a session that ended without acknowledging it, while the user's other
resources had it already, is kept for that one device only (``offline_resource``).
"""

from __future__ import annotations

from dataclasses import dataclass

import lmdb

from xes.events import Committed
from xes.events.catalog import (
    AccountRemoved,
    MessageRouted,
    OfflineFlushed,
    SessionBound,
    SessionEnded,
)
from xes.projections.base import Projection, delete_prefix, dump, iter_prefix, key, load
from xes.store.env import Store, from_u64, u64

MSGS = "offline.msgs"
DEVICES = "offline.devices"
COUNTS = "offline.counts"


@dataclass(frozen=True, slots=True)
class OfflineMessage:
    seq: int
    xml: str
    at: int
    resource: str | None = None
    """Only this device needs it (else every device of the user)."""


def _prefix(owner: str) -> bytes:
    return owner.encode() + b"\x00"


class Offline(Projection):
    name = "offline"
    dbs = (MSGS, DEVICES, COUNTS)
    handles = (
        "message.routed",
        "offline.flushed",
        "account.removed",
        "session.bound",
        "session.ended",
    )

    def on_message_routed(self, txn: lmdb.Transaction, c: Committed, ev: MessageRouted) -> None:
        if ev.offline_for:
            obj = {"xml": ev.xml, "at": ev.received_at or c.envelope.at}
            if ev.offline_resource:
                obj["for"] = ev.offline_resource
            txn.put(_prefix(ev.offline_for) + u64(c.seq), dump(obj), db=self.db(MSGS))
            self._count(txn, ev.offline_for, +1)

    def on_session_bound(self, txn: lmdb.Transaction, c: Committed, ev: SessionBound) -> None:
        if ev.device:
            bare, _, resource = ev.jid.partition("/")
            k = key(bare, resource)
            device = load(txn.get(k, db=self.db(DEVICES))) or {"upto": 0}
            device["seen"] = c.envelope.at
            txn.put(k, dump(device), db=self.db(DEVICES))

    def on_session_ended(self, txn: lmdb.Transaction, c: Committed, ev: SessionEnded) -> None:
        bare, _, resource = ev.jid.partition("/")
        k = key(bare, resource)
        device = load(txn.get(k, db=self.db(DEVICES)))
        if device is not None:
            device["seen"] = c.envelope.at
            txn.put(k, dump(device), db=self.db(DEVICES))

    def on_offline_flushed(self, txn: lmdb.Transaction, c: Committed, ev: OfflineFlushed) -> None:
        devices = self.db(DEVICES)
        k = key(ev.owner, ev.resource)
        mine = load(txn.get(k, db=devices))
        if mine is not None and ev.upto > mine["upto"]:
            mine["upto"] = ev.upto
            txn.put(k, dump(mine), db=devices)
        cursors: dict[str, int] = {}
        for dk, dv in list(iter_prefix(txn, devices, key(ev.owner, ""))):
            device = load(dv)
            resource = dk[len(key(ev.owner, "")) :].decode()
            if device["seen"] < ev.forget_before and resource != ev.resource:
                txn.delete(dk, db=devices)
                continue
            cursors[resource] = device["upto"]
        # Drop what every device that needs it has received; with no device known, the first
        # session to come online takes the messages (RFC 6121).
        prefix = _prefix(ev.owner)
        dropped = 0
        for mk, mv in list(iter_prefix(txn, self.db(MSGS), prefix)):
            seq = from_u64(mk[len(prefix) :])
            target = load(mv).get("for")
            if target is not None:
                done = target not in cursors or (target == ev.resource and seq <= ev.upto)
            elif cursors:
                done = all(upto >= seq for upto in cursors.values())
            else:
                done = seq <= ev.upto
            if done:
                txn.delete(mk, db=self.db(MSGS))
                dropped += 1
        self._count(txn, ev.owner, -dropped)

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        delete_prefix(txn, self.db(MSGS), _prefix(ev.jid))
        delete_prefix(txn, self.db(DEVICES), key(ev.jid, ""))
        txn.delete(ev.jid.encode(), db=self.db(COUNTS))

    def _count(self, txn: lmdb.Transaction, owner: str, delta: int) -> None:
        if not delta:
            return
        raw = txn.get(owner.encode(), db=self.db(COUNTS))
        value = (from_u64(raw) if raw else 0) + delta
        if value > 0:
            txn.put(owner.encode(), u64(value), db=self.db(COUNTS))
        else:
            txn.delete(owner.encode(), db=self.db(COUNTS))


def messages(store: Store, txn: lmdb.Transaction, owner: str) -> list[OfflineMessage]:
    prefix = _prefix(owner)
    out = []
    for k, v in iter_prefix(txn, store.db(MSGS), prefix):
        obj = load(v)
        out.append(
            OfflineMessage(from_u64(k[len(prefix) :]), obj["xml"], obj["at"], obj.get("for"))
        )
    return out


def device_cursor(store: Store, txn: lmdb.Transaction, owner: str, resource: str) -> int | None:
    """The last offline ``seq`` a known device received, or None if it is not a known device."""
    device = load(txn.get(key(owner, resource), db=store.db(DEVICES)))
    return None if device is None else int(device["upto"])


def for_device(
    store: Store, txn: lmdb.Transaction, owner: str, resource: str, after: int
) -> list[OfflineMessage]:
    """Stored messages above ``after`` that a session with ``resource`` should receive."""
    return [
        msg
        for msg in messages(store, txn, owner)
        if msg.seq > after and msg.resource in (None, resource)
    ]


def count(store: Store, txn: lmdb.Transaction, owner: str) -> int:
    raw = txn.get(owner.encode(), db=store.db(COUNTS))
    return from_u64(raw) if raw else 0


def devices(store: Store, txn: lmdb.Transaction, owner: str) -> list[tuple[str, int, int]]:
    """``(resource, last seen ms, last offline seq received)`` of every device the offline
    store remembers for ``owner`` (``xes audit user``), by resource."""
    prefix = key(owner, "")
    return [
        (k[len(prefix) :].decode(), int(obj.get("seen", 0)), int(obj["upto"]))
        for k, v in iter_prefix(txn, store.db(DEVICES), prefix)
        if (obj := load(v)) is not None
    ]
