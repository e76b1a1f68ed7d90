"""RFC 7622 JIDs: the examples of §3.5, normalisation, limits and the helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xes.jid import JID, InvalidJID, normalize_localpart

# RFC 7622 §3.5 "Examples": valid JIDs, with the prepared form we expect.
VALID = [
    ("juliet@example.com", JID("juliet", "example.com", None)),
    ("juliet@example.com/foo", JID("juliet", "example.com", "foo")),
    ("juliet@example.com/foo bar", JID("juliet", "example.com", "foo bar")),
    ("juliet@example.com/foo@bar", JID("juliet", "example.com", "foo@bar")),
    ("foo\\20bar@example.com", JID("foo\\20bar", "example.com", None)),
    ("fussball@example.com", JID("fussball", "example.com", None)),
    ("fußball@example.com", JID("fußball", "example.com", None)),
    ("π@example.com", JID("π", "example.com", None)),
    ("Σ@example.com/foo", JID("\u03c3", "example.com", "foo")),
    ("\u03c3@example.com/foo", JID("\u03c3", "example.com", "foo")),
    ("ς@example.com/foo", JID("ς", "example.com", "foo")),
    ("king@example.com/♚", JID("king", "example.com", "♚")),
    ("example.com", JID(None, "example.com", None)),
    ("example.com/foobar", JID(None, "example.com", "foobar")),
    ("a.example.com/b@example.net", JID(None, "a.example.com", "b@example.net")),
    # Case mapping and domain normalisation.
    ("Juliet@EXAMPLE.com/Balcony", JID("juliet", "example.com", "Balcony")),
    ("juliet@example.com./r", JID("juliet", "example.com", "r")),
    ("Café.EXAMPLE", JID(None, "café.example", None)),
    ("xn--caf-dma.example", JID(None, "café.example", None)),
    ("juliet@example。com", JID("juliet", "example.com", None)),  # ideographic full stop
    # Fullwidth letters (width mapping), in the domain and the localpart.
    ("\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", JID(None, "example.com", None)),
    ("\uff2a\uff35\uff2c\uff29\uff25\uff34@example.com", JID("juliet", "example.com", None)),
    # IP literals (RFC 7622 §3.2).
    ("juliet@192.0.2.1/r", JID("juliet", "192.0.2.1", "r")),
    ("juliet@[2001:DB8:0:0::1]", JID("juliet", "[2001:db8::1]", None)),
    ("[::1]/r", JID(None, "[::1]", "r")),
    # Only the first "/" starts the resource; only the first "@" before it ends the localpart.
    ("a@b/c/d@e", JID("a", "b", "c/d@e")),
    # OpaqueString keeps case and maps non-ASCII spaces to U+0020.
    ("a@b/Foo\u00a0Bar", JID("a", "b", "Foo Bar")),
]

# RFC 7622 §3.5 invalid examples, plus more malformed input.
INVALID = [
    '"juliet"@example.com',  # quotation marks forbidden in localpart
    "foo bar@example.com",  # space in localpart
    "@example.com/",  # empty localpart and resourcepart
    "henryⅣ@example.com",  # compatibility character (ROMAN NUMERAL FOUR)
    "♚@example.com",  # symbol in localpart
    "juliet@",  # empty domainpart
    "/foobar",  # empty domainpart
    "",
    "@example.com",
    "juliet@example.com/",
    "a:b@example.com",
    "a<b@example.com",
    "a&b@example.com",
    "a'b@example.com",
    ".",
    "example..com",
    "exa mple.com",
    "-example.com",
    "example-.com",
    "under_score.example",
    "a" * 64 + ".example",  # label longer than 63 octets
    "xn--abc.example",  # not valid punycode
    "xn--example.com",  # A-label of pure ASCII
    "xn--:-0ss.example",  # A-label decoding to a non-LDH ASCII character
    "café\uff20x.example",  # fullwidth "@" mapped by nameprep inside a non-ASCII label
    "café\uff0fx.example",  # fullwidth "/" likewise
    "ex\u2024ample.com",  # ONE DOT LEADER maps to "." inside a label
    "[::1",
    "[not-an-ip]",
    "[fe80::1%eth0]",
    "192.0.2.999",
    "juliet@example.com/\u0007",  # control character in resource
    "a\u0000@example.com",
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid(text: str, expected: JID) -> None:
    assert JID.parse(text) == expected


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidJID) as info:
        JID.parse(text)
    assert info.value.condition == "jid-malformed"
    assert isinstance(info.value, ValueError)


def test_str_round_trip() -> None:
    for text, expected in VALID:
        assert JID.parse(str(expected)) == expected, text
    assert str(JID.parse("Juliet@Example.COM/Balcony")) == "juliet@example.com/Balcony"
    assert str(JID.parse("example.com")) == "example.com"
    assert str(JID.parse("example.com/r")) == "example.com/r"


def test_bare_and_resource() -> None:
    full = JID.parse("juliet@example.com/balcony")
    assert not full.is_bare
    assert full.bare == JID("juliet", "example.com")
    assert full.bare.is_bare
    bare = full.bare
    assert bare.bare is bare
    assert bare.with_resource("Orchard\u00a0x") == JID("juliet", "example.com", "Orchard x")
    with pytest.raises(InvalidJID):
        bare.with_resource("")


def test_hashable_and_cached() -> None:
    a = JID.parse("Romeo@example.net/x")
    assert JID.parse("Romeo@example.net/x") is a
    assert {a: 1}[JID("romeo", "example.net", "x")] == 1


def test_from_parts() -> None:
    assert JID.from_parts("Juliet", "EXAMPLE.com", "r") == JID("juliet", "example.com", "r")
    assert JID.from_parts(None, "example.com") == JID(None, "example.com", None)
    with pytest.raises(InvalidJID):
        JID.from_parts("a@b", "example.com")
    with pytest.raises(InvalidJID):
        JID.from_parts("a", "")


def test_part_length_limits() -> None:
    assert JID.parse("a" * 1023 + "@example.com").local == "a" * 1023
    with pytest.raises(InvalidJID):
        JID.parse("a" * 1024 + "@example.com")
    assert JID.parse("example.com/" + "é" * 511).resource == "é" * 511  # 1022 bytes
    with pytest.raises(InvalidJID):
        JID.parse("example.com/" + "é" * 512)  # 1024 bytes
    long_domain = ".".join(["a" * 63] * 16)  # 1023 octets
    assert JID.parse(long_domain).domain == long_domain
    with pytest.raises(InvalidJID):
        JID.parse(long_domain + ".b")
    with pytest.raises(InvalidJID):
        JID.parse("x" * 100_000)


def test_normalize_localpart() -> None:
    assert normalize_localpart("Juliet") == "juliet"
    assert normalize_localpart("\u03a3\u0391\u039c") == "\u03c3\u03b1\u03bc"
    for bad in ["", "foo bar", "a@b", "a/b", "henryⅣ", "a" * 1024]:
        with pytest.raises(InvalidJID):
            normalize_localpart(bad)


@given(st.text(max_size=40))
def test_parse_never_raises_anything_else(text: str) -> None:
    try:
        jid = JID.parse(text)
    except InvalidJID:
        return
    # Preparation is idempotent: the canonical string parses to the same JID.
    assert JID.parse(str(jid)) == jid
