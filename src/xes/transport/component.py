"""External component connections on anyio (XEP-0114): :class:`ComponentProtocol` over a socket.

Like a client connection (:mod:`xes.transport.c2s`): the XML limits of ``[limits]`` apply,
the handshake must finish within ``limits.auth_timeout`` and a quiet stream is closed after
``limits.idle_timeout``; everything the component receives goes through one bounded queue
drained by a writer task, so delivery never blocks on it and a component that stops reading is
disconnected (``policy-violation``) when ``limits.outbound_queue`` stanzas are waiting.
Failed handshakes count in a login limiter per component name and per address.

A correct handshake is not enough: the connection must be recorded as the holder of the name
(``component.connected``, ADR 0018) before ``<handshake/>`` is sent; a name held anywhere in
the cluster gets ``<conflict/>``. Its end is recorded (``component.disconnected``) so the
component can connect again at once, here or on another node.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import time

import anyio
import structlog
from anyio.abc import ByteStream, TaskGroup
from anyio.streams.tls import TLSStream

from xes import router
from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events.catalog import ComponentConnected, ComponentDisconnected, ComponentRouted
from xes.hub import Hub
from xes.session.component import (
    Action,
    Close,
    ComponentPolicy,
    ComponentProtocol,
    HandshakeAccepted,
    HandshakeFailed,
    Send,
    StanzaReceived,
)
from xes.session.sasl import LoginLimiter
from xes.transport.c2s import CLOSE_TIMEOUT, READ_SIZE, TLS_HANDSHAKE_TIMEOUT, linger

log = structlog.get_logger("xes.component")

READ_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
    ssl.SSLError,
)


class ComponentConnection:
    """One component stream from accept to close; once recorded it is a
    :class:`~xes.hub.ComponentLink` in ``hub.components``."""

    def __init__(
        self,
        hub: Hub,
        stream: ByteStream,
        tls_context: ssl.SSLContext | None,
        limiter: LoginLimiter,
        peer: str,
    ) -> None:
        self.hub = hub
        self.stream: ByteStream = stream
        self.tls_context = tls_context
        """Direct TLS (``[listen] component_tls``) when set."""
        self.limiter = limiter
        self.peer = peer
        self.domain = ""
        self.conn = secrets.token_hex(8)
        self.boot = hub.boot
        """The node boot the connection was recorded under (a rejoin closes older ones)."""
        self.recorded = False
        self.closing = False
        self._reason = "closed"
        self.protocol = ComponentProtocol(
            ComponentPolicy(
                secret_for=self._secret_for,
                allowed=lambda domain: limiter.check(domain, peer, time.monotonic()),
                limits=hub.config.xml_limits,
            ),
            stream_id=secrets.token_hex(12),
        )
        self._send_out, self._recv_out = anyio.create_memory_object_stream[bytes | None](
            hub.config.limits.outbound_queue
        )
        self._cancel = anyio.CancelScope()

    def _secret_for(self, domain: str) -> str | None:
        component = self.hub.config.component(domain)
        return None if component is None else component.read_secret()

    # -- ComponentLink --------------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self._send_out.send_nowait(data)
        except anyio.WouldBlock:
            log.warning("component_too_slow", component=self.domain)
            self.close("policy-violation", "too slow: outbound queue full")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def close(self, condition: str | None, text: str | None = None) -> None:
        if self.closing:
            return
        tail = b"</stream:stream>"
        if condition:
            tail = b"".join(
                a.data for a in self.protocol.stream_error(condition, text) if isinstance(a, Send)
            )
        self.closing = True
        self._reason = condition or "closed"
        try:
            self._send_out.send_nowait(tail)
            self._send_out.send_nowait(None)
        except anyio.WouldBlock:
            self._cancel.cancel()  # it reads nothing: no stream error can reach it anyway
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    # -- main loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self._cancel:
                if self.tls_context is not None:
                    with anyio.fail_after(TLS_HANDSHAKE_TIMEOUT):
                        self.stream = await TLSStream.wrap(
                            self.stream,
                            server_side=True,
                            ssl_context=self.tls_context,
                            standard_compatible=False,
                        )
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._writer, tg)
                    await self._read_loop()
                    if self._reason == "disconnected":
                        tg.cancel_scope.cancel()  # nobody to write to: record the end now
                    elif not self.closing:
                        self.close(None)
                    with anyio.move_on_after(CLOSE_TIMEOUT):
                        await anyio.sleep_forever()  # the writer cancels us once it is done
                    tg.cancel_scope.cancel()
        except (*READ_ERRORS, TimeoutError):
            pass
        except Exception as exc:
            log.error("component_failed", error=repr(exc), component=self.domain, exc_info=True)
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish()

    async def _read_loop(self) -> None:
        limits = self.hub.config.limits
        deadline = time.monotonic() + limits.auth_timeout
        while not self.closing:
            timeout = limits.idle_timeout if self.recorded else deadline - time.monotonic()
            data = b""
            with anyio.move_on_after(max(timeout, 0)) as scope:
                try:
                    data = await self.stream.receive(READ_SIZE)
                except READ_ERRORS:
                    self._reason = "disconnected"
                    self.closing = True
                    return
            if scope.cancelled_caught:
                await self._execute(self.protocol.stream_error("connection-timeout", "timed out"))
                return
            if await self._execute(self.protocol.receive_data(data)):
                return

    async def _execute(self, actions: list[Action]) -> bool:
        """Carry out the protocol's actions; True once the stream is over."""
        for action in actions:
            if isinstance(action, Send):
                self.send_bytes(action.data)
            elif isinstance(action, StanzaReceived):
                await router.dispatch_from_component(self.hub, self, action.stanza)
            elif isinstance(action, HandshakeAccepted):
                if not await self._take(action.domain):
                    return True
            elif isinstance(action, HandshakeFailed):
                self.limiter.record_failure(action.domain, self.peer, time.monotonic())
                log.warning("component_handshake_failed", component=action.domain, peer=self.peer)
            elif isinstance(action, Close):
                self._reason = action.condition or "closed"
                if not self.closing:
                    self.closing = True
                    with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
                        self._send_out.send_nowait(None)
                return True
        return False

    async def _take(self, domain: str) -> bool:
        """Record this connection as the one holding ``domain`` in the cluster (ADR 0018)."""
        self.limiter.record_success(domain, self.peer, time.monotonic())
        refusal: tuple[str, str] | None = None
        if domain in self.hub.components:
            refusal = ("conflict", "the component is already connected")
        elif not self.hub.gate.allows(ComponentConnected, ComponentDisconnected, ComponentRouted):
            # ADR 0022: a member too old to read component events would stop on them.
            refusal = ("policy-violation", "components wait until every cluster node is upgraded")
        else:
            try:
                await self.hub.log.append(
                    ComponentConnected(domain, self.hub.node, self.boot, self.conn)
                )
            except ProposalRejected as exc:
                if exc.reason.startswith("component-conflict"):
                    refusal = ("conflict", "the component is connected to another node")
                else:
                    refusal = ("reset", "this node cannot take components now; reconnect")
            except LogUnavailable:
                refusal = ("internal-server-error", "the cluster cannot record this now")
        if refusal is not None:
            log.info("component_refused", component=domain, condition=refusal[0])
            await self._execute(self.protocol.refused(*refusal))
            return False
        self.domain = domain
        self.recorded = True
        self.hub.components[domain] = self
        log.info("component_connected", component=domain, peer=self.peer, conn=self.conn)
        return not await self._execute(self.protocol.accepted())

    async def _writer(self, tg: TaskGroup) -> None:
        async with self._recv_out:
            async for data in self._recv_out:
                if data is None:
                    break
                buf, last = [data], False
                # Coalesce whatever is queued into one write (one TLS record, one syscall).
                while len(buf) < 64:
                    try:
                        more = self._recv_out.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    if more is None:
                        last = True
                        break
                    buf.append(more)
                try:
                    await self.stream.send(b"".join(buf))
                except READ_ERRORS:
                    self._reason = "disconnected"
                    break
                if last:
                    break
        self.closing = True
        tg.cancel_scope.cancel()

    async def _finish(self) -> None:
        if self.recorded:
            if self.hub.components.get(self.domain) is self:
                del self.hub.components[self.domain]
            event = ComponentDisconnected(
                self.domain, self.hub.node, self.boot, self.conn, self._reason
            )
            with (
                anyio.move_on_after(CLOSE_TIMEOUT),
                contextlib.suppress(LogUnavailable, ProposalRejected),
            ):
                await self.hub.log.append(event)
            log.info("component_disconnected", component=self.domain, reason=self._reason)
        await linger(self.stream)
        with anyio.move_on_after(1.0), contextlib.suppress(Exception):
            await self.stream.aclose()
