"""RFC 7395 framing translation, without sockets: what the session reads for each WebSocket
message, and the WebSocket messages for what it writes (whole, self-contained elements)."""

from __future__ import annotations

import pytest
from defusedxml import ElementTree

from xes.session.c2s import C2SPolicy, C2SProtocol
from xes.session.framing import FRAMING, FramingError, WebSocketFraming

OPEN = f"<open xmlns='{FRAMING}' to='example.org' version='1.0' xml:lang='de'/>".encode()
HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' from='example.org' id='s1' version='1.0' "
    b"xml:lang='en'>"
)


def test_open_becomes_a_stream_header_and_close_its_end() -> None:
    f = WebSocketFraming()
    header = f.inbound(OPEN)
    assert header.startswith(b"<stream:stream xmlns='jabber:client'")
    assert b"to='example.org'" in header and b"xml:lang='de'" in header
    assert f.inbound(b"<iq type='get' id='1'/>") == b"<iq type='get' id='1'/>"
    assert f.inbound(f"<close xmlns='{FRAMING}'/>".encode()) == b"</stream:stream>"


def test_first_message_must_be_open() -> None:
    with pytest.raises(FramingError) as err:
        WebSocketFraming().inbound(b"<message/>")
    assert err.value.condition == "not-well-formed"


def test_malformed_open_is_not_well_formed() -> None:
    with pytest.raises(FramingError):
        WebSocketFraming().inbound(b"<open xmlns='x' to='a>")


def test_outbound_elements_are_self_contained() -> None:
    f = WebSocketFraming()
    out = f.outbound(
        HEADER
        + b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        + b" <message to='a&gt;b' title='x&gt;y'><body>1 &lt; 2</body></message>"
        + b"<r xmlns='urn:xmpp:sm:3'/>"
    )
    assert out[0] == (
        f"<open xmlns='{FRAMING}' from='example.org' id='s1' version='1.0' xml:lang='en'/>"
    )
    assert out[1].startswith("<features xmlns='http://etherx.jabber.org/streams'>")
    assert out[2].startswith("<message xmlns='jabber:client' to='a&gt;b'")
    assert out[3] == "<r xmlns='urn:xmpp:sm:3'/>"
    for text in out:
        ElementTree.fromstring(text)  # each one parses on its own


def test_partial_writes_wait_for_the_whole_element() -> None:
    f = WebSocketFraming()
    f.outbound(HEADER)
    data = b"<message id='1'><body>hello</body></message><iq type='result' id='2'/>"
    out: list[str] = []
    for i in range(len(data)):
        out += f.outbound(data[i : i + 1])
    assert out == [
        "<message xmlns='jabber:client' id='1'><body>hello</body></message>",
        "<iq xmlns='jabber:client' type='result' id='2'/>",
    ]


def test_stream_error_and_end() -> None:
    f = WebSocketFraming()
    f.outbound(HEADER)
    out = f.outbound(
        b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
        b"</stream:stream>"
    )
    assert out == [
        "<error xmlns='http://etherx.jabber.org/streams'>"
        "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></error>",
        f"<close xmlns='{FRAMING}'/>",
    ]
    assert f.closed and f.outbound(b"<message/>") == []


def test_keepalive_whitespace_is_dropped() -> None:
    f = WebSocketFraming()
    f.outbound(HEADER)
    assert f.outbound(b" ") == []
    assert f.outbound(b"\n<presence/>") == ["<presence xmlns='jabber:client'/>"]


def test_the_unchanged_session_speaks_rfc7395_through_it() -> None:
    """C2SProtocol fed through the framing answers <open/> with <open/> and features."""
    proto = C2SProtocol(
        C2SPolicy(domain="example.org", tls_available=False),
        credentials=lambda user: None,
        normalize_username=str,
    )
    proto.tls_started(None)
    f = WebSocketFraming()
    out: list[str] = []
    for action in proto.receive_data(f.inbound(OPEN)):
        data = getattr(action, "data", None)
        if data:
            out += f.outbound(data)
    assert out[0].startswith(f"<open xmlns='{FRAMING}' from='example.org'")
    features = ElementTree.fromstring(out[1])
    assert features.tag == "{http://etherx.jabber.org/streams}features"
    assert features.find("{urn:ietf:params:xml:ns:xmpp-sasl}mechanisms") is not None
