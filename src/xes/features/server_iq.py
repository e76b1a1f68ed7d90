"""Queries the server answers itself: XEP-0030 disco, XEP-0199 ping, XEP-0092 version.

Reads nothing but configuration and the accounts projection; emits no events.
"""

from __future__ import annotations

import platform

from xes import __version__
from xes.hub import Hub, LocalSession
from xes.stanza.core import StanzaError, iq_result
from xes.xml import E, Element, ns

XEPS = ((30, "partial"), (92, "complete"), (199, "complete"))

SERVER_FEATURES = (
    ns.DISCO_INFO,
    ns.DISCO_ITEMS,
    ns.PING,
    ns.VERSION,
    ns.ROSTER,
    "urn:xmpp:features:rosterver",
    "urn:xmpp:features:pre-approval",
    "msgoffline",
    ns.CARBONS,
    ns.SID,
)

ACCOUNT_FEATURES = (ns.DISCO_INFO, ns.MAM, ns.MAM_EXTENDED, ns.SID)
"""What an account's bare JID offers (XEP-0313 §7: a user's archive is found there)."""


def _for_account(iq: Element) -> bool:
    """Is the query for the sender's account rather than the server?

    RFC 6120 §10.3.3: an iq without ``to`` is processed on behalf of the account that sent it,
    so it is the account's bare JID that answers, not the server."""
    to = iq.get("to")
    return to is None or "@" in to


async def disco_info(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    if iq.get("type") != "get":
        raise StanzaError("bad-request")
    if query.get("node"):
        raise StanzaError("item-not-found")
    if _for_account(iq):
        # An account: RFC 6121 / XEP-0030 §3.1: identity account/registered.
        children = [
            E("{%s}identity" % ns.DISCO_INFO, {"category": "account", "type": "registered"})
        ]
        features = ACCOUNT_FEATURES if hub.config.archive.enabled else (ns.DISCO_INFO,)
        children += [E("{%s}feature" % ns.DISCO_INFO, {"var": var}) for var in features]
        return iq_result(iq, E("{%s}query" % ns.DISCO_INFO, None, *children))
    children = [
        E("{%s}identity" % ns.DISCO_INFO, {"category": "server", "type": "im", "name": "xes"})
    ]
    children += [E("{%s}feature" % ns.DISCO_INFO, {"var": var}) for var in SERVER_FEATURES]
    return iq_result(iq, E("{%s}query" % ns.DISCO_INFO, None, *children))


async def disco_items(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    if iq.get("type") != "get":
        raise StanzaError("bad-request")
    if query.get("node"):
        raise StanzaError("item-not-found")
    items = []
    if hub.config.muc.enabled and not _for_account(iq):
        # XEP-0045 §6.1: the server lists its group chat service.
        items.append(E("{%s}item" % ns.DISCO_ITEMS, {"jid": hub.config.muc_domain}))
    return iq_result(iq, E("{%s}query" % ns.DISCO_ITEMS, None, *items))


async def ping(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    if iq.get("type") != "get":
        raise StanzaError("bad-request")
    return iq_result(iq)


async def version(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    if iq.get("type") != "get":
        raise StanzaError("bad-request")
    return iq_result(
        iq,
        E(
            "{%s}query" % ns.VERSION,
            None,
            E("{%s}name" % ns.VERSION, None, "xes"),
            E("{%s}version" % ns.VERSION, None, __version__),
            E("{%s}os" % ns.VERSION, None, platform.system()),
        ),
    )


async def session(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    """RFC 3921 session establishment, a no-op kept for old clients (RFC 6121 Appendix E).

    Answered here only on a managed stream, where the answer is a counted stanza."""
    if iq.get("type") != "set":
        raise StanzaError("bad-request")
    return iq_result(iq)
