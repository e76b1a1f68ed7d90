"""The composition root of one node: log process, store, delivery and client listeners.

Start-up order matters: the log process first (it creates the LMDB sub-databases), then the
read-only store, then the end of every session this node held before a crash (their contacts
see them go unavailable: no ghost), a ``node.started`` event, delivery from the current applied
index, and finally the listeners. The node is ready when its client port accepts connections.
SIGTERM closes every stream cleanly, records the sessions' ends, then stops the log process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import secrets
import signal
import ssl
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import ByteStream, SocketAttribute, SocketStream, TaskGroup

from xes import (
    archive_retention,
    cluster_watch,
    delivery,
    disk_watch,
    gate_watch,
    preflight,
    push_publisher,
    session_sweep,
    telemetry,
)
from xes import http as web
from xes.admin.auth import AdminAuth, read_token
from xes.audit import checkpointer as audit_checkpointer
from xes.config import Config, ConfigError, HostConfig, S2SConfig, load_config
from xes.eventlog import process as log_process
from xes.eventlog.client import LogClient, LogUnavailable, ProposalRejected
from xes.events.catalog import NodeStarted
from xes.events.gate import this_build_reads
from xes.features import session_end, stream_mgmt
from xes.features.upload import files as upload_files
from xes.features.upload import retention as upload_retention
from xes.features.upload.web import UploadSite
from xes.http.server import Request
from xes.hub import Hub
from xes.projections import sessions as sessions_view
from xes.projections.projector import all_db_names
from xes.session.s2s import S2SPolicy
from xes.session.sasl import LoginLimiter, channel_binding_data
from xes.store.env import open_store
from xes.tlsutil import (
    HostCertificateError,
    HostContexts,
    ensure_self_signed,
    s2s_server_contexts,
)
from xes.transport.c2s import ClientConnection, release_idle_parsers
from xes.transport.component import ComponentConnection
from xes.transport.s2s import InboundConnection, S2SService

log = structlog.get_logger("xes.node")


def cluster_key(config: Config, label: bytes, local_file: str) -> bytes:
    """A key every node derives alike from the cluster secret (one per ``label``, so a leak of
    one use does not give another); a lone node without a secret keeps a random key in its
    data directory instead."""
    secret = config.cluster_secret
    if secret:
        return hashlib.sha256(label + b"\x00" + secret.encode()).digest()
    path = config.data_dir / local_file
    if not path.exists():
        path.write_bytes(secrets.token_bytes(32))
        path.chmod(0o600)
    return path.read_bytes()


def fast_key(config: Config) -> bytes:
    """The key FAST tokens are derived from (XEP-0484, ADR 0015)."""
    return cluster_key(config, b"xes fast token key", "fast.key")


def upload_key(config: Config) -> bytes:
    """The key of upload PUT tokens and of the nodes' proofs to each other (ADR 0017)."""
    return cluster_key(config, b"xes upload key", "upload.key")


def dialback_secret(config: Config) -> bytes:
    """What dialback keys are made from (XEP-0185, ADR 0025): ``[s2s] dialback_secret``, else
    derived from the cluster secret, so any node can verify a key another node sent."""
    if config.s2s is not None and config.s2s.dialback_secret:
        return config.s2s.dialback_secret.encode()
    return cluster_key(config, b"xes s2s dialback", "dialback.key")


def tls_paths(config: Config, host: HostConfig | None = None) -> tuple[Path, Path]:
    """The certificate and key of ``host`` (default: the primary one): its ``cert_file``,
    ``[tls] cert`` for the primary host, else a self-signed pair made in ``data_dir/tls``."""
    host = host or config.virtual_hosts[0]
    if host.cert_file and host.key_file:
        return Path(host.cert_file), Path(host.key_file)
    if host.domain == config.domain and config.tls.cert and config.tls.key:
        return Path(config.tls.cert), Path(config.tls.key)
    tls_dir = config.data_dir / "tls"
    cert, key = tls_dir / f"{host.domain}.crt", tls_dir / f"{host.domain}.key"
    ensure_self_signed(cert, key, host.domain)
    return cert, key


