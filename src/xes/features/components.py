"""External components (XEP-0114, ADR 0018): stanzas to them, and the API other features use.

A component (a push app server, a gateway, a bot) connects to any node; the
``components`` projection says which node, boot and connection holds each name in the cluster.
A stanza for a component domain (``push.example.org`` or any JID under it) is written to its
connection when this node holds it, else appended as ``component.routed``, which the holding
node's delivery writes if the same connection still holds the name. With no holder anywhere,
messages and iq requests get ``service-unavailable``; presence, results and errors are dropped.

Stanzas *from* a component reach users through the ordinary feature code (the router passes a
:class:`ComponentSender` where a client session would be), so blocking, offline storage,
carbons of the recipient and archives of the recipient apply.

API for other features (XEP-0357 push will use it):

* ``is_component(hub, domain)`` -- is ``domain`` a configured component?
* ``holder(hub, txn, domain)`` -- the :class:`~xes.projections.components.Holder` (``node``,
  ``boot``, ``conn``) holding it in the cluster, or None; ``held_here(hub, domain)`` -- does
  this node hold its connection now?
* ``await send(hub, stanza)`` -- deliver a stanza to the component from any node (``from``
  defaults to the server's domain); raises :class:`~xes.stanza.core.StanzaError`
  (``service-unavailable``) when no node holds it.
* ``request(hub, iq, on_answer, timeout)`` -- send an iq get/set to a component held by *this*
  node and have ``await on_answer(result_or_error)`` called when it answers (forgotten after
  ``timeout`` seconds). Returns False (nothing sent) when this node does not hold it: a
  feature that needs answers runs where ``holder(...).node == hub.node``, e.g. from delivery.

Emits ``component.routed``; reads the components, accounts and blocking projections.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import lmdb

from xes.events.catalog import ComponentRouted, PresenceRouted
from xes.features import blocking
from xes.hub import ComponentLink, Hub
from xes.jid import JID, InvalidJID, domain_part
from xes.projections import components as components_view
from xes.projections.components import Holder
from xes.stanza.core import StanzaError
from xes.xml import E, Element, ns, serialize

XEPS = ((114, "complete"),)


def is_component(hub: Hub, domain: str) -> bool:
    return hub.config.component(domain) is not None


def holder(hub: Hub, txn: lmdb.Transaction, domain: str) -> Holder | None:
    """Which node, boot and connection hold ``domain`` in the cluster (None: not connected)."""
    return components_view.holder(hub.store, txn, domain)


def held_here(hub: Hub, domain: str) -> bool:
    return domain in hub.components


@dataclass
class ComponentSender:
    """A component as the sender of one stanza, in the shape features expect of a session.

    The features that route a user's stanza (message, iq) stamp ``session.full`` as ``from``;
    for a component that is the stanza's own ``from`` (checked by the stream to be in the
    component's domain), so one object per stanza. It is never registered in the hub: nothing
    is delivered to it but the error replies the router writes (``send_bytes``)."""

    link: ComponentLink
    jid: JID
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
        """Components have no stream management."""

    def sm_committed(self, event: object) -> None:
        """Components have no stream management."""

    def offline_stored(self) -> None:
        """Components have no offline store."""

    def send_bytes(self, data: bytes) -> None:
        self.link.send_bytes(data)

    def close(self, condition: str | None, text: str | None = None) -> None:
        self.link.close(condition, text)


async def route(hub: Hub, sender: str, stanza: Element) -> None:
    """Deliver ``stanza`` (addressed to a component domain) from ``sender``, wherever the
    component is connected; see the module docstring for the no-holder case."""
    domain = domain_part(stanza.get("to"))
    data = serialize(stanza.with_attrs(**{"from": sender}))
    link = hub.components.get(domain)
    if link is not None:
        link.send_bytes(data)
        return
    with hub.read() as txn:
        held = holder(hub, txn, domain)
    if held is None or (held.node == hub.node and held.boot == hub.boot):
        # Not connected (or its connection here is closing): RFC 6121 §8.5.3.2 by analogy.
        if stanza.name == "presence" or stanza.get("type") in ("error", "result"):
            return
        raise StanzaError("service-unavailable", f"{domain} is not connected")
    await hub.log.append(ComponentRouted(sender, domain, held.conn, data.decode()))


async def send(hub: Hub, stanza: Element) -> None:
    """A stanza from the server (or a service of it) to a component, from any node."""
    await route(hub, stanza.get("from") or hub.domain, stanza)


def request(
    hub: Hub,
    iq: Element,
    on_answer: Callable[[Element], Awaitable[None]],
    timeout: float = 30.0,
) -> bool:
    """Send an iq get/set to a component this node holds; ``on_answer`` gets its reply."""
    to = iq.get("to") or ""
    link = hub.components.get(domain_part(to))
    if link is None:
        return False
    iq_id = hub.track(to, iq, on_answer, timeout)
    sender = iq.get("from") or hub.domain
    link.send_bytes(serialize(iq.with_attrs(**{"id": iq_id, "from": sender})))
    return True


def disco_items(hub: Hub) -> list[Element]:
    """The configured components, as the server's disco#items lists them (XEP-0030)."""
    return [E("{%s}item" % ns.DISCO_ITEMS, {"jid": c.domain}) for c in hub.config.components]


async def presence_from(hub: Hub, sender: ComponentSender, stanza: Element) -> None:
    """Presence from a component to a local user: routed as directed presence.

    Subscription state is not recorded for components (no roster rows for a domain this
    server does not host); the user's client sees the presence and answers it."""
    try:
        to = JID.parse(stanza.get("to") or "")
    except InvalidJID as exc:
        raise StanzaError("jid-malformed") from exc
    if not hub.is_local(to.domain) or to.local is None:
        return  # presence to the server or to other domains: dropped, never bounced
    with hub.read() as txn:
        if blocking.refuses(hub, txn, str(to.bare), sender.full):
            return  # XEP-0191 §3.5
    xml = serialize(stanza.with_attrs(**{"from": sender.full, "to": str(to)})).decode()
    await hub.log.append(PresenceRouted(sender=sender.full, xml=xml, targets=[str(to)]))
