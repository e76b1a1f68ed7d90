"""The log process: PySyncObj, the permanent event store and the projector, in one process.

Raft runs apart from the XMPP process so that the event loop's GIL use never stalls heartbeats
(ADR 0004). The XMPP process talks to it over a Unix socket in the data directory (mode 0600: only
the server's own user can propose events) and reads LMDB directly. The process exits when its
parent dies, so a ``kill -9`` of the server leaves no orphan holding the Raft port.

Run with ``python -m xes.eventlog.process --config FILE`` or through :func:`spawn`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import structlog

from xes import telemetry
from xes.config import Config
from xes.eventlog import wire
from xes.eventlog.raft import Outcome, RaftConfig, RaftLog, SubmitResult
from xes.projections.projector import Projector, all_db_names
from xes.store.env import Store, open_store

log = structlog.get_logger("xes.log")


class AlreadyRunning(Exception):
    """Another log process holds this data directory."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data directory's exclusive lock (one log process, one LMDB writer)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "log.lock", "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise AlreadyRunning(str(data_dir)) from exc
    return handle


def db_path(config: Config) -> Path:
    return config.data_dir / "db"


def raft_config(config: Config) -> RaftConfig:
    return RaftConfig(
        self_addr=config.cluster.raft,
        peers=tuple(config.cluster.peers),
        data_dir=config.data_dir,
        secret=config.cluster_secret,
        # Listen on the advertised address itself unless told otherwise: never on every
        # interface by accident.
        bind_addr=config.cluster.raft_bind or config.cluster.raft,
        min_timeout=config.cluster.election_timeout_min,
        max_timeout=config.cluster.election_timeout_max,
        compaction_min_entries=config.cluster.compaction_entries,
        compaction_min_time=config.cluster.compaction_interval,
    )


class LogNode:
    """Store + projector + Raft, usable in-process (CLI fallback, tests) or behind a socket."""

    def __init__(self, config: Config, on_applied: Callable[[int], None] | None = None) -> None:
        self.config = config
        self._lock = lock_data_dir(config.data_dir)
        self.store: Store = open_store(db_path(config), all_db_names(), writer=True)
        self.projector = Projector(self.store, on_applied=on_applied)
        # Before Raft replays anything: projections a new release added or changed are built
        # from the journal first (ADR 0022).
        self.projector.catch_up()
        self.raft = RaftLog(raft_config(config), self.projector)

    def submit(self, command: bytes, callback: Callable[[SubmitResult], None]) -> None:
        self.raft.submit(command, callback)

    def submit_wait(self, command: bytes, timeout: float = 30.0) -> SubmitResult:
        done = threading.Event()
        box: list[SubmitResult] = []

        def callback(result: SubmitResult) -> None:
            box.append(result)
            done.set()

        self.raft.submit(command, callback)
        if not done.wait(timeout):
            return SubmitResult(Outcome.UNKNOWN, None, None, "timeout")
        return box[0]

    def close(self) -> None:
        self.raft.close()
        self.store.close()
        self._lock.close()


