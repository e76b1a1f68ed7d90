"""Check the hash chain and its signed checkpoints (``xes audit verify``, ADR 0021).

A store is walked in journal order over the union of ``journal.events`` and ``audit.chain``
keys. Each row is checked against its own stored chain hash, taken with the *stored* previous
hash, so one edited row is reported at its own index instead of breaking every later one;
besides, the chain is recomputed from the first event and compared with every checkpoint's
signed head, which catches a journal whose chain rows were rewritten to match an edit. An
export (:mod:`xes.audit.export`) is a contiguous stretch of the chain in which events left out by
the filters appear as digests only, checked the same way.

What each finding means:

* a row whose hash is not its chain hash: the event was **edited**;
* a chain hash without a row: the event was **deleted**; a gap in the sequence numbers: events
  were deleted together with their chain rows;
* a row holding another position's ``index``/``pos``: events were **moved or swapped**;
* the chain recomputed up to a checkpoint no longer has the signed head: something in that
  stretch was changed and the chain rows rewritten to hide it;
* a signature that does not verify, or made with a key neither announced nor trusted: a
  **forged or replaced checkpoint**;
* a journal that ends before the chain head: a **truncated tail**. If the head row was rewritten
  too, the events after the last checkpoint can go unnoticed here; the other nodes still hold
  them (compare the heads ``xes audit verify`` prints on each node).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import lmdb

from xes.audit import chain, keys
from xes.store import journal
from xes.store.env import Store

CHECKPOINT_TYPES = (b'"type":"audit.checkpoint"', b'"type":"audit.vouched"')
KEY_TYPE = b'"type":"audit.key_announced"'


@dataclass(frozen=True, slots=True)
class Problem:
    index: int
    pos: int
    what: str


def _where(problem: Problem) -> tuple[int, int]:
    return problem.index, problem.pos


@dataclass
class Trust:
    """Which public keys a signature may be made with."""

    announced: dict[str, set[str]] = field(default_factory=dict)
    """Node id -> keys announced in the journal (``audit.key_announced``)."""
    pinned: dict[str, str | None] | None = None
    """Trusted keys (hex) -> node id or None (any node), from ``--trust-key`` or the config;
    None: trust the announced keys."""

    @classmethod
    def parse_pinned(cls, values: Iterable[str]) -> dict[str, str | None] | None:
        out: dict[str, str | None] = {}
        for value in values:
            node, _, hexkey = value.strip().rpartition(":")
            if len(bytes.fromhex(hexkey)) != 32:
                raise ValueError(f"not a 32-byte hex Ed25519 public key: {value!r}")
            out[hexkey.lower()] = node or None
        return out or None

    def why_not(self, node: str, public_key: str) -> str | None:
        """None if a signature of ``node`` with ``public_key`` may be trusted, else why not."""
        if self.pinned is not None:
            if public_key not in self.pinned:
                return f"{node}'s key {public_key[:16]}... is not a trusted key"
            owner = self.pinned[public_key]
            if owner is not None and owner != node:
                return f"key {public_key[:16]}... is trusted for {owner}, not {node}"
            return None
        if public_key not in self.announced.get(node, set()):
            return f"{node}'s key {public_key[:16]}... was never announced"
        return None


@dataclass
class Report:
    events: int = 0
    problems: list[Problem] = field(default_factory=list)
    checkpoints: int = 0
    """Checkpoints whose signed head the recomputed chain reproduced."""
    last_checkpoint: tuple[int, int, list[str]] | None = None
    """(covered seq, covered index, signers) of the last good checkpoint."""
    head: tuple[int, int, str] = (0, 0, chain.GENESIS.hex())
    """(seq, index, hash) at the end of the walk."""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, index: int, pos: int, what: str) -> None:
        self.problems.append(Problem(index, pos, what))

    def first(self) -> Problem | None:
        """The problem at the lowest position; of several there, the most telling (found first).
        Index 0 (never a log index) is the file as a whole: named only when nothing else is."""
        events = [p for p in self.problems if p.index > 0] or self.problems
        return min(events, key=_where) if events else None


class Walker:
    """Recomputes the chain over a sequence of rows (or row digests) and checks checkpoints."""

    def __init__(self, trust: Trust, covered: set[int], report: Report) -> None:
        self.trust = trust
        self.report = report
        self.true_prev = chain.GENESIS
        self.true_at: dict[int, bytes] = dict.fromkeys(covered, b"")
        """Recomputed hash at each seq a checkpoint names (filled as the walk passes it)."""
        self.starts: dict[int, tuple[int, int]] = dict.fromkeys({1, *(c + 1 for c in covered)})
        """Where the stretch after each checkpointed event begins: (index, pos) by seq."""
        self.last_good = 0
        """Seq of the last covered event whose checkpoint matched."""
        self.mismatched = False

    def step(self, seq: int, digest: bytes, index: int, pos: int) -> bytes:
        """The recomputed chain hash after event ``seq`` (at ``index``/``pos``)."""
        self.true_prev = chain.link(self.true_prev, seq, digest)
        if seq in self.true_at:
            self.true_at[seq] = self.true_prev
        if seq in self.starts:
            self.starts[seq] = (index, pos)
        return self.true_prev

    def audit_row(self, index: int, pos: int, obj: dict[str, Any]) -> None:
        """Check a checkpoint or vouch row: its signature, and the head it names."""
        ev = obj["event"]
        kind, data = ev["type"], ev.get("data", {})
        if kind not in ("audit.checkpoint", "audit.vouched"):
            return
        try:
            seq, cindex, cpos, head = data["seq"], data["index"], data["pos"], data["head"]
            node, public, signature = data["node"], data["public_key"], data["signature"]
            message = keys.statement(seq, cindex, cpos, bytes.fromhex(head))
        except (KeyError, TypeError, ValueError):
            self.report.add(index, pos, f"malformed {kind}")
            return
        if not keys.verify(public, signature, message):
            self.report.add(
                index, pos, f"forged checkpoint: the signature by {node} does not verify"
            )
            return
        distrust = self.trust.why_not(node, public)
        if distrust:
            self.report.add(index, pos, f"checkpoint signed with an untrusted key: {distrust}")
            return
        recomputed = self.true_at.get(seq)
        if not recomputed:
            if kind == "audit.checkpoint":
                self.report.notes.append(
                    f"checkpoint at index {index} covers seq {seq}, before what was checked"
                )
            return
        if recomputed.hex() != head:
            if not self.mismatched:
                self.mismatched = True
                gindex, gpos = self.starts.get(self.last_good + 1) or (cindex, cpos)
                if any((p.index, p.pos) >= (gindex, gpos) for p in self.report.problems):
                    return  # the stretch's own finding says where: this is its consequence
                self.report.add(
                    gindex,
                    gpos,
                    f"the events from index {gindex} to index {cindex} no longer hash to "
                    f"the head {node} signed at index {index}: one of them was changed, removed "
                    "or reordered, and the chain rows rewritten to match",
                )
            return
        if kind == "audit.checkpoint":
            self.report.checkpoints += 1
        if seq >= self.last_good and not self.mismatched:
            self.last_good = seq
            signers = [node]
            last = self.report.last_checkpoint
            if last is not None and last[0] == seq:
                signers = sorted({*last[2], node})
            self.report.last_checkpoint = (seq, cindex, signers)


def scan(store: Store, txn: lmdb.Transaction) -> tuple[set[int], dict[str, set[str]]]:
    """First pass: the seqs checkpoints name, and the keys nodes announced."""
    covered: set[int] = set()
    announced: dict[str, set[str]] = {}
    for _, row in txn.cursor(db=store.db("journal.events")):
        row = bytes(row)
        if chain.AUDIT_PREFIX not in row:
            continue
        try:
            obj = json.loads(row)
            data = obj["event"]["data"]
            if any(t in row for t in CHECKPOINT_TYPES):
                covered.add(int(data["seq"]))
            elif KEY_TYPE in row:
                announced.setdefault(data["node"], set()).add(data["public_key"])
        except (ValueError, KeyError, TypeError):
            continue  # reported by the second pass
    return covered, announced


def _keys(store: Store, txn: lmdb.Transaction) -> Iterable[bytes]:
    """Every key of ``journal.events`` and ``audit.chain``, merged in order."""
    a = txn.cursor(db=store.db("journal.events"))
    b = txn.cursor(db=store.db(chain.CHAIN))
    ka = a.key() if a.first() else None
    kb = b.key() if b.first() else None
    while ka is not None or kb is not None:
        key = ka if kb is None or (ka is not None and ka <= kb) else kb
        yield bytes(key)  # type: ignore[arg-type]
        if ka == key:
            ka = a.key() if a.next() else None
        if kb == key:
            kb = b.key() if b.next() else None


def verify_store(
    store: Store, txn: lmdb.Transaction, pinned: dict[str, str | None] | None = None
) -> Report:
    """Walk the whole journal of ``store`` in one read transaction."""
    report = Report()
    covered, announced = scan(store, txn)
    walker = Walker(Trust(announced, pinned), covered, report)
    events_db, chain_db = store.db("journal.events"), store.db(chain.CHAIN)
    prev, expected_seq = chain.GENESIS, 1
    last_key, last_seq = b"", 0
    for key in _keys(store, txn):
        index, pos = journal.split_key(key)
        raw_row, raw_link = txn.get(key, db=events_db), txn.get(key, db=chain_db)
        stored = chain.decode_link(raw_link) if raw_link is not None else None
        if raw_row is None:
            assert stored is not None
            report.add(index, pos, "deleted event: the chain has its hash, the journal no row")
            prev, expected_seq = stored.hash, stored.seq + 1
            continue
        row = bytes(raw_row)
        report.events += 1
        seq = stored.seq if stored is not None else expected_seq
        if seq > expected_seq:
            report.add(
                index,
                pos,
                f"{seq - expected_seq} event(s) missing before this one (deleted with their "
                "chain rows)",
            )
        elif seq < expected_seq:
            report.add(index, pos, f"chain sequence goes back ({seq} after {expected_seq - 1})")
        digest = chain.leaf(row)
        walker.step(report.events, digest, index, pos)
        try:
            obj = json.loads(row)
            placed = (obj["index"], obj["pos"])
        except (ValueError, KeyError, TypeError):
            obj, placed = None, None
        if placed is not None and placed != (index, pos):
            report.add(
                index,
                pos,
                f"reordered: the row at index {index} pos {pos} is the event committed at "
                f"index {placed[0]} pos {placed[1]}",
            )
        if stored is None:
            report.add(index, pos, "event not in the chain (inserted, or its chain row deleted)")
        elif chain.link(prev, seq, digest) != stored.hash:
            report.add(index, pos, "edited event: its row does not hash to its chain hash")
        if obj is None:
            report.add(index, pos, "unreadable row")
        elif chain.AUDIT_PREFIX in row:
            walker.audit_row(index, pos, obj)
        prev = stored.hash if stored is not None else chain.link(prev, seq, digest)
        expected_seq, last_key, last_seq = seq + 1, key, seq
    head = chain.head(store, txn)
    last_index = journal.split_key(last_key)[0] if last_key else 0
    if head.seq > last_seq or head.key > last_key:
        report.add(
            head.index,
            head.pos,
            f"truncated: the chain head records {head.seq} events up to index {head.index}; "
            f"the journal ends at index {last_index} (event {last_seq})",
        )
    elif head.seq < last_seq or head.key < last_key:
        report.add(
            last_index, 0, f"events after the chain head (index {head.index}): not from apply"
        )
    elif head.hash != prev:
        report.add(head.index, head.pos, "the chain head does not match the last chain hash")
    report.head = (last_seq, last_index, prev.hex())
    _tail_note(report)
    return report


def _tail_note(report: Report) -> None:
    if report.last_checkpoint is None:
        report.notes.append(f"no checkpoint covers any of the {report.events} events")
        return
    seq, index, _ = report.last_checkpoint
    after = report.head[0] - seq
    if after > 0:
        report.notes.append(
            f"{after} event(s) after index {index} are not covered by a checkpoint yet: a "
            "deletion of them together with the head row would not be seen here"
        )
