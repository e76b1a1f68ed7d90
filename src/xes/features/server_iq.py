"""Queries the server answers itself: XEP-0030 disco, XEP-0199 ping, XEP-0092 version.

Reads nothing but configuration and the accounts projection; emits no events.
"""

from __future__ import annotations

import platform

from xes import __version__
from xes.features import account_info, admin_commands, components, inbox, pep, push
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
    "jabber:iq:private",
    "vcard-temp",
    "urn:xmpp:blocking",
    "urn:xmpp:time",
    "jabber:iq:last",
    "jabber:iq:register",
    ns.READ_STATUS,
)

ACCOUNT_ARCHIVE_FEATURES = (ns.MAM, ns.MAM_EXTENDED, ns.SID)
"""What an account's bare JID offers for its archive (XEP-0313 §7: it is found there)."""


def _for_account(iq: Element) -> bool:
    """Is the query for the sender's account rather than the server?

    RFC 6120 §10.3.3: an iq without ``to`` is processed on behalf of the account that sent it,
    so it is the account's bare JID that answers, not the server."""
    to = iq.get("to")
    return to is None or "@" in to


async def disco_info(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    if iq.get("type") != "get":
        raise StanzaError("bad-request")
    node = query.get("node")
    if _for_account(iq):
        if node:
            children = pep.node_info(hub, session, iq, node)
            return iq_result(iq, E("{%s}query" % ns.DISCO_INFO, {"node": node}, *children))
        # An account: RFC 6121 / XEP-0030 §3.1: identity account/registered; XEP-0163 §6.1:
        # the account is a PEP service.
        children = [
            E("{%s}identity" % ns.DISCO_INFO, {"category": "account", "type": "registered"})
        ]
        features = [ns.DISCO_INFO, ns.DISCO_ITEMS]
        if hub.config.archive.enabled:
            features += ACCOUNT_ARCHIVE_FEATURES
        if inbox.available(hub):
            features += inbox.FEATURES
        if push.available(hub):
            features += push.FEATURES  # XEP-0357 §4.1: on the account's bare JID
        if hub.config.pep.enabled:
            children.append(
                E("{%s}identity" % ns.DISCO_INFO, {"category": "pubsub", "type": "pep"})
            )
            features += pep.ACCOUNT_FEATURES
        children += [E("{%s}feature" % ns.DISCO_INFO, {"var": var}) for var in features]
        return iq_result(iq, E("{%s}query" % ns.DISCO_INFO, None, *children))
    if node:
        if node == admin_commands.COMMANDS:
            return iq_result(iq, E("{%s}query" % ns.DISCO_INFO, {"node": node}))
        found = admin_commands.node_info(node) if admin_commands.enabled(hub) else None
        if found is None:
            raise StanzaError("item-not-found")
        return iq_result(iq, E("{%s}query" % ns.DISCO_INFO, {"node": node}, *found))
    children = [
        E("{%s}identity" % ns.DISCO_INFO, {"category": "server", "type": "im", "name": "xes"})
    ]
    features = list(SERVER_FEATURES)
    if admin_commands.enabled(hub):
        features.append(admin_commands.COMMANDS)  # XEP-0050 §2.1 (XEP-0133 for admins)
    if hub.config.external_services.services:
        features.append(account_info.EXTDISCO)
    if inbox.available(hub):
        features += inbox.FEATURES  # XEP-0430 §2.1
    if hub.config.pep.enabled:
        # XEP-0163 §6.1: a server that offers PEP says so on its own JID too.
        children.append(E("{%s}identity" % ns.DISCO_INFO, {"category": "pubsub", "type": "pep"}))
        features += pep.ACCOUNT_FEATURES
    children += [E("{%s}feature" % ns.DISCO_INFO, {"var": var}) for var in features]
    contact = account_info.contact_form(hub)
    if contact is not None:
        children.append(contact)
    return iq_result(iq, E("{%s}query" % ns.DISCO_INFO, None, *children))


async def disco_items(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    if iq.get("type") != "get":
        raise StanzaError("bad-request")
    node = query.get("node")
    if node == admin_commands.COMMANDS and not _for_account(iq):
        # XEP-0050 §2.2: the commands this entity offers the requester (admins: XEP-0133).
        found = admin_commands.items(hub, session) if admin_commands.enabled(hub) else []
        return iq_result(iq, E("{%s}query" % ns.DISCO_ITEMS, {"node": node}, *found))
    if node:
        raise StanzaError("item-not-found")
    if _for_account(iq):
        return iq_result(
            iq, E("{%s}query" % ns.DISCO_ITEMS, None, *pep.node_items(hub, session, iq))
        )
    items = []
    if hub.config.muc.enabled:
        # XEP-0045 §6.1: the server lists its group chat service.
        # Each hosted domain lists its own (ADR 0023).
        server = (iq.get("to") or session.jid.domain).lower()
        items.append(E("{%s}item" % ns.DISCO_ITEMS, {"jid": hub.config.muc_domain_of(server)}))
    if hub.config.upload.enabled:
        # XEP-0363 §3: the upload service is found among the server's items.
        items.append(E("{%s}item" % ns.DISCO_ITEMS, {"jid": hub.config.upload_domain}))
    items += components.disco_items(hub)  # external components (XEP-0114), as Prosody lists them
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
