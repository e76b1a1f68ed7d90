"""The node's cached feature gate opens as soon as the last announcement is applied, and
``xes cluster status`` names what waits for whom (ADR 0022)."""

from __future__ import annotations

import json
from pathlib import Path

from xes.cli import format_cluster_report
from xes.cluster_report import cluster_report
from xes.events import Envelope, to_data
from xes.events.catalog import NodeStarted
from xes.events.gate import this_build_reads
from xes.gate_watch import GateView
from xes.projections.projector import Projector, all_db_names
from xes.store.env import open_store

NEW = this_build_reads()


def _apply(proj: Projector, index: int, ev: NodeStarted) -> None:
    env = Envelope(ev.TYPE, ev.V, ev.stream(), f"t.{index}", 1, ev.node, to_data(ev))
    proj.apply(index, json.dumps([[env.to_json()]]).encode())


def test_the_cached_gate_opens_when_the_last_announcement_is_applied(tmp_path: Path) -> None:
    store = open_store(tmp_path / "db", all_db_names(), writer=True)
    proj = Projector(store)
    _apply(proj, 1, NodeStarted("n1", "b1", "h:1", NEW))
    _apply(proj, 2, NodeStarted("n2", "b2", "h:2"))  # a release before the gate
    view = GateView(store, proj.last_applied)
    assert view.gate().emit_version("message.routed", 2) == 1  # membership unknown: closed
    view.set_members([])  # no status yet: still closed
    assert view.gate().emit_version("message.routed", 2) == 1
    view.set_members(["h:1", "h:2"])
    assert view.gate().waiting("inbox.updated", 1) == ["n2"]
    _apply(proj, 3, NodeStarted("n2", "b3", "h:2", NEW))  # n2 upgraded
    assert view.gate().can_emit("message.routed", 2)
    view.set_members(["h:1", "h:2", "h:3"])  # a member added, not started yet
    assert view.gate().waiting("message.routed", 2) == ["h:3"]
    store.close()


def test_cluster_status_shows_what_waits_for_which_node(tmp_path: Path) -> None:
    store = open_store(tmp_path / "db", all_db_names(), writer=True)
    proj = Projector(store)
    _apply(proj, 1, NodeStarted("n1", "b1", "h:1", NEW))
    view = GateView(store, proj.last_applied)
    view.set_members(["h:1", "h:2"])
    local = {"self": "h:1", "members": ["h:1"], "state": "leader", "node_id": "n1"}
    text = format_cluster_report(cluster_report(None, local, {}, view.gate()))
    assert "feature gate: closed for" in text
    assert "message.routed v2 (as v1)" in text and "inbox.updated v1 (off)" in text
    assert text.splitlines()[-1].startswith("  waiting for h:2: ")
    view.set_members(["h:1"])
    text = format_cluster_report(cluster_report(None, local, {}, view.gate()))
    assert text.splitlines()[-1] == "feature gate: open"
    store.close()
