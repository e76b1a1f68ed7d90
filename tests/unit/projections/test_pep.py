"""The pep projection: nodes, items in publication order, trimming; premises re-checked at apply;
the caps cache; replay gives the same digest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.projections.test_projector import command, env, fresh
from xes.events import Committed
from xes.events.catalog import (
    AccountRemoved,
    CapsLearned,
    PepItemPublished,
    PepItemRetracted,
    PepNodeConfigured,
    PepNodeDeleted,
    PepNodePurged,
)
from xes.projections import pep
from xes.projections.projector import digest, rebuild
from xes.pubsub.config import NodeConfig
from xes.xml import parse_fragment

OWNER = "alice@x"
NODE = "urn:xmpp:avatar:metadata"
MOOD = "http://jabber.org/protocol/mood"
T0 = 1_700_000_000_000


def configured(
    create: str = "auto", owner: str = OWNER, node: str = NODE, **config: Any
) -> PepNodeConfigured:
    return PepNodeConfigured(owner, node, NodeConfig(**config).to_json(), create=create)


def published(item_id: str, owner: str = OWNER, node: str = NODE, **kw: Any) -> PepItemPublished:
    return PepItemPublished(
        owner, node, item_id, f"<p xmlns='urn:t'>{item_id}</p>", "alice@x/r", **kw
    )


def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    store, proj = fresh(tmp_path / "s")
    index = 0

    def apply(*events: Any, at: int = T0) -> list[dict[str, Any]]:
        nonlocal index
        index += 1
        return json.loads(proj.apply(index, command([env(e, at=at) for e in events])))

    return store, apply


def ok(results: list[dict[str, Any]]) -> bool:
    return all(r["ok"] for r in results)


def reason(results: list[dict[str, Any]]) -> str:
    (result,) = results
    assert not result["ok"], result
    return str(result["reason"])


def node_of(store, owner: str = OWNER, node: str = NODE):  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return pep.node(store, txn, owner, node)


def ids(store, owner: str = OWNER, node: str = NODE) -> list[str]:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return [i.id for i in pep.items(store, txn, owner, node)]


def item_of(store, item_id: str, owner: str = OWNER, node: str = NODE):  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return pep.item(store, txn, owner, node, item_id)


def last_of(store, owner: str = OWNER, node: str = NODE):  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return pep.last_item(store, txn, owner, node)


def entries(store, db: str) -> int:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return int(txn.stat(store.db(db))["entries"])


def consistent(store, owner: str = OWNER, node: str = NODE) -> None:  # type: ignore[no-untyped-def]
    """The row's count, the items and the id index agree."""
    row = node_of(store, owner, node)
    listed = ids(store, owner, node)
    assert row is not None and row.count == len(listed) == len(set(listed))
    for i in listed:
        found = item_of(store, i, owner, node)
        assert found is not None and found.id == i
    last = last_of(store, owner, node)
    assert (last.id if last else None) == (listed[-1] if listed else None)


# -- create and publish --------------------------------------------------------------------------


def test_auto_create_then_publish(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(access_model="open"), published("a"), at=T0 + 5))
    row = node_of(store)
    assert row is not None
    assert row.config == NodeConfig(access_model="open")
    assert (row.owner, row.node, row.whitelist, row.seq, row.count) == (OWNER, NODE, [], 1, 1)
    got = item_of(store, "a")
    assert got == pep.Item("a", "<p xmlns='urn:t'>a</p>", "alice@x/r", T0 + 5)
    assert last_of(store) == got
    with store.env.begin() as txn:
        assert [n.node for n in pep.nodes(store, txn, OWNER)] == [NODE]
        assert pep.nodes(store, txn, "bob@x") == []
        assert pep.node(store, txn, OWNER, MOOD) is None
        assert pep.items(store, txn, OWNER, MOOD) == []
        assert pep.last_item(store, txn, OWNER, MOOD) is None
        assert pep.item(store, txn, OWNER, NODE, "missing") is None


