"""Roster items and pushes as stanzas (RFC 6121 §2.1.6): pure builders shared by the roster
feature, live delivery and the stream-management outbox, so every path writes the same bytes."""

from __future__ import annotations

from typing import Protocol

from xes.events import Committed
from xes.xml import E, Element, ns, serialize


class ItemLike(Protocol):
    contact: str
    name: str | None
    groups: list[str]
    subscription: str
    ask: bool
    approved: bool


def item_element(item: ItemLike, removed: bool = False) -> Element:
    attrs = {"jid": item.contact}
    if removed:
        attrs["subscription"] = "remove"
        return E("{%s}item" % ns.ROSTER, attrs)
    attrs["subscription"] = item.subscription
    if item.name:
        attrs["name"] = item.name
    if item.ask:
        attrs["ask"] = "subscribe"
    if item.approved:
        attrs["approved"] = "true"
    groups = [E("{%s}group" % ns.ROSTER, None, g) for g in item.groups]
    return E("{%s}item" % ns.ROSTER, attrs, *groups)


def removed_element(contact: str) -> Element:
    return E("{%s}item" % ns.ROSTER, {"jid": contact, "subscription": "remove"})


def push_id(c: Committed) -> str:
    """The id of a roster push: the event's log position, the same on every node."""
    return f"push-{c.index}-{c.pos}"


def push_bytes(owner_full: str, c: Committed, item: Element) -> bytes:
    """The push of ``item`` to ``owner_full`` for roster event ``c`` (its version is ``ver``)."""
    iq = E(
        "{%s}iq" % ns.CLIENT,
        {"type": "set", "id": push_id(c), "to": owner_full},
        E("{%s}query" % ns.ROSTER, {"ver": str(c.version)}, item),
    )
    return serialize(iq)
