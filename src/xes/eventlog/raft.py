"""The Raft-replicated command log: xes's only import of pysyncobj (pinned 0.3.17, ADR 0004).

`RaftLog` replicates opaque `bytes` commands and hands each committed one, in log order and with
its Raft index, to a `StateMachine` (the projector, whose state lives in LMDB). It hides
PySyncObj's API and fixes its measured defects (`docs/adr/0004-raft-adapter.md`,
`xes.eventlog.raft_patches`):

* one `@replicated` method taking one `bytes` argument, so no xes class is ever pickled;
* apply never raises (an exception would wedge every replica), entries already in LMDB are
  skipped (the journal is replayed from the last snapshot after every restart);
* pickle protocol 5, an fsynced journal and term file, monotonic nextIndex bookkeeping on the
  leader, commands bounded well below the append batch size, no commit-index advance on a
  follower whose log was not matched;
* snapshots are copies of the state machine (`StateMachine.snapshot`), never a fork of this
  process (LMDB must not cross `fork()`); journal and dump file always go together.

Threading: PySyncObj runs one thread per node ("the raft thread"). `StateMachine.apply`,
`snapshot`, `restore` and the submit callbacks run on it; they must never wait for Raft. The
thread stops when the thread that created the `RaftLog` exits, so create it on a long-lived
thread (the log process's main thread). Run the whole thing in its own process: a busy event
loop or a long C call in the same process holds the GIL and stops heartbeats.
"""

from __future__ import annotations

import enum
import errno
import functools
import itertools
import os
import pickle
import re
import secrets
import shutil
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from pysyncobj import FAIL_REASON, SERIALIZER_STATE, SyncObj, SyncObjConf, replicated
from pysyncobj.node import TCPNode
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.transport import TCPTransport

from xes.eventlog import raft_patches
from xes.eventlog.raft_patches import (
    ALL_FIXES,
    EXIT_STORAGE,
    DurableFileJournal,
    Fixes,
    fsync_dir,
    journal_options,
    next_index_after_reply,
)
from xes.events import NewerEvent
from xes.store.env import StorageFailed

__all__ = [
    "Fixes",
    "Outcome",
    "RaftConfig",
    "RaftLog",
    "StateMachine",
    "SubmitResult",
]

log = structlog.get_logger()

#: Heartbeat period (pysyncobj `appendEntriesPeriod`, its default). Election timeouts must exceed
#: three of these (pysyncobj asserts it).
HEARTBEAT_PERIOD = 0.1

#: Exit status of a log process that met an event from a newer xes (see NewerEvent).
EXIT_TOO_OLD = 75
#: Socket buffers: a few MiB so a WAN link's bandwidth-delay product fits.
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
#: Added to twice the largest command for appendEntriesBatchSizeBytes (pickle framing, margin).
BATCH_MARGIN_BYTES = 64 * 1024
#: pysyncobj's own default, used only when `Fixes.large_batches` is off (tests).
PYSYNCOBJ_DEFAULT_BATCH_BYTES = 2**16
#: Least time between a failed snapshot and the next attempt.
SNAPSHOT_RETRY_INTERVAL = 5.0
#: Default compaction interval in entries, alone and with peers (RaftConfig.compaction_min_entries).
LONE_COMPACTION_ENTRIES = 50_000
CLUSTER_COMPACTION_ENTRIES = 5000
#: How long closing waits for a snapshot being written (a copy of the whole store).
SNAPSHOT_JOIN_TIMEOUT = 300.0
#: Least time between two compactions forced by journal size.
FORCED_COMPACTION_INTERVAL = 1.0
#: Result of an entry skipped because the state machine already has it (journal replay).
ALREADY_APPLIED = b""

_ADDR = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:\s\[\]]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class RaftConfig:
    """One node's Raft settings. Defaults are the LAN profile measured in ADR 0004."""

    #: This node's Raft address, "host:port"; also its identity in the cluster.
    self_addr: str
    #: The other nodes' Raft addresses; empty for a one-node cluster. self_addr is ignored here.
    peers: tuple[str, ...]
    #: Node data directory; the journal, its meta file and the snapshot live in `raft/`.
    data_dir: Path
    #: Cluster password: the wire is pickle, so without it anyone reaching the port runs code.
    #: Required when peers is non-empty; a one-node cluster without it gets a random one.
    secret: str | None
    min_timeout: float = 0.4
    max_timeout: float = 1.2
    #: Long, so idle follower-to-follower links and snapshot transfers are not declared dead.
    connection_timeout: float = 30.0
    #: A leader without a majority's replies for this long steps down (pysyncobj default 30 s).
    leader_fallback_timeout: float = 2.0
    #: Larger commands are refused with Outcome.TOO_LARGE (the layer above groups below this).
    max_command_bytes: int = 512 * 1024
    #: Bounded queue of commands not yet taken by the raft thread (backpressure: QUEUE_FULL).
    commands_queue_size: int = 10000
    #: Flush the journal and term file to disk (off only for throwaway test clusters).
    fsync: bool = True
    #: "host:port" to listen on; None listens on all interfaces at self_addr's port.
    bind_addr: str | None = None
    #: A submit with no outcome after this long is answered UNKNOWN (PySyncObj has no timeout).
    submit_timeout: float = 10.0
    #: Compact the log (snapshot + journal truncation) after this many entries or seconds...
    #: Each compaction copies the whole store in the background (ADR 0010). None: 50,000 alone
    #: (fewer copies competing for the CPU), 5,000 with peers (a longer in-RAM log measured
    #: slower to replicate).
    compaction_min_entries: int | None = None
    compaction_min_time: float = 300.0
    #: pysyncobj's tick period; None: 10 ms alone (the tick once bounded a commit), 50 ms with
    #: peers (their replies wake the raft thread).
    tick_period: float | None = None
    #: ...or once the journal holds this many bytes: pysyncobj keeps the whole log in RAM and
    #: its journal offsets are 32-bit (4 GiB), whatever the entry count.
    compaction_max_bytes: int = 256 * 1024 * 1024