def test_republishing_an_id_moves_it_to_newest_without_duplicating(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(max_items=5)))
    for i in ("a", "b", "c"):
        assert ok(apply(published(i)))
    republished = PepItemPublished(OWNER, NODE, "a", "<p xmlns='urn:t'>new</p>", "alice@x/2")
    assert ok(apply(republished, at=T0 + 9))
    assert ids(store) == ["b", "c", "a"]
    got = item_of(store, "a")
    assert got is not None and got.payload == "<p xmlns='urn:t'>new</p>" and got.at == T0 + 9
    assert got.publisher == "alice@x/2"
    assert last_of(store) == got
    row = node_of(store)
    assert row is not None and row.count == 3 and row.seq == 4
    assert entries(store, pep.ITEMS) == entries(store, pep.ITEM_IDS) == 3
    consistent(store)


def test_republishing_the_only_item_of_a_single_item_node(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(), published("current")))
    assert ok(apply(published("current")))
    assert ids(store) == ["current"]
    consistent(store)


def test_max_items_drops_the_oldest_and_their_ids(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(max_items=3)))
    for i in "abcde":
        assert ok(apply(published(i)))
    assert ids(store) == ["c", "d", "e"]
    assert item_of(store, "a") is None and item_of(store, "b") is None
    assert entries(store, pep.ITEMS) == entries(store, pep.ITEM_IDS) == 3
    consistent(store)
    # A dropped id published again is a new item, not a move.
    assert ok(apply(published("a")))
    assert ids(store) == ["d", "e", "a"]
    consistent(store)


def test_default_node_keeps_one_item(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(), published("a")))
    assert ok(apply(published("b")))
    assert ids(store) == ["b"] and item_of(store, "a") is None
    consistent(store)


def test_persist_items_false_keeps_only_the_last(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(max_items=10, persist_items=False)))
    for i in "abc":
        assert ok(apply(published(i)))
    assert ids(store) == ["c"]
    assert item_of(store, "a") is None and item_of(store, "b") is None
    consistent(store)


def test_lowering_max_items_trims_at_once(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(max_items=10)))
    for i in "abcd":
        assert ok(apply(published(i)))
    assert ok(apply(configured("", max_items=2)))
    assert ids(store) == ["c", "d"] and item_of(store, "b") is None
    consistent(store)
    assert ok(apply(configured("", max_items=10, persist_items=False)))
    assert ids(store) == ["d"]
    consistent(store)


def test_trimming_leaves_other_nodes_and_accounts_alone(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(max_items=2), configured(node=MOOD, max_items=2)))
    assert ok(apply(configured(owner="bob@x", max_items=2)))
    for i in "abc":
        assert ok(apply(published(i), published(i, node=MOOD), published(i, owner="bob@x")))
    assert ids(store) == ids(store, node=MOOD) == ids(store, owner="bob@x") == ["b", "c"]
    assert ok(apply(configured("", node=MOOD, max_items=1)))
    assert ids(store) == ["b", "c"] and ids(store, node=MOOD) == ["c"]
    for owner, name in ((OWNER, NODE), (OWNER, MOOD), ("bob@x", NODE)):
        consistent(store, owner, name)


def test_many_items_keep_numeric_order(tmp_path: Path) -> None:
    """Item keys are big-endian sequence numbers: order holds past 255 and 256."""
    store, apply = setup(tmp_path)
    assert ok(apply(configured(max_items=300)))
    names = [f"i{n}" for n in range(260)]
    for name in names:
        assert ok(apply(published(name)))
    assert ids(store) == names
    last = last_of(store)
    assert last is not None and last.id == "i259"


def test_last_item_of_a_node_followed_by_another(tmp_path: Path) -> None:
    """last_item must not step into the next node's (or account's) items."""
    store, apply = setup(tmp_path)
    assert ok(apply(configured(node="a", max_items=5), configured(node="b", max_items=5)))
    assert ok(apply(published("1", node="a"), published("2", node="a"), published("9", node="b")))
    a_last, b_last = last_of(store, node="a"), last_of(store, node="b")
    assert a_last is not None and a_last.id == "2"
    assert b_last is not None and b_last.id == "9"
    assert ok(apply(configured(node="c")))
    assert last_of(store, node="c") is None


# -- rejections ----------------------------------------------------------------------------------


