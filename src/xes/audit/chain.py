"""The hash chain over the journal (ADR 0021), extended by apply for every committed event.

Each event's chain hash covers the previous event's hash, its sequence number in the chain and
the SHA-256 of its journal row (the canonical ``Committed`` encoding: envelope, index, pos and
version), so an edited, deleted, inserted or reordered row no longer matches what every node
computed when it was committed. The row enters through its digest rather than its bytes so an
export can prove an event's place in the chain while revealing only digests of the events
between it and a checkpoint.

Sub-databases (written by the projector only, in the entry's transaction, and rebuilt by
replay): ``audit.chain`` keyed like ``journal.events`` (``u64(index) + u16(pos)``), value
``u64(seq) + hash``; in ``audit.state`` (shared with :mod:`xes.projections.audit`) the row
``head``: the last event's seq, key and hash plus the count of non-audit events (what
checkpoints are counted in). Both are pure functions of the journal, the same on every node.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import lmdb

from xes.store import journal
from xes.store.env import Store

CHAIN = "audit.chain"
STATE = "audit.state"
DBS = (CHAIN, STATE)
HEAD_KEY = b"head"
GENESIS = bytes(32)
"""The ``prev`` of the first event ever committed."""
DOMAIN = b"xes.audit.chain.1\x00"
"""Prefix of every chain hash, so no other SHA-256 in xes can be passed off as one."""
AUDIT_PREFIX = b'"type":"audit.'
_SEQ = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class Link:
    """One event's place in the chain."""

    seq: int
    """1 for the first event ever committed, then +1 per event."""
    hash: bytes
    """Chain hash after this event (32 bytes)."""


@dataclass(frozen=True, slots=True)
class Head:
    """The chain after its last event (``seq`` 0 and ``GENESIS`` before any)."""

    seq: int
    key: bytes
    """Journal key of the last event (empty before any)."""
    hash: bytes
    work: int
    """Events so far that are not ``audit.*``: checkpoints are due every N of these."""

    @property
    def index(self) -> int:
        return journal.split_key(self.key)[0] if self.key else 0

    @property
    def pos(self) -> int:
        return journal.split_key(self.key)[1] if self.key else 0


EMPTY = Head(0, b"", GENESIS, 0)


def leaf(row: bytes) -> bytes:
    """The digest of a journal row that enters the chain."""
    return hashlib.sha256(row).digest()


def link(prev: bytes, seq: int, digest: bytes) -> bytes:
    """The chain hash after the event numbered ``seq`` whose row digest is ``digest``."""
    return hashlib.sha256(DOMAIN + prev + _SEQ.pack(seq) + digest).digest()


def is_audit_row(row: bytes) -> bool:
    """Whether a canonical row is an ``audit.*`` event (checkpoints do not count as work)."""
    return AUDIT_PREFIX in row


def encode_link(value: Link) -> bytes:
    return _SEQ.pack(value.seq) + value.hash


def decode_link(raw: bytes) -> Link:
    return Link(int(_SEQ.unpack(raw[:8])[0]), bytes(raw[8:40]))


def head(store: Store, txn: lmdb.Transaction) -> Head:
    raw = txn.get(HEAD_KEY, db=store.db(STATE))
    if raw is None:
        return EMPTY
    raw = bytes(raw)
    seq, work = _SEQ.unpack(raw[:8])[0], _SEQ.unpack(raw[50:58])[0]
    return Head(int(seq), raw[8:18], raw[18:50], int(work))


def get(store: Store, txn: lmdb.Transaction, key: bytes) -> Link | None:
    raw = txn.get(key, db=store.db(CHAIN))
    return None if raw is None else decode_link(raw)


def append(store: Store, txn: lmdb.Transaction, key: bytes, row: bytes) -> None:
    """Extend the chain with the journal row just written at ``key`` (called by apply).

    Works on the packed head row directly: this runs for every event committed."""
    state = store.db(STATE)
    raw = txn.get(HEAD_KEY, db=state)
    if raw is None:
        seq, prev, work = 1, GENESIS, 0
    else:
        seq, prev, work = _SEQ.unpack_from(raw)[0] + 1, raw[18:50], _SEQ.unpack_from(raw, 50)[0]
    packed = _SEQ.pack(seq)
    value = hashlib.sha256(DOMAIN + prev + packed + hashlib.sha256(row).digest()).digest()
    txn.put(key, packed + value, db=store.db(CHAIN))
    if AUDIT_PREFIX not in row:
        work += 1
    txn.put(HEAD_KEY, packed + key + value + _SEQ.pack(work), db=state)


def catch_up(store: Store, txn: lmdb.Transaction) -> int:
    """Chain journal rows written before this build computed the chain; returns how many.

    A data directory from an earlier release has a journal but no chain: it is computed from
    the first event on, exactly as replay would, so every node (each catching up over the same
    journal) ends with the same chain.
    """
    last = head(store, txn)
    cur = txn.cursor(db=store.db("journal.events"))
    if last.key:
        if not cur.set_key(last.key) or not cur.next():
            return 0
    elif not cur.first():
        return 0
    count = 0
    for key, row in cur:
        append(store, txn, bytes(key), bytes(row))
        count += 1
    return count
