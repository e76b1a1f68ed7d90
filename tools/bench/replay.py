#!/usr/bin/env python3
"""Replay benchmark (issue 17 item 4): events per second of replay, 1,000,000-event journal.

Generation (once, cached in ``--dir``): a simulated server's day, proposed entry by entry through
the real ``Projector.apply`` (store opened ``sync=False``, for generation only), 32-64 events an
entry as group commit makes them; every proposal must come back ``ok``. The mix, by events
(printed with the result): accounts registered with a few mutual roster contacts each; sessions
bound on three nodes (presence, XEP-0198 enabled for most, rejoining their favourite rooms) and
ended (leaving the rooms, acknowledging their outbox, unavailable presence); presence changes;
XEP-0198 ``sm.handled``/``sm.acked``; one-to-one ``message.routed`` v2 (archived by both
parties, stanza ids, bodies, carbons to the sender's other resources, offline when the peer has
no session, about 12 % XEP-0333 displayed markers naming an earlier message); rooms created,
joined and left; ``muc.message_sent`` v2 (some markers too).

Replay: ``rebuild`` (what ``xes replay`` runs) into a fresh directory, timed wall and CPU, its
digest checked against the live store's; ``--profile`` adds a cProfile of a second run, with the
time per projection and per event type (timers around each projection's ``apply``).

    .venv/bin/python tools/bench/replay.py                      # 1,000,000 events, cached
    .venv/bin/python tools/bench/replay.py --events 100000      # quick
    .venv/bin/python tools/bench/replay.py --profile            # where the time goes
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from xes.events import canonical_json, decode_event, wrap  # noqa: E402
from xes.events.catalog import (  # noqa: E402
    AccountRegistered,
    MessageRouted,
    MucMessageSent,
    MucOccupantJoined,
    MucOccupantLeft,
    MucRoomCreated,
    NodeStarted,
    PresenceUpdated,
    RosterItemUpdated,
    SessionBound,
    SessionEnded,
    SmAcked,
    SmEnabled,
    SmHandled,
)
from xes.muc.model import RoomConfig  # noqa: E402
from xes.projections import stream_mgmt  # noqa: E402
from xes.projections.projector import Projector, all_db_names, digest  # noqa: E402
from xes.projections.replay import replay_into  # noqa: E402
from xes.store import journal  # noqa: E402
from xes.store.env import open_store, u64  # noqa: E402

DOMAIN = "bench.example"
MUC = "conference.bench.example"
NODES = ("n1", "n2", "n3")
T0 = 1_760_000_000_000
BODY = "The quick brown fox jumps over the lazy dog; see you at the meeting at three. "
CREDS = {
    "SCRAM-SHA-256": {"salt": "c2FsdA==", "i": 4096, "stored_key": "a" * 44, "server_key": "b" * 44}
}
FORMAT = 2
"""Bump when the generator or the store changes (2: the audit chain), so a cached journal
from an older one is not reused."""


class World:
    """The simulated server: who exists, who is online where, who sits in which room. It
    decides each proposal so that apply accepts it (the generator checks that it did)."""

    def __init__(self, users: int, rooms: int, rng: random.Random) -> None:
        self.rng = rng
        self.users = [f"u{i}@{DOMAIN}" for i in range(users)]
        self.registered: list[str] = []
        self.contacts: dict[str, list[str]] = defaultdict(list)
        self.rooms = [f"room{i}@{MUC}" for i in range(rooms)]
        self.created: set[str] = set()
        self.created_list: list[str] = []
        self.favourites = {
            u: rng.sample(self.rooms, rng.choice((0, 1, 1, 2, 3))) for u in self.users
        }
        self.online: dict[str, dict[str, str]] = defaultdict(dict)
        """bare -> {session: full JID}"""
        self.session_list: list[str] = []
        self.session_of: dict[str, tuple[str, str, str]] = {}
        """session -> (bare, full, node)"""
        self.managed: dict[str, int] = {}
        """session -> handled count (XEP-0198 on)"""
        self.occupying: dict[str, dict[str, str]] = defaultdict(dict)
        """session -> {room: nick}"""
        self.occupants: dict[str, dict[str, str]] = defaultdict(dict)
        """room -> {session: nick}"""
        self.closing: list[str] = []
        self.recent: dict[str, list[str]] = defaultdict(list)
        """bare -> ids of messages it received lately (what its markers name)"""
        self.room_recent: dict[str, list[str]] = defaultdict(list)
        self.counter = 0

    def next_id(self) -> int:
        self.counter += 1
        return self.counter

    # -- actions: each returns one proposal (a list of events), or None ----------------------

    def register(self) -> list[Any] | None:
        if len(self.registered) == len(self.users):
            return None
        jid = self.users[len(self.registered)]
        events: list[Any] = [AccountRegistered(jid, CREDS)]
        for contact in self.rng.sample(self.registered, min(3, len(self.registered))):
            events.append(RosterItemUpdated(jid, contact, None, ["Friends"], "both"))
            events.append(RosterItemUpdated(contact, jid, None, ["Friends"], "both"))
            self.contacts[jid].append(contact)
            self.contacts[contact].append(jid)
        self.registered.append(jid)
        return events

    def login(self) -> list[Any] | None:
        if not self.registered:
            return None
        bare = self.rng.choice(self.registered)
        if len(self.online[bare]) >= 3:
            return None
        n = self.next_id()
        session, node = f"s{n}", self.rng.choice(NODES)
        full = f"{bare}/res{n}"
        events: list[Any] = [SessionBound(session, full, node, f"{node}.boot", device=False)]
        if self.rng.random() < 0.8:
            events.append(SmEnabled(session, True, 300))
            self.managed[session] = 0
        events.append(self.presence(session, bare, full, True))
        self.online[bare][session] = full
        self.session_list.append(session)
        self.session_of[session] = (bare, full, node)
        for room in self.favourites[bare]:
            if room not in self.created:
                self.created.add(room)
                self.created_list.append(room)
                config = RoomConfig(name=room.split("@")[0], persistent=True).to_json()
                events.append(MucRoomCreated(room, full, config, False, f"secret-{room}"))
            nick = f"{bare.split('@')[0]}-{n}"
            history = {"maxstanzas": 0}
            events.append(MucOccupantJoined(room, nick, full, session, "", history))
            self.occupying[session][room] = nick
            self.occupants[room][session] = nick
        return events

    def presence(self, session: str, bare: str, full: str, available: bool) -> PresenceUpdated:
        targets = [f for c in self.contacts[bare] for f in self.online[c].values()]
        targets += [f for s, f in self.online[bare].items() if s != session]
        show = self.rng.choice(
            ("", "<show>away</show>", "<show>dnd</show>", "<status>busy</status>")
        )
        kind = "" if available else " type='unavailable'"
        body = f"{show if available else ''}<priority>5</priority>"
        xml = f"<presence from='{full}'{kind}>{body}</presence>"
        return PresenceUpdated(session, full, available, 5, xml, sorted(targets))

    def logout_start(self) -> list[Any] | None:
        """Take a session off the lists; its end is proposed with the next entry, once the
        store says how far its outbox got (the client acknowledges all of it first)."""
        if len(self.session_list) < 50:
            return None
        i = self.rng.randrange(len(self.session_list))
        session = self.session_list[i]
        self.session_list[i] = self.session_list[-1]
        self.session_list.pop()
        bare, _, _ = self.session_of[session]
        del self.online[bare][session]
        for room in self.occupying[session]:
            del self.occupants[room][session]
        self.closing.append(session)
        return None

    def logout_finish(self, session: str, outbox_next: int | None) -> list[Any]:
        bare, full, _ = self.session_of.pop(session)
        events: list[Any] = []
        if outbox_next is not None:
            events.append(SmAcked(session, outbox_next, 0))
        for room in sorted(self.occupying.pop(session, {})):
            events.append(MucOccupantLeft(room, session, "", "logout"))
        events.append(self.presence(session, bare, full, False))
        events.append(SessionEnded(session, full, "closed", outbox_next))
        self.managed.pop(session, None)
        return events

    def status(self) -> list[Any] | None:
        if not self.session_list:
            return None
        session = self.rng.choice(self.session_list)
        bare, full, _ = self.session_of[session]
        return [self.presence(session, bare, full, True)]

    def sm(self) -> list[Any] | None:
        if not self.managed:
            return None
        session = self.rng.choice(self.session_list)
        if session not in self.managed:
            return None
        if self.rng.random() < 0.5:
            self.managed[session] += self.rng.randint(1, 5)
            return [SmHandled(session, self.managed[session], 0)]
        return [SmAcked(session, 1 << 40, 0)]  # apply caps h at the outbox's last row

    def chat(self) -> list[Any] | None:
        if not self.session_list:
            return None
        session = self.rng.choice(self.session_list)
        sender, full, _ = self.session_of[session]
        contacts = self.contacts[sender]
        if not contacts:
            return None
        peer = self.rng.choice(contacts)
        n = self.next_id()
        targets = sorted(self.online[peer].values())
        carbons = sorted(f for s, f in self.online[sender].items() if s != session)
        sid = f"sid{n:010d}"
        recent = self.recent[sender]
        handled = self._handled(session)
        if recent and self.rng.random() < 0.12:
            marked = self.rng.choice(recent)
            xml = (
                f"<message from='{full}' to='{peer}' type='chat'>"
                f"<displayed xmlns='urn:xmpp:chat-markers:0' id='{marked}'/>"
                f"<stanza-id xmlns='urn:xmpp:sid:0' by='{peer}' id='{sid}'/></message>"
            )
            ev = MessageRouted(
                full, peer, "chat", xml, targets, offline_for=None if targets else peer,
                stanza_id=sid, archived_by=[sender, peer], sent_carbons=carbons,
                marker="displayed", marker_id=marked,
            )  # fmt: skip
            return [ev, *handled]
        words = BODY[: self.rng.randint(10, len(BODY))]
        xml = (
            f"<message from='{full}' to='{peer}' type='chat' id='m{n}'><body>{words}</body>"
            "<markable xmlns='urn:xmpp:chat-markers:0'/>"
            f"<stanza-id xmlns='urn:xmpp:sid:0' by='{peer}' id='{sid}'/></message>"
        )
        ev = MessageRouted(
            full, peer, "chat", xml, targets, offline_for=None if targets else peer,
            stanza_id=sid, archived_by=[sender, peer], origin_id=f"o{n}", sent_carbons=carbons,
            body=True, msg_id=f"m{n}",
        )  # fmt: skip
        got = self.recent[peer]
        got.append(f"m{n}")
        if len(got) > 20:
            del got[:10]
        return [ev, *handled]

    def _handled(self, session: str) -> list[Any]:
        """A managed session's stanza comes with its handled count (as the server logs it)."""
        if session not in self.managed or self.rng.random() < 0.7:
            return []
        self.managed[session] += 1
        return [SmHandled(session, self.managed[session], 0)]

    def groupchat(self) -> list[Any] | None:
        if not self.created_list:
            return None
        hot = self.created_list[:64] if self.rng.random() < 0.7 else self.created_list
        room = self.rng.choice(hot)
        if not self.occupants[room]:
            return None
        session = self.rng.choice(list(self.occupants[room]))
        nick = self.occupants[room][session]
        n = self.next_id()
        sid = f"rid{n:010d}"
        recent = self.room_recent[room]
        if recent and self.rng.random() < 0.05:
            xml = (
                f"<message from='{room}/{nick}' type='groupchat'>"
                f"<displayed xmlns='urn:xmpp:chat-markers:0' id='{self.rng.choice(recent)}'/>"
                f"<stanza-id xmlns='urn:xmpp:sid:0' by='{room}' id='{sid}'/></message>"
            )
            ev = MucMessageSent(room, session, nick, xml, sid, True, marker="displayed",
                                marker_id=self.rng.choice(recent))  # fmt: skip
            return [ev, *self._handled(session)]
        words = BODY[: self.rng.randint(10, len(BODY))]
        xml = (
            f"<message from='{room}/{nick}' type='groupchat' id='g{n}'><body>{words}</body>"
            f"<stanza-id xmlns='urn:xmpp:sid:0' by='{room}' id='{sid}'/></message>"
        )
        recent.append(sid)
        if len(recent) > 20:
            del recent[:10]
        ev = MucMessageSent(room, session, nick, xml, sid, True, body=True, msg_id=f"g{n}")
        return [ev, *self._handled(session)]

    def join_or_leave(self) -> list[Any] | None:
        if not self.session_list or not self.created:
            return None
        session = self.rng.choice(self.session_list)
        bare, full, _ = self.session_of[session]
        mine = self.occupying[session]
        if mine and self.rng.random() < 0.5:
            room = sorted(mine)[0]
            del mine[room]
            del self.occupants[room][session]
            return [MucOccupantLeft(room, session, "", "left")]
        room = self.rng.choice(self.created_list)
        if room in mine:
            return None
        nick = f"{bare.split('@')[0]}-{session}"
        mine[room] = nick
        self.occupants[room][session] = nick
        return [MucOccupantJoined(room, nick, full, session, "", {"maxstanzas": 0})]


