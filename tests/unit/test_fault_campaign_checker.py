"""The fault campaign's schedule is replayable and its checker catches what it must.

A checker that never fails proves nothing: each kind of violation is planted in synthetic
records and must be reported (``tools/faults/checker.py``).
"""

from __future__ import annotations

from typing import Any

from tools.faults.checker import NodeFacts, check
from tools.faults.nemesis import CLIENT_KINDS, CLUSTER_KINDS, schedule


def test_schedule_is_a_function_of_the_seed() -> None:
    a = schedule(11, 300, 20, wipe=True, disk=True)
    assert a == schedule(11, 300, 20, wipe=True, disk=True)
    assert a != schedule(12, 300, 20, wipe=True, disk=True)
    assert {f.kind for f in a} <= set(CLUSTER_KINDS) | set(CLIENT_KINDS)
    assert [f.at for f in a] == sorted(f.at for f in a)
    only = schedule(11, 300, 20, only={"pause", "client_cut"})
    assert {f.kind for f in only} == {"pause", "client_cut"}


def test_required_kinds_take_the_earliest_cluster_faults() -> None:
    forced = {"clock_step": 2, "snapshot_kill": 2}
    a = schedule(7, 300, 20, only={"kill", "pause", "client_cut"}, require=forced)
    assert a == schedule(7, 300, 20, only={"kill", "pause", "client_cut"}, require=forced)
    cluster = [f for f in a if f.kind in CLUSTER_KINDS]
    assert sorted(f.kind for f in cluster[:4]) == ["clock_step"] * 2 + ["snapshot_kill"] * 2
    assert {f.kind for f in cluster[4:]} <= {"kill", "pause"}
    for f in cluster[:4]:
        if f.kind == "clock_step":
            assert 60 <= abs(f.step) <= 600 and 10 <= f.duration <= 45
        else:
            assert f.phase in ("copy", "pack")


def _sent(n: int, **kw: Any) -> dict[str, Any]:
    base = {"kind": "chat", "n": n, "to": "f1", "at": float(n), "session": 0}
    return base | {"acked_at": n + 0.5, "error": None, "abandoned": False} | kw


def _got(sender: int, n: int) -> dict[str, Any]:
    return {"kind": "chat", "sender": sender, "n": n, "at": 0.0, "session": 0, "delayed": False}


def _records(sent: list[dict[str, Any]], received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    session = [{"ordinal": 0, "sm_id": "s", "node": "n1", "started": 0, "ended": "logout"}]
    return [
        {"index": 0, "sent": sent, "received": [], "sessions": session, "errors": []},
        {"index": 1, "sent": [], "received": received, "sessions": session, "errors": []},
    ]


def _facts(committed: list[int], node: str = "n1", digest: str = "d") -> NodeFacts:
    facts = NodeFacts(node, 10, digest, "j")
    facts.chat = {(0, n): {"index": n, "to": "f1", "copies": 1} for n in committed}
    return facts


def test_a_clean_run_passes() -> None:
    report = check(_records([_sent(1), _sent(2)], [_got(0, 1), _got(0, 2)]), [_facts([1, 2])])
    assert report.violations == []
    assert report.figures["delivered"] == 2


def test_every_planted_violation_is_reported() -> None:
    sent = [_sent(1), _sent(2), _sent(3), _sent(4, error="x: the server's disk is almost full")]
    # 1 duplicated, 2 lost, 3 acknowledged but never committed, 4 refused yet committed and
    # delivered, 9 delivered without being in the log; 4 arrives before 1 (sender's order).
    received = [_got(0, 4), _got(0, 1), _got(0, 1), _got(0, 9)]
    report = check(_records(sent, received), [_facts([1, 2, 4]), _facts([1, 2, 4], "n2", "e")])
    text = "\n".join(report.violations)
    assert "digests differ" in text
    assert "1 lost" in text and "0-2" in text
    assert "1 duplicated" in text
    assert "3: acknowledged without error, not in the log" in text
    assert "4: refused" in text
    assert "9: not in the log" in text
    assert "out of the order" in text


def test_offline_storage_counts_as_kept_and_ghosts_are_reported() -> None:
    facts = _facts([1])
    facts.offline = {"f1": [(0, 1)]}
    facts.sessions_left = ["f1@xes.test/dev"]
    report = check(_records([_sent(1)], []), [facts])
    assert report.figures["stored_offline"] == 1 and report.figures["lost"] == 0
    assert any("ghost sessions" in v for v in report.violations)
