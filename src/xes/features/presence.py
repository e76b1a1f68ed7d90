"""Presence (RFC 6121 §3-§4): broadcast, probes, directed presence and subscriptions.

Emits ``presence.updated`` (broadcast presence of a session, with the targets decided here from
the roster), ``presence.routed`` (subscription stanzas and directed presence) and
``roster.item_updated`` (subscription state changes on both sides, in one proposal). Answers
probes for local contacts from the sessions projection, without an event: a probe changes
nothing. Reads the roster, sessions and offline projections.
"""

from __future__ import annotations

import time
from typing import Any

from xes.events.catalog import OfflineFlushed, PresenceRouted, PresenceUpdated
from xes.features import blocking, s2s, subscription, vcard
from xes.features.muc import occupants
from xes.features.pep import interest as pep_interest
from xes.features.roster import item_event
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.projections import accounts as accounts_view
from xes.projections import offline as offline_view
from xes.projections import roster as roster_view
from xes.projections import sessions as sessions_view
from xes.stanza.core import StanzaError, sender_of
from xes.stanza.delay import with_delay
from xes.xml import E, Element, ns, parse_fragment, serialize

CANCELLATIONS = {
    "unsubscribe": (subscription.outbound_unsubscribe, subscription.inbound_unsubscribe),
    "unsubscribed": (subscription.outbound_unsubscribed, subscription.inbound_unsubscribed),
}
"""Outbound and inbound state changes for each cancelling subscription type."""

SUBSCRIPTION_TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")


def _priority(stanza: Element) -> int:
    elem = stanza.find("{%s}priority" % ns.CLIENT)
    if elem is None:
        return 0
    try:
        value = int(elem.text.strip())
    except ValueError as exc:
        raise StanzaError("bad-request", "priority must be an integer") from exc
    if not -128 <= value <= 127:
        raise StanzaError("bad-request", "priority out of range (RFC 6121 §4.7.2.3)")
    return value


def _broadcast_targets(hub: Hub, txn: Any, session: LocalSession) -> list[str]:
    return broadcast_targets(hub, txn, session.bare, session.session_id, session.full)


def broadcast_targets(hub: Hub, txn: Any, bare: str, session_id: str, full: str) -> list[str]:
    """Contacts subscribed to the user's presence, then the user's own available resources
    (RFC 6121 §4.2.2, §4.4.2), then the session itself."""
    targets = [
        item.contact
        for item in roster_view.items(hub.store, txn, bare)
        if item.subscription in ("from", "both")
        and not _blocked_either(hub, txn, bare, full, item.contact)
    ]
    for other in sessions_view.of_user(hub.store, txn, bare):
        if other.available or other.session == session_id:
            targets.append(other.jid)
    if full not in targets:
        targets.append(full)
    return targets


def _blocked_either(hub: Hub, txn: Any, bare: str, full: str, contact: str) -> bool:
    """XEP-0191 §3.5: no presence passes between a user and a JID either of them blocks."""
    return blocking.refuses(hub, txn, bare, contact) or blocking.refuses(hub, txn, contact, full)


def with_directed(hub: Hub, txn: Any, session_id: str, targets: list[str]) -> list[str]:
    """``targets`` plus every JID the session sent directed presence to (RFC 6121 §4.6.3)."""
    out = list(targets)
    for target in sessions_view.directed_targets(hub.store, txn, session_id):
        if target not in out:
            out.append(target)
    return out


async def handle(hub: Hub, session: LocalSession, stanza: Element) -> None:
    type_ = stanza.get("type")
    to = stanza.get("to")
    if type_ in SUBSCRIPTION_TYPES:
        if not to:
            raise StanzaError("bad-request", "subscription presence needs a 'to'")
        await _subscription(hub, session, stanza, type_)
        return
    if type_ in ("probe", "error"):
        return  # Clients do not probe (RFC 6121 §4.3); presence errors are not bounced.
    if type_ not in (None, "unavailable"):
        raise StanzaError("bad-request", f"unknown presence type {type_!r}")
    if to:
        await _directed(hub, session, stanza, to, available=type_ is None)
    elif type_ is None:
        await broadcast_available(hub, session, stanza)
    else:
        await broadcast_unavailable(hub, session, stanza)


