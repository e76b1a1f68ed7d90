"""One fault campaign run: cluster up, clients chatting, the nemesis, a quiet end, the checker.

Phases, and why each is there:

1. A 3-node cluster of real ``xes serve`` processes (:class:`XesCluster`), every Raft link
   through the WAN emulator's proxies so partitions, delay and loss can be applied per link.
2. ``clients`` XEP-0198 devices (:class:`FaultClient`) spread over the nodes by their seeded
   choice, sending numbered one-to-one messages to each other and groupchat messages to one room.
3. The nemesis runs its seeded schedule for ``duration`` seconds, then undoes every fault.
4. Quiet end: sending stops, every client reconnects if it must and drains; then every client
   logs out and the campaign waits until the log shows no session of theirs (bounded by the
   resume timeout), so leftovers are ghosts, not stragglers.
5. Every node is read (digest, journal, offline storage, sessions, occupants) and the checker
   judges the client records against them. Records, facts and the report are written to
   ``out``.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.cluster import XesCluster, wait_until
from tests.integration.wanproxy import WanEmulator
from tools.faults import clock
from tools.faults.checker import NodeFacts, Report, check, read_node
from tools.faults.client import FaultClient
from tools.faults.nemesis import CLUSTER_KINDS, DISK_MB, MIN_FREE_MB, Nemesis, schedule

RESUME_TIMEOUT = 30
SNAPSHOT_ENTRIES = 300
SETTINGS = f"""\
node_down_after = 5.0
commit_timeout = 3.0
compaction_interval = 60.0
[stream_management]
resume_timeout = {RESUME_TIMEOUT}
[muc]
lock_new_rooms = false
default_persistent = true
"""
"""Shorter than the defaults so that a run of minutes sees nodes declared down, isolated nodes
dropping their clients and abandoned sessions expiring; the WAN tests use the same order of
magnitude. Snapshots every few hundred entries (rather than 5,000) so that a run of minutes
writes dozens of them, and ``snapshot_kill`` finds one to interrupt within seconds."""


@dataclass
class CampaignResult:
    seed: int
    duration: float
    clients: int
    faults: dict[str, int]
    recover_max: float | None
    not_recovered: int
    report: Report
    out: Path
    nemesis_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.report.violations and not self.nemesis_errors

    def table(self) -> str:
        """The one table a run prints."""
        f = self.report.figures
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        rows = [
            ("seed", str(self.seed)),
            ("duration / clients", f"{self.duration:.0f} s / {self.clients}"),
            ("faults applied", f"{sum(self.faults.values())} ({faults})"),
            (
                "messages sent",
                f"{f['sent']} ({f['sent_chat']} chat, {f['sent_groupchat']} groupchat)",
            ),
            (
                "client outcome",
                f"{f['accepted']} accepted, {f['refused']} refused, {f['unknown']} unknown "
                f"({f['unknown_committed']} of them committed)",
            ),
            (
                "committed",
                f"{f['committed_chat']} chat, {f['committed_groupchat']} groupchat",
            ),
            ("delivered exactly once (copies)", str(f["delivered"])),
            ("still in offline storage", str(f["stored_offline"])),
            ("lost", str(f["lost"])),
            ("duplicated", str(f["duplicated"])),
            (
                "out of order",
                f"{f['out_of_order']} ({f['out_of_order_causal']} against the sender's order)",
            ),
            ("delivered, not committed", str(f["phantom"])),
            ("nodes that exited by themselves", str(f.get("crashes", 0))),
            ("ghost sessions / occupants", f"{f['ghost_sessions']} / {f['ghost_occupants']}"),
            (
                "digests equal",
                f"{'yes' if f['digests_equal'] else 'NO'} at index {f['applied_index']}"
                f" (replay {'equal' if f.get('replay_ok') else 'DIFFERS'})",
            ),
            (
                "max time to recover",
                "-"
                if self.recover_max is None
                else f"{self.recover_max:.1f} s"
                + (f" ({self.not_recovered} not within 45 s)" if self.not_recovered else ""),
            ),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines.extend(f"NOTE {n}" for n in self.report.notes)
        lines.extend(f"VIOLATION {v}" for v in self.report.violations)
        lines.extend(f"NEMESIS ERROR {e}" for e in self.nemesis_errors)
        return "\n".join(lines)


def run_campaign(
    seed: int,
    duration: float,
    clients: int = 20,
    *,
    out: Path | None = None,
    interval: float = 1.0,
    wipe: bool = False,
    disk: bool = False,
    kinds: set[str] | None = None,
    require: dict[str, int] | None = None,
    snapshot_entries: int = SNAPSHOT_ENTRIES,
    log: Any = print,
) -> CampaignResult:
    """Run one campaign and return its result; ``out`` keeps records and node logs
    (``snapshot_entries``: the nodes' ``compaction_entries``, fewer for shorter runs)."""
    keep = out is not None
    root = Path(tempfile.mkdtemp(prefix=f"xes-faults-{seed}-"))
    out = out or root / "out"
    out.mkdir(parents=True, exist_ok=True)
    faults = schedule(seed, duration, clients, wipe=wipe, disk=disk, only=kinds, require=require)
    (out / "schedule.json").write_text(json.dumps([asdict(f) for f in faults], indent=1))
    log(f"campaign seed {seed}: {len(faults)} faults scheduled over {duration:.0f} s, {root}")
    wan = WanEmulator(seed=seed)
    extra = (
        f"compaction_entries = {snapshot_entries}\n"
        + SETTINGS
        + (f"[limits]\nmin_free_disk_mb = {MIN_FREE_MB}\n" if disk else "")
    )
    cluster = XesCluster(root / "cluster", wan=wan, extra=extra)
    clocks: dict[int, clock.Clock] = {}
    if any(f.kind == "clock_step" for f in faults):
        # Under faketime from the start, at offset 0: the nemesis steps a running node later.
        for i, c in enumerate(clock.install(root / "clocks", len(cluster.nodes))):
            clocks[i] = c
            cluster.nodes[i].env = c.env(cluster.nodes[i].env)
    fleet: list[FaultClient] = []
    result: CampaignResult | None = None
    mounts: list[Path] = []
    try:
        if disk:
            for node in cluster.nodes:
                node.data_dir.mkdir(parents=True, exist_ok=True)
                subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(node.data_dir)],
                    check=True,
                )
                mounts.append(node.data_dir)
        cluster.start()
        room = f"faults@conference.{cluster.domain}"
        _add_users(cluster, clients)
        rng = random.Random(seed ^ 0x5EED)
        for i in range(clients):
            peers = [p for p in range(clients) if p != i]
            fleet.append(
                FaultClient(i, cluster, peers, room, rng.randrange(1 << 30), interval=interval)
            )
        for c in fleet:
            c.start()
        wait_until(lambda: all(c.joined.is_set() for c in fleet), 120, 0.5)
        log(f"{clients} clients connected and in {room}")

        def progressed_since(t: float) -> bool:
            # A client stalled since ``t`` (a slow consumer) cannot show progress: skipped.
            return all(
                c.stalled_until > t or any(s.acked_at and s.acked_at > t for s in c.sent[-20:])
                for c in fleet
            )

        nemesis = Nemesis(cluster, wan, fleet, faults, progressed_since, clocks=clocks)
        nemesis.run_for(duration)
        log(f"nemesis done: {dict(nemesis.counts())}; quiet end")
        _quiet_end(cluster, fleet, log)
        facts = _read_nodes(cluster, clients, room, log)
        records = [c.records() for c in fleet]
        report = check(records, facts)
        for i, node in enumerate(cluster.nodes):
            # Rebuilding each node's projections from its journal must give its live digest.
            replay = node.xes("replay", check=False)
            if "OK: digests are equal" not in replay.stdout:
                report.violations.append(f"n{i + 1}: xes replay: {replay.stdout[-300:]}")
        report.figures["replay_ok"] = not any("xes replay" in v for v in report.violations)
        recover = [a.recovered - a.ended for a in nemesis.applied if a.recovered is not None]
        not_recovered = sum(
            1 for a in nemesis.applied if a.fault.kind in CLUSTER_KINDS and a.recovered is None
        )
        counts = dict(nemesis.counts())
        report.figures["crashes"] = len(nemesis.crashes)
        full = [
            (a.started, a.ended + 10, a.node)
            for a in nemesis.applied
            if a.fault.kind == "disk_full"
        ]
        for at, name, code in nemesis.crashes:
            if any(start <= at <= end and node == name for start, end, node in full):
                # Fail-stop on a full disk is the design (StorageFailed): noted, not a violation.
                report.notes.append(f"{name} stopped on its full disk (status {code})")
            else:
                report.violations.append(f"{name} exited by itself (status {code}): see its log")
        result = CampaignResult(
            seed,
            duration,
            clients,
            counts,
            max(recover) if recover else None,
            not_recovered,
            report,
            out,
            nemesis.errors,
        )
        _write(out, records, facts, nemesis, result)
        return result
    finally:
        for c in fleet:
            c.stop_flag.set()
        for c in fleet:
            c.join(15)
        cluster.stop()
        wan.close()
        if mounts and (result is None or not result.ok):
            for i, mount in enumerate(mounts):  # the evidence, before the tmpfs goes
                with suppress(OSError):
                    shutil.copytree(mount, out / f"n{i + 1}-data", dirs_exist_ok=True)
        for mount in mounts:
            subprocess.run(["umount", "-l", str(mount)], check=False)
        for i, node in enumerate(cluster.nodes):
            with suppress(OSError):
                shutil.copy(node.log_path, out / f"n{i + 1}.log")
        failed = result is None or not result.ok
        if failed:
            # The nodes' data is the evidence: kept beside the records.
            with suppress(OSError):
                shutil.move(str(root / "cluster"), str(out / "cluster"))
        if keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            shutil.rmtree(root / "cluster", ignore_errors=True)


