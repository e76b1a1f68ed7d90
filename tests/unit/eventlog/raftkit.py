"""Helpers for the Raft adapter tests: an LMDB state machine and in-process clusters on loopback.

Every node is a real PySyncObj node with TCP sockets on 127.0.0.1; `Cluster` closes them all at
the end of each test, so no raft thread outlives its test.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb

from xes.eventlog.raft import Fixes, Outcome, RaftConfig, RaftLog, SubmitResult

SECRET = "test-cluster-secret"


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


class LmdbStateMachine:
    """A tiny StateMachine like the projector: applied commands by index, last_applied beside.

    `snapshot_kind` "dir" copies the environment into a directory (`env.copy`, what the
    projector does); "file" writes the copy into one file (`env.copyfd`).
    """

    def __init__(self, path: Path, snapshot_kind: str = "dir") -> None:
        self.path = path
        self.snapshot_kind = snapshot_kind
        self.apply_calls = 0
        self.restores = 0
        self.snapshot_calls = 0
        self.fail_snapshots = False
        #: When set, `snapshot` waits for it first (a copy that takes long).
        self.snapshot_gate: threading.Event | None = None
        self.snapshot_started = threading.Event()
        #: Every (index, command) ever applied, even if a restore later replaced it.
        self.history: list[tuple[int, bytes]] = []
        self._lock = threading.RLock()
        path.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        # sync=False: these tests restart processes, not machines; fsync per apply would only
        # make them slow on a loaded CI box.
        self._env = lmdb.open(str(self.path), max_dbs=4, map_size=1 << 30, sync=False)
        self._entries = self._env.open_db(b"entries")
        self._meta = self._env.open_db(b"meta")

    # -- StateMachine ---------------------------------------------------------------------------

    def last_applied(self) -> int:
        with self._lock, self._env.begin() as txn:
            raw = txn.get(b"last_applied", db=self._meta)
            return struct.unpack(">Q", raw)[0] if raw else 0

    def apply(self, index: int, command: bytes) -> bytes:
        with self._lock:
            self.apply_calls += 1
            if command.startswith(b"raise"):
                raise ValueError(f"bad command at {index}")
            with self._env.begin(write=True) as txn:
                txn.put(u64(index), command, db=self._entries)
                txn.put(b"last_applied", u64(index), db=self._meta)
            self.history.append((index, command))
            return b"ok:%d" % index

    def snapshot(self, path: Path) -> None:
        self.snapshot_started.set()
        if self.snapshot_gate is not None:
            assert self.snapshot_gate.wait(60), "snapshot gate never opened"
        with self._lock:
            self.snapshot_calls += 1
            if self.fail_snapshots:
                raise OSError(28, "No space left on device")
            if self.snapshot_kind == "dir":
                path.mkdir()
                self._env.copy(str(path))
            else:
                with open(path, "xb") as f:
                    self._env.copyfd(f.fileno())

    def restore(self, path: Path) -> None:
        with self._lock:
            self._env.close()
            source = path / "data.mdb" if path.is_dir() else path
            os.replace(source, self.path / "data.mdb")
            lock = self.path / "lock.mdb"
            if lock.exists():
                lock.unlink()
            self._open()
            self.restores += 1

    # -- test helpers ---------------------------------------------------------------------------

    def commands(self) -> dict[int, bytes]:
        with self._lock, self._env.begin() as txn:
            return {
                struct.unpack(">Q", key)[0]: bytes(value)
                for key, value in txn.cursor(db=self._entries)
            }

    def close(self) -> None:
        with self._lock:
            self._env.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Results:
    """Collects SubmitResults from callbacks (any thread)."""

    def __init__(self) -> None:
        self.items: list[SubmitResult] = []
        self._cond = threading.Condition()

    def __call__(self, result: SubmitResult) -> None:
        with self._cond:
            self.items.append(result)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.items) >= count, timeout)

    def outcomes(self) -> list[Outcome]:
        return [r.outcome for r in self.items]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@dataclass
class Node:
    addr: str
    data_dir: Path
    sm: LmdbStateMachine
    raft: RaftLog


@dataclass
class Cluster:
    """Nodes of one test; `start` (re)opens a node over its data directory."""

    root: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    addrs: list[str] = field(default_factory=list)

    def allocate(self, count: int) -> list[str]:
        new = [f"127.0.0.1:{free_port()}" for _ in range(count)]
        self.addrs.extend(new)
        return new

    def start(
        self,
        addr: str,
        peers: list[str] | None = None,
        fixes: Fixes | None = None,
        snapshot_kind: str = "dir",
        **overrides: Any,
    ) -> Node:
        assert addr not in self.nodes, f"{addr} already running"
        data_dir = self.root / addr.replace(":", "_")
        peers = [a for a in (self.addrs if peers is None else peers) if a != addr]
        settings: dict[str, Any] = {"secret": SECRET, "fsync": False, "bind_addr": addr}
        settings.update(overrides)
        config = RaftConfig(self_addr=addr, peers=tuple(peers), data_dir=data_dir, **settings)
        sm = LmdbStateMachine(data_dir / "db", snapshot_kind)
        raft = RaftLog(config, sm, fixes=fixes or Fixes())
        node = Node(addr, data_dir, sm, raft)
        self.nodes[addr] = node
        return node

    def stop(self, addr: str) -> None:
        node = self.nodes.pop(addr)
        node.raft.close()
        node.sm.close()

    def close(self) -> None:
        for addr in list(self.nodes):
            self.stop(addr)

    def leader(self, timeout: float = 10.0) -> Node:
        found: list[Node] = []

        def one_leader() -> bool:
            leaders = [n for n in self.nodes.values() if n.raft.is_leader()]
            found[:] = leaders
            return len(leaders) == 1 and all(
                n.raft.status()["leader"] == leaders[0].addr for n in self.nodes.values()
            )

        assert wait_until(one_leader, timeout), "no single leader"
        return found[0]

    def wait_ready(self, timeout: float = 10.0) -> Node:
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            assert node.raft.wait_ready(max(0.1, deadline - time.monotonic())), node.addr
        return self.leader(max(0.5, deadline - time.monotonic()))

    def converged(self, timeout: float) -> bool:
        """Wait until every node's state machine holds the same commands."""

        def same() -> bool:
            states = [n.sm.commands() for n in self.nodes.values()]
            return all(s == states[0] for s in states)

        return wait_until(same, timeout, 0.05)