ACTIONS: tuple[tuple[str, float], ...] = (
    ("chat", 0.50),
    ("groupchat", 0.25),
    ("status", 0.06),
    ("sm", 0.09),
    ("login", 0.03),
    ("logout_start", 0.03),
    ("join_or_leave", 0.02),
    ("register", 0.02),
)


def proposals(world: World, store: Any, events: int) -> Iterator[list[list[Any]]]:
    """Entries (lists of proposals) until ``events`` events have been proposed."""
    names = [a for a, _ in ACTIONS]
    weights = [w for _, w in ACTIONS]
    made = 0
    for _ in range(400):  # a population first: accounts, then people online
        entry = [p for p in (world.register() for _ in range(8)) if p]
        made += sum(map(len, entry))
        yield entry
    for _ in range(300):
        entry = [p for p in (world.login() for _ in range(4)) if p]
        made += sum(map(len, entry))
        yield entry
    while made < events:
        entry: list[list[Any]] = []
        if world.closing:
            with store.env.begin() as txn:
                for session in world.closing:
                    st = stream_mgmt.state(store, txn, session)
                    entry.append(world.logout_finish(session, st.next if st else None))
            world.closing.clear()
        size = world.rng.randint(32, 64)
        count = sum(map(len, entry))
        while count < size:
            action = world.rng.choices(names, weights)[0]
            proposal = getattr(world, action)()
            if proposal:
                entry.append(proposal)
                count += len(proposal)
        made += count
        yield entry


