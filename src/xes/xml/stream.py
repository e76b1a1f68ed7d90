"""Sans-IO incremental parser for one direction of an XMPP stream (RFC 6120 §4).

:class:`XmlStream` turns bytes into :class:`StreamOpened`, :class:`ElementReceived` (one per
complete top-level child of ``<stream:stream>``: a stanza or a nonza) and :class:`StreamClosed`.
It never touches a socket; the transport calls :meth:`XmlStream.receive_data` with whatever it
read and :meth:`XmlStream.reset` when the stream restarts (after STARTTLS, RFC 6120
§5.4.3.3, and after SASL success, §6.4.6).

Hardening. Parsing is done by expat through defusedxml (DTDs, entity declarations and external
references raise). On top of that the XMPP profile of XML (RFC 6120 §11.1) forbids comments,
processing instructions and entity references other than the five predefined ones, and only
UTF-8 is allowed (§11.6). Resource limits (:class:`XmlLimits`) are checked while data arrives,
so a peer streaming an endless stanza is cut off after about ``max_stanza_bytes``, not when
memory runs out. Every violation raises :class:`XmlStreamError` carrying the RFC 6120 §4.9.3
stream error condition; the parser is dead after that (stream errors are unrecoverable, §4.9.1.2).

Speed. expat's C callbacks build :class:`Element` objects directly: no SAX layer, no
intermediate tree. Byte sizes come from expat's ``CurrentByteIndex``; nothing is buffered beyond
what expat itself holds for an incomplete token.
"""

from __future__ import annotations

import codecs
import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Final
from xml.parsers import expat

from defusedxml.common import DefusedXmlException
from defusedxml.expatreader import DefusedExpatParser

from xes.xml import ns
from xes.xml.element import E, Element, escape_attr, serialize, write_attrs

__all__ = [
    "STREAM_CLOSE",
    "STREAM_ERROR_CONDITIONS",
    "ElementReceived",
    "StreamClosed",
    "StreamEvent",
    "StreamOpened",
    "XmlLimits",
    "XmlStream",
    "XmlStreamError",
    "parse_fragment",
    "stream_error",
    "stream_header",
]


@dataclass(frozen=True, slots=True)
class XmlLimits:
    """Resource limits for one inbound stream; exceeding one is a ``policy-violation``.

    RFC 6120 §13.12 lets a server limit stanza size and close offenders with
    ``<policy-violation/>``; XEP-0478 advertises the same ``max-bytes`` number to peers.
    """

    max_stanza_bytes: int = 262144
    """Largest top-level element, in bytes on the wire (256 KiB, Prosody's c2s default; RFC 6120
    §13.12 asks servers to accept at least 10000). Also bounds the stream header and any single
    incomplete token, so it is the most memory one stream's parser can hold."""
    max_depth: int = 32
    """Deepest nesting inside a stanza; the stanza itself is depth 1. Real stanzas stay under
    10 (a MAM result wrapping a forwarded message with a form is about 8)."""
    max_attributes: int = 64
    """Most attributes on one element (namespace declarations are not attributes here)."""
    max_attribute_bytes: int = 16384
    """Longest attribute value in UTF-8 bytes: JIDs are at most 3071 bytes (RFC 7622 §3.1) and
    ids are short; 16 KiB leaves room for URLs (XEP-0363 ``<put url=...>``)."""
    max_text_bytes: int = 1048576
    """Longest run of whitespace between two top-level elements (RFC 6120 §4.6.1 whitespace
    keepalives). One keepalive byte every 30 seconds takes a year to reach 1 MiB; a peer
    streaming whitespace at line rate is cut off quickly."""


class XmlStreamError(Exception):
    """The peer broke the XML rules of RFC 6120; close with this stream error condition."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(condition, text)
        self.condition = condition
        """RFC 6120 §4.9.3 defined condition, e.g. ``not-well-formed``."""
        self.text = text
        """Human-readable detail, suitable for the ``<text/>`` child of the stream error."""

    def __str__(self) -> str:
        return f"{self.condition}: {self.text}"


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer's stream header ``<stream:stream ...>`` (RFC 6120 §4.7)."""

    attrs: dict[str, str]
    """Header attributes (``to``, ``from``, ``id``, ``version``, and ``xml:lang`` under
    ``{http://www.w3.org/XML/1998/namespace}lang``)."""
    ns: str
    """Content namespace declared as the default namespace (``jabber:client``), or ``""``."""