def host_certificates(config: Config) -> dict[str, tuple[Path, Path]]:
    """Every hosted domain's certificate and key files (ADR 0023)."""
    primary = next(h for h in config.virtual_hosts if h.domain == config.domain)
    return {
        h.domain: tls_paths(config, h if h is not primary else None) for h in config.virtual_hosts
    }


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class Node:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.boot = secrets.token_hex(8)
        self.node_id = config.cluster.node_id
        self.stopping = anyio.Event()
        self.connections: set[ClientConnection] = set()
        self.component_connections: set[ComponentConnection] = set()
        self.s2s: S2SService | None = None
        self._rejoining = False
        self.log_pid: int | None = None
        self._log_process_exit_logged = False
        """The log process's pid (its CPU and memory are in ``/metrics`` too)."""

    async def run(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(config.data_dir, 0o700)
        try:
            certs = host_certificates(config)
            self.tls = HostContexts(config.domain, certs)
            self.https_tls = HostContexts(config.domain, certs, alpn=("http/1.1",))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"{exc}: fix [tls] cert and key or the host's cert_file and key_file "
                "(or remove both for a self-signed pair)"
            ) from None
        proc = log_process.spawn(config)
        self.log_pid = proc.pid
        try:
            await self._serve(proc)
        except BaseExceptionGroup:
            if proc.is_alive():
                # A killed process's socket closes while it dies, a moment before it can be
                # reaped: the tasks on the socket fail first. Give it that moment.
                proc.join(2.0)
            if proc.is_alive():
                raise
            # The log process died (killed, or stopped on purpose: `storage_failed` exits 74):
            # every task waiting on it fails at once, so the group holds their LogUnavailable
            # and the watcher's exit. One line and the exit status say it, not that group.
            if not self._log_process_exit_logged:
                log.error("log_process_exited", exitcode=proc.exitcode)
            raise SystemExit(3) from None
        finally:
            await self._stop_log_process(proc)

    async def _serve(self, proc: Any) -> None:
        config = self.config
        client = LogClient(
            config.socket_path,
            origin=self.node_id,
            boot=self.boot,
            retry_for=config.cluster.commit_timeout,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_log_process, proc, tg)
            # No deadline while the log process lives (_watch_log_process ends us if it dies):
            # the first start of a release that adds a projection rebuilds the projections from
            # the journal before the log process listens, as long as `xes replay` takes
            # (ADR 0022); a deadline would restart it, and the rebuild, forever.
            await client.connect(tg, timeout=float("inf"))
            store = open_store(log_process.db_path(config), all_db_names(), writer=False)
            client.riders = stream_mgmt.riders
            hub = Hub(config=config, node=self.node_id, boot=self.boot, store=store, log=client)
            hub.fast_key = fast_key(config)
            hub.upload_key = upload_key(config)
            hub.on_self_down = lambda: tg.start_soon(self._rejoin, "declared down")
            hub.on_isolated = lambda: tg.start_soon(self._rejoin, "no majority")
            self.hub = hub
            # The feature gate (ADR 0022): every envelope is shaped to what all members read.
            gates = gate_watch.GateView(store, lambda: client.applied)
            hub.gates = client.gate = gates.gate
            stale = await self._start_boot("node_restarted")
            with contextlib.suppress(LogUnavailable):
                gates.set_members((await client.status()).get("members") or [])
            tg.start_soon(gate_watch.run, gates, client)
            if stale:
                log.info("stale_sessions_ended", count=stale)
            tg.start_soon(delivery.run, hub)
            tg.start_soon(
                functools.partial(cluster_watch.run, hub, down_after=config.cluster.node_down_after)
            )
            tg.start_soon(archive_retention.run, hub)
            tg.start_soon(audit_checkpointer.run, hub)
            tg.start_soon(disk_watch.run, hub)
            tg.start_soon(session_sweep.run, hub)
            tg.start_soon(push_publisher.run, hub)
            tg.start_soon(release_idle_parsers, self.connections)
            if config.upload.enabled:
                store_dir = upload_files.FileStore(config.upload_dir)
                store_dir.open()
                self.upload_site = UploadSite(hub, store_dir)
                tg.start_soon(upload_files.run_sweeper, hub, store_dir)
                tg.start_soon(upload_retention.run, hub)
            self.limiter = LoginLimiter(
                max_failures=config.auth.max_failures,
                window_s=config.auth.failure_window,
                lockout_s=config.auth.lockout,
            )
            self.admin_auth = AdminAuth(hub, read_token(config), self.limiter)
            # HTTP and components first: a node whose client port accepts is ready on every port.
            self.http = web.build(self)
            for task in self.http.tasks:
                await tg.start(task)
            if config.listen.http:
                await tg.start(self._listen_http, config.listen.http, None, "[listen] http")
            if config.listen.https:
                await tg.start(
                    self._listen_http, config.listen.https, self.https_tls.entry, "[listen] https"
                )
            listeners = []
            if config.listen.c2s:
                listeners.append((config.listen.c2s, False))
            if config.listen.c2s_tls:
                listeners.append((config.listen.c2s_tls, True))
            if config.component_listen:
                await tg.start(self._listen_components, config.component_listen)
            if config.s2s is not None or config.listen.s2s or config.listen.s2s_tls:
                self._start_s2s(hub, tg)
                for addr, direct in ((config.listen.s2s, False), (config.listen.s2s_tls, True)):
                    if addr:
                        await tg.start(self._listen_s2s, addr, direct)
            for addr, direct in listeners:
                await tg.start(self._listen, addr, direct)
            log.info(
                "node_ready",
                domain=config.domain,
                hosts=list(config.host_names),
                node=self.node_id,
                boot=self.boot,
            )
            with anyio.open_signal_receiver(
                signal.SIGTERM, signal.SIGINT, signal.SIGHUP
            ) as signals:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        self.reload()
                        continue
                    log.info("shutting_down", signal=signal.Signals(signum).name)
                    break
            await self._close_all()
            tg.cancel_scope.cancel()
        store.close()

    async def _listen(self, addr: str, direct_tls: bool, *, task_status: Any) -> None:
        host, port = _split(addr)
        try:
            listener = await anyio.create_tcp_listener(
                local_host=host, local_port=port, reuse_port=False
            )
        except OSError as exc:
            key = "[listen] c2s_tls" if direct_tls else "[listen] c2s"
            raise ConfigError(preflight.port_error(addr, key, exc)) from None
        log.info("listening", addr=addr, direct_tls=direct_tls)
        task_status.started()
        async with listener:
            await listener.serve(lambda stream: self._handle(stream, direct_tls))

    async def _listen_components(self, addr: str, *, task_status: Any) -> None:
        """The XEP-0114 listener (ADR 0018): plain TCP, or direct TLS with ``component_tls``."""
        host, port = _split(addr)
        try:
            listener = await anyio.create_tcp_listener(
                local_host=host, local_port=port, reuse_port=False
            )
        except OSError as exc:
            raise ConfigError(preflight.port_error(addr, "[listen] component", exc)) from None
        policy = self.config.components_policy
        limiter = LoginLimiter(
            max_failures=policy.max_failures,
            window_s=policy.failure_window,
            lockout_s=policy.lockout,
        )
        tls = self.tls.entry if self.config.listen.component_tls else None
        log.info("listening", addr=addr, components=len(self.config.components), tls=bool(tls))
        task_status.started()
        async with listener:
            await listener.serve(lambda stream: self._handle_component(stream, tls, limiter))

    def _start_s2s(self, hub: Hub, tg: TaskGroup) -> None:
        """Federation (ADR 0025): outgoing links as ``hub.s2s``, policy from ``[s2s]``."""
        config = self.config
        s2s_config = config.s2s or S2SConfig()
        certs = host_certificates(config)
        policy = S2SPolicy(
            hosts=hub.is_local,
            secret=dialback_secret(config),
            tls_required=s2s_config.require_encryption,
            dialback=s2s_config.dialback,
            limits=config.xml_limits,
        )
        inbound_tls = s2s_server_contexts(
            config.domain,
            certs,
            verify_peers=not s2s_config.dialback,
            ca_file=s2s_config.ca_file,
        )
        # Also with a listener alone: answers to remote senders need a way back. Sending on
        # behalf of local users needs [s2s] (xes.features.s2s.enabled).
        self.s2s = hub.s2s = S2SService(hub, tg, s2s_config, certs, inbound_tls, policy)

    async def _listen_s2s(self, addr: str, direct_tls: bool, *, task_status: Any) -> None:
        """The server-to-server listener (``[listen] s2s``, ``s2s_tls``: XEP-0368)."""
        host, port = _split(addr)
        try:
            listener = await anyio.create_tcp_listener(
                local_host=host, local_port=port, reuse_port=False
            )
        except OSError as exc:
            key = "[listen] s2s_tls" if direct_tls else "[listen] s2s"
            raise ConfigError(preflight.port_error(addr, key, exc)) from None
        log.info("listening", addr=addr, s2s=True, direct_tls=direct_tls)
        task_status.started()
        async with listener:
            await listener.serve(lambda stream: self._handle_s2s(stream, direct_tls))

    async def _handle_s2s(self, stream: SocketStream, direct_tls: bool) -> None:
        assert self.s2s is not None
        conn = InboundConnection(self.s2s, stream, direct_tls)
        self.s2s.inbound.add(conn)
        try:
            await conn.run()
        finally:
            self.s2s.inbound.discard(conn)

    async def _handle_component(
        self, stream: SocketStream, tls: ssl.SSLContext | None, limiter: LoginLimiter
    ) -> None:
        try:
            peer = str(stream.extra(SocketAttribute.remote_address)[0])
        except Exception:
            peer = "?"
        conn = ComponentConnection(self.hub, stream, tls, limiter, peer)
        self.component_connections.add(conn)
        try:
            await conn.run()
        finally:
            self.component_connections.discard(conn)

    async def _listen_http(
        self, addr: str, tls_context: ssl.SSLContext | None, key: str, *, task_status: Any
    ) -> None:
        host, port = _split(addr)
        try:
            listener = await anyio.create_tcp_listener(
                local_host=host, local_port=port, reuse_port=False
            )
        except OSError as exc:
            raise ConfigError(preflight.port_error(addr, key, exc)) from None
        log.info("listening", addr=addr, http="https" if tls_context else "http")
        task_status.started()
        async with listener:
            await listener.serve(lambda stream: self.http.serve(stream, tls_context))

    async def run_web_client(self, stream: ByteStream, request: Request, transport: str) -> None:
        """A client stream carried by the HTTP side (WebSocket, BOSH): the same connection
        and session as on the TCP listeners, already secured by HTTPS or a trusted proxy."""
        channel = None
        if request.ssl_object is not None:
            # The certificate SNI chose for this HTTPS connection (ADR 0023).
            presented = self.https_tls.cert_der(request.ssl_object.context)
            channel = channel_binding_data(request.ssl_object, server_cert_der=presented)
        await self._run_client(
            ClientConnection(
                self.hub,
                stream,
                self.tls,
                self.limiter,
                request.peer,
                False,
                transport=transport,
                secured=request.secure,
                channel_binding=channel,
            )
        )

    async def _handle(self, stream: SocketStream, direct_tls: bool) -> None:
        try:
            peer = str(stream.extra(SocketAttribute.remote_address)[0])
        except Exception:
            peer = "?"
        await self._run_client(
            ClientConnection(self.hub, stream, self.tls, self.limiter, peer, direct_tls)
        )

    async def _run_client(self, conn: ClientConnection) -> None:
        if len(self.connections) >= self.config.limits.max_connections:
            await conn.stream.aclose()
            return
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

    def reload(self) -> None:
        """SIGHUP: read the configuration file again and apply its hosts (ADR 0023).

        Only the hosted domains and their ``[host."<domain>"]`` tables change on a running
        node; a change elsewhere is named in the log and waits for a restart. A new host is
        served at once (its certificate is loaded or generated first); a removed host's
        streams on this node end with ``host-gone`` (RFC 6120 §4.9.3.5) and its logins are
        refused, while its accounts, rooms and archives stay in the log for when it returns.
        An invalid file, or a certificate that does not load, changes nothing: one line says
        why and the node goes on with what it had.
        """
        source = self.config.source
        if source is None:
            log.warning("reload_failed", error="the configuration was not read from a file")
            return
        try:
            new = load_config(source)
            if new.domain != self.config.domain:
                raise ConfigError(
                    f"the primary domain changed ({self.config.domain} -> {new.domain}): "
                    "that needs a restart"
                )
            certs = host_certificates(new)
            self.tls.update(new.domain, certs)
            self.https_tls.update(new.domain, certs)
        except (ConfigError, HostCertificateError, OSError, ssl.SSLError, ValueError) as exc:
            log.error("reload_failed", error=str(exc), config=str(source))
            return
        old = self.config
        applied = dataclasses.replace(old, hosts=new.virtual_hosts)
        others = sorted(
            f.name
            for f in dataclasses.fields(Config)
            if f.name not in ("hosts", "domain", "source", "muc")
            and getattr(new, f.name) != getattr(old, f.name)
        )
        if dataclasses.replace(new.muc, domain="") != dataclasses.replace(old.muc, domain=""):
            others.append("muc")
        self.config = self.hub.config = applied
        added = [h for h in applied.host_names if not old.is_hosted(h)]
        removed = [h for h in old.host_names if not applied.is_hosted(h)]
        gone = [c for c in self.connections if c.protocol.domain in removed]
        for conn in gone:
            conn.close("host-gone", "this server no longer serves that domain")
        log.info(
            "config_reloaded",
            hosts=list(applied.host_names),
            added=added,
            removed=removed,
            closed=len(gone),
            **({"restart_needed_for": others} if others else {}),
        )

    async def _close_all(self) -> None:
        for conn in list(self.connections):
            conn.close("system-shutdown", "the server is shutting down")
        for component in list(self.component_connections):
            component.close("system-shutdown", "the server is shutting down")
        if self.s2s is not None:
            self.s2s.close_all()
        with anyio.move_on_after(10.0):
            while self.connections or self.component_connections:
                await anyio.sleep(0.05)

    async def _start_boot(self, reason: str) -> int:
        """Record ``node.started`` for the current boot, ending this node's earlier sessions.

        Sessions of earlier boots (before a crash, or before we were cut off) have no connection
        any more: their contacts get unavailable presence and the end is recorded, in the same
        proposal as ``node.started``. Waits until the log takes it, re-reading the sessions on
        each try (the cluster may end some meanwhile). Returns how many it ended.
        """
        while True:
            with self.hub.read() as txn:
                stale = [
                    view
                    for view in sessions_view.of_node(self.hub.store, txn, self.node_id)
                    if view.boot != self.boot
                ]
                events = session_end.end_events(self.hub, txn, stale, reason, detach=True)
            events.append(
                NodeStarted(self.node_id, self.boot, self.config.cluster.raft, this_build_reads())
            )
            try:
                await self.hub.log.append(*events)
                return len(stale)
            except (LogUnavailable, ProposalRejected) as exc:
                log.warning("waiting_for_log", error=str(exc))
                await anyio.sleep(0.5)

    async def _rejoin(self, why: str) -> None:
        """Drop this boot's clients and start a new boot (ADR 0007).

        Either the cluster declared this boot down (we were cut off and it gave up on us), or we
        have been without a majority for ``node_down_after`` (so it is about to). The clients
        reconnect, here or at another node, and bind live sessions. Sessions of the old boot that
        the cluster did not end yet are ended here, with their unavailable presence, in the
        same proposal as the new ``node.started``: it waits until the log is reachable again.
        """
        if self._rejoining:
            return
        self._rejoining = True
        try:
            old_boot = self.boot
            old = [conn for conn in self.connections if conn.bound and conn.boot == old_boot]
            self.boot = secrets.token_hex(8)
            self.hub.boot = self.boot
            log.warning("rejoining", why=why, node=self.node_id, boot=self.boot, closing=len(old))
            for conn in old:
                conn.close("reset", "this node lost contact with the cluster; please reconnect")
            for component in list(self.component_connections):
                if component.boot == old_boot:  # its name was released with the old boot
                    component.close("reset", "this node lost contact with the cluster")
            ended = await self._start_boot("node_isolated")
            log.info("rejoined", node=self.node_id, boot=self.boot, ended=ended)
        finally:
            self._rejoining = False

    async def _watch_log_process(self, proc: Any, tg: TaskGroup) -> None:
        while proc.is_alive():
            await anyio.sleep(0.2)
        self._log_process_exit_logged = True
        log.error("log_process_exited", exitcode=proc.exitcode)
        tg.cancel_scope.cancel()
        raise SystemExit(3)

    async def _stop_log_process(self, proc: Any) -> None:
        log_process.stop(proc)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(proc.join, 15.0)
        if proc.is_alive():
            proc.kill()
        log.info("node_stopped")


def serve(config: Config) -> None:
    telemetry.configure(config.log.level, config.log.format, node=config.cluster.node_id)
    anyio.run(Node(config).run)