def test_publish_to_a_missing_node_is_rejected(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert reason(apply(published("a"))).startswith("pubsub-item-not-found")
    assert node_of(store) is None and ids(store) == []
    assert entries(store, pep.ITEMS) == entries(store, pep.ITEM_IDS) == 0
    assert entries(store, "journal.rejected") == 1
    assert entries(store, "journal.events") == 0


def test_precondition_mismatch_is_rejected(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(max_items=5), published("a")))
    r = apply(published("b", preconditions={"access_model": "whitelist"}))
    assert reason(r) == "pubsub-precondition-not-met: access_model"
    assert ids(store) == ["a"]
    assert entries(store, "journal.rejected") == 1
    # Matching preconditions publish.
    assert ok(apply(published("c", preconditions={"access_model": "presence", "max_items": 5})))
    assert ids(store) == ["a", "c"]


def test_auto_create_with_preconditions_against_a_node_created_meanwhile(tmp_path: Path) -> None:
    """Two devices publish with publish-options to a new node: the later one's auto-create is
    a no-op and its preconditions fail against the first one's configuration."""
    store, apply = setup(tmp_path)
    assert ok(apply(configured(access_model="open"), published("a")))
    second = apply(
        configured(access_model="whitelist"),
        published("b", preconditions={"access_model": "whitelist"}),
    )
    assert reason(second).startswith("pubsub-precondition-not-met")
    row = node_of(store)
    assert row is not None and row.config.access_model == "open"
    assert ids(store) == ["a"]


def test_explicit_create_of_an_existing_node_is_rejected(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured("explicit", max_items=4), published("a")))
    assert reason(apply(configured("explicit", access_model="open"))).startswith("pubsub-conflict")
    row = node_of(store)
    assert row is not None and row.config == NodeConfig(max_items=4) and ids(store) == ["a"]


def test_auto_create_of_an_existing_node_keeps_its_configuration(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured("explicit", max_items=4, title="orig")))
    assert ok(apply(published("a")))
    with store.env.begin() as txn:
        before = digest(store, txn)
    assert ok(apply(configured("auto", access_model="open", max_items=1)))
    row = node_of(store)
    assert row is not None and row.config == NodeConfig(max_items=4, title="orig")
    assert ids(store) == ["a"]
    with store.env.begin() as txn:
        after = digest(store, txn)
    # Only the stream version moved.
    assert after != before
    assert row.seq == 1 and row.count == 1


def test_reconfiguring_a_missing_node_is_rejected(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert reason(apply(configured(""))).startswith("pubsub-item-not-found")
    assert node_of(store) is None


def test_reconfigure_keeps_or_replaces_the_whitelist(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    cfg = NodeConfig(access_model="whitelist").to_json()
    assert ok(apply(PepNodeConfigured(OWNER, NODE, cfg, "explicit", ["c@x", "b@x", "c@x"])))
    row = node_of(store)
    assert row is not None and row.whitelist == ["b@x", "c@x"]
    assert ok(apply(PepNodeConfigured(OWNER, NODE, cfg)))  # None: kept
    row = node_of(store)
    assert row is not None and row.whitelist == ["b@x", "c@x"]
    assert ok(apply(PepNodeConfigured(OWNER, NODE, cfg, whitelist=[])))
    row = node_of(store)
    assert row is not None and row.whitelist == []


def test_retract(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(max_items=5)))
    for i in "abc":
        assert ok(apply(published(i)))
    assert ok(apply(PepItemRetracted(OWNER, NODE, "c")))
    assert ids(store) == ["a", "b"] and item_of(store, "c") is None
    last = last_of(store)
    assert last is not None and last.id == "b"
    consistent(store)


def test_retract_of_a_missing_item_or_node_is_rejected(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert reason(apply(PepItemRetracted(OWNER, NODE, "a"))).startswith("pubsub-item-not-found")
    assert ok(apply(configured(), published("a")))
    assert reason(apply(PepItemRetracted(OWNER, NODE, "b"))) == (
        "pubsub-item-not-found: no such item"
    )
    assert ok(apply(PepItemRetracted(OWNER, NODE, "a")))
    assert reason(apply(PepItemRetracted(OWNER, NODE, "a"))).startswith("pubsub-item-not-found")
    row = node_of(store)
    assert row is not None and row.count == 0
    assert entries(store, "journal.rejected") == 3


def test_purge_empties_the_node(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(max_items=5), configured(node=MOOD)))
    for i in "abc":
        assert ok(apply(published(i)))
    assert ok(apply(published("m", node=MOOD)))
    assert ok(apply(PepNodePurged(OWNER, NODE)))
    row = node_of(store)
    assert row is not None and row.count == 0 and row.config.max_items == 5
    assert ids(store) == [] and item_of(store, "a") is None and last_of(store) is None
    assert ids(store, node=MOOD) == ["m"]
    # The node still takes items; sequence numbers keep rising.
    assert ok(apply(published("d")))
    assert ids(store) == ["d"]
    row = node_of(store)
    assert row is not None and row.seq == 4
    consistent(store)
    assert reason(apply(PepNodePurged(OWNER, "nope"))).startswith("pubsub-item-not-found")


def test_delete_removes_the_node_and_its_items(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(max_items=5), configured(node=MOOD)))
    for i in "ab":
        assert ok(apply(published(i), published(i, node=MOOD)))
    assert ok(apply(PepNodeDeleted(OWNER, NODE)))
    assert node_of(store) is None
    assert ids(store) == [] and item_of(store, "a") is None and last_of(store) is None
    assert ids(store, node=MOOD) == ["b"]
    assert entries(store, pep.ITEMS) == entries(store, pep.ITEM_IDS) == 1
    assert reason(apply(PepNodeDeleted(OWNER, NODE))).startswith("pubsub-item-not-found")
    assert reason(apply(published("c"))).startswith("pubsub-item-not-found")
    # Created again, it starts empty with its new configuration.
    assert ok(apply(configured("explicit", max_items=2), published("c")))
    assert ids(store) == ["c"]
    row = node_of(store)
    assert row is not None and row.config == NodeConfig(max_items=2) and row.seq == 1