def _stamp(stanza: Element, session: LocalSession) -> Element:
    return stanza.with_attrs(**{"from": session.full, "to": None})


async def broadcast_available(hub: Hub, session: LocalSession, stanza: Element) -> None:
    priority = _priority(stanza)
    stanza = vcard.with_photo_hash(hub, session.bare, stanza)
    initial = not session.available
    session.available = True
    session.priority = priority
    xml = serialize(_stamp(stanza, session)).decode()
    with hub.read() as txn:
        targets = _broadcast_targets(hub, txn, session)
        probes = _remote_probes(hub, txn, session) if initial else []
    events: list[Any] = [
        PresenceUpdated(session.session_id, session.full, True, priority, xml, targets),
        *s2s.broadcast(hub, session.full, xml, targets),
        *probes,
    ]
    if initial and session.sm_active:
        # The offline messages take their outbox places in the entry that makes the session
        # available: a message routed to it live from then on comes after them, so a sender's
        # messages arrive in the order sent (a flush proposed after could land behind it).
        flush = _offline_flush(hub, session)
        if flush is not None:
            events.append(flush)
    await hub.log.append(*events)
    if initial:
        await _after_initial_presence(hub, session)
    if hub.config.pep.enabled:
        await pep_interest.on_available(hub, session, stanza, initial)


def _remote_probes(hub: Hub, txn: Any, session: LocalSession) -> list[Any]:
    """RFC 6121 §4.3: initial presence probes the remote contacts the user is subscribed to;
    their servers answer with the contacts' presence (local contacts are read, not probed)."""
    if not s2s.enabled(hub):
        return []
    contacts = [
        item.contact
        for item in roster_view.items(hub.store, txn, session.bare)
        if item.subscription in ("to", "both")
    ]
    probe = E("{%s}presence" % ns.CLIENT, {"type": "probe"})
    return [
        s2s.routed(hub, session.bare, probe.with_attrs(to=contact))
        for contact in s2s.remote_of(hub, contacts)
    ]


async def _after_initial_presence(hub: Hub, session: LocalSession) -> None:
    """Probe results, pending subscription requests and offline messages (RFC 6121 §4.2.3)."""
    with hub.read() as txn:
        items = roster_view.items(hub.store, txn, session.bare)
        probe = [i.contact for i in items if i.subscription in ("to", "both")] + [session.bare]
        for contact in probe:
            if contact != session.bare and _blocked_either(
                hub, txn, session.bare, session.full, contact
            ):
                continue
            for other in sessions_view.of_user(hub.store, txn, contact):
                if other.available and other.presence and other.session != session.session_id:
                    session.send_bytes(other.presence.encode())
        for item in items:
            if item.pending_in and not blocking.refuses(hub, txn, session.bare, item.contact):
                session.send_bytes(item.pending_in.encode())
    await flush_offline(hub, session)


async def flush_offline(hub: Hub, session: LocalSession) -> None:
    """Deliver the user's offline messages to an available session and record that they left.

    Runs after initial presence and again whenever an offline message is committed while the
    session is available: the sender's node decided "offline" before this session's presence
    was applied there, so the message would otherwise wait for the next login. A known device
    gets what is above its cursor (other devices keep theirs, XEP-0160 with several devices);
    ``flushed_upto`` keeps one connection from getting a message twice. A managed session gets
    them as outbox rows, placed by the ``offline.flushed`` event itself (ADR 0008).
    """
    flush = _offline_flush(hub, session)
    if flush is not None:
        await hub.log.append(flush)


def _offline_flush(hub: Hub, session: LocalSession) -> OfflineFlushed | None:
    """The ``offline.flushed`` that hands ``session`` what is stored for it (sent here and now
    to an unmanaged session; placed as outbox rows by the event for a managed one), or None."""
    if not session.available or session.priority < 0:
        return None  # RFC 6121 §8.5.2.1.1: negative priority gets no bare-JID messages
    resource = session.jid.resource or ""
    with hub.read() as txn:
        cursor = offline_view.device_cursor(hub.store, txn, session.bare, resource) or 0
        after = max(cursor, session.flushed_upto)
        stored = offline_view.for_device(hub.store, txn, session.bare, resource, after)
    if not stored:
        return None
    session.flushed_upto = stored[-1].seq
    if not session.sm_active:
        with hub.read() as txn:
            for msg in stored:
                if blocking.refuses(hub, txn, session.bare, sender_of(msg.xml)):
                    continue  # stored before the user blocked the sender (XEP-0191 §3.5)
                session.send_bytes(with_delay(msg.xml, msg.at, session.jid.domain))
    forget_before = int(time.time() * 1000) - hub.config.offline.device_ttl * 1000
    return OfflineFlushed(
        session.bare, stored[-1].seq, session.session_id, resource, after, forget_before
    )