def generate(path: Path, events: int, seed: int) -> dict[str, Any]:
    """Write the journal by proposing through ``Projector.apply``; check every result."""
    if path.exists():
        shutil.rmtree(path)
    real_open = lmdb.open
    lmdb.open = lambda *a, **kw: real_open(*a, **{**kw, "sync": False})  # type: ignore[assignment]
    try:
        store = open_store(path, all_db_names(), writer=True)
    finally:
        lmdb.open = real_open  # type: ignore[assignment]
    projector = Projector(store)
    world = World(users=6000, rooms=400, rng=random.Random(seed))
    mix: Counter[str] = Counter()
    index = 0
    n = 0
    clock = T0
    started = time.perf_counter()
    boot = [[wrap(NodeStarted(node, f"{node}.boot", f"127.0.0.1:{7000 + i}"), id=f"b.{node}",
                  at=clock, origin=node).to_json()] for i, node in enumerate(NODES)]  # fmt: skip
    index += 1
    projector.apply(index, canonical_json(boot))
    for entry in proposals(world, store, events):
        if not entry:
            continue
        command = []
        for proposal in entry:
            envs = []
            for ev in proposal:
                n += 1
                clock += world.rng.randint(1, 12)
                envs.append(
                    wrap(ev, id=f"bench.{n}", at=clock, origin=world.rng.choice(NODES)).to_json()
                )
                mix[ev.TYPE] += 1
            command.append(envs)
        index += 1
        results = json.loads(projector.apply(index, canonical_json(command)))
        bad = [(p, r) for p, r in zip(command, results, strict=True) if not r["ok"]]
        if bad:
            raise SystemExit(f"entry {index}: refused {bad[0][1]} for {bad[0][0]}")
        if index % 2000 == 0:
            rate = n / (time.perf_counter() - started)
            print(f"  generated {n:,} events ({rate:,.0f}/s)", file=sys.stderr)
    store.env.sync(True)
    with store.env.begin() as txn:
        total = journal.count_events(store, txn)
    store.close()
    info = {
        "format": FORMAT,
        "events": total,
        "entries": index,
        "seed": seed,
        "mix": dict(mix.most_common()),
    }
    (path / "bench.json").write_text(json.dumps(info, indent=2))
    return info


