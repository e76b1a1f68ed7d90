"""Ending sessions whose connection is gone without their own goodbye.

A node that restarts after a crash, and the leader that gives up on an unreachable node, both
have to end sessions on behalf of a connection that can no longer speak. The events are the same
as for a clean logout (RFC 6121 §4.5.2): unavailable presence to everyone who saw the session
available (roster subscribers and directed-presence targets), then ``session.ended``. One rule,
one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lmdb

from xes.events.catalog import PresenceUpdated, SessionEnded
from xes.features import presence
from xes.hub import Hub
from xes.projections.sessions import SessionView
from xes.xml import E, serialize


def end_events(
    hub: Hub, txn: lmdb.Transaction, views: Iterable[SessionView], reason: str
) -> list[Any]:
    """Events that end ``views`` as if each had logged out, with ``reason`` recorded."""
    events: list[Any] = []
    for view in views:
        if view.available:
            targets = presence.broadcast_targets(hub, txn, view.bare, view.session, view.jid)
            targets = presence.with_directed(hub, txn, view.session, targets)
            stanza = E("{jabber:client}presence", {"from": view.jid, "type": "unavailable"})
            xml = serialize(stanza).decode()
            events.append(PresenceUpdated(view.session, view.jid, False, 0, xml, targets))
        events.append(SessionEnded(view.session, view.jid, reason))
    return events
