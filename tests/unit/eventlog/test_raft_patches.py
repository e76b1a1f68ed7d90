"""Unit tests of the pysyncobj fixes that need no cluster (raft_patches)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pysyncobj.pickle
import pytest
from pysyncobj.journal import LAST_RECORD_OFFSET_OFFSET

from xes.eventlog import raft_patches
from xes.eventlog.raft_patches import (
    DurableFileJournal,
    Fixes,
    create_journal,
    journal_options,
    next_index_after_reply,
)

UNFIXED = Fixes(monotonic_next_index=False, reset_only_backwards=False)


# -- defect 1: pipelined successes move nextIndex backwards ------------------------------------


def test_success_replies_to_pipelined_appends_keep_next_index() -> None:
    """The leader sent entries 11..20 one append at a time (nextIndex 21), then the acks come."""
    for fixes, expected_next in ((Fixes(), 21), (UNFIXED, 12)):
        next_index, match_index = 21, 10
        next_index, match_index = next_index_after_reply(
            next_index, match_index, 12, success=True, reset=False, fixes=fixes
        )
        assert (next_index, match_index) == (expected_next, 11)
    # Unfixed, the next append re-sends 12..20, which the follower already has.


def test_reset_moves_next_index_back_even_below_match() -> None:
    """A follower that lost its log (reset below matchIndex) is believed, not ignored."""
    assert next_index_after_reply(50, 40, 30, success=False, reset=True) == (30, 40)


# -- defect 8: a stale reset undoes a newer one (deposed leader never catches up) ----------------


def _follower_reply(log: list[int], prev: int, prev_term: int) -> tuple[int, bool, bool]:
    """pysyncobj 0.3.17's follower answer to append_entries(prevLogIdx, prevLogTerm).

    `log[i]` is the term of entry i + 1. Returns (next_node_idx, success, reset).
    """
    if prev > len(log):
        return len(log) + 1, False, True
    if log[prev - 1] != prev_term:
        return prev, False, True
    return prev + 1, True, False


def _catch_up_ticks(fixes: Fixes, lost: int, burst: int = 10, ticks: int = 100) -> int | None:
    """Model a new leader bringing a deposed leader's log in line, under load.

    Both logs share indexes 1..20 (term 1); the deposed leader appended `lost` more entries in
    term 1 that were never committed; the new leader's log continues with 100 entries in term 2
    (nextIndex for the follower starts past its end, as after an election). Each tick the
    leader appends `burst` commands and sends one append per command (appendEntriesUseBatch is
    off): the first from its nextIndex for the follower, the rest with prevLogIdx at its log end,
    since every send moves nextIndex past what it sent. The follower answers each, and the
    answers reach the leader together (one poll), as on a WAN link. Returns the tick at which
    the follower's log matches, or None.
    """
    common = 20
    follower = [1] * common + [1] * lost
    leader = [1] * common + [2] * 100
    next_index, match_index = len(leader) + 1, 0
    for tick in range(1, ticks + 1):
        replies = []
        for _ in range(burst):
            leader.append(2)
            prev = next_index - 1
            reply = _follower_reply(follower, prev, leader[prev - 1])
            if reply[1]:  # success: the follower truncates its tail and takes the leader's
                follower[:] = leader[:]
            replies.append(reply)
            next_index = len(leader) + 1
        for reply_next, success, reset in replies:
            next_index, match_index = next_index_after_reply(
                next_index, match_index, reply_next, success=success, reset=reset, fixes=fixes
            )
        if follower == leader:
            return tick
    return None


@pytest.mark.parametrize("lost", [2, 5, 30])
def test_deposed_leader_converges_only_with_the_reset_fix(lost: int) -> None:
    assert _catch_up_ticks(Fixes(), lost) == lost + 2
    assert _catch_up_ticks(Fixes(reset_only_backwards=False), lost) is None


def test_unfixed_converges_without_bursts_of_replies() -> None:
    """With one append per round trip no stale reply follows a newer one: the defect needs
    replies that queue up (load, latency), which is why it hides on an idle LAN."""
    assert _catch_up_ticks(Fixes(reset_only_backwards=False), 5, burst=1) == 7


# -- defect 4: pickle protocol 2 -----------------------------------------------------------------


def _encoded_command(payload: bytes) -> bytes:
    """What @replicated stores for `apply_entry(payload)`: type byte + pickled (id, args)."""
    return b"\x00" + pysyncobj.pickle.dumps((0, (payload,)))


def test_commands_are_pickled_with_protocol_5(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = os.urandom(100_000)
    monkeypatch.setattr(pysyncobj.pickle, "__protocol", 2)
    unpatched = _encoded_command(payload)
    raft_patches.install()
    patched = _encoded_command(payload)
    assert raft_patches.pickle_protocol() == 5
    assert patched[1:3] == b"\x80\x05"
    assert len(patched) < len(payload) + 64
    # Protocol 2 has no bytes type: random bytes become a latin-1 str, UTF-8 encoded.
    assert unpatched[1:3] == b"\x80\x02"
    assert len(unpatched) > 1.4 * len(payload)
    assert pysyncobj.pickle.loads(patched[1:]) == pysyncobj.pickle.loads(unpatched[1:])


# -- defect 2: the journal and its term file are never fsynced -----------------------------------


@pytest.fixture
def fsync_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths passed to os.fsync (resolved through /proc/self/fd)."""
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return synced


