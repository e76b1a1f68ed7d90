"""Element helpers, the E builder, serialize() and its round trip through parse_fragment()."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xes.xml import E, Element, XmlLimits, XmlStreamError, ns, parse_fragment, serialize

XML_LANG = f"{{{ns.XML}}}lang"


def test_accessors() -> None:
    body = E("{jabber:client}body", None, "hi")
    msg = E(
        "{jabber:client}message",
        {"to": "juliet@example.com", "type": "chat", XML_LANG: "en"},
        body,
        E("{urn:xmpp:receipts}request"),
        E("{jabber:client}body", None, "second"),
    )
    assert msg.name == "message"
    assert msg.ns == "jabber:client"
    assert msg.get("to") == "juliet@example.com"
    assert msg.get("from") is None
    assert msg.get("from", "x") == "x"
    assert msg.get(XML_LANG) == "en"
    assert msg.find("{jabber:client}body") is body
    assert msg.find("{jabber:client}subject") is None
    assert [b.text for b in msg.find_all("{jabber:client}body")] == ["hi", "second"]
    assert [e.name for e in msg.elements()] == ["body", "request", "body"]
    assert [e.name for e in msg.iter_elements()] == ["body", "request", "body"]
    assert msg.text == ""
    assert body.text == "hi"


def test_no_namespace_and_mixed_text() -> None:
    el = Element("plain", {}, ("a", Element("{urn:x}b"), "c"))
    assert el.ns == ""
    assert el.name == "plain"
    assert el.text == "ac"
    assert Element("{urn:x}only", {}, (Element("x"),)).text == ""


def test_builder_drops_none() -> None:
    el = E("{jabber:client}iq", {"type": "result", "to": None}, None, "", "t", None)
    assert el.attrs == {"type": "result"}
    assert el.children == ("t",)


def test_changes_return_new_elements() -> None:
    el = E("{jabber:client}presence", {"to": "a@b", "id": "1"})
    stamped = el.with_attrs(**{"from": "c@d/e", "to": None})
    assert stamped.attrs == {"id": "1", "from": "c@d/e"}
    assert el.attrs == {"to": "a@b", "id": "1"}
    assert el.with_attrs({XML_LANG: "de"}, id="2").attrs == {"to": "a@b", "id": "2", XML_LANG: "de"}
    assert el.set_attr("id", None).attrs == {"to": "a@b"}
    assert el.set_attr("type", "probe").get("type") == "probe"
    child = E("{urn:xmpp:delay}delay")
    grown = el.append(child, "x")
    assert grown.children == (child, "x")
    assert el.children == ()
    assert el.replace(tag="{jabber:client}message").name == "message"


def test_frozen_and_unhashable() -> None:
    el = E("{jabber:client}message")
    with pytest.raises(dataclasses.FrozenInstanceError):
        el.tag = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(el)
    assert el == E("{jabber:client}message")
    assert el != E("{jabber:client}message", {"a": "1"})


# -- serialize ---------------------------------------------------------------------------------


def test_namespaces_declared_only_where_they_change() -> None:
    el = E(
        "{jabber:client}iq",
        {"type": "result", "id": "1"},
        E("{urn:xmpp:ping}ping", None, E("{urn:xmpp:ping}inner"), E("{jabber:client}back")),
        E("{jabber:client}same"),
        E("nons"),
    )
    assert serialize(el) == (
        b"<iq type='result' id='1'><ping xmlns='urn:xmpp:ping'><inner/>"
        b"<back xmlns='jabber:client'/></ping><same/><nons xmlns=''/></iq>"
    )
    assert serialize(el, default_ns="jabber:server").startswith(b"<iq xmlns='jabber:client' ")
    assert serialize(E("top"), default_ns="") == b"<top/>"


def test_attribute_namespaces() -> None:
    el = E("{jabber:client}message", {XML_LANG: "en", "{urn:a}x": "1", "{urn:b}y": "2"})
    out = serialize(el)
    assert out == (
        b"<message xml:lang='en' xmlns:ns0='urn:a' ns0:x='1' xmlns:ns1='urn:b' ns1:y='2'/>"
    )
    assert parse_fragment(out) == el


def test_escaping() -> None:
    el = E("{jabber:client}body", {"a": "<\"'&>\t\n\r"}, "<&>]]>\r\n")
    out = serialize(el)
    assert out == (
        b"<body a='&lt;&quot;&apos;&amp;&gt;&#9;&#10;&#13;'>&lt;&amp;&gt;]]&gt;&#13;\n</body>"
    )
    assert parse_fragment(out) == el


def test_non_xml_characters_are_never_emitted() -> None:
    bad = "a\x00b\x01\x08\x0b\x0c\x1f\ud800\udfff\ufffe\uffffz"
    out = serialize(E("{jabber:client}body", {"v": bad}, bad))
    for ch in "\x00\x01\x08\x0b\x0c\x1f":
        assert ch.encode() not in out
    el = parse_fragment(out)
    expected = "a\ufffdb" + "\ufffd" * 9 + "z"
    assert el.text == expected
    assert el.get("v") == expected


def test_utf8_output() -> None:
    assert serialize(E("{jabber:client}body", None, "Grüße ♚ 𝄞")) == (
        "<body>Grüße ♚ 𝄞</body>".encode()
    )


def test_stream_namespace_prefix() -> None:
    features = E(
        f"{{{ns.STREAMS}}}features",
        None,
        E(f"{{{ns.BIND}}}bind"),
        E(f"{{{ns.STREAMS}}}error", None, E("{jabber:client}x")),
    )
    assert serialize(features) == (
        b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
        b"<stream:error><x/></stream:error></stream:features>"
    )
    standalone = serialize(features, stream_prefix_declared=False)
    assert standalone.startswith(
        b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind "
    )
    assert standalone.count(b"xmlns:stream") == 1
    assert parse_fragment(standalone) == features
    assert parse_fragment(serialize(features)) == features


# -- parse_fragment ------------------------------------------------------------------------------


def test_parse_fragment_default_namespace() -> None:
    assert parse_fragment(b"<iq type='get'/>").tag == "{jabber:client}iq"
    assert parse_fragment(b"<iq type='get'/>", default_ns="").tag == "iq"
    assert parse_fragment(b"<x xmlns='urn:x'><y/></x>").children == (Element("{urn:x}y"),)


def test_parse_fragment_accepts_xml_declaration() -> None:
    el = parse_fragment(b"<?xml version='1.0' encoding='UTF-8'?>\n<a xmlns='urn:a'>t</a>")
    assert el == Element("{urn:a}a", {}, ("t",))


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<a/><b/>", "bad-format"),
        (b"", "bad-format"),
        (b"<a>", "not-well-formed"),
        (b"<a><!-- c --></a>", "restricted-xml"),
        (b"<a>&ent;</a>", "restricted-xml"),
        (b"<p:a/>", "bad-namespace-prefix"),
    ],
)
def test_parse_fragment_rejects(data: bytes, condition: str) -> None:
    with pytest.raises(XmlStreamError) as info:
        parse_fragment(data)
    assert info.value.condition == condition


# -- round trip (Hypothesis) ---------------------------------------------------------------------


def _is_xml_char(c: str) -> bool:
    return c in "\t\n\r" or ("\x20" <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd") or c > "\uffff"


XML_TEXT = st.text(st.characters(blacklist_categories=("Cs",)).filter(_is_xml_char), max_size=12)
SPECIALS = st.text(st.sampled_from("<>&\"'\r\n\t ]]a\u00e9\U0001d11e"), max_size=8)
VALUES = st.one_of(XML_TEXT, SPECIALS)
NAMESPACES = st.sampled_from(
    ["jabber:client", "urn:xmpp:ping", "", ns.STREAMS, "urn:odd&<'\"chars", "http://a/b?c=d#e"]
)
LOCALS = st.sampled_from(["message", "body", "x", "a-b.c_d", "é"])
ATTR_NAMES = st.sampled_from(["a", "type", "id", XML_LANG, "{urn:x}b", "{urn:odd&'}c"])


def _tag(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}" if namespace else local


def _elements(children: st.SearchStrategy[tuple[Element | str, ...]]) -> st.SearchStrategy[Element]:
    return st.builds(
        lambda n, loc, attrs, kids: Element(_tag(n, loc), attrs, kids),
        NAMESPACES,
        LOCALS,
        st.dictionaries(ATTR_NAMES, VALUES, max_size=4),
        children,
    )


def _normalized(el: Element) -> Element:
    """What a parser gives back: adjacent text merged, empty text dropped."""
    out: list[Element | str] = []
    for child in el.children:
        if isinstance(child, Element):
            out.append(_normalized(child))
        elif child:
            if out and isinstance(out[-1], str):
                out[-1] += child
            else:
                out.append(child)
    return Element(el.tag, el.attrs, tuple(out))


TREES = st.recursive(
    _elements(st.just(())),
    lambda inner: _elements(st.lists(st.one_of(inner, VALUES), max_size=4).map(tuple)),
    max_leaves=12,
)


@given(TREES, st.sampled_from(["jabber:client", "jabber:server", ""]))
def test_round_trip(el: Element, default_ns: str) -> None:
    data = serialize(el, default_ns)
    assert parse_fragment(data, default_ns) == _normalized(el)
    standalone = serialize(el, default_ns, stream_prefix_declared=False)
    assert parse_fragment(standalone, default_ns) == _normalized(el)


@given(st.text(), st.text())
def test_any_string_serializes_to_well_formed_xml(text: str, value: str) -> None:
    el = parse_fragment(serialize(E("{jabber:client}body", {"v": value}, text)))
    assert "\x00" not in el.text
    assert len(el.text) == len(text)
    assert len(el.get("v") or "") == len(value)


def test_parse_fragment_size_limit_fits_the_data() -> None:
    # A stored stanza may grow on re-serialization (CDATA comes back escaped); it is already in
    # memory, so only explicit limits cap its size.
    big = b"<message><body>" + b"&lt;" * 100_000 + b"</body></message>"
    assert len(parse_fragment(big).children[0].text) == 100_000  # type: ignore[union-attr]
    with pytest.raises(XmlStreamError) as info:
        parse_fragment(big, limits=XmlLimits(max_stanza_bytes=1000))
    assert info.value.condition == "policy-violation"
