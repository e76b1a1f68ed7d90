"""Immutable XML elements and their serializer.

An :class:`Element` is what the stream parser produces for every stanza and what features build
for every reply, so it is deliberately small: a Clark-notation tag (``{jabber:client}message``),
an attribute dict and a tuple of children (text nodes are plain ``str``). Elements are immutable
by convention: the helpers that "change" one return a new Element, and code must never mutate
``attrs`` in place, because parsed stanzas are shared between the router, the event log and the
outbound queues of several sessions.

:func:`serialize` is on the hot path (every stanza a session sends), so it writes into one list
of string parts and joins once, and it only escapes strings that contain something to escape.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from xes.xml import ns

_XML_PREFIX_NS = ns.XML
_STREAMS_NS = ns.STREAMS


@dataclass(frozen=True, slots=True)
class Element:
    """One XML element: tag in Clark notation, attributes, children.

    Namespaced attributes are keyed in Clark notation too (``xml:lang`` is
    ``{http://www.w3.org/XML/1998/namespace}lang``). Adjacent text nodes produced by the parser
    are merged into one ``str``. Elements compare by value; they are not hashable (``attrs`` is a
    dict).
    """

    tag: str
    """Clark notation: ``{namespace}local``, or just ``local`` for an element in no namespace."""
    attrs: dict[str, str] = field(default_factory=dict)
    """Attribute values by name; never mutate (see the module docstring)."""
    children: tuple[Element | str, ...] = ()
    """Child elements and text nodes, in document order."""

    @property
    def name(self) -> str:
        """Local name: ``message`` for ``{jabber:client}message``."""
        tag = self.tag
        return tag[tag.rfind("}") + 1 :]

    @property
    def ns(self) -> str:
        """Namespace name, or ``""`` for an element in no namespace."""
        tag = self.tag
        if tag[:1] != "{":
            return ""
        return tag[1 : tag.rfind("}")]

    @property
    def text(self) -> str:
        """Concatenated direct text children (not descendants), ``""`` if there are none."""
        children = self.children
        if len(children) == 1:
            only = children[0]
            return only if isinstance(only, str) else ""
        return "".join([c for c in children if isinstance(c, str)])

    def get(self, attr: str, default: str | None = None) -> str | None:
        """Attribute value, or ``default`` when the attribute is absent."""
        return self.attrs.get(attr, default)

    def find(self, tag: str) -> Element | None:
        """First direct child element whose Clark tag is ``tag``."""
        for child in self.children:
            if isinstance(child, Element) and child.tag == tag:
                return child
        return None

    def find_all(self, tag: str) -> list[Element]:
        """All direct child elements whose Clark tag is ``tag``, in document order."""
        return [c for c in self.children if isinstance(c, Element) and c.tag == tag]

    def elements(self) -> list[Element]:
        """Direct child elements, without the text nodes."""
        return [c for c in self.children if isinstance(c, Element)]

    def iter_elements(self) -> Iterator[Element]:
        """Direct child elements, lazily."""
        for child in self.children:
            if isinstance(child, Element):
                yield child

    def replace(self, **changes: Any) -> Element:
        """A copy with the given fields (``tag``, ``attrs``, ``children``) replaced."""
        return dataclasses.replace(self, **changes)

    def with_attrs(
        self, attrs: Mapping[str, str | None] | None = None, /, **kw: str | None
    ) -> Element:
        """A copy with attributes set; a value of ``None`` removes that attribute.

        Keyword names cover plain attributes (``with_attrs(type="result")``); names that are not
        identifiers go in the mapping or via ``**{"from": ...}``.
        """
        new = dict(self.attrs)
        for updates in (attrs or {}, kw):
            for key, value in updates.items():
                if value is None:
                    new.pop(key, None)
                else:
                    new[key] = value
        return Element(self.tag, new, self.children)

    def set_attr(self, name: str, value: str | None) -> Element:
        """A copy with one attribute set, or removed when ``value`` is ``None``."""
        return self.with_attrs({name: value})

    def append(self, *children: Element | str) -> Element:
        """A copy with ``children`` added after the existing ones."""
        return Element(self.tag, self.attrs, self.children + children)


def E(
    tag: str,
    attrs: Mapping[str, str | None] | None = None,
    *children: Element | str | None,
) -> Element:
    """Build an Element: ``E("{jabber:client}iq", {"type": "result", "id": "1"}, child)``.

    Attributes whose value is ``None`` and children that are ``None`` or ``""`` are left out, so
    optional parts can be written inline.
    """
    clean_attrs = {k: v for k, v in attrs.items() if v is not None} if attrs else {}
    kept = tuple(c for c in children if c is not None and c != "")
    return Element(tag, clean_attrs, kept)


# -- serialization ---------------------------------------------------------------------------

# XML 1.0 §2.2 Char excludes C0 controls other than TAB/LF/CR, surrogates and U+FFFE/U+FFFF.
# RFC 6120 §11.1 forbids sending them; they cannot come in through the parser, but a string built
# in code (or decoded with surrogateescape) could hold one, and emitting it would make the peer
# close the stream. They are replaced by U+FFFD.
_NOT_XML_CHAR = "\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff"
_INVALID = re.compile(f"[{_NOT_XML_CHAR}]")
_TEXT_SPECIAL = re.compile(f"[&<>\r{_NOT_XML_CHAR}]")
_ATTR_SPECIAL = re.compile(f"[&<>\"'\t\n\r{_NOT_XML_CHAR}]")


def escape_text(text: str) -> str:
    """Escape character data: ``& < >`` and CR (which a parser would turn into LF)."""
    if _TEXT_SPECIAL.search(text) is None:
        return text
    if _INVALID.search(text) is not None:
        text = _INVALID.sub("\ufffd", text)
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def escape_attr(value: str) -> str:
    """Escape an attribute value for either quote style.

    TAB, LF and CR become character references: attribute-value normalization (XML 1.0 §3.3.3)
    would otherwise turn them into spaces on the receiving side.
    """
    if _ATTR_SPECIAL.search(value) is None:
        return value
    if _INVALID.search(value) is not None:
        value = _INVALID.sub("\ufffd", value)
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


def write_attrs(attrs: Mapping[str, str], out: Callable[[str], object]) -> None:
    """Write `` name='value'`` pairs; Clark-notation names get a prefix.

    ``xml:lang`` and friends use the predeclared ``xml`` prefix (Namespaces in XML §3); any
    other namespace gets a generated ``nsN`` prefix declared on the same element.
    """
    generated = 0
    for key, value in attrs.items():
        if key[:1] != "{":
            out(f" {key}='{escape_attr(value)}'")
            continue
        cut = key.rfind("}")
        uri, local = key[1:cut], key[cut + 1 :]
        if uri == _XML_PREFIX_NS:
            out(f" xml:{local}='{escape_attr(value)}'")
        else:
            prefix = f"ns{generated}"
            generated += 1
            out(f" xmlns:{prefix}='{escape_attr(uri)}' {prefix}:{local}='{escape_attr(value)}'")


def _write(
    el: Element, default_ns: str, out: Callable[[str], object], stream_declared: bool
) -> None:
    tag = el.tag
    if tag[:1] == "{":
        cut = tag.rfind("}")
        uri, local = tag[1:cut], tag[cut + 1 :]
    else:
        uri, local = "", tag
    if uri == _STREAMS_NS:
        # Stream-level elements (<stream:features/>, <stream:error/>) keep the conventional
        # prefix; some deployed clients match on it (RFC 6120 §4.8.5). The default namespace
        # in scope is unchanged by a prefixed element.
        qname = "stream:" + local
        if stream_declared:
            out("<" + qname)
        else:
            out(f"<{qname} xmlns:stream='{_STREAMS_NS}'")
            stream_declared = True
    else:
        qname = local
        if uri != default_ns:
            # Declare only where the namespace changes (RFC 6120 §4.8.4); xmlns='' undeclares.
            out(f"<{local} xmlns='{escape_attr(uri)}'")
            default_ns = uri
        else:
            out("<" + local)
    if el.attrs:
        write_attrs(el.attrs, out)
    children = el.children
    if not children:
        out("/>")
        return
    out(">")
    for child in children:
        if isinstance(child, str):
            out(escape_text(child))
        else:
            _write(child, default_ns, out, stream_declared)
    out(f"</{qname}>")


def serialize(
    el: Element, default_ns: str = ns.CLIENT, *, stream_prefix_declared: bool = True
) -> bytes:
    """UTF-8 bytes of ``el`` as it is written inside an XMPP stream.

    ``default_ns`` is the stream's content namespace (RFC 6120 §4.8.2), already declared by the
    stream header, so an element in that namespace carries no ``xmlns``; other namespaces are
    declared where they change from the parent. Elements in the streams namespace are written
    with the ``stream:`` prefix, which the stream header declares; pass
    ``stream_prefix_declared=False`` to declare it on the element itself (standalone documents,
    RFC 7395 framing).
    """
    parts: list[str] = []
    _write(el, default_ns, parts.append, stream_prefix_declared)
    return "".join(parts).encode("utf-8")
