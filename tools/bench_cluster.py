#!/usr/bin/env python3
"""Benchmark xes: commit latency and one-to-one message throughput, single node and 3-node.

Scenarios (``--scenarios``, comma separated):

* ``single``: one node.
* ``loopback3``: three nodes on loopback.
* ``wan3``: three sites a, b, c (nodes 1, 2, 3) behind the user-space WAN emulator (one-way
  delays a-b 20 ms, a-c 80 ms, b-c 80 ms, no loss).

In both 3-node scenarios the leader is placed on node 1 (site a, the senders' node) by
restarting whichever node leads elsewhere, so runs compare alike (``--leader-site any`` keeps
the elected leader, ``b``/``c`` place it elsewhere).

For each scenario:

1. **Commit latency.** Sequential proposals of one ``presence.routed`` event with no targets (it
   changes no state) through a node's log socket (``SyncClient.submit``); the answer comes once
   the event is committed and applied on that node. Measured on the leader and on every
   follower, ``--commits`` samples or ``--commit-seconds`` per node, whichever comes first.
2. **Message throughput.** ``--pairs`` sender/receiver pairs; senders on node 1, receivers on
   the other nodes (on node 1 for ``single``). Each sender pipelines chat messages to its
   receiver's bare JID with at most ``--window`` sent but not yet received, for ``--duration``
   seconds, then waits up to ``--drain`` seconds for the rest. The load runs in a child process
   (``--load-worker``, minimal asyncio XMPP client: STARTTLS + SASL PLAIN), so the client does
   not share a GIL with the WAN emulator. Server CPU seconds are summed over every process in
   each node's process group (main + log process) from ``/proc``.
3. **Durability check.** Every node's journal (``xes events dump``) must hold each delivered
   message exactly once.

Example (about 2 minutes with the defaults; each scenario's servers are stopped before the next
starts, and on any error or SIGTERM/SIGINT)::

    .venv/bin/python tools/bench_cluster.py --out /tmp/bench.md

Lost, duplicated or non-durable messages are listed under PROBLEMS with (pair, seq) samples and
make the exit status 1; they would be bugs. Error stanzas and stalled senders are listed under
Notes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import re
import secrets
import select
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

DOMAIN = "xes.test"
PASSWORD = "bench-pw"
SCENARIOS = ("single", "loopback3", "wan3")
WAN_LINKS = (("a", "b", 0.020), ("a", "c", 0.080), ("b", "c", 0.080))
WAN_EXTRA = "election_timeout_min = 1.0\nelection_timeout_max = 2.5\n"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY_RE = re.compile(rb"<body>B (\d+) (\d+) ([0-9.]+)</body>")
WARM_RE = re.compile(rb"<body>W (\d+)</body>")
PING_RE = re.compile(rb"<body>P (\d+) ([0-9.]+)</body>")
ERROR_RE = re.compile(rb"<(?:message|iq|presence)\b[^>]*type=['\"]error['\"][^>]*>")


# ------------------------------------------------------------------------------------ helpers


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (None for no samples)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100.0 * len(ordered)) - 1))
    return ordered[rank]


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- load worker side


class Conn:
    """One raw XMPP client stream (asyncio), just enough for a benchmark."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""

    @classmethod
    async def open(cls, port: int, timeout: float) -> Conn:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        return cls(reader, writer)

    async def until(self, pattern: bytes, timeout: float) -> bytes:
        """Read until ``pattern`` (a regex) matches; return and drop everything up to its end."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                data, self.buf = self.buf[: m.end()], self.buf[m.end() :]
                return data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{pattern!r} not received; got {self.buf[-300:]!r}")
            chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            if not chunk:
                raise ConnectionError(f"closed while waiting for {pattern!r}: {self.buf[-300:]!r}")
            self.buf += chunk

    def send(self, data: str) -> None:
        self.writer.write(data.encode())

    async def stream_header(self, timeout: float) -> None:
        self.send(
            f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        await self.until(rb"</stream:features>", timeout)

    async def login(self, user: str, resource: str, timeout: float) -> None:
        await self.stream_header(timeout)
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.until(rb"<proceed[^>]*>", timeout)
        self.buf = b""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        await asyncio.wait_for(self.writer.start_tls(ctx, server_hostname=DOMAIN), timeout)
        await self.stream_header(timeout)
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        answer = await self.until(rb"<success[^>]*>|<failure", timeout)
        if b"<success" not in answer:
            raise RuntimeError(f"login of {user} failed: {answer!r}")
        self.buf = b""
        await self.stream_header(timeout)
        self.send(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        await self.until(rb"</iq>", timeout)
        self.send("<presence/>")
        await self.writer.drain()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("</stream:stream>")
            await asyncio.wait_for(self.writer.drain(), 2.0)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)


@dataclass
class Pair:
    index: int
    sent: dict[int, float] = field(default_factory=dict)
    received: set[int] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    out_of_order: int = 0
    last_seq: int = 0
    errors: list[str] = field(default_factory=list)
    warm: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    stalls: int = 0
    pings: list[float] = field(default_factory=list)
    last_recv: float = 0.0


async def receive_loop(conn: Conn, pair: Pair) -> None:
    """Count messages for ``pair`` as they arrive (runs until the connection closes)."""
    while True:
        chunk = await conn.reader.read(65536)
        now = time.monotonic()
        if not chunk:
            return
        conn.buf += chunk
        cut = conn.buf.rfind(b"</message>")
        if cut < 0:
            continue
        cut += len(b"</message>")
        done, conn.buf = conn.buf[:cut], conn.buf[cut:]
        for m in BODY_RE.finditer(done):
            seq, sent_at = int(m.group(2)), float(m.group(3))
            if int(m.group(1)) != pair.index:
                pair.errors.append(f"message of pair {m.group(1).decode()} at pair {pair.index}")
                continue
            if seq in pair.received:
                pair.duplicates.append(seq)
                continue
            pair.received.add(seq)
            pair.latencies.append(now - sent_at)
            if seq < pair.last_seq:
                pair.out_of_order += 1
            pair.last_seq = max(pair.last_seq, seq)
            pair.last_recv = now
        if WARM_RE.search(done):
            pair.warm.set()
        for m in PING_RE.finditer(done):
            pair.pings.append(now - float(m.group(2)))
        pair.progress.set()


async def sender_errors(conn: Conn, pair: Pair) -> None:
    """The sender's own stream: every stanza with type='error' is recorded."""
    while True:
        chunk = await conn.reader.read(65536)
        if not chunk:
            return
        conn.buf += chunk
        for tag in ERROR_RE.findall(conn.buf):
            pair.errors.append(tag.decode(errors="replace")[:300])
        conn.buf = conn.buf[conn.buf.rfind(b">") + 1 :]


