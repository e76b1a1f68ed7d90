"""Server-to-server connections on anyio (RFC 6120, XEP-0368, XEP-0178, XEP-0220; ADR 0025).

:class:`S2SService` is this node's :class:`xes.hub.S2SLinks`: ``send(local, remote, data)``
queues a stanza on the outgoing link for that domain pair, opening it on first use
(:mod:`xes.transport.s2s_resolve` says where; STARTTLS or direct TLS; SASL EXTERNAL, else
dialback when the policy allows it). A link that cannot be opened or authenticated within
``[s2s] connect_timeout`` bounces what waits on it (``remote-server-not-found`` for messages and
iq requests, RFC 6120 §8.3.3.16); presence, results and errors are dropped. Links are
one-way (RFC 6120 §4.2.1): the peer's stanzas arrive on the stream *it* opened to our listener
(:class:`InboundConnection`), which asks the peer's authoritative server about dialback keys
over a short verify stream (:meth:`S2SService.verify`).

Both directions run the sans-IO :mod:`xes.session.s2s`; stanzas received go to
:func:`xes.router.dispatch_from_remote`. Nothing here writes the log: the stanzas it sends were
committed as ``s2s.routed`` and handed over by delivery.
"""

from __future__ import annotations

import contextlib
import ssl
from collections import deque
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import ByteStream, TaskGroup
from anyio.streams.tls import TLSAttribute, TLSStream

from xes import router
from xes.config import S2SConfig
from xes.hub import Hub
from xes.jid import domain_part
from xes.session.c2s import Close, Send, StartTls
from xes.session.s2s import (
    Action,
    Authenticated,
    AuthenticationFailed,
    PeerAuthenticated,
    S2SInbound,
    S2SOutbound,
    S2SPolicy,
    StanzaReceived,
    VerifyAnswered,
    VerifyRequested,
)
from xes.stanza.core import error_reply
from xes.tlsutil import ALPN_XMPP_SERVER, HostContexts, peer_matches, s2s_client_context
from xes.transport.c2s import CLOSE_TIMEOUT, READ_SIZE, TLS_HANDSHAKE_TIMEOUT
from xes.transport.s2s_resolve import Target, resolve
from xes.xml import XmlStreamError, parse_fragment

log = structlog.get_logger("xes.s2s")

IO_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
    ssl.SSLError,
)
FINAL = (Authenticated, AuthenticationFailed, VerifyAnswered, Close)
"""Outbound actions that end negotiation (the rest are carried out on the way)."""


class S2SService:
    """This node's outgoing links and incoming s2s streams; see the module docstring."""

    def __init__(
        self,
        hub: Hub,
        tg: TaskGroup,
        config: S2SConfig,
        certs: dict[str, tuple[Path, Path]],
        inbound_tls: HostContexts,
        policy: S2SPolicy,
    ) -> None:
        self.hub = hub
        self.tg = tg
        self.config = config
        self.certs = certs
        self.inbound_tls = inbound_tls
        self.policy = policy
        self.links: dict[tuple[str, str], OutgoingLink] = {}
        self.inbound: set[InboundConnection] = set()

    # -- S2SLinks ------------------------------------------------------------------------

    def send(self, local: str, remote: str, data: bytes) -> None:
        if self.hub.is_local(remote):
            return  # never a link to ourselves (ADR 0023)
        if not self.hub.is_local(local):
            local = self.hub.domain  # a service's own name: the primary host speaks for it
        link = self.links.get((local, remote))
        if link is None or link.done:
            link = self.links[(local, remote)] = OutgoingLink(self, local, remote)
            self.tg.start_soon(link.run)
        link.queue(data)

    # -- helpers for both directions -----------------------------------------------------

    def client_context(self, local: str, *, verify: bool, direct: bool) -> ssl.SSLContext:
        cert = self.certs.get(local) or self.certs.get(self.hub.domain)
        return s2s_client_context(
            cert,
            verify=verify,
            ca_file=self.config.ca_file,
            alpn=(ALPN_XMPP_SERVER,) if direct else (),
        )

    def bounce(self, local: str, data: bytes, why: str) -> None:
        """RFC 6120 §8.3.3.16: a message or iq request that cannot leave gets an error from
        the remote address, delivered to its local sender like any stanza from there."""
        try:
            stanza = parse_fragment(data)
        except XmlStreamError:
            return
        if stanza.name == "presence" or stanza.get("type") in ("error", "result"):
            return
        reply = error_reply(stanza, "remote-server-not-found", why)
        self.tg.start_soon(router.dispatch_from_remote, self.hub, local, reply)

    async def verify(self, request: VerifyRequested) -> bool:
        """Ask ``request.originating``'s authoritative server whether a dialback key is
        valid (XEP-0220 §2.1.3), over a stream opened for that alone."""
        try:
            targets = await resolve(request.originating, self.config.hosts)
        except Exception as exc:  # DNS library errors of every kind: the key is not verified
            log.info("s2s_verify_unresolved", domain=request.originating, error=repr(exc))
            return False
        for target in targets:
            proto = S2SOutbound(
                self.policy, local=request.receiving, remote=request.originating, verify=[request]
            )
            with anyio.move_on_after(self.config.connect_timeout):
                try:
                    stream, final = await negotiate(self, target, proto, verify=False)
                except IO_ERRORS as exc:
                    log.info("s2s_verify_failed", target=target.host, error=repr(exc))
                    continue
                with contextlib.suppress(*IO_ERRORS):
                    await stream.aclose()
                if isinstance(final, VerifyAnswered):
                    return final.valid
        return False

    def close_all(self) -> None:
        for link in list(self.links.values()):
            link.close()
        for conn in list(self.inbound):
            conn.close("system-shutdown")


