#!/usr/bin/env python3
"""Pages each projection writes per log entry: where apply's disk writes go (issues 16, 19).

A synced LMDB commit costs what it writes: every B-tree page the entry dirtied (copy-on-write),
then the fsyncs. This applies the inbox benchmark's ``message.routed`` entries (``--batch``
messages each, 1,000 peers, ``tools/bench/inbox.py``) to several stores in turn, each leaving out
some projections, and counts the bytes each commit writes (``wchar`` of ``/proc/self/io``
around the apply, in 4 KiB pages; the stores are opened with ``sync=False`` so the count does
not depend on the disk). The difference between two stores is what the projections left out
cost in pages.

``--ids``: the archive ids the messages carry: ``sequential`` (the inbox benchmark's), ``random``
(96 random bits, xes before 2026-12) or ``sortable`` (``xes.stanza.sid.new_id``: time first).

    .venv/bin/python tools/bench/pages.py
    .venv/bin/python tools/bench/pages.py --ids random --only all
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tools" / "bench"))

import lmdb  # noqa: E402

_open = lmdb.open
lmdb.open = lambda *a, **kw: _open(*a, **{**kw, "sync": False})  # type: ignore[assignment]

import inbox as bench  # noqa: E402

from xes.events.envelope import canonical_json  # noqa: E402
from xes.projections.archive import Archive  # noqa: E402
from xes.projections.inbox import Inbox  # noqa: E402
from xes.projections.marker_targets import MarkerTargets  # noqa: E402
from xes.projections.projector import Projector, all_db_names  # noqa: E402
from xes.projections.read_status import ReadStatus  # noqa: E402
from xes.stanza import sid  # noqa: E402
from xes.store.env import open_store  # noqa: E402

STORES = {
    "all": (),
    "without_inbox": (Inbox,),
    "without_read_status": (ReadStatus,),
    "without_marker_targets": (Inbox, ReadStatus, MarkerTargets),
    "without_archive": (Archive,),
}
"""Store name -> projections it leaves out (marker_targets only with both of its readers)."""


def written() -> int:
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("wchar"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--ids", choices=("sequential", "random", "sortable"), default="sortable")
    parser.add_argument("--only", nargs="*", choices=list(STORES), help="stores to measure")
    args = parser.parse_args()
    names = args.only or list(STORES)
    root = Path(tempfile.mkdtemp(prefix="xes-pages-"))
    try:
        projectors = {}
        for name in names:
            projector = Projector(open_store(root / name, all_db_names(), writer=True))
            for handlers in projector.routes.values():
                handlers[:] = [p for p in handlers if not isinstance(p, STORES[name])]
            projectors[name] = projector
        pages = dict.fromkeys(names, 0)
        spent = dict.fromkeys(names, 0.0)
        rng = random.Random(430)
        n = 0
        for index in range(1, args.entries + 1):
            envelopes = []
            for _ in range(args.batch):
                message = bench.message(n, args.peers, rng)
                if args.ids == "random":
                    message = replace(message, stanza_id=secrets.token_urlsafe(12))
                elif args.ids == "sortable":
                    message = replace(message, stanza_id=sid.new_id(bench.T0 + n * 1000))
                envelopes.append(bench.envelope(n, message))
                n += 1
            command = canonical_json([envelopes])
            for name, projector in projectors.items():
                before, t = written(), time.perf_counter()
                projector.apply(index, command)
                spent[name] += time.perf_counter() - t
                pages[name] += written() - before
        result = {
            "entries": args.entries,
            "batch": args.batch,
            "ids": args.ids,
            "pages_per_entry": {k: round(v / args.entries / 4096, 1) for k, v in pages.items()},
            "cpu_us_per_message": {k: round(v / n * 1e6, 1) for k, v in spent.items()},
        }
        print(json.dumps(result, indent=2))
    finally:
        for projector in projectors.values():
            projector.store.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