async def broadcast_unavailable(hub: Hub, session: LocalSession, stanza: Element | None) -> None:
    if not session.available:
        return
    event = unavailable_event(hub, session, stanza)
    with hub.read() as txn:
        # Rooms got the session's presence as directed presence: unavailable ends it there too
        # (RFC 6121 §4.6.3), so the occupant leaves (XEP-0045 §7.14).
        leaves = occupants.leave_events(hub, txn, session.session_id, "unavailable")
    remote = s2s.broadcast(hub, session.full, event.xml, event.targets)
    await hub.log.append(event, *leaves, *remote)


def unavailable_event(hub: Hub, session: LocalSession, stanza: Element | None) -> PresenceUpdated:
    """The broadcast (and directed) unavailable presence of a session going away (§4.5.2)."""
    session.available = False
    if stanza is None:
        stanza = E("{%s}presence" % ns.CLIENT, {"type": "unavailable"})
    xml = serialize(_stamp(stanza, session)).decode()
    with hub.read() as txn:
        targets = with_directed(hub, txn, session.session_id, _broadcast_targets(hub, txn, session))
    return PresenceUpdated(session.session_id, session.full, False, 0, xml, targets)


async def _directed(
    hub: Hub, session: LocalSession, stanza: Element, to: str, available: bool
) -> None:
    try:
        target = JID.parse(to)
    except InvalidJID as exc:
        raise StanzaError("jid-malformed") from exc
    if not hub.is_local(target.domain):
        # ADR 0025 (dropped, never bounced, when federation is off).
        await s2s.route(hub, session.full, stanza.with_attrs(to=str(target)))
        return
    with hub.read() as txn:
        blocking.check_outbound(hub, txn, session.bare, str(target))
        if blocking.refuses(hub, txn, str(target.bare), session.full):
            return  # §3.5: presence to someone who blocks the user is dropped
        item = roster_view.item(hub.store, txn, session.bare, str(target.bare))
    subscribed = item is not None and item.subscription in ("from", "both")
    stamped = stanza.with_attrs(**{"from": session.full, "to": str(target)})
    # RFC 6121 §4.6: directed presence to a non-subscriber is remembered so that the target
    # gets unavailable presence when the session ends.
    await hub.log.append(
        PresenceRouted(
            sender=session.full,
            xml=serialize(stamped).decode(),
            targets=[str(target)],
            directed_session=None if subscribed else session.session_id,
            directed_available=available,
        )
    )


def _route(sender: str, to: str, type_: str, stanza: Element | None = None) -> PresenceRouted:
    if stanza is None:
        stanza = E("{%s}presence" % ns.CLIENT)
    out = stanza.with_attrs(**{"from": sender, "to": to, "type": type_, "id": stanza.get("id")})
    return PresenceRouted(sender=sender, xml=serialize(out).decode(), targets=[to])


