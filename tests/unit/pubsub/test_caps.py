"""XEP-0115 entity capabilities: the specification's examples verify; tampering does not."""

from __future__ import annotations

import base64
import hashlib

import pytest

from xes.pubsub import caps
from xes.xml import E, Element, ns, parse_fragment

DISCO = "{%s}query" % ns.DISCO_INFO
FEATURE = "{%s}feature" % ns.DISCO_INFO
IDENTITY = "{%s}identity" % ns.DISCO_INFO

# XEP-0115 §5.2 (simple generation example).
SIMPLE = """
<query xmlns='http://jabber.org/protocol/disco#info'
       node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>
  <identity category='client' name='Exodus 0.9.1' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
</query>
"""
SIMPLE_VER = "QgayPKawpkPSDYmwT/WM94uAlu0="
SIMPLE_S = (
    "client/pc//Exodus 0.9.1<"
    "http://jabber.org/protocol/caps<"
    "http://jabber.org/protocol/disco#info<"
    "http://jabber.org/protocol/disco#items<"
    "http://jabber.org/protocol/muc<"
)

# XEP-0115 §5.3 (complex generation example), elements deliberately out of order.
COMPLEX = """
<query xmlns='http://jabber.org/protocol/disco#info'
       node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='\u03a8 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'>
      <value>urn:xmpp:dataforms:softwareinfo</value>
    </field>
    <field var='ip_version' type='text-multi'>
      <value>ipv4</value>
      <value>ipv6</value>
    </field>
    <field var='os'>
      <value>Mac</value>
    </field>
    <field var='os_version'>
      <value>10.5.1</value>
    </field>
    <field var='software'>
      <value>Psi</value>
    </field>
    <field var='software_version'>
      <value>0.11</value>
    </field>
  </x>
</query>
"""
COMPLEX_VER = "q07IKJEyjvHSyhy//CH0CxmKi8w="
COMPLEX_S = (
    "client/pc/el/\u03a8 0.11<client/pc/en/Psi 0.11<"
    "http://jabber.org/protocol/caps<"
    "http://jabber.org/protocol/disco#info<"
    "http://jabber.org/protocol/disco#items<"
    "http://jabber.org/protocol/muc<"
    "urn:xmpp:dataforms:softwareinfo<"
    "ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<software_version<0.11<"
)


def parse(xml: str) -> Element:
    return parse_fragment(xml.strip().encode())


def with_children(query: Element, *extra: Element) -> Element:
    return query.append(*extra)


def without(query: Element, predicate) -> Element:  # type: ignore[no-untyped-def]
    kept = tuple(c for c in query.children if not (isinstance(c, Element) and predicate(c)))
    return query.replace(children=kept)


def b64(algo: str, s: str) -> str:
    return base64.b64encode(hashlib.new(algo, s.encode()).digest()).decode()


# -- the examples --------------------------------------------------------------------------------


def test_simple_example_string_and_hash() -> None:
    query = parse(SIMPLE)
    assert caps.verification_string(query) == SIMPLE_S
    assert caps.verify(query, "sha-1", SIMPLE_VER)


def test_complex_example_string_and_hash() -> None:
    query = parse(COMPLEX)
    assert caps.verification_string(query) == COMPLEX_S
    assert caps.verify(query, "sha-1", COMPLEX_VER)


def test_hash_name_is_case_insensitive() -> None:
    assert caps.verify(parse(SIMPLE), "SHA-1", SIMPLE_VER)


@pytest.mark.parametrize("name", ["sha-224", "sha-256", "sha-384", "sha-512"])
def test_other_iana_hashes(name: str) -> None:
    ver = b64(caps.HASHES[name], SIMPLE_S)
    assert caps.verify(parse(SIMPLE), name, ver)
    assert not caps.verify(parse(SIMPLE), name, SIMPLE_VER)


def test_the_order_of_children_does_not_matter() -> None:
    query = parse(COMPLEX)
    shuffled = query.replace(children=tuple(reversed(query.elements())))
    assert caps.verify(shuffled, "sha-1", COMPLEX_VER)


def test_form_fields_and_values_are_sorted() -> None:
    query = parse(COMPLEX)
    form = query.find("{%s}x" % ns.DATA_FORMS)
    assert form is not None
    fields = form.elements()
    reordered = form.replace(
        children=tuple(f.replace(children=tuple(reversed(f.elements()))) for f in reversed(fields))
    )
    swapped = without(query, lambda c: c.tag == form.tag).append(reordered)
    assert caps.verify(swapped, "sha-1", COMPLEX_VER)


# -- tampering -----------------------------------------------------------------------------------


def test_an_extra_feature_fails() -> None:
    query = with_children(parse(SIMPLE), E(FEATURE, {"var": "urn:xmpp:ping"}))
    assert caps.verification_string(query) is not None
    assert not caps.verify(query, "sha-1", SIMPLE_VER)


def test_a_missing_feature_fails() -> None:
    query = without(parse(SIMPLE), lambda c: c.get("var") == "http://jabber.org/protocol/muc")
    assert not caps.verify(query, "sha-1", SIMPLE_VER)


def test_a_changed_identity_fails() -> None:
    query = without(parse(SIMPLE), lambda c: c.tag == IDENTITY)
    query = query.append(E(IDENTITY, {"category": "client", "type": "pc", "name": "Exodus 1"}))
    assert not caps.verify(query, "sha-1", SIMPLE_VER)


