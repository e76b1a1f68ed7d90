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

Detached stream-management sessions end when the leader has seen them detached for their
resumption timeout, on its monotonic clock (:class:`DetachedClock`), not when the wall-clock
``deadline`` in ``sm.detached`` passes: that deadline is the detaching node's clock, compared
with the leader's, and a clock stepped back by minutes on the one, or forward on the other,
ended sessions at once, while their clients were resuming (fault campaign, ``clock_step``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events import decode_event
from xes.events.catalog import MessageRouted, NodeDown
from xes.features import session_end
from xes.hub import Hub
from xes.jid import bare_of
from xes.projections import sessions as sessions_view
from xes.projections import stream_mgmt as sm_view
from xes.projections.projector import stream_version
from xes.projections.sessions import NodeView
from xes.store.journal import read_events

log = structlog.get_logger("xes.cluster")

CHUNK_SESSIONS = 200
"""Sessions ended per proposal, far below the command size limit (roster targets included)."""

REROUTE_MAX_BYTES = 256 * 1024
"""Stanza bytes re-routed offline in the final proposal (half the command size limit)."""


@dataclass
class DetachedClock:
    """When this leader first saw each detached session (at its epoch), on the monotonic clock.

    A session is due once it has been seen detached for its timeout. A new leader starts
    counting afresh, so a session may wait up to one timeout longer after a leader change,
    never less than its timeout, whatever any node's wall clock says."""

    seen: dict[tuple[str, int], float] = field(default_factory=dict)

    def due(self, detached: Iterable[tuple[str, int, int]], now: float) -> list[str]:
        """Of ``(session, epoch, timeout_s)``, the sessions detached for ``timeout_s`` by now;
        forgets sessions no longer detached (resumed, ended, or detached again)."""
        seen: dict[tuple[str, int], float] = {}
        out = []
        for session, epoch, timeout in detached:
            first = seen[session, epoch] = self.seen.get((session, epoch), now)
            if now - first >= timeout:
                out.append(session)
        self.seen = seen
        return out

    def reset(self) -> None:
        """Leadership lost: the next term counts from its own start."""
        self.seen.clear()


async def run(hub: Hub, *, down_after: float, period: float = 1.0) -> None:
    detached_clock = DetachedClock()
    unreachable_since: dict[str, float] = {}
    isolated_since: float | None = None
    reported = False
    leader_since: int | None = None
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
            detached_clock.reset()
            leader_since = None
            continue
        await end_expired(hub, detached_clock)
        if leader_since is None:
            # Every entry up to here was committed before we noticed we lead; later ones a node
            # that was already unreachable cannot have seen (see `undelivered_after`).
            leader_since = int(status.get("commit_index") or 0)
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
            after = max(int(status.get("match_index", {}).get(node.raft) or 0), leader_since)
            try:
                await declare_down(hub, node, reason, undelivered_after=after)
            except (LogUnavailable, ProposalRejected) as exc:
                log.warning("node_down_not_recorded", node=node.node, error=str(exc))


async def end_expired(hub: Hub, detached_clock: DetachedClock) -> None:
    """End detached stream-management sessions whose resumption time is up (ADR 0008)."""
    with hub.read() as txn:
        due = detached_clock.due(sm_view.detached(hub.store, txn), time.monotonic())
    for session in due[:CHUNK_SESSIONS]:
        with hub.read() as txn:
            view = sessions_view.get(hub.store, txn, session)
            if view is None:
                continue
            events = session_end.end_events(hub, txn, [view], "timeout")
        try:
            await hub.log.append(*events)
            log.info("detached_session_expired", session=session, jid=view.jid)
        except (LogUnavailable, ProposalRejected) as exc:
            log.warning("detached_session_end_not_recorded", session=session, error=str(exc))


def _unreachable(hub: Hub, node: NodeView, status: dict[str, Any]) -> str | None:
    """Why ``node`` counts as gone, or None when it is fine (or not ours to judge)."""
    if node.down or node.node == hub.node or not node.raft:
        return None
    if node.raft not in status.get("members", []):
        return "removed"
    if not status.get("connected", {}).get(node.raft, False):
        return "unreachable"
    return None


async def declare_down(
    hub: Hub, node: NodeView, reason: str, *, undelivered_after: int | None = None
) -> None:
    """End every session of ``node``'s boot, in chunks, then record ``node.down``.

    Messages committed after ``undelivered_after`` (the node's match index on this leader, or
    the commit index when this node became leader) never reached the lost node, so they were
    never delivered to its sessions. Those meant only for its sessions are routed again, to the
    user's offline store (RFC 6121 §8.5.2.2), in the final proposal: nothing committed for a
    dead connection is silently lost. What the node did receive but may not have written to
    its sockets needs XEP-0198 acknowledgements to account for (issue 3).
    """
    rerouted: list[Any] = []
    if undelivered_after is not None:
        with hub.read() as txn:
            # Stream-management sessions keep what they were sent in their outbox (ADR 0008).
            ending = {
                view.jid
                for view in sessions_view.of_node(hub.store, txn, node.node, node.boot)
                if sm_view.state(hub.store, txn, view.session) is None
            }
        rerouted = _undelivered(hub, ending, undelivered_after)
    while True:
        with hub.read() as txn:
            views = sessions_view.of_node(hub.store, txn, node.node, node.boot)
            current = sessions_view.node(hub.store, txn, node.node)
            version = stream_version(hub.store, txn, f"node:{node.node}")
            if current is None or current.boot != node.boot or current.down:
                return  # it restarted with a new boot, or someone else recorded it already
            chunk = views[:CHUNK_SESSIONS]
            events: list[Any] = session_end.end_events(hub, txn, chunk, "node_down", detach=True)
        if len(views) > CHUNK_SESSIONS:
            await hub.log.append(*events)
            continue
        fitting, size = 0, 0
        while fitting < len(rerouted) and size + len(rerouted[fitting].xml) <= REROUTE_MAX_BYTES:
            size += len(rerouted[fitting].xml)
            fitting += 1
        events.extend(rerouted[:fitting])
        events.append(NodeDown(node.node, node.boot, reason, hub.node))
        await hub.log.append(*events, expected={f"node:{node.node}": version})
        log.warning(
            "node_declared_down",
            node=node.node,
            boot=node.boot,
            reason=reason,
            sessions=len(views),
            rerouted_offline=fitting,
            not_rerouted=len(rerouted) - fitting,
        )
        return


def _undelivered(hub: Hub, ending: set[str], after: int) -> list[MessageRouted]:
    """Offline copies of messages committed after ``after`` whose every target is ending."""
    copies: list[MessageRouted] = []
    if not ending:
        return copies
    with hub.read() as txn:
        for committed in read_events(hub.store, txn, after, hub.log.applied):
            if committed.envelope.type != "message.routed":
                continue
            msg: Any = decode_event(committed.envelope)
            if (
                msg.offline_for is None
                and msg.targets
                and set(msg.targets) <= ending
                and msg.type in ("normal", "chat")
            ):
                bare = bare_of(msg.targets[0])
                # A new event, not a changed copy: the original was archived and carbon-copied
                # (ADR 0009); this one only moves it to offline storage, with its first time.
                at = msg.received_at or committed.envelope.at
                copy = MessageRouted(
                    msg.sender, msg.to, msg.type, msg.xml, [], bare, received_at=at
                )
                copies.append(copy)
    return copies
