#!/usr/bin/env python3
"""Benchmark xes against Prosody and ejabberd on this machine, in one run (issue 5).

For each server (``--servers``; default xes, xes3 = three xes nodes on loopback, prosody,
ejabberd): start it in a temporary directory with a generated configuration (see
``servers.py``), pinned to CPU 0; create its accounts; run the workloads of ``loadgen.py``
(pinned to CPU 1); stop it. Then print one table: each workload's figure per server, raw and per
second of server CPU, and xes's ratio to each peer. Prosody and ejabberd come from Debian and are
installed with apt-get when missing (without starting their system services).

Server CPU is user + system time of the server's whole process tree, read from /proc/<pid>/stat
at the generator's phase marks, so it covers exactly the measured phase. The generator's own CPU
over the same phase is shown as "generator CPU busy %": near 100 % means the generator, not the
server, set the pace. On this shared 2-core machine compare ratios taken within one run.

    .venv/bin/python tools/bench/run.py --quick     # smoke run, a few minutes
    .venv/bin/python tools/bench/run.py --out docs-table.md --json results.json

``--profile DIR`` records a py-spy profile of every xes process during the logins and the
saturated one-to-one phases and prints where the time goes (``pip install -e '.[bench]'``
brings py-spy and uvloop).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import servers as srv  # noqa: E402 - beside this file

LOADGEN = HERE / "loadgen.py"
SERVER_CPU, GEN_CPU = 0, 1

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "duration": 5.0,
        "drain": 10.0,
        "pairs": 10,
        "window": 16,
        "rates": [250],
        "login_concurrency": 10,
        "occupants": 50,
        "muc_rates": [20],
        "idle": 1000,
        "archives": [2000],
        "queries": 20,
    },
    "full": {
        "duration": 15.0,
        "drain": 20.0,
        "pairs": 10,
        "window": 16,
        "rates": [250, 500, 1000],
        "login_concurrency": 10,
        "occupants": 50,
        "muc_rates": [20, 100],
        "idle": 5000,
        "archives": [5500, 20000],
        "queries": 100,
    },
}
WORKLOADS = ("idle", "logins", "messages", "muc", "archive", "websocket")
ALL_SERVERS = ("xes", "xes3", "prosody", "ejabberd")


# ------------------------------------------------------------------------------ installation


def ensure_installed(packages: list[str]) -> None:
    """apt-get install the Debian ``packages`` that are not installed; start no service.

    A temporary policy-rc.d refusing every service start is put in place when none exists (the
    Debian way to install without starting daemons); any prosody or beam.smp process that
    appeared during the install anyway is stopped by its pid.
    """
    missing = [p for p in packages if not dpkg_installed(p)]
    if not missing:
        return
    print(f"installing {' '.join(missing)} with apt-get", flush=True)
    before = set(pids_named(("prosody", "lua5.4", "beam.smp", "epmd")))
    policy = Path("/usr/sbin/policy-rc.d")
    placed = False
    if not policy.exists():
        policy.write_text(
            "#!/bin/sh\n# tools/bench/run.py: no service start during install\nexit 101\n"
        )
        policy.chmod(0o755)
        placed = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *missing], check=True, env=env, timeout=1200
        )
    finally:
        if placed:
            policy.unlink()
    for pid in set(pids_named(("prosody", "lua5.4", "beam.smp", "epmd"))) - before:
        print(f"stopping pid {pid} started by the package install", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def dpkg_installed(package: str) -> bool:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", package], capture_output=True, text=True
    )
    return out.returncode == 0 and out.stdout.endswith("installed")


def pids_named(names: tuple[str, ...]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() in names:
                    found.append(int(entry))
    return found


# --------------------------------------------------------------------------- generator driver


@dataclass
class Snapshot:
    at: float
    server_cpu: float
    gen_cpu: float
    memory: dict[str, int] | None = None


@dataclass
class Phase:
    """One generator run: its result and the snapshots taken at its marks."""

    result: dict[str, Any]
    marks: dict[str, Snapshot] = field(default_factory=dict)

    def between(self, a: str, b: str) -> dict[str, float]:
        x, y = self.marks[a], self.marks[b]
        wall = max(y.at - x.at, 1e-9)
        return {
            "wall": wall,
            "server_cpu": y.server_cpu - x.server_cpu,
            "gen_cpu": y.gen_cpu - x.gen_cpu,
            "gen_busy": 100.0 * (y.gen_cpu - x.gen_cpu) / wall,
            "server_busy": 100.0 * (y.server_cpu - x.server_cpu) / wall,
        }


def run_loadgen(
    server: srv.Server,
    spec: dict[str, Any],
    *,
    timeout: float,
    memory_at: tuple[str, ...] = (),
    on_mark: dict[str, Any] | None = None,
) -> Phase:
    """Run one generator workload; snapshot server CPU (and memory) at each of its marks."""
    ports = server.ws_ports if spec.get("transport") == "websocket" else server.ports
    spec = dict(spec, sync=True, ports=ports, domain=srv.DOMAIN, password=srv.PASSWORD)
    argv = srv.pinned(
        GEN_CPU if server.cpu is not None else None,
        [sys.executable, str(LOADGEN), "--spec", json.dumps(spec)],
    )
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    phase = Phase(result={})
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
            if not ready:
                raise TimeoutError(
                    f"{spec['workload']} on {server.label}: no answer in {timeout} s"
                )
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{spec['workload']} on {server.label}: generator exited")
            if line.startswith("MARK "):
                name = line.split()[1]
                phase.marks[name] = Snapshot(
                    time.monotonic(),
                    server.cpu_seconds(),
                    srv.cpu_seconds([proc.pid]),
                    server.memory() if name in memory_at else None,
                )
                hook = (on_mark or {}).get(name)
                if hook is not None:
                    hook()
                proc.stdin.write("GO\n")
                proc.stdin.flush()
            elif line.startswith("RESULT "):
                phase.result = json.loads(line[len("RESULT ") :])
                break
            else:
                print(line, end="", flush=True)
        proc.wait(30)
        return phase
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ----------------------------------------------------------------------------------- profile


class Profiler:
    """py-spy record of every process of a server, for ``seconds``, as collapsed stacks."""

    def __init__(self, server: srv.Server, directory: Path, seconds: float) -> None:
        self.server, self.directory, self.seconds = server, directory, seconds
        self.procs: list[tuple[int, Path, subprocess.Popen[bytes]]] = []

    def start(self) -> None:
        spy = shutil.which("py-spy") or str(srv.ROOT / ".venv" / "bin" / "py-spy")
        if not Path(spy).exists():
            print("py-spy not found (pip install -e '.[bench]'): no profile", flush=True)
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for pid in self.server.pids():
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"python" not in cmd:
                continue
            out = self.directory / f"{self.server.name}-{pid}-{time.strftime('%H%M%S')}.txt"
            argv = srv.pinned(
                GEN_CPU, [spy, "record", "-p", str(pid), "-d", str(int(self.seconds))]
            )
            argv += ["-r", "50", "-f", "raw", "-o", str(out), "--nonblocking"]
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append((pid, out, proc))

    def finish(self) -> list[str]:
        lines = []
        for pid, out, proc in self.procs:
            try:
                proc.wait(self.seconds + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if out.exists():
                lines += summarise_profile(out, pid)
        return lines


def summarise_profile(path: Path, pid: int, top: int = 12) -> list[str]:
    """Self and inclusive sample shares of the hottest functions in a collapsed-stack file."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        # "function (path/file.py:123)" -> "function (file.py)": lines of one function merge.
        frames = [re.sub(r" \((?:.*/)?([^/]*?)(?::\d+)?\)$", r" (\1)", f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    if not total:
        return [f"profile {path.name}: no samples"]
    lines = [f"profile {path.name} (pid {pid}): {total} samples; self time:"]
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in incl.most_common(top * 2)]
    return lines


# ---------------------------------------------------------------------------------- workloads


def bench_server(
    server: srv.Server, prof: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Start ``server``, create its accounts, run the workloads, stop it; the figures."""
    out: dict[str, Any] = {"label": server.label}
    workloads = [w for w in args.workloads if w in server.supports]
    pairs, occupants, idle = prof["pairs"], prof["occupants"], prof["idle"]
    print(f"== {server.label}: starting", flush=True)
    server.start()
    out["version"] = server.version
    try:
        t0 = time.monotonic()
        named = [f"s{i + 1}" for i in range(pairs)] + [f"r{i + 1}" for i in range(pairs)]
        server.add_users([*named, "a1", "a2"])
        many = [f"i{i + 1}" for i in range(idle)]
        if "muc" in workloads:
            many += [f"m{i + 1}" for i in range(occupants)]
        if isinstance(server, srv.Xes):
            server.add_users(many)
        else:  # XEP-0077 in-band registration: thousands of ctl runs would take too long
            phase = run_loadgen(
                server,
                {"workload": "register", "users": many, "concurrency": 16},
                timeout=1800,
            )
            if phase.result["failed"]:
                raise RuntimeError(f"registration failed: {phase.result['failed']}")
        out["setup_seconds"] = time.monotonic() - t0
        print(f"   accounts created in {out['setup_seconds']:.0f} s", flush=True)
        for workload in WORKLOADS:
            if workload not in args.workloads:
                continue
            if workload not in server.supports:
                out[workload] = None
                continue
            print(f"   {workload}", flush=True)
            try:
                run_workload(server, workload, prof, args, out)
            except Exception as exc:  # the other workloads and servers still run
                print(f"   {workload} on {server.label} failed: {exc!r}", flush=True)
                out[workload] = {"error": repr(exc)[:300]}
    finally:
        print(f"== {server.label}: stopping", flush=True)
        server.stop()
    return out


def run_workload(
    server: srv.Server,
    workload: str,
    prof: dict[str, Any],
    args: argparse.Namespace,
    out: dict[str, Any],
) -> None:
    """One workload on a running server; its figures go into ``out``."""
    pairs, occupants, idle = prof["pairs"], prof["occupants"], prof["idle"]
    common = {"duration": prof["duration"], "drain": prof["drain"], "window": prof["window"]}
    if workload == "idle":
        spec = {"workload": "idle", "connections": idle, "concurrency": 50, "hold": 5.0}
        phase = run_loadgen(server, spec, timeout=1800, memory_at=("before", "holding"))
        before, held = phase.marks["before"].memory, phase.marks["holding"].memory
        assert before is not None and held is not None
        n = max(phase.result["connections"], 1)
        out["idle"] = {
            "connections": phase.result["connections"],
            "pss_kib": (held["pss"] - before["pss"]) / n,
            "rss_kib": (held["rss"] - before["rss"]) / n,
            "login_rate": phase.result["rate"],
            "errors": phase.result["errors"],
            "error_sample": phase.result["error_sample"],
            "base_pss_mib": before["pss"] / 1024,
            **phase.between("before", "holding"),
        }
    elif workload == "logins":
        spec = dict(
            common,
            workload="logins",
            concurrency=prof["login_concurrency"],
            users=[f"i{i + 1}" for i in range(min(idle, 1000))],
        )
        profiler, hooks = profile_hooks(server, args, prof)
        phase = run_loadgen(server, spec, timeout=prof["duration"] + 300, on_mark=hooks)
        out["logins"] = with_cpu(phase, phase.result["logins"])
        if profiler is not None:
            out.setdefault("profile", {})["logins"] = profiler.finish()
    elif workload == "messages":
        spec = dict(common, workload="messages", pairs=pairs, mode="saturate")
        profiler, hooks = profile_hooks(server, args, prof)
        phase = run_loadgen(server, spec, timeout=prof["duration"] + 300, on_mark=hooks)
        out["messages"] = with_cpu(phase, phase.result["received"])
        if profiler is not None:
            out.setdefault("profile", {})["saturated 1:1 messages"] = profiler.finish()
        capacity = out["messages"]["rate"]
        for rate in prof["rates"]:
            if rate > 0.9 * capacity:  # a backlog that only grows: no steady latency to measure
                out[f"rate{rate}"] = {"skipped": f"over capacity ({capacity:.0f}/s)"}
                continue
            spec = dict(common, workload="messages", pairs=pairs, mode="rate", rate=rate)
            phase = run_loadgen(server, spec, timeout=prof["duration"] + 300)
            out[f"rate{rate}"] = with_cpu(phase, phase.result["received"])
    elif workload == "muc":
        spec = dict(common, workload="muc", occupants=occupants)
        phase = run_loadgen(server, spec, timeout=prof["duration"] + 600)
        out["muc"] = with_cpu(phase, phase.result["delivered"])
        capacity = out["muc"]["rate"] / max(occupants, 1)  # messages per second
        for rate in prof.get("muc_rates", []):
            if rate > 0.9 * capacity:
                out[f"muc_rate{rate}"] = {"skipped": f"over capacity ({capacity:.0f} msgs/s)"}
                continue
            spec = dict(common, workload="muc", occupants=occupants, mode="rate", rate=rate)
            phase = run_loadgen(server, spec, timeout=prof["duration"] + 600)
            out[f"muc_rate{rate}"] = with_cpu(phase, phase.result["delivered"])
    elif workload == "websocket":
        # RFC 7395 over wss://: the same logins and saturated 1:1 messages as over TCP.
        ws = {"transport": "websocket"}
        spec = dict(
            common,
            **ws,
            workload="logins",
            concurrency=prof["login_concurrency"],
            users=[f"i{i + 1}" for i in range(min(idle, 1000))],
        )
        phase = run_loadgen(server, spec, timeout=prof["duration"] + 300)
        out["ws_logins"] = with_cpu(phase, phase.result["logins"])
        spec = dict(common, **ws, workload="messages", pairs=pairs, mode="saturate")
        profiler, hooks = profile_hooks(server, args, prof)
        phase = run_loadgen(server, spec, timeout=prof["duration"] + 300, on_mark=hooks)
        out["ws_messages"] = with_cpu(phase, phase.result["received"])
        if profiler is not None:
            out.setdefault("profile", {})["saturated 1:1 messages over WebSocket"] = (
                profiler.finish()
            )
    elif workload == "archive":
        already = 0
        for size in prof["archives"]:
            spec = dict(
                common,
                workload="archive",
                fill=size,
                window=64,
                queries=prof["queries"],
                duration=120.0,
                extra={"already": already},
            )
            phase = run_loadgen(server, spec, timeout=3600)
            out[f"archive{size}"] = with_cpu(phase, phase.result["queries"])
            already = size


def profile_hooks(
    server: srv.Server, args: argparse.Namespace, prof: dict[str, Any]
) -> tuple[Profiler | None, dict[str, Any]]:
    """With ``--profile`` and an xes server: a profiler started at the phase's start mark."""
    if not args.profile or not isinstance(server, srv.Xes):
        return None, {}
    profiler = Profiler(server, args.profile, prof["duration"])
    return profiler, {"start": profiler.start}


def with_cpu(phase: Phase, count: float) -> dict[str, Any]:
    """The generator's result plus CPU over its start..end marks and ``count`` per CPU-s."""
    cpu = phase.between("start", "end")
    return {**phase.result, **cpu, "per_cpu": count / cpu["server_cpu"] if cpu["server_cpu"] else 0}


# -------------------------------------------------------------------------------------- table


def rows(prof: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(label, result key, field, better) for the table, in order."""
    out = [
        ("logins/s (TCP+STARTTLS+SCRAM-SHA-1+bind)", "logins", "rate", "higher"),
        ("  logins per server CPU-s", "logins", "per_cpu", "higher"),
        ("  generator CPU busy %", "logins", "gen_busy", ""),
        ("1:1 msgs/s at saturation", "messages", "rate", "higher"),
        ("  msgs per server CPU-s", "messages", "per_cpu", "higher"),
        ("  latency p50 / p99 ms at saturation", "messages", "p50_ms/p99_ms", "lower"),
        ("  server CPU busy %", "messages", "server_busy", ""),
        ("  generator CPU busy %", "messages", "gen_busy", ""),
    ]
    for rate in prof["rates"]:
        out.append((f"1:1 at {rate} msgs/s: latency p50 / p99 ms", f"rate{rate}", "p50_ms/p99_ms",
                    "lower"))  # fmt: skip
        out.append((f"  delivered msgs/s (offered {rate})", f"rate{rate}", "rate", "higher"))
    out += [
        (f"MUC stanzas delivered/s ({prof['occupants']} occupants)", "muc", "rate", "higher"),
        ("  stanzas per server CPU-s", "muc", "per_cpu", "higher"),
        ("  latency p50 / p99 ms at saturation", "muc", "p50_ms/p99_ms", "lower"),
        ("  generator CPU busy %", "muc", "gen_busy", ""),
    ]
    for rate in prof.get("muc_rates", []):
        out.append((f"MUC at {rate} msgs/s: latency p50 / p99 ms", f"muc_rate{rate}",
                    "p50_ms/p99_ms", "lower"))  # fmt: skip
        out.append(("  delivered stanzas/s", f"muc_rate{rate}", "rate", "higher"))
        out.append(("  stanzas per server CPU-s", f"muc_rate{rate}", "per_cpu", "higher"))
    out += [
        (f"idle connection KiB, PSS ({prof['idle']} connections)", "idle", "pss_kib", "lower"),
        ("  RSS KiB per connection", "idle", "rss_kib", "lower"),
    ]
    for size in prof["archives"]:
        out.append((f"MAM last page ({size} msgs) p50 / p99 ms", f"archive{size}",
                    "p50_ms/p99_ms", "lower"))  # fmt: skip
    out += [
        ("WebSocket logins/s (wss+SCRAM-SHA-1+bind)", "ws_logins", "rate", "higher"),
        ("  logins per server CPU-s", "ws_logins", "per_cpu", "higher"),
        ("WebSocket 1:1 msgs/s at saturation", "ws_messages", "rate", "higher"),
        ("  msgs per server CPU-s", "ws_messages", "per_cpu", "higher"),
        ("  latency p50 / p99 ms at saturation", "ws_messages", "p50_ms/p99_ms", "lower"),
        ("  server CPU busy %", "ws_messages", "server_busy", ""),
        ("  generator CPU busy %", "ws_messages", "gen_busy", ""),
    ]
    out.append(("lost messages (1:1 and MUC, all runs)", "*", "lost", "lower"))
    return out


def value(result: dict[str, Any], key: str, fld: str) -> list[float] | None:
    """The numbers of one cell (two for 'a/b' fields); None for n/a."""
    if key == "*":
        parts = [v for k, v in result.items() if isinstance(v, dict) and "lost" in v]
        return [float(sum(v["lost"] for v in parts))] if parts else None
    data = result.get(key)
    if not isinstance(data, dict):
        return None
    vals = [data.get(f) for f in fld.split("/")]
    return None if any(v is None for v in vals) else [float(v) for v in vals]  # type: ignore[arg-type]


def cell(result: dict[str, Any], key: str, values: list[float] | None) -> str:
    if failed(result, key):
        return "failed"
    data = result.get(key)
    if isinstance(data, dict) and "skipped" in data:
        return "over capacity"
    return fmt(values)


def failed(result: dict[str, Any], key: str) -> bool:
    """Did the server's setup, or the workload behind row ``key``, fail?"""
    if "error" in result:
        return True
    if isinstance(result.get(key), dict):
        return "error" in result[key]
    workload = "messages" if key.startswith("rate") else key.rstrip("0123456789")
    return isinstance(result.get(workload), dict) and "error" in result[workload]


def fmt(values: list[float] | None) -> str:
    if values is None:
        return "n/a"
    return " / ".join(f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" for v in values)


def table(results: dict[str, dict[str, Any]], prof: dict[str, Any]) -> str:
    names = list(results)
    peers = [n for n in names if n in ("prosody", "ejabberd")]
    head = ["workload", "better", *[results[n]["label"] for n in names]]
    head += [f"xes ÷ {p}" for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, fld, better in rows(prof):
        cells = [label, better]
        vals = {n: value(results[n], key, fld) for n in names}
        cells += [cell(results[n], key, vals[n]) for n in names]
        for p in peers:
            x, y = vals.get("xes"), vals[p]
            if not better or x is None or y is None:
                cells.append("")
            else:
                cells.append(" / ".join(ratio(a, b) for a, b in zip(x, y, strict=True)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio(a: float, b: float) -> str:
    if b == 0:
        return "-" if a == 0 else "∞"
    return f"{a / b:.2f}x"


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


# ------------------------------------------------------------------------------------- main


def on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (a few minutes)")
    parser.add_argument(
        "--servers", default=",".join(ALL_SERVERS), help="of " + ",".join(ALL_SERVERS)
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="of " + ",".join(WORKLOADS)
    )
    parser.add_argument("--duration", type=float, help="seconds per measured phase")
    parser.add_argument("--idle", type=int, help="idle connections (full: 5000)")
    parser.add_argument("--profile", type=Path, help="py-spy profiles of xes into this directory")
    parser.add_argument("--out", type=Path, help="append the markdown report to this file")
    parser.add_argument("--json", type=Path, help="write every figure as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the servers' directories")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs 0 and 1")
    parser.add_argument(
        "--ejabberd-archive",
        choices=["sqlite", "mnesia"],
        default="sqlite",
        help="ejabberd's mod_mam backend (sqlite: the one its start-up warning recommends)",
    )
    parser.add_argument("--table-from", type=Path, help="print the table of an earlier --json")
    args = parser.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = (set(names) - set(ALL_SERVERS)) | (set(args.workloads) - set(WORKLOADS))
    if bad:
        parser.error(f"unknown servers or workloads: {sorted(bad)}")
    if args.table_from:
        saved = json.loads(args.table_from.read_text())
        print(table(saved["results"], saved["profile"]))
        return 0
    prof = dict(PROFILES["quick" if args.quick else "full"])
    if args.duration:
        prof["duration"] = args.duration
    if args.idle:
        prof["idle"] = args.idle

    pin = not args.no_pin and os.cpu_count() and os.cpu_count() >= 2  # type: ignore[operator]
    if pin:
        os.sched_setaffinity(0, {GEN_CPU})  # the runner stays off the server's core
    srv.raise_nofile()
    packages = [n for n in names if n in ("prosody", "ejabberd")]
    if "ejabberd" in names and args.ejabberd_archive == "sqlite":
        packages.append("erlang-p1-sqlite3")
    ensure_installed(packages)
    signal.signal(signal.SIGTERM, on_signal)
    root = Path(tempfile.mkdtemp(prefix="xes-bench5-"))
    os.chmod(root, 0o755)  # ejabberd runs as its own user below it
    cert, key = srv.make_certificate(root)
    os.chmod(key, 0o644)
    classes = {
        "xes": lambda d: srv.Xes(d, cert, key, nodes=1),
        "xes3": lambda d: srv.Xes(d, cert, key, nodes=3),
        "prosody": lambda d: srv.Prosody(d, cert, key),
        "ejabberd": lambda d: srv.Ejabberd(d, cert, key, mam_db=args.ejabberd_archive),
    }
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            server = classes[name](root / name)
            server.root.mkdir(parents=True)
            server.cpu = SERVER_CPU if pin else None
            try:
                results[name] = bench_server(server, prof, args)
            except Exception as exc:  # setup failed: the next server still runs
                print(f"== {server.label} failed: {exc!r}", flush=True)
                results[name] = {"label": server.label, "error": repr(exc)[:300]}
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - started
    mode = "quick" if args.quick else "full"
    versions = ", ".join(f"{r['label']} {r.get('version', '?')}" for r in results.values())
    header = (
        f"tools/bench/run.py ({mode}) {time.strftime('%Y-%m-%d %H:%M')}, took {elapsed:.0f} s; "
        f"{machine()}; servers pinned to CPU {SERVER_CPU if pin else '-'}, generator to CPU "
        f"{GEN_CPU if pin else '-'}; {versions}"
    )
    report = header + "\n\n" + table(results, prof) + "\n"
    problems = []
    for name, r in results.items():
        for key, v in r.items():
            if isinstance(v, dict):
                for what in ("lost", "duplicated", "errors", "stalls"):
                    if v.get(what):
                        problems.append(
                            f"{name} {key}: {what} {v[what]} {v.get('error_sample', '')}"
                        )
    if problems:
        report += "\nNotes:\n" + "\n".join(f"- {p}" for p in problems) + "\n"
    for name, r in results.items():
        for phase_name, lines in r.get("profile", {}).items():
            report += f"\nProfile of {name} ({phase_name}):\n```\n" + "\n".join(lines) + "\n```\n"
    print()
    print(report)
    if args.out:
        with args.out.open("a") as f:
            f.write("\n" + report)
    if args.json:
        args.json.write_text(json.dumps({"profile": prof, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