def _add_users(cluster: XesCluster, count: int) -> None:
    node = cluster.nodes[0]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: node.add_user(f"f{i}", f"pw-f{i}"), range(count)))


def _quiet_end(cluster: XesCluster, fleet: list[FaultClient], log: Any) -> None:
    """Stop sending, let everyone reconnect and drain, then log out and wait for the ends."""
    for c in fleet:
        c.sending.clear()
        c.stall(0)
    deadline = time.monotonic() + 120

    def quiet() -> bool:
        # A client whose thread died (its error is a violation) cannot get quiet.
        return all(c.done.is_set() or (c._conn is not None and not c._unacked) for c in fleet)

    while time.monotonic() < deadline and not quiet():
        time.sleep(0.5)
    # Deliveries still in flight (offline flushes, resent outbox rows) come within seconds.
    last = -1
    while time.monotonic() < deadline:
        total = sum(len(c.received) for c in fleet)
        if total == last:
            break
        last = total
        time.sleep(4)
    for c in fleet:
        c.stop_flag.set()
    for c in fleet:
        c.done.wait(30)
    log("clients logged out; waiting for their sessions to end in the log")
    node = cluster.nodes[0]
    users = {c.user for c in fleet}
    end = time.monotonic() + RESUME_TIMEOUT + 30
    while time.monotonic() < end:
        facts = read_node("n1", node.data_dir, users, cluster.domain, None)
        if not facts.sessions_left:
            break
        time.sleep(2)