class _Conn:
    """One client of the log socket, with a writer thread so Raft callbacks never block."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.alive = True
        threading.Thread(target=self._writer, daemon=True, name="log-conn-writer").start()

    def send(self, data: bytes) -> None:
        if self.alive:
            self.out.put(data)

    def _writer(self) -> None:
        while True:
            data = self.out.get()
            if data is None:
                break
            try:
                self.sock.sendall(data)
            except OSError:
                break
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.close()

    def close(self) -> None:
        self.alive = False
        self.out.put(None)


class LogServer:
    """Serves proposals and applied notices on the Unix socket."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.conns: set[_Conn] = set()
        self.conns_lock = threading.Lock()
        self._applied = 0
        self._applied_changed = threading.Condition()
        self.node = LogNode(config, on_applied=self._on_applied)
        self._applied = self.node.projector.last_applied()
        self.stopping = threading.Event()

    # Raft thread: record and wake the notifier; never block here.
    def _on_applied(self, index: int) -> None:
        with self._applied_changed:
            self._applied = index
            self._applied_changed.notify_all()

    def _notifier(self) -> None:
        sent = -1
        while not self.stopping.is_set():
            with self._applied_changed:
                self._applied_changed.wait_for(
                    lambda sent=sent: self._applied != sent or self.stopping.is_set(),
                    timeout=1.0,
                )
                current = self._applied
            if current != sent:
                data = wire.frame(wire.APPLIED, wire.U64.pack(current))
                with self.conns_lock:
                    for conn in list(self.conns):
                        conn.send(data)
                sent = current

    def serve(self) -> None:
        path = self.config.socket_path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(str(path))
        finally:
            os.umask(old_umask)
        listener.listen(64)
        listener.settimeout(0.5)
        threading.Thread(target=self._notifier, daemon=True, name="log-notifier").start()
        log.info("log_process_listening", socket=str(path), raft=self.config.cluster.raft)
        while not self.stopping.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                time.sleep(0.1)
                continue
            conn = _Conn(sock)
            with self.conns_lock:
                self.conns.add(conn)
            conn.send(wire.frame(wire.APPLIED, wire.U64.pack(self._applied)))
            threading.Thread(target=self._reader, args=(conn,), daemon=True).start()
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def _reader(self, conn: _Conn) -> None:
        try:
            reader = conn.sock.makefile("rb")
            while True:
                head = reader.read(wire.HEADER.size)
                if len(head) < wire.HEADER.size:
                    break
                length, kind = wire.HEADER.unpack(head)
                if length > wire.MAX_FRAME:
                    break
                body = reader.read(length - 1)
                if len(body) < length - 1:
                    break
                self._handle(conn, kind, body)
        except OSError:
            pass
        finally:
            with self.conns_lock:
                self.conns.discard(conn)
            conn.close()

    def _handle(self, conn: _Conn, kind: int, body: bytes) -> None:
        req = body[:8]
        if kind == wire.PROPOSE:
            self.node.submit(body[8:], lambda result: conn.send(_result_frame(req, result)))
        elif kind == wire.STATUS:
            status = self.status()
            conn.send(wire.frame(wire.STATUS_REPLY, req + json.dumps(status).encode()))
        elif kind == wire.MEMBERSHIP:
            self._membership(conn, req, json.loads(body[8:]))

    def _membership(self, conn: _Conn, req: bytes, request: dict[str, Any]) -> None:
        op = (
            self.node.raft.add_member
            if request.get("op") == "add"
            else self.node.raft.remove_member
        )

        def done(result: SubmitResult) -> None:
            conn.send(_result_frame(req, result))

        op(str(request["addr"]), done)

    def status(self) -> dict[str, Any]:
        status = dict(self.node.raft.status())
        status["applied_index"] = self.node.projector.last_applied()
        status["node_id"] = self.config.cluster.node_id
        return status

    def stop(self) -> None:
        self.stopping.set()
        with self._applied_changed:
            self._applied_changed.notify_all()

    def close(self) -> None:
        with self.conns_lock:
            for conn in self.conns:
                conn.close()
        self.node.close()


def _result_frame(req: bytes, result: SubmitResult) -> bytes:
    head = wire.RESULT.pack(
        wire.U64.unpack(req)[0], wire.OUTCOME_CODES[result.outcome.name], result.index or 0
    )
    return wire.frame(wire.RESULT_KIND, head + (result.result or b""))


STOP_SIGNAL = signal.SIGUSR2
"""How the XMPP process tells its log process to stop (SIGTERM may be meant for the group)."""


def stop(proc: multiprocessing.process.BaseProcess) -> None:
    """Ask the log process to stop (it finishes the Raft step in hand and closes cleanly)."""
    if proc.pid is not None and proc.is_alive():
        os.kill(proc.pid, STOP_SIGNAL)


def _watch_parent(parent: int, stop: Callable[[], None]) -> None:
    while os.getppid() == parent:
        time.sleep(0.25)
    log.warning("parent_gone_exiting")
    stop()


def run(config: Config, parent: int | None = None) -> None:
    """Entry point of the log process."""
    telemetry.configure(config.log.level, config.log.format, node=config.cluster.node_id)
    server = LogServer(config)

    def on_sigterm(*_: object) -> None:
        # systemd (without KillMode=mixed) and `kill -- -PGID` signal the whole group at once;
        # the XMPP process still needs the log to record its sessions' ends, then stops us
        # with STOP_SIGNAL. Alone (parent gone), SIGTERM stops us.
        if parent is not None and os.getppid() == parent:
            log.info("sigterm_deferred_to_parent")
            return
        server.stop()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(STOP_SIGNAL, lambda *_: server.stop())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the XMPP process decides when we stop
    # SIGHUP reloads the XMPP process's configuration (ADR 0023); sent to the whole group it
    # must not end the log.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent, server.stop), daemon=True).start()
    try:
        server.serve()
    finally:
        server.close()
        log.info("log_process_stopped")


def spawn(config: Config) -> multiprocessing.process.BaseProcess:
    """Start the log process with ``spawn`` (never ``fork``: LMDB must not cross a fork)."""
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=run, args=(config, os.getpid()), name="xes-log", daemon=False)
    proc.start()
    return proc
