"""Server-to-server routing (RFC 6120 §4, RFC 6121 across domains; ADR 0025).

Outbound: a stanza from a local user to a domain that is not hosted here is appended as
``s2s.routed`` addressed to the node that holds the link to that domain (today: the proposer,
later the leader, ADR 0025); that node's delivery queues it on the link
(:class:`xes.hub.S2SLinks`), which opens, authenticates and bounces as needed. Without
``[s2s]`` (or while the feature gate keeps ``s2s.routed`` back, ADR 0022) nothing changes:
``remote-server-not-found`` for messages and iq, presence dropped.

Inbound: a stanza from an authenticated remote domain goes through the same feature code as a
local user's, with a :class:`RemoteSender` in place of a session (as components do, ADR 0018):
messages, iq and directed presence. Subscriptions from a remote contact change only the local
user's side of the roster (the remote server keeps the other side, RFC 6121 §3), and probes are
answered from the sessions projection.

Emits ``s2s.routed``, ``presence.routed``, ``roster.item_updated``; reads the roster, sessions
and blocking projections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xes.events.catalog import PresenceRouted, S2sRouted
from xes.features import blocking, subscription
from xes.features.roster import item_event
from xes.hub import Hub
from xes.jid import JID, InvalidJID, domain_part
from xes.projections import roster as roster_view
from xes.projections import sessions as sessions_view
from xes.stanza.core import StanzaError
from xes.xml import E, Element, ns, parse_fragment, serialize

XEPS = ((178, "partial"), (220, "complete"), (185, "complete"), (368, "partial"))


def enabled(hub: Hub) -> bool:
    """Is federation configured and readable by every cluster member?"""
    return hub.config.s2s is not None and hub.s2s is not None and hub.gate.allows(S2sRouted)


def routed(hub: Hub, sender: str, stanza: Element) -> S2sRouted:
    """The event that sends ``stanza`` (``to`` in a remote domain) from ``sender``."""
    to = stanza.get("to") or ""
    xml = serialize(stanza.with_attrs(**{"from": sender})).decode()
    return S2sRouted(sender=sender, to=to, domain=domain_part(to), node=hub.node, xml=xml)


async def route(hub: Hub, sender: str, stanza: Element) -> None:
    """Send ``stanza`` to its remote domain through the log, or refuse as before s2s."""
    if not enabled(hub):
        if stanza.name == "presence" or stanza.get("type") in ("result", "error"):
            return  # RFC 6121 §4.6.2-like: presence and answers are never bounced
        raise StanzaError(
            "remote-server-not-found", "no server-to-server connection to that domain"
        )
    await hub.log.append(routed(hub, sender, stanza))


@dataclass
class RemoteSender:
    """A remote entity as the sender of one stanza, in the shape features expect of a session
    (like :class:`xes.features.components.ComponentSender`). What the server answers it (errors,
    iq results) goes straight to the link back to its domain."""

    hub: Hub
    jid: JID
    local: str
    """Our domain the stanza came to (answers go from it)."""
    full: str = ""
    bare: str = ""
    session_id: str = ""
    available: bool = False
    interested: bool = False
    priority: int = 0
    flushed_upto: int = 0
    sm_active: bool = False
    inactive: bool = False
    epoch: int = 0

    def __post_init__(self) -> None:
        self.full = str(self.jid)
        self.bare = str(self.jid.bare)

    def sm_pull(self) -> None:
        """Remote senders have no stream management here."""

    def sm_committed(self, event: object) -> None:
        """Remote senders have no stream management here."""

    def offline_stored(self) -> None:
        """Remote senders have no offline store here."""

    def send_bytes(self, data: bytes) -> None:
        if self.hub.s2s is not None:
            self.hub.s2s.send(self.local, self.jid.domain, data)

    def close(self, condition: str | None, text: str | None = None) -> None:
        """One stanza's sender: closing is the stream's business, not a feature's."""


