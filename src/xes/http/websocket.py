"""XMPP over WebSocket (RFC 7395) at ``/xmpp-websocket``: wsproto under the TCP session.

The upgrade is answered here; the connection then becomes a :class:`WebSocketStream`, an anyio
byte stream whose bytes are the XMPP stream the TCP listeners carry (the translation is
:mod:`xes.session.framing`), and the node runs the same
:class:`~xes.transport.c2s.ClientConnection` on it as on a socket: SASL, bind, XEP-0198 with
resumption on any node, carbons, MAM, limits and throttling, all unchanged.

Choices: no ``permessage-deflate`` (compression of secrets next to attacker-chosen text is how
CRIME and BREACH work, and it would let a small frame inflate past the stanza limit); text and
binary messages are both taken; a message is passed on as its frames arrive, so the session's
parser enforces ``[limits] max_stanza_bytes`` as it does on TCP instead of this layer buffering
a whole message first. Pings are answered at once; the session's idle timeout counts them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
from anyio.abc import ByteStream
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    TextMessage,
)
from wsproto.events import Request as WsRequest

from xes.http.server import Request, Response, Upgrade
from xes.session.framing import FRAMING, FramingError, WebSocketFraming
from xes.transport.direct import buffered_plaintext, direct_writer
from xes.xml import ns
from xes.xml.element import escape_text

log = structlog.get_logger("xes.websocket")

PATH = "/xmpp-websocket"
SUBPROTOCOL = "xmpp"
READ_SIZE = 65536
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002


class WebSocketStream(ByteStream):
    """The XMPP stream inside one WebSocket connection, as anyio bytes."""

    def __init__(self, transport: ByteStream, ws: WSConnection) -> None:
        self.transport = transport
        self.ws = ws
        self.framing = WebSocketFraming()
        self._lock = anyio.Lock()
        self._message: bytearray | None = None
        """The start of a message that may be ``<open/>`` or ``<close/>`` (kept whole)."""
        self._passing = False
        """Inside a message being passed through frame by frame."""
        self._closed = False
        self._failure: FramingError | None = None

    @property
    def extra_attributes(self) -> dict[Any, Callable[[], Any]]:
        return self.transport.extra_attributes

    async def _write(self, data: bytes) -> None:
        if data:
            async with self._lock:
                await self.transport.send(data)

    async def receive(self, max_bytes: int = READ_SIZE) -> bytes:
        while True:
            # Every message already read goes to the session at once (a client that sent ten
            # stanzas is read as ten stanzas, as over TCP), not one per call.
            out = []
            for event in self.ws.events():
                data = await self._on_event(event)
                if self._failure is not None:
                    await self._refuse(self._failure)
                    raise anyio.EndOfStream
                if data:
                    out.append(data)
            if out:
                return b"".join(out)
            if self._closed:
                raise anyio.EndOfStream
            try:
                data = await self.transport.receive(READ_SIZE)
            except anyio.EndOfStream:
                self.ws.receive_data(None)
                self._closed = True
                continue
            # The other TLS records that read brought: a burst of frames is one receive.
            self.ws.receive_data(data + buffered_plaintext(self.transport, READ_SIZE))

    async def _on_event(self, event: Any) -> bytes:
        if isinstance(event, (TextMessage, BytesMessage)):
            chunk = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
            return self._inbound(chunk, event.message_finished)
        if isinstance(event, Ping):
            await self._write(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            with contextlib.suppress(Exception):
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    await self._write(self.ws.send(event.response()))
                elif self.ws.state is ConnectionState.OPEN:
                    # wsproto found a broken frame (1002) or bad UTF-8 (1007): say so.
                    await self._write(self.ws.send(CloseConnection(event.code, event.reason)))
            self._closed = True
        return b""

    def _inbound(self, chunk: bytes, finished: bool) -> bytes:
        try:
            if self._passing:
                self._passing = not finished
                return chunk
            if self._message is None:
                if finished and self.framing.opened:
                    # The usual case: a whole element in one frame once the stream is open
                    # (inbound still translates a restart's <open/>): no copies.
                    return self.framing.inbound(chunk)
                self._message = bytearray()
            self._message += chunk
            head = self._message.lstrip()
            might_frame = head.startswith((b"<open", b"<close")) or len(head) < 6
            if might_frame and not finished and len(self._message) <= 4096:
                return b""  # <open/> and <close/> are translated whole
            message, self._message = bytes(self._message), None
            if not finished:
                self._passing = True
                if not self.framing.opened:
                    raise FramingError("not-well-formed", "the first message must be <open/>")
                return message
            return self.framing.inbound(message)
        except FramingError as exc:
            self._failure = exc
            return b""

    async def _refuse(self, exc: FramingError) -> None:
        """A client that broke the framing gets the stream error the session would send (RFC
        7395 §3.3.3: opened, error, closed) and the connection closes."""
        log.info("websocket_framing_error", condition=exc.condition, reason=exc.text)
        error = (
            f"<error xmlns='{ns.STREAMS}'><{exc.condition} xmlns='{ns.STREAM_ERRORS}'/>"
            f"<text xmlns='{ns.STREAM_ERRORS}'>{escape_text(exc.text)}</text></error>"
        )
        opened = f"<open xmlns='{FRAMING}' version='1.0'/>"
        closed = f"<close xmlns='{FRAMING}'/>"
        with contextlib.suppress(Exception):
            await self._write(
                b"".join(self.ws.send(Message(data=m)) for m in (opened, error, closed))
                + self.ws.send(CloseConnection(code=CLOSE_PROTOCOL_ERROR))
            )
        self.framing.closed = True
        self._closed = True

    def direct_writer(self) -> _DirectFrames | None:
        """Frames written from the caller straight to the socket when nothing waits ahead
        (see :mod:`xes.transport.direct`): a room's or a contact's message reaches a WebSocket
        client without a task switch, as it reaches a TCP one."""
        inner = direct_writer(self.transport)
        return None if inner is None else _DirectFrames(self, inner)

    async def send(self, item: bytes) -> None:
        data = b"".join(self.ws.send(Message(data=text)) for text in self.framing.outbound(item))
        await self._write(data)
        if self.framing.closed and self.ws.state is ConnectionState.OPEN:
            await self._write(self.ws.send(CloseConnection(code=CLOSE_NORMAL)))

    async def send_eof(self) -> None:
        if self.ws.state is ConnectionState.OPEN:
            with contextlib.suppress(Exception):
                await self._write(self.ws.send(CloseConnection(code=CLOSE_NORMAL)))

    async def aclose(self) -> None:
        await self.send_eof()
        await self.transport.aclose()


class _DirectFrames:
    __slots__ = ("_inner", "_stream")

    def __init__(self, stream: WebSocketStream, inner: Any) -> None:
        self._stream = stream
        self._inner = inner

    def write(self, data: bytes) -> bool:
        stream = self._stream
        if stream.framing.closed or not self._inner.ready():
            return False  # nothing consumed: the connection's queue takes it
        framed = b"".join(
            stream.ws.send(Message(data=text)) for text in stream.framing.outbound(data)
        )
        # Once the framing has taken the bytes they are written: after ready() a write can
        # only fail on a broken connection, which its reader and writer then find closed.
        if framed:
            self._inner.write(framed)
        return True


def origin_allowed(allowed: tuple[str, ...], origin: str | None) -> bool:
    """A request without ``Origin`` is not from a browser page; ``*`` allows every page."""
    return origin is None or "*" in allowed or origin in allowed


def make_handler(
    allowed_origins: tuple[str, ...],
    tls_required: bool,
    run_client: Callable[[ByteStream, Request], Awaitable[None]],
) -> Callable[[Request], Awaitable[Response | Upgrade]]:
    async def handle(request: Request) -> Response | Upgrade:
        headers = request.headers
        if "websocket" not in headers.get("upgrade", "").lower():
            return Response.text(
                426,
                "XMPP over WebSocket (RFC 7395): upgrade to websocket",
                headers=[("Upgrade", "websocket")],
            )
        if headers.get("sec-websocket-version") != "13":
            return Response.text(
                426, "WebSocket version 13 required", headers=[("Sec-WebSocket-Version", "13")]
            )
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
        if SUBPROTOCOL not in offered:
            return Response.text(400, "the WebSocket subprotocol 'xmpp' is required (RFC 7395)")
        if not origin_allowed(allowed_origins, headers.get("origin")):
            log.info("websocket_origin_refused", origin=headers.get("origin"), peer=request.peer)
            return Response.text(403, "origin not allowed ([http] allowed_origins)")
        if tls_required and not request.secure:
            return Response.text(403, "use wss:// (https): [tls] required is on")

        async def run(stream: ByteStream, trailing: bytes) -> None:
            ws = WSConnection(ConnectionType.SERVER)
            ws.initiate_upgrade_connection(request.raw_headers, request.path)
            for event in ws.events():
                if not isinstance(event, WsRequest):
                    await stream.send(ws.send(RejectConnection(status_code=400)))
                    return
            await stream.send(ws.send(AcceptConnection(subprotocol=SUBPROTOCOL)))
            if trailing:
                ws.receive_data(trailing)
            await run_client(WebSocketStream(stream, ws), request)

        return Upgrade(run)

    return handle