def _read_nodes(cluster: XesCluster, clients: int, room: str, log: Any) -> list[NodeFacts]:
    """Every node's facts at one applied index (waits for the nodes to agree)."""
    users = {f"f{i}" for i in range(clients)}
    deadline = time.monotonic() + 60
    while True:
        facts = [
            read_node(f"n{i + 1}", n.data_dir, users, cluster.domain, room)
            for i, n in enumerate(cluster.nodes)
        ]
        if len({f.applied_index for f in facts}) == 1 or time.monotonic() > deadline:
            return facts
        time.sleep(1)


def _write(
    out: Path,
    records: list[dict[str, Any]],
    facts: list[NodeFacts],
    nemesis: Nemesis,
    result: CampaignResult,
) -> None:
    (out / "records.json").write_text(json.dumps(records))
    (out / "applied.json").write_text(
        json.dumps(
            [
                {
                    **asdict(a.fault),
                    "node": a.node,
                    "started": a.started,
                    "ended": a.ended,
                    "recovered": a.recovered,
                    "note": a.note,
                }
                for a in nemesis.applied
            ],
            indent=1,
        )
    )
    (out / "facts.json").write_text(
        json.dumps(
            [
                {
                    "node": f.node,
                    "applied_index": f.applied_index,
                    "digest": f.digest,
                    "journal": f.journal_fingerprint,
                    "offline": f.offline,
                    "sessions_left": f.sessions_left,
                    "occupants_left": f.occupants_left,
                }
                for f in facts
            ],
            indent=1,
        )
    )
    (out / "report.txt").write_text(result.table() + "\n")
