"""Recording the ends of this node's sessions that no connection holds (issue 20, finding 9).

A session is held by a node's boot from its ``session.bound`` (or ``sm.resumed``) until its
end is recorded. When its connection closes while the log takes no write (no majority, a slow
commit), the connection gives up after its close timeout; before this sweep the session then
stayed held by a live node with no connection until that node restarted or was declared down:
a ghost shown available to its contacts, an occupant of its rooms, with an outbox nobody reads.
The same happens to a session whose ``session.bound`` committed after its connection stopped
waiting for it (the bind timed out, or the client left meanwhile).

Every ``SWEEP_SECONDS`` each node looks at the sessions the log says it holds and records the
end of those no connection of it holds: the ones a connection left in ``Hub.pending_ends``
with what it knew (reason, acknowledged count, epoch), at once; any other only once it has
been unheld for ``grace`` (longer than a bind or a resume waits for its commit), ended as a
lost connection (detached if resumable, so its client can still resume it). The same
rule as a node's restart (``node.started``) and the leader's ``node.down``, for one session.
A failed attempt is retried at the next sweep; each proposal is guarded by the session's
stream version, so a late commit of an earlier attempt cannot make it end twice.
"""

from __future__ import annotations

import time

import anyio
import structlog

from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.features import session_end
from xes.hub import Hub
from xes.projections import sessions as sessions_view

log = structlog.get_logger("xes.sweep")

SWEEP_SECONDS = 10.0
LOST_REASON = "connection-lost"
"""Recorded for a session that no connection is known to have closed."""


class SessionSweep:
    """What one node's sweep remembers between rounds: when it first saw each session unheld."""

    def __init__(self, hub: Hub, grace: float) -> None:
        self.hub = hub
        self.grace = grace
        self.unheld_since: dict[str, float] = {}

    async def round(self, now: float | None = None) -> int:
        """One sweep; returns how many ends it recorded."""
        hub = self.hub
        now = time.monotonic() if now is None else now
        with hub.read() as txn:
            held = sessions_view.of_node(hub.store, txn, hub.node, hub.boot)
        # A connection holds its session from its bind (or resume) until its end is recorded.
        owned = hub.sessions.keys() | hub.resuming.keys() | hub.ending
        unheld = {view.session for view in held} - owned
        for gone in [sid for sid in self.unheld_since if sid not in unheld]:
            del self.unheld_since[gone]
        for gone in [sid for sid in hub.pending_ends if sid not in unheld]:
            del hub.pending_ends[gone]  # ended or moved on meanwhile: nothing left to record
        recorded = 0
        for sid in sorted(unheld):
            end = hub.pending_ends.get(sid)
            if end is None:
                first = self.unheld_since.setdefault(sid, now)
                if now - first < self.grace:
                    continue
                end = session_end.PendingEnd(sid, LOST_REASON, detach=True)
            try:
                done = await self._record(end)
            except LogUnavailable as exc:
                log.warning("sweep_waiting_for_log", error=str(exc), pending=len(unheld))
                return recorded  # the next round tries again, the version guard makes it safe
            if done is None:
                continue  # kept changing under our reads: the next round reads again
            hub.pending_ends.pop(sid, None)
            self.unheld_since.pop(sid, None)
            if done:
                recorded += 1
                log.warning("unheld_session_ended", session=sid, reason=end.reason)
        return recorded

    async def _record(self, end: session_end.PendingEnd) -> bool | None:
        """Whether ``end`` was recorded (False: nothing to record); None: try next round."""
        for _ in range(5):  # a refusal means it changed under the read: read again
            try:
                return await session_end.record_end(self.hub, end)
            except ProposalRejected as exc:
                log.info("sweep_end_retry", session=end.session, error=exc.reason)
        return None


async def run(hub: Hub) -> None:
    # A bind or resume waits up to commit_timeout for its commit before the connection
    # registers (or gives up on) its session; twice that, and a full round, is past any wait.
    sweep = SessionSweep(hub, grace=2 * hub.config.cluster.commit_timeout + SWEEP_SECONDS)
    while True:
        await anyio.sleep(SWEEP_SECONDS)
        await sweep.round()
