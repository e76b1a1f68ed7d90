"""XmlStream: events, byte sizes, chunking invariance, limits and hostile input."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xes.xml import (
    STREAM_CLOSE,
    E,
    Element,
    ElementReceived,
    StreamClosed,
    StreamEvent,
    StreamOpened,
    XmlLimits,
    XmlStream,
    XmlStreamError,
    ns,
    parse_fragment,
    serialize,
    stream_error,
    stream_header,
)

XML_LANG = f"{{{ns.XML}}}lang"
OPEN = (
    b"<stream:stream to='example.com' version='1.0' xml:lang='en' xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams'>"
)
HEADER = b"<?xml version='1.0'?>" + OPEN

MESSAGE = (
    "<message to='juliet@example.com' id='m1' xml:lang='de'>"
    "<body>Grüße &amp; &lt;Küsse&gt; 𝄞\r\nline two &#x263A; <![CDATA[<raw> & ]]></body>"
    "<x xmlns='urn:x' a='&apos;&quot;' b='tab&#9;nl&#10;'/></message>"
).encode()
IQ = b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
R = b"<r xmlns='urn:xmpp:sm:3'/>"
FEATURES = b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
SAMPLE = HEADER + b"\n" + MESSAGE + b" \r\n\t" + IQ + R + b"  " + FEATURES + b"\n" + STREAM_CLOSE


def feed(data: bytes, stream: XmlStream | None = None, chunk: int = 0) -> list[StreamEvent]:
    stream = stream or XmlStream()
    if not chunk:
        return stream.receive_data(data)
    events: list[StreamEvent] = []
    for i in range(0, len(data), chunk):
        events += stream.receive_data(data[i : i + chunk])
    return events


def error_of(data: bytes, limits: XmlLimits | None = None, chunk: int = 0) -> XmlStreamError:
    with pytest.raises(XmlStreamError) as info:
        feed(data, XmlStream(limits), chunk)
    return info.value


# -- normal operation ----------------------------------------------------------------------------


def test_sample_stream_events() -> None:
    events = feed(SAMPLE)
    assert events[0] == StreamOpened(
        {"to": "example.com", "version": "1.0", XML_LANG: "en"}, "jabber:client"
    )
    received = [e for e in events if isinstance(e, ElementReceived)]
    assert [e.size for e in received] == [len(MESSAGE), len(IQ), len(R), len(FEATURES)]
    message = received[0].element
    assert message.tag == "{jabber:client}message"
    assert message.attrs == {"to": "juliet@example.com", "id": "m1", XML_LANG: "de"}
    body = message.find("{jabber:client}body")
    assert body is not None
    assert body.text == "Grüße & <Küsse> 𝄞\nline two \u263a <raw> & "
    assert message.find("{urn:x}x") == Element("{urn:x}x", {"a": "'\"", "b": "tab\tnl\n"})
    assert received[1].element == E(
        "{jabber:client}iq", {"type": "get", "id": "p1"}, E("{urn:xmpp:ping}ping")
    )
    assert received[2].element == Element("{urn:xmpp:sm:3}r")
    assert received[3].element.tag == f"{{{ns.STREAMS}}}features"
    assert events[-1] == StreamClosed()
    assert len(events) == 6


def test_byte_at_a_time_matches_whole() -> None:
    assert feed(SAMPLE, chunk=1) == feed(SAMPLE)


@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=30))
def test_random_split_points_give_same_events(cuts: list[int]) -> None:
    stream = XmlStream()
    events: list[StreamEvent] = []
    bounds = [0, *sorted(cuts), len(SAMPLE)]
    for start, end in itertools.pairwise(bounds):
        events += stream.receive_data(SAMPLE[start:end])
    assert events == feed(SAMPLE)


# Generated stanzas: serialized, concatenated with keepalive whitespace, split at random points.
_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\ufffe\uffff").filter(
        lambda c: c >= " " or c in "\t\n\r"
    ),
    max_size=10,
)
_STANZA = st.builds(
    lambda name, attrs, text, child: E(
        "{jabber:client}" + name, attrs, E("{urn:x}c", {"v": text}, text) if child else None, text
    ),
    st.sampled_from(["message", "presence", "iq"]),
    st.dictionaries(st.sampled_from(["to", "id", XML_LANG]), _TEXT, max_size=3),
    _TEXT,
    st.booleans(),
)


@settings(max_examples=150)
@given(
    st.lists(st.tuples(_STANZA, st.sampled_from(["", " ", "\n", "\r\n", " \t"])), max_size=6),
    st.data(),
)
def test_generated_stanzas_survive_any_split(
    items: list[tuple[Element, str]], data: st.DataObject
) -> None:
    wire = [serialize(el) for el, _ in items]
    blob = HEADER + b"".join(w + ws.encode() for w, (_, ws) in zip(wire, items, strict=True))
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20))
    stream = XmlStream()
    events: list[StreamEvent] = []
    bounds = [0, *sorted(cuts), len(blob)]
    for start, end in itertools.pairwise(bounds):
        events += stream.receive_data(blob[start:end])
    received = [e for e in events if isinstance(e, ElementReceived)]
    assert [e.size for e in received] == [len(w) for w in wire]
    assert [e.element for e in received] == [parse_fragment(w) for w in wire]
    assert isinstance(events[0], StreamOpened)


def test_whitespace_keepalives_produce_no_events() -> None:
    stream = XmlStream()
    assert len(stream.receive_data(HEADER)) == 1
    for _ in range(100):
        assert stream.receive_data(b" ") == []
        assert stream.receive_data(b"\r\n") == []
    assert [type(e) for e in stream.receive_data(IQ)] == [ElementReceived]


def test_stanza_emitted_as_soon_as_complete() -> None:
    stream = XmlStream()
    stream.receive_data(HEADER)
    assert stream.receive_data(R[:-1]) == []
    assert stream.receive_data(R[-1:]) == [ElementReceived(Element("{urn:xmpp:sm:3}r"), len(R))]
    assert stream.receive_data(IQ[:-1]) == []
    (event,) = stream.receive_data(IQ[-1:])
    assert isinstance(event, ElementReceived)
    assert event.size == len(IQ)


def test_header_without_declaration_or_content_namespace() -> None:
    (opened,) = feed(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>")
    assert opened == StreamOpened({}, "")
    events = feed(b"<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:server'>")
    assert events == [StreamOpened({}, "jabber:server")]


def test_reset_starts_a_fresh_stream() -> None:
    stream = XmlStream()
    stream.receive_data(HEADER + b"<message><body>half")
    stream.reset()
    events = stream.receive_data(HEADER + IQ)
    assert isinstance(events[0], StreamOpened)
    assert isinstance(events[1], ElementReceived)
    assert events[1].size == len(IQ)


def test_error_is_sticky_until_reset() -> None:
    stream = XmlStream()
    stream.receive_data(HEADER)
    with pytest.raises(XmlStreamError) as first:
        stream.receive_data(b"<!-- no -->")
    with pytest.raises(XmlStreamError) as again:
        stream.receive_data(IQ)
    assert again.value is first.value
    stream.reset()
    assert len(stream.receive_data(HEADER + IQ)) == 2


def test_send_uses_the_sent_content_namespace() -> None:
    stream = XmlStream()
    header = stream.send(StreamOpened({"from": "example.com", "id": "abc"}, "jabber:server"))
    assert header.startswith(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' ")
    assert stream.send(E("{jabber:server}message")) == b"<message/>"
    assert stream.send(E("{jabber:client}message")) == b"<message xmlns='jabber:client'/>"
    assert stream.send(StreamClosed()) == STREAM_CLOSE


def test_stream_header_bytes() -> None:
    out = stream_header(
        {"from": "example.com", "id": "x'1", "to": None, "version": "1.0", XML_LANG: "en"}
    )
    assert out == (
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
        b" xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='x&apos;1'"
        b" version='1.0' xml:lang='en'>"
    )
    s2s = stream_header({"xmlns:db": "jabber:server:dialback"}, "jabber:server")
    assert b" xmlns:db='jabber:server:dialback'>" in s2s
    events = feed(out)
    assert events == [
        StreamOpened(
            {"from": "example.com", "id": "x'1", "version": "1.0", XML_LANG: "en"}, "jabber:client"
        )
    ]


def test_stream_error_bytes() -> None:
    assert stream_error("not-well-formed") == (
        b"<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"</stream:error>"
    )
    out = stream_error("policy-violation", "too <big>", "en")
    assert out == (
        b"<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>too &lt;big&gt;</text>"
        b"</stream:error>"
    )
    events = feed(HEADER + out)
    assert isinstance(events[1], ElementReceived)
    assert events[1].element.tag == f"{{{ns.STREAMS}}}error"
    with pytest.raises(ValueError, match="condition"):
        stream_error("made-up")


# -- hostile input: exact stream error conditions -----------------------------------------------

S = HEADER  # most cases start inside a valid stream

HOSTILE = [
    # not-well-formed (RFC 6120 §4.9.3.13)
    ("mismatched tag", S + b"<message><body></message>", "not-well-formed"),
    ("unquoted attribute", S + b"<message a=1/>", "not-well-formed"),
    ("duplicate attribute", S + b"<message a='1' a='2'/>", "not-well-formed"),
    (
        "same attribute via two prefixes",
        S + b"<m xmlns:p='u' xmlns:q='u' p:a='1' q:a='2'/>",
        "not-well-formed",
    ),
    ("char ref to NUL", S + b"<message>&#0;</message>", "not-well-formed"),
    ("char ref to control", S + b"<message>&#x1;</message>", "not-well-formed"),
    ("raw control char", S + b"<message>\x01</message>", "not-well-formed"),
    ("raw NUL", S + b"<message>\x00</message>", "not-well-formed"),
    ("]]> in text", S + b"<message>]]></message>", "not-well-formed"),
    ("unterminated reference", S + b"<message>&amp</message>", "not-well-formed"),
    ("junk before header", b"hello" + OPEN, "not-well-formed"),
    ("element after close", S + STREAM_CLOSE + b"<message/>", "not-well-formed"),
    # restricted-xml (RFC 6120 §11.1, §4.9.3.18)
    ("comment before header", b"<!-- hi -->" + OPEN, "restricted-xml"),
    ("comment between stanzas", S + b"<!-- hi -->", "restricted-xml"),
    ("comment in stanza", S + b"<message><!-- hi --></message>", "restricted-xml"),
    ("PI before header", b"<?xml version='1.0'?><?foo bar?>" + OPEN, "restricted-xml"),
    ("PI in stanza", S + b"<message><?foo bar?></message>", "restricted-xml"),
    ("xml-stylesheet PI", b"<?xml-stylesheet href='a'?>" + OPEN, "restricted-xml"),
    ("second XML declaration", S + b"<?xml version='1.0'?>", "restricted-xml"),
    ("doctype", b"<!DOCTYPE stream:stream>" + OPEN, "restricted-xml"),
    ("doctype internal subset", b"<!DOCTYPE s [<!ELEMENT s ANY>]>" + OPEN, "restricted-xml"),
    (
        "billion laughs",
        b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
        b"<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
        b"<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]>"
        + OPEN
        + b"<message>&lol3;</message>",
        "restricted-xml",
    ),
    (
        "external entity (XXE)",
        b"<!DOCTYPE s [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>"
        + OPEN
        + b"<message>&xxe;</message>",
        "restricted-xml",
    ),
    ("external DTD", b"<!DOCTYPE s SYSTEM 'http://evil.example/x.dtd'>" + OPEN, "restricted-xml"),
    ("undefined entity in text", S + b"<message>&nbsp;</message>", "restricted-xml"),
    ("undefined entity in attribute", S + b"<message a='&foo;'/>", "restricted-xml"),
    # invalid-namespace (RFC 6120 §4.8.1, §4.8.2)
    (
        "wrong stream namespace",
        b"<stream:stream xmlns:stream='urn:wrong' xmlns='jabber:client'>",
        "invalid-namespace",
    ),
    ("unqualified root", b"<stream xmlns='jabber:client'>", "invalid-namespace"),
    (
        "wrong root name",
        b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'>",
        "invalid-namespace",
    ),
    (
        "content namespace is the stream namespace",
        b"<stream xmlns='http://etherx.jabber.org/streams'>",
        "invalid-namespace",
    ),
    # bad-namespace-prefix (RFC 6120 §4.9.3.2)
    ("undeclared stream prefix", b"<stream:stream xmlns='jabber:client'>", "bad-namespace-prefix"),
    ("unbound element prefix", S + b"<foo:message/>", "bad-namespace-prefix"),
    ("unbound attribute prefix", S + b"<message foo:a='1'/>", "bad-namespace-prefix"),
    ("undeclared prefix", S + b"<message xmlns:x=''/>", "bad-namespace-prefix"),
    ("rebinding xml prefix", S + b"<message xmlns:xml='urn:nope'/>", "bad-namespace-prefix"),
    ("declaring xmlns prefix", S + b"<message xmlns:xmlns='urn:nope'/>", "bad-namespace-prefix"),
    # unsupported-encoding (RFC 6120 §11.6)
    (
        "latin-1 declared",
        b"<?xml version='1.0' encoding='ISO-8859-1'?>" + OPEN,
        "unsupported-encoding",
    ),
    ("utf-16 declared", b"<?xml version='1.0' encoding='UTF-16'?>" + OPEN, "unsupported-encoding"),
    ("utf-16 with BOM", HEADER.decode().encode("utf-16"), "unsupported-encoding"),
    (
        "latin-1 byte in text",
        S + b"<message><body>caf\xe9 au lait</body></message>",
        "unsupported-encoding",
    ),
    ("latin-1 byte in attribute", S + b"<message to='caf\xe9'/>", "unsupported-encoding"),
    ("latin-1 byte in name", S + b"<m\xe9ssage/>", "unsupported-encoding"),
    ("0xff byte", S + b"\xff", "unsupported-encoding"),
    ("overlong encoding", S + b"<message>\xc0\xaf</message>", "unsupported-encoding"),
    ("encoded surrogate", S + b"<message>\xed\xa0\x80</message>", "unsupported-encoding"),
    ("truncated sequence", S + b"<message>\xe2\x82</message>", "unsupported-encoding"),
    # bad-format (RFC 6120 §4.9.3.1): only whitespace may appear between stanzas
    ("text between stanzas", S + b"hello", "bad-format"),
]


@pytest.mark.parametrize(
    ("data", "condition"), [(d, c) for _, d, c in HOSTILE], ids=[i for i, _, _ in HOSTILE]
)
@pytest.mark.parametrize("chunk", [0, 1, 7])
def test_hostile_input(data: bytes, condition: str, chunk: int) -> None:
    err = error_of(data, chunk=chunk)
    assert err.condition == condition, err.text
    assert err.text


def test_valid_utf8_still_accepted_next_to_encoding_checks() -> None:
    events = feed(S + "<message><body>café ☕ 𝄞</body></message>".encode(), chunk=1)
    assert isinstance(events[1], ElementReceived)
    assert events[1].element.find("{jabber:client}body") == E(
        "{jabber:client}body", None, "café ☕ 𝄞"
    )


# -- limits: policy-violation --------------------------------------------------------------------


def _stanza_of_size(size: int) -> bytes:
    head, tail = b"<message><body>", b"</body></message>"
    return head + b"a" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("chunk", [0, 1000, 4096])
def test_stanza_size_limit_is_exact(chunk: int) -> None:
    limits = XmlLimits(max_stanza_bytes=5000)
    events = feed(S + _stanza_of_size(5000), XmlStream(limits), chunk)
    assert isinstance(events[-1], ElementReceived)
    assert events[-1].size == 5000
    err = error_of(S + _stanza_of_size(5001), limits, chunk)
    assert err.condition == "policy-violation"


def test_many_stanzas_each_under_the_limit() -> None:
    limits = XmlLimits(max_stanza_bytes=1000)
    blob = S + (_stanza_of_size(900) + b"\n") * 200
    events = feed(blob, XmlStream(limits), chunk=3000)
    assert len(events) == 201


def _endless(prefix: bytes, filler: bytes, chunk: int = 65536) -> Iterator[bytes]:
    yield S + prefix
    piece = filler * (chunk // len(filler))
    for _ in range(100 * 1024 * 1024 // len(piece)):  # 100 MB of it
        yield piece


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("prefix", "filler", "amplification"),
    [
        (b"<message><body>", b"a", 4),  # endless text
        (b"<message><body>", b"ab\n&amp;", 4),  # endless text in many small pieces
        (b"<message a='", b"x", 4),  # endless attribute value: one incomplete token
        (b"<message", b" ", 4),  # endless start tag
        # Endless tiny children: every 4-byte <y/> becomes an Element and an attribute dict, so
        # memory is a fixed multiple of the stanza limit (still bounded, not 100 MB).
        (b"<message><x/>", b"<y/>", 48),
    ],
    ids=["text", "text-pieces", "attribute", "start-tag", "children"],
)
def test_never_closing_stanza_is_cut_off_at_the_limit(
    prefix: bytes, filler: bytes, amplification: int
) -> None:
    limits = XmlLimits()
    stream = XmlStream(limits)
    fed = 0
    tracemalloc.start()
    try:
        with pytest.raises(XmlStreamError) as info:
            for chunk in _endless(prefix, filler):
                fed += len(chunk)
                stream.receive_data(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.condition == "policy-violation"
    assert limits.max_stanza_bytes < fed <= limits.max_stanza_bytes + 2 * 65536
    assert peak < amplification * limits.max_stanza_bytes


def test_never_closing_header_is_cut_off() -> None:
    stream = XmlStream(XmlLimits(max_stanza_bytes=10000))
    with pytest.raises(XmlStreamError) as info:
        stream.receive_data(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' a='")
        for _ in range(100):
            stream.receive_data(b"x" * 1000)
    assert info.value.condition == "policy-violation"


def _nested(depth: int) -> bytes:
    return b"<a>" * depth + b"</a>" * depth


def test_depth_limit() -> None:
    limits = XmlLimits(max_depth=5)
    assert len(feed(S + _nested(5), XmlStream(limits))) == 2
    assert error_of(S + _nested(6), limits).condition == "policy-violation"
    assert error_of(S + _nested(1000), limits, chunk=10).condition == "policy-violation"
    assert error_of(S + _nested(33)).condition == "policy-violation"
    assert len(feed(S + _nested(32))) == 2


def _attrs(count: int) -> bytes:
    return b"<message " + b" ".join(b"a%d='v'" % i for i in range(count)) + b"/>"


def test_attribute_count_limit() -> None:
    assert len(feed(S + _attrs(64))) == 2
    assert error_of(S + _attrs(65)).condition == "policy-violation"
    header_with_many = OPEN[:-1] + b" " + b" ".join(b"h%d='v'" % i for i in range(70)) + b">"
    assert error_of(header_with_many).condition == "policy-violation"


def test_attribute_value_limit_counts_utf8_bytes() -> None:
    limits = XmlLimits(max_attribute_bytes=300)
    ok = S + b"<message a='" + "é".encode() * 150 + b"'/>"
    assert len(feed(ok, XmlStream(limits))) == 2
    too_long = S + b"<message a='" + "é".encode() * 150 + b"x'/>"
    assert error_of(too_long, limits).condition == "policy-violation"
    nested = S + b"<message><x a='" + b"y" * 301 + b"'/></message>"
    assert error_of(nested, limits).condition == "policy-violation"


def test_whitespace_run_limit() -> None:
    limits = XmlLimits(max_text_bytes=1000)
    stream = XmlStream(limits)
    stream.receive_data(S + b" " * 900)
    stream.receive_data(IQ)  # a stanza resets the run
    stream.receive_data(b"\n" * 1000)
    with pytest.raises(XmlStreamError) as info:
        stream.receive_data(b"\t")
    assert info.value.condition == "policy-violation"


# -- releasing an idle parser ------------------------------------------------------------------


def feed_releasing(data: bytes, chunk: int) -> tuple[list[StreamEvent], int]:
    """Feed ``data`` in chunks, releasing the parser after each; events and releases made."""
    stream, events, released = XmlStream(), [], 0
    for i in range(0, len(data), chunk):
        events += stream.receive_data(data[i : i + chunk])
        released += stream.release()
    return events, released


@pytest.mark.parametrize("chunk", [1, 7, 64, len(SAMPLE)])
def test_release_between_reads_gives_same_events(chunk: int) -> None:
    events, released = feed_releasing(SAMPLE, chunk)
    assert events == feed(SAMPLE)
    if chunk < 8:
        assert released  # between stanzas at least once


def test_release_only_between_stanzas() -> None:
    stream = XmlStream()
    assert not stream.release()  # no header yet
    stream.receive_data(HEADER)
    assert stream.release()
    assert not stream.release()  # already released
    stream.receive_data(MESSAGE[:20])
    assert not stream.release()  # inside a stanza
    events = stream.receive_data(MESSAGE[20:] + b"<iq")
    assert [type(e) for e in events] == [ElementReceived]
    assert not stream.release()  # an incomplete token
    events = stream.receive_data(IQ[3:] + b"  ")
    assert stream.release()
    assert [(e.element.tag, e.size) for e in events if isinstance(e, ElementReceived)] == [
        ("{jabber:client}iq", len(IQ))
    ]
    assert stream.receive_data(STREAM_CLOSE) == [StreamClosed()]
    assert not stream.release()  # the stream has ended: nothing may follow


def test_release_keeps_prefixed_root_and_namespaces() -> None:
    header = (
        b"<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client'"
        b" xmlns:x='urn:x' to='a>b'>"
    )
    stream = XmlStream()
    (opened,) = stream.receive_data(header + b"\n")
    assert stream.release()
    (got,) = stream.receive_data(b"<message><x:y/></message>")
    assert isinstance(got, ElementReceived)
    assert got.element == E("{jabber:client}message", {}, E("{urn:x}y"))
    assert stream.release()
    assert stream.receive_data(b"</s:stream>") == [StreamClosed()]
    assert opened == StreamOpened({"to": "a>b"}, "jabber:client")


def test_released_parser_still_enforces_the_rules() -> None:
    stream = XmlStream()
    stream.receive_data(HEADER)
    assert stream.release()
    with pytest.raises(XmlStreamError) as info:
        stream.receive_data(b"<!-- no -->")
    assert info.value.condition == "restricted-xml"


def test_release_frees_the_parser_memory() -> None:
    tracemalloc.start()
    try:
        streams = [XmlStream() for _ in range(50)]
        for stream in streams:
            stream.receive_data(HEADER + IQ + MESSAGE)
        before = tracemalloc.get_traced_memory()[0]
        for stream in streams:
            assert stream.release()
        freed = before - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert freed / len(streams) > 4096