def cached(directory: Path, events: int, seed: int) -> tuple[Path, dict[str, Any]]:
    path = directory / f"journal-{events}-{seed}"
    meta = path / "bench.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        if info.get("format") == FORMAT:
            return path, info
    print(f"generating {events:,} events in {path} (once)", file=sys.stderr)
    return path, generate(path, events, seed)


def rebuild_before(live: Any, target: Path) -> tuple[str, str, int, int]:
    """``projector.rebuild`` as it was before issue 17 (commit 8cb5d0b), for before/after runs
    on the same machine at the same time: a synced store, a commit every 10,000 events, each
    journal row decoded and encoded again."""
    fresh = open_store(target, all_db_names(), writer=True)
    try:
        projector = Projector(fresh)
        count = 0
        with live.env.begin() as rtxn:
            upto = journal.applied_index(live, rtxn)
            live_digest = digest(live, rtxn)
            wtxn = fresh.env.begin(write=True)
            for committed in journal.read_events(live, rtxn, 0, upto):
                projector.apply_committed(wtxn, committed, decode_event(committed.envelope))
                count += 1
                if count % 10000 == 0:
                    wtxn.commit()
                    wtxn = fresh.env.begin(write=True)
            wtxn.put(journal.APPLIED_KEY, u64(upto), db=fresh.db("meta"))
            projector._mark(wtxn, upto)
            wtxn.commit()
        with fresh.env.begin() as txn:
            rebuilt_digest = digest(fresh, txn)
        return rebuilt_digest, live_digest, upto, count
    finally:
        fresh.close()


