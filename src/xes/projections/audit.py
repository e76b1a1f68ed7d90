"""The audit projection (ADR 0021): announced node keys and signed checkpoints of the chain.

Handles ``audit.key_announced``, ``audit.checkpoint``, ``audit.vouched`` and ``audit.accessed``.
It also owns the chain's sub-databases (``audit.chain``, and the ``head`` row of
``audit.state``), which the projector extends for every event (:mod:`xes.audit.chain`), so replay
rebuilds them and the state digest covers them. In ``audit.state`` besides the head: ``c`` +
``u64(seq)`` per checkpoint (with its signers) and ``k`` + node + NUL + key per announced key
(two sub-databases in all: the environment opens at most 64).

A checkpoint or vouch is refused unless its head is the chain's at the event it names and its
signature verifies with a key the signer announced: every one in the journal was true when it
was committed, on every node alike (signature checks are deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lmdb

from xes.audit import chain
from xes.audit import keys as audit_keys
from xes.events import Committed
from xes.projections.base import Projection, Rejected, dump, iter_prefix, key, load
from xes.store import journal
from xes.store.env import Store, u64

STATE = chain.STATE
_CHECKPOINT = b"c"
_KEY = b"k"


def _checkpoint_key(seq: int) -> bytes:
    return _CHECKPOINT + u64(seq)


def _key_key(node: str, public_key: str) -> bytes:
    return _KEY + key(node, public_key)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A committed checkpoint with everyone who signed it."""

    seq: int
    index: int
    pos: int
    head: str
    work: int
    at: int
    """The proposer's clock when it was proposed (ms): when the next one is due."""
    signers: dict[str, dict[str, str]]
    """Node id -> ``{"key": public key, "signature": ...}``."""


class Audit(Projection):
    name = "audit"
    dbs = chain.DBS
    handles = ("audit.key_announced", "audit.checkpoint", "audit.vouched", "audit.accessed")

    def on_audit_key_announced(self, txn: lmdb.Transaction, c: Committed, ev: Any) -> None:
        try:
            ok = len(bytes.fromhex(ev.public_key)) == 32
        except ValueError:
            ok = False
        if not ok:
            self._refuse("bad-key")
            return
        where = dump({"index": c.index, "pos": c.pos})
        txn.put(_key_key(ev.node, ev.public_key), where, db=self.db(STATE), overwrite=False)

    def on_audit_checkpoint(self, txn: lmdb.Transaction, c: Committed, ev: Any) -> None:
        refused = self._refused(txn, ev)
        record = {
            "seq": ev.seq,
            "index": ev.index,
            "pos": ev.pos,
            "head": ev.head,
            "work": ev.work,
            "at": c.envelope.at,
            "signers": {ev.node: {"key": ev.public_key, "signature": ev.signature}},
        }
        if refused:
            record["refused"] = refused  # only in a replay of an altered journal
        if txn.get(_checkpoint_key(ev.seq), db=self.db(STATE)) is not None:
            self._refuse("checkpoint-exists")
            return
        txn.put(_checkpoint_key(ev.seq), dump(record), db=self.db(STATE))

    def on_audit_vouched(self, txn: lmdb.Transaction, c: Committed, ev: Any) -> None:
        refused = self._refused(txn, ev)
        record = load(txn.get(_checkpoint_key(ev.seq), db=self.db(STATE)))
        if record is None or record["head"] != ev.head:
            refused = refused or self._refuse("no-such-checkpoint")
        elif ev.node in record["signers"]:
            refused = refused or self._refuse("already-vouched")
        if record is None:
            return
        signer = {"key": ev.public_key, "signature": ev.signature}
        if refused:
            signer["refused"] = refused
        record["signers"].setdefault(ev.node, signer)
        txn.put(_checkpoint_key(ev.seq), dump(record), db=self.db(STATE))

    def on_audit_accessed(self, txn: lmdb.Transaction, c: Committed, ev: Any) -> None:
        """Nothing to fold: the journal row is the record (``xes audit`` lists none of it)."""

    def _refused(self, txn: lmdb.Transaction, ev: Any) -> str:
        """Why the signed statement does not hold ("" if it does): the named head must be the
        chain's there, and the signer's announced key must have signed it."""
        link = chain.get(self.store, txn, journal.event_key(ev.index, ev.pos))
        if link is None or link.seq != ev.seq or link.hash.hex() != ev.head:
            return self._refuse("checkpoint-mismatch")
        if txn.get(_key_key(ev.node, ev.public_key), db=self.db(STATE)) is None:
            return self._refuse("unknown-key")
        message = audit_keys.statement(ev.seq, ev.index, ev.pos, link.hash)
        if not audit_keys.verify(ev.public_key, ev.signature, message):
            return self._refuse("bad-signature")
        return ""

    def _refuse(self, reason: str) -> str:
        """Refuse the proposal; in a replay, where it was committed already (so the journal was
        altered since), return the reason to record instead: the digest then differs."""
        if not self.replay:
            raise Rejected(reason)
        return reason


def latest_checkpoint(store: Store, txn: lmdb.Transaction) -> Checkpoint | None:
    cur = txn.cursor(db=store.db(STATE))
    # The last checkpoint row is the one before the first key past the "c" rows.
    moved = cur.prev() if cur.set_range(b"d") else cur.last()
    if not moved or not cur.key().startswith(_CHECKPOINT):
        return None
    return Checkpoint(**load(cur.value()))


def node_keys(store: Store, txn: lmdb.Transaction, node: str) -> list[str]:
    """Public keys ``node`` announced (hex), sorted."""
    prefix = _key_key(node, "")
    return [k[len(prefix) :].decode() for k, _ in iter_prefix(txn, store.db(STATE), prefix)]
