"""Stanza dispatch for a bound client session (RFC 6120 §8, RFC 6121 §8).

Picks the feature for each stanza by kind, type and payload namespace; turns
:class:`~xes.stanza.core.StanzaError` and log failures into error replies, so a handler never
has to build one. iq stanzas between clients are not state and are forwarded directly to the
session that holds the addressed resource when it is on this node, and through the log (an
``iq.routed`` event) when another node holds it (ADR 0006).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events.catalog import IqRouted
from xes.features import (
    account_info,
    admin_commands,
    blocking,
    carbons,
    components,
    inbox,
    mam,
    message,
    muc,
    pep,
    presence,
    private_storage,
    push,
    read_status,
    registration,
    roster,
    s2s,
    server_iq,
    upload,
    vcard,
)
from xes.features.muc import messages as muc_messages
from xes.hub import ComponentLink, Hub, LocalSession
from xes.jid import JID, InvalidJID, domain_part
from xes.projections import accounts as accounts_view
from xes.projections import sessions as sessions_view
from xes.stanza.core import StanzaError, error_reply, payload
from xes.xml import Element, ns, serialize

log = structlog.get_logger("xes.router")

IqHandler = Callable[[Hub, LocalSession, Element, Element], Awaitable[Element | None]]

ACCOUNT_IQ: dict[str, IqHandler] = {
    "{%s}query" % ns.ROSTER: roster.handle,
    "{%s}query" % ns.DISCO_INFO: server_iq.disco_info,
    "{%s}query" % ns.DISCO_ITEMS: server_iq.disco_items,
    "{%s}query" % ns.MAM: mam.query,
    "{%s}prefs" % ns.MAM: mam.prefs,
    "{%s}metadata" % ns.MAM: mam.metadata,
    "{%s}pubsub" % ns.PUBSUB: pep.handle,
    "{%s}pubsub" % ns.PUBSUB_OWNER: pep.handle_owner,
    "{%s}query" % private_storage.PRIVATE: private_storage.handle,
    "{%s}vCard" % vcard.VCARD: vcard.handle,
    "{%s}blocklist" % blocking.NS: blocking.handle,
    "{%s}block" % blocking.NS: blocking.handle,
    "{%s}unblock" % blocking.NS: blocking.handle,
    "{%s}query" % account_info.LAST: account_info.last_activity,
    "{%s}inbox" % inbox.NS: inbox.query,
    "{%s}enable" % push.NS: push.handle,
    "{%s}disable" % push.NS: push.handle,
    "{%s}query" % inbox.PROPERTIES: inbox.conversation,
    read_status.STATUS: read_status.chat_query,
}
"""Payloads the server answers on behalf of an account's bare JID (RFC 6121 §8.5.2)."""

SERVER_IQ: dict[str, IqHandler] = {
    **ACCOUNT_IQ,
    "{%s}ping" % ns.PING: server_iq.ping,
    "{%s}query" % ns.VERSION: server_iq.version,
    "{%s}session" % ns.SESSION: server_iq.session,
    "{%s}enable" % ns.CARBONS: carbons.toggle,
    "{%s}disable" % ns.CARBONS: carbons.toggle,
    "{%s}time" % account_info.TIME: account_info.entity_time,
    "{%s}services" % account_info.EXTDISCO: account_info.external_services,
    "{%s}credentials" % account_info.EXTDISCO: account_info.external_services,
    "{%s}query" % registration.NS: registration.handle,
    "{%s}command" % admin_commands.COMMANDS: admin_commands.handle,
}
"""Payloads the server answers when an iq is addressed to it, or to no one: then on behalf of
the sender's account (RFC 6120 §10.3.3), so everything an account answers is here too; each
handler tells the server's JID from the account's (disco, last activity)."""

COMPONENT_SERVER_IQ: dict[str, IqHandler] = {
    "{%s}query" % ns.DISCO_INFO: server_iq.disco_info,
    "{%s}query" % ns.DISCO_ITEMS: server_iq.disco_items,
    "{%s}ping" % ns.PING: server_iq.ping,
    "{%s}query" % ns.VERSION: server_iq.version,
    "{%s}time" % account_info.TIME: account_info.entity_time,
}
"""What the server answers a component (XEP-0114): it has no account here, so nothing of one."""

COMPONENT_ACCOUNT_IQ: dict[str, IqHandler] = {
    "{%s}query" % ns.DISCO_INFO: server_iq.disco_info,
    "{%s}query" % ns.DISCO_ITEMS: server_iq.disco_items,
    "{%s}pubsub" % ns.PUBSUB: pep.handle,
    "{%s}vCard" % vcard.VCARD: vcard.handle,
    "{%s}query" % account_info.LAST: account_info.last_activity,
}
"""What an account's bare JID answers a component: what it answers any other entity."""


class InvalidFrom(Exception):
    """The client claimed a ``from`` it does not own (RFC 6120 §8.1.2.1: invalid-from)."""


def check_from(session: LocalSession, stanza: Element) -> None:
    claimed = stanza.get("from")
    if claimed is None:
        return
    try:
        jid = JID.parse(claimed)
    except InvalidJID as exc:
        raise InvalidFrom(claimed) from exc
    if str(jid) not in (session.full, session.bare):
        raise InvalidFrom(claimed)


