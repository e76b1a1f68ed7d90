"""The permanent, append-only event store: every committed event with its log position.

Raft log compaction drops old log entries; this journal never does. Keys are
``u64(index) + u16(pos)`` so a cursor walks events in log order. ``journal.ids`` maps an event id
to its key so a proposal retried after an unknown outcome is recognised and not applied twice.
Refused proposals are kept too (``journal.rejected``), with the reason, for auditors.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import lmdb

from xes.events import Committed
from xes.store.env import Store, from_u64, u64

DBS = ["journal.events", "journal.ids", "journal.rejected", "meta"]
_POS = struct.Struct(">H")
APPLIED_KEY = b"applied_index"


def event_key(index: int, pos: int) -> bytes:
    return u64(index) + _POS.pack(pos)


def split_key(key: bytes) -> tuple[int, int]:
    return from_u64(key[:8]), int(_POS.unpack(key[8:10])[0])


def applied_index(store: Store, txn: lmdb.Transaction) -> int:
    raw = txn.get(APPLIED_KEY, db=store.db("meta"))
    return from_u64(raw) if raw else 0


def read_events(
    store: Store, txn: lmdb.Transaction, after_index: int = 0, upto_index: int | None = None
) -> Iterator[Committed]:
    """Committed events with ``after_index < index <= upto_index``, in log order."""
    for _, value in read_rows(store, txn, after_index, upto_index):
        yield Committed.decode(value)


def read_rows(
    store: Store, txn: lmdb.Transaction, after_index: int = 0, upto_index: int | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """The stored ``(key, row)`` of committed events with ``after_index < index <= upto_index``,
    in log order: the exact bytes, for what hashes them (ADR 0021)."""
    cur = txn.cursor(db=store.db("journal.events"))
    if not cur.set_range(u64(after_index + 1)):
        return
    for key, value in cur:
        if upto_index is not None and from_u64(key[:8]) > upto_index:
            break
        yield bytes(key), bytes(value)


def count_events(store: Store, txn: lmdb.Transaction) -> int:
    return int(txn.stat(store.db("journal.events"))["entries"])
