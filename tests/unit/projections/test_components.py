"""The components projection (ADR 0018): one holder per name in the cluster, released by the
holder's end, a new boot of its node or ``node.down``; replay gives the same digest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.unit.projections.test_projector import command, env, fresh
from xes.events.catalog import ComponentConnected, ComponentDisconnected, NodeDown, NodeStarted
from xes.projections import components
from xes.projections.projector import digest, rebuild

PUSH = "push.x"


def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    store, proj = fresh(tmp_path / "s")
    index = 0

    def apply(*events: Any) -> dict[str, Any]:
        nonlocal index
        index += 1
        result: dict[str, Any] = json.loads(proj.apply(index, command([env(e) for e in events])))[0]
        return result

    return store, apply


def holder(store: Any, domain: str = PUSH) -> components.Holder | None:
    with store.env.begin() as txn:
        return components.holder(store, txn, domain)


def test_second_connection_anywhere_is_refused(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert apply(ComponentConnected(PUSH, "n1", "b1", "c1"))["ok"]
    refused = apply(ComponentConnected(PUSH, "n2", "b2", "c2"))
    assert not refused["ok"] and "component-conflict" in refused["reason"]
    held = holder(store)
    assert held is not None and (held.node, held.conn) == ("n1", "c1")
    # Another name is free.
    assert apply(ComponentConnected("bot.x", "n2", "b2", "c3"))["ok"]


def test_disconnect_of_an_older_connection_keeps_the_newer(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(ComponentConnected(PUSH, "n1", "b1", "c1"))
    apply(ComponentDisconnected(PUSH, "n1", "b1", "c1", "closed"))
    assert holder(store) is None
    apply(ComponentConnected(PUSH, "n2", "b2", "c2"))
    apply(ComponentDisconnected(PUSH, "n1", "b1", "c1", "closed"))  # late duplicate
    held = holder(store)
    assert held is not None and held.conn == "c2"


def test_new_boot_releases_the_old_boots_components(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(NodeStarted("n1", "b1"))
    apply(ComponentConnected(PUSH, "n1", "b1", "c1"))
    apply(NodeStarted("n2", "b9"))  # another node's start changes nothing
    assert holder(store) is not None
    apply(NodeStarted("n1", "b2"))
    assert holder(store) is None


def test_node_down_releases_and_refuses_that_boot(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(NodeStarted("n1", "b1"))
    apply(ComponentConnected(PUSH, "n1", "b1", "c1"))
    apply(ComponentConnected("bot.x", "n2", "b5", "c5"))
    assert apply(NodeDown("n1", "b1", "unreachable", "n2"))["ok"]
    assert holder(store) is None
    assert holder(store, "bot.x") is not None
    late = apply(ComponentConnected(PUSH, "n1", "b1", "c7"))
    assert not late["ok"] and "node-down" in late["reason"]
    assert apply(ComponentConnected(PUSH, "n3", "b3", "c8"))["ok"]
    with store.env.begin() as txn:
        live = digest(store, txn)
        assert [h.domain for h in components.held(store, txn)] == ["bot.x", PUSH]
    rebuilt, live_again, _, _ = rebuild(store, tmp_path / "replay")
    assert rebuilt == live_again == live
