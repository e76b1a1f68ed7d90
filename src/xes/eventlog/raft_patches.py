"""Fixes for defects of the pinned pysyncobj 0.3.17 (ADR 0004); used only by `xes.eventlog.raft`.

Each fix is small and sits next to the reason it exists; `tests/unit/eventlog/` has a test per
defect that shows it with the fix switched off and gone with the fix on. Nothing here knows about
xes events: it is about pysyncobj's wire format, journal durability and replication bookkeeping.

* `install()` switches `pysyncobj.pickle` from protocol 2 to 5 (defect 4) and makes SyncObj open
  `DurableFileJournal` instead of its `FileJournal` (defect 2). Both are process-wide; xes is the
  only pysyncobj user in the log process and every node runs this code.
* `next_index_after_reply()` is the leader's bookkeeping for a follower's `next_node_idx` reply,
  with the fixes for defects 1 (nextIndex moved backwards on every success) and 8 (a stale
  "reset" reply undoing a newer one, so a deposed leader never catches up).

Defect numbers are those of the measured notes (ADR 0004); 12 was found while testing this
adapter. The fixes that need SyncObj's private state live in `xes.eventlog.raft._Node`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pysyncobj.pickle
import pysyncobj.syncobj
import structlog
from pysyncobj.journal import FileJournal, MemoryJournal, MetaStorer

#: All nodes run xes, so nothing needs protocol 2; 5 stores `bytes` as-is (2 inflates them ~1.6x
#: on disk and on the wire and pickles ~18x slower).
PICKLE_PROTOCOL = 5

_journal_options = threading.local()


@dataclass(frozen=True)
class Fixes:
    """Switches for the fixes that are per node rather than process-wide.

    Production uses the defaults (all on). Tests turn one off to show the defect it fixes is
    still present in the pinned pysyncobj; when such a test starts failing, upstream fixed it.
    """

    #: Defect 1: a success reply never moves the leader's nextIndex backwards.
    monotonic_next_index: bool = True
    #: Defect 8: a "reset" reply may only move the leader's nextIndex backwards.
    reset_only_backwards: bool = True
    #: Defect 5: an exception raised by StateMachine.apply is caught and the entry is consumed.
    guard_apply: bool = True
    #: Defect 3: appendEntriesBatchSizeBytes well above the largest command (no chunked path).
    large_batches: bool = True
    #: Defect 12: a follower's commit index only advances over a log matched with the leader's,
    #: not on snapshot messages (else a deposed leader applies its own uncommitted entries).
    snapshot_commit_guard: bool = True


#: Production: every fix on.
ALL_FIXES = Fixes()


def install() -> None:
    """Apply the process-wide patches; idempotent.

    `pysyncobj.pickle` keeps its protocol in a module global named `__protocol` (module level,
    so not name-mangled); `dumps`/`dump` read it on every call. `SyncObj.__init__` creates its
    journal through the `createJournal` name imported into `pysyncobj.syncobj`.
    """
    setattr(pysyncobj.pickle, "__protocol", PICKLE_PROTOCOL)
    pysyncobj.syncobj.createJournal = create_journal  # type: ignore[attr-defined]


def pickle_protocol() -> int:
    """The protocol pysyncobj currently pickles commands, journal meta and messages with."""
    return int(getattr(pysyncobj.pickle, "__protocol"))


@contextlib.contextmanager
def journal_options(*, fsync: bool) -> Iterator[None]:
    """Options for journals created by `SyncObj.__init__` on this thread inside the block.

    `createJournal(path)` takes no options and is called deep inside `SyncObj.__init__`, on the
    constructing thread, so a thread-local is the narrowest way to pass `fsync` through.
    """
    previous = getattr(_journal_options, "fsync", None)
    _journal_options.fsync = fsync
    try:
        yield
    finally:
        _journal_options.fsync = previous


def create_journal(journalFile: str | None = None) -> MemoryJournal | DurableFileJournal:
    """Drop-in for `pysyncobj.journal.createJournal` that returns a `DurableFileJournal`."""
    if journalFile is None:
        return MemoryJournal()
    fsync = getattr(_journal_options, "fsync", None)
    return DurableFileJournal(journalFile, fsync=True if fsync is None else fsync)


def fsync_dir(path: str) -> None:
    """fsync a directory, so that a rename or a file creation in it survives a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableMetaStorer(MetaStorer):
    """pysyncobj's term/vote/commit-index file, written with fsync (defect 2).

    Raft needs currentTerm and votedFor on stable storage before a vote leaves the node;
    `MetaStorer.storeMeta` only flushes Python's buffer and renames.
    """

    def __init__(self, path: str, *, fsync: bool) -> None:
        super().__init__(path)
        self._fsync = fsync

    def storeMeta(self, meta: dict[str, object]) -> None:
        path = self.getPath()
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(pysyncobj.pickle.dumps(meta))
            f.flush()
            if self._fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self._fsync:
            fsync_dir(os.path.dirname(path) or ".")


RECORD_OVERHEAD = 24
"""Bytes pysyncobj's journal adds to a command: length, index, term, length again."""
EXIT_STORAGE = 74
"""Exit status of a log process whose disk cannot take what it must store (EX_IOERR)."""


