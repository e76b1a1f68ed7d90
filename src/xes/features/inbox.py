"""XEP-0430 Inbox: the conversation list with unread counts, and its properties.

The query (``<inbox xmlns='urn:xmpp:inbox:1'/>``, iq get or set to the user's own bare JID or
the server) is read from the ``inbox`` projection on whichever node the client is on: one
``<message/>`` per entry (the entry, its properties and, unless ``messages='false'``, the last
message as a MAM ``<result/>``), then the iq result with ``<fin/>``: the totals and the RSM
edges. Entries come pinned first, then by last activity, newest first; RSM ``max`` and
``after`` page through them. Filters: the XEP's ``unread-only`` and ``messages``, and ``box``
(``inbox``: not archived, ``archive``, ``all``: the default, as the XEP has no boxes).

Conversation properties (``<query xmlns='urn:xes:inbox:0' jid='...'/>``, after MongooseIM's
conversation properties): get returns the entry; set takes ``<read>``, ``<archive>``, ``<mute>``
(seconds from now, 0 unmutes) and ``<pin>`` and records one ``inbox.updated``. A session that
queries the inbox is recorded as watching it (``inbox.watched``) and is told of entries that
change elsewhere (a marker from another device, another device's property change).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from xes.events.catalog import InboxUpdated, InboxWatched
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.projections import archive as archive_view
from xes.projections import inbox as inbox_view
from xes.projections.inbox import Entry
from xes.stanza.core import StanzaError, iq_result
from xes.stanza.forward import forwarded
from xes.stanza.inbox import NS, PROPERTIES, entry_element, properties_element
from xes.store.env import Store
from xes.xml import E, Element, escape_attr, ns, serialize

XEPS = ((430, "partial"),)
FEATURES = (NS, PROPERTIES)
BOXES = ("all", "inbox", "archive")
_TRUE = ("true", "1")
_BOOLS = ("true", "false", "1", "0")


def _own(hub: Hub, session: LocalSession, iq: Element) -> str:
    """The inbox is the sender's own: asked of its bare JID, the server, or no one."""
    to = iq.get("to")
    if to is None or to == session.jid.domain:
        return session.bare
    try:
        target = JID.parse(to)
    except InvalidJID as exc:
        raise StanzaError("jid-malformed") from exc
    if str(target) != session.bare:
        raise StanzaError("forbidden", "only your own inbox")
    return session.bare


def _flag(elem: Element, name: str, default: bool) -> bool:
    value = elem.get(name)
    if value is None:
        return default
    if value not in _BOOLS:
        raise StanzaError("bad-request", f"{name} is true or false")
    return value in _TRUE


def available(hub: Hub) -> bool:
    """Configured, and every cluster member reads the inbox's events (ADR 0022)."""
    return hub.config.inbox.enabled and hub.gate.allows(InboxWatched, InboxUpdated)


def _require(hub: Hub) -> None:
    if not hub.config.inbox.enabled:
        raise StanzaError("service-unavailable")
    if not available(hub):
        raise StanzaError("feature-not-implemented", "not until every node of the cluster reads it")


async def _watch(hub: Hub, session: LocalSession, owner: str) -> None:
    with hub.read() as txn:
        known = inbox_view.watching(hub.store, txn, owner, session.session_id)
    if not known:
        await hub.log.append(InboxWatched(owner, session.session_id))


def _wanted(entry: Entry, unread_only: bool, box: str) -> bool:
    if unread_only and entry.unread == 0:
        return False
    if box == "inbox":
        return not entry.archived
    if box == "archive":
        return entry.archived
    return True


@dataclass(frozen=True, slots=True)
class InboxQuery:
    """A XEP-0430 query, its attributes and RSM resolved."""

    most: int
    after: str | None = None
    unread_only: bool = False
    messages: bool = True
    box: str = "all"
    before: str | None = None
    """RSM ``<before/>``: the page just above this cursor ("" for the last page)."""


def parse_query(child: Element, page_size: int, max_page_size: int) -> InboxQuery:
    """The query in ``<inbox xmlns='urn:xmpp:inbox:1'/>``; ``bad-request`` if invalid."""
    box = child.get("box") or "all"
    if box not in BOXES:
        raise StanzaError("bad-request", "box is all, inbox or archive")
    most, after, before = page_size, None, None
    rsm = child.find("{%s}set" % ns.RSM)
    if rsm is not None:
        before_el = rsm.find("{%s}before" % ns.RSM)
        if before_el is not None:
            before = (before_el.text or "").strip()
        max_el = rsm.find("{%s}max" % ns.RSM)
        if max_el is not None:
            if not max_el.text.strip().isdigit():
                raise StanzaError("bad-request", "RSM max is a number")
            most = min(int(max_el.text), max_page_size)
        after_el = rsm.find("{%s}after" % ns.RSM)
        after = (after_el.text.strip() or None) if after_el is not None else None
        if after is not None and before is not None:
            raise StanzaError("bad-request", "RSM after or before, not both")
    return InboxQuery(
        most,
        after,
        _flag(child, "unread-only", False),
        _flag(child, "messages", True),
        box,
        before,
    )


