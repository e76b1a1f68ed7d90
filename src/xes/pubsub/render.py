"""The stanzas PEP nodes send: event notifications (XEP-0060 §7.1.2.1, §7.2.2.1, §8.4, §8.5)
and items results (§6.5).

Notifications are rendered from the committed event alone, so delivery and the stream
management outbox (on every node) produce the same bytes. They have no ``to``:
:func:`xes.stanza.core.addressed` splices each recipient's JID in.
"""

from __future__ import annotations

from collections.abc import Iterable

from xes.xml import escape_attr
from xes.xml.ns import PUBSUB, PUBSUB_EVENT


def item_xml(ns_: str, item_id: str, payload: str | None) -> str:
    """``<item id=...>payload</item>`` in namespace ``ns_`` (event or pubsub)."""
    head = f"<item xmlns='{ns_}' id='{escape_attr(item_id)}'"
    return f"{head}>{payload}</item>" if payload else f"{head}/>"


def _message(owner: str, stanza_id: str, inner: str, delay: str = "") -> str:
    return (
        f"<message from='{escape_attr(owner)}' type='headline' id='{escape_attr(stanza_id)}'>"
        f"<event xmlns='{PUBSUB_EVENT}'>{inner}</event>{delay}</message>"
    )


def published(owner: str, node: str, stanza_id: str, item_id: str, payload: str | None) -> str:
    inner = item_xml(PUBSUB_EVENT, item_id, payload)
    return _message(owner, stanza_id, f"<items node='{escape_attr(node)}'>{inner}</items>")


def last_published(
    owner: str, node: str, stanza_id: str, item_id: str, payload: str, stamp: str
) -> str:
    """The last item sent to a new subscriber, with its publication time (XEP-0060 §6.1.7)."""
    inner = item_xml(PUBSUB_EVENT, item_id, payload)
    delay = f"<delay xmlns='urn:xmpp:delay' from='{escape_attr(owner)}' stamp='{stamp}'/>"
    return _message(owner, stanza_id, f"<items node='{escape_attr(node)}'>{inner}</items>", delay)


def retracted(owner: str, node: str, stanza_id: str, item_ids: Iterable[str]) -> str:
    inner = "".join(f"<retract id='{escape_attr(i)}'/>" for i in item_ids)
    return _message(owner, stanza_id, f"<items node='{escape_attr(node)}'>{inner}</items>")


def purged(owner: str, node: str, stanza_id: str) -> str:
    return _message(owner, stanza_id, f"<purge node='{escape_attr(node)}'/>")


def deleted(owner: str, node: str, stanza_id: str) -> str:
    return _message(owner, stanza_id, f"<delete node='{escape_attr(node)}'/>")


def items_payload(node: str, items: Iterable[tuple[str, str]]) -> str:
    """``<pubsub><items node>`` of an items result (§6.5.2), items as ``(id, payload)``."""
    inner = "".join(item_xml(PUBSUB, i, p) for i, p in items)
    return f"<pubsub xmlns='{PUBSUB}'><items node='{escape_attr(node)}'>{inner}</items></pubsub>"
