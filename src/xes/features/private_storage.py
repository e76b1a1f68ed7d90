"""Private XML storage (XEP-0049) and the bookmarks bridge between XEP-0048, XEP-0411 and
XEP-0402.

A client stores one element per namespace in its account and reads it back; nobody else can.
Clients from before XEP-0402 keep their group chat bookmarks there
(``<storage xmlns='storage:bookmarks'/>``), newer ones in the PEP node
``urn:xmpp:bookmarks:1``, one item per room. So that a user's old and new clients agree
(XEP-0402 §5.3, ``urn:xmpp:bookmarks:1#compat``), the server keeps the PEP node as the truth:
a legacy write becomes publications and retractions on it (in the same proposal), and a legacy
read is rendered from its items (URL bookmarks, which XEP-0402 lacks, stay in private storage).
The XEP-0048 PEP node ``storage:bookmarks`` (XEP-0411, ``urn:xmpp:bookmarks-conversion:0``) is
the same list again: its one item ``current`` is rendered like a private-storage read, and a
publish there is a private-storage write.
"""

from __future__ import annotations

from typing import Any

from xes.events.catalog import (
    PepItemPublished,
    PepItemRetracted,
    PepNodeConfigured,
    PrivateStored,
)
from xes.features.pep import access
from xes.features.pep.common import propose
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.projections import account_data
from xes.projections import pep as pep_view
from xes.pubsub.config import NodeConfig
from xes.stanza.core import StanzaError, iq_result
from xes.xml import E, Element, ns, parse_fragment, serialize

PRIVATE = "jabber:iq:private"
LEGACY = "storage:bookmarks"
BOOKMARKS = "urn:xmpp:bookmarks:1"
LEGACY_KEY = "{%s}storage" % LEGACY
RESERVED = (ns.CLIENT, ns.SERVER, PRIVATE)
"""Namespaces XEP-0049 §3 forbids storing (``not-acceptable``)."""
XEPS = ((48, "complete"), (49, "complete"), (402, "complete"), (411, "complete"))
CONVERSION = "urn:xmpp:bookmarks-conversion:0"


def bookmark_node_config(max_items: int) -> NodeConfig:
    """XEP-0402 §4.1: the node's publish-options."""
    return NodeConfig(
        access_model="whitelist",
        max_items=max_items,
        send_last_published_item="never",
        persist_items=True,
    )


