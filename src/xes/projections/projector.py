"""The projector: applies committed log entries to the journal and every projection.

It is the Raft state machine (see :mod:`xes.eventlog.raft`) and the only LMDB writer. One log entry
carries a batch of proposals (group commit); each proposal is a list of envelopes that stand or
fall together. For each entry, in one write transaction, the projector:

1. skips the entry if its index is at or below ``applied_index`` (the Raft journal is replayed
   from the last snapshot after a restart);
2. per proposal, in a nested transaction: recognises retried event ids (deduplication), checks
   ``expected_version``, appends accepted events to the journal, bumps stream versions and folds
   the events into the projections; a refused or failing proposal is rolled back and journalled as
   rejected, with its reason;
3. records ``applied_index`` in the same transaction, so state and position never disagree.

``apply`` never raises: an exception inside PySyncObj's apply wedges every replica (ADR 0004).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import structlog

from xes.audit import chain
from xes.events import (
    Committed,
    Envelope,
    NewerEvent,
    UnknownEvent,
    canonical_json,
    decode_event,
)
from xes.projections.account_data import AccountData
from xes.projections.accounts import Accounts
from xes.projections.archive import Archive
from xes.projections.audit import Audit
from xes.projections.base import Projection, Rejected
from xes.projections.blocking import Blocking
from xes.projections.cluster_features import ClusterFeatures
from xes.projections.components import Components
from xes.projections.holds import Holds
from xes.projections.inbox import Inbox
from xes.projections.marker_targets import MarkerTargets
from xes.projections.muc import Muc
from xes.projections.offline import Offline
from xes.projections.pep import Pep
from xes.projections.push import Push
from xes.projections.read_status import ReadStatus
from xes.projections.roster import Roster
from xes.projections.sessions import Sessions
from xes.projections.stream_mgmt import StreamManagement
from xes.projections.uploads import Uploads
from xes.store import journal
from xes.store.env import (
    MAX_DBS,
    StorageFailed,
    Store,
    from_u64,
    is_storage_error,
    open_store,
    u64,
)

log = structlog.get_logger("xes.projector")

PROJECTIONS: tuple[type[Projection], ...] = (
    Accounts,
    Roster,
    StreamManagement,
    Muc,
    Pep,
    AccountData,
    Blocking,
    Sessions,
    Offline,
    Holds,
    Archive,
    Inbox,
    Push,
    Uploads,
    ReadStatus,
    Components,
    ClusterFeatures,
    Audit,
    MarkerTargets,
)
"""In apply order: ``sm`` reads a replaced session before ``sessions`` forgets it, and offline
messages a flush delivers before ``offline`` drops them; ``muc`` sees the sessions a new boot
ends before ``sessions`` forgets them (it refuses to let an occupant's session end); ``inbox``
reads the room a message was sent to, as ``muc`` left it, ``push`` reads the inbox's mutes, and
``read_status`` folds room messages after ``muc`` has accepted them; ``marker_targets`` comes
after both readers of it, so a marker resolves against the messages before its own event;
``holds`` folds a lifted hold before ``archive`` re-files what it kept. ``audit``
owns the hash chain (ADR 0021), which :meth:`Projector.apply_committed` extends for every
event."""
STREAMS = "streams.version"
"""Per-stream version counters (part of the replicated state, covered by the digest)."""
BUILT = "projector.built"
"""What the projections in this environment were built by (not covered by the digest):
``projections`` -> {name: version} of the build that last applied, ``applied`` -> the applied
index it reached. A release that adds or changes a projection, a snapshot or data directory
from an older build (which knows neither key nor sub-database), any mismatch: the projections
are rebuilt from the journal (ADR 0022)."""
_BUILT_PROJECTIONS, _BUILT_APPLIED = b"projections", b"applied"


def all_db_names() -> list[str]:
    names = [*journal.DBS, STREAMS, BUILT]
    for proj in PROJECTIONS:
        names.extend(proj.dbs)
    return names


def projection_db_names() -> list[str]:
    """Sub-databases rebuilt by replay and covered by the state digest."""
    names = [STREAMS]
    for proj in PROJECTIONS:
        names.extend(proj.dbs)
    return sorted(names)


class Projector:
    """Applies log entries to an LMDB store. Used by the log process and by ``xes replay``."""

    def __init__(
        self,
        store: Store,
        on_applied: Callable[[int], None] | None = None,
        *,
        replay: bool = False,
    ) -> None:
        self.store = store
        self.projections = [proj(store) for proj in PROJECTIONS]
        for proj in self.projections:
            proj.replay = replay
        self.routes: dict[str, list[Projection]] = {}
        for proj in self.projections:
            for type_name in proj.handles:
                self.routes.setdefault(type_name, []).append(proj)
        self.on_applied = on_applied
        self.built = canonical_json({p.name: p.version for p in self.projections})
        """What :data:`BUILT` must say for these projections to be current."""
        with store.env.begin(write=True) as txn:
            self._applied = journal.applied_index(store, txn)
            self._built_ok = txn.get(_BUILT_PROJECTIONS, db=store.db(BUILT)) == self.built
            chained = chain.catch_up(store, txn)  # a journal older than the chain (ADR 0021)
        if chained:
            log.info("audit_chain_caught_up", events=chained)

    # -- upgrades (ADR 0022) ------------------------------------------------------------------

    def is_current(self, txn: lmdb.Transaction) -> bool:
        """The projections were built by these projections up to the applied index."""
        applied = journal.applied_index(self.store, txn)
        if applied == 0:
            return True  # nothing applied yet: nothing to rebuild
        db = self.store.db(BUILT)
        at = txn.get(_BUILT_APPLIED, db=db)
        return (
            txn.get(_BUILT_PROJECTIONS, db=db) == self.built
            and at is not None
            and from_u64(at) == applied
        )

    def catch_up(self) -> int | None:
        """At start, before Raft: rebuild every projection from the journal unless they are
        current (:data:`BUILT`). Returns the events replayed, or None when nothing was stale.

        A release adding a projection (or bumping one's ``version``) finds a data directory
        whose projections miss what was committed before it ran; without this its projections
        would differ from a replay, and from a node whose data directory started under it."""
        with self.store.env.begin() as txn:
            if self.is_current(txn):
                return None
        return self.rebuild_in_place()

    def rebuild_in_place(self) -> int:
        """Empty every projection and fold the whole journal again, in one write transaction
        (a crash half-way leaves the old state and the stale marker: it starts over)."""
        count = 0
        with self.store.env.begin(write=True) as txn:
            applied = journal.applied_index(self.store, txn)
            log.warning("projections_rebuilding", applied_index=applied)
            for name in projection_db_names():
                txn.drop(self.store.db(name), delete=False)
            for key, row in journal.read_rows(self.store, txn, 0, applied):
                committed = Committed.decode(row)
                self._fold(txn, committed, decode_event(committed.envelope), key, row)
                count += 1
            self._built_ok = False
            self._mark(txn, applied)
        log.warning("projections_rebuilt", applied_index=applied, events=count)
        return count

    def _mark(self, txn: lmdb.Transaction, index: int) -> None:
        db = self.store.db(BUILT)
        if not self._built_ok:  # the set of projections is written once, the index per entry
            txn.put(_BUILT_PROJECTIONS, self.built, db=db)
            self._built_ok = True
        txn.put(_BUILT_APPLIED, u64(index), db=db)

    # -- StateMachine protocol (xes.eventlog.raft) ------------------------------------------

    def last_applied(self) -> int:
        return self._applied

    def apply(self, index: int, command: bytes) -> bytes:
        if index <= self._applied:
            return b"[]"
        try:
            results = self._apply_entry(index, command)
        except NewerEvent:
            raise  # this node must stop before this entry: see NewerEvent
        except Exception as exc:
            if is_storage_error(exc):
                # Nothing of the entry was written (the transaction failed as a whole): stop
                # before it, as for NewerEvent, rather than diverge from the other nodes.
                raise StorageFailed(index, exc) from exc
            log.error("apply_failed", index=index, error=repr(exc))
            results = self._record_failed_entry(index, command, repr(exc))
        self._applied = index
        if self.on_applied is not None:
            self.on_applied(index)
        return results

    def snapshot(self, path: Path) -> None:
        """A consistent copy of the whole environment (journal included), for Raft snapshots."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        self.store.env.copy(str(tmp), compact=True)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)

    def restore(self, path: Path) -> None:
        """Install a snapshot taken by another node, if it is ahead of what we have.

        The journal travels inside the snapshot, so the permanent history stays complete.
        """
        snap = open_store(path, [], writer=False)
        try:
            with snap.env.begin() as txn:
                raw = txn.get(journal.APPLIED_KEY, db=snap.env.open_db(b"meta", txn=txn))
                snap_index = from_u64(raw) if raw else 0
        finally:
            snap.close()
        if snap_index <= self._applied:
            return
        # Copy every sub-database over inside one write transaction of our own environment, so
        # readers in the XMPP process (which keep their mapping) see a consistent switch.
        src = lmdb.open(str(path), readonly=True, max_dbs=MAX_DBS, lock=False)
        try:
            with src.begin() as rtxn, self.store.env.begin(write=True) as wtxn:
                for name in all_db_names():
                    ddb = self.store.db(name)
                    wtxn.drop(ddb, delete=False)
                    try:
                        sdb = src.open_db(name.encode(), txn=rtxn, create=False)
                    except lmdb.NotFoundError:
                        # A snapshot from an older build (a mixed cluster during a rolling
                        # upgrade) lacks what it had no projection for: left empty here, and
                        # the marker it lacks too makes us rebuild below.
                        continue
                    for k, v in rtxn.cursor(db=sdb):
                        wtxn.put(k, v, db=ddb)
                chain.catch_up(self.store, wtxn)
        finally:
            src.close()
        with self.store.env.begin() as txn:
            current = self.is_current(txn)
        if not current:
            self.rebuild_in_place()
        self._applied = snap_index
        if self.on_applied is not None:
            self.on_applied(snap_index)

    # -- applying ----------------------------------------------------------------------------

    def _apply_entry(self, index: int, command: bytes) -> bytes:
        proposals = json.loads(command)
        results: list[dict[str, Any]] = []
        pos = 0
        with self.store.env.begin(write=True) as txn:
            for proposal in proposals:
                envelopes = [Envelope.from_json(obj) for obj in proposal]
                first_pos = pos
                pos += len(envelopes)
                child = self.store.env.begin(write=True, parent=txn)
                try:
                    placed = self._apply_proposal(child, index, first_pos, envelopes)
                except Rejected as exc:
                    child.abort()
                    self._journal_rejected(txn, index, first_pos, proposal, exc.reason)
                    results.append({"ok": False, "reason": exc.reason})
                except NewerEvent:
                    child.abort()
                    raise
                except Exception as exc:
                    child.abort()
                    if is_storage_error(exc):
                        raise  # this node's disk, not the proposal: see StorageFailed
                    log.error("proposal_failed", index=index, pos=first_pos, error=repr(exc))
                    self._journal_rejected(txn, index, first_pos, proposal, "internal-error")
                    results.append({"ok": False, "reason": "internal-error"})
                else:
                    child.commit()
                    results.append({"ok": True, "events": placed})
            txn.put(journal.APPLIED_KEY, u64(index), db=self.store.db("meta"))
            self._mark(txn, index)
        return canonical_json(results)

    def _apply_proposal(
        self, txn: lmdb.Transaction, index: int, first_pos: int, envelopes: list[Envelope]
    ) -> list[list[int]]:
        ids_db = self.store.db("journal.ids")
        # A retried proposal (unknown outcome the first time) is recognised by its event ids and
        # answered with the original placement instead of being applied twice.
        first = txn.get(envelopes[0].id.encode(), db=ids_db) if envelopes else None
        if first is not None:
            placed = []
            for env in envelopes:
                raw = txn.get(env.id.encode(), db=ids_db)
                if raw is None:
                    raise Rejected("partial-duplicate")
                old = Committed.decode(txn.get(raw, db=self.store.db("journal.events")))
                placed.append([old.index, old.pos, old.version])
            return placed
        placed = []
        for offset, env in enumerate(envelopes):
            try:
                event = decode_event(env)
            except NewerEvent:
                raise
            except UnknownEvent as exc:
                raise Rejected(f"unknown-event: {exc}") from exc
            if txn.get(env.id.encode(), db=ids_db) is not None:
                raise Rejected("duplicate-id")
            current = stream_version(self.store, txn, env.stream)
            if env.expected_version is not None and env.expected_version != current:
                raise Rejected(f"conflict: {env.stream} is at {current}")
            committed = Committed(index, first_pos + offset, current + 1, env)
            self.apply_committed(txn, committed, event)
            txn.put(env.id.encode(), journal.event_key(index, committed.pos), db=ids_db)
            placed.append([index, committed.pos, committed.version])
        return placed

    def apply_committed(
        self, txn: lmdb.Transaction, committed: Committed, event: Any, row: bytes | None = None
    ) -> None:
        """Journal one accepted event and fold it into every projection (also used by replay,
        which passes the journal ``row`` it read, ``committed`` encoded, to save re-encoding)."""
        key = journal.event_key(committed.index, committed.pos)
        row = committed.encode() if row is None else row
        txn.put(key, row, db=self.store.db("journal.events"))
        self._fold(txn, committed, event, key, row)

    def _fold(
        self, txn: lmdb.Transaction, committed: Committed, event: Any, key: bytes, row: bytes
    ) -> None:
        """The replicated state an accepted event changes: the hash chain over its journal row
        ``row`` at ``key`` (ADR 0021), its stream version, the projections."""
        chain.append(self.store, txn, key, row)  # the same bytes, hashed
        txn.put(
            committed.envelope.stream.encode(), u64(committed.version), db=self.store.db(STREAMS)
        )
        for proj in self.routes.get(committed.envelope.type, ()):
            proj.apply(txn, committed, event)

    def _journal_rejected(
        self, txn: lmdb.Transaction, index: int, pos: int, proposal: Any, reason: str
    ) -> None:
        row = canonical_json({"index": index, "pos": pos, "reason": reason, "events": proposal})
        txn.put(journal.event_key(index, pos), row, db=self.store.db("journal.rejected"))

    def _record_failed_entry(self, index: int, command: bytes, error: str) -> bytes:
        """The entry could not even be parsed: journal it raw as rejected and move on."""
        try:
            with self.store.env.begin(write=True) as txn:
                row = canonical_json(
                    {
                        "index": index,
                        "pos": 0,
                        "reason": "bad-entry",
                        "error": error,
                        "raw": command[:4096].decode("utf-8", "replace"),
                    }
                )
                txn.put(journal.event_key(index, 0), row, db=self.store.db("journal.rejected"))
                txn.put(journal.APPLIED_KEY, u64(index), db=self.store.db("meta"))
                self._mark(txn, index)
        except Exception as exc:
            log.error("journal_rejected_failed", index=index, error=repr(exc))
        return canonical_json([{"ok": False, "reason": "bad-entry"}])


def stream_version(store: Store, txn: lmdb.Transaction, stream: str) -> int:
    """Current version of ``stream`` (0 before its first event): what ``expected_version``
    is checked against."""
    raw = txn.get(stream.encode(), db=store.db(STREAMS))
    return from_u64(raw) if raw else 0


def digest(store: Store, txn: lmdb.Transaction) -> str:
    """SHA-256 over every projection sub-database, in name and key order."""
    h = hashlib.sha256()
    for name in projection_db_names():
        h.update(b"db\x00" + name.encode() + b"\x00")
        for k, v in txn.cursor(db=store.db(name)):
            h.update(len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v)
    return h.hexdigest()


def rebuild(live: Store, target: Path) -> tuple[str, str, int, int]:
    """Replay the live journal into a fresh store at ``target`` (:mod:`xes.projections.replay`).

    Returns ``(rebuilt_digest, live_digest, applied_index, events)``, both digests taken at the
    same applied index (one read snapshot of the live store).
    """
    from xes.projections.replay import replay_into  # it builds on this module

    done = replay_into(live, target)
    assert done.live_digest is not None  # a full replay
    return done.digest, done.live_digest, done.index, done.events