async def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    pairs_n: int = spec["pairs"]
    window: int = spec["window"]
    duration: float = spec["duration"]
    drain: float = spec["drain"]
    timeout = 30.0
    pairs = [Pair(i) for i in range(pairs_n)]
    senders: list[Conn] = []
    receivers: list[Conn] = []
    tasks: list[asyncio.Task[None]] = []

    async def login(port: int, user: str, resource: str) -> Conn:
        conn = await Conn.open(port, timeout)
        await conn.login(user, resource, timeout)
        return conn

    try:
        for i in range(pairs_n):
            port = spec["receiver_ports"][i % len(spec["receiver_ports"])]
            receivers.append(await login(port, f"r{i + 1}", "bench"))
        for i in range(pairs_n):
            senders.append(await login(spec["sender_port"], f"s{i + 1}", "bench"))
        for pair, rconn, sconn in zip(pairs, receivers, senders, strict=True):
            tasks.append(asyncio.create_task(receive_loop(rconn, pair)))
            tasks.append(asyncio.create_task(sender_errors(sconn, pair)))

        # Warm-up: until each receiver's presence is known on the senders' node, messages would
        # go to offline storage; resend a probe until one arrives.
        warm_deadline = time.monotonic() + 60.0
        for pair, sconn in zip(pairs, senders, strict=True):
            while not pair.warm.is_set():
                if time.monotonic() > warm_deadline:
                    raise TimeoutError(f"warm-up message of pair {pair.index} never arrived")
                sconn.send(
                    f"<message to='r{pair.index + 1}@{DOMAIN}' type='chat'>"
                    f"<body>W {pair.index}</body></message>"
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pair.warm.wait(), 1.0)
        for pair in pairs:
            pair.errors.clear()  # probes sent before presence was applied may be refused

        # Unloaded delivery latency: one message at a time from the first sender.
        probe, probe_conn = pairs[0], senders[0]
        for n in range(spec["pings"]):
            probe.progress.clear()
            probe_conn.send(
                f"<message to='r1@{DOMAIN}' type='chat'>"
                f"<body>P {n} {time.monotonic():.6f}</body></message>"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probe.progress.wait(), 10.0)

        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        go = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), 120.0)
        if go.strip() != "GO":
            raise RuntimeError(f"expected GO, got {go!r}")

        cpu0 = time.process_time()
        t0 = time.monotonic()
        end = t0 + duration

        async def send(pair: Pair, conn: Conn) -> None:
            seq = 0
            to = f"r{pair.index + 1}@{DOMAIN}"
            while time.monotonic() < end:
                if len(pair.sent) - len(pair.received) >= window:
                    pair.progress.clear()
                    try:
                        await asyncio.wait_for(pair.progress.wait(), 10.0)
                    except TimeoutError:
                        pair.stalls += 1
                        return
                    continue
                seq += 1
                now = time.monotonic()
                pair.sent[seq] = now
                conn.send(
                    f"<message to='{to}' type='chat' id='m{seq}'>"
                    f"<body>B {pair.index} {seq} {now:.6f}</body></message>"
                )
                await conn.writer.drain()

        await asyncio.wait_for(
            asyncio.gather(*(send(p, c) for p, c in zip(pairs, senders, strict=True))),
            duration + 30.0,
        )
        send_end = time.monotonic()
        drain_deadline = send_end + drain
        while time.monotonic() < drain_deadline:
            if all(len(p.received) >= len(p.sent) for p in pairs):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # late duplicates
        cpu = time.process_time() - cpu0
        print("DRAINED", flush=True)
    finally:
        for conn in senders + receivers:
            await conn.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    sent = sum(len(p.sent) for p in pairs)
    received = sum(len(p.received) for p in pairs)
    lost = [(p.index, s) for p in pairs for s in sorted(set(p.sent) - p.received)]
    dups = [(p.index, s) for p in pairs for s in p.duplicates]
    latencies = [x for p in pairs for x in p.latencies]
    last = max((p.last_recv for p in pairs), default=t0)
    span = max(last - t0, 1e-9)
    return {
        "sent": sent,
        "received": received,
        "lost": len(lost),
        "lost_sample": lost[:20],
        "duplicated": len(dups),
        "duplicated_sample": dups[:20],
        "out_of_order": sum(p.out_of_order for p in pairs),
        "errors": [e for p in pairs for e in p.errors][:20],
        "error_count": sum(len(p.errors) for p in pairs),
        "stalls": sum(p.stalls for p in pairs),
        "span": span,
        "send_seconds": send_end - t0,
        "rate": received / span,
        "lat_p50_ms": (pct(latencies, 50) or 0) * 1000,
        "lat_p99_ms": (pct(latencies, 99) or 0) * 1000,
        "pings": len(pairs[0].pings),
        "ping_p50_ms": (pct(pairs[0].pings, 50) or 0) * 1000,
        "ping_p99_ms": (pct(pairs[0].pings, 99) or 0) * 1000,
        "client_cpu": cpu,
        "per_pair_sent": [len(p.sent) for p in pairs],
    }