async def negotiate(
    service: S2SService, target: Target, proto: S2SOutbound, *, verify: bool
) -> tuple[ByteStream, Action]:
    """Connect to ``target`` and run ``proto`` until negotiation ends (authenticated, refused,
    a verify answer, closed). Raises ``ssl.SSLCertVerificationError`` when ``verify`` is set
    and the peer's certificate does not verify for the remote domain."""
    stream: ByteStream = await anyio.connect_tcp(target.host, target.port)
    try:
        ctx = service.client_context(proto.local, verify=verify, direct=target.direct_tls)
        if target.direct_tls:
            with anyio.fail_after(TLS_HANDSHAKE_TIMEOUT):
                stream = await TLSStream.wrap(
                    stream, hostname=proto.remote, ssl_context=ctx, standard_compatible=False
                )
            proto.secured = True  # XEP-0368: TLS from the first byte, no STARTTLS offered
        actions = proto.start()
        while True:
            for action in actions:
                if isinstance(action, Send):
                    await stream.send(action.data)
                elif isinstance(action, StartTls):
                    with anyio.fail_after(TLS_HANDSHAKE_TIMEOUT):
                        stream = await TLSStream.wrap(
                            stream,
                            hostname=proto.remote,
                            ssl_context=ctx,
                            standard_compatible=False,
                        )
                    actions = proto.tls_started()
                    break
                elif isinstance(action, FINAL):
                    return stream, action
            else:
                actions = proto.receive_data(await stream.receive(READ_SIZE))
    except BaseException:
        with anyio.CancelScope(shield=True), contextlib.suppress(*IO_ERRORS):
            await stream.aclose()
        raise


class OutgoingLink:
    """One stream from ``local`` to ``remote``: opened on the first stanza, bounced when it
    cannot be opened, reopened by the next stanza once it ended."""

    def __init__(self, service: S2SService, local: str, remote: str) -> None:
        self.service = service
        self.local = local
        self.remote = remote
        self.pending: deque[bytes] = deque()
        self.done = False
        self.proto: S2SOutbound | None = None
        self.direct_tls = False
        """The link runs on TLS from the first byte (XEP-0368), not STARTTLS."""
        self._wake = anyio.Event()
        self._cancel = anyio.CancelScope()
        self._limit = service.hub.config.limits.outbound_queue

    def queue(self, data: bytes) -> None:
        if len(self.pending) >= self._limit:
            self.service.bounce(self.local, data, "too many stanzas wait for this server")
            return
        self.pending.append(data)
        self._wake.set()

    def close(self) -> None:
        self._cancel.cancel()

    async def run(self) -> None:
        stream: ByteStream | None = None
        reason = "closed"
        try:
            with self._cancel:
                with anyio.move_on_after(self.service.config.connect_timeout):
                    stream, reason = await self._open()
                if stream is None:
                    log.warning("s2s_link_failed", local=self.local, remote=self.remote, why=reason)
                    return
                log.info(
                    "s2s_link_ready",
                    local=self.local,
                    remote=self.remote,
                    how=reason,
                    direct_tls=self.direct_tls,
                )
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._reader, stream, tg)
                    await self._writer(stream)
        except IO_ERRORS as exc:
            reason = repr(exc)
        except Exception as exc:
            log.error("s2s_link_crashed", remote=self.remote, error=repr(exc), exc_info=True)
        finally:
            self.done = True
            if self.service.links.get((self.local, self.remote)) is self:
                del self.service.links[(self.local, self.remote)]
            while self.pending:
                self.service.bounce(self.local, self.pending.popleft(), "cannot reach it")
            if stream is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(*IO_ERRORS):
                    with anyio.move_on_after(CLOSE_TIMEOUT):
                        await stream.send(b"</stream:stream>")
                    await stream.aclose()

    async def _open(self) -> tuple[ByteStream | None, str]:
        config = self.service.config
        try:
            targets = await resolve(self.remote, config.hosts)
        except Exception as exc:  # any DNS failure: nowhere to go
            return None, f"DNS: {exc!r}"
        why = "no server found for the domain"
        for target in targets:
            # A certificate that does not verify ends the handshake; with dialback allowed,
            # connect again without checking it and let dialback authenticate (ADR 0025).
            for verify in (True, False) if config.dialback else (True,):
                proto = S2SOutbound(self.service.policy, local=self.local, remote=self.remote)
                try:
                    stream, final = await negotiate(self.service, target, proto, verify=verify)
                except ssl.SSLCertVerificationError as exc:
                    why = f"certificate: {exc.verify_message}"
                    continue
                except IO_ERRORS as exc:
                    why = repr(exc)
                    break
                if isinstance(final, Authenticated):
                    self.proto, self.direct_tls = proto, target.direct_tls
                    return stream, final.method
                why = getattr(final, "reason", None) or "refused"
                with contextlib.suppress(*IO_ERRORS):
                    await stream.aclose()
                break
        return None, why

    async def _writer(self, stream: ByteStream) -> None:
        assert self.proto is not None
        while True:
            if not self.pending:
                self._wake = anyio.Event()
                await self._wake.wait()
            batch = []
            while self.pending and len(batch) < 64:
                data = self.pending.popleft()
                try:
                    batch.append(self.proto.stanza(parse_fragment(data)))
                except XmlStreamError:
                    continue
            await stream.send(b"".join(batch))

    async def _reader(self, stream: ByteStream, tg: TaskGroup) -> None:
        """Nothing but the close, a stream error or whitespace comes back on our stream."""
        assert self.proto is not None
        try:
            while not self.proto.closed:
                actions = self.proto.receive_data(await stream.receive(READ_SIZE))
                for action in actions:
                    if isinstance(action, Send):
                        await stream.send(action.data)
        except IO_ERRORS:
            pass
        tg.cancel_scope.cancel()


