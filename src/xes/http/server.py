"""The node's HTTP listener: h11 (sans-IO HTTP/1.1) on anyio, one task per connection (ADR 0016).

Everything on the HTTP side (WebSocket and BOSH clients, host-meta, upload, metrics, the admin
API, the status page) is a :class:`Route` on this one server. The server owns the limits, so no
handler can forget them: the size of a request head (h11's ``max_incomplete_event_size``: 431
beyond it) and of a body (413), the time a client may take to send its head (slowloris) and to
send each part of its body, keep-alive idle time, the time a client may take to read a response,
connections in all and per address, and requests per second per address (429). A client that
breaks HTTP gets h11's status (400) and the connection closes; nothing a client sends can make a
handler wait for it without a deadline.

A request over plain HTTP counts as secure only when it comes from ``[http] trusted_proxies``
(a reverse proxy that ended TLS, by default loopback); the client's address is then the last hop
of ``X-Forwarded-For``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import h11
import structlog
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from xes.config import HttpConfig

log = structlog.get_logger("xes.http")

READ_SIZE = 65536
TLS_HANDSHAKE_TIMEOUT = 15.0
SERVER_HEADER = "xes"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names; repeated headers joined with ``, ``."""
    peer: str
    """The client's address (behind a trusted proxy: the last ``X-Forwarded-For`` hop)."""
    secure: bool
    """Over TLS: ours (https) or a trusted proxy's."""
    scheme: str
    """What the client used: ``https`` or ``http`` (``X-Forwarded-Proto`` behind a proxy)."""
    stream: ByteStream
    ssl_object: ssl.SSLObject | None = None
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    body_chunks: Callable[[], AsyncIterator[bytes]] | None = None
    """For streaming routes: the body as it arrives (the route's ``max_body`` still holds)."""

    @property
    def host(self) -> str:
        return self.headers.get("host", "")


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False
    chunks: Callable[[], AsyncIterator[bytes]] | None = None
    """A body sent as it is produced (a file) instead of ``body``: exactly ``length`` bytes.
    If it yields fewer or more, the connection is cut rather than a wrong body completed."""
    length: int = 0
    """With ``chunks``: the ``Content-Length``."""

    @classmethod
    def text(cls, status: int, text: str, **kw: Any) -> Response:
        return cls(status, (text + "\n").encode(), **kw)

    @classmethod
    def json(cls, status: int, data: Any, **kw: Any) -> Response:
        import json

        return cls(status, json.dumps(data).encode(), "application/json", **kw)


class Upgrade:
    """A handler's answer that takes over the connection (WebSocket): the server hands it the
    byte stream, the h11 state's trailing bytes, and stops serving HTTP on it."""

    def __init__(self, run: Callable[[ByteStream, bytes], Awaitable[None]]) -> None:
        self.run = run


Handler = Callable[[Request], Awaitable[Response | Upgrade]]


@dataclass(frozen=True)
class Route:
    path: str
    """Exact path, or a prefix when it ends with ``/``."""
    handler: Handler
    methods: tuple[str, ...] = ("GET", "HEAD")
    max_body: int | None = None
    """Largest body this route takes (default ``[http] max_body_bytes``)."""
    streaming: bool = False
    """The handler reads the body itself through ``Request.body_chunks``."""


