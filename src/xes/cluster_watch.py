"""The leader's watch over the other nodes: sessions of a node that stays unreachable end.

Raft tells the leader which peers it is connected to. A node the leader cannot reach for longer
than ``[cluster] node_down_after`` is given up on: the leader records, in one proposal, the
unavailable presence and ``session.ended`` of each of its sessions and then ``node.down`` for its
boot (ADR 0007). Contacts see those users go offline and nothing keeps pointing at connections
that may be dead. A node removed from the membership is treated the same way.

Only the leader decides, so two nodes never race to declare the same node down; if leadership
moves mid-way, the proposal carries the expected version of the node's stream and the projection
refuses ``node.down`` while a session of that boot remains, so a repeat or a late bind is
refused rather than half-applied. The watch keeps no state that matters: a new leader starts its
own clock, so a node is declared down at most ``node_down_after`` after the new leader took over.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import structlog

from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events.catalog import NodeDown
from xes.features import session_end
from xes.hub import Hub
from xes.projections import sessions as sessions_view
from xes.projections.projector import stream_version
from xes.projections.sessions import NodeView

log = structlog.get_logger("xes.cluster")

CHUNK_SESSIONS = 200
"""Sessions ended per proposal, far below the command size limit (roster targets included)."""


async def run(hub: Hub, *, down_after: float, period: float = 1.0) -> None:
    unreachable_since: dict[str, float] = {}
    isolated_since: float | None = None
    reported = False
    while True:
        await anyio.sleep(period)
        try:
            status = await hub.log.status()
        except LogUnavailable:
            continue
        # The other side of node.down: a node that cannot reach a majority for as long as the
        # leader waits before giving up on it drops its clients, so they can reconnect to a
        # node that can serve them instead of sitting on a stream that can only answer errors.
        if status.get("has_quorum", True):
            isolated_since, reported = None, False
        elif isolated_since is None:
            isolated_since = time.monotonic()
        elif not reported and time.monotonic() - isolated_since >= down_after:
            log.warning("isolated", seconds=round(time.monotonic() - isolated_since, 1))
            reported = True
            if hub.on_isolated is not None:
                hub.on_isolated()
        if status.get("state") != "leader":
            unreachable_since.clear()
            continue
        now = time.monotonic()
        with hub.read() as txn:
            known = sessions_view.nodes(hub.store, txn)
        for node in known:
            reason = _unreachable(hub, node, status)
            if reason is None:
                unreachable_since.pop(node.node, None)
                continue
            since = unreachable_since.setdefault(node.node, now)
            if now - since < down_after:
                continue
            try:
                await declare_down(hub, node, reason)
            except (LogUnavailable, ProposalRejected) as exc:
                log.warning("node_down_not_recorded", node=node.node, error=str(exc))


def _unreachable(hub: Hub, node: NodeView, status: dict[str, Any]) -> str | None:
    """Why ``node`` counts as gone, or None when it is fine (or not ours to judge)."""
    if node.down or node.node == hub.node or not node.raft:
        return None
    if node.raft not in status.get("members", []):
        return "removed"
    if not status.get("connected", {}).get(node.raft, False):
        return "unreachable"
    return None


async def declare_down(hub: Hub, node: NodeView, reason: str) -> None:
    """End every session of ``node``'s boot, in chunks, then record ``node.down``."""
    while True:
        with hub.read() as txn:
            views = sessions_view.of_node(hub.store, txn, node.node, node.boot)
            current = sessions_view.nodes(hub.store, txn)
            version = stream_version(hub.store, txn, f"node:{node.node}")
            if not any(n.node == node.node and n.boot == node.boot and not n.down for n in current):
                return  # it restarted with a new boot, or someone else recorded it already
            chunk = views[:CHUNK_SESSIONS]
            events: list[Any] = session_end.end_events(hub, txn, chunk, "node_down")
        if len(views) > CHUNK_SESSIONS:
            await hub.log.append(*events)
            continue
        events.append(NodeDown(node.node, node.boot, reason, hub.node))
        await hub.log.append(*events, expected={f"node:{node.node}": version})
        log.warning(
            "node_declared_down", node=node.node, boot=node.boot, reason=reason, sessions=len(views)
        )
        return
