"""The node's view of the feature gate (ADR 0022): the Raft membership and what each member
announced it reads, as one :class:`~xes.events.gate.Gate` proposers consult.

The membership comes from the log process's status (every member, reachable or not: a member
that is down still applies the log when it returns) and is asked once a second; the
announcements come from the cluster-features projection. The gate is consulted on every
proposal, so :meth:`GateView.gate` returns a cached value; while something is still gated it
re-reads the (few-row) projection whenever the applied index moved, so the gate opens as soon as
the last member's ``node.started`` is applied here, not a period later.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import structlog

from xes.eventlog.client import LogClient, LogUnavailable
from xes.events.gate import Gate
from xes.projections import cluster_features
from xes.store.env import Store

log = structlog.get_logger("xes.gate")


class GateView:
    """The cached gate of one node; refreshed by :func:`run`."""

    def __init__(self, store: Store, applied: Callable[[], int]) -> None:
        self.store = store
        self.applied = applied
        self.members: tuple[str, ...] | None = None
        """Raft addresses of every member, once the log's status was read."""
        self._gate = Gate.unknown()
        self._open = False
        self._read_at = -1
        self._pending: dict[str, list[str]] | None = None
        """What :meth:`log_change` last logged."""

    def gate(self) -> Gate:
        """The gate now; closed (baseline only) until the membership is known."""
        if self.members is None or self._open:
            return self._gate
        applied = self.applied()
        if applied != self._read_at:
            self._refresh(applied)
        return self._gate

    def set_members(self, members: list[str]) -> None:
        """The Raft membership as the log reports it; an empty list (no status yet) is no
        answer: a gate over no members would let everything through."""
        if not members:
            return
        self.members = tuple(sorted(members))
        self._refresh(self.applied())

    def _refresh(self, applied: int) -> None:
        assert self.members is not None
        with self.store.env.begin() as txn:
            known = cluster_features.announced(self.store, txn)
        self._gate = cluster_features.gate(self.members, known)
        self._read_at = applied
        self._open = not self._gate.pending()

    def log_change(self) -> None:
        """Log the gate when it changed since the last call (from :func:`run`, so the line
        carries no connection's context even when a proposal refreshed the gate)."""
        pending = self._gate.pending()
        if pending != self._pending:
            waiting = sorted({m for nodes in pending.values() for m in nodes})
            log.info("feature_gate", open=not pending, gated=sorted(pending), waiting=waiting)
            self._pending = pending


async def run(view: GateView, log_client: LogClient, period: float = 1.0) -> None:
    """Keep ``view`` current: membership from the log's status, announcements re-read."""
    while True:
        try:
            status = await log_client.status()
        except LogUnavailable:
            await anyio.sleep(period)
            continue
        members = status.get("members") or []
        if members:
            view.set_members(members)
            view.log_change()
        await anyio.sleep(period)
