#!/usr/bin/env python3
"""Inbox benchmark (issue 16): what the inbox adds to apply, and its query for 1,000 conversations.

Apply: the same ``message.routed`` log entries (``--batch`` events each, each archived by owner
and peer, 1,000 peers, one synced LMDB commit per entry as the log process does) go to two
stores, entry by entry in turn so the machine's noise hits both alike: one with every projection,
one with all but the inbox. The difference per message is the inbox's apply cost; it is reported
against the apply cost without it.

Query: on the store with the inbox (one user with ``--peers`` conversations, markers having read
some of them), the code a client's ``<inbox/>`` query runs on the server minus the socket: parse
the query, walk the page, render the entry messages with their last message and the ``<fin/>``
to bytes. Workloads: the first page of 50, the first page without messages, unread-only, a page in
the middle by RSM ``after``. p50/p99 in milliseconds.

Wire (``--wire``): a real single-node ``xes serve`` (the runner's configuration,
``tools/bench/servers.py``, with room creation limits raised); one user joins ``--rooms`` new
rooms at ``conference.<domain>`` (unlocked on creation) and posts one message in each, an inbox
entry per room; then, over the same STARTTLS stream, ``--queries`` sequential
``<inbox xmlns='urn:xmpp:inbox:1'/>`` queries (the default page of 50 with last messages), timed
from the write of the ``<iq>`` to the end of its result (after the 50 entry messages).

    .venv/bin/python tools/bench/inbox.py                   # 20,000 messages, 1,000 peers
    .venv/bin/python tools/bench/inbox.py --messages 5000   # quick
    .venv/bin/python tools/bench/inbox.py --wire            # over the wire, 1,000 rooms
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

import lmdb

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from xes.events import Envelope  # noqa: E402
from xes.events.catalog import MessageRouted  # noqa: E402
from xes.events.envelope import canonical_json  # noqa: E402
from xes.events.registry import to_data  # noqa: E402
from xes.features.inbox import parse_query, render  # noqa: E402
from xes.projections.inbox import Inbox  # noqa: E402
from xes.projections.marker_targets import MarkerTargets  # noqa: E402
from xes.projections.projector import Projector, all_db_names  # noqa: E402
from xes.projections.read_status import ReadStatus  # noqa: E402
from xes.store.env import open_store  # noqa: E402
from xes.xml import parse_fragment  # noqa: E402

OWNER = "owner@bench.example"
T0 = 1_750_000_000_000
BODY = "x" * 100


def envelope(n: int, event: MessageRouted) -> dict:  # type: ignore[type-arg]
    return Envelope(
        type=event.TYPE,  # type: ignore[attr-defined]
        v=event.V,  # type: ignore[attr-defined]
        stream=event.stream(),
        id=f"bench.{n}",
        at=T0 + n * 1000,
        origin="bench",
        data=to_data(event),
    ).to_json()


def message(n: int, peers: int, rng: random.Random) -> MessageRouted:
    """Mostly messages to the owner; some answers; some displayed markers of a recent one."""
    peer = f"peer{rng.randrange(peers)}@bench.example"
    roll = rng.random()
    if roll < 0.1:
        xml = (
            f"<message from='{OWNER}/pc' to='{peer}' type='chat' id='m{n}'>"
            f"<body>{BODY}</body></message>"
        )
        return MessageRouted(
            f"{OWNER}/pc", peer, "chat", xml, [], stanza_id=f"s{n:08d}",
            archived_by=[OWNER, peer], body=True, msg_id=f"m{n}",
        )  # fmt: skip
    if roll < 0.2 and n > 50:
        marked = f"m{n - rng.randrange(1, 50)}"
        xml = (
            f"<message from='{OWNER}/pc' to='{peer}' type='chat'>"
            f"<displayed xmlns='urn:xmpp:chat-markers:0' id='{marked}'/></message>"
        )
        return MessageRouted(
            f"{OWNER}/pc", peer, "chat", xml, [], stanza_id=f"s{n:08d}",
            archived_by=[OWNER, peer], marker="displayed", marker_id=marked,
        )  # fmt: skip
    xml = (
        f"<message from='{peer}/pc' to='{OWNER}' type='chat' id='m{n}'>"
        f"<body>{BODY}</body><stanza-id xmlns='urn:xmpp:sid:0' by='{OWNER}' id='s{n:08d}'/>"
        "</message>"
    )
    return MessageRouted(
        f"{peer}/pc", OWNER, "chat", xml, [], stanza_id=f"s{n:08d}",
        archived_by=[OWNER, peer], body=True, msg_id=f"m{n}",
    )  # fmt: skip


def apply_cost(projectors: dict[str, Projector], messages: int, batch: int, peers: int) -> dict:  # type: ignore[type-arg]
    """Microseconds per message on each store, the same entries applied to each in turn (the
    order rotates per entry, so no store always goes first)."""
    rng = random.Random(430)
    spent = dict.fromkeys(projectors, 0.0)
    order = list(projectors.items())
    index = 0
    n = 0
    while n < messages:
        envelopes = []
        for _ in range(min(batch, messages - n)):
            envelopes.append(envelope(n, message(n, peers, rng)))
            n += 1
        index += 1
        command = canonical_json([envelopes])
        shift = index % len(order)
        for name, projector in order[shift:] + order[:shift]:
            t = time.perf_counter()
            projector.apply(index, command)
            spent[name] += time.perf_counter() - t
    return {name: s / messages * 1e6 for name, s in spent.items()}


QUERIES = {
    "first page (50, with last messages)": "<inbox xmlns='urn:xmpp:inbox:1'/>",
    "first page, messages='false'": "<inbox xmlns='urn:xmpp:inbox:1' messages='false'/>",
    "unread-only": "<inbox xmlns='urn:xmpp:inbox:1' unread-only='true'/>",
}


def query_latencies(store, queries: int) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    out = {}
    with store.env.begin(buffers=False) as txn:
        _, fin = render(
            store, txn, OWNER, OWNER + "/pc", parse_query(_el(QUERIES["unread-only"]), 50, 250), "q"
        )
    middle = None
    workloads = dict(QUERIES)
    with store.env.begin(buffers=False) as txn:
        q = parse_query(
            _el(
                "<inbox xmlns='urn:xmpp:inbox:1'><set xmlns='http://jabber.org/protocol/rsm'><max>500</max></set></inbox>"
            ),
            50,
            1000,
        )
        _, big = render(store, txn, OWNER, OWNER + "/pc", q, "q")
        rsm_set = big.find("{http://jabber.org/protocol/rsm}set")
        last = rsm_set.find("{http://jabber.org/protocol/rsm}last") if rsm_set else None
        middle = last.text if last is not None else None
    if middle:
        rsm = f"<set xmlns='http://jabber.org/protocol/rsm'><max>50</max><after>{middle}</after></set>"
        workloads["middle page (RSM after)"] = f"<inbox xmlns='urn:xmpp:inbox:1'>{rsm}</inbox>"
    for name, xml in workloads.items():
        raw = xml.encode()
        times, sizes = [], []
        for _ in range(queries):
            t = time.perf_counter()
            q = parse_query(parse_fragment(raw), 50, 250)
            with store.env.begin(buffers=False) as txn:
                messages, fin = render(store, txn, OWNER, OWNER + "/pc", q, "q")
            from xes.xml import serialize

            size = sum(len(m) for m in messages) + len(serialize(fin))
            times.append((time.perf_counter() - t) * 1000)
            sizes.append(size)
        times.sort()
        out[name] = {
            "p50_ms": round(statistics.median(times), 3),
            "p99_ms": round(times[int(len(times) * 0.99) - 1], 3),
            "entries": len(messages),
            "bytes": sizes[-1],
        }
    out["fin"] = dict(fin.attrs)  # type: ignore[dict-item]
    return out


WIRE_MUC = "[muc]\nmax_rooms_per_user = 100000\nlock_new_rooms = false\ndefault_persistent = true\n"


def wire(rooms: int, queries: int) -> dict[str, object]:
    """Start ``xes serve``, give one user ``rooms`` conversations, time ``queries`` round trips."""
    import asyncio

    sys.path.insert(0, str(ROOT / "tools" / "bench"))
    import servers as srv
    from loadgen import Conn, iq_rx, pct

    class Server(srv.Xes):
        def write_configs(self) -> None:
            super().write_configs()
            for config in self.configs:
                config.write_text(config.read_text().replace("[muc]\n", WIRE_MUC, 1))

    root = Path(tempfile.mkdtemp(prefix="xes-inbox-wire-"))
    cert, key_path = srv.make_certificate(root)
    server = Server(root / "xes", cert, key_path, cpu=None, nodes=1)
    try:
        server.start()
        server.add_users(["owner"])
        result = asyncio.run(_wire_client(server.ports[0], rooms, queries, Conn, iq_rx, pct))
        result["server"] = server.version
        return result
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _wire_client(port, rooms, queries, conn_class, iq_rx, pct):  # type: ignore[no-untyped-def]
    import asyncio
    import re

    domain = "bench.test"
    conn = conn_class(domain)
    await conn.login(
        "127.0.0.1", port, "owner", "bench-pw", "pc",
        mechanisms=("SCRAM-SHA-256", "SCRAM-SHA-1"), presence=True, timeout=30.0,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        window = 50
        for start in range(0, rooms, window):
            last = min(start + window, rooms)
            for i in range(start, last):
                room = f"r{i}@conference.{domain}"
                conn.send(
                    f"<presence to='{room}/owner'><x xmlns='http://jabber.org/protocol/muc'>"
                    "<history maxstanzas='0'/></x></presence>"
                    f"<message to='{room}' type='groupchat' id='g{i}'>"
                    f"<body>hello room {i} {BODY}</body></message>"
                )
            echo = re.compile(rb"<message\b[^>]*\bid=['\"]g" + str(last - 1).encode() + rb"['\"]")
            got = (await conn.until(echo, 60.0)).string
            if b"type='error'" in got or b'type="error"' in got:
                raise RuntimeError(f"room setup failed: {got[-400:]!r}")
        fill_s = time.monotonic() - t0
        # The last message's apply may trail its reflection: wait (bounded) for every entry.
        total = b""
        for attempt in range(100):
            conn.send(
                f"<iq type='get' id='c{attempt}'><inbox xmlns='urn:xmpp:inbox:1' "
                "messages='false'><set xmlns='http://jabber.org/protocol/rsm'><max>1</max>"
                "</set></inbox></iq>"
            )
            answer = (await conn.until(iq_rx(f"c{attempt}"), 30.0)).group(0)
            m = re.search(rb"<fin\b[^>]*\btotal=['\"](\d+)", answer)
            total = m.group(1) if m else b""
            if total == str(rooms).encode():
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"the inbox holds {total!r} entries, not {rooms}")
        times, size, entries = [], 0, 0
        query = "<inbox xmlns='urn:xmpp:inbox:1'/>"
        for q in range(queries):
            rx = iq_rx(f"q{q}")
            t = time.perf_counter()
            conn.send(f"<iq type='get' id='q{q}'>{query}</iq>")
            m = await conn.until(rx, 30.0)
            times.append((time.perf_counter() - t) * 1000)
            size = len(m.string)
            entries = len(re.findall(rb"<entry\b", m.string))
        return {
            "rooms": rooms,
            "fill_s": round(fill_s, 1),
            "queries": queries,
            "p50_ms": round(pct(times, 50), 2),
            "p99_ms": round(pct(times, 99), 2),
            "max_ms": round(max(times), 2),
            "entries": entries,
            "bytes": size,
        }
    finally:
        await conn.close()


def _el(xml: str):  # type: ignore[no-untyped-def]
    return parse_fragment(xml.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--no-sync",
        action="store_true",
        help="open the stores with sync=False (CPU only, no fsync): splits CPU from page I/O",
    )
    parser.add_argument("--wire", action="store_true", help="time queries against xes serve")
    parser.add_argument("--rooms", type=int, default=1000, help="--wire: conversations")
    args = parser.parse_args()
    if args.wire:
        print(json.dumps(wire(args.rooms, max(args.queries, 200)), indent=2))
        return
    if args.no_sync:
        real_open = lmdb.open

        def open_unsynced(*a, **kw):  # type: ignore[no-untyped-def]
            return real_open(*a, **{**kw, "sync": False})

        lmdb.open = open_unsynced
    root = Path(tempfile.mkdtemp(prefix="xes-inbox-bench-"))
    try:
        # marker_targets serves the inbox and read status alike: "without" keeps it (read
        # status needs it), "without_inbox_or_targets" charges all of it to the inbox.
        left_out = {
            "with": (),
            "without": (Inbox,),
            "without_read_status": (ReadStatus,),
            "without_inbox_or_targets": (Inbox, MarkerTargets),
        }
        names = tuple(left_out)
        stores = [open_store(root / name, all_db_names(), writer=True) for name in names]
        projectors = dict(zip(names, (Projector(store) for store in stores), strict=True))
        for name, kinds in left_out.items():
            for handlers in projectors[name].routes.values():
                handlers[:] = [p for p in handlers if not isinstance(p, kinds)]
        us = apply_cost(projectors, args.messages, args.batch, args.peers)
        result = {
            "messages": args.messages,
            "batch": args.batch,
            "sync": not args.no_sync,
            "apply_us_per_message_with_inbox": round(us["with"], 1),
            "apply_us_per_message_without_inbox": round(us["without"], 1),
            "inbox_share": round((us["with"] - us["without"]) / us["without"], 3),
            "apply_us_per_message_without_inbox_or_targets": round(
                us["without_inbox_or_targets"], 1
            ),
            "inbox_and_targets_share": round(
                (us["with"] - us["without_inbox_or_targets"]) / us["without_inbox_or_targets"], 3
            ),
            "apply_us_per_message_without_read_status": round(us["without_read_status"], 1),
            "read_status_share": round(
                (us["with"] - us["without_read_status"]) / us["without_read_status"], 3
            ),
        }
        if args.queries:
            result["queries"] = query_latencies(stores[0], args.queries)
        for store in stores:
            store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