def test_account_removed_removes_only_that_accounts_nodes(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    owners = ["al@x", "al@x.y", "alice@x", "al@xy"]
    for owner in owners:
        assert ok(apply(configured(owner=owner), configured(owner=owner, node=MOOD)))
        assert ok(apply(published("1", owner=owner), published("2", owner=owner, node=MOOD)))
    assert ok(apply(AccountRemoved("al@x")))
    with store.env.begin() as txn:
        assert pep.nodes(store, txn, "al@x") == []
        assert pep.items(store, txn, "al@x", NODE) == []
        assert pep.item(store, txn, "al@x", NODE, "1") is None
        assert pep.last_item(store, txn, "al@x", MOOD) is None
        for other in owners[1:]:
            assert [n.node for n in pep.nodes(store, txn, other)] == sorted([NODE, MOOD])
    for other in owners[1:]:
        consistent(store, other, NODE)
        consistent(store, other, MOOD)
    assert entries(store, pep.NODES) == 6
    assert entries(store, pep.ITEMS) == entries(store, pep.ITEM_IDS) == 6
    # The account's PEP starts over if it is registered again.
    assert reason(apply(published("3", owner="al@x"))).startswith("pubsub-item-not-found")


def test_account_removed_without_nodes_is_harmless(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(configured(owner="bob@x"), published("1", owner="bob@x")))
    assert ok(apply(AccountRemoved("al@x")))
    assert ids(store, owner="bob@x") == ["1"]


# -- caps ----------------------------------------------------------------------------------------


def test_caps_verified_answer_holds_for_everyone(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(CapsLearned("ver1", "sha-1", ["a", f"{MOOD}+notify"])))
    with store.env.begin() as txn:
        assert pep.caps_features(store, txn, "ver1") == ["a", f"{MOOD}+notify"]
        assert pep.caps_features(store, txn, "ver1", "bob@x/r") == ["a", f"{MOOD}+notify"]
        assert pep.caps_features(store, txn, "ver2") is None


def test_caps_unverified_answer_holds_for_that_jid_only(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(CapsLearned("ver1", "sha-1", ["evil"], jid="mallory@x/r")))
    with store.env.begin() as txn:
        assert pep.caps_features(store, txn, "ver1") is None
        assert pep.caps_features(store, txn, "ver1", "bob@x/r") is None
        assert pep.caps_features(store, txn, "ver1", "mallory@x/r") == ["evil"]
    # A verified answer afterwards wins for everyone, the per-jid one included.
    assert ok(apply(CapsLearned("ver1", "sha-1", ["good"])))
    with store.env.begin() as txn:
        assert pep.caps_features(store, txn, "ver1") == ["good"]
        assert pep.caps_features(store, txn, "ver1", "mallory@x/r") == ["good"]
        assert pep.caps_features(store, txn, "ver1", "bob@x/r") == ["good"]


def test_caps_per_jid_entries_do_not_shadow_another_ver(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(CapsLearned("v", "sha-1", ["x"], jid="a@x/r")))
    assert ok(apply(CapsLearned("v2", "sha-1", ["y"])))
    with store.env.begin() as txn:
        assert pep.caps_features(store, txn, "v", "a@x/r") == ["x"]
        assert pep.caps_features(store, txn, "v2", "a@x/r") == ["y"]
        assert pep.caps_features(store, txn, "v2\x00a@x/r") is None


# -- notifications -------------------------------------------------------------------------------


def test_notifications_are_rendered_from_the_committed_event() -> None:
    def committed(ev: Any) -> Committed:
        return Committed(7, 2, 1, env(ev))

    events: list[Any] = [
        published("a"),
        PepItemRetracted(OWNER, NODE, "a"),
        PepNodePurged(OWNER, NODE),
        PepNodeDeleted(OWNER, NODE),
    ]
    for ev in events:
        raw = pep.notification(committed(ev), ev)
        assert raw is not None
        msg = parse_fragment(raw.encode())
        assert msg.get("from") == OWNER and msg.get("id") == "pep-7-2"
        assert msg.get("type") == "headline" and msg.get("to") is None
        assert ev.TYPE in pep.NOTIFYING
    assert pep.notification(committed(configured()), configured()) is None
    assert "<p xmlns='urn:t'>a</p>" in (pep.notification(committed(events[0]), events[0]) or "")


# -- replay --------------------------------------------------------------------------------------


def scenario() -> list[list[Any]]:
    """Proposals touching every handler, rejected ones included."""
    return [
        [configured(max_items=3), published("a")],
        [published("b"), published("c"), published("d")],
        [published("b")],
        [configured("explicit")],  # rejected: exists
        [configured("auto", access_model="open")],  # no-op
        [configured(node=MOOD, persist_items=False, max_items=5), published("m1", node=MOOD)],
        [published("m2", node=MOOD, preconditions={"persist_items": False})],
        [published("m3", node=MOOD, preconditions={"persist_items": True})],  # rejected
        [PepItemRetracted(OWNER, NODE, "c")],
        [PepItemRetracted(OWNER, NODE, "zz")],  # rejected
        [configured(owner="al@x"), published("x", owner="al@x")],
        [configured(owner="al@x.y"), published("y", owner="al@x.y")],
        [CapsLearned("v1", "sha-1", ["f1", "f2+notify"])],
        [CapsLearned("v2", "sha-1", ["f3"], jid="al@x/r")],
        [configured("", max_items=1)],
        [PepNodePurged(OWNER, MOOD)],
        [published("m4", node=MOOD)],
        [AccountRemoved("al@x")],
        [PepNodeDeleted(OWNER, NODE)],
        [published("e")],  # rejected: deleted
        [configured("explicit", max_items=2), published("e"), published("f"), published("g")],
    ]


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(split=st.integers(min_value=1, max_value=5))
def test_replay_of_a_pep_scenario_gives_the_same_digest(tmp_path_factory, split: int) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("pep-replay")
    store, proj = fresh(root / "live")
    proposals = [[env(e) for e in p] for p in scenario()]
    index = accepted = rejected = 0
    for start in range(0, len(proposals), split):
        index += 1
        raw = proj.apply(index, command(*proposals[start : start + split]))
        for p, r in zip(proposals[start : start + split], json.loads(raw), strict=True):
            if r["ok"]:
                accepted += len(p)
            else:
                rejected += 1
    assert rejected == 4
    assert ids(store) == ["f", "g"]
    assert ids(store, node=MOOD) == ["m4"]
    assert ids(store, owner="al@x.y") == ["y"] and ids(store, owner="al@x") == []
    rebuilt, live, upto, count = rebuild(store, root / "rebuilt")
    assert rebuilt == live and upto == index and count == accepted
    # Entries re-fed after a crash are skipped: nothing changes.
    with store.env.begin() as txn:
        before = digest(store, txn)
    for again, start in enumerate(range(0, len(proposals), split), start=1):
        proj.apply(again, command(*proposals[start : start + split]))
    with store.env.begin() as txn:
        assert digest(store, txn) == before
