"""Client connections on anyio: runs :class:`~xes.session.c2s.C2SProtocol` over a socket.

Before binding, replies go straight to the socket from the reading task (STARTTLS must swap the
stream under it). After binding, everything the client receives goes through one bounded queue
drained by a writer task, so delivery never blocks on a slow client: a client whose queue is full
is disconnected instead of stalling the node. Authentication and idle time are bounded by
``limits.auth_timeout`` and ``limits.idle_timeout``; inbound stanzas are rate limited with a token
bucket that throttles reading (backpressure rather than loss).
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import time
from typing import Any

import anyio
import structlog
from anyio.abc import ByteStream
from anyio.streams.tls import TLSAttribute, TLSStream

from xes import router
from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events.catalog import SessionBound, SessionEnded
from xes.features import presence
from xes.hub import Hub
from xes.jid import JID, normalize_localpart
from xes.projections import accounts as accounts_view
from xes.projections import sessions as sessions_view
from xes.session.c2s import (
    Action,
    Authenticated,
    AuthFailed,
    BindRequested,
    C2SPolicy,
    C2SProtocol,
    Close,
    Send,
    StanzaReceived,
    StartTls,
)
from xes.session.sasl import LoginLimiter, channel_binding_data

log = structlog.get_logger("xes.c2s")

READ_SIZE = 65536
TLS_HANDSHAKE_TIMEOUT = 15.0
CLOSE_TIMEOUT = 5.0
LINGER_SECONDS = 1.0
LINGER_BYTES = 4 * 1024 * 1024


class ClientConnection:
    """One client stream from accept to close; after bind it is a :class:`~xes.hub.LocalSession`."""

    def __init__(
        self,
        hub: Hub,
        stream: ByteStream,
        tls_context: ssl.SSLContext,
        cert_der: bytes,
        limiter: LoginLimiter,
        peer: str,
        direct_tls: bool,
    ) -> None:
        self.hub = hub
        self.stream: ByteStream = stream
        self.tls_context = tls_context
        self.cert_der = cert_der
        self.limiter = limiter
        self.peer = peer
        self.direct_tls = direct_tls
        config = hub.config
        self.protocol = C2SProtocol(
            C2SPolicy(
                domain=config.domain,
                tls_required=config.tls.required,
                mechanisms=config.auth.mechanisms,
                limits=config.xml_limits,
            ),
            credentials=self._credentials,
            normalize_username=normalize_localpart,
            auth_allowed=self._auth_allowed,
        )
        self.session_id = ""
        self.jid: JID = JID(None, config.domain, None)
        self.full = ""
        self.bare = ""
        self.available = False
        self.interested = False
        self.priority = 0
        self.flushed_upto = 0
        self._flushing = False
        self._flush_again = False
        self.bound = False
        self.boot = hub.boot
        """The node boot this session was bound under (a node starts a new boot on rejoining)."""
        self.closing = False
        self._send_out, self._recv_out = anyio.create_memory_object_stream[bytes | None](
            config.limits.outbound_queue
        )
        self._tokens = float(config.limits.stanza_burst)
        self._refilled = time.monotonic()
        self._close_reason = "closed"
        self._cancel = anyio.CancelScope()
        self._writer_done = anyio.Event()

    # -- LocalSession ------------------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self._send_out.send_nowait(data)
        except anyio.WouldBlock:
            log.warning("client_too_slow", session=self.session_id, jid=self.full)
            self.close("policy-violation", "too slow: outbound queue full")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def offline_stored(self) -> None:
        if not self.available or self.closing:
            return
        self._flush_again = True  # a flush in progress may have read before this message
        if not self._flushing:
            self._flushing = True
            self._tg.start_soon(self._flush_offline)

    async def _flush_offline(self) -> None:
        try:
            while self._flush_again:
                self._flush_again = False
                await presence.flush_offline(self.hub, self)
        except (LogUnavailable, ProposalRejected) as exc:
            log.warning("offline_flush_not_recorded", error=str(exc), session=self.session_id)
        finally:
            self._flushing = False

    def close(self, condition: str | None, text: str | None = None) -> None:
        if self.closing:
            return
        self.closing = True
        self._close_reason = condition or "closed"
        tail = b""
        for action in self.protocol.stream_error(condition, text) if condition else []:
            if isinstance(action, Send):
                tail += action.data
        if not condition:
            tail = b"</stream:stream>"
        with contextlib.suppress(
            anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError
        ):
            self._send_out.send_nowait(tail)
        with contextlib.suppress(
            anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError
        ):
            self._send_out.send_nowait(None)
        if not self.bound:
            self._cancel.cancel()

    # -- auth helpers --------------------------------------------------------------------------

    def _credentials(self, username: str) -> dict[str, Any] | None:
        with self.hub.read() as txn:
            return accounts_view.credentials(self.hub.store, txn, f"{username}@{self.hub.domain}")

    def _auth_allowed(self, username: str) -> bool:
        return self.limiter.check(username, self.peer, time.monotonic())

    # -- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self._cancel:
                if self.direct_tls:
                    await self._start_tls()
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    await self._read_loop()
                    if self.bound:
                        # Let the writer flush what is queued (e.g. our stream error) and stop.
                        with contextlib.suppress(
                            anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError
                        ):
                            self._send_out.send_nowait(None)
                        with anyio.move_on_after(CLOSE_TIMEOUT):
                            await self._writer_done.wait()
                    tg.cancel_scope.cancel()
        except (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
            OSError,
            ssl.SSLError,
        ):
            pass
        except Exception as exc:
            log.error("connection_failed", error=repr(exc), session=self.session_id, exc_info=True)
            with contextlib.suppress(Exception):
                await self._raw_send(b"</stream:stream>")
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish()

    async def _read_loop(self) -> None:
        limits = self.hub.config.limits
        deadline = time.monotonic() + limits.auth_timeout
        while True:
            timeout = limits.idle_timeout if self.bound else deadline - time.monotonic()
            data = b""
            with anyio.move_on_after(max(timeout, 0)) as scope:
                try:
                    data = await self.stream.receive(READ_SIZE)
                except (
                    anyio.EndOfStream,
                    anyio.BrokenResourceError,
                    anyio.ClosedResourceError,
                    OSError,
                    ssl.SSLError,
                ):
                    self.closing = True
                    self._close_reason = (
                        self._close_reason if self._close_reason != "closed" else "disconnected"
                    )
                    return
            if not data and not scope.cancelled_caught:
                self.closing = True
                return
            if not data:
                if self.closing:
                    return
                condition = "connection-timeout"
                await self._execute(self.protocol.stream_error(condition, "timed out"))
                return
            if await self._execute(self.protocol.receive_data(data)):
                return

    async def _execute(self, actions: list[Action]) -> bool:
        """Carry out protocol actions; True when the stream is finished."""
        for action in actions:
            if isinstance(action, Send):
                await self._out(action.data)
            elif isinstance(action, StanzaReceived):
                await self._throttle()
                try:
                    await router.dispatch(self.hub, self, action.stanza)
                except router.InvalidFrom:
                    await self._execute(self.protocol.stream_error("invalid-from", None))
                    return True
            elif isinstance(action, StartTls):
                await self._start_tls()
            elif isinstance(action, BindRequested):
                await self._bind(action)
            elif isinstance(action, Authenticated):
                self.limiter.record_success(action.username, self.peer, time.monotonic())
                log.info(
                    "authenticated",
                    user=action.username,
                    mechanism=action.mechanism,
                    peer=self.peer,
                )
            elif isinstance(action, AuthFailed):
                self.limiter.record_failure(action.username or "", self.peer, time.monotonic())
                log.info("auth_failed", condition=action.condition, peer=self.peer)
            elif isinstance(action, Close):
                self.closing = True
                self._close_reason = action.condition or "closed"
                return True
        return False

    async def _out(self, data: bytes) -> None:
        if self.bound:
            self.send_bytes(data)
        else:
            await self._raw_send(data)

    async def _raw_send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def _throttle(self) -> None:
        limits = self.hub.config.limits
        now = time.monotonic()
        self._tokens = min(
            limits.stanza_burst, self._tokens + (now - self._refilled) * limits.stanzas_per_second
        )
        self._refilled = now
        self._tokens -= 1
        if self._tokens < 0:
            await anyio.sleep(-self._tokens / limits.stanzas_per_second)

    async def _start_tls(self) -> None:
        with anyio.fail_after(TLS_HANDSHAKE_TIMEOUT):
            self.stream = await TLSStream.wrap(
                self.stream,
                server_side=True,
                ssl_context=self.tls_context,
                standard_compatible=False,
            )
        ssl_object = self.stream.extra(TLSAttribute.ssl_object)
        self.protocol.tls_started(channel_binding_data(ssl_object, server_cert_der=self.cert_der))

    async def _bind(self, action: BindRequested) -> None:
        session_id = secrets.token_urlsafe(18)
        self.boot = self.hub.boot
        event = SessionBound(session_id, str(action.jid), self.hub.node, self.boot)
        try:
            await self.hub.log.append(event)
        except (LogUnavailable, ProposalRejected) as exc:
            log.warning("bind_failed", error=str(exc))
            await self._execute(self.protocol.bind_failed(action.iq_id, "resource-constraint"))
            return
        self.session_id = session_id
        self.jid = action.jid
        self.full = str(action.jid)
        self.bare = str(action.jid.bare)
        self.bound = True
        structlog.contextvars.bind_contextvars(session=session_id, jid=self.full)
        self.hub.register(self)
        self._tg.start_soon(self._writer)
        log.info("session_bound", peer=self.peer)
        await self._execute(self.protocol.bind_succeeded(action.iq_id, action.jid))

    async def _writer(self) -> None:
        try:
            await self._write_queued()
        finally:
            self._writer_done.set()
        self._tg.cancel_scope.cancel()

    async def _write_queued(self) -> None:
        async with self._recv_out:
            async for data in self._recv_out:
                if data is None:
                    break
                buf = [data]
                # Coalesce whatever is queued into one write (one TLS record, one syscall).
                while len(buf) < 64:
                    try:
                        more = self._recv_out.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    if more is None:
                        await self._write(b"".join(buf))
                        return
                    buf.append(more)
                if not await self._write(b"".join(buf)):
                    return

    async def _write(self, data: bytes) -> bool:
        try:
            await self.stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError):
            self.closing = True
            self._close_reason = "disconnected"
            return False
        return True

    async def _finish(self) -> None:
        """Record the end of the session (RFC 6121 §4.5.2 unavailable presence) and close."""
        if self.bound:
            self.hub.unregister(self)
            events: list[Any] = []
            with self.hub.read() as txn:
                # Ended already by the cluster (node declared down, replaced by a session with
                # the same JID on another node, account removed): its end is on record.
                live = sessions_view.get(self.hub.store, txn, self.session_id) is not None
            if live and self.available:
                events.append(presence.unavailable_event(self.hub, self, None))
            if live:
                events.append(SessionEnded(self.session_id, self.full, self._close_reason))
                with anyio.move_on_after(CLOSE_TIMEOUT):
                    try:
                        await self.hub.log.append(*events)
                    except (LogUnavailable, ProposalRejected) as exc:
                        log.warning(
                            "session_end_not_recorded", error=str(exc), session=self.session_id
                        )
            log.info("session_ended", reason=self._close_reason, session=self.session_id)
            # Anything still queued (error tail, close) goes out before the socket closes.
            with anyio.move_on_after(1.0):
                pending = []
                while True:
                    try:
                        item = self._recv_out.receive_nowait()
                    except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.EndOfStream):
                        break
                    if item is None:
                        break
                    pending.append(item)
                if pending:
                    with contextlib.suppress(Exception):
                        await self.stream.send(b"".join(pending))
        await self._linger()
        with anyio.move_on_after(1.0), contextlib.suppress(Exception):
            await self.stream.aclose()

    async def _linger(self) -> None:
        """Read and drop what the client still sends for a moment before closing.

        Closing a socket with unread input makes the kernel answer with a reset, which can
        destroy our stream error before the client reads it. A bounded drain avoids that.
        """
        with anyio.move_on_after(LINGER_SECONDS), contextlib.suppress(Exception):
            with contextlib.suppress(Exception):
                await self.stream.send_eof()
            drained = 0
            while drained < LINGER_BYTES:
                chunk = await self.stream.receive(READ_SIZE)
                drained += len(chunk)
