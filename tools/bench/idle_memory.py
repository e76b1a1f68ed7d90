"""Where an idle client connection's memory goes: ``tracemalloc`` in a real ``xes serve``.

The runner's ``idle`` workload (``tools/bench/run.py --workloads idle``) gives the total (PSS
growth per authenticated, bound, available connection); this tool breaks the Python part of it
down. It starts one ``xes serve`` node the way the runner does (same configuration, accounts and
generator), but under a wrapper that starts ``tracemalloc`` on SIGUSR1 and dumps a snapshot on
SIGUSR2. Tracing starts after the accounts exist, a snapshot is taken before the logins and one
while the connections are held, and the difference is grouped by what allocated it (the
innermost frame of each traceback that belongs to a known component) and by source line::

    .venv/bin/python tools/bench/idle_memory.py --connections 1000

Figures are per connection. What ``tracemalloc`` cannot see (OpenSSL's own state, malloc
overhead, expat's C allocations made outside Python's allocator hooks) is the gap between
its total and the PSS growth, printed too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench  # noqa: E402 - beside this file
import servers as srv  # noqa: E402

FRAMES = 30
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("/xes/xml/stream.py", "expat parser (xml/stream.py)"),
    ("/xes/xml/", "xes xml"),
    ("/ssl.py", "ssl"),
    ("/anyio/streams/tls.py", "ssl"),
    ("/anyio/", "anyio"),
    ("/asyncio/", "asyncio"),
    ("/xes/", "xes objects"),
)
"""Innermost matching frame decides: a path fragment and the component it stands for."""


def category(trace: tracemalloc.Traceback) -> tuple[str, str]:
    """The component and the frame (``file:line``) that made an allocation."""
    for frame in reversed(trace):  # tracemalloc lists the oldest frame first
        for fragment, name in CATEGORIES:
            if fragment in frame.filename:
                short = frame.filename.split("site-packages/")[-1].split("/src/")[-1]
                return name, f"{short}:{frame.lineno}"
    frame = trace[-1]
    return "other", f"{frame.filename}:{frame.lineno}"


def breakdown(before: Path, after: Path, n: int, top: int) -> list[str]:
    """Report the allocations alive in ``after`` and not in ``before``, per connection."""
    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    by_cat: Counter[str] = Counter()
    by_line: Counter[tuple[str, str]] = Counter()
    count_line: Counter[tuple[str, str]] = Counter()
    for stat in new.compare_to(old, "traceback"):
        if stat.size_diff == 0:
            continue
        cat, line = category(stat.traceback)
        by_cat[cat] += stat.size_diff
        by_line[(cat, line)] += stat.size_diff
        count_line[(cat, line)] += stat.count_diff
    total = sum(by_cat.values())
    lines = [f"tracemalloc: {total / n / 1024:.1f} KiB per connection ({n} connections)"]
    lines += [f"  {size / n / 1024:6.2f} KiB  {cat}" for cat, size in by_cat.most_common()]
    lines.append(f"top {top} lines (KiB and blocks per connection):")
    for (cat, line), size in by_line.most_common(top):
        blocks = count_line[(cat, line)] / n
        lines.append(f"  {size / n / 1024:6.2f} KiB {blocks:5.1f}  {cat:<28} {line}")
    return lines


def traced_serve(config: str, dumps: str) -> int:
    """``xes serve`` with tracemalloc switched on and dumped by signals (in the child)."""
    count = [0]

    def start(signum: int, frame: Any) -> None:
        tracemalloc.start(FRAMES)

    def dump(signum: int, frame: Any) -> None:
        count[0] += 1
        path = Path(dumps) / f"snap{count[0]}"
        tracemalloc.take_snapshot().dump(str(path) + ".tmp")
        os.replace(str(path) + ".tmp", path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, dump)
    from xes.cli import main

    return main(["serve", "--config", config])


class TracedXes(srv.Xes):
    """One xes node under :func:`traced_serve`."""

    dumps: Path = Path()

    def start(self) -> None:
        self.write_configs()
        self.dumps = self.root / "dumps"
        self.dumps.mkdir()
        argv = [sys.executable, __file__, "--traced-serve", str(self.configs[0]), str(self.dumps)]
        self.spawn(argv, self.root / "n1.log")
        self.wait_ports()

    def snapshot(self, number: int, timeout: float = 600.0) -> Path:
        os.kill(self.procs[0].pid, signal.SIGUSR2)
        path = self.dumps / f"snap{number}"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no tracemalloc snapshot in {timeout} s")
            time.sleep(0.2)
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--concurrency", type=int, default=10, help="logins at a time (tracing slows them)"
    )
    parser.add_argument("--traced-serve", nargs=2, metavar=("CONFIG", "DUMPS"))
    args = parser.parse_args(argv)
    if args.traced_serve:
        return traced_serve(*args.traced_serve)
    srv.raise_nofile()
    root = Path(tempfile.mkdtemp(prefix="xes-idle-mem-"))
    cert, key = srv.make_certificate(root)
    server = TracedXes(root / "xes", cert, key, nodes=1)
    server.root.mkdir(parents=True)
    server.cpu = None
    server.start()
    try:
        users = [f"i{i + 1}" for i in range(args.connections)]
        server.add_users(users)
        os.kill(server.procs[0].pid, signal.SIGUSR1)
        time.sleep(1.0)
        snaps: dict[str, Path] = {}
        spec = {"workload": "idle", "connections": args.connections}
        spec["concurrency"] = args.concurrency
        spec["hold"] = 5.0
        hooks = {
            "before": lambda: snaps.__setitem__("before", server.snapshot(1)),
            "holding": lambda: snaps.__setitem__("holding", server.snapshot(2)),
        }
        phase = bench.run_loadgen(
            server, spec, timeout=1800, memory_at=("before", "holding"), on_mark=hooks
        )
        n = max(phase.result["connections"], 1)
        mem_before = phase.marks["before"].memory or {}
        mem_held = phase.marks["holding"].memory or {}
        print(
            f"PSS {(mem_held['pss'] - mem_before['pss']) / n:.1f} KiB, RSS "
            f"{(mem_held['rss'] - mem_before['rss']) / n:.1f} KiB per connection "
            f"(tracing on; {n} connections, {phase.result['errors']} errors)"
        )
        if phase.result["errors"]:
            print("errors:", phase.result["error_sample"])
        print("\n".join(breakdown(snaps["before"], snaps["holding"], n, args.top)))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
