"""XMPP over BOSH (XEP-0124, XEP-0206) at ``/http-bind``: HTTP requests as a byte stream.

A BOSH session (:class:`BoshSession`) belongs to this node like a TCP connection: its
:class:`BoshStream` is an anyio byte stream fed by the payloads of the client's requests, in
rid order, and drained into the responses; the node runs the same
:class:`~xes.transport.c2s.ClientConnection` on it as on a socket (ADR 0016), in the task
group of :class:`BoshManager`, not inside any request's lifetime. The protocol rules (rid
window, retransmission cache, creation terms, body format) are :mod:`xes.session.bosh`; what
lives here is waiting: requests held up to ``wait``, at most ``hold`` of them, the inactivity
timer, and the limits (sessions per node and per address, elements waiting for a request).

How a session ends, and what the XMPP session sees:

* the client's ``type='terminate'``: ``</stream:stream>`` after its payload (a clean close);
* the server closes the stream (an error, shutdown): the last response is ``type='terminate'``
  (``remote-stream-error`` with the ``<stream:error/>`` when there is one);
* no request open for ``inactivity`` seconds, or more than ``max_pending`` elements waiting for
  one (a client that stopped reading): end of stream, so the session is "disconnected" and
  XEP-0198 detaches a resumable one; the client resumes it in a new BOSH session.

Errors are terminate bodies with HTTP 200 (§17.1), never the deprecated HTTP codes of §17.2:
every client in use sends ``ver``, and StanzaJS retries a request on an HTTP error instead of
reading it. An unknown ``sid`` is ``item-not-found`` like a rid outside the window.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import anyio
import structlog
from anyio.abc import ByteStream, TaskGroup

from xes.config import BoshConfig
from xes.http.server import Request, Response
from xes.http.websocket import origin_allowed
from xes.session import bosh as proto

log = structlog.get_logger("xes.bosh")

PATH = "/http-bind"
CONTENT_TYPE = "text/xml; charset=utf-8"
STREAM_END = b"</stream:stream>"

RunClient = Callable[[ByteStream, Request], Awaitable[None]]


class _Waiter:
    """One held request: answered once, by whoever has something for it first."""

    __slots__ = ("body", "done", "rid")

    def __init__(self, rid: int) -> None:
        self.rid = rid
        self.body: bytes | None = None
        self.done = anyio.Event()


class BoshStream(ByteStream):
    """The XMPP stream of one BOSH session, as the byte stream ClientConnection reads."""

    def __init__(self, session: BoshSession) -> None:
        self.session = session

    @property
    def extra_attributes(self) -> dict[Any, Callable[[], Any]]:
        return {}

    async def receive(self, max_bytes: int = 65536) -> bytes:
        inbound = self.session.inbound
        while not inbound:
            if self.session.inbound_ended:
                raise anyio.EndOfStream
            self.session.inbound_ready = anyio.Event()
            await self.session.inbound_ready.wait()
        data = inbound.popleft()
        if len(data) > max_bytes:
            inbound.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        return data

    async def send(self, item: bytes) -> None:
        # After the end nothing reaches the client; the session learns it from the end of its
        # input (raising here would make a client's own clean close look like a lost link).
        if not self.session.ended:
            self.session.output(item)

    async def send_eof(self) -> None:
        self.session.end(None)

    async def aclose(self) -> None:
        self.session.end(None)


class BoshSession:
    """One BOSH session: rid bookkeeping, held requests and the elements waiting for them."""

    def __init__(
        self, manager: BoshManager, sid: str, terms: proto.SessionTerms, rid: int, peer: str
    ) -> None:
        self.manager = manager
        self.sid = sid
        self.terms = terms
        self.peer = peer
        self.creation_rid = rid
        self.window = proto.RidWindow(next_rid=rid + 1, requests=terms.requests)
        self.outbound = proto.BoshOutbound()
        self.pending: list[str] = []
        """Elements the session wrote that no response carried yet."""
        self.held: list[_Waiter] = []
        """Requests waiting for output, oldest (lowest rid) first."""
        self.inbound: deque[bytes] = deque()
        self.inbound_ready = anyio.Event()
        self.inbound_ended = False
        self.ended = False
        self.final: bytes | None = None
        """The terminate body owed to the client's next request after the server ended."""
        self.last_answer = time.monotonic()
        self.idle_since: float | None = time.monotonic()
        """Since when no request is held (None while one is): the inactivity clock (§7.1)."""
        self._idle_changed = anyio.Event()
        self.stream = BoshStream(self)

    # -- towards the XMPP session ----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if data and not self.inbound_ended:
            self.inbound.append(data)
            self.inbound_ready.set()

    def process(self, request: proto.BodyRequest) -> None:
        """A request's contribution to the stream, once it is its turn (rid order)."""
        if request.restart:
            self.feed(proto.session_header(self.terms))
        self.feed(request.payload)
        if request.terminate:
            self.feed(STREAM_END)
            self.inbound_ended = True
            self.inbound_ready.set()

    # -- from the XMPP session --------------------------------------------------------------

    def output(self, data: bytes) -> None:
        self.pending += self.outbound.outbound(data)
        if len(self.pending) > self.manager.config.max_pending:
            log.warning("bosh_client_too_slow", sid=self.sid, pending=len(self.pending))
            self.pending = []  # XEP-0198 resends what is unacknowledged on resumption
            self.end("policy-violation")
            return
        if self.outbound.closed:
            condition = "remote-stream-error" if self.outbound.stream_error else None
            self.end(condition)
        elif self.pending and self.held:
            self.answer(self.held[0])

    # -- requests ---------------------------------------------------------------------------

    def hold(self, rid: int) -> _Waiter:
        for i, held in enumerate(self.held):
            if held.rid == rid:
                # InFlight: the client re-sent a request it gave up on; the new copy waits.
                self.held[i] = waiter = _Waiter(rid)
                held.body = proto.response_body([])
                held.done.set()
                return waiter
        waiter = _Waiter(rid)
        self.held.append(waiter)
        self.held.sort(key=lambda w: w.rid)
        self._set_idle(None)
        return waiter

    def answer(self, waiter: _Waiter) -> None:
        """Answer ``waiter`` with everything pending (one response carries it all)."""
        if waiter.done.is_set():
            return
        elements, self.pending = self.pending, []
        if waiter.rid == self.creation_rid:
            # The creation response: its attributes (with the stream id the header gave).
            attrs = proto.creation_attrs(self.terms, self.sid, waiter.rid, self.outbound.stream_id)
        else:
            ack = self.window.ack_for(waiter.rid) if self.terms.ack else None
            attrs = f" ack='{ack}'" if ack is not None else ""
        self._settle(waiter, proto.response_body(elements, attrs))

    def _settle(self, waiter: _Waiter, body: bytes) -> None:
        waiter.body = body
        waiter.done.set()
        self.window.answered(waiter.rid, body)
        self.last_answer = time.monotonic()
        with contextlib.suppress(ValueError):
            self.held.remove(waiter)
        if not self.held:
            self._set_idle(time.monotonic())

    def _set_idle(self, since: float | None) -> None:
        if (since is None) != (self.idle_since is None):
            self.idle_since = since
            self._idle_changed.set()

    def end(self, condition: str | None) -> None:
        """End the BOSH session: held requests get the terminate body (the oldest with what
        is pending), the XMPP session's stream ends, the sid is forgotten."""
        if not self.inbound_ended:
            self.inbound_ended = True
            self.inbound_ready.set()
        if self.ended:
            return
        self.ended = True
        log.info("bosh_session_ended", sid=self.sid, condition=condition)
        final = proto.terminate_body(condition, self.pending)
        self.pending = []
        for waiter in list(self.held):
            self._settle(waiter, final)
            final = proto.terminate_body(condition)
        # With no request open, the client's next one gets the ending (kept a while).
        self.final = final
        self._idle_changed.set()
        self.manager.forget(self, linger=self.terms.wait + self.terms.inactivity)

    def expire(self) -> None:
        """No request for ``inactivity`` seconds: the client is gone (§7.1)."""
        log.info("bosh_session_inactive", sid=self.sid, seconds=self.terms.inactivity)
        self.end(None)

    async def watch(self) -> None:
        """The inactivity timer: runs as long as the session, wakes only when the session
        goes idle or busy (or its idle time is up)."""
        while not self.ended:
            self._idle_changed = anyio.Event()
            since = self.idle_since
            left = math.inf if since is None else since + self.terms.inactivity - time.monotonic()
            if left <= 0:
                self.expire()
                return
            with anyio.move_on_after(left):
                await self._idle_changed.wait()

    async def wait_for(self, waiter: _Waiter, wait: float) -> bytes:
        with anyio.move_on_after(wait):
            await waiter.done.wait()
        if waiter.body is None:
            self.answer(waiter)  # wait expired: an empty response (§11)
        assert waiter.body is not None
        return waiter.body