class StateMachine(Protocol):
    """What `RaftLog` drives. All methods but `snapshot` are called on the raft thread."""

    def last_applied(self) -> int:
        """Durable index of the last applied entry (0 when empty)."""
        ...

    def apply(self, index: int, command: bytes) -> bytes:
        """Apply one committed entry, in log order, recording `index` as last applied in the
        same transaction. Should not raise; a result blob goes back to the submitter."""
        ...

    def snapshot(self, path: Path) -> None:
        """Write a consistent copy of the whole state to `path` (a file or a directory).

        The exception to the rule above: this runs on a snapshot thread, while `apply` goes on
        on the raft thread, so the copy must be consistent by itself (an LMDB read transaction
        is) and may be newer than the index the dump is labelled with."""
        ...

    def restore(self, path: Path) -> None:
        """Replace the state with the snapshot at `path` (as written by `snapshot`)."""
        ...


class Outcome(enum.Enum):
    """What happened to a submitted command."""

    #: Committed and applied on this node; `SubmitResult.result` is the state machine's blob.
    APPLIED = "applied"
    #: Definitely not in the log (no leader, not leader, queue full, denied, overwritten).
    NOT_APPENDED = "not_appended"
    #: May or may not be committed (leader changed, timeout, closed, apply raised): retry with
    #: the same event ids, apply deduplicates.
    UNKNOWN = "unknown"
    #: Larger than `RaftConfig.max_command_bytes`; never submitted.
    TOO_LARGE = "too_large"


@dataclass(frozen=True)
class SubmitResult:
    outcome: Outcome
    #: Raft index of the entry, when known.
    index: int | None
    #: The state machine's result blob (APPLIED) or an error note (apply raised).
    result: bytes | None
    #: Why, for logs: the PySyncObj reason name, "timeout", "apply_failed: ...".
    detail: str = ""


Callback = Callable[[SubmitResult], None]

_FAIL_OUTCOMES = {
    FAIL_REASON.QUEUE_FULL: (Outcome.NOT_APPENDED, "queue_full"),
    FAIL_REASON.MISSING_LEADER: (Outcome.NOT_APPENDED, "missing_leader"),
    FAIL_REASON.DISCARDED: (Outcome.NOT_APPENDED, "discarded"),
    FAIL_REASON.NOT_LEADER: (Outcome.NOT_APPENDED, "not_leader"),
    FAIL_REASON.REQUEST_DENIED: (Outcome.NOT_APPENDED, "request_denied"),
    FAIL_REASON.LEADER_CHANGED: (Outcome.UNKNOWN, "leader_changed"),
    FAIL_REASON.UNKNOWN_OUTCOME: (Outcome.UNKNOWN, "unknown_outcome"),
}
_STATES = {0: "follower", 1: "candidate", 2: "leader"}


def _check_addr(addr: str, what: str) -> None:
    match = _ADDR.match(addr)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{what} must be 'host:port', got {addr!r}")


def _validate(config: RaftConfig) -> None:
    """Reject a config PySyncObj would assert on, or that would be unsafe to run."""
    _check_addr(config.self_addr, "self_addr")
    for peer in config.peers:
        _check_addr(peer, "peer")
    if config.bind_addr is not None:
        _check_addr(config.bind_addr, "bind_addr")
    if _peers(config) and not config.secret:
        raise ValueError("a cluster secret is required when peers are configured")
    if config.min_timeout <= 3 * HEARTBEAT_PERIOD:
        raise ValueError(f"min_timeout must exceed {3 * HEARTBEAT_PERIOD} s")
    if config.max_timeout <= config.min_timeout:
        raise ValueError("max_timeout must exceed min_timeout")
    if config.connection_timeout < config.max_timeout:
        raise ValueError("connection_timeout must be at least max_timeout")
    if config.leader_fallback_timeout <= HEARTBEAT_PERIOD:
        raise ValueError(f"leader_fallback_timeout must exceed {HEARTBEAT_PERIOD} s")
    if config.max_command_bytes <= 0 or config.commands_queue_size <= 0:
        raise ValueError("max_command_bytes and commands_queue_size must be positive")
    entries = config.compaction_min_entries
    if config.submit_timeout <= 0 or (entries is not None and entries < 2):
        raise ValueError("submit_timeout must be positive, compaction_min_entries at least 2")
    if not 0 < config.compaction_max_bytes < 2**31:
        raise ValueError("compaction_max_bytes must be between 0 and 2 GiB")