class DurableFileJournal(FileJournal):
    """pysyncobj's mmap journal, flushed to disk before anything depends on it (defect 2).

    `FileJournal` writes into an mmap it never flushes (upstream issue #84): `kill -9` loses
    nothing, a power loss can lose acknowledged entries. Flushing on every `add` would cost one
    msync per entry, so `add` only marks the journal dirty and the owner calls `sync()` before
    each message leaves the node (a follower's ack, a leader's append) and at the start of each
    tick (a leader counts its own copy towards the commit). That is one msync per message, which
    is group commit for free.
    """

    def __init__(self, journalFile: str, *, fsync: bool) -> None:
        existed = os.path.exists(journalFile)
        super().__init__(journalFile)
        self._fsync = fsync
        self._dirty = False
        self._dir = os.path.dirname(journalFile) or "."
        #: Entries removed from the tail by a leader's conflicting append (follower side). In a
        #: healthy cluster this stays 0; defect 1 made it grow with every pipelined append.
        self.truncated_entries = 0
        # FileJournal opened its meta storer already (and read the meta); swap in ours.
        self._FileJournal__metaStorer = DurableMetaStorer(journalFile + ".meta", fsync=fsync)
        if fsync and not existed:
            self.flush()
            fsync_dir(self._dir)

    @property
    def size_bytes(self) -> int:
        """Bytes of the journal file in use (its offsets are 32-bit: keep it well below 4 GiB)."""
        return int(self._FileJournal__currentOffset)

    @property
    def dirty(self) -> bool:
        """True while entries were written that are not yet flushed."""
        return self._dirty

    def add(self, command: bytes, idx: int, term: int) -> None:
        self._reserve(len(command) + RECORD_OVERHEAD)
        super().add(command, idx, term)
        self._dirty = True

    def _reserve(self, size: int) -> None:
        """Allocate the file's blocks before pysyncobj writes a record into its mmap.

        `ResizableFile.write` grows the file with `mmap.resize` (a sparse file) and writes into
        the mapping: on a full disk that write faults and the kernel sends SIGBUS, so the log
        process dies without a word (fault campaign, `disk_full`). Reserved first, a full disk
        is ENOSPC here and the node stops with a line saying so; the entry, not acknowledged
        by this node, is applied at its next start.
        """
        rfile = self._FileJournal__journalFile
        mapped = rfile._ResizableFile__mm.size()
        end = int(self._FileJournal__currentOffset) + size
        if end <= mapped:
            return
        grown = max(int(mapped * 2.0), end)  # ResizableFile's own growth (resizeFactor 2)
        try:
            os.posix_fallocate(rfile._ResizableFile__f.fileno(), mapped, grown - mapped)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                return  # a filesystem without fallocate: pysyncobj grows the file as before
            structlog.get_logger("xes.raft").critical(
                "storage_failed",
                journal=rfile._ResizableFile__fileName,
                error=str(exc),
                action="free space in data_dir (or fix the disk) and start the node again",
            )
            os._exit(EXIT_STORAGE)
        # The file is `grown` bytes now (fallocate extends it), and ResizableFile takes the
        # file's size for the mapping's: map the new blocks too.
        try:
            rfile._ResizableFile__mm.resize(grown)
        except (SystemError, OSError):
            rfile._ResizableFile__extand(0)  # its own fallback: reopen and map the whole file

    def clear(self) -> None:
        super().clear()
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        self.truncated_entries += max(0, len(self) - entryFrom)
        super().deleteEntriesFrom(entryFrom)
        self._dirty = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        # Called right after a new full dump was renamed into place: make the rename durable
        # before the journal stops holding the entries the dump replaces.
        if self._fsync:
            fsync_dir(self._dir)
        super().deleteEntriesTo(entryTo)
        self._dirty = True

    def sync(self) -> None:
        """msync the journal if anything was written since the last sync."""
        if self._dirty:
            if self._fsync:
                self.flush()
            self._dirty = False


def next_index_after_reply(
    next_index: int,
    match_index: int,
    reply_next: int,
    *,
    success: bool,
    reset: bool,
    fixes: Fixes = ALL_FIXES,
) -> tuple[int, int]:
    """Return the leader's (nextIndex, matchIndex) for a follower after its `next_node_idx` reply.

    pysyncobj 0.3.17 (`SyncObj.__onMessageReceived`) does::

        if reset:   nextIndex = reply_next
        if success and matchIndex < reply_next - 1:
                    matchIndex = reply_next - 1; nextIndex = reply_next

    The leader pipelines: every send advances nextIndex past the entries just sent, before any
    reply. So a success for an older append moves nextIndex backwards and the leader re-sends
    every entry in flight; the follower truncates entries it already acknowledged (even applied)
    and appends them again (defect 1). Fix: a success never moves nextIndex below where it is.

    A follower's "reset" names where its log really ends or conflicts, and is always below the
    nextIndex the leader had when it sent that append. Replies to several in-flight appends
    arrive together; with the original code a later reply to an older heartbeat ("my log ends
    at 101") undoes a newer "conflict at 99", so the leader never sends from 98 and a deposed
    leader with uncommitted entries never converges (defect 8). Fix: a reset may only move
    nextIndex backwards. TCP keeps one connection's replies in order, so a reset that arrives
    after a success is not stale: it is respected even below matchIndex.
    """
    if reset:
        next_index = min(next_index, reply_next) if fixes.reset_only_backwards else reply_next
    if success and match_index < reply_next - 1:
        match_index = reply_next - 1
        next_index = max(next_index, reply_next) if fixes.monotonic_next_index else reply_next
    return next_index, match_index
