"""RaftLog on a one-node cluster: the interface, apply guard, journal size, restarts."""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
from pathlib import Path

import pysyncobj.pickle
import pytest
from pysyncobj.journal import LAST_RECORD_OFFSET_OFFSET

from tests.unit.eventlog.raftkit import Cluster, Results, compact, submit_wait, wait_until
from xes.eventlog.raft import Fixes, Outcome, RaftConfig, RaftLog, SubmitResult

pytestmark = pytest.mark.timeout(60)


def _one_node(cluster: Cluster, **overrides: object) -> RaftLog:
    [addr] = cluster.allocate(1)
    raft = cluster.start(addr, **overrides).raft  # type: ignore[arg-type]
    assert raft.wait_ready(10)
    return raft


def _restart(cluster: Cluster, **overrides: object) -> RaftLog:
    [addr] = list(cluster.nodes)
    cluster.stop(addr)
    raft = cluster.start(addr, **overrides).raft  # type: ignore[arg-type]
    assert raft.wait_ready(10)
    return raft


def _config(tmp_path: Path, **overrides: object) -> RaftConfig:
    settings: dict[str, object] = {
        "self_addr": "127.0.0.1:4000",
        "peers": ("127.0.0.1:4001",),
        "data_dir": tmp_path,
        "secret": "s",
    }
    settings.update(overrides)
    return RaftConfig(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"secret": None}, "secret is required"),
        ({"self_addr": "localhost"}, "host:port"),
        ({"peers": ("127.0.0.1:99999",)}, "host:port"),
        ({"min_timeout": 0.2}, "min_timeout"),
        ({"max_timeout": 0.3, "min_timeout": 0.4}, "max_timeout"),
        ({"connection_timeout": 1.0}, "connection_timeout"),
    ],
)
def test_config_is_validated(tmp_path: Path, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RaftLog(_config(tmp_path, **overrides), None)  # type: ignore[arg-type]


def test_submit_applies_in_order_and_reports_status(cluster: Cluster) -> None:
    raft = _one_node(cluster)
    node = next(iter(cluster.nodes.values()))
    results = [submit_wait(raft, b"cmd%d" % i) for i in range(5)]
    assert [r.outcome for r in results] == [Outcome.APPLIED] * 5
    indexes = [r.index for r in results]
    assert indexes == sorted(indexes) and len(set(indexes)) == 5
    assert [r.result for r in results] == [b"ok:%d" % i for i in indexes]  # type: ignore[str-format]
    assert node.sm.commands() == {i: b"cmd%d" % n for n, i in enumerate(indexes)}  # type: ignore[misc]
    status = raft.status()
    assert raft.is_leader()
    assert status["state"] == "leader" and status["leader"] == node.addr
    assert status["members"] == [node.addr]
    assert status["has_quorum"] and status["ready"]
    assert status["commit_index"] == status["last_applied"] == indexes[-1]
    assert status["term"] >= 1 and status["pending"] == 0


def test_lone_leader_commits_without_waiting_for_the_next_tick(cluster: Cluster) -> None:
    """Alone, a leader commits an entry at the tick after the append, and pysyncobj waited a
    whole tick period for it: with a 1 s period, five commits took five seconds."""
    raft = _one_node(cluster, tick_period=1.0)
    started = time.monotonic()
    for i in range(5):
        assert submit_wait(raft, b"c%d" % i).outcome is Outcome.APPLIED
    assert time.monotonic() - started < 2.5


def test_commands_above_the_limit_are_refused(cluster: Cluster) -> None:
    raft = _one_node(cluster, max_command_bytes=1000)
    assert submit_wait(raft, b"x" * 1000).outcome is Outcome.APPLIED
    refused = Results()
    raft.submit(b"x" * 1001, refused)
    # Refused at once, on the caller's thread.
    assert refused.items[0] == SubmitResult(Outcome.TOO_LARGE, None, None, "1001 > 1000 bytes")


def test_raising_apply_is_contained(cluster: Cluster) -> None:
    """Defect 5, fixed: the entry is consumed, its submitter hears UNKNOWN, the log goes on."""
    raft = _one_node(cluster)
    node = next(iter(cluster.nodes.values()))
    failed = submit_wait(raft, b"raise please")
    assert failed.outcome is Outcome.UNKNOWN
    assert failed.detail.startswith("apply_failed: ValueError")
    assert failed.index is not None
    after = submit_wait(raft, b"next")
    assert after.outcome is Outcome.APPLIED and after.index == failed.index + 1
    assert node.sm.commands()[after.index] == b"next"


def test_raising_apply_wedges_unguarded_pysyncobj(cluster: Cluster) -> None:
    """Defect 5, unfixed: the raising entry is retried every tick and nothing after it applies."""
    raft = _one_node(cluster, fixes=Fixes(guard_apply=False), submit_timeout=1.5)
    node = next(iter(cluster.nodes.values()))
    results = Results()
    raft.submit(b"raise please", results)
    raft.submit(b"next", results)
    assert results.wait(2, 10)
    assert [(r.outcome, r.detail) for r in results.items] == [(Outcome.UNKNOWN, "timeout")] * 2
    assert b"next" not in node.sm.commands().values()
    assert node.sm.apply_calls > 10  # retried on every tick


def test_callback_exception_does_not_stop_the_log(cluster: Cluster) -> None:
    raft = _one_node(cluster)

    def bad_callback(result: SubmitResult) -> None:
        raise RuntimeError("caller bug")

    raft.submit(b"first", bad_callback)
    assert submit_wait(raft, b"second").outcome is Outcome.APPLIED


def _journal_end(data_dir: Path) -> int:
    with open(data_dir / "raft" / "journal", "rb") as f:
        f.seek(LAST_RECORD_OFFSET_OFFSET)
        return int(struct.unpack("<I", f.read(4))[0])


@pytest.mark.parametrize("protocol", [5, 2])
def test_journal_holds_commands_without_pickle_inflation(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, protocol: int
) -> None:
    """Defect 4 end to end: 100 kB of random bytes take ~100 kB of journal, not ~160 kB."""
    raft = _one_node(cluster)
    node = next(iter(cluster.nodes.values()))
    if protocol == 2:  # what pysyncobj does without our patch (install() set 5)
        monkeypatch.setattr(pysyncobj.pickle, "__protocol", 2)
    payload = os.urandom(100_000)
    before = _journal_end(node.data_dir)
    assert submit_wait(raft, payload).outcome is Outcome.APPLIED
    growth = _journal_end(node.data_dir) - before
    if protocol == 5:
        assert len(payload) < growth < len(payload) + 200
    else:
        assert growth > 1.4 * len(payload)
    assert node.sm.commands()[max(node.sm.commands())] == payload


def test_restart_replays_the_journal_without_reapplying(cluster: Cluster) -> None:
    raft = _one_node(cluster)
    last = [submit_wait(raft, b"c%d" % i) for i in range(20)][-1].index
    before = next(iter(cluster.nodes.values())).sm.commands()
    raft = _restart(cluster)
    node = next(iter(cluster.nodes.values()))
    assert node.sm.commands() == before
    assert node.sm.apply_calls == 0  # the journal was replayed, every entry was skipped
    again = submit_wait(raft, b"after restart")
    assert again.outcome is Outcome.APPLIED and again.index > last  # type: ignore[operator]


@pytest.mark.parametrize("snapshot_kind", ["file", "dir"])
def test_restart_after_compaction_keeps_everything(cluster: Cluster, snapshot_kind: str) -> None:
    raft = _one_node(cluster, snapshot_kind=snapshot_kind)
    node = next(iter(cluster.nodes.values()))
    for i in range(30):
        submit_wait(raft, b"a%d" % i)
    compact(node)
    for i in range(10):
        submit_wait(raft, b"b%d" % i)
    before = node.sm.commands()
    assert len(before) == 40

    # LMDB is ahead of the dump: nothing is restored, nothing re-applied.
    raft = _restart(cluster, snapshot_kind=snapshot_kind)
    node = next(iter(cluster.nodes.values()))
    assert node.sm.commands() == before
    assert (node.sm.restores, node.sm.apply_calls) == (0, 0)

    # LMDB lost: the dump restores it and the journal replays what came after the dump.
    [addr] = list(cluster.nodes)
    cluster.stop(addr)
    shutil.rmtree(node.sm.path)
    raft = cluster.start(addr, snapshot_kind=snapshot_kind).raft
    assert raft.wait_ready(10)
    node = cluster.nodes[addr]
    assert wait_until(lambda: node.sm.commands() == before, 10)
    assert node.sm.restores == 1
    assert [cmd for _, cmd in node.sm.history] == [b"b%d" % i for i in range(10)]
    assert submit_wait(raft, b"later").outcome is Outcome.APPLIED


def test_journal_size_triggers_compaction(cluster: Cluster) -> None:
    raft = _one_node(cluster, compaction_max_bytes=200_000)
    node = next(iter(cluster.nodes.values()))
    for _ in range(30):
        submit_wait(raft, os.urandom(20_000))
    assert wait_until(lambda: raft.status()["log_len"] < 12, 5)
    assert (node.data_dir / "raft" / "dump").exists()
    assert len(node.sm.commands()) == 30


def test_commits_go_on_while_a_snapshot_is_written(cluster: Cluster) -> None:
    """The snapshot copies the whole store; on the raft thread it stopped every commit meanwhile."""
    raft = _one_node(cluster)
    node = next(iter(cluster.nodes.values()))
    for i in range(5):
        submit_wait(raft, b"a%d" % i)
    node.sm.snapshot_gate = threading.Event()
    raft.force_compaction()
    assert node.sm.snapshot_started.wait(10)
    during = [submit_wait(raft, b"b%d" % i) for i in range(20)]
    assert all(r.outcome is Outcome.APPLIED for r in during)
    # Not finished: the journal is not truncated and no dump is in place yet.
    assert raft.status()["log_len"] > 20
    assert not (node.data_dir / "raft" / "dump").exists()
    node.sm.snapshot_gate.set()
    assert wait_until(lambda: (node.data_dir / "raft" / "dump").exists(), 10)
    assert wait_until(lambda: raft.status()["log_len"] <= 22, 10)
    assert len(node.sm.commands()) == 25

    # The dump holds everything applied before the snapshot began: a node that lost its store
    # comes back from it plus the journal.
    [addr] = list(cluster.nodes)
    before = node.sm.commands()
    cluster.stop(addr)
    shutil.rmtree(node.sm.path)
    raft = cluster.start(addr).raft
    assert raft.wait_ready(10)
    assert wait_until(lambda: cluster.nodes[addr].sm.commands() == before, 10)


def test_failing_snapshot_is_not_retried_every_tick(cluster: Cluster) -> None:
    """pysyncobj retries a failed compaction on every tick (here: more than 2 entries)."""
    raft = _one_node(cluster, compaction_min_entries=2)
    node = next(iter(cluster.nodes.values()))
    node.sm.fail_snapshots = True
    for _ in range(10):
        assert submit_wait(raft, os.urandom(10_000)).outcome is Outcome.APPLIED
    time.sleep(1.0)  # ~100 ticks
    assert 1 <= node.sm.snapshot_calls <= 2
    assert not (node.data_dir / "raft" / "dump").exists()
    assert submit_wait(raft, b"still fine").outcome is Outcome.APPLIED


def test_close_is_idempotent_and_refuses_later_submits(cluster: Cluster) -> None:
    raft = _one_node(cluster)
    raft.close()
    raft.close()
    results = Results()
    raft.submit(b"late", results)
    assert results.items == [SubmitResult(Outcome.NOT_APPENDED, None, None, "closed")]
    assert not raft._node.tick_thread_alive()
