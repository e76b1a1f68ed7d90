#!/usr/bin/env python3
"""Soak (issue 20, item 4): thousands of clients on one node for an hour; does anything grow?

One single-node ``xes serve`` (the benchmark runner's configuration, ``tools/bench/servers.py``)
and, in this process, ``--clients`` STARTTLS + SCRAM clients of three kinds:

* idle: log in, send presence, then only read;
* chatting (``--chatters``, in pairs): each sends its partner a numbered message every
  ``--chat-every`` seconds and counts what arrives (lost = sent - received at the end);
* reconnecting (``--reconnectors``): log out and in again every ``--reconnect-every`` seconds
  (stream close, new TCP + TLS + SCRAM + bind), the churn a shift change or flaky Wi-Fi makes.

Every ``--interval`` seconds it samples the server's whole process tree: RSS, PSS and anonymous
memory (KiB; RSS also counts the LMDB map's pages as they are read, anonymous does not),
CPU seconds, open file descriptors, threads, and the LMDB data file's size and the archive's
row count growth; each sample is a JSON line on stdout and in ``--out``. At the end it prints a
summary: first and last values, the growth of each between the end of the ramp and the end, and
per hour (a least-squares slope over the samples after the ramp), so "no growth beyond the
data it stores" can be read off: the data file grows with the archived chat, anonymous memory
must not.

    .venv/bin/python tools/soak.py                                  # 5,000 clients, 1 hour
    .venv/bin/python tools/soak.py --clients 500 --duration 300     # a quick look

Every loop is bounded by ``--duration``; the server and the temporary directory are removed at
the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "bench"))

import servers as srv  # noqa: E402
from loadgen import Conn, Spec, login_many  # noqa: E402

MARK = b"<body>soak "


@dataclass
class Tally:
    sent: int = 0
    received: int = 0
    reconnects: int = 0
    reconnect_failures: int = 0
    errors: list[str] = field(default_factory=list)


def anonymous_kib(pids: list[int]) -> int:
    """Anonymous memory (KiB) of ``pids``: the heap, without the LMDB map's file pages, which
    RSS counts as they are touched and which grow with the data, not with a leak."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Anonymous:"):
                    total += int(line.split()[1])
    return total


def sample(server: srv.Server, data_dir: Path, started: float, tally: Tally) -> dict[str, Any]:
    pids = server.pids()
    fds = threads = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        with contextlib.suppress(OSError):
            threads += len(os.listdir(f"/proc/{pid}/task"))
    db = data_dir / "db" / "data.mdb"
    return {
        "t": round(time.monotonic() - started, 1),
        **server.memory(),
        "anon": anonymous_kib(pids),
        "cpu_s": round(server.cpu_seconds(), 2),
        "fds": fds,
        "threads": threads,
        "processes": len(pids),
        "lmdb_bytes": db.stat().st_size if db.exists() else 0,
        "sent": tally.sent,
        "received": tally.received,
        "reconnects": tally.reconnects,
    }


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / var * 3600


def summary(samples: list[dict[str, Any]], ramp_end: float) -> dict[str, Any]:
    steady = [s for s in samples if s["t"] >= ramp_end] or samples[-1:]
    out: dict[str, Any] = {}
    for key in ("anon", "rss", "pss", "fds", "threads", "lmdb_bytes"):
        first, last = steady[0][key], steady[-1][key]
        out[key] = {
            "after_ramp": first,
            "end": last,
            "growth": last - first,
            "per_hour": round(slope_per_hour([(s["t"], s[key]) for s in steady]), 1),
        }
    span = steady[-1]["t"] - steady[0]["t"]
    cpu = steady[-1]["cpu_s"] - steady[0]["cpu_s"]
    out["server_cpu_busy_percent"] = round(100 * cpu / span, 1) if span > 0 else None
    return out