def compact(node: Node) -> None:
    """Force a snapshot and wait until the journal was truncated behind it."""
    status = node.raft.status
    assert wait_until(lambda: status()["last_applied"] == status()["last_log_index"], 10)
    dump = node.data_dir / "raft" / "dump"
    mtime = dump.stat().st_mtime_ns if dump.exists() else None
    node.raft.force_compaction()

    def compacted() -> bool:
        fresh = dump.exists() and dump.stat().st_mtime_ns != mtime
        return fresh and node.raft.status()["log_len"] <= 3

    assert wait_until(compacted, 10), node.addr


def submit_wait(raft: RaftLog, command: bytes, timeout: float = 10.0) -> SubmitResult:
    results = Results()
    raft.submit(command, results)
    assert results.wait(1, timeout), "no outcome"
    return results.items[0]


class Network:
    """Test double for the links between in-process nodes: isolate, delay or throttle.

    Installed by patching `_Transport` (the adapter's TCPTransport subclass) at class level.
    Isolation drops messages both ways while the TCP connections stay up, like a partition
    shorter than the connection timeout whose buffered data is lost. A delay holds every
    received Raft message for `delay` seconds, preserving order, and delivers it from the
    receiving node's raft thread, so replies arrive in bursts as on a WAN link. A throttle lets
    a node take at most that many received messages per tick.
    """

    def __init__(self, transport_cls: Any) -> None:
        self.isolated: set[str] = set()
        self.delay = 0.0
        self.throttle: dict[str, int] = {}
        self._send = transport_cls.send
        self._receive = transport_cls._onMessageReceived

    def patch(self, monkeypatch: Any, transport_cls: Any) -> None:
        network = self

        def send(transport: Any, node: Any, message: Any) -> bool:
            if network._cut(transport, node):
                return False
            return bool(network._send(transport, node, message))

        def receive(transport: Any, node: Any, message: Any) -> None:
            if network._cut(transport, node):
                return
            addr = transport._selfNode.address
            queue = getattr(transport, "_test_queue", None)
            if not (queue or network.delay or addr in network.throttle):
                network._receive(transport, node, message)
                return
            if queue is None:
                queue = transport._test_queue = deque()
                transport._syncObj.addOnTickCallback(
                    lambda: network._deliver(transport, network.throttle.get(addr))
                )
            queue.append((time.monotonic() + network.delay, node, message))
            if addr not in network.throttle:
                network._deliver(transport, None)

        monkeypatch.setattr(transport_cls, "send", send)
        monkeypatch.setattr(transport_cls, "_onMessageReceived", receive)

    def _cut(self, transport: Any, node: Any) -> bool:
        return transport._selfNode.address in self.isolated or node.address in self.isolated

    def _deliver(self, transport: Any, limit: int | None) -> None:
        queue = transport._test_queue
        now = time.monotonic()
        delivered = 0
        while queue and (queue[0][0] <= now or not self.delay):
            if limit is not None and delivered >= limit:
                break
            _, node, message = queue.popleft()
            delivered += 1
            if not self._cut(transport, node):
                self._receive(transport, node, message)