@dataclass(frozen=True, slots=True)
class ElementReceived:
    """One complete top-level child of the stream: a stanza or a nonza."""

    element: Element
    """The element tree, tags and attribute names in Clark notation."""
    size: int
    """Bytes on the wire from its ``<`` to the end of its end tag."""


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The peer sent ``</stream:stream>`` (RFC 6120 §4.4)."""


StreamEvent = StreamOpened | ElementReceived | StreamClosed

STREAM_CLOSE: Final = b"</stream:stream>"

STREAM_ERROR_CONDITIONS: Final = frozenset(
    {
        "bad-format",
        "bad-namespace-prefix",
        "conflict",
        "connection-timeout",
        "host-gone",
        "host-unknown",
        "improper-addressing",
        "internal-server-error",
        "invalid-from",
        "invalid-namespace",
        "invalid-xml",
        "not-authorized",
        "not-well-formed",
        "policy-violation",
        "remote-connection-failed",
        "reset",
        "resource-constraint",
        "restricted-xml",
        "see-other-host",
        "system-shutdown",
        "undefined-condition",
        "unsupported-encoding",
        "unsupported-feature",
        "unsupported-stanza-type",
        "unsupported-version",
    }
)
"""The defined conditions of RFC 6120 §4.9.3."""

# -- expat error codes -> stream error conditions --------------------------------------------

_codes = expat.errors.codes
_RESTRICTED_ERRORS = (
    # RFC 6120 §11.1: entity references other than the predefined five are restricted XML.
    "XML_ERROR_UNDEFINED_ENTITY",
    "XML_ERROR_RECURSIVE_ENTITY_REF",
    "XML_ERROR_BINARY_ENTITY_REF",
    "XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF",
    "XML_ERROR_EXTERNAL_ENTITY_HANDLING",
    "XML_ERROR_PARAM_ENTITY_REF",
    "XML_ERROR_ENTITY_DECLARED_IN_PE",
    "XML_ERROR_NOT_STANDALONE",
    "XML_ERROR_AMPLIFICATION_LIMIT_BREACH",
    # A second <?xml ...?> after the start: only the initial XML declaration is allowed.
    "XML_ERROR_MISPLACED_XML_PI",
)
_PREFIX_ERRORS = (
    "XML_ERROR_UNBOUND_PREFIX",
    "XML_ERROR_UNDECLARING_PREFIX",
    "XML_ERROR_RESERVED_PREFIX_XML",
    "XML_ERROR_RESERVED_PREFIX_XMLNS",
    "XML_ERROR_RESERVED_NAMESPACE_URI",
)
_ENCODING_ERRORS = ("XML_ERROR_UNKNOWN_ENCODING", "XML_ERROR_INCORRECT_ENCODING")
_EXPAT_CONDITIONS: Final[dict[int, str]] = {}
for _names, _condition in (
    (_RESTRICTED_ERRORS, "restricted-xml"),
    (_PREFIX_ERRORS, "bad-namespace-prefix"),
    (_ENCODING_ERRORS, "unsupported-encoding"),
):
    for _name in _names:
        _message = getattr(expat.errors, _name, None)  # some codes are newer than old expats
        if _message is not None:
            _EXPAT_CONDITIONS[_codes[_message]] = _condition
# Errors that an invalid UTF-8 sequence can cause; the bytes decide which condition applies.
_MAYBE_ENCODING: Final = frozenset(
    _codes[getattr(expat.errors, n)] for n in ("XML_ERROR_INVALID_TOKEN", "XML_ERROR_PARTIAL_CHAR")
)

_STREAM_ROOT: Final = ns.STREAMS + " stream"
"""The stream header's expanded name as expat reports it (namespace, space, local name)."""
_XML_SPACE: Final = " \t\r\n"
_SPILL_PIECES: Final = 256
"""Text pieces kept per element before they are joined into one block."""
_PIECE_MAX: Final = 65536
"""Largest slice handed to expat at once, so limits are checked at least this often."""
_START_TAG: Final = re.compile(rb"""<[^'">]*(?:(?:'[^']*'|"[^"]*")[^'">]*)*>""")
"""A start tag's bytes up to its ``>`` (a ``>`` may stand inside a quoted attribute value)."""


