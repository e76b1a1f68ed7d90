"""RFC 7395 framing: XMPP over WebSocket as the TCP stream the session already speaks.

Over WebSocket every message is one complete XML element: the stream is opened with
``<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>`` and closed with ``<close/>`` instead of
an unclosed ``<stream:stream>`` root, and no element may rely on a prefix or default namespace
declared by an enclosing stream. Rather than a second session implementation, this module
translates in both directions, so :class:`~xes.session.c2s.C2SProtocol` (SASL, bind, XEP-0198,
everything) runs unchanged:

* inbound, ``<open/>`` becomes the ``<stream:stream>`` header it stands for and ``<close/>`` its
  end tag; every other message is passed through as stream content (the session's parser and
  its limits judge it, exactly as for TCP);
* outbound, the bytes the session writes are cut at top-level element boundaries; the header
  becomes ``<open/>``, the end tag ``<close/>``, ``<stream:features>``/``<stream:error>`` are
  written unprefixed in the streams namespace, stanzas get the ``jabber:client`` namespace they
  inherited from the stream, and whitespace keepalives are dropped (WebSocket has pings).

Sans-IO: it knows nothing of sockets or of wsproto; :mod:`xes.http.websocket` feeds it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from defusedxml import ElementTree as SafeET

from xes.xml import ns

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
MAX_OPEN_BYTES = 4096
"""An ``<open/>`` or ``<close/>`` is a few hundred bytes; anything bigger is not one."""

TAG = re.compile(
    rb"<(?P<end>/)?(?P<name>[^\s/>]+)(?P<attrs>(?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(?P<empty>/)?>"
)
"""A start, end or empty-element tag. Quoted attribute values may hold ``>``; text between
tags never holds ``<`` (it is escaped), so the next ``<`` always starts markup."""
_ATTR = re.compile(rb"""\s([^\s=]+)\s*=\s*(?:'[^']*'|"[^"]*")""")
_STREAM_PREFIX = b"stream:"


class FramingError(Exception):
    """The client broke RFC 7395 framing (the first message is not ``<open/>``, or one is
    not well-formed); carries the stream error condition to answer with."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


@dataclass
class ElementSplitter:
    """Cuts the bytes a session writes into whole top-level elements (server to client).

    Web transports carry elements, not a byte stream: WebSocket one per message, BOSH several
    per ``<body/>``. What each element becomes is the subclass's choice (the hooks below); the
    cutting is shared so a partial write, a quoted ``>`` or a keepalive is handled once.
    """

    closed: bool = False
    """The stream's end tag went out: nothing more is written."""
    _pending: bytearray = field(default_factory=bytearray)
    _depth: int = 0
    _start: int = 0
    _scan: int = 0

    def on_header(self, attrs: bytes) -> str | None:
        """The session's ``<stream:stream>`` header (its attributes): what to pass on."""
        raise NotImplementedError

    def on_end(self) -> str | None:
        """The session's ``</stream:stream>``: what to pass on."""
        raise NotImplementedError

    def on_element(self, element: bytes) -> str:
        """One complete top-level element, as the session wrote it."""
        return top_level(element)

    def outbound(self, data: bytes) -> list[str]:
        """What to pass on for what the session wrote (whole elements only; a partial one
        waits for the rest)."""
        if self.closed:
            return []
        buf = self._pending
        buf += data
        out: list[str] = []
        pos = self._scan
        while not self.closed:
            lt = buf.find(b"<", pos)
            if lt < 0:
                break
            if buf.startswith(b"<?", lt):
                end = buf.find(b"?>", lt)
                if end < 0:
                    break
                pos = end + 2
                continue
            match = TAG.match(buf, lt)
            if match is None:
                break  # an incomplete tag: wait for more
            pos = match.end()
            name = match.group("name")
            piece: str | None = None
            if match.group("end"):
                if self._depth == 0:
                    if name == b"stream:stream":
                        piece = self.on_end()
                        self.closed = True
                    # else a stray end tag: nothing the client could use
                else:
                    self._depth -= 1
                    if self._depth == 0:
                        piece = self.on_element(bytes(buf[self._start : pos]))
            elif self._depth == 0 and name == b"stream:stream":
                piece = self.on_header(match.group("attrs"))
            elif match.group("empty"):
                if self._depth == 0:
                    piece = self.on_element(bytes(buf[lt:pos]))
            else:
                if self._depth == 0:
                    self._start = lt
                self._depth += 1
            if piece is not None:
                out.append(piece)
        # Keep only the element in progress (keepalive whitespace between elements goes).
        cut = self._start if self._depth else pos
        del buf[:cut]
        self._scan = pos - cut
        self._start -= cut
        return out


