"""Legal holds (issue 17, item 5; ADR 0024): what an operator has exempted from retention.

A hold covers a user (their archive, and the copies of their one-to-one messages in other
archives), a room (its archive) or a conversation between two bare JIDs (both sides' copies).
Retention asks :func:`covering` before it deletes anything; the archive keeps what a hold
covers aside until the hold is lifted. A held account cannot be removed (the proposal is
refused): erasure would defeat the hold.

Placing and lifting are events, so the chain (ADR 0021) proves when each hold was in force.
"""

from __future__ import annotations

from dataclasses import dataclass

import lmdb

from xes.events import Committed
from xes.events.catalog import HoldLifted, HoldPlaced
from xes.projections.base import Projection, Rejected, dump, iter_prefix, load
from xes.store.env import Store

BY_ID = "holds.by_id"
TARGETS = "holds.targets"
"""``target \\0 hold id`` -> ``b""``: the holds in force per target."""

KINDS = ("user", "room", "conversation")


def user_target(jid: str) -> str:
    return f"user:{jid}"


def room_target(jid: str) -> str:
    return f"room:{jid}"


def conversation_target(a: str, b: str) -> str:
    first, second = sorted((a, b))
    return f"conversation:{first} {second}"


def parse_target(target: str) -> tuple[str, list[str]]:
    """``(kind, jids)`` of a target string; ValueError if it is not one."""
    kind, sep, rest = target.partition(":")
    jids = rest.split(" ")
    if not sep or kind not in KINDS or not all(jids):
        raise ValueError(f"not a hold target: {target!r}")
    if (kind == "conversation") != (len(jids) == 2) or len(jids) > 2:
        raise ValueError(f"not a hold target: {target!r}")
    if kind == "conversation" and jids != sorted(jids):
        raise ValueError(f"a conversation's JIDs go in sorted order: {target!r}")
    return kind, jids


@dataclass(frozen=True, slots=True)
class Hold:
    hold: str
    target: str
    reason: str
    placed_at: int
    """Commit time of its ``hold.placed``, ms since the epoch."""
    placed_index: int
    """Its log index (where ``xes audit verify`` proves it)."""
    by: str


class Holds(Projection):
    name = "holds"
    dbs = (BY_ID, TARGETS)
    handles = ("hold.placed", "hold.lifted")

    def on_hold_placed(self, txn: lmdb.Transaction, c: Committed, ev: HoldPlaced) -> None:
        try:
            parse_target(ev.target)
        except ValueError as exc:
            raise Rejected(f"hold-bad-target: {exc}") from exc
        if txn.get(ev.hold.encode(), db=self.db(BY_ID)) is not None:
            raise Rejected(f"hold-exists: {ev.hold}")
        row = {
            "target": ev.target,
            "reason": ev.reason,
            "at": c.envelope.at,
            "index": c.index,
            "by": ev.user,
        }
        txn.put(ev.hold.encode(), dump(row), db=self.db(BY_ID))
        txn.put(_target_key(ev.target, ev.hold), b"", db=self.db(TARGETS))

    def on_hold_lifted(self, txn: lmdb.Transaction, c: Committed, ev: HoldLifted) -> None:
        row = load(txn.get(ev.hold.encode(), db=self.db(BY_ID)))
        if row is None:
            raise Rejected(f"hold-unknown: {ev.hold}")
        if row["target"] != ev.target:
            raise Rejected(f"hold-target-mismatch: {ev.hold} covers {row['target']}")
        txn.delete(ev.hold.encode(), db=self.db(BY_ID))
        txn.delete(_target_key(ev.target, ev.hold), db=self.db(TARGETS))


def _target_key(target: str, hold: str) -> bytes:
    return target.encode() + b"\x00" + hold.encode()


def is_held(store: Store, txn: lmdb.Transaction, target: str) -> bool:
    """Some hold in force covers exactly ``target``."""
    return next(iter_prefix(txn, store.db(TARGETS), target.encode() + b"\x00"), None) is not None


def covering(store: Store, txn: lmdb.Transaction, owner: str, peer: str) -> str | None:
    """The target of a hold in force that covers an archived message of ``owner`` (a bare
    user or room JID) with ``peer`` (bare), or None. Most deployments hold nothing: one cursor
    step answers that."""
    cur = txn.cursor(db=store.db(TARGETS))
    if not cur.first():
        return None
    for target in (
        user_target(owner),
        room_target(owner),
        user_target(peer),
        conversation_target(owner, peer),
    ):
        if is_held(store, txn, target):
            return target
    return None


def holding_account(store: Store, txn: lmdb.Transaction, jid: str) -> str | None:
    """The id of a hold in force on user ``jid`` or on one of its conversations, or None."""
    cur = txn.cursor(db=store.db(TARGETS))
    if not cur.first():
        return None
    for raw, _ in cur:
        target, _, hold = raw.decode().partition("\x00")
        kind, jids = parse_target(target)
        if kind in ("user", "conversation") and jid in jids:
            return hold
    return None


def get(store: Store, txn: lmdb.Transaction, hold: str) -> Hold | None:
    row = load(txn.get(hold.encode(), db=store.db(BY_ID)))
    return None if row is None else _hold(hold, row)


def in_force(store: Store, txn: lmdb.Transaction) -> list[Hold]:
    """Every hold in force, oldest first."""
    holds = [_hold(k.decode(), load(v)) for k, v in txn.cursor(db=store.db(BY_ID))]
    return sorted(holds, key=lambda h: (h.placed_index, h.hold))


def _hold(hold: str, row: dict[str, object]) -> Hold:
    return Hold(
        hold,
        str(row["target"]),
        str(row["reason"]),
        int(row["at"]),  # type: ignore[call-overload]
        int(row["index"]),  # type: ignore[call-overload]
        str(row["by"]),
    )