DISK_FULL = "the server's disk is almost full: try again later"


def _refused_for_disk(hub: Hub, stanza: Element) -> bool:
    """While ``data_dir`` is nearly full (:mod:`xes.disk_watch`), what would be recorded is
    refused; reads (iq get) and going unavailable still work."""
    if not hub.disk_low:
        return False
    if stanza.name == "iq":
        return stanza.get("type") == "set"
    return not (stanza.name == "presence" and stanza.get("type") == "unavailable")


async def dispatch(hub: Hub, session: LocalSession, stanza: Element) -> None:
    check_from(session, stanza)
    name = stanza.name
    if _refused_for_disk(hub, stanza):
        _reply_error(session, stanza, "resource-constraint", DISK_FULL, "wait")
        return
    try:
        if components.is_component(hub, domain_part(stanza.get("to"))):
            await components.route(hub, session.full, stanza)
        elif _to_muc(hub, stanza.get("to")):
            await muc.handle(hub, session, stanza)
        elif upload.is_upload_domain(hub, domain_part(stanza.get("to"))):
            await upload.handle(hub, session, stanza)
        elif name == "message":
            await message.handle(hub, session, stanza)
        elif name == "presence":
            await presence.handle(hub, session, stanza)
        else:
            await _iq(hub, session, stanza)
    except StanzaError as exc:
        _reply_error(session, stanza, exc.condition, exc.text, exc.type, exc.app)
    except LogUnavailable as exc:
        log.warning("log_unavailable", error=str(exc), session=session.session_id)
        _reply_error(
            session, stanza, "resource-constraint", "the cluster cannot record this now", "wait"
        )
    except ProposalRejected as exc:
        log.warning("proposal_rejected", reason=exc.reason, session=session.session_id)
        _reply_error(session, stanza, "internal-server-error", None, None)


async def dispatch_from_component(hub: Hub, link: ComponentLink, stanza: Element) -> None:
    """A stanza from an external component (XEP-0114): its ``from`` is in the component's
    domain and it has a ``to`` (checked by :mod:`xes.session.component`). Users get it through
    the same feature code as a client's stanza; another component gets it directly."""
    sender = components.ComponentSender(link, JID.parse(stanza.get("from") or ""))
    to = domain_part(stanza.get("to"))
    if _refused_for_disk(hub, stanza):
        _reply_error(sender, stanza, "resource-constraint", DISK_FULL, "wait")
        return
    try:
        if components.is_component(hub, to):
            await components.route(hub, sender.full, stanza)
        elif not hub.is_local(to):
            # Group chat, upload and remote domains are not offered to components (yet).
            raise StanzaError("service-unavailable", f"{to} is not reachable from a component")
        elif stanza.name == "message":
            await message.handle(hub, sender, stanza)
        elif stanza.name == "presence":
            await components.presence_from(hub, sender, stanza)
        else:
            await _iq(hub, sender, stanza, COMPONENT_SERVER_IQ, COMPONENT_ACCOUNT_IQ)
    except StanzaError as exc:
        _reply_error(sender, stanza, exc.condition, exc.text, exc.type, exc.app)
    except LogUnavailable as exc:
        log.warning("log_unavailable", error=str(exc), component=link.domain)
        _reply_error(
            sender, stanza, "resource-constraint", "the cluster cannot record this now", "wait"
        )
    except ProposalRejected as exc:
        log.warning("proposal_rejected", reason=exc.reason, component=link.domain)
        _reply_error(sender, stanza, "internal-server-error", None, None)


async def dispatch_from_remote(hub: Hub, local: str, stanza: Element) -> None:
    """A stanza from an authenticated remote server (ADR 0025): its ``from`` is in a domain
    the stream authenticated and its ``to`` in ``local`` (checked by :mod:`xes.session.s2s`).
    Local users get it through the same feature code as a client's stanza, as for
    components; group chat and upload are not offered to remote users yet."""
    sender = s2s.RemoteSender(hub, JID.parse(stanza.get("from") or ""), local)
    if _refused_for_disk(hub, stanza):
        _reply_error(sender, stanza, "resource-constraint", DISK_FULL, "wait")
        return
    try:
        if not hub.is_local(domain_part(stanza.get("to"))):
            raise StanzaError("service-unavailable", "not reachable from another server yet")
        if stanza.name == "message":
            await message.handle(hub, sender, stanza)
        elif stanza.name == "presence":
            await s2s.presence_from(hub, sender, stanza)
        else:
            await _iq(hub, sender, stanza, COMPONENT_SERVER_IQ, COMPONENT_ACCOUNT_IQ)
    except StanzaError as exc:
        _reply_error(sender, stanza, exc.condition, exc.text, exc.type, exc.app)
    except LogUnavailable as exc:
        log.warning("log_unavailable", error=str(exc), remote=sender.jid.domain)
        _reply_error(
            sender, stanza, "resource-constraint", "the cluster cannot record this now", "wait"
        )
    except ProposalRejected as exc:
        log.warning("proposal_rejected", reason=exc.reason, remote=sender.jid.domain)
        _reply_error(sender, stanza, "internal-server-error", None, None)


