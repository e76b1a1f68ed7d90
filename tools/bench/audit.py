#!/usr/bin/env python3
"""Audit trail benchmark (issue 17): what the hash chain adds to apply, and verify/export speed.

Apply: the same ``message.routed`` log entries (``--batch`` events each, chat messages of about
1 KB rows, one LMDB commit per entry as the log process does, synced unless ``--no-sync``) go
to two stores in turn (the order rotates per entry, so the machine's noise hits both alike): one
with the chain as built, one where the projector's chain step is a no-op. The difference per
event is the chain's apply cost, reported against the apply cost without it. ``hash only`` is
the two SHA-256 of one event on their own.

Then on the chained store: ``xes audit verify``'s walk (:func:`xes.audit.verify.verify_store`)
in events per second, and an export of everything and of one peer's events
(:func:`xes.audit.export.write_export`), also in events of the journal per second.

    .venv/bin/python tools/bench/audit.py                   # 20,000 events
    .venv/bin/python tools/bench/audit.py --events 5000     # quick
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import lmdb  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from xes.audit import chain  # noqa: E402
from xes.audit.export import Filters, write_export  # noqa: E402
from xes.audit.verify import verify_store  # noqa: E402
from xes.events import wrap  # noqa: E402
from xes.events.catalog import MessageRouted  # noqa: E402
from xes.events.envelope import canonical_json  # noqa: E402
from xes.projections import projector as projector_module  # noqa: E402
from xes.projections.projector import Projector, all_db_names  # noqa: E402
from xes.store.env import open_store  # noqa: E402

T0 = 1_750_000_000_000


class _TimedChain:
    """:mod:`xes.audit.chain` with its per-event step timed, inside the real apply."""

    spent = 0.0
    catch_up = staticmethod(chain.catch_up)

    @classmethod
    def append(cls, store: Any, txn: Any, key: bytes, row: bytes) -> None:
        t = time.perf_counter()
        chain.append(store, txn, key, row)
        cls.spent += time.perf_counter() - t


class _NoChain:
    """Stands in for :mod:`xes.audit.chain` in the projector of the store without the chain."""

    catch_up = staticmethod(lambda store, txn: 0)
    append = staticmethod(lambda store, txn, key, row: None)


def entry(index: int, batch: int, peers: int, rng: random.Random) -> bytes:
    envelopes = []
    for pos in range(batch):
        n = index * batch + pos
        peer = f"peer{rng.randrange(peers)}@bench.example"
        xml = (
            f"<message from='{peer}/pc' to='owner@bench.example' type='chat' id='m{n}'>"
            f"<body>{'x' * 400}</body></message>"
        )
        event = MessageRouted(
            f"{peer}/pc", "owner@bench.example", "chat", xml, [], stanza_id=f"s{n:08d}",
            archived_by=["owner@bench.example", peer], body=True, msg_id=f"m{n}",
        )  # fmt: skip
        envelopes.append(wrap(event, id=f"bench.{n}", at=T0 + n, origin="bench").to_json())
    return canonical_json([envelopes])


def apply_both(root: Path, events: int, batch: int, peers: int, sync: bool) -> dict[str, Any]:
    stores = {}
    for name in ("chain", "no chain"):
        path = root / name.replace(" ", "_")
        store = open_store(path, all_db_names(), writer=True)
        if not sync:  # the same environment, reopened without fsync per commit
            store.close()
            store = _unsynced(path)
        stores[name] = store
    projectors = {name: Projector(store) for name, store in stores.items()}
    spent = dict.fromkeys(stores, 0.0)
    rng = random.Random(17)
    order = list(projectors)
    entries = events // batch
    for index in range(1, entries + 1):
        command = entry(index, batch, peers, rng)
        shift = index % 2
        for name in order[shift:] + order[:shift]:
            projector_module.chain = _TimedChain if name == "chain" else _NoChain  # type: ignore[assignment]
            t = time.perf_counter()
            projectors[name].apply(index, command)
            spent[name] += time.perf_counter() - t
    projector_module.chain = chain
    per = {name: s / (entries * batch) * 1e6 for name, s in spent.items()}
    per["chain step"] = _TimedChain.spent / (entries * batch) * 1e6
    stores["no chain"].close()
    return {"per_event_us": per, "store": stores["chain"], "events": entries * batch}


def _unsynced(path: Path) -> Any:
    real = lmdb.open
    lmdb.open = lambda *a, **kw: real(*a, **{**kw, "sync": False})  # type: ignore[assignment]
    try:
        return open_store(path, all_db_names(), writer=True)
    finally:
        lmdb.open = real  # type: ignore[assignment]


def hash_only(rows: int = 20000) -> float:
    row = b"x" * 1000
    prev = chain.GENESIS
    t = time.perf_counter()
    for seq in range(1, rows + 1):
        prev = chain.link(prev, seq, chain.leaf(row))
    return (time.perf_counter() - t) / rows * 1e6


def rate(fn: Any, events: int, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return events / statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--no-sync", action="store_true", help="CPU only: no fsync per commit")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="xes-bench-audit-"))
    try:
        result = apply_both(root, args.events, args.batch, args.peers, not args.no_sync)
        per = result["per_event_us"]
        store, events = result["store"], result["events"]
        added = per["chain"] - per["no chain"]
        print(f"events: {events} in entries of {args.batch}, sync={not args.no_sync}")
        print(f"apply without the chain: {per['no chain']:.1f} us per event")
        print(f"apply with the chain:    {per['chain']:.1f} us per event")
        print(f"the chain adds:          {added:+.1f} us ({added / per['no chain'] * 100:+.1f} %)")
        print(f"the chain step alone, timed inside apply: {per['chain step']:.1f} us per event")
        print(f"hash only (two SHA-256 of a 1 KB row): {hash_only():.2f} us per event")

        def verify() -> None:
            with store.env.begin(buffers=False) as txn:
                assert verify_store(store, txn).ok

        key = Ed25519PrivateKey.generate()

        def export(filters: Filters) -> Any:
            def run() -> None:
                with store.env.begin(buffers=False) as txn:
                    out = io.BytesIO()
                    write_export(
                        store, txn, out, filters, node="n1", domain="b", key=key, now_ms=T0
                    )

            return run

        print(f"verify: {rate(verify, events):,.0f} events/s")
        print(f"export, everything: {rate(export(Filters()), events):,.0f} events/s")
        one = Filters(jid="peer7@bench.example")
        print(f"export, one peer's events (--jid): {rate(export(one), events):,.0f} events/s")
        store.close()
    finally:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