def _source(config: RaftConfig) -> str | None:
    """Source host for outgoing Raft connections: `bind_addr`'s host, unless a wildcard."""
    if config.bind_addr is None:
        return None
    host = config.bind_addr.rpartition(":")[0].strip("[]")
    return None if host in ("", "0.0.0.0", "::") else host


def _peers(config: RaftConfig) -> list[str]:
    return [peer for peer in config.peers if peer != config.self_addr]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class _Snapshots:
    """PySyncObj's custom serializer/deserializer: the state is the state machine's, not ours.

    The full dump file is what PySyncObj sends to a lagging or new follower, so it must be one
    file: the state machine's snapshot (a file, or a directory such as an LMDB `env.copy`) packed
    as its files' bytes, then a pickled header (PySyncObj's two last entries, the members, the
    file list), then a fixed trailer (header length, magic).

    The dump is written on a background thread (ADR 0010). PySyncObj without fork calls the
    serializer on the raft thread, and a copy of the whole state there stopped commits for as
    long as the copy took (about 250 ms for a 50 MB store, every 5,000 entries). `write` only
    starts the thread; `check` (PySyncObj's `serializeChecker`, polled on the raft thread every
    tick) moves the finished file into place and reports the outcome, after which PySyncObj
    truncates the journal. The state machine's snapshot may therefore be newer than the index
    the dump is labelled with; that is safe because a restored state machine skips the entries
    it already holds (`last_applied`).
    """

    MAGIC = b"XESSNAP1"
    TRAILER = struct.Struct(">Q8s")

    def __init__(self, sm: StateMachine, raft_dir: Path, node: str, fsync: bool) -> None:
        self._sm = sm
        self._dir = raft_dir
        self._node = node
        self._fsync = fsync
        self._retry_after = 0.0
        self._state: int = SERIALIZER_STATE.NOT_SERIALIZING
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._written: tuple[int, int, float] | None = None  # index, bytes, started
        #: Bumped by every restore; a dump begun before one is stale and is discarded.
        self._restores = 0
        self._restores_at_start = 0

    @property
    def _writing(self) -> Path:
        return self._dir / "dump.writing"

    def write(self, tmp_file: str, data: tuple[Any, Any, Any]) -> None:
        """Serializer hook (raft thread): start writing the dump; never blocks on the copy.

        PySyncObj renames `tmp_file` over its dump after this returns; we never create
        `tmp_file` (and remove a stale one), so that rename fails, which PySyncObj ignores when a
        `serializeChecker` is set: `check` renames our own file when it is complete.
        """
        _remove(Path(tmp_file))
        if self._thread is not None:  # PySyncObj waits for check(); this cannot happen
            self._state = SERIALIZER_STATE.FAILED
            return
        if time.monotonic() < self._retry_after:
            # pysyncobj retries a failed compaction on every tick; a full copy each time would
            # only make a full disk worse.
            self._state = SERIALIZER_STATE.FAILED
            return
        last, prev, cluster = data
        header = {
            "last": last,
            "prev": prev,
            "members": sorted(node.address for node in cluster),
        }
        self._error = None
        self._written = None
        self._restores_at_start = self._restores
        self._state = SERIALIZER_STATE.SERIALIZING
        self._thread = threading.Thread(
            target=self._write_dump, args=(header,), name="xes-snapshot", daemon=True
        )
        self._thread.start()

    def check(self) -> int:
        """`serializeChecker` (raft thread): the outcome of the dump being written, if any."""
        thread = self._thread
        if thread is not None and not thread.is_alive():
            self._thread = None
            self._state = self._finish()
        state = self._state
        if state in (SERIALIZER_STATE.SUCCESS, SERIALIZER_STATE.FAILED):
            self._state = SERIALIZER_STATE.NOT_SERIALIZING
        return int(state)

    def join(self, timeout: float) -> bool:
        """Wait for a dump being written (before the state machine is closed under it)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _finish(self) -> int:
        if self._error is not None or self._written is None:
            log.error(
                "raft_snapshot_failed", node=self._node, error=repr(self._error), exc_info=False
            )
            self._retry_after = time.monotonic() + SNAPSHOT_RETRY_INTERVAL
            _remove(self._writing)
            return SERIALIZER_STATE.FAILED
        index, size, started = self._written
        if self._restores != self._restores_at_start:
            # A snapshot from the leader replaced the state meanwhile; ours is older.
            _remove(self._writing)
            log.info("raft_snapshot_discarded", node=self._node, index=index)
            return SERIALIZER_STATE.FAILED
        os.replace(self._writing, self._dir / "dump")
        if self._fsync:
            fsync_dir(str(self._dir))
        log.info(
            "raft_snapshot_written",
            node=self._node,
            index=index,
            bytes=size,
            seconds=round(time.monotonic() - started, 3),
        )
        return SERIALIZER_STATE.SUCCESS

    def _write_dump(self, header: dict[str, Any]) -> None:
        """The snapshot thread: copy the state and pack it into `dump.writing`."""
        started = time.monotonic()
        staging = self._dir / "snapshot"
        try:
            _remove(staging)
            _remove(self._writing)
            self._sm.snapshot(staging)
            files = self._files(staging)
            with open(self._writing, "wb") as out:
                for rel, _size in files:
                    with open(staging / rel if rel else staging, "rb") as src:
                        shutil.copyfileobj(src, out, 1024 * 1024)
                packed = pickle.dumps(
                    {**header, "kind": "dir" if staging.is_dir() else "file", "files": files},
                    protocol=raft_patches.PICKLE_PROTOCOL,
                )
                out.write(packed)
                out.write(self.TRAILER.pack(len(packed), self.MAGIC))
                out.flush()
                if self._fsync:
                    os.fsync(out.fileno())
                size = out.tell()
            self._written = (header["last"][1], size, started)
        except BaseException as exc:  # reported by check() on the raft thread
            log.exception("raft_snapshot_failed", node=self._node, index=header["last"][1])
            self._error = exc
        finally:
            try:
                _remove(staging)
            except OSError:
                log.exception("raft_snapshot_cleanup_failed", node=self._node)

    def read(self, file_name: str) -> tuple[Any, Any, set[TCPNode]]:
        """Deserializer hook: restore the state machine unless it already is at least as new.

        Called after every restart (our own dump) and when a leader sent us its dump. LMDB is
        durable and usually ahead of our own dump, so rolling it back to replay the journal
        would only cost time and make readers see the state go backwards. A dump of our own
        still being written when this runs is discarded (see `check`).
        """
        self._restores += 1
        with open(file_name, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(end - self.TRAILER.size)
            header_len, magic = self.TRAILER.unpack(f.read(self.TRAILER.size))
            if magic != self.MAGIC:
                raise ValueError(f"{file_name} is not an xes snapshot")
            f.seek(end - self.TRAILER.size - header_len)
            header = pickle.loads(f.read(header_len))
            index = header["last"][1]
            if self._fsync:
                # It may have just arrived from the leader; it replaces journal entries next.
                os.fsync(f.fileno())
                fsync_dir(os.path.dirname(file_name) or ".")
            applied = self._sm.last_applied()
            if applied < index:
                started = time.monotonic()
                target = self._dir / "restore"
                _remove(target)
                f.seek(0)
                self._unpack(f, target, header)
                try:
                    self._sm.restore(target)
                finally:
                    _remove(target)
                log.info(
                    "raft_snapshot_restored",
                    node=self._node,
                    index=index,
                    previously_applied=applied,
                    seconds=round(time.monotonic() - started, 3),
                )
        return header["last"], header["prev"], {TCPNode(addr) for addr in header["members"]}

    @staticmethod
    def _files(path: Path) -> list[tuple[str, int]]:
        if path.is_file():
            return [("", path.stat().st_size)]
        if not path.is_dir():
            raise FileNotFoundError(f"StateMachine.snapshot wrote nothing at {path}")
        return [
            (str(p.relative_to(path)), p.stat().st_size)
            for p in sorted(path.rglob("*"))
            if p.is_file()
        ]

    @staticmethod
    def _unpack(src: Any, target: Path, header: dict[str, Any]) -> None:
        if header["kind"] == "dir":
            target.mkdir()
        for rel, size in header["files"]:
            dest = target / rel if rel else target
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as out:
                remaining = size
                while remaining:
                    chunk = src.read(min(remaining, 1024 * 1024))
                    if not chunk:
                        raise ValueError("truncated snapshot")
                    out.write(chunk)
                    remaining -= len(chunk)


class _Connection(TcpConnection):  # type: ignore[misc]
    """A pysyncobj connection that says why it dropped a peer, and can pick its source address.

    pysyncobj closes a connection whose frame fails decryption (a wrong cluster secret, or
    something that is not a node) without a word; an operator must see that. Outgoing
    connections leave from the host of `raft_bind` when set, so firewalls, and the WAN
    emulator of the test suite, can tell nodes apart by source address.
    """

    source_host: str | None = None
    peer: str | None = None

    def _TcpConnection__processParseMessage(self) -> Any:
        buf = self._TcpConnection__readBuffer
        complete = len(buf) >= 4 and len(buf) - 4 >= struct.unpack("i", buf[:4])[0]
        if complete and self.peer is None:  # once per connection, not per message
            self.peer = _peer_name(self._TcpConnection__socket)
        message = _PARSE_MESSAGE(self)
        if message is None and complete and self.state == CONNECTION_STATE.DISCONNECTED:
            _log_refused(self.peer, "a Raft message failed authentication (wrong cluster secret?)")
        return message

    def connect(self, host: str, port: int) -> bool:
        self.peer = None
        if self.source_host is None:
            return bool(super().connect(host, port))
        # TcpConnection.connect, with a bind() before the connect().
        if host is None:
            return False
        self._TcpConnection__state = CONNECTION_STATE.DISCONNECTED
        self._TcpConnection__fileno = None
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._TcpConnection__socket = sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._TcpConnection__sendBufferSize)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._TcpConnection__recvBufferSize)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.setSockoptKeepalive()
        sock.setblocking(False)
        self._TcpConnection__readBuffer = b""
        self._TcpConnection__writeBuffer = b""
        self._TcpConnection__lastReadTime = time.monotonic()
        try:
            sock.bind((self.source_host, 0))
            sock.connect((host, port))
        except OSError as exc:
            if exc.errno not in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                sock.close()
                return False
        self._TcpConnection__fileno = sock.fileno()
        self._TcpConnection__state = CONNECTION_STATE.CONNECTING
        self._TcpConnection__poller.subscribe(
            self._TcpConnection__fileno,
            self._TcpConnection__processConnection,
            POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR,
        )
        return True


_PARSE_MESSAGE = TcpConnection._TcpConnection__processParseMessage
_refused_logged: dict[str, float] = {}


def _peer_name(sock: socket.socket | None) -> str:
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "?"
    return f"{host}:{port}"


def _log_refused(peer: str | None, reason: str) -> None:
    """Log a refused Raft peer, at most once a minute per peer host (it retries every second)."""
    host = (peer or "?").rpartition(":")[0] or "?"
    now = time.monotonic()
    if now - _refused_logged.get(host, -1e9) >= 60.0:
        _refused_logged[host] = now
        log.warning("raft_peer_refused", peer=peer, reason=reason)


class _Transport(TCPTransport):
    """TCP transport that makes the journal durable before any Raft message leaves (defect 2).

    A follower's ack and a leader's append both go through `send`, so an entry is on disk
    before anyone counts it. It also logs refused peers and binds outgoing connections to the
    configured source host (see `_Connection`).
    """

    source_host: str | None = None

    def send(self, node: Any, message: Any) -> bool:
        conn = self._connections.get(node)
        if self._syncObj.encryptor and conn is not None and not conn.sendRandKey:
            # pysyncobj counts a connection usable once TCP connects, but with a secret a
            # message only authenticates after the peer's random key came back: a candidate's
            # request_vote sent before that is dropped by the peer as forged (and logged as
            # raft_peer_refused). Not sending is what Raft expects of a link not yet up.
            return False
        self._syncObj._journal().sync()
        return bool(super().send(node, message))

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is not None and not isinstance(conn, _Connection):
            # Same settings and callbacks as pysyncobj's, in our connection class.
            ours = _Connection(
                poller=self._syncObj._poller,
                timeout=self._syncObj.conf.connectionTimeout,
                sendBufferSize=self._syncObj.conf.sendBufferSize,
                recvBufferSize=self._syncObj.conf.recvBufferSize,
                keepalive=self._syncObj.conf.tcp_keepalive,
            )
            ours.source_host = self.source_host
            ours.encryptor = self._syncObj.encryptor
            ours.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, ours))
            ours.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            ours.setOnDisconnectedCallback(functools.partial(self._onDisconnected, ours))
            self._connections[node] = ours

    def _onNewIncomingConnection(self, conn: Any) -> None:
        conn.__class__ = _Connection  # same layout; adds the refusal log
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:
        if (
            (not self._syncObj.encryptor or conn.sendRandKey)
            and not isinstance(message, list)
            and message != "readonly"
            and message not in self._nodeAddrToNode
        ):
            _log_refused(
                _peer_name(conn._TcpConnection__socket),
                f"authenticated, but {message!r} is not a member of this cluster",
            )
        super()._onIncomingMessageReceived(conn, message)


class _Node(SyncObj):  # type: ignore[misc]
    """The SyncObj subclass; its only replicated method takes one `bytes` command."""

    def __init__(
        self,
        config: RaftConfig,
        conf: SyncObjConf,
        sm: StateMachine,
        fixes: Fixes,
        on_tick: Callable[[], None],
    ) -> None:
        # Everything the raft thread touches is set before SyncObj.__init__ starts that thread.
        self._sm = sm
        self._fixes = fixes
        self._addr = config.self_addr
        self._on_tick = on_tick
        self._compaction_max_bytes = config.compaction_max_bytes
        self._next_forced_compaction = 0.0
        with journal_options(fsync=config.fsync):
            transport = type("_BoundTransport", (_Transport,), {"source_host": _source(config)})
            super().__init__(config.self_addr, _peers(config), conf, transportClass=transport)

    @replicated  # type: ignore[misc]
    def apply_entry(self, command: bytes) -> tuple[int, bytes, str]:
        """Apply one committed command; returns (index, result blob, error note or "").

        In pysyncobj 0.3.17 `__applyLogEntries` applies entry `raftLastApplied + 1` and only
        then increments `raftLastApplied`, so that is this entry's index. Raising here would
        leave the entry unapplied and retried on every tick, on every replica (defect 5).
        """
        index = int(self.raftLastApplied) + 1
        if not self._fixes.guard_apply:
            return index, self._apply(index, command), ""
        try:
            return index, self._apply(index, command), ""
        except (NewerEvent, StorageFailed) as exc:
            # Skipping or rejecting it would make this node diverge from the nodes that can
            # apply it. Stop before the entry is counted; the node applies it from the journal
            # at its next start (after an upgrade, or once the disk has room). The XMPP process
            # exits with us; systemd restarts and we stop again, loudly, until that is done.
            too_old = isinstance(exc, NewerEvent)
            log.critical(
                "node_too_old_for_log" if too_old else "storage_failed",
                node=self._addr,
                index=index,
                error=str(exc),
                action="upgrade this node to the release the other nodes run"
                if too_old
                else "free space in data_dir (or fix the disk) and start the node again",
            )
            os._exit(EXIT_TOO_OLD if too_old else EXIT_STORAGE)
        except Exception as exc:
            log.exception("raft_apply_failed", node=self._addr, index=index)
            note = f"apply_failed: {type(exc).__name__}: {exc}"
            return index, note.encode("utf-8", "replace"), note

    def _apply(self, index: int, command: bytes) -> bytes:
        if index <= self._sm.last_applied():
            return ALREADY_APPLIED
        return self._sm.apply(index, command)

    def _journal(self) -> DurableFileJournal:
        """SyncObj's journal: ours, since `raft_patches.install()` and a journal file is set."""
        journal: DurableFileJournal = self._SyncObj__raftLog
        return journal

    def _onTick(self, timeToWait: float = 0.0) -> None:
        journal = self._journal()
        # A leader counts its own copy towards the commit in this tick: flush it first.
        journal.sync()
        now = time.monotonic()
        if journal.size_bytes > self._compaction_max_bytes and now > self._next_forced_compaction:
            # Rate-limited: a failing snapshot (disk full) must not be retried on every tick.
            self._next_forced_compaction = now + FORCED_COMPACTION_INTERVAL
            self.forceLogCompaction()
        # Before pysyncobj's tick, which can raise (and skip its own tick callbacks).
        self._on_tick()
        super()._onTick(timeToWait)

    def _checkCommandsToApply(self) -> None:
        """Append queued commands; a leader alone in its cluster then wakes its own poller.

        A leader counts an entry as committed at the start of a tick, and pysyncobj's tick
        appends queued commands near its end, then waits in the poller for up to
        `autoTickPeriod` (10 ms) unless a socket or a new submit wakes it. With followers their
        acknowledgements wake it; alone, nothing did, so every commit waited out the period.
        """
        before = self._SyncObj__raftLog[-1][1]
        super()._checkCommandsToApply()
        if not self._SyncObj__otherNodes and self._SyncObj__raftLog[-1][1] != before:
            self._SyncObj__pipeNotifier.notify()

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        """Raft message handling with the fixes for defects 1, 8 and 12.

        Overrides the name-mangled `SyncObj.__onMessageReceived`, which SyncObj registers with
        the transport as `self.__onMessageReceived`, so this subclass method is what runs.
        """
        kind = message.get("type")
        if kind == "next_node_idx" and self._on_next_node_idx(node, message):
            return
        if (
            kind == "append_entries"
            and "prevLogIdx" not in message
            and self._fixes.snapshot_commit_guard
        ):
            self._on_snapshot_message(node, message)
            return
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _on_snapshot_message(self, node: Any, message: Any) -> None:
        """A snapshot chunk (or an empty one while the leader is busy serializing).

        pysyncobj sets `commitIndex = min(leaderCommit, lastLogIndex)` after every
        append_entries, including these, which carry no prevLogIdx: the follower's log was not
        matched against the leader's. A deposed leader that gets a snapshot thus commits and
        applies its own uncommitted tail and answers its callers APPLIED for entries the
        cluster overwrote (defect 12). An installed snapshot is committed by definition, so
        only a commit-index advance without an installed snapshot is undone.
        """
        commit_before = self.raftCommitIndex
        applied_before = self.raftLastApplied
        SyncObj._SyncObj__onMessageReceived(self, node, message)
        if self.raftLastApplied == applied_before and self.raftCommitIndex > commit_before:
            self._SyncObj__raftCommitIndex = commit_before
            self._journal().setRaftCommitIndex(commit_before)

    def _on_next_node_idx(self, node: Any, message: Any) -> bool:
        """Leader bookkeeping of a follower's reply (defects 1 and 8); False: pysyncobj's own.

        For a `next_node_idx` message on a leader, pysyncobj runs only the block replaced here.
        """
        fixes = self._fixes
        if not (self._isLeader() and (fixes.monotonic_next_index or fixes.reset_only_backwards)):
            return False
        next_index = self._SyncObj__raftNextIndex
        match_index = self._SyncObj__raftMatchIndex
        if node not in match_index:  # a removed node's late reply
            return True
        next_index[node], match_index[node] = next_index_after_reply(
            next_index[node],
            match_index[node],
            message["next_node_idx"],
            success=message["success"],
            reset=message["reset"],
            fixes=fixes,
        )
        self._SyncObj__lastResponseTime[node] = time.monotonic()
        return True


