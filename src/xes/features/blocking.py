"""Blocking Command (XEP-0191): block lists as events, enforced on every node.

A user blocks domain, bare or full JIDs. From then on nothing passes in either direction
(§3.5): what the user sends there is refused with ``not-acceptable`` + ``<blocked/>``; what
arrives from there is dropped (presence, errors, results) or refused as if the user did not
exist (``service-unavailable`` for messages and iq requests). Blocking a contact also takes
presence away on both sides; unblocking gives it back (§3.3, §3.4). The list is a projection,
so the node the stanza passes through, whichever it is, enforces it.
"""

from __future__ import annotations

from typing import Any

from xes.events.catalog import BlockingChanged, PresenceRouted
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.projections import blocking as blocking_view
from xes.projections import roster as roster_view
from xes.projections import sessions as sessions_view
from xes.stanza.core import StanzaError, iq_result
from xes.xml import E, Element, ns, parse_fragment, serialize

NS = blocking_view.NS
ERRORS = "urn:xmpp:blocking:errors"
XEPS = ((191, "complete"),)
MAX_JID_BYTES = 300
"""Longest JID in a block list (with the owner it must fit an LMDB key)."""
MAX_ITEMS = 1000
"""Most JIDs in one block or unblock request."""


def blocked_error() -> StanzaError:
    return StanzaError("not-acceptable", "you are blocking this JID", app=E("{%s}blocked" % ERRORS))


def check_outbound(hub: Hub, txn: Any, sender_bare: str, to: str) -> None:
    """Refuse a stanza the user sends to a JID it blocks (§3.5, ``not-acceptable``)."""
    if blocking_view.blocks(hub.store, txn, sender_bare, to):
        raise blocked_error()


def refuses(hub: Hub, txn: Any, recipient_bare: str, sender_full: str) -> bool:
    """Does the recipient block the sender (then the stanza must not reach it)?"""
    return blocking_view.blocks(hub.store, txn, recipient_bare, sender_full)


def _items(elem: Element) -> list[str]:
    items = elem.find_all("{%s}item" % NS)
    if len(items) > MAX_ITEMS:
        raise StanzaError("not-acceptable", f"at most {MAX_ITEMS} JIDs per request")
    out = set()
    for item in items:
        try:
            jid = str(JID.parse(item.get("jid") or ""))
        except InvalidJID as exc:
            raise StanzaError("jid-malformed", f"{item.get('jid')!r} is not a JID") from exc
        if len(jid.encode()) > MAX_JID_BYTES:
            raise StanzaError("not-acceptable", f"blocked JIDs are at most {MAX_JID_BYTES} bytes")
        out.add(jid)
    return sorted(out)


async def handle(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    to = iq.get("to")
    if to and to != session.bare:
        raise StanzaError("forbidden", "only your own block list")
    if query.name == "blocklist":
        if iq.get("type") != "get":
            raise StanzaError("bad-request")
        session.interested = True  # pushes follow (§3.2), as for the roster
        with hub.read() as txn:
            jids = blocking_view.blocklist(hub.store, txn, session.bare)
        items = [E("{%s}item" % NS, {"jid": j}) for j in jids]
        return iq_result(iq, E("{%s}blocklist" % NS, None, *items))
    if iq.get("type") != "set":
        raise StanzaError("bad-request")
    jids = _items(query)
    owner = session.bare
    with hub.read() as txn:
        current = set(blocking_view.blocklist(hub.store, txn, owner))
        if query.name == "block":
            if not jids:
                raise StanzaError("bad-request", "block at least one JID (§3.3)")
            added = [j for j in jids if j not in current]
            event = BlockingChanged(owner, block=added)
            effects = _presence_gone(hub, txn, owner, added)
        elif query.name == "unblock":
            removed = sorted(current) if not jids else [j for j in jids if j in current]
            event = BlockingChanged(owner, unblock=removed, unblock_all=not jids)
            effects = _presence_back(hub, txn, owner, removed)
        else:
            raise StanzaError("bad-request")
    if event.block or event.unblock or event.unblock_all:
        await hub.log.append(event, *effects)
    return iq_result(iq)


def _local_bares(hub: Hub, jids: list[str]) -> list[str]:
    out = []
    for jid in jids:
        bare = jid.split("/", 1)[0]
        if "@" in bare and hub.is_local(bare.rsplit("@", 1)[1]) and bare not in out:
            out.append(bare)
    return out


def _unavailable(sender: str, to: str) -> PresenceRouted:
    stanza = E("{%s}presence" % ns.CLIENT, {"from": sender, "to": to, "type": "unavailable"})
    return PresenceRouted(sender=sender, xml=serialize(stanza).decode(), targets=[to])


def _presence_gone(hub: Hub, txn: Any, owner: str, added: list[str]) -> list[PresenceRouted]:
    """Newly blocked contacts see the user go, and the user them (§3.3.1)."""
    out = []
    mine = [s for s in sessions_view.of_user(hub.store, txn, owner) if s.available]
    for contact in _local_bares(hub, added):
        out += [_unavailable(s.jid, contact) for s in mine]
        theirs = [s for s in sessions_view.of_user(hub.store, txn, contact) if s.available]
        out += [_unavailable(s.jid, owner) for s in theirs]
    return out


def _presence_back(hub: Hub, txn: Any, owner: str, removed: list[str]) -> list[PresenceRouted]:
    """Unblocked contacts get the user's presence back where subscriptions say so (§3.4.1)."""
    out = []
    mine = [s for s in sessions_view.of_user(hub.store, txn, owner) if s.available and s.presence]
    for contact in _local_bares(hub, removed):
        item = roster_view.item(hub.store, txn, owner, contact)
        if item is None:
            continue
        if item.subscription in ("from", "both"):
            for s in mine:
                xml = _readdressed(s.presence or "", contact)
                out.append(PresenceRouted(sender=s.jid, xml=xml, targets=[contact]))
        if item.subscription in ("to", "both") and not blocking_view.blocks(
            hub.store, txn, contact, owner
        ):
            for s in sessions_view.of_user(hub.store, txn, contact):
                if s.available and s.presence:
                    xml = _readdressed(s.presence, owner)
                    out.append(PresenceRouted(sender=s.jid, xml=xml, targets=[owner]))
    return out


def _readdressed(xml: str, to: str) -> str:
    return serialize(parse_fragment(xml.encode()).with_attrs(to=to)).decode()
