"""XEP-0280 Message Carbons: which messages are copied, and the copies themselves.

A copy goes to the user's *other* carbons-enabled resources: ``<sent/>`` for what one of its
resources sent, ``<received/>`` for what it received on another resource (or on none). The
proposer of ``message.routed`` lists the resources (``sent_carbons``/``received_carbons``) so
every node and every stream-management outbox makes the same copies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from xes.events.catalog import MessageRouted
from xes.jid import bare_of
from xes.stanza import sid
from xes.stanza.forward import forwarded
from xes.xml import E, Element, escape_attr, ns, parse_fragment, serialize

IM_PAYLOADS = frozenset({ns.CHATSTATES, ns.RECEIPTS, ns.MARKERS})
"""Payload namespaces of bodyless instant messages that are copied (XEP-0280 §6)."""


def eligible(stanza: Element, type_: str) -> bool:
    """XEP-0280 §6 (and XEP-0334 hints): is this message copied to the other resources?"""
    if stanza.find("{%s}private" % ns.CARBONS) is not None:
        return False
    if stanza.find("{%s}no-copy" % ns.HINTS) is not None:
        return False
    if type_ in ("groupchat", "headline"):
        return False  # MUC traffic reaches each joined resource itself
    if type_ == "chat":
        return True
    if type_ in ("normal", "error") and stanza.find("{%s}body" % ns.CLIENT) is not None:
        return True
    return any(el.ns in IM_PAYLOADS for el in stanza.iter_elements())


def copy(direction: str, owner: str, to: str, xml: str, type_: str) -> bytes:
    """The ``<sent/>`` or ``<received/>`` copy of ``xml`` for ``owner``'s resource ``to``.

    The wrapper comes from the user's bare JID: clients accept carbons only from there.
    """
    return (
        f"<message from='{escape_attr(owner)}' to='{escape_attr(to)}' "
        f"type='{escape_attr(type_)}'><{direction} xmlns='{ns.CARBONS}'>"
        f"{forwarded(xml)}</{direction}></message>"
    ).encode()


def sent_copy_xml(xml: str, recipient: str, sender: str, stanza_id: str | None) -> str:
    """The sent message as the sender's archive knows it: the recipient's ``stanza-id``
    replaced by the sender's own, if the sender archived it."""
    stanza = sid.strip_by(parse_fragment(xml.encode()), recipient)
    if stanza_id is not None:
        stanza = stanza.append(E(sid.STANZA_ID, {"by": sender, "id": stanza_id}))
    return serialize(stanza).decode()


def copies(ev: MessageRouted, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """``(full JID, copy)`` for the carbons of the committed ``ev`` that ``wanted`` accepts
    (sessions on this node, managed sessions), in a fixed order. Nothing is built for the
    others: every node applies every message, most of its carbon targets are elsewhere."""
    sender, recipient = bare_of(ev.sender), bare_of(ev.to)
    sent_to = [to for to in ev.sent_carbons if wanted(to)]
    if sent_to:
        own_id = ev.stanza_id if sender in ev.archived_by else None
        sent = sent_copy_xml(ev.xml, recipient, sender, own_id)
        for to in sent_to:
            yield to, copy("sent", sender, to, sent, ev.type)
    for to in ev.received_carbons:
        if wanted(to):
            yield to, copy("received", recipient, to, ev.xml, ev.type)