def load_worker_main(spec_json: str) -> int:
    result = asyncio.run(run_load(json.loads(spec_json)))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------- driver side


def group_cpu(pgid: int) -> tuple[float, float]:
    """User + system CPU seconds of process group ``pgid``: (its leader, every other member)."""
    main = rest = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            ticks = int(fields[11]) + int(fields[12])
            if int(entry) == pgid:
                main += ticks
            else:
                rest += ticks
    return main / CLK_TCK, rest / CLK_TCK


def server_cpu(nodes: list[Any]) -> list[tuple[float, float]]:
    """Per node: CPU seconds of the main process and of the rest (the log process)."""
    return [group_cpu(n.proc.pid) if n.proc is not None else (0.0, 0.0) for n in nodes]


def log_status(node: Any) -> dict[str, Any]:
    from xes.config import load_config
    from xes.eventlog.client import SyncClient

    client = SyncClient(load_config(node.config).socket_path, timeout=10.0)
    try:
        return client.status()
    finally:
        client.close()


def wait_leader(nodes: list[Any], timeout: float = 60.0) -> Any:
    """The node every running node names as leader (with a quorum)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stats = [log_status(n) for n in nodes]
        except OSError:
            stats = []
        leaders = {s.get("leader") for s in stats}
        if stats and len(leaders) == 1 and None not in leaders:
            addr = leaders.pop()
            leader = next((n for n in nodes if n.raft_addr == addr), None)
            if leader is not None and all(s.get("ready") for s in stats):
                return leader
        time.sleep(0.2)
    raise TimeoutError("no agreed leader")


def wait_applied(nodes: list[Any], timeout: float = 60.0) -> int:
    """Wait until every node has applied the same index; return it."""
    deadline = time.monotonic() + timeout
    while True:
        applied = {log_status(n)["applied_index"] for n in nodes}
        if len(applied) == 1:
            return applied.pop()
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes did not converge: {applied}")
        time.sleep(0.2)


def commit_latency(node: Any, count: int, seconds: float) -> list[float]:
    """Sequential one-event proposals through ``node``'s log socket; latencies in seconds."""
    from xes.config import load_config
    from xes.eventlog.client import SyncClient
    from xes.events import encode_proposal, wrap
    from xes.events.catalog import PresenceRouted

    tag = secrets.token_hex(4)
    client = SyncClient(load_config(node.config).socket_path, timeout=30.0)
    samples: list[float] = []
    try:
        deadline = time.monotonic() + seconds
        for n in range(count + 5):
            if time.monotonic() > deadline:
                break
            env = wrap(
                PresenceRouted(sender=f"bench@{DOMAIN}/x", xml="<presence/>", targets=[]),
                id=f"bench.{tag}.{n}",
                at=int(time.time() * 1000),
                origin="bench",
            )
            command = b"[" + encode_proposal([env]) + b"]"
            started = time.perf_counter()
            outcome, body = client.submit(command)
            elapsed = time.perf_counter() - started
            if outcome != "APPLIED" or not json.loads(body)[0].get("ok"):
                raise RuntimeError(f"commit {n} on {node.raft_addr}: {outcome} {body[:200]!r}")
            if n >= 5:  # the first few warm up connections and caches
                samples.append(elapsed)
    finally:
        client.close()
    return samples


