"""Message facts (``message.routed``/``muc.message_sent`` v2): read once by the proposer, and by
the upcaster from v1 events' stored XML, with the same result."""

from __future__ import annotations

from xes.events import Envelope, decode_event
from xes.events.catalog import MessageRouted, MucMessageSent
from xes.events.message_facts import MessageFacts, facts_of
from xes.xml import parse_fragment

CHAT = "<message xmlns='jabber:client' from='a@x/r' to='b@x' id='m1' type='chat'>{}</message>"


def facts(inner: str) -> MessageFacts:
    return facts_of(parse_fragment(CHAT.format(inner).encode()))


def test_body_and_markers() -> None:
    assert facts("<body>hi</body>") == MessageFacts(body=True, msg_id="m1")
    displayed = facts("<displayed xmlns='urn:xmpp:chat-markers:0' id='m0'/>")
    assert displayed == MessageFacts(False, "displayed", "m0", "m1")
    receipt = facts("<received xmlns='urn:xmpp:receipts' id='m0'/>")
    assert (receipt.marker, receipt.marker_id) == ("received", "m0")
    # A request for a marker is not a marker; a marker without an id names nothing.
    assert facts("<body>x</body><markable xmlns='urn:xmpp:chat-markers:0'/>").marker is None
    assert facts("<displayed xmlns='urn:xmpp:chat-markers:0'/>").marker is None
    # An XHTML-IM body alone is not a plain body.
    xhtml = (
        "<html xmlns='http://jabber.org/protocol/xhtml-im'>"
        "<body xmlns='http://www.w3.org/1999/xhtml'>x</body></html>"
    )
    assert facts(xhtml).body is False


def test_v1_events_are_upcast_with_the_facts_of_their_xml() -> None:
    xml = CHAT.format("<displayed xmlns='urn:xmpp:chat-markers:0' id='m0'/>")
    data = {"sender": "a@x/r", "to": "b@x", "type": "chat", "xml": xml, "targets": ["b@x/r"]}
    ev = decode_event(Envelope("message.routed", 1, "chat:b@x", "i", 0, "n", data))
    assert isinstance(ev, MessageRouted)
    assert (ev.body, ev.marker, ev.marker_id, ev.msg_id) == (False, "displayed", "m0", "m1")
    room = (
        "<message xmlns='jabber:client' from='r@muc.x/n' id='g1' type='groupchat'>"
        "<body>b</body></message>"
    )
    data = {"room": "r@muc.x", "session": "s", "nick": "n", "xml": room, "stanza_id": "S"}
    muc = decode_event(Envelope("muc.message_sent", 1, "muc:r@muc.x", "j", 0, "n", data))
    assert isinstance(muc, MucMessageSent)
    assert (muc.body, muc.marker, muc.msg_id) == (True, None, "g1")


def test_read_status_request_is_tracked_only_with_a_body() -> None:
    request = "<request xmlns='urn:xes:read-status:0'/>"
    assert facts("<body>hi</body>" + request).track is True
    assert facts(request).track is False  # nothing to read
    assert facts("<body>hi</body>").track is False
