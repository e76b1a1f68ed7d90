"""The push projection: which messages trigger a registration (offline or detached device,
not a connected one, not a muted conversation), coalescing, acknowledgement, disabling."""

from __future__ import annotations

from pathlib import Path

from tests.unit.projections.test_inbox import chat, setup
from xes.events.catalog import (
    AccountRemoved,
    InboxUpdated,
    PushDeviceState,
    PushDisabled,
    PushEnabled,
    PushNotified,
    SessionBound,
    SmDetached,
    SmEnabled,
)
from xes.projections import push
from xes.projections.projector import digest, rebuild

T0 = 1_700_000_000_000


def due(store) -> list[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return [(r.owner, r.node, r.triggers) for r in push.due(store, txn, "push.x")]


def test_offline_device_is_due_connected_one_not(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(PushEnabled("a@x", "phone", "push.x", "n1", {"secret": ["s"]}))
    apply(PushEnabled("a@x", "tablet", "push.x", "n2"))
    apply(SessionBound("s1", "a@x/tablet", "node1", "b1"))
    apply(chat(1, "b@x/pc", "a@x"))
    assert due(store) == [("a@x", "n1", 1)]  # the tablet is connected
    apply(chat(2, "b@x/pc", "a@x"))
    assert due(store) == [("a@x", "n1", 2)]  # coalesced: one registration, two triggers
    with store.env.begin() as txn:
        reg = push.registration(store, txn, "a@x", "push.x", "n1")
    assert reg is not None and reg.sender == "b@x/pc" and reg.options == {"secret": ["s"]}
    apply(PushNotified("a@x", "push.x", "n1", reg.due))
    assert due(store) == []
    apply(chat(3, "a@x/tablet", "b@x"))  # one's own message pushes no one of one's own
    apply(chat(4, "b@x/pc", "a@x"))
    assert due(store) == [("a@x", "n1", 1)]
    # An acknowledgement of an older trigger leaves the later one due.
    apply(PushNotified("a@x", "push.x", "n1", reg.due))
    assert due(store) == [("a@x", "n1", 1)]


def test_detached_session_is_pushed_and_mute_holds_it(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(PushEnabled("a@x", "phone", "push.x", "n1"))
    apply(SessionBound("s1", "a@x/phone", "node1", "b1"), SmEnabled("s1", True, 300))
    apply(chat(1, "b@x/pc", "a@x"))
    assert due(store) == []
    apply(SmDetached("s1", T0 + 300_000, "node-down"))
    apply(chat(2, "b@x/pc", "a@x"))
    assert due(store) == [("a@x", "n1", 1)]
    apply(PushNotified("a@x", "push.x", "n1", 1 << 62))
    apply(InboxUpdated("a@x", "b@x", muted_until=T0 + 60_000))
    apply(chat(3, "b@x/pc", "a@x"), at=T0 + 1000)
    assert due(store) == []  # muted then
    apply(chat(4, "b@x/pc", "a@x"), at=T0 + 120_000)
    assert due(store) == [("a@x", "n1", 1)]  # the mute is over


def test_disable_one_node_or_all_and_account_removal(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    for node in ("n1", "n2", "n3"):
        apply(PushEnabled("a@x", node, "push.x", node))
    apply(chat(1, "b@x/pc", "a@x"))
    assert [n for _, n, _ in due(store)] == ["n1", "n2", "n3"]
    apply(PushDisabled("a@x", "push.x", "n2", "item-not-found"))
    assert [n for _, n, _ in due(store)] == ["n1", "n3"]
    apply(PushDisabled("a@x", "push.x"))
    assert due(store) == []
    apply(PushEnabled("a@x", "phone", "push.x", "n1"), chat(2, "b@x/pc", "a@x"))
    apply(AccountRemoved("a@x"))
    with store.env.begin() as txn:
        assert push.registrations(store, txn, "a@x") == [] and due(store) == []
    rebuilt, live, _, _ = rebuild(store, tmp_path / "replayed")
    assert rebuilt == live
    with store.env.begin() as txn:
        assert digest(store, txn) == live


def test_an_inactive_device_is_pushed_until_it_is_active_or_reconnects(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(PushEnabled("a@x", "phone", "push.x", "n1"))
    apply(SessionBound("s1", "a@x/phone", "node1", "b1"))
    apply(PushDeviceState("a@x", "phone", "s1", True))
    apply(chat(1, "b@x/pc", "a@x"))
    assert due(store) == [("a@x", "n1", 1)]
    apply(PushNotified("a@x", "push.x", "n1", 1 << 62))
    apply(PushDeviceState("a@x", "phone", "s1", False))
    apply(chat(2, "b@x/pc", "a@x"))
    assert due(store) == []
    # A stale "inactive" of an earlier session does not hold for the device's next session.
    apply(PushDeviceState("a@x", "phone", "s1", True))
    apply(SessionBound("s2", "a@x/phone", "node1", "b1"))
    apply(chat(3, "b@x/pc", "a@x"))
    assert due(store) == []
