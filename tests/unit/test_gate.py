"""The rolling-upgrade feature gate (ADR 0022): what is emitted while a member cannot read it,
what the cluster-features projection keeps, and the projections' rebuild on upgrade."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from xes.events import EVENT_TYPES, Envelope, decode_event, to_data
from xes.events.catalog import MessageRouted, MucMessageSent, NodeStarted, PushEnabled
from xes.events.gate import (
    BASELINE,
    BASELINE_COMMIT,
    DOWNCASTERS,
    Gate,
    Gated,
    Member,
    this_build_reads,
)
from xes.events.message_facts import facts_of_xml
from xes.projections import cluster_features
from xes.projections.projector import BUILT, Projector, all_db_names, digest
from xes.store.env import open_store
from xes.store.journal import APPLIED_KEY

NEW = this_build_reads()
ROOT = Path(__file__).resolve().parents[2]


def env(event: object, n: int = 1) -> Envelope:
    return Envelope(
        type=event.TYPE,  # type: ignore[attr-defined]
        v=event.V,  # type: ignore[attr-defined]
        stream=event.stream(),  # type: ignore[attr-defined]
        id=f"t.{n}",
        at=1_700_000_000_000,
        origin="n1",
        data=to_data(event),
    )


CHAT = (
    "<message xmlns='jabber:client' from='a@x/r' to='b@x' type='chat' id='m1'>"
    "<body>hi</body><request xmlns='urn:xmpp:receipts'/></message>"
)
MARKER = (
    "<message xmlns='jabber:client' from='a@x/r' to='b@x' type='chat' id='m2'>"
    "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>"
)


def routed(xml: str) -> MessageRouted:
    return MessageRouted("a@x/r", "b@x", "chat", xml, ["b@x/p"], **facts_of_xml(xml).fields())


def test_a_member_that_announced_nothing_gets_v1_and_no_new_types() -> None:
    gate = Gate((Member("h:1", "n1", NEW), Member("h:2", "n2", None), Member("h:3", "n3", NEW)))
    shaped = gate.shape(env(routed(CHAT)))
    assert shaped.v == 1
    assert not set(shaped.data) & {"body", "marker", "marker_id", "msg_id", "track"}
    assert gate.emit_version("muc.message_sent", 2) == 1
    assert not gate.can_emit("push.enabled", 1)
    assert gate.waiting("message.routed", 2) == ["n2"]
    with pytest.raises(Gated) as info:
        gate.shape(env(PushEnabled("a@x", "r", "push.x", "node")))
    assert info.value.waiting == ["n2"]
    assert "push.enabled v1" in gate.pending() and gate.pending()["message.routed v2"] == ["n2"]


def test_the_gate_opens_once_every_member_announced() -> None:
    gate = Gate(tuple(Member(f"h:{i}", f"n{i}", NEW) for i in range(3)))
    event = env(routed(CHAT))
    assert gate.shape(event) is event
    assert gate.pending() == {}
    assert Gate.unknown().emit_version("message.routed", 2) == 1


@pytest.mark.parametrize("xml", [CHAT, MARKER])
def test_downcast_then_upcast_gives_the_v2_event_back(xml: str) -> None:
    """What an old reader gets is v1; a new reader upcasts it to exactly what v2 would carry."""
    for event in (
        routed(xml),
        MucMessageSent("r@c", "s1", "nick", xml, "sid", **facts_of_xml(xml).fields()),
    ):
        old = Gate((Member("h:1"),)).shape(env(event))
        assert old.v == 1
        assert decode_event(old) == event


def test_downcasters_only_for_registered_bumps_and_baseline_is_readable() -> None:
    for (name, v), _ in DOWNCASTERS.items():
        assert EVENT_TYPES[name].V >= v > 1
    for name, v in BASELINE.items():
        assert NEW[name] >= v, name


def test_baseline_is_the_catalogue_of_the_baseline_commit() -> None:
    """BASELINE must list what that build registers, no more (else the gate opens too early)."""
    try:
        src = subprocess.run(
            ["git", "show", f"{BASELINE_COMMIT}:src/xes/events/catalog.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"commit {BASELINE_COMMIT[:12]} is not in this clone's history")
    names = {line.split('"')[1] for line in src.splitlines() if line.startswith("@event(")}
    assert names == set(BASELINE)
    assert "v=" not in "".join(line for line in src.splitlines() if line.startswith("@event("))


def test_node_started_without_reads_decodes_and_the_projection_keeps_the_latest(
    tmp_path: Path,
) -> None:
    old_form = Envelope("node.started", 1, "node:n2", "x", 1, "n2", {"node": "n2", "boot": "b"})
    assert decode_event(old_form).reads is None
    store = open_store(tmp_path / "db", all_db_names(), writer=True)
    proj = Projector(store)
    for i, ev in enumerate(
        [
            NodeStarted("n1", "b1", "h:1", NEW),
            NodeStarted("n2", "b2", "h:2", NEW),
            NodeStarted("n2", "b3", "h:2", None),  # n2 back on an older build
        ],
        start=1,
    ):
        proj.apply(i, json.dumps([[env(ev, i).to_json()]]).encode())
    with store.env.begin() as txn:
        known = cluster_features.announced(store, txn)
    gate = cluster_features.gate(["h:1", "h:2", "h:3"], known)
    assert [(m.name, m.reads is None) for m in gate.members] == [
        ("n1", False),
        ("n2", True),
        ("h:3", True),  # a member that never started: the baseline
    ]
    assert gate.waiting("message.routed", 2) == ["n2", "h:3"]
    store.close()


def test_projections_missing_from_an_older_data_directory_are_rebuilt(tmp_path: Path) -> None:
    """A data directory from a build without a projection (and without the marker) gets every
    projection folded again from the journal at start, to the digest a fresh replay gives."""
    store = open_store(tmp_path / "db", all_db_names(), writer=True)
    proj = Projector(store)
    for i in range(1, 4):
        ev = NodeStarted(f"n{i}", "b", f"h:{i}", NEW)
        proj.apply(i, json.dumps([[env(ev, i).to_json()]]).encode())
    with store.env.begin() as txn:
        before = digest(store, txn)
    assert Projector(store).catch_up() is None  # current: nothing to do
    # What an older build leaves: no marker, a projection it did not have is empty.
    with store.env.begin(write=True) as txn:
        txn.drop(store.db(BUILT), delete=False)
        txn.drop(store.db(cluster_features.READS), delete=False)
    assert Projector(store).catch_up() == 3
    with store.env.begin() as txn:
        assert digest(store, txn) == before
    # An older build applied more entries after our marker: stale again.
    with store.env.begin(write=True) as txn:
        txn.put(APPLIED_KEY, (99).to_bytes(8, "big"), db=store.db("meta"))
    assert Projector(store).catch_up() == 3
    store.close()