def in_networks(networks: list[Any], address: str) -> bool:
    """Is ``address`` (an IP address as text) in one of ``networks``? Not an address: no."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


class HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class _TokenBucket:
    __slots__ = ("refilled", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.refilled = now


class HttpServer:
    """Routes and limits of one node's HTTP side, shared by its http and https listeners."""

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self.routes: list[Route] = []
        self.connections = 0
        self._per_address: dict[str, int] = {}
        self._buckets: dict[str, _TokenBucket] = {}
        self._trusted = [ipaddress.ip_network(net, strict=False) for net in config.trusted_proxies]
        self.on_request: Callable[[str, int], None] | None = None
        """Called with (route path, status) after each response (metrics)."""
        self.tasks: list[Callable[..., Awaitable[None]]] = []
        """Long-running tasks of the routes (BOSH sessions live in one), started by the node
        in its task group with ``task_group.start`` before the listeners."""

    def add(self, route: Route) -> None:
        self.routes.append(route)

    def route_for(self, path: str) -> Route | None:
        best: Route | None = None
        for route in self.routes:
            matches = route.path == path or (
                route.path.endswith("/") and path.startswith(route.path)
            )
            if matches and (best is None or len(route.path) > len(best.path)):
                best = route
        return best

    def trusted(self, address: str) -> bool:
        return in_networks(self._trusted, address)

    # -- limits --------------------------------------------------------------------------------

    def _rate_ok(self, address: str) -> bool:
        cfg = self.config
        now = time.monotonic()
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()  # bounded: forgetting buckets only forgives
            bucket = self._buckets[address] = _TokenBucket(cfg.request_burst, now)
        bucket.tokens = min(
            cfg.request_burst, bucket.tokens + (now - bucket.refilled) * cfg.requests_per_second
        )
        bucket.refilled = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    # -- connections ---------------------------------------------------------------------------

    async def serve(self, stream: ByteStream, tls_context: ssl.SSLContext | None) -> None:
        """One accepted connection, from TLS handshake (https) to close."""
        try:
            address = str(stream.extra(SocketAttribute.remote_address)[0])
        except Exception:
            address = "?"
        cfg = self.config
        if (
            self.connections >= cfg.max_connections
            or self._per_address.get(address, 0) >= cfg.max_connections_per_address
        ):
            log.info("http_connection_refused", peer=address, reason="too many connections")
            with contextlib.suppress(Exception):
                await stream.aclose()
            return
        self.connections += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        try:
            ssl_object = None
            if tls_context is not None:
                with anyio.fail_after(TLS_HANDSHAKE_TIMEOUT):
                    stream = await TLSStream.wrap(
                        stream, server_side=True, ssl_context=tls_context, standard_compatible=False
                    )
                ssl_object = stream.extra(TLSAttribute.ssl_object)
            await _Connection(self, stream, address, ssl_object).run()
        except (
            TimeoutError,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
            OSError,
            ssl.SSLError,
        ):
            pass
        except Exception as exc:
            log.error("http_connection_failed", error=repr(exc), peer=address, exc_info=True)
        finally:
            self.connections -= 1
            left = self._per_address.get(address, 1) - 1
            if left:
                self._per_address[address] = left
            else:
                self._per_address.pop(address, None)
            with anyio.move_on_after(1.0), contextlib.suppress(Exception):
                await stream.aclose()