def replay_now(live: Any, target: Path) -> tuple[str, str, int, int]:
    """What ``xes replay`` runs now (:func:`xes.projections.replay.replay_into`)."""
    done = replay_into(live, target)
    return done.digest, done.live_digest or "", done.index, done.events


RUNNERS: dict[str, Callable[[Any, Path], Any]] = {"before": rebuild_before, "after": replay_now}

TREE_RUN = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from xes.projections.projector import all_db_names, rebuild
from xes.store.env import open_store
live = open_store(Path(sys.argv[2]), all_db_names(), writer=False)
wall, cpu = time.perf_counter(), time.process_time()
rebuilt, current, upto, count = rebuild(live, Path(sys.argv[3]))
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"wall": wall, "cpu": cpu, "digest": rebuilt, "live": current, "events": count}))
"""


def tree_run(src: Path, live_path: Path) -> dict[str, Any]:
    """``xes replay``'s ``rebuild`` of the source tree ``src`` in a process of its own (so a
    tree checked out at an older commit runs its own projections, not ours)."""
    import subprocess

    target = Path(tempfile.mkdtemp(prefix="xes-replay-bench-", dir=live_path.parent))
    try:
        done = subprocess.run(
            [sys.executable, "-c", TREE_RUN, str(src), str(live_path), str(target / "db")],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        shutil.rmtree(target, ignore_errors=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "events": r["events"],
        "wall_s": round(r["wall"], 2),
        "cpu_s": round(r["cpu"], 2),
        "events_per_s_wall": round(r["events"] / r["wall"]),
        "events_per_s_cpu": round(r["events"] / r["cpu"]),
        "digest_equal": r["digest"] == r["live"],
        "digest": r["digest"],
    }


def timed_rebuild(live_path: Path, run: Callable[[Any, Path], Any]) -> dict[str, Any]:
    live = open_store(live_path, all_db_names(), writer=False)
    target = Path(tempfile.mkdtemp(prefix="xes-replay-bench-", dir=live_path.parent))
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        rebuilt, current, upto, count = run(live, target / "db")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = sum(f.stat().st_size for f in (target / "db").iterdir())
    finally:
        live.close()
        shutil.rmtree(target, ignore_errors=True)
    return {
        "events": count,
        "applied_index": upto,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "events_per_s_wall": round(count / wall),
        "events_per_s_cpu": round(count / cpu),
        "digest_equal": rebuilt == current,
        "digest": rebuilt,
        "store_mib": round(size / 2**20, 1),
    }


def _where(func: tuple[str, int, str]) -> str:
    return f"{func[0].split('/src/')[-1]}:{func[1]}({func[2]})"


def breakdown(live_path: Path, run: Callable[[Any, Path], Any], top: int) -> dict[str, Any]:
    """A second run with a timer around each projection's ``apply`` and a cProfile."""
    from xes.projections.base import Projection

    per_proj: Counter[str] = Counter()
    per_type: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    """Events per type (counted once, however many projections fold them)."""
    seen: set[tuple[int, int]] = set()
    real_apply = Projection.apply

    def timed(self: Projection, txn: Any, committed: Any, event: Any) -> None:
        t = time.perf_counter()
        real_apply(self, txn, committed, event)
        spent = time.perf_counter() - t
        per_proj[self.name] += spent
        per_type[committed.envelope.type] += spent
        if (committed.index, committed.pos) not in seen:
            seen.add((committed.index, committed.pos))
            calls[committed.envelope.type] += 1

    Projection.apply = timed  # type: ignore[method-assign]
    try:
        profile = cProfile.Profile()
        profile.enable()
        result = timed_rebuild(live_path, run)
        profile.disable()
    finally:
        Projection.apply = real_apply  # type: ignore[method-assign]
    stats = pstats.Stats(profile)
    stats.sort_stats("cumulative")
    rows = []
    for func, (_, nc, tt, ct, _) in sorted(stats.stats.items(), key=lambda kv: -kv[1][3])[:top]:  # type: ignore[attr-defined]
        rows.append(f"{ct:8.2f} cum {tt:8.2f} own {nc:>10,} calls  {_where(func)}")
    own = []
    for func, (_, nc, tt, ct, _) in sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]:  # type: ignore[attr-defined]
        own.append(f"{tt:8.2f} own {ct:8.2f} cum {nc:>10,} calls  {_where(func)}")
    return {
        "profiled_wall_s": result["wall_s"],
        "projection_s": {k: round(v, 2) for k, v in per_proj.most_common()},
        "event_type_s": {k: round(v, 2) for k, v in per_type.most_common()},
        "event_type_us_per_event": {
            k: round(per_type[k] / calls[k] * 1e6, 1) for k, _ in per_type.most_common()
        },
        "cumulative": rows,
        "own_time": own,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=17)
    default_dir = Path(tempfile.gettempdir()) / "xes-replay-bench"
    parser.add_argument("--dir", type=Path, default=default_dir, help="journal cache")
    parser.add_argument("--runs", type=int, default=1, help="timed runs of each runner")
    parser.add_argument(
        "--runner",
        action="append",
        choices=sorted(RUNNERS),
        help="before (the replay of 8cb5d0b), after (now); default both, interleaved",
    )
    parser.add_argument(
        "--tree",
        action="append",
        type=Path,
        default=[],
        help="instead of the runners: the src/ directory of a checkout to time, in a process "
        "of its own (twice: before and after, interleaved)",
    )
    parser.add_argument("--profile", action="store_true", help="a profiled run of each runner")
    parser.add_argument("--top", type=int, default=25, help="profile rows")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path, info = cached(args.dir, args.events, args.seed)
    with (live := open_store(path, all_db_names(), writer=False)).env.begin() as txn:
        live_digest = digest(live, txn)
    live.close()
    runners = {name: RUNNERS[name] for name in args.runner or ["before", "after"]}
    out: dict[str, Any] = {
        "journal": {k: v for k, v in info.items() if k != "format"},
        "live_digest": live_digest,
        "runs": [],
    }
    for r in range(args.runs if args.tree else 0):
        trees = args.tree if r % 2 == 0 else args.tree[::-1]
        for tree in trees:
            result = tree_run(tree, path)
            result["digest_equal_live"] = result.pop("digest") == live_digest
            out["runs"].append({"tree": str(tree), **result})
            wall, cpu = result["events_per_s_wall"], result["events_per_s_cpu"]
            print(f"  {tree}: {wall:,} events/s wall, {cpu:,} CPU", file=sys.stderr)
    for r in range(0 if args.tree else args.runs):
        order = list(runners.items())
        if r % 2:
            order.reverse()  # neither always goes first
        for name, run in order:
            result = timed_rebuild(path, run)
            result["digest_equal_live"] = result.pop("digest") == live_digest
            out["runs"].append({"runner": name, **result})
            wall, cpu = result["events_per_s_wall"], result["events_per_s_cpu"]
            print(f"  {name}: {wall:,} events/s wall, {cpu:,} CPU", file=sys.stderr)
    if args.profile:
        for name, run in runners.items():
            out[f"profile {name}"] = breakdown(path, run, args.top)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
