"""Roster management (RFC 6121 §2) with versioning (XEP-0237).

Handles ``jabber:iq:roster`` get and set. Emits ``roster.item_updated`` / ``roster.item_removed``
(with the subscription side effects of a removal, RFC 6121 §2.5.2); roster pushes are sent by
:mod:`xes.delivery` when those events are applied. Reads the roster projection.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from xes.eventlog.client import ProposalRejected
from xes.events.catalog import PresenceRouted, RosterItemRemoved, RosterItemUpdated
from xes.features import subscription
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.projections import roster as roster_view
from xes.projections import sessions as sessions_view
from xes.projections.projector import stream_version
from xes.projections.roster import RosterItem
from xes.stanza.core import StanzaError, iq_result
from xes.stanza.roster import item_element
from xes.xml import E, Element, ns, serialize

XEPS = ((237, "complete"),)
MAX_RETRIES = 5
"""Attempts when a concurrent change moved the roster stream under us (expected_version)."""


def item_event(owner: str, item: RosterItem) -> RosterItemUpdated:
    return RosterItemUpdated(
        owner=owner,
        contact=item.contact,
        name=item.name,
        groups=sorted(item.groups),
        subscription=item.subscription,
        ask=item.ask,
        pending_in=item.pending_in,
        approved=item.approved,
        listed=item.listed,
    )


async def handle(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element | None:
    to = iq.get("to")
    if to and to != session.bare:
        # RFC 6121 §2.1.5: only the user's own roster, addressed to the bare JID or nothing.
        raise StanzaError("forbidden")
    if iq.get("type") == "get":
        return get(hub, session, iq, query)
    if iq.get("type") == "set":
        return await set_(hub, session, iq, query)
    raise StanzaError("bad-request")


def get(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    session.interested = True
    with hub.read() as txn:
        ver = roster_view.version(hub.store, txn, session.bare)
        client_ver = query.get("ver")
        if client_ver is not None and client_ver == str(ver):
            # XEP-0237 §2.3: unchanged roster: empty result, changes (none) come as pushes.
            return iq_result(iq)
        items = [i for i in roster_view.items(hub.store, txn, session.bare) if i.listed]
    return iq_result(iq, E("{%s}query" % ns.ROSTER, {"ver": str(ver)}, *map(item_element, items)))


def _parse_item(query: Element, owner: str) -> tuple[str, Element]:
    items = query.find_all("{%s}item" % ns.ROSTER)
    if len(items) != 1:
        raise StanzaError("bad-request", "exactly one item per roster set (RFC 6121 §2.3.3)")
    elem = items[0]
    try:
        jid = JID.parse(elem.get("jid", ""))
    except InvalidJID as exc:
        raise StanzaError("jid-malformed") from exc
    return str(jid), elem


async def set_(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    owner = session.bare
    contact, elem = _parse_item(query, owner)
    subscription_attr = elem.get("subscription")
    if subscription_attr not in (None, "remove"):
        # The client may not change subscription states through roster set (§2.1.2.5).
        subscription_attr = None
    groups = [g.text for g in elem.find_all("{%s}group" % ns.ROSTER)]
    if any(not g for g in groups):
        raise StanzaError("not-acceptable", "empty group name")
    if len(set(groups)) != len(groups):
        raise StanzaError("bad-request", "duplicate group")
    if any(len(g.encode()) > 1023 for g in groups) or len(elem.get("name", "").encode()) > 1023:
        raise StanzaError("not-acceptable", "name or group too long")
    for _ in range(MAX_RETRIES):
        with hub.read() as txn:
            ver = stream_version(hub.store, txn, f"roster:{owner}")
            current = roster_view.item(hub.store, txn, owner, contact)
            if subscription_attr == "remove":
                if current is None or not current.listed:
                    raise StanzaError("item-not-found")
                events = _removal_events(hub, txn, session, owner, current)
            else:
                base = current or RosterItem(contact=contact)
                new = replace(
                    base, name=elem.get("name") or None, groups=sorted(groups), listed=True
                )
                events = [item_event(owner, new)]
        try:
            await hub.log.append(*events, expected={f"roster:{owner}": ver})
        except ProposalRejected as exc:
            if exc.reason.startswith("conflict"):
                continue
            raise StanzaError("internal-server-error") from exc
        return iq_result(iq)
    raise StanzaError("resource-constraint", "roster busy, retry")


def _removal_events(
    hub: Hub, txn: Any, session: LocalSession, owner: str, current: RosterItem
) -> list[Any]:
    """RFC 6121 §2.5.2: removing an item also cancels subscriptions in both directions."""
    events: list[Any] = [RosterItemRemoved(owner=owner, contact=current.contact)]
    contact_jid = JID.parse(current.contact)
    if not hub.is_local(contact_jid.domain) or contact_jid.local is None:
        return events
    theirs = roster_view.item(hub.store, txn, current.contact, owner)
    new_theirs = theirs
    if current.subscription in ("to", "both") or current.ask:
        new_theirs = subscription.inbound_unsubscribe(new_theirs) or new_theirs
        events.append(_presence_route(owner, current.contact, "unsubscribe"))
    if current.subscription in ("from", "both") or current.pending_in:
        new_theirs = subscription.inbound_unsubscribed(new_theirs) or new_theirs
        events.append(_presence_route(owner, current.contact, "unsubscribed"))
    if new_theirs is not None and new_theirs != theirs:
        events.append(item_event(current.contact, new_theirs))
    # The contact stops seeing the user's resources and the user the contact's (RFC 6121
    # §2.5.2 with §3.2.3 and §3.3.3): unavailable presence from each available resource.
    if current.subscription in ("from", "both"):
        events += _unavailable_from(hub, txn, owner, current.contact)
    if current.subscription in ("to", "both"):
        events += _unavailable_from(hub, txn, current.contact, owner)
    return events


def _unavailable_from(hub: Hub, txn: Any, user: str, to_bare: str) -> list[PresenceRouted]:
    routes = []
    for view in sessions_view.of_user(hub.store, txn, user):
        if view.available:
            stanza = E(
                "{%s}presence" % ns.CLIENT, {"from": view.jid, "to": to_bare, "type": "unavailable"}
            )
            xml = serialize(stanza).decode()
            routes.append(PresenceRouted(sender=view.jid, xml=xml, targets=[to_bare]))
    return routes


def _presence_route(sender_bare: str, to_bare: str, type_: str) -> PresenceRouted:
    stanza = E("{%s}presence" % ns.CLIENT, {"from": sender_bare, "to": to_bare, "type": type_})
    return PresenceRouted(sender=sender_bare, xml=serialize(stanza).decode(), targets=[to_bare])
