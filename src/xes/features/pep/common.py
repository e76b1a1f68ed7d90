"""What the PEP handlers share: the service addressed, proposing, errors with pubsub conditions."""

from __future__ import annotations

from typing import Any

from xes.eventlog.client import ProposalRejected
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.pubsub.config import precondition_not_met
from xes.stanza.core import StanzaError
from xes.xml import E, Element, ns

MAX_NODE_BYTES = 256
"""Longest node name: with the account and an item id it stays inside an LMDB key (511)."""

REJECTIONS = {
    "pubsub-item-not-found": "item-not-found",
    "pubsub-conflict": "conflict",
}


def app(name: str, **attrs: str) -> Element:
    """An application-specific pubsub error condition (XEP-0060 §7, ``pubsub#errors``)."""
    return E("{%s}%s" % (ns.PUBSUB_ERRORS, name), attrs or None)


def service_of(session: LocalSession, iq: Element) -> str:
    """The PEP service (an account's bare JID) an iq addresses; no ``to`` is the sender's own
    (RFC 6120 §10.3.3)."""
    to = iq.get("to")
    if not to:
        return session.bare
    try:
        jid = JID.parse(to)
    except InvalidJID as exc:
        raise StanzaError("jid-malformed") from exc
    return str(jid.bare)


def own_service(session: LocalSession, iq: Element) -> str:
    """Only the account itself publishes to, configures or deletes its nodes (XEP-0163 §4)."""
    owner = service_of(session, iq)
    if owner != session.bare:
        raise StanzaError("forbidden", "only the account owner may change its PEP nodes")
    return owner


def node_of(elem: Element) -> str:
    node = elem.get("node")
    if not node:
        raise StanzaError("bad-request", "a PEP request names its node", app=app("nodeid-required"))
    if len(node.encode()) > MAX_NODE_BYTES:
        raise StanzaError("not-acceptable", f"node names are at most {MAX_NODE_BYTES} bytes")
    return node


async def propose(hub: Hub, *events: Any) -> None:
    """Append; what apply refused because the node changed meanwhile becomes the XEP's error."""
    try:
        await hub.log.append(*events)
    except ProposalRejected as exc:
        code, _, text = exc.reason.partition(": ")
        if code == "pubsub-precondition-not-met":
            raise precondition_not_met(text) from exc
        condition = REJECTIONS.get(code)
        if condition is None:
            raise
        raise StanzaError(condition, text or None) from exc
