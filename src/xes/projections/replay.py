"""Replay: rebuild every projection from the journal into a fresh store, whole or up to a point.

Auditors ask what the server knew at a past moment (issue 17: "who was in this room at 14:02").
The journal keeps every accepted event in log order, and every projection is a deterministic
fold of it (ADR 0003), so folding a prefix of the journal into an empty store gives the state
exactly as it was once that prefix was applied: the same on every node for the same log index.

Where the prefix ends (:func:`resolve_until`):

* a **log index** N: every entry up to and including N (entries are applied whole, so a prefix
  never splits one);
* a **time** T (ISO 8601, or milliseconds since the epoch): the envelope's ``at`` is the
  proposer's clock, not the commit's, and nodes' clocks differ, so ``at`` is not monotonic in
  log order. The prefix ends before the first entry holding an event stamped after T, i.e. at
  the last index whose running maximum of ``at`` is at most T. Everything in it was proposed at
  or before T by its proposer's clock, and the state is one that really existed (a log prefix);
  an event proposed before T but committed after a later-stamped one is left out with it.

Speed (an auditor waits for it; ``docs/benchmarks.md``, "Replay"): the target directory is new,
so nothing in it needs to survive a crash before the end: it is written without fsync and synced
once; journal rows are copied as stored instead of
re-encoded. What the projections compute is unchanged (``tests/unit/projections/test_replay.py``
checks the digest against the plain fold).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lmdb

from xes.events import Committed, decode_event
from xes.projections.projector import Projector, all_db_names, digest
from xes.store import journal
from xes.store.env import Store, from_u64, open_store, u64

TXN_EVENTS = 10_000
"""Events per write transaction of the fresh store. Without fsync a commit costs little;
200,000 was not faster on the 150,000-event journal (``docs/benchmarks.md``, "Replay"), and
a smaller transaction holds fewer dirty pages in memory."""
MS_FROM = 100_000_000_000
"""An integer ``--until`` at or above this is milliseconds since the epoch (1973-03-03 on);
below it, a log index (a cluster committing 1,000 entries a second reaches it in 3 years)."""
PROGRESS_EVERY = 1_000
"""Events between two calls of a replay's ``progress`` callback (half a second of replay)."""

Progress = Callable[[int, int, int], None]
"""``progress(events folded, log index reached, last index to fold)``: how far a replay is, for
a command that tells its user while it waits (``xes audit room|user``)."""


class ReplayError(Exception):
    """A point that cannot be replayed to (beyond the journal, before its first event)."""


@dataclass(frozen=True, slots=True)
class Point:
    """Where a point-in-time replay stops, and how it was asked for."""

    index: int
    """Last log index folded (entries up to and including it)."""
    asked: str
    """The ``--until`` value as given."""
    at: int | None
    """For a time: that time in ms since the epoch; None for an index."""


@dataclass(frozen=True, slots=True)
class Replayed:
    """The outcome of a replay."""

    index: int
    """Last log index folded (the store's ``applied_index``)."""
    events: int
    """Events folded."""
    digest: str
    """Digest of the rebuilt projections (:func:`xes.projections.projector.digest`)."""
    live_digest: str | None
    """The live store's digest at the same index, for a full replay; None for a point in time
    (the live store is past it)."""
    last_at: int | None
    """The largest envelope ``at`` among the events folded."""