def render(
    store: Store, txn: Any, owner: str, to: str, q: InboxQuery, queryid: str
) -> tuple[list[bytes], Element]:
    """The entry messages of one page and the ``<fin/>`` that closes the query (pure reads;
    shared with ``tools/bench/inbox.py``)."""
    page: list[Entry] = []
    more = False
    if q.before is None:
        walk = inbox_view.by_activity(store, txn, owner, q.after)
    else:  # the page just above the cursor: walk upwards, then show it in the usual order
        walk = inbox_view.by_activity_upwards(store, txn, owner, q.before or None)
    try:
        for entry in walk:
            if not _wanted(entry, q.unread_only, q.box):
                continue
            if len(page) == q.most:
                more = True
                break
            page.append(entry)
    except ValueError as exc:
        raise StanzaError("item-not-found", "no such inbox position (RSM after/before)") from exc
    if q.before is not None:
        page.reverse()
    totals = inbox_view.summary(store, txn, owner)
    messages = [_entry_message(store, txn, owner, to, e, queryid, q.messages) for e in page]
    rsm: list[Element] = []
    if page:
        rsm.append(E("{%s}first" % ns.RSM, None, page[0].cursor))
        rsm.append(E("{%s}last" % ns.RSM, None, page[-1].cursor))
    if q.box == "all":
        count = totals["unread_conversations"] if q.unread_only else totals["entries"]
        rsm.append(E("{%s}count" % ns.RSM, None, str(count)))
    attrs = {
        "total": str(totals["entries"]),
        "unread": str(totals["unread_conversations"]),
        "all-unread": str(totals["unread"]),
    }
    if not more:
        attrs["complete"] = "true"
    return messages, E("{%s}fin" % NS, attrs, E("{%s}set" % ns.RSM, None, *rsm))


async def query(hub: Hub, session: LocalSession, iq: Element, child: Element) -> Element:
    owner = _own(hub, session, iq)
    cfg = hub.config.inbox
    _require(hub)
    q = parse_query(child, cfg.page_size, cfg.max_page_size)
    await _watch(hub, session, owner)
    with hub.read() as txn:
        messages, fin = render(hub.store, txn, owner, session.full, q, iq.get("id") or "")
    for data in messages:
        session.send_bytes(data)
    return iq_result(iq, fin)


def _entry_message(
    store: Store, txn: Any, owner: str, to: str, entry: Entry, queryid: str, messages: bool
) -> bytes:
    parts = [serialize(el).decode() for el in (entry_element(entry), properties_element(entry))]
    if messages and entry.last:
        archive_owner = entry.conversation if entry.room else owner
        found = archive_view.by_id(store, txn, archive_owner, entry.last)
        if found is not None:
            parts.append(
                f"<result xmlns='{ns.MAM}' queryid='{escape_attr(queryid)}'"
                f" id='{escape_attr(found.id)}'>{forwarded(found.xml, found.at)}</result>"
            )
    head = f"<message xmlns='{ns.CLIENT}' from='{escape_attr(owner)}' to='{escape_attr(to)}'>"
    return (head + "".join(parts) + "</message>").encode()


def _bool_child(query: Element, name: str) -> bool | None:
    el = query.find("{%s}%s" % (PROPERTIES, name))
    if el is None:
        return None
    value = el.text.strip()
    if value not in _BOOLS:
        raise StanzaError("bad-request", f"<{name}/> is true or false")
    return value in _TRUE


async def conversation(hub: Hub, session: LocalSession, iq: Element, child: Element) -> Element:
    owner = _own(hub, session, iq)
    _require(hub)
    try:
        peer = str(JID.parse(child.get("jid") or "").bare)
    except InvalidJID as exc:
        raise StanzaError("jid-malformed", "jid names the conversation") from exc
    with hub.read() as txn:
        entry = inbox_view.entry(hub.store, txn, owner, peer)
    if entry is None:
        raise StanzaError("item-not-found", "no such conversation in the inbox")
    if iq.get("type") == "set":
        update = _update(hub, owner, peer, child)
        await _watch(hub, session, owner)
        await hub.log.append(update)
        with hub.read() as txn:
            entry = inbox_view.entry(hub.store, txn, owner, peer) or entry
    return iq_result(
        iq,
        E("{%s}query" % PROPERTIES, {"jid": peer}, entry_element(entry), properties_element(entry)),
    )


def _update(hub: Hub, owner: str, peer: str, query: Element) -> InboxUpdated:
    muted_until = None
    mute = query.find("{%s}mute" % PROPERTIES)
    if mute is not None:
        seconds = mute.text.strip()
        if not seconds.isdigit():
            raise StanzaError("bad-request", "<mute/> is a number of seconds (0 unmutes)")
        if int(seconds) > hub.config.inbox.max_mute_seconds:
            raise StanzaError("not-acceptable", "that mute is longer than the server allows")
        muted_until = int(time.time() * 1000) + int(seconds) * 1000 if int(seconds) else 0
    update = InboxUpdated(
        owner,
        peer,
        read=_bool_child(query, "read"),
        archived=_bool_child(query, "archive"),
        muted_until=muted_until,
        pinned=_bool_child(query, "pin"),
    )
    if (update.read, update.archived, update.muted_until, update.pinned) == (None,) * 4:
        raise StanzaError("bad-request", "set at least one of read, archive, mute, pin")
    return update