async def _subscription(hub: Hub, session: LocalSession, stanza: Element, type_: str) -> None:
    try:
        contact_jid = JID.parse(stanza.get("to", "")).bare
    except InvalidJID as exc:
        raise StanzaError("jid-malformed") from exc
    user, contact = session.bare, str(contact_jid)
    local_contact = hub.is_local(contact_jid.domain) and contact_jid.local is not None
    with hub.read() as txn:
        if type_ in ("subscribe", "subscribed"):
            # Ending a subscription stays possible across a block (it is what both want).
            blocking.check_outbound(hub, txn, user, contact)
            if local_contact and blocking.refuses(hub, txn, contact, session.full):
                return  # §3.5: dropped, the sender learns nothing
        mine = roster_view.item(hub.store, txn, user, contact)
        theirs = roster_view.item(hub.store, txn, contact, user) if local_contact else None
        contact_exists = local_contact and accounts_view.exists(hub.store, txn, contact)
        my_available = [
            s for s in sessions_view.of_user(hub.store, txn, user) if s.available and s.presence
        ]
        their_available = (
            [s.jid for s in sessions_view.of_user(hub.store, txn, contact) if s.available]
            if type_ == "unsubscribe" and contact_exists
            else []
        )
    events: list[Any] = []
    # The stanza as the contact sees it: from the user's bare JID (RFC 6121 §3.1.2).
    if type_ == "subscribe":
        new_mine = subscription.outbound_subscribe(mine, contact)
        if new_mine is not None:
            events.append(item_event(user, new_mine))
        if contact_exists:
            routed = _route(user, contact, "subscribe", stanza)
            new_theirs, outcome = subscription.inbound_subscribe(theirs, user, routed.xml)
            if outcome == "pending":
                events += [item_event(contact, new_theirs), routed]  # type: ignore[arg-type]
            else:
                if new_theirs is not None:
                    events.append(item_event(contact, new_theirs))
                # Auto-reply: the contact already approved (A.3.1) or pre-approved (§3.4).
                base = new_mine or mine
                granted = subscription.inbound_subscribed(base)
                if granted is not None:
                    events.append(item_event(user, granted))
                events.append(_route(contact, user, "subscribed"))
    elif type_ == "subscribed":
        new_mine, route = subscription.outbound_subscribed(mine, contact)
        if new_mine is not None:
            events.append(item_event(user, new_mine))
        if route and contact_exists:
            new_theirs = subscription.inbound_subscribed(theirs)
            if new_theirs is not None:
                events.append(item_event(contact, new_theirs))
            events.append(_route(user, contact, "subscribed", stanza))
            # §3.1.5: the contact now gets the user's current presence from each resource.
            for view in my_available:
                assert view.presence is not None
                xml = _readdress(view.presence, contact)
                events.append(PresenceRouted(sender=user, xml=xml, targets=[contact]))
    else:  # unsubscribe | unsubscribed: one side drops, the other follows (RFC 6121 §3.3, §3.2)
        outbound, inbound = CANCELLATIONS[type_]
        new_mine = outbound(mine)
        if new_mine is not None:
            events.append(item_event(user, new_mine))
        new_theirs = inbound(theirs) if contact_exists else None
        if new_theirs is not None:
            events.append(item_event(contact, new_theirs))
            events.append(_route(user, contact, type_, stanza))
            if type_ == "unsubscribed":
                # §3.2.3: the contact's resources learn the user is now unavailable to them.
                events += [_unavailable(view.jid, contact) for view in my_available]
            elif mine is not None and mine.subscription in ("to", "both"):
                # §3.3.3: the user no longer sees the contact: unavailable from each of the
                # contact's available resources.
                events += [_unavailable(full, user) for full in their_available]
    if not local_contact and s2s.enabled(hub):
        events += _to_remote_contact(hub, user, contact, stanza, type_, my_available)
    if events:
        await hub.log.append(*events)


def _to_remote_contact(
    hub: Hub, user: str, contact: str, stanza: Element, type_: str, my_available: list[Any]
) -> list[Any]:
    """The subscription stanza for a contact on another server, from the user's bare JID
    (RFC 6121 §3.1.2); that server keeps the contact's side of the roster. Approving a
    request also sends the user's current presence (§3.1.5)."""
    out = stanza.with_attrs(to=contact, type=type_, id=stanza.get("id"))
    events: list[Any] = [s2s.routed(hub, user, out)]
    if type_ == "subscribed":
        for view in my_available:
            assert view.presence is not None
            presence = parse_fragment(view.presence.encode()).with_attrs(to=contact)
            events.append(s2s.routed(hub, view.jid, presence))
    return events


def _unavailable(sender_full: str, to_bare: str) -> PresenceRouted:
    stanza = E(
        "{%s}presence" % ns.CLIENT, {"from": sender_full, "to": to_bare, "type": "unavailable"}
    )
    return PresenceRouted(sender=sender_full, xml=serialize(stanza).decode(), targets=[to_bare])


def _readdress(xml: str, to: str) -> str:
    return serialize(parse_fragment(xml.encode()).with_attrs(to=to)).decode()