class RaftLog:
    """A node of the replicated log. See the module docstring for threading rules."""

    def __init__(
        self,
        config: RaftConfig,
        state_machine: StateMachine,
        *,
        fixes: Fixes = ALL_FIXES,
    ) -> None:
        _validate(config)
        raft_patches.install()
        self._config = config
        self._sm = state_machine
        self._dir = config.data_dir / "raft"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._pending: dict[int, Callback] = {}
        self._deadlines: deque[tuple[float, int]] = deque()
        self._tokens = itertools.count(1)
        self._ready = threading.Event()
        self._closed = False
        snapshots = _Snapshots(state_machine, self._dir, config.self_addr, config.fsync)
        self._snapshots = snapshots
        one_node = not _peers(config)
        batch = (
            2 * config.max_command_bytes + BATCH_MARGIN_BYTES
            if fixes.large_batches
            else PYSYNCOBJ_DEFAULT_BATCH_BYTES
        )
        conf = SyncObjConf(
            # Nobody else may talk to a one-node cluster: a random password locks the port.
            password=config.secret or secrets.token_urlsafe(32),
            autoTick=True,
            autoTickPeriod=config.tick_period or (0.01 if one_node else 0.05),
            appendEntriesPeriod=HEARTBEAT_PERIOD,
            raftMinTimeout=config.min_timeout,
            raftMaxTimeout=config.max_timeout,
            connectionTimeout=config.connection_timeout,
            connectionRetryTime=1.0,
            leaderFallbackTimeout=config.leader_fallback_timeout,
            # Send on every append and commit on the majority's ack (0.5 ms, not ~100 ms).
            appendEntriesUseBatch=False,
            appendEntriesBatchSizeBytes=batch,
            commandsWaitLeader=False,
            commandsQueueSize=config.commands_queue_size,
            sendBufferSize=SOCKET_BUFFER_BYTES,
            recvBufferSize=SOCKET_BUFFER_BYTES,
            bindAddress=config.bind_addr,
            journalFile=str(self._dir / "journal"),
            fullDumpFile=str(self._dir / "dump"),
            serializer=snapshots.write,
            serializeChecker=snapshots.check,
            deserializer=snapshots.read,
            useFork=False,
            logCompactionMinEntries=config.compaction_min_entries
            or (LONE_COMPACTION_ENTRIES if one_node else CLUSTER_COMPACTION_ENTRIES),
            logCompactionMinTime=config.compaction_min_time,
            dynamicMembershipChange=True,
            onReady=self._ready.set,
        )
        self._node = _Node(config, conf, state_machine, fixes, self._expire)
        log.info("raft_started", node=config.self_addr, peers=list(_peers(config)))

    # -- commands ---------------------------------------------------------------------------

    def submit(self, command: bytes, callback: Callback) -> None:
        """Propose `command`; `callback` gets exactly one SubmitResult.

        Non-blocking. The callback runs on the raft thread, except for immediate refusals
        (TOO_LARGE, QUEUE_FULL, closed), which run on the caller's thread. Never wait for Raft
        inside it.
        """
        if len(command) > self._config.max_command_bytes:
            detail = f"{len(command)} > {self._config.max_command_bytes} bytes"
            self._deliver(callback, SubmitResult(Outcome.TOO_LARGE, None, None, detail))
            return
        token = self._register(callback)
        if token is None:
            return
        self._enqueue(
            functools.partial(self._node.apply_entry, bytes(command)),
            functools.partial(self._on_applied, token),
        )

    def add_member(self, addr: str, callback: Callback) -> None:
        """Add a node (started with this cluster as its peers); one change at a time."""
        self._membership(self._node.addNodeToCluster, addr, callback)

    def remove_member(self, addr: str, callback: Callback) -> None:
        """Remove a node from the cluster; one change at a time."""
        self._membership(self._node.removeNodeFromCluster, addr, callback)

    def force_compaction(self) -> None:
        """Snapshot and truncate the journal on the next tick (ops and tests)."""
        self._node.forceLogCompaction()

    def _membership(self, change: Callable[..., None], addr: str, callback: Callback) -> None:
        try:
            _check_addr(addr, "member address")
        except ValueError as exc:
            self._deliver(callback, SubmitResult(Outcome.NOT_APPENDED, None, None, str(exc)))
            return
        if not self._config.secret:
            detail = "no cluster secret configured: a one-node cluster cannot grow"
            self._deliver(callback, SubmitResult(Outcome.NOT_APPENDED, None, None, detail))
            return
        token = self._register(callback)
        if token is not None:
            self._enqueue(
                functools.partial(change, addr), functools.partial(self._on_applied, token)
            )

    def _enqueue(self, call: Callable[..., None], done: Callable[[Any, int], None]) -> None:
        try:
            call(callback=done)
        except OSError:
            # The command is queued; only the wake-up write to pysyncobj's notifier pipe
            # failed, because the pipe is full, which wakes the raft thread anyway.
            log.warning("raft_notify_failed", node=self._config.self_addr)

    def _register(self, callback: Callback) -> int | None:
        if self._closed:
            self._deliver(callback, SubmitResult(Outcome.NOT_APPENDED, None, None, "closed"))
            return None
        token = next(self._tokens)
        self._pending[token] = callback
        self._deadlines.append((time.monotonic() + self._config.submit_timeout, token))
        return token

    def _on_applied(self, token: int, res: Any, err: int) -> None:
        if err == FAIL_REASON.SUCCESS:
            if res is None:  # a membership change
                result = SubmitResult(Outcome.APPLIED, None, None)
            else:
                index, blob, error = res
                outcome = Outcome.UNKNOWN if error else Outcome.APPLIED
                result = SubmitResult(outcome, index, blob, error)
        else:
            outcome, detail = _FAIL_OUTCOMES.get(err, (Outcome.UNKNOWN, f"fail_reason_{err}"))
            result = SubmitResult(outcome, None, None, detail)
        self._finish(token, result)

    def _finish(self, token: int, result: SubmitResult) -> None:
        # dict.pop is atomic: whichever of outcome, timeout and close comes first answers.
        callback = self._pending.pop(token, None)
        if callback is not None:
            self._deliver(callback, result)

    def _deliver(self, callback: Callback, result: SubmitResult) -> None:
        try:
            callback(result)
        except Exception:
            # On the raft thread an exception would abort the apply loop mid-entry.
            log.exception("raft_callback_failed", node=self._config.self_addr)

    def _expire(self) -> None:
        """Every tick (raft thread): answer submits that outlived submit_timeout."""
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, token = deadlines.popleft()
            self._finish(token, SubmitResult(Outcome.UNKNOWN, None, None, "timeout"))

    # -- state --------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return bool(self._node._isLeader())

    def wait_ready(self, timeout: float) -> bool:
        """Wait until this node has caught up with a leader's commit index once and a leader is
        known now."""
        deadline = time.monotonic() + timeout
        if not self._ready.wait(timeout):
            return False
        while self._node._getLeader() is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def status(self) -> dict[str, Any]:
        """A JSON-ready view of this node's Raft state (read from another thread, best effort)."""
        raw: dict[str, Any] = {}
        for _ in range(10):
            try:
                raw = self._node.getStatus()
                break
            except RuntimeError:  # a dict changed size under us on the raft thread
                time.sleep(0.001)
        peers = sorted(node.address for node in self._node.otherNodes)
        is_leader = raw.get("state") == 2

        def per_peer(prefix: str) -> dict[str, int]:
            return {
                key[len(prefix) :]: value for key, value in raw.items() if key.startswith(prefix)
            }

        journal = self._node._journal()
        connected = {peer: raw.get(f"partner_node_status_server_{peer}") == 2 for peer in peers}
        return {
            **_summary(self._config.self_addr, raw),
            "members": sorted([self._config.self_addr, *peers]),
            "connected": connected,
            # pysyncobj 0.3.17 reports the bound method `hasQuorum`, always truthy: count here.
            "has_quorum": 2 * (1 + sum(connected.values())) > 1 + len(peers),
            "log_len": raw.get("log_len"),
            "last_log_index": journal[-1][1] if len(journal) else None,
            "match_index": per_peer("match_idx_server_") if is_leader else {},
            "next_index": per_peer("next_node_idx_server_") if is_leader else {},
            "ready": self._ready.is_set(),
            "pending": len(self._pending),
            "truncated_entries": journal.truncated_entries,
        }

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop the raft thread, close journal and sockets, answer pending submits UNKNOWN."""
        if self._closed:
            return
        self._closed = True
        self._node.destroy()
        if threading.current_thread() is not self._tick_thread():
            deadline = time.monotonic() + timeout
            while self._node.tick_thread_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if self._node.tick_thread_alive():
                log.error("raft_thread_did_not_stop", node=self._config.self_addr)
            # The caller closes the state machine next: not under a copy still reading it.
            if not self._snapshots.join(SNAPSHOT_JOIN_TIMEOUT):
                log.error("raft_snapshot_did_not_stop", node=self._config.self_addr)
        for token in list(self._pending):
            self._finish(token, SubmitResult(Outcome.UNKNOWN, None, None, "closed"))
        log.info("raft_stopped", node=self._config.self_addr)

    def _tick_thread(self) -> threading.Thread | None:
        thread: threading.Thread | None = self._node._SyncObj__thread
        return thread


def query_status(addr: str, secret: str | None, timeout: float = 2.0) -> dict[str, Any] | None:
    """Ask the Raft endpoint at `addr` for its status over an encrypted utility connection.

    Used by `xes cluster status` to show every member's commit and apply index, not only the
    local node's; None when the node does not answer (down, cut off, or another secret).
    """
    from pysyncobj.utility import TcpUtility, UtilityException

    try:
        raw = TcpUtility(password=secret, timeout=timeout).executeCommand(addr, ["status"])
    except (UtilityException, OSError):
        return None
    if not isinstance(raw, dict):
        return None
    return _summary(addr, raw)


def _summary(addr: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The part of a node's status that any member can report, from pysyncobj's getStatus()."""
    leader = raw.get("leader")
    return {
        "self": addr,
        "state": _STATES.get(raw.get("state", -1), "unknown"),
        "leader": str(leader) if leader is not None else None,
        "term": raw.get("raft_term"),
        "commit_index": raw.get("commit_idx"),
        "last_applied": raw.get("last_applied"),
    }
