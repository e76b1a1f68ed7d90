"""Node lifecycle in the sessions projection: node.started, node.down, refused late binds."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.projections.test_projector import command, env, fresh
from xes.events.catalog import NodeDown, NodeStarted, SessionBound, SessionEnded
from xes.projections import sessions


def results(raw: bytes) -> list[dict]:  # type: ignore[type-arg]
    return list(json.loads(raw))


def test_node_started_records_raft_address_and_boot(tmp_path: Path) -> None:
    store, proj = fresh(tmp_path / "s")
    proj.apply(1, command([env(NodeStarted("n1", "b1", "127.0.0.1:5290"))]))
    proj.apply(2, command([env(NodeStarted("n2", "b7", "127.0.0.1:5291"))]))
    with store.env.begin() as txn:
        nodes = sessions.nodes(store, txn)
    assert [(n.node, n.raft, n.boot, n.down) for n in nodes] == [
        ("n1", "127.0.0.1:5290", "b1", False),
        ("n2", "127.0.0.1:5291", "b7", False),
    ]


def test_node_down_needs_every_session_ended_first(tmp_path: Path) -> None:
    store, proj = fresh(tmp_path / "s")
    proj.apply(1, command([env(NodeStarted("n2", "b1", "h:2"))]))
    proj.apply(2, command([env(SessionBound("s1", "a@x/r", "n2", "b1"))]))
    # A node.down that leaves a session of that boot behind is refused, whole.
    refused = results(proj.apply(3, command([env(NodeDown("n2", "b1", "unreachable", "n1"))])))
    assert refused[0]["ok"] is False and "node-has-sessions" in refused[0]["reason"]
    with store.env.begin() as txn:
        assert sessions.get(store, txn, "s1") is not None
        assert not sessions.nodes(store, txn)[0].down
    # Ending the session in the same proposal, before node.down, is accepted.
    ok = results(
        proj.apply(
            4,
            command(
                [
                    env(SessionEnded("s1", "a@x/r", "node_down")),
                    env(NodeDown("n2", "b1", "unreachable", "n1")),
                ]
            ),
        )
    )
    assert ok[0]["ok"] is True
    with store.env.begin() as txn:
        assert sessions.get(store, txn, "s1") is None
        assert sessions.nodes(store, txn)[0].down


def test_a_down_boot_cannot_bind_but_a_new_boot_can(tmp_path: Path) -> None:
    store, proj = fresh(tmp_path / "s")
    proj.apply(1, command([env(NodeStarted("n2", "b1", "h:2"))]))
    proj.apply(2, command([env(NodeDown("n2", "b1", "unreachable", "n1"))]))
    late = results(proj.apply(3, command([env(SessionBound("s9", "a@x/r", "n2", "b1"))])))
    assert late[0]["ok"] is False and "node-down" in late[0]["reason"]
    with store.env.begin() as txn:
        assert sessions.get(store, txn, "s9") is None
    # The node rejoins with a new boot: binding works again, and it is no longer down.
    proj.apply(4, command([env(SessionBound("s10", "a@x/r", "n2", "b2"))]))
    proj.apply(5, command([env(NodeStarted("n2", "b2", "h:2"))]))
    with store.env.begin() as txn:
        assert sessions.get(store, txn, "s10") is not None
        (node,) = sessions.nodes(store, txn)
        assert (node.boot, node.down) == ("b2", False)


def test_node_down_for_an_old_boot_does_not_mark_the_new_one(tmp_path: Path) -> None:
    store, proj = fresh(tmp_path / "s")
    proj.apply(1, command([env(NodeStarted("n2", "b1", "h:2"))]))
    proj.apply(2, command([env(NodeStarted("n2", "b2", "h:2"))]))
    proj.apply(3, command([env(NodeDown("n2", "b1", "unreachable", "n1"))]))
    with store.env.begin() as txn:
        (node,) = sessions.nodes(store, txn)
    assert (node.boot, node.down) == ("b2", False)


def test_an_event_from_a_newer_release_stops_the_node_instead_of_diverging(
    tmp_path: Path,
) -> None:
    """Rejecting or skipping it would leave this node's views different from upgraded nodes'."""
    import pytest

    from xes.events import Envelope, NewerEvent

    store, proj = fresh(tmp_path / "s")
    proj.apply(1, command([env(NodeStarted("n1", "b1", "h:1"))]))
    future = Envelope("feature.from_the_future", 1, "x:1", "t.future", 1, "t", {}, None)
    newer = Envelope("node.started", 99, "node:n1", "t.newer", 1, "t", {}, None)
    for i, envelope in enumerate((future, newer)):
        with pytest.raises(NewerEvent):
            proj.apply(2 + i, command([env(NodeStarted("n2", "b1", "h:2"))], [envelope]))
        assert proj.last_applied() == 1
        with store.env.begin() as txn:  # nothing of the entry was kept, not even its first half
            assert [n.node for n in sessions.nodes(store, txn)] == ["n1"]