async def presence_from(hub: Hub, sender: RemoteSender, stanza: Element) -> None:
    """Presence from a remote entity to a local user (RFC 6121 §3, §4)."""
    try:
        to = JID.parse(stanza.get("to") or "")
    except InvalidJID as exc:
        raise StanzaError("jid-malformed") from exc
    if to.local is None:
        return  # presence to the server itself: nothing to do
    type_ = stanza.get("type")
    user = str(to.bare)
    with hub.read() as txn:
        if blocking.refuses(hub, txn, user, sender.full):
            return  # XEP-0191 §3.5
    if type_ in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
        await _subscription(hub, sender, user, stanza, type_)
    elif type_ == "probe":
        _answer_probe(hub, sender, user)
    else:
        xml = serialize(stanza.with_attrs(**{"from": sender.full, "to": str(to)})).decode()
        await hub.log.append(PresenceRouted(sender=sender.full, xml=xml, targets=[str(to)]))


async def _subscription(
    hub: Hub, sender: RemoteSender, user: str, stanza: Element, type_: str
) -> None:
    """The local user's half of a subscription change asked by a remote contact."""
    contact = sender.bare
    with hub.read() as txn:
        mine = roster_view.item(hub.store, txn, user, contact)
    stamped = stanza.with_attrs(**{"from": contact, "to": user})
    routed_in = PresenceRouted(sender=contact, xml=serialize(stamped).decode(), targets=[user])
    events: list[Any] = []
    if type_ == "subscribe":
        new, outcome = subscription.inbound_subscribe(mine, contact, routed_in.xml)
        if new is not None:
            events.append(item_event(user, new))
        if outcome == "pending":
            events.append(routed_in)
        elif enabled(hub):  # approved before (A.3.1) or pre-approved (§3.4): answer for the user
            reply = E("{%s}presence" % ns.CLIENT, {"to": contact, "type": "subscribed"})
            events.append(routed(hub, user, reply))
    else:
        inbound = {
            "subscribed": subscription.inbound_subscribed,
            "unsubscribe": subscription.inbound_unsubscribe,
            "unsubscribed": subscription.inbound_unsubscribed,
        }[type_]
        new = inbound(mine)
        if new is None:
            return  # §3.1.6 and friends: no state change, nothing delivered
        events += [item_event(user, new), routed_in]
    if events:
        await hub.log.append(*events)


def _answer_probe(hub: Hub, sender: RemoteSender, user: str) -> None:
    """RFC 6121 §4.3.2: a subscribed contact gets the user's current presence (or unavailable).

    A probe changes nothing, so the answer is written to the link like an iq result."""
    with hub.read() as txn:
        item = roster_view.item(hub.store, txn, user, sender.bare)
        if item is None or item.subscription not in ("from", "both"):
            return  # §4.3.2.1: not subscribed, nothing (or unsubscribed) is said
        presences = [
            view.presence
            for view in sessions_view.of_user(hub.store, txn, user)
            if view.available and view.presence
        ]
    if not presences:
        gone = E(
            "{%s}presence" % ns.CLIENT, {"from": user, "to": sender.full, "type": "unavailable"}
        )
        sender.send_bytes(serialize(gone))
        return
    for xml in presences:
        sender.send_bytes(serialize(parse_fragment(xml.encode()).with_attrs(to=sender.full)))


def remote_of(hub: Hub, targets: list[str]) -> list[str]:
    """The targets (JIDs) in domains not hosted here."""
    return [t for t in targets if not hub.is_local(domain_part(t))]


def broadcast(hub: Hub, sender: str, xml: str, targets: list[str]) -> list[S2sRouted]:
    """``s2s.routed`` copies of a broadcast presence for its remote targets (none when
    federation is off)."""
    remote = remote_of(hub, targets)
    if not remote or not enabled(hub):
        return []
    stanza = parse_fragment(xml.encode())
    return [routed(hub, sender, stanza.with_attrs(to=target)) for target in remote]
