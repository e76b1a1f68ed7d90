"""The status page's recent activity read from a real journal: node events in order, the
message rate over the last minute, and an incremental scan that neither skips nor repeats."""

from __future__ import annotations

from pathlib import Path

from tests.unit.projections.test_projector import command, env, fresh
from xes.admin.activity import RecentActivity
from xes.cluster_report import cluster_report
from xes.events.catalog import MessageRouted, NodeDown, NodeStarted

NOW = 1_800_000_000_000


def message(i: int) -> MessageRouted:
    return MessageRouted(sender="a@x/r", to="b@x", type="chat", xml=f"<message>{i}</message>")


def test_node_events_and_message_rate(tmp_path: Path) -> None:
    store, proj = fresh(tmp_path / "j")
    proj.apply(1, command([env(NodeStarted("n1", "boot1", "127.0.0.1:1"), at=NOW - 120_000)]))
    proj.apply(2, command([env(message(0), at=NOW - 90_000)]))  # older than a minute
    proj.apply(3, command([env(message(1), at=NOW - 30_000), env(message(2), at=NOW - 10_000)]))
    activity = RecentActivity()
    with store.env.begin() as txn:
        activity.update(store, txn)
    assert [e["type"] for e in activity.node_events] == ["node.started"]
    assert activity.message_rate(NOW) == 2 / 60
    proj.apply(4, command([env(NodeDown("n1", "boot1", "unreachable", "n2"), at=NOW)]))
    proj.apply(5, command([env(message(3), at=NOW)]))
    with store.env.begin() as txn:
        activity.update(store, txn)
        activity.update(store, txn)  # nothing new: nothing counted twice
    assert [e["type"] for e in activity.node_events] == ["node.started", "node.down"]
    assert activity.node_events[-1]["reason"] == "unreachable"
    assert activity.message_rate(NOW) == 3 / 60


def test_cluster_report_health_and_lag() -> None:
    local = {
        "self": "a:1",
        "members": ["a:1"],
        "state": "leader",
        "term": 3,
        "commit_index": 5000,
        "last_applied": 5000,
        "match_index": {},
    }
    report = cluster_report(None, local, {"a:1": ("n1", False)})
    (member,) = report["members"]
    assert (member["node"], member["health"], member["lag"]) == ("n1", "ok", 0)
    report = cluster_report(None, local, {"a:1": ("n1", True)})
    assert report["members"][0]["health"] == "down"