def journal_check(node: Any, after: int) -> dict[str, Any]:
    """Count benchmark messages in ``node``'s journal after log index ``after``."""
    out = node.xes("events", "dump", "--after", str(after)).stdout
    seen: dict[tuple[int, int], int] = {}
    for line in out.splitlines():
        event = json.loads(line)["event"]
        if event["type"] != "message.routed":
            continue
        m = BODY_RE.search(event["data"]["xml"].encode())
        if m:
            key = (int(m.group(1)), int(m.group(2)))
            seen[key] = seen.get(key, 0) + 1
    return {"messages": len(seen), "twice": [k for k, v in seen.items() if v > 1][:20]}


def run_load_worker(spec: dict[str, Any], nodes: list[Any], timeout: float) -> dict[str, Any]:
    """Start the load child; measure server CPU between its READY and its result."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--load-worker", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def line(wait: float) -> str:
        ready, _, _ = select.select([proc.stdout], [], [], wait)
        if not ready:
            raise TimeoutError("load worker did not answer in time")
        text = proc.stdout.readline()  # type: ignore[union-attr]
        if not text:
            raise RuntimeError(f"load worker exited ({proc.wait(5)})")
        return text

    try:
        first = line(180.0)
        if first.strip() != "READY":
            raise RuntimeError(f"load worker said {first!r}")
        index0 = max(log_status(n)["applied_index"] for n in nodes)
        cpu0 = server_cpu(nodes)
        host0 = time.process_time()
        proc.stdin.write("GO\n")
        proc.stdin.flush()
        drained = line(timeout)
        cpu1 = server_cpu(nodes)
        host1 = time.process_time()
        index1 = max(log_status(n)["applied_index"] for n in nodes)
        if drained.strip() != "DRAINED":
            raise RuntimeError(f"load worker said {drained!r}")
        result_line = line(60.0)
        if not result_line.startswith("RESULT "):
            raise RuntimeError(f"load worker said {result_line!r}")
        result: dict[str, Any] = json.loads(result_line[len("RESULT ") :])
        split = [(a1 - a0, b1 - b0) for (a0, b0), (a1, b1) in zip(cpu0, cpu1, strict=True)]
        result["server_cpu"] = sum(a + b for a, b in split)
        result["cpu_split"] = split
        result["driver_cpu"] = host1 - host0  # the WAN emulator runs here
        result["entries"] = index1 - index0
        proc.wait(30)
        return result
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@dataclass
class Outcome:
    scenario: str
    leader: str = ""
    commits: list[tuple[str, str, list[float]]] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)
    journal: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def add_users(node: Any, pairs: int) -> None:
    users = [f"s{i + 1}" for i in range(pairs)] + [f"r{i + 1}" for i in range(pairs)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda u: node.add_user(u, PASSWORD), users))


def place_leader(cluster: Any, site_index: int, attempts: int = 5) -> tuple[Any, int]:
    """Restart the leader until the node at ``site_index`` leads; (leader, restarts)."""
    leader = wait_leader(cluster.nodes)
    restarts = 0
    while cluster.nodes.index(leader) != site_index and restarts < attempts:
        leader.stop()
        others = [n for n in cluster.nodes if n is not leader]
        wait_leader(others)
        leader.start()
        restarts += 1
        leader = wait_leader(cluster.nodes)
    return leader, restarts


def measure(
    scenario: str,
    nodes: list[Any],
    leader: Any,
    args: argparse.Namespace,
    site: list[str],
) -> Outcome:
    out = Outcome(scenario)
    out.leader = site[nodes.index(leader)]
    add_users(nodes[0], args.pairs)
    order = [leader] + [n for n in nodes if n is not leader]
    for node in order:
        role = "leader" if node is leader else "follower"
        samples = commit_latency(node, args.commits, args.commit_seconds)
        out.commits.append((site[nodes.index(node)], role, samples))
    before = wait_applied(nodes)
    receiver_nodes = nodes[1:] if len(nodes) > 1 else nodes
    spec = {
        "pairs": args.pairs,
        "window": args.window,
        "duration": args.duration,
        "drain": args.drain,
        "pings": args.pings,
        "sender_port": nodes[0].c2s,
        "receiver_ports": [n.c2s for n in receiver_nodes],
    }
    out.load = run_load_worker(spec, nodes, args.duration + args.drain + 60.0)
    wait_applied(nodes)
    out.journal = [journal_check(n, before) for n in nodes]
    return out


def measure_cluster(name: str, cluster: Any, args: argparse.Namespace, site: list[str]) -> Outcome:
    restarts = 0
    if args.leader_site == "any":
        leader = wait_leader(cluster.nodes)
    else:
        leader, restarts = place_leader(cluster, "abc".index(args.leader_site))
    out = measure(name, cluster.nodes, leader, args, site)
    if restarts:
        out.notes.append(f"leader placed at {out.leader} after {restarts} restart(s) of the leader")
    return out


def run_scenario(name: str, root: Path, args: argparse.Namespace) -> Outcome:
    from tests.integration.cluster import XesCluster
    from tests.integration.server import XesServer
    from tests.integration.wanproxy import WanEmulator

    print(f"== {name}", flush=True)
    limits = ""
    if args.stanza_rate:
        limits = (
            f"[limits]\nstanzas_per_second = {args.stanza_rate:g}\n"
            f"stanza_burst = {int(args.stanza_rate * 2)}\n"
        )
    if name == "single":
        server = XesServer(root / name, domain=DOMAIN, extra=limits)
        _STARTED.append(server)
        try:
            server.start()
            leader = wait_leader([server])
            return measure(name, [server], leader, args, ["n1"])
        finally:
            stop_servers([server])
    if name == "loopback3":
        cluster = XesCluster(root / name, domain=DOMAIN, extra=limits)
        _STARTED.extend(cluster.nodes)
        try:
            cluster.start()
            return measure_cluster(name, cluster, args, ["n1", "n2", "n3"])
        finally:
            stop_servers(cluster.nodes)
    if name == "wan3":
        with WanEmulator(seed=1) as wan:
            cluster = XesCluster(root / name, domain=DOMAIN, wan=wan, extra=WAN_EXTRA + limits)
            _STARTED.extend(cluster.nodes)
            for a, b, delay in WAN_LINKS:
                wan.set_link(a, b, delay=delay)
            try:
                cluster.start()
                out = measure_cluster(name, cluster, args, ["a", "b", "c"])
                if wan.errors:
                    out.notes.append(f"WAN emulator errors: {wan.errors[:5]}")
                return out
            finally:
                stop_servers(cluster.nodes)
    raise ValueError(f"unknown scenario {name!r}")


# ----------------------------------------------------------------------------------- report


def summary_table(outcomes: list[Outcome]) -> str:
    lines = [
        "| scenario | leader | commit p50 ms (leader / followers) | commit p99 ms "
        "(leader / followers) | msgs/s | msg latency p50 / p99 ms | server CPU-s "
        "| msgs per server CPU-s | lost | duplicated |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:

        def cell(p: float, o: Outcome = o) -> str:
            vals = [fmt((pct(s, p) or 0) * 1000) for _, _, s in o.commits]
            return vals[0] + (" / " + ", ".join(vals[1:]) if len(vals) > 1 else "")

        load = o.load
        per_cpu = load["received"] / load["server_cpu"] if load["server_cpu"] else 0.0
        lines.append(
            f"| {o.scenario} | {o.leader} | {cell(50)} | {cell(99)} | {load['rate']:.0f} "
            f"| {load['lat_p50_ms']:.1f} / {load['lat_p99_ms']:.1f} | {load['server_cpu']:.1f} "
            f"| {per_cpu:.0f} | {load['lost']} | {load['duplicated']} |"
        )
    return "\n".join(lines)


def detail_table(outcomes: list[Outcome]) -> str:
    lines = [
        "| scenario | node (site) | role | commits | commit p50 ms | commit p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        for where, role, samples in o.commits:
            lines.append(
                f"| {o.scenario} | {where} | {role} | {len(samples)} "
                f"| {fmt((pct(samples, 50) or 0) * 1000)} | {fmt((pct(samples, 99) or 0) * 1000)} |"
            )
    lines += [
        "",
        "| scenario | unloaded msg latency p50 / p99 ms | sent | received | busiest sender "
        "msgs/s | span s | Raft entries | msgs per entry "
        "| server CPU-s per node (main + log process) | client CPU-s "
        "| driver CPU-s | errors | stalls | out of order | in each node's journal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        load = o.load
        journal = "/".join(str(j["messages"]) for j in o.journal)
        split = ", ".join(f"{a:.1f} + {b:.1f}" for a, b in load["cpu_split"])
        lines.append(
            f"| {o.scenario} | {load['ping_p50_ms']:.1f} / {load['ping_p99_ms']:.1f} "
            f"| {load['sent']} | {load['received']} "
            f"| {max(load['per_pair_sent']) / load['send_seconds']:.0f} | {load['span']:.1f} "
            f"| {load['entries']} | {load['received'] / max(load['entries'], 1):.1f} | {split} "
            f"| {load['client_cpu']:.1f} | {load['driver_cpu']:.1f} | {load['error_count']} "
            f"| {load['stalls']} | {load['out_of_order']} | {journal} |"
        )
    return "\n".join(lines)


def problems(outcomes: list[Outcome]) -> tuple[list[str], list[str]]:
    """(serious: lost, duplicated or not durable; other: errors, stalls, notes)."""
    serious, other = [], []
    for o in outcomes:
        load = o.load
        if load["lost"]:
            serious.append(
                f"{o.scenario}: {load['lost']} lost, e.g. (pair, seq) {load['lost_sample']}"
            )
        if load["duplicated"]:
            serious.append(
                f"{o.scenario}: {load['duplicated']} duplicated, e.g. {load['duplicated_sample']}"
            )
        for node, j in enumerate(o.journal, 1):
            if j["messages"] < load["received"]:
                serious.append(
                    f"{o.scenario}: node {node} journal holds {j['messages']} messages, "
                    f"{load['received']} were delivered"
                )
            if j["twice"]:
                serious.append(
                    f"{o.scenario}: node {node} journal has messages twice: {j['twice']}"
                )
        if load["error_count"]:
            other.append(f"{o.scenario}: {load['error_count']} error stanzas: {load['errors']}")
        if load["stalls"]:
            other.append(f"{o.scenario}: {load['stalls']} senders stalled (no delivery for 10 s)")
        other += [f"{o.scenario}: {note}" for note in o.notes]
    return serious, other


_TERM = {"cleaning": 0, "requested": 0}
"""SIGTERM/SIGINT bookkeeping: while servers are being stopped a signal only marks the request."""
_STARTED: list[Any] = []
"""Every server this run created, so a last sweep can stop whatever is still running."""


def on_sigterm(signum: int, frame: Any) -> None:
    _TERM["requested"] = signum
    if not _TERM["cleaning"]:
        raise SystemExit(128 + signum)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Let the block finish despite SIGTERM; exit afterwards if one came."""
    _TERM["cleaning"] += 1
    try:
        yield
    finally:
        _TERM["cleaning"] -= 1
        if not _TERM["cleaning"] and _TERM["requested"]:
            raise SystemExit(128 + _TERM["requested"])


