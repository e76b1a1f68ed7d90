"""What an operator with disk access could do to a stopped node's journal, for the audit tests.

Each function opens the LMDB environment at ``db`` (a data directory's ``db``, or a copy of it)
as a plain writer, changes it and returns the ``(index, pos)`` a verifier should name. ``reseal``
then recomputes ``audit.chain`` and the head from the tampered journal, as a knowledgeable
attacker would, so only the signed checkpoints can tell.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from xes.audit import chain
from xes.store.journal import event_key, split_key

__all__ = ["event_key", "split_key"]

_SEQ = struct.Struct(">Q")


@contextmanager
def opened(db: Path) -> Iterator[tuple[lmdb.Transaction, dict[str, lmdb._Database]]]:
    env = lmdb.open(str(db), max_dbs=64, map_size=64 * 1024**3)
    try:
        names = ("journal.events", "journal.ids", chain.CHAIN, chain.STATE)
        handles = {n: env.open_db(n.encode(), create=False) for n in names}
        with env.begin(write=True) as txn:
            yield txn, handles
    finally:
        env.close()


def event_keys(db: Path, kind: str | None = None) -> list[bytes]:
    """Journal keys in order (of events of type ``kind`` only, when given)."""
    with opened(db) as (txn, dbs):
        return [
            bytes(k)
            for k, v in txn.cursor(db=dbs["journal.events"])
            if kind is None or json.loads(v)["event"]["type"] == kind
        ]


def edit_byte(db: Path, key: bytes) -> tuple[int, int]:
    """Change one byte of the event's data (a digit or letter of its id becomes another)."""
    with opened(db) as (txn, dbs):
        row = bytearray(txn.get(key, db=dbs["journal.events"]))
        at = row.index(b'"id":"') + 6
        row[at] = ord("Z") if row[at] != ord("Z") else ord("Y")
        txn.put(key, bytes(row), db=dbs["journal.events"])
    return split_key(key)


def delete(db: Path, key: bytes, *, with_chain: bool = False) -> tuple[int, int]:
    with opened(db) as (txn, dbs):
        txn.delete(key, db=dbs["journal.events"])
        if with_chain:
            txn.delete(key, db=dbs[chain.CHAIN])
    return split_key(key)


def swap(db: Path, a: bytes, b: bytes) -> tuple[int, int]:
    with opened(db) as (txn, dbs):
        ra, rb = txn.get(a, db=dbs["journal.events"]), txn.get(b, db=dbs["journal.events"])
        txn.put(a, rb, db=dbs["journal.events"])
        txn.put(b, ra, db=dbs["journal.events"])
    return split_key(min(a, b))


def truncate(db: Path, count: int) -> tuple[int, int]:
    """Delete the last ``count`` events with their chain rows; returns the head's position."""
    with opened(db) as (txn, dbs):
        keys = [bytes(k) for k in txn.cursor(db=dbs["journal.events"]).iternext(values=False)]
        for key in keys[-count:]:
            txn.delete(key, db=dbs["journal.events"])
            txn.delete(key, db=dbs[chain.CHAIN])
    return split_key(keys[-1])


def replace_signature(db: Path, key: bytes, signature: str) -> tuple[int, int]:
    """Put ``signature`` in the checkpoint (or vouch) row at ``key``, canonically re-encoded."""
    with opened(db) as (txn, dbs):
        obj = json.loads(txn.get(key, db=dbs["journal.events"]))
        obj["event"]["data"]["signature"] = signature
        row = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        txn.put(key, row.encode(), db=dbs["journal.events"])
    return split_key(key)


def reseal(db: Path) -> None:
    """Recompute the whole chain and its head from the journal as it now is."""
    with opened(db) as (txn, dbs):
        txn.drop(dbs[chain.CHAIN], delete=False)
        prev, seq, work, last = chain.GENESIS, 0, 0, b""
        for key, row in txn.cursor(db=dbs["journal.events"]):
            seq += 1
            prev = chain.link(prev, seq, chain.leaf(bytes(row)))
            txn.put(key, _SEQ.pack(seq) + prev, db=dbs[chain.CHAIN])
            work += 0 if chain.is_audit_row(bytes(row)) else 1
            last = bytes(key)
        txn.put(chain.HEAD_KEY, _SEQ.pack(seq) + last + prev + _SEQ.pack(work), db=dbs[chain.STATE])