async def dispatch_groupchat_run(hub: Hub, session: LocalSession, stanzas: list[Element]) -> None:
    """Consecutive groupchat messages of one session to one room, read together: proposed
    together (:func:`xes.features.muc.messages.groupchat_run`), each refused one answered."""
    for stanza in stanzas:
        check_from(session, stanza)
    if not hub.config.muc.enabled:
        for stanza in stanzas:
            _reply_error(session, stanza, "service-unavailable", None, None)
        return
    if hub.disk_low:
        for stanza in stanzas:
            _reply_error(session, stanza, "resource-constraint", DISK_FULL, "wait")
        return
    for stanza, error in await muc_messages.groupchat_run(hub, session, stanzas):
        _reply_error(session, stanza, error.condition, error.text, error.type)


def groupchat_room(hub: Hub, stanza: Element) -> str | None:
    """The room of a plain groupchat message (one that may be proposed with its neighbours)."""
    return muc_messages.plain_groupchat_room(hub, stanza)


def _to_muc(hub: Hub, to: str | None) -> bool:
    """Is the stanza for the group chat service (the service, a room or an occupant)?"""
    return bool(to) and muc.is_muc_domain(hub, domain_part(to))


def _reply_error(
    session: LocalSession,
    stanza: Element,
    condition: str,
    text: str | None,
    type_: str | None,
    app: Element | None = None,
) -> None:
    if stanza.get("type") == "error":
        return  # RFC 6120 §8.3.1: never answer an error with an error.
    reply = error_reply(stanza.with_attrs(**{"from": session.full}), condition, text, type_, app)
    session.send_bytes(serialize(reply))


async def _iq(
    hub: Hub,
    session: LocalSession,
    iq: Element,
    server_table: dict[str, IqHandler] = SERVER_IQ,
    account_table: dict[str, IqHandler] = ACCOUNT_IQ,
) -> None:
    type_ = iq.get("type")
    if type_ not in ("get", "set", "result", "error") or iq.get("id") is None:
        raise StanzaError("bad-request", "iq needs an id and a valid type (RFC 6120 §8.2.3)")
    child = payload(iq)
    if type_ in ("get", "set") and (child is None or len(iq.elements()) != 1):
        raise StanzaError("bad-request", "iq get/set carries exactly one payload")
    to_attr = iq.get("to")
    try:
        to = JID.parse(to_attr) if to_attr else None
    except InvalidJID as exc:
        raise StanzaError("jid-malformed") from exc
    if to is None or (to.local is None and to.resource is None and hub.is_local(to.domain)):
        if type_ in ("result", "error"):
            request = hub.answer_for(session, iq)
            if request is not None:
                await request.on_answer(iq)  # an answer to the server's own request
            return
        await _answer(hub, session, iq, child, server_table)
        return
    if not hub.is_local(to.domain):
        await s2s.route(hub, session.full, iq)  # ADR 0025
        return
    with hub.read() as txn:
        if to.local is not None and str(to.bare) != session.bare:
            blocking.check_outbound(hub, txn, session.bare, str(to))
            if blocking.refuses(hub, txn, str(to.bare), session.full):
                # XEP-0191 §3.5: as if the user did not exist.
                if type_ in ("get", "set"):
                    raise StanzaError("service-unavailable")
                return
    if to.resource is None:
        with hub.read() as txn:
            known = accounts_view.exists(hub.store, txn, str(to))
        if not known:
            if type_ in ("get", "set"):
                raise StanzaError("service-unavailable")
            return
        await _answer(hub, session, iq, child, account_table)
        return
    stamped = serialize(iq.with_attrs(**{"from": session.full}))
    target = hub.by_jid.get(str(to))
    if target is not None and not target.sm_active:
        target.send_bytes(stamped)
        return  # a managed target gets it through the log, as an outbox row (ADR 0008)
    with hub.read() as txn:
        remote = sessions_view.by_full_jid(hub.store, txn, str(to))
    if remote is None:
        # RFC 6121 §8.5.3.2.1/§8.5.3.2.3: no such resource.
        if type_ in ("get", "set"):
            raise StanzaError("service-unavailable")
        return
    await hub.log.append(IqRouted(session.full, str(to), remote.session, stamped.decode()))


async def _answer(
    hub: Hub,
    session: LocalSession,
    iq: Element,
    child: Element | None,
    table: dict[str, IqHandler],
) -> None:
    if iq.get("type") in ("result", "error"):
        # Answers to requests sent in the account's name (XEP-0357 publishes come from the
        # user's bare JID); any other answer (e.g. a roster push ack) needs nothing.
        request = hub.answer_for(session, iq)
        if request is not None:
            await request.on_answer(iq)
        return
    assert child is not None
    handler = table.get(child.tag)
    if handler is None:
        raise StanzaError("service-unavailable")
    reply = await handler(hub, session, iq, child)
    if reply is not None:
        session.send_bytes(serialize(reply))