class BoshManager:
    """The BOSH sessions of one node, their task group and the ``/http-bind`` handler."""

    def __init__(
        self,
        config: BoshConfig,
        *,
        domain: str,
        allowed_origins: tuple[str, ...],
        tls_required: bool,
        run_client: RunClient,
        hosts: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self.config = config
        self.domain = domain
        self.hosts = hosts
        """Every hosted domain, read at each session creation (a reload may add one)."""
        self.allowed_origins = allowed_origins
        self.tls_required = tls_required
        self.run_client = run_client
        self.limits = proto.SessionLimits(
            max_wait=config.max_wait,
            max_hold=config.max_hold,
            inactivity=config.inactivity,
            polling=config.polling,
        )
        self.sessions: dict[str, BoshSession] = {}
        self.ended: dict[str, BoshSession] = {}
        """Sessions the server ended, kept until their client has had the terminate body."""
        self._per_address: dict[str, int] = {}
        self._tg: TaskGroup | None = None

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """The task group every session's XMPP connection and timer run in."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    def forget(self, session: BoshSession, linger: float) -> None:
        if self.sessions.pop(session.sid, None) is None:
            return
        left = self._per_address.get(session.peer, 1) - 1
        if left:
            self._per_address[session.peer] = left
        else:
            self._per_address.pop(session.peer, None)
        if session.final is not None and self._tg is not None:
            if len(self.ended) >= self.config.max_sessions:
                self.ended.pop(next(iter(self.ended)))  # bounded: the oldest ending goes
            self.ended[session.sid] = session
            self._tg.start_soon(self._drop_later, session.sid, linger)

    async def _drop_later(self, sid: str, delay: float) -> None:
        await anyio.sleep(delay)
        self.ended.pop(sid, None)

    # -- HTTP ------------------------------------------------------------------------------

    def _cors(self, request: Request) -> list[tuple[str, str]]:
        origin = request.headers.get("origin")
        if origin is None:
            return []
        allow = "*" if "*" in self.allowed_origins else origin
        return [("Access-Control-Allow-Origin", allow), ("Vary", "Origin")]

    def _xml(self, request: Request, body: bytes) -> Response:
        return Response(200, body, CONTENT_TYPE, headers=self._cors(request))

    async def handle(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        if not origin_allowed(self.allowed_origins, origin):
            # CSRF: a page of another origin must not drive a session through its visitor.
            log.info("bosh_origin_refused", origin=origin, peer=request.peer)
            return Response.text(403, "origin not allowed ([http] allowed_origins)")
        if request.method == "OPTIONS":
            return Response(
                200,
                headers=[
                    *self._cors(request),
                    ("Access-Control-Allow-Methods", "POST, OPTIONS"),
                    ("Access-Control-Allow-Headers", "Content-Type"),
                    ("Access-Control-Max-Age", "86400"),
                ],
            )
        if request.method != "POST":
            return Response.text(200, "XMPP over BOSH (XEP-0206): POST <body/> requests here")
        if self.tls_required and not request.secure:
            return Response.text(403, "use https: [tls] required is on")
        try:
            body = proto.parse_body(request.body)
        except proto.BoshError as exc:
            log.info("bosh_bad_request", reason=exc.text, peer=request.peer)
            return self._xml(request, proto.terminate_body(exc.condition))
        if body.sid is None:
            return self._xml(request, await self._create(request, body))
        session = self.sessions.get(body.sid)
        if session is None:
            ended = self.ended.pop(body.sid, None)
            final = ended.final if ended is not None else None
            return self._xml(request, final or proto.terminate_body("item-not-found"))
        return self._xml(request, await self._request(session, body))

    async def _create(self, request: Request, body: proto.BodyRequest) -> bytes:
        cfg = self.config
        if (
            len(self.sessions) >= cfg.max_sessions
            or self._per_address.get(request.peer, 0) >= cfg.max_sessions_per_address
        ):
            log.info("bosh_session_refused", peer=request.peer, reason="too many sessions")
            return proto.terminate_body("policy-violation")
        try:
            hosts = self.hosts() if self.hosts is not None else self.domain
            terms = proto.negotiate(body, self.limits, hosts)
        except proto.BoshError as exc:
            return proto.terminate_body(exc.condition)
        assert self._tg is not None, "BoshManager.run must be started first"
        sid = secrets.token_urlsafe(18)
        session = BoshSession(self, sid, terms, body.rid, request.peer)
        self.sessions[sid] = session
        self._per_address[request.peer] = self._per_address.get(request.peer, 0) + 1
        # Requests of one session may reach us over different TLS connections: there is no
        # one channel to bind SCRAM-PLUS to.
        self._tg.start_soon(self._run, session, dataclasses.replace(request, ssl_object=None))
        self._tg.start_soon(session.watch)
        log.info("bosh_session_created", sid=sid, peer=request.peer, hold=terms.hold)
        session.feed(proto.session_header(terms))
        session.feed(body.payload)
        # The response carries the first stream features (XEP-0206 §3), whatever ``hold``.
        waiter = session.hold(body.rid)
        return await session.wait_for(waiter, max(terms.wait, 1))

    async def _run(self, session: BoshSession, request: Request) -> None:
        try:
            await self.run_client(session.stream, request)
        finally:
            session.end(None)

    async def _request(self, session: BoshSession, body: proto.BodyRequest) -> bytes:
        try:
            verdict = session.window.receive(body)
        except proto.BoshError as exc:
            log.info("bosh_rid_refused", sid=session.sid, rid=body.rid, reason=exc.text)
            session.end(exc.condition)
            return proto.terminate_body(exc.condition)
        if isinstance(verdict, proto.Replay):
            return verdict.body
        if isinstance(verdict, proto.Accepted):
            since = time.monotonic() - session.last_answer
            if proto.too_frequent(session.terms, body, len(session.held), since):
                log.info("bosh_polling_too_often", sid=session.sid, peer=session.peer)
                session.end("policy-violation")
                return proto.terminate_body("policy-violation")
            for ready in verdict.ready:
                session.process(ready)
        waiter = session.hold(body.rid)
        if session.inbound_ended:
            session.end(None)  # the client's terminate came in its turn (its payload went first)
        elif len(session.held) > session.terms.hold:
            session.answer(session.held[0])  # §11: never more than hold
        elif session.pending:
            session.answer(session.held[0])
        if not waiter.done.is_set() and session.terms.hold == 0:
            await anyio.sleep(0)  # polling: answered now, with what the payload brought at once
            session.answer(waiter)
        return await session.wait_for(waiter, session.terms.wait)
