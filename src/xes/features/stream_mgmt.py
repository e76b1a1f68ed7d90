"""XEP-0198 for the features: handled counts that ride with effects, re-routing of what a
session leaves unacknowledged (ADR 0008).

*Handled counts.* While a managed session's stanza number ``n`` is handled, every proposal made
on its behalf also carries ``sm.handled(n)`` (:func:`riders`, installed on the log client), so
the count a resumed stream reports covers exactly the stanzas whose effects are committed: a
message committed just before the node died is not sent again by the client, one that was not
is. Stanzas that change nothing leave no record; resending those is harmless.

*Unacknowledged stanzas* of a session that ends without resumption (RFC 6121 §8.5, XEP-0198
§5): a message only this session had goes to the user's other available resources, else to
offline storage; a message the other resources had too stays offline for this device only, if
it is a device that comes back; an iq request gets ``recipient-unavailable`` back; presence and
the server's own answers are dropped. Everything keeps its original receive time.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lmdb

from xes.events.catalog import IqRouted, MessageRouted, SmHandled
from xes.hub import Hub
from xes.projections import offline as offline_view
from xes.projections import sessions as sessions_view
from xes.projections import stream_mgmt as sm_view
from xes.projections.sessions import SessionView
from xes.stanza.core import error_reply
from xes.xml import parse_fragment, serialize

_handling: contextvars.ContextVar[SmHandled | None] = contextvars.ContextVar(
    "sm_handling", default=None
)


@contextmanager
def handling(session: str, n: int, epoch: int) -> Iterator[None]:
    """Mark proposals made inside as effects of the session's stanza number ``n``."""
    token = _handling.set(SmHandled(session, n, epoch) if n else None)
    try:
        yield
    finally:
        _handling.reset(token)


def riders() -> list[Any]:
    marker = _handling.get()
    return [] if marker is None else [marker]


def reroute_events(
    hub: Hub, txn: lmdb.Transaction, view: SessionView, after: int, ending: frozenset[str]
) -> list[Any]:
    """Events that deliver elsewhere what ``view``'s outbox holds above row ``after``."""
    bare, _, resource = view.jid.partition("/")
    events: list[Any] = []
    others: list[str] | None = None
    for row in sm_view.rows(hub.store, txn, view.session, after):
        if row.kind not in ("message", "iq"):
            continue
        stanza = parse_fragment(row.xml.encode())
        type_ = stanza.get("type") or "normal"
        sender = stanza.get("from") or hub.domain
        if row.kind == "iq":
            if type_ not in ("get", "set"):
                continue
            asker = sessions_view.by_full_jid(hub.store, txn, sender)
            if asker is not None and asker.session not in ending:
                asked = stanza.with_attrs(**{"from": sender, "to": view.jid})
                reply = error_reply(asked, "recipient-unavailable", None, "wait")
                events.append(IqRouted(view.jid, sender, asker.session, serialize(reply).decode()))
            continue
        if type_ not in ("normal", "chat"):
            continue  # groupchat and headline are not stored; errors are not bounced
        to = stanza.get("to") or view.jid
        if row.shared:
            # The user's other resources had it; this device gets it when it comes back.
            if offline_view.device_cursor(hub.store, txn, bare, resource) is not None:
                events.append(
                    MessageRouted(
                        sender, to, type_, row.xml, [], bare, resource, received_at=row.at
                    )
                )
            continue
        if others is None:
            others = [
                s.jid for s in sessions_view.available_resources(hub.store, txn, bare, ending)
            ]
        if others:
            events.append(MessageRouted(sender, to, type_, row.xml, others, received_at=row.at))
        else:
            events.append(MessageRouted(sender, to, type_, row.xml, [], bare, received_at=row.at))
    return events