def _new_expat() -> Any:
    """A pyexpat parser hardened by defusedxml, forced to UTF-8.

    defusedxml's ``DefusedExpatParser.reset()`` creates the pyexpat parser and installs its
    guards (DTD, entity declarations, external references all raise). We then drive that pyexpat
    object directly instead of going through the SAX layer, which would cost a Python call and
    an attributes wrapper per element.
    """
    reader = DefusedExpatParser(
        namespaceHandling=True, forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    # RFC 6120 §11.6: UTF-8 only. A fixed protocol encoding stops expat from sniffing UTF-16
    # from a byte order mark; a declared encoding is checked in the XmlDecl handler.
    reader._source.setEncoding("UTF-8")
    reader.reset()
    parser = reader._parser
    # The reader's guards stay installed (bound to the reader); the reader's reference back
    # is dropped, so the parser is freed as soon as its stream lets go of it, not at the
    # next full garbage collection (XmlStream.release).
    reader._parser = None
    parser.namespace_prefixes = False  # "uri local" names, no prefix part
    # Text must be reported as expat sees it: CurrentByteIndex inside the callback is then the
    # text's own position, which the byte accounting relies on.
    parser.buffer_text = False
    # Expat >= 2.6 may defer re-parsing a big incomplete token until more data arrives; for a
    # stream that would hold back the last stanza of a read until the peer sends again.
    if hasattr(parser, "SetReparseDeferralEnabled"):
        parser.SetReparseDeferralEnabled(False)
    return parser


def _clark(name: str) -> str:
    """expat's ``"uri local"`` to Clark ``"{uri}local"`` (expat rejects spaces in URIs)."""
    return "{" + name.replace(" ", "}") if " " in name else name


def _take_text(frame: list[Any]) -> str:
    """Join and remove a stack frame's pending text (pieces, plus spilled blocks if any)."""
    pieces, spilled = frame[3], frame[4]
    if spilled is not None:
        spilled.append("".join(pieces))
        text = "".join(spilled)
        frame[4] = None
    else:
        text = pieces[0] if len(pieces) == 1 else "".join(pieces)
    frame[3] = []
    return text


def _invalid_utf8(window: bytes) -> bool:
    """Whether ``window`` starts with bytes that are not (a prefix of) valid UTF-8."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(window, False)
    except UnicodeDecodeError:
        return True
    return False


class XmlStream:
    """Incremental parser for the bytes one peer sends on an XMPP stream.

    Not thread-safe; one instance per stream direction. After :class:`XmlStreamError` every
    further :meth:`receive_data` raises the same error until :meth:`reset`.
    """

    def __init__(self, limits: XmlLimits | None = None) -> None:
        self.limits = limits if limits is not None else XmlLimits()
        lim = self.limits
        self._max_stanza = lim.max_stanza_bytes
        self._max_depth = lim.max_depth
        self._max_attrs = lim.max_attributes
        self._max_attr_bytes = lim.max_attribute_bytes
        self._max_attr_chars = lim.max_attribute_bytes // 4  # a char is at most 4 UTF-8 bytes
        self._max_text = lim.max_text_bytes
        self._piece = max(1, min(_PIECE_MAX, lim.max_stanza_bytes))
        self._out_ns = ns.CLIENT
        self.reset()

    # -- public API ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything and expect a fresh stream header (RFC 6120 §4.3.3 restart)."""
        self._parser: Any = self._new_parser()
        self._events: list[StreamEvent] = []
        self._stack: list[list[Any]] = []  # open elements of the current stanza
        self._in_stream = False  # header seen
        self._closed = False  # </stream:stream> seen
        self._content_ns = ""
        self._fed = 0  # bytes handed to expat since the reset (expat's byte index base)
        self._stanza_start = 0  # byte index of the current top-level element's "<"
        self._done: Element | None = None  # complete top-level element, size not yet known
        self._ws = 0  # whitespace run since the last top-level element
        self._failed: XmlStreamError | None = None
        self._tail = b""  # last bytes before the current receive_data, for error reports
        self._tags: dict[str, str] = {}  # expat name -> Clark tag
        self._prelude: bytes | None = b""  # bytes fed until the header is complete
        self._header_at = 0  # byte index of the header's "<"
        self._header = b""  # the peer's header start tag, to replay into a fresh expat

    def release(self) -> bool:
        """Drop expat's state while the stream sits between stanzas; True if it was dropped.

        An idle stream's parser is most of a connection's Python memory (about 12 KiB: its
        string pools, name tables and buffers, grown while the header and the login were
        parsed). Between two top-level elements nothing in it is needed but the namespace
        context of the header, so :meth:`receive_data` makes a fresh parser when data comes
        and feeds it the header's start tag again (its events are dropped). Only line numbers
        in later error texts count from that replay. Nothing happens when anything is pending:
        an open element, an incomplete token, a stream error or the stream's end.
        """
        parser = self._parser
        if (
            parser is None
            or not self._header
            or not self._in_stream
            or self._closed
            or self._stack
            or self._done is not None
            or self._failed is not None
            or parser.CurrentByteIndex != self._fed
        ):
            return False
        self._parser = None
        self._tags = {}
        return True

    def _revive(self) -> None:
        """A fresh expat in the state :meth:`release` left: inside the stream's root."""
        header = self._header
        self._parser = self._new_parser()
        self._in_stream = False
        self._parser.Parse(header, False)  # same bytes, accepted once already
        self._fed = len(header)
        self._tail = header[-8:]

    def _new_parser(self) -> Any:
        parser = _new_expat()
        parser.StartElementHandler = self._on_start
        parser.EndElementHandler = self._on_end
        parser.CharacterDataHandler = self._on_text
        parser.StartNamespaceDeclHandler = self._on_ns_decl
        parser.EndNamespaceDeclHandler = None
        parser.XmlDeclHandler = self._on_xml_decl
        parser.CommentHandler = self._on_comment
        parser.ProcessingInstructionHandler = self._on_pi
        parser.SkippedEntityHandler = self._on_skipped_entity
        return parser

    def receive_data(self, data: bytes) -> list[StreamEvent]:
        """Parse ``data`` and return the events it completes, in order.

        Raises :class:`XmlStreamError` on any violation; events completed earlier in the same
        call are discarded with it, since the stream is going down anyway.
        """
        if self._failed is not None:
            raise self._failed
        if self._parser is None:
            self._revive()
        self._events = events = []
        start = self._fed
        try:
            if start < 2:
                self._check_bom(data)
            if self._prelude is not None:
                self._prelude += data
            self._feed(data)
            if self._in_stream and self._prelude is not None:
                self._keep_header()
        except XmlStreamError as exc:
            self._failed = exc
            raise
        except expat.ExpatError as exc:
            self._failed = self._expat_error(exc, data, start)
            raise self._failed from None
        except DefusedXmlException as exc:
            self._failed = XmlStreamError(
                "restricted-xml", f"DTDs and entity declarations are not allowed ({exc})"
            )
            raise self._failed from None
        self._tail = (self._tail + bytes(data[-8:]))[-8:]
        return events

    def send(self, item: StreamOpened | Element | StreamClosed) -> bytes:
        """Bytes for our side of the stream: a header, a top-level element or the close tag.

        The content namespace of the header sent last is the default namespace that elements
        are serialized against.
        """
        if isinstance(item, Element):
            return serialize(item, self._out_ns)
        if isinstance(item, StreamOpened):
            self._out_ns = item.ns
            return stream_header(item.attrs, item.ns)
        return STREAM_CLOSE

    # -- feeding and limits -----------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        parse = self._parser.Parse
        size = len(data)
        if size <= self._piece:
            parse(data, False)
            self._fed += size
            self._after_piece()
            return
        view = memoryview(data)
        for offset in range(0, size, self._piece):
            piece = view[offset : offset + self._piece]
            parse(piece, False)
            self._fed += len(piece)
            self._after_piece()

    def _keep_header(self) -> None:
        """Keep the header's start tag, now complete, for :meth:`release`."""
        prelude, self._prelude = self._prelude or b"", None
        tag = _START_TAG.match(prelude, self._header_at)
        if tag is not None and not tag.group().endswith(b"/>"):
            self._header = tag.group()

    def _check_bom(self, data: bytes) -> None:
        # expat honours a UTF-16 byte order mark even when told the input is UTF-8, so the
        # first two bytes of the stream are checked here (RFC 6120 §11.6: UTF-8 only).
        head = self._tail + bytes(data[:2])  # _tail holds every byte fed so far
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise XmlStreamError("unsupported-encoding", "UTF-16 byte order mark; use UTF-8")

    def _after_piece(self) -> None:
        # After Parse() returns, CurrentByteIndex is the first byte expat has not consumed: the
        # start of an incomplete token, or the end of the input.
        index = self._parser.CurrentByteIndex
        if self._done is not None:
            self._finish(index)
        if self._stack:
            pending = self._fed - self._stanza_start
        elif self._in_stream:
            pending = self._fed - index if index >= 0 else 0
        else:
            pending = self._fed  # everything before and including the stream header
        if pending > self._max_stanza:
            raise XmlStreamError(
                "policy-violation", f"stanza too large (limit {self._max_stanza} bytes)"
            )

    def _finish(self, end: int) -> None:
        """Emit the complete top-level element now that the byte index after it is known."""
        element = self._done
        assert element is not None
        self._done = None
        size = end - self._stanza_start
        if size > self._max_stanza:
            raise XmlStreamError(
                "policy-violation", f"stanza too large (limit {self._max_stanza} bytes)"
            )
        self._events.append(ElementReceived(element, size))

    def _expat_error(self, exc: expat.ExpatError, data: bytes, start: int) -> XmlStreamError:
        code = exc.code
        detail = f"{expat.ErrorString(code)} at line {exc.lineno}, column {exc.offset}"
        condition = _EXPAT_CONDITIONS.get(code)
        if condition is not None:
            return XmlStreamError(condition, detail)
        if code in _MAYBE_ENCODING:
            # expat points at the offending byte; if that byte does not start valid UTF-8, the
            # peer is not speaking UTF-8 at all (RFC 6120 §11.6).
            base = start - len(self._tail)
            offset = self._parser.ErrorByteIndex - base
            blob = self._tail + bytes(data)
            if 0 <= offset < len(blob) and _invalid_utf8(blob[offset : offset + 4]):
                return XmlStreamError("unsupported-encoding", "input is not valid UTF-8")
        return XmlStreamError("not-well-formed", detail)

    # -- expat callbacks ----------------------------------------------------------------------

    def _on_start(self, name: str, attrs: dict[str, str]) -> None:
        stack = self._stack
        if stack:
            if len(stack) >= self._max_depth:
                raise XmlStreamError(
                    "policy-violation", f"elements nested deeper than {self._max_depth}"
                )
            parent = stack[-1]
            if parent[3] or parent[4] is not None:
                parent[2].append(_take_text(parent))
        elif self._in_stream:
            # A new top-level element. The previous one (if still pending) ends right here.
            index = self._parser.CurrentByteIndex
            if self._done is not None:
                self._finish(index)
            self._stanza_start = index
            self._ws = 0
        else:
            self._open_stream(name, attrs)
            return
        if attrs:
            attrs = self._check_attrs(attrs)
        tag = self._tags.get(name)
        if tag is None:
            tag = self._intern(name)
        # Frame: tag, attrs, children, text pieces, spilled text blocks (see _on_text).
        stack.append([tag, attrs, [], [], None])

    def _on_end(self, name: str) -> None:
        stack = self._stack
        if stack:
            frame = stack.pop()
            children = frame[2]
            if frame[3] or frame[4] is not None:
                children.append(_take_text(frame))
            element = Element(frame[0], frame[1], tuple(children))
            if stack:
                stack[-1][2].append(element)
            else:
                # Its size is known once expat reports the next thing (or returns).
                self._done = element
            return
        # </stream:stream>
        if self._done is not None:
            self._finish(self._parser.CurrentByteIndex)
        self._closed = True
        self._events.append(StreamClosed())

    def _on_text(self, data: str) -> None:
        stack = self._stack
        if stack:
            frame = stack[-1]
            pieces = frame[3]
            pieces.append(data)
            if len(pieces) >= _SPILL_PIECES:
                # expat splits text at every newline and reference; many tiny str objects cost
                # far more memory than the bytes they came from. Join them into a block now;
                # blocks are joined once at the end, so the copying stays linear.
                if frame[4] is None:
                    frame[4] = []
                frame[4].append("".join(pieces))
                pieces.clear()
            return
        # Between top-level elements (expat reports no text outside the root element).
        if self._done is not None:
            self._finish(self._parser.CurrentByteIndex)
        if data.strip(_XML_SPACE):
            # The stream's content model is elements only; whitespace is allowed as keepalive
            # (RFC 6120 §4.6.1), anything else cannot be processed.
            raise XmlStreamError("bad-format", "text between stanzas")
        self._ws += len(data)
        if self._ws > self._max_text:
            raise XmlStreamError("policy-violation", "too much whitespace between stanzas")

    def _intern(self, name: str) -> str:
        # One str object per distinct tag: saves a conversion and an allocation per element.
        # Bounded, since a peer chooses the names.
        tags = self._tags
        if len(tags) >= 1024:
            tags.clear()
        tag = tags[name] = _clark(name)
        return tag

    def _check_attrs(self, attrs: dict[str, str]) -> dict[str, str]:
        if len(attrs) > self._max_attrs:
            raise XmlStreamError("policy-violation", f"more than {self._max_attrs} attributes")
        if " " in "".join(attrs):
            attrs = {_clark(k): v for k, v in attrs.items()}
        if max(map(len, attrs.values())) > self._max_attr_chars:
            for value in attrs.values():
                if len(value.encode("utf-8")) > self._max_attr_bytes:
                    raise XmlStreamError(
                        "policy-violation",
                        f"attribute value longer than {self._max_attr_bytes} bytes",
                    )
        return attrs

    def _open_stream(self, name: str, attrs: dict[str, str]) -> None:
        if name != _STREAM_ROOT:
            # RFC 6120 §4.8.1: the root must be qualified by the streams namespace.
            raise XmlStreamError("invalid-namespace", f"stream root must be {{{ns.STREAMS}}}stream")
        if self._content_ns == ns.STREAMS:
            # RFC 6120 §4.8.2: the content namespace must differ from the stream namespace.
            raise XmlStreamError("invalid-namespace", "content namespace is the stream namespace")
        checked = self._check_attrs(attrs) if attrs else {}
        self._in_stream = True
        self._header_at = self._parser.CurrentByteIndex
        self._events.append(StreamOpened(checked, self._content_ns))

    def _on_ns_decl(self, prefix: str | None, uri: str | None) -> None:
        if prefix is None and not self._in_stream:
            self._content_ns = uri or ""

    def _on_xml_decl(self, version: str, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.lower() != "utf-8":
            raise XmlStreamError(
                "unsupported-encoding", f"encoding {encoding!r} declared; only UTF-8 is allowed"
            )

    def _on_comment(self, data: str) -> None:
        raise XmlStreamError("restricted-xml", "comments are not allowed (RFC 6120 §11.1)")

    def _on_pi(self, target: str, data: str) -> None:
        raise XmlStreamError(
            "restricted-xml", "processing instructions are not allowed (RFC 6120 §11.1)"
        )

    def _on_skipped_entity(self, name: str, is_parameter_entity: bool) -> None:
        raise XmlStreamError("restricted-xml", f"entity reference &{name}; is not allowed")


# -- building our side of the stream ----------------------------------------------------------


def stream_header(attrs: dict[str, str | None], default_ns: str = ns.CLIENT) -> bytes:
    """Our stream header (RFC 6120 §4.7), with XML declaration and both namespace declarations.

    ``attrs`` holds ``from``, ``to``, ``id``, ``version`` and the ``xml:lang`` Clark name;
    ``None`` values are left out. Extra prefix declarations (``xmlns:db`` for dialback) may be
    passed as plain ``xmlns:prefix`` keys.
    """
    parts = [
        "<?xml version='1.0'?><stream:stream",
        f" xmlns='{escape_attr(default_ns)}'" if default_ns else "",
        f" xmlns:stream='{ns.STREAMS}'",
    ]
    declarations = {k: v for k, v in attrs.items() if v is not None and k.startswith("xmlns:")}
    for key, value in declarations.items():
        parts.append(f" {key}='{escape_attr(value)}'")
    plain = {k: v for k, v in attrs.items() if v is not None and k not in declarations}
    write_attrs(plain, parts.append)
    parts.append(">")
    return "".join(parts).encode("utf-8")


def stream_error(condition: str, text: str | None = None, lang: str | None = None) -> bytes:
    """``<stream:error>`` with a defined condition and optional text (RFC 6120 §4.9.2).

    Goes inside an open stream whose header declared the ``stream`` prefix; follow it with
    :data:`STREAM_CLOSE`.
    """
    if condition not in STREAM_ERROR_CONDITIONS:
        raise ValueError(f"not an RFC 6120 stream error condition: {condition!r}")
    errors_ns = ns.STREAM_ERRORS
    text_el = None
    if text:
        text_el = E(f"{{{errors_ns}}}text", {f"{{{ns.XML}}}lang": lang}, text)
    return serialize(E(f"{{{ns.STREAMS}}}error", None, E(f"{{{errors_ns}}}{condition}"), text_el))


_DEFAULT_LIMITS: Final = XmlLimits()
_XML_DECL = re.compile(rb"\s*<\?xml\s[^>]*\?>")


def parse_fragment(
    data: bytes, default_ns: str = ns.CLIENT, *, limits: XmlLimits | None = None
) -> Element:
    """Parse one standalone element (tests, configuration, stored stanzas).

    The same hardened parser and limits as a live stream apply, except that without explicit
    ``limits`` the size limit grows to fit ``data`` (it is already in memory, and a stored stanza
    may have grown on re-serialization: CDATA comes back as escaped text) and the attribute and
    depth limits are generous. ``default_ns`` is the
    namespace of unprefixed elements that declare none, matching :func:`serialize`'s default so
    that ``parse_fragment(serialize(el)) == el``; pass ``""`` for none. An XML declaration at the
    start is allowed. Raises :class:`XmlStreamError`.
    """
    if limits is None:
        # Stored stanzas passed the live limits (which an operator may have raised) and then
        # got the server's own attributes (from, xml:lang): re-reading them must not fail.
        limits = dataclasses.replace(
            _DEFAULT_LIMITS,
            max_stanza_bytes=max(_DEFAULT_LIMITS.max_stanza_bytes, len(data)),
            max_attributes=max(_DEFAULT_LIMITS.max_attributes, 4096),
            max_depth=max(_DEFAULT_LIMITS.max_depth, 1024),
        )
    decl = _XML_DECL.match(data)
    prolog = b""
    if decl is not None:
        prolog, data = data[: decl.end()], data[decl.end() :]
    default = f" xmlns='{escape_attr(default_ns)}'" if default_ns else ""
    header = f"<stream:stream xmlns:stream='{ns.STREAMS}'{default}>".encode()
    stream = XmlStream(limits)
    events = stream.receive_data(prolog + header + data + STREAM_CLOSE)
    elements = [e.element for e in events if isinstance(e, ElementReceived)]
    if len(elements) != 1 or not events or not isinstance(events[-1], StreamClosed):
        raise XmlStreamError("bad-format", f"expected one element, got {len(elements)}")
    return elements[0]
