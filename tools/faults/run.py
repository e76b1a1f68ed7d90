"""Run a fault campaign and print its table (exit status 1 if the checker found a violation).

    .venv/bin/python -m tools.faults.run --seed 7 --duration 600 --clients 20 --out faults-out

Without ``--seed`` a random seed is chosen and printed, so any run can be replayed. ``--only``
restricts the nemesis to some fault kinds (to bisect a finding); ``--require`` makes sure
some kinds occur at least so many times; ``--wipe`` adds the wipe-and-re-add fault.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.faults.campaign import SNAPSHOT_ENTRIES, run_campaign
from tools.faults.nemesis import CLIENT_KINDS, CLUSTER_KINDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of faults")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between sends")
    parser.add_argument("--out", type=Path, default=None, help="keep records and logs here")
    parser.add_argument("--wipe", action="store_true", help="also wipe and re-add a node")
    parser.add_argument(
        "--disk", action="store_true", help="tmpfs data dirs and disk-full faults (root)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated fault kinds: " + ", ".join([*CLUSTER_KINDS, *CLIENT_KINDS]),
    )
    parser.add_argument(
        "--require",
        default="",
        help="at least so many faults of some kinds, e.g. clock_step=2,snapshot_kill=2",
    )
    parser.add_argument(
        "--snapshot-entries",
        type=int,
        default=SNAPSHOT_ENTRIES,
        help="the nodes' [cluster] compaction_entries (snapshot every so many entries)",
    )
    args = parser.parse_args(argv)
    require = {k: int(n) for k, n in (p.split("=") for p in args.require.split(",") if p)}
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    kinds = set(args.only.split(",")) if args.only else None
    out = args.out or Path(f"faults-out/seed-{seed}")
    result = run_campaign(
        seed,
        args.duration,
        args.clients,
        out=out,
        interval=args.interval,
        wipe=args.wipe,
        disk=args.disk,
        kinds=kinds,
        require=require or None,
        snapshot_entries=args.snapshot_entries,
        log=lambda line: print(line, flush=True),
    )
    print(result.table())
    print(f"records, schedule and node logs: {result.out}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