def parse_until(value: str) -> tuple[str, int]:
    """``("index", n)`` or ``("at", ms)`` for an ``--until`` value (see :data:`MS_FROM`)."""
    raw = value.strip()
    if raw.isdigit():
        n = int(raw)
        return ("at", n) if n >= MS_FROM else ("index", n)
    try:
        when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(
            f"{value!r} is neither a log index, milliseconds since the epoch nor an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)  # a time without an offset is UTC
    return "at", int(when.timestamp() * 1000)


def resolve_until(live: Store, txn: lmdb.Transaction, value: str) -> Point:
    """The log index an ``--until`` value names in ``live``'s journal (module docstring)."""
    kind, n = parse_until(value)
    applied = journal.applied_index(live, txn)
    if kind == "index":
        if n > applied:
            raise ReplayError(f"index {n} is beyond the journal (applied index {applied})")
        return Point(n, value, None)
    for key, row in txn.cursor(db=live.db("journal.events")):
        if _at_of(row) > n:
            upto = from_u64(key[:8]) - 1  # the entry holding the first later event: left out
            break
    else:
        upto = applied  # nothing is stamped later than T: the whole journal
    if upto == 0:
        raise ReplayError(f"no event is stamped at or before {value}")
    return Point(upto, value, n)


def _at_of(row: bytes) -> int:
    """The envelope's ``at`` from a journal row without decoding all of it: rows are canonical
    JSON of ``{"event": {..., "at": N, ...}, "index", "pos", "version"}`` and ``"at"`` is the
    first key of the event (sorted keys); ``data`` comes after it."""
    start = bytes(row[:48])  # rows may be buffers; the stamp has at most 16 digits
    head = b'{"event":{"at":'
    end = start.find(b",", len(head))
    if start.startswith(head) and end > 0:
        return int(start[len(head) : end])
    return int(json.loads(bytes(row))["event"]["at"])


def open_fresh(path: Path) -> Store:
    """A new store for replay: no fsync per commit (nothing in it matters before the end,
    when :func:`replay_into` syncs it once). No write map: it made no measurable difference
    and sizes the file to the whole map (64 GiB, sparse), which an auditor would copy."""
    return open_store(path, all_db_names(), writer=True, durable=False)


def replay_into(
    live: Store, target: Path, until: str | None = None, progress: Progress | None = None
) -> Replayed:
    """Fold ``live``'s journal, whole or up to ``until`` (:func:`resolve_until`), into a new
    store at ``target``. The whole journal is read in one read snapshot of ``live``;
    ``progress`` is called every :data:`PROGRESS_EVERY` events."""
    fresh = open_fresh(target)
    try:
        with live.env.begin(buffers=True) as rtxn:
            if until is None:
                upto = journal.applied_index(live, rtxn)
                live_digest: str | None = digest(live, rtxn)
            else:
                upto, live_digest = resolve_until(live, rtxn, until).index, None
            count, last_at = fold(live, rtxn, fresh, upto, progress)
        fresh.env.sync(True)
        with fresh.env.begin() as txn:
            rebuilt = digest(fresh, txn)
        return Replayed(upto, count, rebuilt, live_digest, last_at)
    finally:
        fresh.close()


def fold(
    live: Store,
    rtxn: lmdb.Transaction,
    fresh: Store,
    upto: int,
    progress: Progress | None = None,
) -> tuple[int, int | None]:
    """Every journal event with index ``<= upto`` into ``fresh``'s projections (and its journal),
    then its ``applied_index``. Returns the events folded and their largest ``at``."""
    projector = Projector(fresh, replay=True)  # premises are recorded, not raised (ADR 0021)
    count, last_at = 0, None
    wtxn = fresh.env.begin(write=True)
    try:
        cur = rtxn.cursor(db=live.db("journal.events"))
        for key, value in cur:
            if from_u64(key[:8]) > upto:
                break
            row = bytes(value)
            committed = Committed.decode(row)
            projector.apply_committed(wtxn, committed, decode_event(committed.envelope), row=row)
            at = committed.envelope.at
            last_at = at if last_at is None or at > last_at else last_at
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(count, committed.index, upto)
            if count % TXN_EVENTS == 0:
                wtxn.commit()
                wtxn = fresh.env.begin(write=True)
        wtxn.put(journal.APPLIED_KEY, u64(upto), db=fresh.db("meta"))
        projector._mark(wtxn, upto)
        wtxn.commit()
    except BaseException:
        wtxn.abort()
        raise
    return count, last_at