@pytest.fixture
def msync_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the journal files whose mmap pysyncobj's ResizableFile flushed."""
    from pysyncobj.journal import ResizableFile

    flushed: list[str] = []
    real = ResizableFile.flush

    def spy(self: ResizableFile) -> None:
        flushed.append(self._ResizableFile__fileName)
        real(self)

    monkeypatch.setattr(ResizableFile, "flush", spy)
    return flushed


def _on_disk_offset(path: Path) -> int:
    """The journal's last-record offset as a separate file descriptor reads it."""
    with open(path, "rb") as f:
        f.seek(LAST_RECORD_OFFSET_OFFSET)
        return int(struct.unpack("<I", f.read(4))[0])


@pytest.mark.parametrize("fsync", [True, False])
def test_journal_sync_flushes_only_when_dirty(
    tmp_path: Path, msync_spy: list[str], fsync: bool
) -> None:
    path = str(tmp_path / "journal")
    with journal_options(fsync=fsync):
        journal = create_journal(path)
    assert isinstance(journal, DurableFileJournal)
    msync_spy.clear()
    journal.add(b"\x01hello", 1, 1)
    assert journal.dirty
    journal.sync()
    journal.sync()  # clean: no second msync
    assert not journal.dirty
    assert msync_spy == ([path] if fsync else [])
    assert _on_disk_offset(tmp_path / "journal") > 40
    journal._destroy()


@pytest.mark.parametrize("fsync", [True, False])
def test_term_and_vote_are_fsynced_before_rename(
    tmp_path: Path, fsync_spy: list[str], fsync: bool
) -> None:
    with journal_options(fsync=fsync):
        journal = create_journal(str(tmp_path / "journal"))
    fsync_spy.clear()
    journal.setCurrentTerm(7, "127.0.0.1:1")
    expected = [str(tmp_path / "journal.meta.tmp"), str(tmp_path)] if fsync else []
    assert fsync_spy == expected
    with journal_options(fsync=fsync):
        reopened = create_journal(str(tmp_path / "journal"))
    assert (reopened.getCurrentTerm(), reopened.getVotedForNodeId()) == (7, "127.0.0.1:1")
    journal._destroy()
    reopened._destroy()


def test_unpatched_pysyncobj_journal_never_syncs(
    tmp_path: Path, fsync_spy: list[str], msync_spy: list[str]
) -> None:
    """The defect itself: pysyncobj's FileJournal neither msyncs entries nor fsyncs its meta."""
    from pysyncobj.journal import FileJournal

    journal = FileJournal(str(tmp_path / "journal"))
    journal.add(b"\x01hello", 1, 1)
    journal.setCurrentTerm(3, None)
    assert fsync_spy == [] and msync_spy == []
    journal._destroy()


def test_truncations_are_counted(tmp_path: Path) -> None:
    with journal_options(fsync=False):
        journal = create_journal(str(tmp_path / "journal"))
    for idx in range(1, 6):
        journal.add(b"\x01x", idx, 1)
    journal.deleteEntriesFrom(2)
    journal.deleteEntriesFrom(5)  # past the end: nothing removed
    assert journal.truncated_entries == 3
    assert [entry[1] for entry in journal[0:]] == [1, 2]
    journal._destroy()


class _Exited(Exception):
    pass


def test_a_full_disk_stops_the_journal_with_a_line_not_sigbus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault campaign (``disk_full``): pysyncobj grows its journal sparsely and writes into the
    mmap, so a full disk was SIGBUS. The blocks are reserved first now: ENOSPC stops the log
    process with exit status 74 before anything is written."""
    journal = raft_patches.DurableFileJournal(str(tmp_path / "journal"), fsync=False)
    codes: list[int] = []

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    def exit_(code: int) -> None:
        codes.append(code)
        raise _Exited

    monkeypatch.setattr(raft_patches.os, "posix_fallocate", no_space)
    monkeypatch.setattr(raft_patches.os, "_exit", exit_)
    with pytest.raises(_Exited):
        journal.add(b"x" * 5000, 1, 1)
    assert codes == [raft_patches.EXIT_STORAGE]
    assert len(journal) == 0


def test_journal_growth_is_allocated_not_sparse(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    journal = raft_patches.DurableFileJournal(str(path), fsync=False)
    for i in range(1, 40):
        journal.add(b"y" * 3000, i, 1)
    st = os.stat(path)
    assert st.st_blocks * 512 >= st.st_size, "the journal's tail is a hole: SIGBUS on a full disk"
    assert [journal[i][1] for i in range(len(journal))] == list(range(1, 40))