class _Connection:
    """The HTTP/1.1 request loop of one connection (keep-alive, one request at a time)."""

    def __init__(
        self, server: HttpServer, stream: ByteStream, address: str, ssl_object: Any
    ) -> None:
        self.server = server
        self.cfg = server.config
        self.stream = stream
        self.address = address
        self.ssl_object = ssl_object
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.cfg.max_header_bytes)

    async def _next_event(self, timeout: float) -> Any:
        with anyio.fail_after(timeout):
            while True:
                event = self.h11.next_event()
                if event is not h11.NEED_DATA:
                    return event
                try:
                    data = await self.stream.receive(READ_SIZE)
                except anyio.EndOfStream:
                    data = b""
                self.h11.receive_data(data)

    async def _send(self, *events: Any) -> None:
        data = b"".join(self.h11.send(event) or b"" for event in events)
        with anyio.fail_after(self.cfg.send_timeout):
            await self.stream.send(data)

    async def run(self) -> None:
        first = True
        while True:
            try:
                # Between requests: keep-alive idle time; once a request has begun, its whole
                # head must arrive within header_timeout (no slowloris).
                event = await self._next_event(
                    self.cfg.idle_timeout if not first else self.cfg.header_timeout
                )
                if isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.Request):
                    return
            except h11.RemoteProtocolError as exc:
                await self._refuse(exc.error_status_hint, str(exc))
                return
            except TimeoutError:
                if self.h11.their_state is h11.IDLE and not first:
                    return  # an idle keep-alive connection: just close it
                await self._refuse(408, "request head not received in time")
                return
            first = False
            try:
                upgrade = await self._handle(event)
            except h11.RemoteProtocolError as exc:
                await self._refuse(exc.error_status_hint, str(exc))
                return
            if upgrade is not None:
                trailing, _closed = self.h11.trailing_data
                await upgrade.run(self.stream, trailing)
                return
            if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
                return
            try:
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _refuse(self, status: int, text: str) -> None:
        log.info("http_refused", status=status, reason=text, peer=self.address)
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with contextlib.suppress(Exception):
            await self._respond(Response.text(status, text, close=True), head=False)

    def _request(self, event: h11.Request) -> Request:
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        target = urlsplit(event.target.decode("latin-1"))
        peer = self.address
        secure = self.ssl_object is not None
        scheme = "https" if secure else "http"
        if not secure and self.server.trusted(self.address):
            # A reverse proxy that ended TLS, or a local tool: it says who the client is, and
            # the request counts as encrypted unless the proxy says it came over plain HTTP.
            forwarded = headers.get("x-forwarded-for", "")
            if forwarded:
                peer = forwarded.rsplit(",", 1)[-1].strip() or peer
            proto = headers.get("x-forwarded-proto", "").strip().lower()
            scheme = proto if proto in ("http", "https") else "http"
            secure = proto != "http"
        return Request(
            method=event.method.decode("ascii", "replace").upper(),
            path=target.path or "/",
            query=dict(parse_qsl(target.query, keep_blank_values=True)),
            headers=headers,
            peer=peer,
            secure=secure,
            scheme=scheme,
            stream=self.stream,
            ssl_object=self.ssl_object,
            raw_headers=list(event.headers),
        )

    async def _handle(self, event: h11.Request) -> Upgrade | None:
        head = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
        if head > self.cfg.max_header_bytes:
            # h11 bounds only a head still arriving; one that came in a single read is
            # measured here.
            await self._respond(Response.text(431, "request head too large", close=True))
            return None
        request = self._request(event)
        route = self.server.route_for(request.path)
        if not self.server._rate_ok(request.peer):
            await self._drain_and_respond(
                Response.text(429, "too many requests", headers=[("Retry-After", "1")])
            )
            return None
        if route is None:
            await self._drain_and_respond(Response.text(404, "not found"))
            return None
        if request.method == "OPTIONS" and "OPTIONS" not in route.methods:
            await self._drain_and_respond(
                Response(204, headers=[("Allow", ", ".join((*route.methods, "OPTIONS")))])
            )
            return None
        if request.method not in route.methods:
            await self._drain_and_respond(
                Response.text(
                    405, "method not allowed", headers=[("Allow", ", ".join(route.methods))]
                )
            )
            return None
        limit = route.max_body if route.max_body is not None else self.cfg.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._respond(Response.text(413, f"body larger than {limit} bytes", close=True))
            return None
        try:
            if route.streaming:
                request.body_chunks = lambda: self._body_chunks(limit)
            else:
                request.body = b"".join([chunk async for chunk in self._body_chunks(limit)])
            response = await route.handler(request)
            if isinstance(response, Upgrade):
                return response
            if route.streaming:
                # Whatever the handler left unread is read and dropped (bounded by the limit).
                async for _ in self._body_chunks(limit):
                    pass
        except HttpError as exc:
            response = Response.text(exc.status, exc.text, close=exc.status in (408, 413))
        except TimeoutError:
            response = Response.text(408, "request body not received in time", close=True)
        await self._respond(response, head=request.method == "HEAD")
        if self.server.on_request is not None:
            self.server.on_request(route.path, response.status)
        return None

    async def _body_chunks(self, limit: int) -> AsyncIterator[bytes]:
        size = 0
        while self.h11.their_state is h11.SEND_BODY:
            event = await self._next_event(self.cfg.idle_timeout)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise HttpError(413, f"body larger than {limit} bytes")
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise HttpError(400, "unexpected end of request")

    async def _drain_and_respond(self, response: Response) -> None:
        try:
            async for _ in self._body_chunks(self.cfg.max_body_bytes):
                pass
        except HttpError as exc:
            response = Response.text(exc.status, exc.text, close=True)
        await self._respond(response)

    async def _respond(self, response: Response, head: bool = False) -> None:
        length = response.length if response.chunks is not None else len(response.body)
        headers = [
            ("Server", SERVER_HEADER),
            ("Content-Type", response.content_type),
            ("Content-Length", str(length)),
            ("X-Content-Type-Options", "nosniff"),
            *response.headers,
        ]
        if response.close:
            headers.append(("Connection", "close"))
        events: list[Any] = [
            h11.Response(status_code=response.status, headers=headers, reason=_reason(response))
        ]
        if response.chunks is not None and not head:
            await self._send(*events)
            await self._send_chunks(response.chunks, length)
            return
        if response.body and not head:
            events.append(h11.Data(data=response.body))
        events.append(h11.EndOfMessage())
        await self._send(*events)

    async def _send_chunks(self, chunks: Callable[[], AsyncIterator[bytes]], length: int) -> None:
        """A streamed body: each part under ``send_timeout``. h11 refuses to send more than
        ``Content-Length``; a source that ends short raises, so the connection closes and the
        client sees a truncated response, never one that looks complete."""
        sent = 0
        async for chunk in chunks():
            sent += len(chunk)
            if sent > length:
                raise anyio.BrokenResourceError(f"streamed body longer than {length} bytes")
            if chunk:
                await self._send(h11.Data(data=chunk))
        if sent != length:
            raise anyio.BrokenResourceError(f"streamed body ended at {sent} of {length} bytes")
        await self._send(h11.EndOfMessage())


def _reason(response: Response) -> bytes:
    try:
        return HTTPStatus(response.status).phrase.encode()
    except ValueError:
        return b""
