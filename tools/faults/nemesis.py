"""The nemesis: a seeded, replayable schedule of faults, and the code that applies each one.

Why a schedule computed up front: the same seed gives the same kinds, targets, durations and
gaps, so a run that shows a bug can be run again (targets named "the leader" are resolved when
the fault starts, the only choice that depends on the run). Cluster faults run one at a time,
and after each one ends the nemesis waits until every client makes progress again (bounded), so
each recovery time belongs to one fault; client faults (TCP cuts, stalls) run on their own
timeline and overlap everything.

Kinds (``CLUSTER_KINDS`` and ``CLIENT_KINDS``):

* ``kill``, ``kill_leader``: ``kill -9`` of a node's whole process group, restarted with its data
  after a few seconds;
* ``pause``: SIGSTOP of a node's processes, SIGCONT later (sometimes longer than
  ``node_down_after``, so the node learns it was declared down when it wakes);
* ``partition_node``, ``partition_leader``: one node (a random one, or the leader) cut off from
  the other two, on the Raft links (the WAN emulator's proxies);
* ``bridge``: one Raft link cut, the third node still sees both;
* ``slow_link``: delay, jitter and loss on one Raft link;
* ``wipe``: a follower removed from the membership, its data deleted, added again empty;
* ``disk_low``, ``disk_full``: one node's data directory filled to below ``min_free_disk_mb``
  (the refusal path), or completely (what happens past the margin), then freed again;
* ``clock_step``: one node's wall clock stepped by minutes, forward or back, and stepped back
  later, as NTP stepping a badly set clock does; its monotonic clock runs on (libfaketime,
  :mod:`tools.faults.clock`);
* ``snapshot_kill``: ``kill -9`` of a node while it writes a Raft snapshot (its store copy
  ``raft/snapshot.tmp`` or its dump ``raft/dump.writing`` present), restarted with its data;
* ``client_cut``: a client's TCP connection cut half-open (the server keeps its socket);
* ``client_stall``: a client stops reading for a while (a slow consumer).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.integration.cluster import XesCluster
from tests.integration.server import XesServer
from tests.integration.wanproxy import WanEmulator
from tools.faults import clock
from tools.faults.client import FaultClient

CLUSTER_KINDS: dict[str, float] = {
    "kill": 2,
    "kill_leader": 2,
    "pause": 2,
    "partition_node": 2,
    "partition_leader": 2,
    "bridge": 1.5,
    "slow_link": 1.5,
    "clock_step": 1.5,
    "snapshot_kill": 1.5,
    "wipe": 0,
    "disk_low": 0,
    "disk_full": 0,
}
"""Kinds of cluster fault and their weights (``wipe``, ``disk_*`` are opt-in: ``--wipe``,
``--disk``; the disk faults need the nodes' data on small tmpfs mounts, hence root).
``clock_step`` needs libfaketime (Debian's ``faketime`` package); ``snapshot_kill`` needs
frequent snapshots (the campaign's ``[cluster] compaction_entries``)."""
SNAPSHOT_MARKERS = {"copy": "snapshot.tmp", "pack": "dump.writing"}
"""What a node's ``raft/`` directory holds while it writes a snapshot, per phase: the LMDB copy
(``Projector.snapshot``), then the dump packed from it (``raft._Snapshots._write_dump``)."""
SNAPSHOT_WAIT = 90.0
"""Longest wait for the target node to start a snapshot before it is killed anyway."""
DISK_MB = 160
"""Size of each node's tmpfs data directory with ``--disk``."""
MIN_FREE_MB = 32
"""``[limits] min_free_disk_mb`` with ``--disk``: ``disk_low`` leaves half of it free (the
node refuses client writes), ``disk_full`` fills the disk completely (past the margin)."""
CLIENT_KINDS: dict[str, float] = {"client_cut": 3, "client_stall": 1}


@dataclass(frozen=True)
class Fault:
    at: float
    """Seconds after the campaign start (cluster faults: at the earliest; they run in turn)."""
    kind: str
    target: int
    """Node or client index (ignored for ``*_leader``); for ``bridge``/``slow_link`` the link
    is (target, (target + 1) % 3)."""
    duration: float
    delay: float = 0.0
    loss: float = 0.0
    step: float = 0.0
    """``clock_step``: seconds the node's wall clock jumps (negative: back), undone after
    ``duration``."""
    phase: str = ""
    """``snapshot_kill``: the snapshot phase the kill lands in (``SNAPSHOT_MARKERS``)."""


def _draw(rng: random.Random, kind: str, at: float, nodes: int) -> Fault:
    """One cluster fault of ``kind`` at ``at``: its target and parameters from ``rng``."""
    length = {
        "kill": lambda: rng.uniform(1, 6),
        "kill_leader": lambda: rng.uniform(1, 6),
        "pause": lambda: rng.choice([rng.uniform(2, 6), rng.uniform(8, 16)]),
        "partition_node": lambda: rng.uniform(3, 14),
        "partition_leader": lambda: rng.uniform(3, 14),
        "bridge": lambda: rng.uniform(3, 12),
        "slow_link": lambda: rng.uniform(4, 12),
        # Long enough for resumption deadlines (30 s in the campaign) and node-down timers
        # to be measured across the step.
        "clock_step": lambda: rng.uniform(10, 45),
        "snapshot_kill": lambda: rng.uniform(1, 6),
        "wipe": lambda: 2.0,
        "disk_low": lambda: rng.uniform(4, 10),
        "disk_full": lambda: rng.uniform(4, 10),
    }[kind]()
    target = rng.randrange(nodes)
    delay = loss = step = 0.0
    phase = ""
    if kind == "slow_link":
        delay, loss = round(rng.uniform(0.03, 0.2), 3), round(rng.uniform(0.0, 0.05), 3)
    elif kind == "clock_step":
        step = round(rng.choice([-1, 1]) * rng.uniform(60, 600), 1)
    elif kind == "snapshot_kill":
        phase = rng.choice(sorted(SNAPSHOT_MARKERS))
    return Fault(round(at, 2), kind, target, round(length, 2), delay, loss, step, phase)


def schedule(
    seed: int,
    duration: float,
    clients: int,
    *,
    wipe: bool = False,
    disk: bool = False,
    only: set[str] | None = None,
    require: dict[str, int] | None = None,
    nodes: int = 3,
) -> list[Fault]:
    """Every fault of a run, in start order: a pure function of its arguments (``only``:
    draw from these kinds alone, to bisect a finding; ``require``: at least this many faults
    of these kinds, in place of others, so a short run is sure to exercise them)."""
    rng = random.Random(seed)
    kinds = dict(CLUSTER_KINDS)
    if wipe:
        kinds["wipe"] = 1
    if disk:
        kinds["disk_low"] = 1
        kinds["disk_full"] = 1
    if only is not None:
        kinds = {k: (w or 1) if k in only else 0 for k, w in kinds.items()}
    names = [k for k, w in kinds.items() if w > 0]
    weights = [kinds[k] for k in names]
    out: list[Fault] = []
    t = rng.uniform(3, 6)
    while names and t < duration:
        fault = _draw(rng, rng.choices(names, weights)[0], t, nodes)
        out.append(fault)
        t += fault.duration + rng.uniform(2, 6)
    forced = require or {}
    # Forced kinds take the place of the earliest other cluster faults (keeping their time),
    # in a seeded order: a loaded machine may not reach the last faults of a schedule, as each
    # cluster fault waits for the clients to recover.
    todo = [
        kind
        for kind, count in sorted(forced.items())
        for _ in range(max(0, count - sum(1 for f in out if f.kind == kind)))
    ]
    rng.shuffle(todo)
    spare = [i for i, f in enumerate(out) if f.kind not in forced]
    for i, kind in zip(spare, todo, strict=False):
        out[i] = _draw(rng, kind, out[i].at, nodes)
    cnames = [k for k in CLIENT_KINDS if only is None or k in only]
    cweights = [CLIENT_KINDS[k] for k in cnames]
    t = rng.uniform(1, 4)
    while cnames and t < duration:
        kind = rng.choices(cnames, cweights)[0]
        length = rng.uniform(3, 20) if kind == "client_stall" else 0.0
        out.append(Fault(round(t, 2), kind, rng.randrange(clients), round(length, 2)))
        t += rng.uniform(1.5, 5)
    return sorted(out, key=lambda f: (f.at, f.kind))


@dataclass
class Applied:
    fault: Fault
    started: float
    ended: float = 0.0
    recovered: float | None = None
    """When every client had made progress again (cluster faults), wall clock."""
    node: str = ""
    note: str = ""


@dataclass
class Nemesis:
    cluster: XesCluster
    wan: WanEmulator
    clients: list[FaultClient]
    faults: list[Fault]
    progressed_since: Callable[[float], bool]
    """True once every client has had a message acknowledged after that wall-clock time."""
    recover_timeout: float = 45.0
    applied: list[Applied] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    crashes: list[tuple[float, str, int]] = field(default_factory=list)
    """(time, node, exit status) of every node that exited without being killed."""
    stop_flag: threading.Event = field(default_factory=threading.Event)
    clocks: dict[int, clock.Clock] = field(default_factory=dict)
    """Each node's faked wall clock (``clock_step``), by node index; empty without faketime."""
    _paused: set[int] = field(default_factory=set)

    def run_for(self, duration: float) -> None:
        """Apply the schedule for ``duration`` seconds (two threads), then undo every fault."""
        start = time.monotonic()
        cluster_faults = [f for f in self.faults if f.kind in CLUSTER_KINDS]
        client_faults = [f for f in self.faults if f.kind in CLIENT_KINDS]
        threads = [
            threading.Thread(target=self._guard, args=(self._cluster_loop, cluster_faults, start)),
            threading.Thread(target=self._guard, args=(self._client_loop, client_faults, start)),
        ]
        for th in threads:
            th.start()
        self.stop_flag.wait(duration)
        self.stop_flag.set()
        for th in threads:
            th.join(120)
        self.heal_everything()

    def counts(self) -> Counter[str]:
        return Counter(a.fault.kind for a in self.applied)

    # ------------------------------------------------------------------------------- loops

    def _guard(
        self, loop: Callable[[list[Fault], float], None], faults: list[Fault], start: float
    ) -> None:
        try:
            loop(faults, start)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _wait_until(self, start: float, at: float) -> bool:
        delay = start + at - time.monotonic()
        return not (delay > 0 and self.stop_flag.wait(delay))

    def _cluster_loop(self, faults: list[Fault], start: float) -> None:
        for fault in faults:
            if not self._wait_until(start, fault.at) or self.stop_flag.is_set():
                return
            record = Applied(fault, time.time())
            self.applied.append(record)
            self._apply(fault, record)
            record.ended = time.time()
            # Wait for every client to make progress again: that is this fault's recovery.
            deadline = time.monotonic() + self.recover_timeout
            while time.monotonic() < deadline:
                self._restart_crashed()
                if self.progressed_since(record.ended):
                    record.recovered = time.time()
                    break
                time.sleep(0.2)

    def _restart_crashed(self) -> None:
        """A node that exited by itself (not killed by us) is a finding: recorded, with its
        exit status, in ``crashes``, and started again as systemd would."""
        for i, node in enumerate(self.cluster.nodes):
            if node.proc is not None and node.proc.poll() is not None:
                self.crashes.append((time.time(), f"n{i + 1}", node.proc.returncode))
                node.proc = None
                node.launch()

    def _client_loop(self, faults: list[Fault], start: float) -> None:
        for fault in faults:
            if not self._wait_until(start, fault.at) or self.stop_flag.is_set():
                return
            client = self.clients[fault.target]
            record = Applied(fault, time.time(), node=client.user)
            if fault.kind == "client_cut":
                if not client.cut():
                    continue  # not connected right now: nothing to cut
            else:
                client.stall(fault.duration)
            record.ended = record.started + fault.duration
            self.applied.append(record)

    # ------------------------------------------------------------------------------ faults

    def _hold(self, seconds: float) -> None:
        """Keep a fault on for ``seconds``; cut short when the campaign ends."""
        self.stop_flag.wait(seconds)

    def _apply(self, fault: Fault, record: Applied) -> None:
        nodes = self.cluster.nodes
        kind = fault.kind
        if kind in ("kill_leader", "partition_leader"):
            node = self._leader()
            if node is None:
                record.note = "no leader found: applied to a random node"
                node = nodes[fault.target]
        else:
            node = nodes[fault.target]
        i = nodes.index(node)
        record.node = f"n{i + 1}"
        if kind in ("kill", "kill_leader"):
            if not node.running:
                node.launch()
            self.cluster.kill(node)
            self._hold(fault.duration)
            node.launch()
        elif kind == "pause":
            self._signal(node, signal.SIGSTOP)
            self._paused.add(i)
            self._hold(fault.duration)
            self._signal(node, signal.SIGCONT)
            self._paused.discard(i)
        elif kind in ("partition_node", "partition_leader"):
            self.wan.cut(self.cluster.site(i))
            self._hold(fault.duration)
            self.wan.heal(self.cluster.site(i))
        elif kind == "bridge":
            a, b = self.cluster.site(i), self.cluster.site((i + 1) % len(nodes))
            record.node = f"n{i + 1}-n{(i + 1) % len(nodes) + 1}"
            self.wan.cut_link(a, b)
            self._hold(fault.duration)
            self.wan.heal_link(a, b)
        elif kind == "slow_link":
            a, b = self.cluster.site(i), self.cluster.site((i + 1) % len(nodes))
            record.node = f"n{i + 1}-n{(i + 1) % len(nodes) + 1}"
            record.note = f"delay {fault.delay * 1000:.0f} ms, loss {fault.loss:.1%}"
            self.wan.set_link(a, b, delay=fault.delay, jitter=fault.delay / 4, loss=fault.loss)
            self._hold(fault.duration)
            self.wan.set_link(a, b)
        elif kind == "clock_step":
            if i not in self.clocks:
                raise RuntimeError("clock_step: the nodes were not started under faketime")
            step = self.clocks[i]
            record.note = f"wall clock {fault.step:+.0f} s for {fault.duration:.0f} s"
            step.set(fault.step)
            self._hold(fault.duration)
            step.set(0)
        elif kind == "snapshot_kill":
            record.note = self._snapshot_kill(node, fault)
            self._hold(fault.duration)
            node.launch()
        elif kind == "wipe":
            record.note = self._wipe(node)
            if record.note.startswith("n"):
                record.node = record.note.split(" ", 1)[0]
        elif kind in ("disk_low", "disk_full"):
            leave = MIN_FREE_MB // 2 if kind == "disk_low" else 0
            filler = node.data_dir / "filler"
            try:
                st = os.statvfs(node.data_dir)
                free = st.f_bavail * st.f_frsize // (1024 * 1024)
                with open(filler, "wb") as f:
                    for _ in range(max(0, free - leave)):
                        f.write(b"\0" * (1024 * 1024))
                    if not leave:
                        while True:  # the last pages too: ENOSPC ends it
                            f.write(b"\0" * 4096)
                            f.flush()
                record.note = f"{leave} MB left free"
            except OSError as exc:
                record.note = f"filled up: {exc}"
            self._hold(fault.duration)
            filler.unlink(missing_ok=True)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")

    def _snapshot_kill(self, node: XesServer, fault: Fault) -> str:
        """Wait until ``node`` is inside the snapshot phase ``fault.phase``, then ``kill -9``
        it; what the note says is what its data directory held when it died."""
        if not node.running:
            node.launch()
        marker = node.data_dir / "raft" / SNAPSHOT_MARKERS[fault.phase]
        deadline = time.monotonic() + SNAPSHOT_WAIT
        seen = False
        while not self.stop_flag.is_set() and time.monotonic() < deadline:
            if marker.exists():
                seen = True
                break
            time.sleep(0.0005)  # a small store is copied in tens of milliseconds
        self.cluster.kill(node)
        if not seen:
            return f"no snapshot within {SNAPSHOT_WAIT:.0f} s: killed anyway"
        # The process is dead now: a marker still there means the kill landed inside.
        inside = marker.exists()
        return f"killed in the {fault.phase} phase" + (
            f" ({marker.name} left behind)" if inside else " (it had just finished)"
        )

    def _signal(self, node: XesServer, sig: int) -> None:
        if node.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.proc.pid, sig)

    def _leader(self) -> XesServer | None:
        with contextlib.suppress(TimeoutError, AssertionError, ValueError, KeyError):
            return self.cluster.leader(timeout=10)
        return None

    def _wipe(self, node: XesServer) -> str:
        """Remove a follower from the membership, delete its data, add it back empty (the
        operator's "replace a dead node" steps in docs/operations.md)."""
        leader = self._leader()
        if leader is None:
            return "skipped: no leader"
        if leader is node:  # a follower instead: the leader's wipe is a kill plus an election
            node = next(n for n in self.cluster.nodes if n is not leader and n.running)
        self.cluster.kill(node)
        out = leader.xes("cluster", "remove", node.raft_addr, check=False)
        if out.stdout.strip() != "applied":
            node.launch()
            refused = out.stdout.strip() or out.stderr.strip()[-200:]
            return f"n{self.cluster.nodes.index(node) + 1} remove refused ({refused}): restarted"
        shutil.rmtree(node.data_dir, ignore_errors=True)
        self._hold(1.0)
        out = leader.xes("cluster", "add", node.raft_addr, check=False)
        node.launch()
        name = f"n{self.cluster.nodes.index(node) + 1}"
        return f"{name} removed, wiped, add: {out.stdout.strip() or out.stderr.strip()[-200:]}"

    def heal_everything(self) -> None:
        """Undo whatever is still on: every link healed and unshaped, every node running."""
        self.wan.heal_all()
        names = [self.cluster.site(i) for i in range(len(self.cluster.nodes))]
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                self.wan.set_link(names[a], names[b])
        for step in self.clocks.values():
            step.set(0)
        self._restart_crashed()
        for i, node in enumerate(self.cluster.nodes):
            if i in self._paused:
                self._signal(node, signal.SIGCONT)
            if not node.running:
                node.launch()
        self._paused.clear()
