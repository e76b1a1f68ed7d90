"""Ending sessions whose connection is gone without their own goodbye.

A node that restarts after a crash, the leader that gives up on an unreachable node, a managed
session whose resumption deadline passed and a connection that closes all end sessions the same
way (RFC 6121 §4.5.2): its occupants leave the rooms it joined (XEP-0045, ADR 0011: no ghost),
unavailable presence to everyone who saw the session available (roster
subscribers and directed-presence targets), what its outbox holds unacknowledged delivered
elsewhere (XEP-0198, :func:`xes.features.stream_mgmt.reroute_events`), then ``session.ended``.
A resumable session whose node is gone is *detached* instead (``sm.detached``), so its client
can resume it on any node until its deadline. One rule, one place.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import lmdb

from xes.events.catalog import PresenceUpdated, SessionEnded, SmDetached, SmHandled
from xes.features import presence, s2s, stream_mgmt
from xes.features.muc import occupants
from xes.hub import Hub
from xes.projections import sessions as sessions_view
from xes.projections import stream_mgmt as sm_view
from xes.projections.projector import stream_version
from xes.projections.sessions import SessionView
from xes.xml import E, serialize


def end_events(
    hub: Hub,
    txn: lmdb.Transaction,
    views: Iterable[SessionView],
    reason: str,
    *,
    detach: bool = False,
    acked: int | None = None,
    epoch: int | None = None,
) -> list[Any]:
    """Events that end ``views`` as if each had logged out, with ``reason`` recorded.

    ``detach``: the connections are lost, not closed, so resumable sessions wait for their
    clients instead. ``acked``: the client's acknowledged count known to the caller (a single
    view), if above the recorded one. ``epoch``: the caller's resumption epoch of that session;
    the end is refused if the session has moved on (resumed elsewhere) meanwhile.
    """
    views = list(views)
    ending = frozenset(view.session for view in views)
    events: list[Any] = []
    for view in views:
        state = sm_view.state(hub.store, txn, view.session)
        if state is not None and detach and state.resume:
            if state.deadline:
                continue  # detached already
            deadline = int(time.time() * 1000) + state.timeout * 1000
            guard = state.epoch if epoch is None else epoch
            events.append(SmHandled(view.session, state.handled, guard))
            events.append(SmDetached(view.session, deadline, reason))
            continue
        # The session's occupants leave their rooms first (XEP-0045 §7.14; status 333 unless
        # the user logged out): the projection refuses an end that leaves one behind.
        events.extend(occupants.leave_events(hub, txn, view.session, reason))
        if view.available:
            targets = presence.broadcast_targets(hub, txn, view.bare, view.session, view.jid)
            targets = presence.with_directed(hub, txn, view.session, targets)
            # Not to the ending session itself: its stream is gone, and an outbox row placed
            # by this very proposal would look like one the end failed to re-route.
            targets = [t for t in targets if t != view.jid]
            stanza = E("{jabber:client}presence", {"from": view.jid, "type": "unavailable"})
            xml = serialize(stanza).decode()
            events.append(PresenceUpdated(view.session, view.jid, False, 0, xml, targets))
            events.extend(s2s.broadcast(hub, view.jid, xml, targets))  # remote contacts
        upto = None
        if state is not None:
            # Refused as a whole if the session was resumed (or detached) after this read.
            guard = state.epoch if epoch is None else epoch
            events.append(SmHandled(view.session, state.handled, guard))
            after = max(state.acked, acked or 0)
            events.extend(stream_mgmt.reroute_events(hub, txn, view, after, ending))
            upto = state.next
        events.append(SessionEnded(view.session, view.jid, reason, upto))
    return events


@dataclass(frozen=True)
class PendingEnd:
    """How one session should end, as its connection saw it when it closed.

    Kept by the node (``Hub.pending_ends``) when the connection could not record it (the log
    took no write within its close timeout), so the node's sweep records it later with the
    connection's own facts rather than guessing (issue 20, finding 9)."""

    session: str
    reason: str
    detach: bool
    """The connection was lost, not closed: a resumable session is detached, not ended."""
    acked: int | None = None
    """The client's acknowledged count as the connection last heard it (XEP-0198)."""
    epoch: int | None = None
    """The connection's resumption epoch: the end is not ours if the session moved on."""
    managed: bool = False
    """The connection had stream management enabled."""


async def record_end(hub: Hub, end: PendingEnd) -> bool:
    """One attempt at recording ``end``: False if there was nothing to record (ended already,
    resumed on another connection, detached already), True once the log took it.

    Guarded by the session stream's version as read: a concurrent change (a late commit of an
    earlier attempt, a resume) refuses the proposal whole instead of ending the session twice
    and re-routing its outbox twice. Raises ``ProposalRejected`` (read again and retry) and
    ``LogUnavailable`` (the outcome is unknown: retry later, the guard makes that safe)."""
    with hub.read() as txn:
        view = sessions_view.get(hub.store, txn, end.session)
        state = sm_view.state(hub.store, txn, end.session)
        if view is None or (end.managed and state is None):
            return False  # ended already (by the cluster, a new session, a resume)
        if state is not None and end.epoch is not None and state.epoch != end.epoch:
            return False  # resumed on another connection: not ours to end
        version = stream_version(hub.store, txn, f"session:{end.session}")
        events = end_events(
            hub,
            txn,
            [view],
            end.reason,
            detach=end.detach,
            acked=end.acked,
            epoch=end.epoch if state is not None else None,
        )
    if not events:
        return False
    await hub.log.append(*events, expected={f"session:{end.session}": version})
    return True