def stop_servers(servers: list[Any]) -> None:
    """Stop every running server (SIGTERM, then SIGKILL of its group after 30 s)."""
    with shielded():
        for server in servers:
            try:
                if server.running:
                    server.stop()
            except Exception as exc:  # keep stopping the others
                print(f"stopping {server.config}: {exc!r}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenarios", default="single,loopback3,wan3")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument("--pairs", type=int, default=10, help="sender/receiver pairs")
    parser.add_argument("--window", type=int, default=16, help="max undelivered per sender")
    parser.add_argument("--drain", type=float, default=15.0, help="max seconds to wait after")
    parser.add_argument(
        "--stanza-rate",
        type=float,
        help="per-session [limits] stanzas_per_second for the servers (default: the server's)",
    )
    parser.add_argument("--pings", type=int, default=30, help="unloaded message samples")
    parser.add_argument("--commits", type=int, default=300, help="commit samples per node")
    parser.add_argument("--commit-seconds", type=float, default=12.0, help="cap per node")
    parser.add_argument(
        "--leader-site",
        default="a",
        choices=["a", "b", "c", "any"],
        help="3-node scenarios: restart the leader until site a/b/c (node 1/2/3) leads",
    )
    parser.add_argument("--out", type=Path, help="append the markdown tables to this file")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--load-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_worker:
        return load_worker_main(args.load_worker)

    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    started = time.monotonic()
    outcomes: list[Outcome] = []
    root = Path(tempfile.mkdtemp(prefix="xes-bench-"))
    previous = {sig: signal.signal(sig, on_sigterm) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for name in names:
            outcomes.append(run_scenario(name, root, args))
            print(summary_table(outcomes[-1:]).splitlines()[-1], flush=True)
    finally:
        try:
            stop_servers(_STARTED)  # normally a no-op: each scenario stops its own
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if args.keep:
                print(f"data kept in {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - started
    header = (
        f"xes bench_cluster {time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, duration {args.duration:g} s, "
        f"{args.pairs} pairs, window {args.window}, run took {elapsed:.0f} s"
    )
    report = "\n\n".join([header, summary_table(outcomes), detail_table(outcomes)]) + "\n"
    serious, other = problems(outcomes)
    if serious:
        report += "\nPROBLEMS:\n" + "\n".join(f"- {p}" for p in serious) + "\n"
    if other:
        report += "\nNotes:\n" + "\n".join(f"- {p}" for p in other) + "\n"
    print()
    print(report)
    if args.out:
        with args.out.open("a") as f:
            f.write("\n" + report)
    return 1 if serious else 0


if __name__ == "__main__":
    sys.exit(main())
