"""What a message says, as the events that carry it record it (``message.routed`` v2,
``muc.message_sent`` v2).

Projections that count and aggregate (the inbox, XEP-0430; read status of a message,
``docs/protocol/read-status.md``) must not parse stanzas in apply: the proposer reads the stanza
once and the event carries the facts. Events written before these fields existed get the same
facts from the same function, in their upcaster, so a replay of an old journal builds the same
counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from xes.xml import Element, ns, parse_fragment

MARKER_KINDS = ("received", "displayed", "acknowledged")
"""XEP-0333 chat markers in order of strength; a XEP-0184 receipt counts as ``received``."""


@dataclass(frozen=True, slots=True)
class MessageFacts:
    body: bool = False
    """It carries a body: an instant message (XEP-0430 counts it as unread)."""
    marker: str | None = None
    """``received`` | ``displayed`` | ``acknowledged``: it marks an earlier message."""
    marker_id: str | None = None
    """The id of the marked message, as the marker names it."""
    msg_id: str | None = None
    """The sender's ``id`` attribute (what a XEP-0333 or XEP-0184 marker names in one-to-one)."""
    track: bool = False
    """The sender asks to follow who received and displayed it: a ``<request/>`` of
    ``urn:xes:read-status:0`` (``docs/protocol/read-status.md``)."""

    def fields(self) -> dict[str, object]:
        return {
            "body": self.body,
            "marker": self.marker,
            "marker_id": self.marker_id,
            "msg_id": self.msg_id,
            "track": self.track,
        }


def facts_of(stanza: Element) -> MessageFacts:
    """The facts of one message stanza (pure; also used by upcasters on stored XML)."""
    body = stanza.find("{%s}body" % ns.CLIENT) is not None
    track = body and stanza.find("{%s}request" % ns.READ_STATUS) is not None
    marker = marker_id = None
    for child in stanza.elements():
        if child.ns == ns.MARKERS and child.name in MARKER_KINDS and child.get("id"):
            marker, marker_id = child.name, child.get("id")
            break
        if child.ns == ns.RECEIPTS and child.name == "received" and child.get("id"):
            marker, marker_id = "received", child.get("id")
    return MessageFacts(body, marker, marker_id, stanza.get("id"), track)


def facts_of_xml(xml: str) -> MessageFacts:
    """:func:`facts_of` for a stored stanza (an upcaster's input)."""
    return facts_of(parse_fragment(xml.encode()))