class InboundConnection:
    """One stream a peer server opened to our listener."""

    def __init__(self, service: S2SService, stream: ByteStream, direct_tls: bool) -> None:
        self.service = service
        self.hub = service.hub
        self.stream = stream
        self.direct_tls = direct_tls
        self.protocol = S2SInbound(service.policy, peer_cert_valid=self._peer_valid)
        self._lock = anyio.Lock()
        self._cancel = anyio.CancelScope()
        self._tg: TaskGroup | None = None

    def _peer_valid(self, domain: str) -> bool:
        ssl_object = self.stream.extra(TLSAttribute.ssl_object, None)
        if ssl_object is None:
            return False
        try:
            return peer_matches(ssl_object.getpeercert(), domain)
        except ValueError:
            return False

    def close(self, condition: str | None) -> None:
        self._cancel.cancel()

    async def run(self) -> None:
        try:
            with self._cancel:
                if self.direct_tls:
                    with anyio.fail_after(TLS_HANDSHAKE_TIMEOUT):
                        self.stream = await TLSStream.wrap(
                            self.stream,
                            server_side=True,
                            ssl_context=self.service.inbound_tls.entry,
                            standard_compatible=False,
                        )
                    self.protocol.tls_started()
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    await self._read_loop()
                    tg.cancel_scope.cancel()
        except (*IO_ERRORS, TimeoutError):
            pass
        except Exception as exc:
            log.error("s2s_inbound_failed", peer=self.protocol.peer, error=repr(exc), exc_info=True)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(*IO_ERRORS):
                with anyio.move_on_after(1.0):
                    await self.stream.aclose()

    async def _read_loop(self) -> None:
        limits = self.hub.config.limits
        while not self.protocol.closed:
            timeout = limits.idle_timeout if self.protocol.authenticated else limits.auth_timeout
            with anyio.move_on_after(timeout) as scope:
                try:
                    data = await self.stream.receive(READ_SIZE)
                except IO_ERRORS:
                    return
            if scope.cancelled_caught:
                await self._execute(self.protocol.stream_error("connection-timeout", "idle"))
                return
            if await self._execute(self.protocol.receive_data(data)):
                return

    async def _execute(self, actions: list[Any]) -> bool:
        """Carry out the protocol's actions; True once the stream is over."""
        for action in actions:
            if isinstance(action, Send):
                async with self._lock:
                    await self.stream.send(action.data)
            elif isinstance(action, StartTls):
                ctx = self.service.inbound_tls.for_host(self.protocol.local)
                with anyio.fail_after(TLS_HANDSHAKE_TIMEOUT):
                    self.stream = await TLSStream.wrap(
                        self.stream, server_side=True, ssl_context=ctx, standard_compatible=False
                    )
                self.protocol.tls_started()
            elif isinstance(action, VerifyRequested):
                assert self._tg is not None
                self._tg.start_soon(self._verify, action)
            elif isinstance(action, PeerAuthenticated):
                log.info(
                    "s2s_peer_authenticated",
                    remote=action.domain,
                    local=action.local,
                    how=action.method,
                )
            elif isinstance(action, StanzaReceived):
                local = domain_part(action.stanza.get("to"))
                await router.dispatch_from_remote(self.hub, local, action.stanza)
            elif isinstance(action, Close):
                return True
        return False

    async def _verify(self, request: VerifyRequested) -> None:
        valid = await self.service.verify(request)
        log.info("s2s_dialback_checked", remote=request.originating, valid=valid)
        actions = self.protocol.dialback_result(request.receiving, request.originating, valid)
        if await self._execute(actions):
            self._cancel.cancel()