async def handle(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    to = iq.get("to")
    if to and to != session.bare:
        raise StanzaError("forbidden", "private storage is the account's own (XEP-0049 §3)")
    children = query.elements()
    if len(children) != 1:
        raise StanzaError("not-acceptable", "exactly one element to store or read")
    child = children[0]
    if len(child.tag.encode()) > 256:
        raise StanzaError("not-acceptable", "element name and namespace too long")
    if child.ns in RESERVED or not child.ns:
        raise StanzaError("not-acceptable", f"namespace {child.ns or '(none)'} cannot be stored")
    if iq.get("type") == "get":
        return iq_result(iq, E("{%s}query" % PRIVATE, None, _read(hub, session.bare, child)))
    xml = serialize(child).decode()
    if len(xml.encode()) > hub.config.pep.max_item_bytes:
        raise StanzaError("not-acceptable", "too large to store")
    events: list[Any] = [PrivateStored(session.bare, child.tag, xml)]
    if child.tag == LEGACY_KEY:
        events += _to_pep(hub, session.bare, child)
    await propose(hub, *events)
    return iq_result(iq)


def _read(hub: Hub, owner: str, asked: Element) -> Element:
    with hub.read() as txn:
        stored = account_data.private(hub.store, txn, owner, asked.tag)
        if asked.tag == LEGACY_KEY and pep_view.node(hub.store, txn, owner, BOOKMARKS):
            items = pep_view.items(hub.store, txn, owner, BOOKMARKS)
            urls = []
            if stored:
                urls = parse_fragment(stored.encode()).find_all("{%s}url" % LEGACY)
            return E(LEGACY_KEY, None, *(_legacy(i.id, i.payload) for i in items), *urls)
    if stored is None:
        return E(asked.tag)  # XEP-0049 §2.2: nothing stored: the empty element
    return parse_fragment(stored.encode())


def _legacy(room: str, payload: str) -> Element:
    """A XEP-0402 item as a XEP-0048 ``<conference/>``."""
    conf = parse_fragment(payload.encode())
    children = []
    for name in ("nick", "password"):
        el = conf.find("{%s}%s" % (BOOKMARKS, name))
        if el is not None and el.text:
            children.append(E("{%s}%s" % (LEGACY, name), None, el.text))
    autojoin = "true" if conf.get("autojoin") in ("1", "true") else "false"
    attrs = {"jid": room, "name": conf.get("name"), "autojoin": autojoin}
    return E("{%s}conference" % LEGACY, attrs, *children)


def _modern(conf: Element) -> tuple[str, str]:
    """(room JID, XEP-0402 payload) of a XEP-0048 ``<conference/>``."""
    try:
        room = str(JID.parse(conf.get("jid") or "").bare)
    except InvalidJID as exc:
        raise StanzaError("jid-malformed", "a bookmark names a room JID") from exc
    autojoin = "true" if (conf.get("autojoin") or "") in ("1", "true") else None
    children = []
    for name in ("nick", "password"):
        el = conf.find("{%s}%s" % (LEGACY, name))
        if el is not None and el.text:
            children.append(E("{%s}%s" % (BOOKMARKS, name), None, el.text))
    payload = E(
        "{%s}conference" % BOOKMARKS, {"name": conf.get("name"), "autojoin": autojoin}, *children
    )
    return room, serialize(payload).decode()


def _to_pep(hub: Hub, owner: str, storage: Element) -> list[Any]:
    """The XEP-0402 node brought to what a legacy client just stored."""
    wanted = dict(_modern(c) for c in storage.find_all("{%s}conference" % LEGACY))
    events: list[Any] = []
    with hub.read() as txn:
        row = pep_view.node(hub.store, txn, owner, BOOKMARKS)
        if row is None:
            cfg = bookmark_node_config(hub.config.pep.max_items)
            events.append(PepNodeConfigured(owner, BOOKMARKS, cfg.to_json(), create="auto"))
            current: dict[str, str] = {}
            whitelist: list[str] = []
        else:
            cfg, whitelist = row.config, row.whitelist
            current = {i.id: i.payload for i in pep_view.items(hub.store, txn, owner, BOOKMARKS)}
        notify = access.notify_targets(hub, txn, owner, BOOKMARKS, cfg, whitelist)
    publisher = owner
    for room, payload in sorted(wanted.items()):
        if current.get(room) != payload:
            events.append(
                PepItemPublished(owner, BOOKMARKS, room, payload, publisher, None, notify)
            )
    for room in sorted(set(current) - set(wanted)):
        events.append(PepItemRetracted(owner, BOOKMARKS, room, notify))
    return events


def legacy_pep_items(hub: Hub, session: LocalSession, owner: str) -> Element:
    """XEP-0411: the ``storage:bookmarks`` PEP node's items: ``current``, the whole list."""
    if owner != session.bare:
        raise StanzaError("not-allowed", None, app=E("{%s}closed-node" % ns.PUBSUB_ERRORS))
    storage = _read(hub, owner, E(LEGACY_KEY))
    item = E("{%s}item" % ns.PUBSUB, {"id": "current"}, storage)
    return E("{%s}pubsub" % ns.PUBSUB, None, E("{%s}items" % ns.PUBSUB, {"node": LEGACY}, item))


async def legacy_pep_publish(hub: Hub, session: LocalSession, payload: Element) -> None:
    """XEP-0411: a publish to ``storage:bookmarks`` is a private-storage write."""
    if payload.tag != LEGACY_KEY:
        raise StanzaError("bad-request", "storage:bookmarks holds a <storage/> element")
    xml = serialize(payload).decode()
    if len(xml.encode()) > hub.config.pep.max_item_bytes:
        raise StanzaError("not-acceptable", "too large to store")
    await propose(
        hub, PrivateStored(session.bare, LEGACY_KEY, xml), *_to_pep(hub, session.bare, payload)
    )
