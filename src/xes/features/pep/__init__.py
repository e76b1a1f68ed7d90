"""Personal Eventing Protocol (XEP-0163): every account is a pubsub service (XEP-0060).

``handle`` answers ``pubsub`` requests (publish, retract, items, create), ``owner.handle`` the
``pubsub#owner`` ones; :mod:`.interest` follows caps and sends last items at presence;
:mod:`.access` decides who may read and who is notified. Nodes and items are the ``pep``
projection, so a publish on one cluster node notifies subscribers on every node (ADR 0013).
"""

from __future__ import annotations

from xes.features.pep import access, owner, publish, retrieve
from xes.features.pep.common import service_of
from xes.hub import Hub, LocalSession
from xes.projections import pep as pep_view
from xes.pubsub.config import metadata_form
from xes.stanza.core import StanzaError
from xes.xml import E, Element, ns

XEPS = ((60, "partial"), (115, "complete"), (163, "complete"), (223, "complete"))

PUBSUB_FEATURES = tuple(
    f"{ns.PUBSUB}#{name}"
    for name in (
        "access-open",
        "access-presence",
        "access-roster",
        "access-whitelist",
        "auto-create",
        "config-node",
        "config-node-max",
        "create-and-configure",
        "create-nodes",
        "delete-items",
        "delete-nodes",
        "filtered-notifications",
        "item-ids",
        "last-published",
        "modify-affiliations",
        "multi-items",
        "persistent-items",
        "presence-notifications",
        "publish",
        "publish-options",
        "purge-nodes",
        "retract-items",
        "retrieve-affiliations",
        "retrieve-default",
        "retrieve-items",
        "rsm",
    )
)
"""What an account's disco#info offers (XEP-0060 §10; clients probe ``#publish-options``,
``#auto-create``, ``#config-node-max`` and ``#multi-items`` before relying on them)."""

ACCOUNT_FEATURES = (
    ns.PUBSUB,
    *PUBSUB_FEATURES,
    "urn:xmpp:bookmarks:1#compat",
    "urn:xmpp:bookmarks-conversion:0",
    "urn:xmpp:pep-vcard-conversion:0",
)
"""``#compat``: XEP-0048 bookmarks in private storage and XEP-0402's PEP node are one
(:mod:`xes.features.private_storage`); vCard and PEP avatars are one (XEP-0398,
:mod:`xes.features.avatar_sync`)."""


async def handle(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element | None:
    if not hub.config.pep.enabled:
        raise StanzaError("service-unavailable")
    children = [c for c in query.elements() if c.tag != "{%s}set" % ns.RSM]
    if not children:
        raise StanzaError("bad-request", "empty pubsub request")
    verb = children[0].name
    type_ = iq.get("type")
    if type_ == "set" and verb == "publish":
        return await publish.publish(hub, session, iq, query)
    if type_ == "set" and verb == "retract":
        return await publish.retract(hub, session, iq, query)
    if type_ == "set" and verb == "create":
        return await publish.create(hub, session, iq, query)
    if type_ == "get" and verb == "items":
        session.send_bytes(await retrieve.items(hub, session, iq, query))
        return None
    if verb in ("subscribe", "unsubscribe", "subscriptions", "options"):
        raise StanzaError(
            "feature-not-implemented",
            "PEP subscriptions follow presence and caps (XEP-0163 §4)",
            app=E("{%s}unsupported" % ns.PUBSUB_ERRORS, {"feature": "subscribe"}),
        )
    raise StanzaError("bad-request", f"unexpected pubsub {type_} {verb}")


async def handle_owner(
    hub: Hub, session: LocalSession, iq: Element, query: Element
) -> Element | None:
    if not hub.config.pep.enabled:
        raise StanzaError("service-unavailable")
    return await owner.handle(hub, session, iq, query)


def node_info(hub: Hub, session: LocalSession, iq: Element, node: str) -> list[Element]:
    """disco#info children of one PEP node (XEP-0060 §5.3), to those who may see it."""
    service = service_of(session, iq)
    with hub.read() as txn:
        row = pep_view.node(hub.store, txn, service, node)
        if row is None:
            raise StanzaError("item-not-found")
        access.check(hub, txn, row, session.bare)
    return [
        E("{%s}identity" % ns.DISCO_INFO, {"category": "pubsub", "type": "leaf"}),
        E("{%s}feature" % ns.DISCO_INFO, {"var": ns.PUBSUB}),
        metadata_form(node, row.config, row.count),
    ]


def node_items(hub: Hub, session: LocalSession, iq: Element) -> list[Element]:
    """disco#items of an account: the PEP nodes the requester may see (XEP-0060 §5.2)."""
    if not hub.config.pep.enabled:
        return []
    service = service_of(session, iq)
    out = []
    with hub.read() as txn:
        for row in pep_view.nodes(hub.store, txn, service):
            try:
                access.check(hub, txn, row, session.bare)
            except StanzaError:
                continue
            attrs = {"jid": service, "node": row.node, "name": row.config.title or None}
            out.append(E("{%s}item" % ns.DISCO_ITEMS, attrs))
    return out
