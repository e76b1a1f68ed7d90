#!/usr/bin/env python3
"""Archive benchmark (issue 4): one user's archive filled with 1,000,000 messages, then queried.

The fill goes through the real apply path: log entries of ``--batch`` ``message.routed`` events
(one group commit each, as the log process applies them: journal, every projection, one synced
LMDB commit per entry), each message archived in the owner's and the peer's archive (50 peers).
Message times advance one second per message (an archive of ~11.5 days). Insert cost is reported
per block of ``--block`` messages, so growth with the archive's size would show.

Queries run the code a client query runs on the server, minus the socket: parse the
``<query/>`` element, read the page from the projection, render the ``<result/>`` messages and
the ``<fin/>`` to bytes. Workloads, ``--queries`` each, 50-message pages:

* last page (RSM ``<before/>``), the catch-up a client does on opening a conversation;
* a page in the middle, by id (RSM ``<after>`` a random archived id);
* a date range (``start``/``end`` one hour apart at a random point);
* last page with one peer (``with``).

    .venv/bin/python tools/bench/archive.py                  # 1,000,000 messages
    .venv/bin/python tools/bench/archive.py --messages 50000 # quick
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from xes.events import Envelope  # noqa: E402
from xes.events.catalog import MessageRouted  # noqa: E402
from xes.events.envelope import canonical_json  # noqa: E402
from xes.events.registry import to_data  # noqa: E402
from xes.features.mam import fit_page, parse_query, render_page  # noqa: E402
from xes.projections import archive as archive_view  # noqa: E402
from xes.projections.projector import Projector, all_db_names  # noqa: E402
from xes.stanza.delay import stamp  # noqa: E402
from xes.store.env import open_store  # noqa: E402
from xes.xml import parse_fragment, serialize  # noqa: E402

OWNER = "owner@bench.example"
T0 = 1_750_000_000_000
BODY = "x" * 100


def fill(projector: Projector, messages: int, batch: int, block: int, peers: int) -> list[float]:
    """Apply ``messages`` archived messages; returns microseconds per message for each block."""
    per_block: list[float] = []
    index = projector.last_applied()
    started = time.perf_counter()
    n = 0
    while n < messages:
        envelopes = []
        for _ in range(min(batch, messages - n)):
            peer = f"peer{n % peers}@bench.example"
            sid = f"s{n:08d}"
            xml = (
                f"<message from='{peer}/pc' to='{OWNER}' type='chat' id='m{n}'>"
                f"<body>{BODY}</body><stanza-id xmlns='urn:xmpp:sid:0' by='{OWNER}' id='{sid}'/>"
                "</message>"
            )
            event = MessageRouted(
                f"{peer}/pc",
                OWNER,
                "chat",
                xml,
                [],
                None,
                stanza_id=sid,
                archived_by=[OWNER, peer],
            )
            envelopes.append(
                Envelope(
                    type=event.TYPE,  # type: ignore[attr-defined]
                    v=event.V,  # type: ignore[attr-defined]
                    stream=event.stream(),
                    id=f"bench.{n}",
                    at=T0 + n * 1000,
                    origin="bench",
                    data=to_data(event),
                ).to_json()
            )
            n += 1
        index += 1
        projector.apply(index, canonical_json([envelopes]))
        if n % block == 0 or n == messages:
            now = time.perf_counter()
            done_in_block = block if n % block == 0 else n % block
            per_block.append((now - started) / done_in_block * 1e6)
            print(f"  {n:>9,} messages  {per_block[-1]:7.1f} us/message", flush=True)
            started = now
    return per_block


def query_xml(kind: str, rng: random.Random, ids: list[str], span_ms: int, peers: int) -> bytes:
    rsm_ns = "http://jabber.org/protocol/rsm"
    form = ""
    if kind == "last page":
        rsm = f"<set xmlns='{rsm_ns}'><max>50</max><before/></set>"
    elif kind == "middle page by id":
        after = ids[rng.randrange(len(ids) // 4, 3 * len(ids) // 4)]
        rsm = f"<set xmlns='{rsm_ns}'><max>50</max><after>{after}</after></set>"
    elif kind == "date range (1 h)":
        start = T0 + rng.randrange(0, max(1, span_ms - 3_600_000))
        fields = (("start", stamp(start)), ("end", stamp(start + 3_600_000)))
        form = _form(fields)
        rsm = f"<set xmlns='{rsm_ns}'><max>50</max></set>"
    else:  # last page with one peer
        form = _form((("with", f"peer{rng.randrange(peers)}@bench.example"),))
        rsm = f"<set xmlns='{rsm_ns}'><max>50</max><before/></set>"
    return f"<query xmlns='urn:xmpp:mam:2' queryid='q'>{form}{rsm}</query>".encode()


def _form(fields: tuple[tuple[str, str], ...]) -> str:
    values = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields)
    return (
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
        f"<value>urn:xmpp:mam:2</value></field>{values}</x>"
    )


def measure(store, kind: str, queries: int, ids: list[str], span: int, peers: int) -> dict:  # type: ignore[no-untyped-def]
    rng = random.Random(kind)
    latencies = []
    sizes = []
    for _ in range(queries):
        raw = query_xml(kind, rng, ids, span, peers)
        t = time.perf_counter()
        element = parse_fragment(raw)
        q = parse_query(element, 50, 250)
        with store.env.begin(buffers=False) as txn:
            page = fit_page(archive_view.query(store, txn, OWNER, q), q.before is not None)
        messages, fin = render_page(page, OWNER, OWNER + "/pc", "q", False)
        wire = b"".join(messages) + serialize(fin)
        latencies.append((time.perf_counter() - t) * 1000)
        sizes.append(len(messages))
        assert wire
    latencies.sort()
    return {
        "workload": kind,
        "queries": queries,
        "results_per_page": statistics.mean(sizes),
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "max_ms": latencies[-1],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=100, help="messages per log entry")
    ap.add_argument("--block", type=int, default=100_000, help="report insert cost per block")
    ap.add_argument("--peers", type=int, default=50)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--dir", type=Path, help="keep the store here (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    tmp = args.dir or Path(tempfile.mkdtemp(prefix="xes-archive-bench-"))
    store = open_store(tmp / "db", all_db_names(), writer=True)
    try:
        projector = Projector(store)
        print(f"filling {args.messages:,} messages into {OWNER}'s archive ({tmp})")
        t = time.perf_counter()
        insert = fill(
            projector, args.messages, args.batch, min(args.block, args.messages), args.peers
        )
        fill_s = time.perf_counter() - t
        with store.env.begin() as txn:
            count = archive_view.query(store, txn, OWNER, archive_view.ArchiveQuery(max=0)).count
            ids = []
            cur = txn.cursor(db=store.db(archive_view.IDS))
            prefix = OWNER.encode() + b"\x00"
            cur.set_range(prefix)
            for k in cur.iternext(keys=True, values=False):
                if not k.startswith(prefix):
                    break
                ids.append(k[len(prefix) :].decode())
        assert count == args.messages, (count, args.messages)
        span = args.messages * 1000
        results = [
            measure(store, kind, args.queries, ids, span, args.peers)
            for kind in (
                "last page",
                "middle page by id",
                "date range (1 h)",
                "last page, one peer",
            )
        ]
        growth = insert[-1] / insert[0] if insert else 0.0
        print()
        print(f"archive: {count:,} messages; fill {fill_s:.0f} s")
        print(
            f"insert cost: first block {insert[0]:.1f} us/message, last {insert[-1]:.1f}"
            f" (last/first {growth:.2f})"
        )
        print(f"{'query (50-message page)':28} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for r in results:
            print(f"{r['workload']:28} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.2f}")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "messages": count,
                        "fill_seconds": fill_s,
                        "insert_us_per_message_by_block": insert,
                        "queries": results,
                    },
                    indent=2,
                )
            )
    finally:
        store.close()
        if args.dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