@dataclass
class WebSocketFraming(ElementSplitter):
    """Translation state of one WebSocket connection (both directions)."""

    opened: bool = False
    """The client sent its first ``<open/>``."""

    # -- client to server --------------------------------------------------------------------

    def inbound(self, message: bytes) -> bytes:
        """Stream bytes for the session from one WebSocket message."""
        head = message.lstrip()[:64]
        if head.startswith((b"<open", b"<close")):
            element = _parse_small(message)
            if element.tag == "{%s}open" % FRAMING:
                self.opened = True
                return stream_header(element.attrib)
            if element.tag == "{%s}close" % FRAMING:
                return b"</stream:stream>"
        if not self.opened:
            raise FramingError("not-well-formed", "the first message must be <open/> (RFC 7395)")
        return message

    # -- server to client --------------------------------------------------------------------

    def on_header(self, attrs: bytes) -> str:
        return _open_reply(attrs)

    def on_end(self) -> str:
        return f"<close xmlns='{FRAMING}'/>"


def _parse_small(message: bytes):  # type: ignore[no-untyped-def]
    if len(message) > MAX_OPEN_BYTES:
        raise FramingError("policy-violation", "framing element too large")
    try:
        return SafeET.fromstring(message)
    except Exception:
        raise FramingError("not-well-formed", "malformed framing element") from None


def stream_header(attrs: dict[str, str]) -> bytes:
    parts = [f"<stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAMS}'"]
    for key in ("to", "from", "version"):
        if key in attrs:
            parts.append(f" {key}={_quote(attrs[key])}")
    lang = attrs.get("{%s}lang" % ns.XML)
    if lang is not None:
        parts.append(f" xml:lang={_quote(lang)}")
    return ("".join(parts) + ">").encode()


def _quote(value: str) -> str:
    return "'" + value.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;") + "'"


def _open_reply(attrs: bytes) -> str:
    """``<open/>`` with the header's from, id, version and xml:lang (RFC 7395 §3.4)."""
    kept = [
        m.group(0).decode()
        for m in _ATTR.finditer(attrs)
        if m.group(1) in (b"from", b"id", b"version", b"xml:lang")
    ]
    return f"<open xmlns='{FRAMING}'{''.join(kept)}/>"


def top_level(element: bytes, keep_stream_prefix: bool = False) -> str:
    """One outbound element made self-contained: the namespace the stream gave it, explicit.

    ``keep_stream_prefix`` leaves ``<stream:features>`` and ``<stream:error>`` as written, for
    a wrapper that declares the ``stream`` prefix itself (BOSH's ``<body/>``)."""
    match = TAG.match(element)
    assert match is not None
    name, attrs, empty = match.group("name"), match.group("attrs"), match.group("empty")
    if name.startswith(_STREAM_PREFIX):
        if keep_stream_prefix:
            return element.decode()
        # <stream:features> and <stream:error> relied on the header's prefix declaration.
        local = name[len(_STREAM_PREFIX) :]
        head = b"<" + local + b" xmlns='" + ns.STREAMS.encode() + b"'" + attrs
        rest = element[match.end() :]
        if empty:
            return (head + b"/>").decode()
        return (head + b">" + rest[: -len(name) - 3] + b"</" + local + b">").decode()
    if any(m.group(1) == b"xmlns" for m in _ATTR.finditer(attrs)):
        return element.decode()
    insert = match.start("attrs")
    return (element[:insert] + b" xmlns='" + ns.CLIENT.encode() + b"'" + element[insert:]).decode()