def test_a_duplicate_feature_is_ill_formed() -> None:
    """§5.4 step 3.4: the duplicate cannot be hidden, even though S without it would match."""
    query = with_children(parse(SIMPLE), E(FEATURE, {"var": "http://jabber.org/protocol/muc"}))
    assert caps.verification_string(query) is None
    assert not caps.verify(query, "sha-1", SIMPLE_VER)


def test_a_duplicate_identity_is_ill_formed() -> None:
    """§5.4 step 3.3: same category/type/lang/name twice."""
    ident = E(IDENTITY, {"category": "client", "name": "Exodus 0.9.1", "type": "pc"})
    query = with_children(parse(SIMPLE), ident)
    assert caps.verification_string(query) is None
    assert not caps.verify(query, "sha-1", SIMPLE_VER)


def test_identities_differing_only_in_lang_are_not_duplicates() -> None:
    assert caps.verification_string(parse(COMPLEX)) is not None


def test_a_form_without_form_type_fails() -> None:
    query = parse(COMPLEX)
    form = query.find("{%s}x" % ns.DATA_FORMS)
    assert form is not None
    stripped = without(form, lambda f: f.get("var") == "FORM_TYPE")
    query = without(query, lambda c: c.tag == form.tag).append(stripped)
    assert not caps.verify(query, "sha-1", COMPLEX_VER)


def test_an_added_form_without_form_type_is_ignored() -> None:
    """XEP-0115 §5.4 (v1.5): such a form is left out of the string, not fatal."""
    form = E(
        "{%s}x" % ns.DATA_FORMS,
        {"type": "result"},
        E("{%s}field" % ns.DATA_FORMS, {"var": "os"}, E("{%s}value" % ns.DATA_FORMS, None, "Mac")),
    )
    query = with_children(parse(SIMPLE), form)
    assert caps.verify(query, "sha-1", SIMPLE_VER)


def test_a_form_type_with_two_values_is_ill_formed() -> None:
    value = "{%s}value" % ns.DATA_FORMS
    form = E(
        "{%s}x" % ns.DATA_FORMS,
        {"type": "result"},
        E(
            "{%s}field" % ns.DATA_FORMS,
            {"var": "FORM_TYPE", "type": "hidden"},
            E(value, None, "urn:a"),
            E(value, None, "urn:b"),
        ),
    )
    assert caps.verification_string(with_children(parse(SIMPLE), form)) is None


def test_two_forms_of_the_same_form_type_are_ill_formed() -> None:
    query = parse(COMPLEX)
    form = query.find("{%s}x" % ns.DATA_FORMS)
    assert form is not None
    assert caps.verification_string(query.append(form)) is None


def test_a_changed_form_value_fails() -> None:
    assert not caps.verify(parse(COMPLEX.replace(">Mac<", ">Linux<")), "sha-1", COMPLEX_VER)


@pytest.mark.parametrize("name", ["md5", "sha1", "", "sha-3", "shake128"])
def test_an_unknown_hash_name_fails(name: str) -> None:
    assert not caps.verify(parse(SIMPLE), name, SIMPLE_VER)


def test_a_wrong_ver_fails() -> None:
    assert not caps.verify(parse(SIMPLE), "sha-1", COMPLEX_VER)
    assert not caps.verify(parse(SIMPLE), "sha-1", "")


def test_features() -> None:
    query = with_children(parse(SIMPLE), E(FEATURE, {"var": "urn:xmpp:ping"}))
    assert caps.features(query) == [
        "http://jabber.org/protocol/caps",
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items",
        "http://jabber.org/protocol/muc",
        "urn:xmpp:ping",
    ]


# -- presence and +notify ------------------------------------------------------------------------


def presence(**attrs: str) -> Element:
    c = E("{%s}c" % ns.CAPS, attrs) if attrs else None
    return E("{jabber:client}presence", None, c)


def test_advertised_with_hash() -> None:
    p = presence(hash="sha-1", node="http://code.google.com/p/exodus", ver=SIMPLE_VER)
    assert caps.advertised(p) == ("sha-1", "http://code.google.com/p/exodus", SIMPLE_VER)


def test_advertised_from_the_wire() -> None:
    p = parse(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1'"
        f" node='http://psi-im.org' ver='{COMPLEX_VER}'/></presence>"
    )
    assert caps.advertised(p) == ("sha-1", "http://psi-im.org", COMPLEX_VER)


def test_legacy_caps_without_hash_are_not_usable() -> None:
    assert caps.advertised(presence(node="http://psi-im.org", ver="0.11", ext="cs")) is None


@pytest.mark.parametrize(
    "attrs",
    [
        {"hash": "sha-1", "node": "n"},
        {"hash": "sha-1", "ver": SIMPLE_VER},
        {"hash": "", "node": "n", "ver": SIMPLE_VER},
        {"hash": "sha-1", "node": "n", "ver": "A" * 129},
    ],
)
def test_incomplete_or_oversized_caps_are_not_usable(attrs: dict[str, str]) -> None:
    assert caps.advertised(presence(**attrs)) is None


def test_no_caps_element() -> None:
    assert caps.advertised(presence()) is None
    other = E("{jabber:client}presence", None, E("{urn:other}c", {"hash": "sha-1", "ver": "v"}))
    assert caps.advertised(other) is None


def test_notify_nodes() -> None:
    features = [
        "http://jabber.org/protocol/caps",
        "http://jabber.org/protocol/geoloc+notify",
        "http://jabber.org/protocol/mood",
        "urn:xmpp:avatar:metadata+notify",
    ]
    assert caps.notify_nodes(features) == [
        "http://jabber.org/protocol/geoloc",
        "urn:xmpp:avatar:metadata",
    ]
    assert caps.notify_nodes([]) == []