async def soak(args: argparse.Namespace, server: srv.Xes, data_dir: Path, out: Path) -> int:
    spec = Spec(
        workload="soak",
        host="127.0.0.1",
        ports=server.ports,
        domain=srv.DOMAIN,
        password=srv.PASSWORD,
        concurrency=args.concurrency,
        timeout=60.0,
    )
    tally = Tally()
    rng = random.Random(args.seed)
    started = time.monotonic()
    samples: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def sampler() -> None:
        with out.open("w") as fh:
            while True:
                row = sample(server, data_dir, started, tally)
                samples.append(row)
                line = json.dumps(row)
                print(line, flush=True)
                fh.write(line + "\n")
                fh.flush()
                if stop.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.interval)

    sampling = asyncio.create_task(sampler())
    users = [f"soak{i + 1}" for i in range(args.clients)]
    chatters = users[: args.chatters - args.chatters % 2]
    reconnectors = users[len(chatters) : len(chatters) + args.reconnectors]
    conns = await login_many(spec, [(u, spec.port(i)) for i, u in enumerate(users)], tally.errors)
    by_user = {c.jid.split("@")[0]: c for c in conns}
    ramp_end = time.monotonic() - started
    deadline = time.monotonic() + args.duration
    print(f"# {len(conns)} of {len(users)} logged in after {ramp_end:.0f} s", flush=True)

    def counter() -> Any:
        """Count message bodies in a chatter's stream; a body split across reads still counts
        once (the tail of each chunk is kept)."""
        tail = b""

        def on_data(chunk: bytes, now: float) -> None:
            nonlocal tail
            data = tail + chunk
            tally.received += data.count(MARK)
            tail = data[-(len(MARK) - 1) :]

        return on_data

    for user in chatters:
        if user in by_user:
            by_user[user].start_reader(counter())
    for user in users:
        conn = by_user.get(user)
        if conn is not None and conn.task is None:
            conn.start_reader(lambda chunk, now: None)

    async def chat(a: str, b: str) -> None:
        conn = by_user.get(a)
        if conn is None or b not in by_user:
            return
        n = 0
        await asyncio.sleep(rng.random() * args.chat_every)
        while time.monotonic() < deadline:
            n += 1
            conn.send(
                f"<message to='{b}@{srv.DOMAIN}' type='chat' id='{a}-{n}'>"
                f"<body>soak {a} {n}</body></message>"
            )
            tally.sent += 1
            await asyncio.sleep(args.chat_every)

    async def reconnect(user: str) -> None:
        await asyncio.sleep(rng.random() * args.reconnect_every)
        while time.monotonic() + args.reconnect_every < deadline:
            conn = by_user.pop(user, None)
            if conn is not None:
                await conn.close()
            fresh = Conn(srv.DOMAIN)
            try:
                await fresh.login_as(spec, user, spec.port(0), "soak", presence=True)
                fresh.start_reader(lambda chunk, now: None)
                by_user[user] = fresh
                tally.reconnects += 1
            except Exception as exc:
                tally.reconnect_failures += 1
                tally.errors.append(f"{user}: {exc!r}"[:200])
                with contextlib.suppress(Exception):
                    await fresh.close(1.0)
            await asyncio.sleep(args.reconnect_every)

    workers = [chat(a, b) for a, b in zip(chatters[0::2], chatters[1::2], strict=True)]
    workers += [chat(b, a) for a, b in zip(chatters[0::2], chatters[1::2], strict=True)]
    workers += [reconnect(u) for u in reconnectors]
    await asyncio.gather(*workers)
    await asyncio.sleep(max(0.0, min(10.0, deadline - time.monotonic() + 10.0)))  # drain
    stop.set()
    await sampling
    await asyncio.gather(*(c.close(2.0) for c in by_user.values()), return_exceptions=True)
    result = {
        "clients": args.clients,
        "logged_in": len(conns),
        "duration_s": args.duration,
        "ramp_s": round(ramp_end, 1),
        "sent": tally.sent,
        "received": tally.received,
        "lost": tally.sent - tally.received,
        "reconnects": tally.reconnects,
        "reconnect_failures": tally.reconnect_failures,
        "errors": tally.errors[:10],
        "growth": summary(samples, ramp_end),
    }
    print("RESULT " + json.dumps(result, indent=2), flush=True)
    return 0 if result["lost"] == 0 and not tally.reconnect_failures else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--chatters", type=int, default=200, help="of the clients, in pairs")
    parser.add_argument("--reconnectors", type=int, default=100, help="of the clients")
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds after the ramp")
    parser.add_argument("--chat-every", type=float, default=10.0, help="seconds per message")
    parser.add_argument("--reconnect-every", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--concurrency", type=int, default=50, help="logins at once (ramp)")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("soak-samples.jsonl"))
    args = parser.parse_args()
    if args.chatters + args.reconnectors > args.clients:
        parser.error("--chatters + --reconnectors must not exceed --clients")
    srv.raise_nofile()
    root = Path(tempfile.mkdtemp(prefix="xes-soak-"))
    server = srv.Xes(root, *srv.make_certificate(root), cpu=None, nodes=1)
    try:
        server.start()
        server.add_users([f"soak{i + 1}" for i in range(args.clients)])
        data_dir = root / "n1" / "data"
        # The sampled duration starts after the ramp: the deadline is set inside soak().
        return asyncio.run(soak(args, server, data_dir, args.out))
    finally:
        server.stop()
        # The server's log goes next to the samples: a refused login or a lost message is
        # explained there (the data directory is too big to keep).
        for log in root.glob("n*.log"):
            shutil.copy(log, args.out.with_name(f"{args.out.stem}-{log.name}"))
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
