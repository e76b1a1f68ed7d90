"""What a projection is: named sub-databases plus a pure fold over committed events.

A projection declares the sub-databases it owns and the event types it handles. ``apply`` is
called by the projector inside the single write transaction of a log entry; it must be a
deterministic function of the stored state and the committed event: no clock, no randomness, no
node-local configuration, no iteration over unordered sets (ADR 0003).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import lmdb

from xes.events import Committed
from xes.events.envelope import canonical_json
from xes.store.env import Store


class Rejected(Exception):
    """Raised by a projection to refuse the whole proposal (journalled as rejected with reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def dump(obj: Any) -> bytes:
    return canonical_json(obj)


def load(raw: bytes | None) -> Any:
    return None if raw is None else json.loads(raw)


def iter_prefix(
    txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes
) -> Iterator[tuple[bytes, bytes]]:
    """Every ``(key, value)`` whose key starts with ``prefix``, in key order."""
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix):
        return
    for k, v in cur:
        if not k.startswith(prefix):
            return
        yield k, v


def delete_prefix(txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes) -> None:
    """Delete every key that starts with ``prefix``."""
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix):
        return
    while cur.key().startswith(prefix):
        if not cur.delete():
            break


def key(*parts: str) -> bytes:
    """Composite key; NUL cannot occur in a JID, so it separates parts unambiguously."""
    return "\x00".join(parts).encode()


class Projection:
    """Base class. Subclasses set ``dbs`` and ``handles`` and implement ``on_<type>`` methods."""

    name: ClassVar[str]
    dbs: ClassVar[tuple[str, ...]]
    handles: ClassVar[tuple[str, ...]]
    """Event types this projection folds; every other type is ignored."""
    version: ClassVar[int] = 1
    """Bump when what ``apply`` stores changes: the projector then rebuilds every projection
    from the journal at start (as it does when a release adds a projection, ADR 0022)."""

    replay = False
    """Folding a journal already committed (``xes replay``), not deciding on proposals: a check
    that refuses a proposal must record a failed premise instead of raising (ADR 0021)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def apply(self, txn: lmdb.Transaction, committed: Committed, event: Any) -> None:
        method = getattr(self, "on_" + committed.envelope.type.replace(".", "_"))
        method(txn, committed, event)

    def db(self, name: str) -> lmdb._Database:
        return self.store.db(name)
