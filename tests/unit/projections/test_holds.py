"""Legal holds (ADR 0024): held archive rows outlive retention, come back to expiry when the
hold is lifted, and a held account cannot be removed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.projections.test_archive import T0, page, routed
from tests.unit.projections.test_muc import ROOM, archived, ok, opened, said
from tests.unit.projections.test_muc import setup as muc_setup
from tests.unit.projections.test_projector import command, env, fresh
from xes.events.catalog import (
    AccountRegistered,
    AccountRemoved,
    ArchiveExpired,
    HoldLifted,
    HoldPlaced,
    MucRoomDestroyed,
)
from xes.projections import accounts, archive, holds


def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    store, proj = fresh(tmp_path / "s")
    index = 0

    def apply(*events, at: int = T0) -> dict:  # type: ignore[no-untyped-def]
        nonlocal index
        index += 1
        return json.loads(proj.apply(index, command([env(e, at=at) for e in events])))[0]

    return store, apply


def placed(hold: str, target: str) -> HoldPlaced:
    return HoldPlaced(hold, target, "case 17", "auditor", 1000, "host")


def lifted(hold: str, target: str) -> HoldLifted:
    return HoldLifted(hold, target, "case closed", "auditor", 1000, "host")


def conversation(tmp_path: Path):  # type: ignore[no-untyped-def]
    """a@x hears from b@x (m0-m2) and c@x (m3-m5), a second apart."""
    store, apply = setup(tmp_path)
    for i in range(6):
        sender = "b@x/pc" if i < 3 else "c@x/pc"
        assert apply(routed(i, sender=sender), at=T0 + i * 1000)["ok"]
    return store, apply


def test_a_conversation_hold_keeps_both_sides_until_lifted(tmp_path: Path) -> None:
    store, apply = conversation(tmp_path)
    target = holds.conversation_target("b@x", "a@x")
    assert target == "conversation:a@x b@x"
    assert apply(placed("h-1", target))["ok"]
    assert apply(ArchiveExpired("x", T0 + 10_000, 100))["ok"]
    # Retention took everything but the held conversation, on both sides.
    assert page(store)[0] == ["id0", "id1", "id2"]
    assert page(store, owner="b@x")[0] == ["id0", "id1", "id2"]
    assert page(store, owner="c@x")[0] == []
    with store.env.begin() as txn:
        # Set aside, so expiry is not due again (the leader would propose for ever).
        assert not archive.expiry_pending(store, txn, "x", T0 + 10_000)
    assert apply(ArchiveExpired("x", T0 + 10_000, 100))["ok"]
    assert page(store)[0] == ["id0", "id1", "id2"]
    assert apply(lifted("h-1", target))["ok"]
    with store.env.begin() as txn:
        assert archive.expiry_pending(store, txn, "x", T0 + 10_000)
        assert holds.in_force(store, txn) == []
    assert page(store)[0] == ["id0", "id1", "id2"]  # lifting deletes nothing by itself
    assert apply(ArchiveExpired("x", T0 + 10_000, 100))["ok"]
    assert page(store)[0] == [] and page(store, owner="b@x")[0] == []


def test_a_user_hold_covers_their_archive_and_their_peers_copies(tmp_path: Path) -> None:
    store, apply = conversation(tmp_path)
    assert apply(placed("h-c", holds.user_target("c@x")))["ok"]
    assert apply(ArchiveExpired("x", T0 + 10_000, 100))["ok"]
    assert page(store)[0] == ["id3", "id4", "id5"]  # a@x's copies of what c@x said
    assert page(store, owner="c@x")[0] == ["id3", "id4", "id5"]
    assert page(store, owner="b@x")[0] == []


def test_overlapping_holds_keep_rows_until_the_last_is_lifted(tmp_path: Path) -> None:
    store, apply = conversation(tmp_path)
    assert apply(placed("h-u", holds.user_target("a@x")))["ok"]
    assert apply(placed("h-c", holds.conversation_target("a@x", "b@x")))["ok"]
    assert apply(ArchiveExpired("x", T0 + 10_000, 100))["ok"]
    assert page(store)[0] == [f"id{i}" for i in range(6)]
    assert apply(lifted("h-u", holds.user_target("a@x")))["ok"]
    assert apply(ArchiveExpired("x", T0 + 10_000, 100))["ok"]
    # The conversation hold still keeps b@x's part; c@x's went with the user hold.
    assert page(store)[0] == ["id0", "id1", "id2"]
    assert apply(lifted("h-c", holds.conversation_target("a@x", "b@x")))["ok"]
    assert apply(ArchiveExpired("x", T0 + 10_000, 100))["ok"]
    assert page(store)[0] == []


def test_a_held_account_cannot_be_removed(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert apply(AccountRegistered("a@x", {}))["ok"]
    assert apply(placed("h-1", holds.conversation_target("a@x", "z@y")))["ok"]
    refused = apply(AccountRemoved("a@x"))
    assert not refused["ok"] and refused["reason"].startswith("held: a@x is under legal hold h-1")
    with store.env.begin() as txn:
        assert accounts.exists(store, txn, "a@x")
    assert apply(lifted("h-1", holds.conversation_target("a@x", "z@y")))["ok"]
    assert apply(AccountRemoved("a@x"))["ok"]


def test_a_held_room_keeps_its_archive_when_destroyed(tmp_path: Path) -> None:
    store, apply = muc_setup(tmp_path)
    opened(apply)
    assert ok(apply(said("sa", "Alice", "vitals")))
    target = holds.room_target(ROOM)
    assert ok(apply(placed("h-r", target)))
    assert ok(apply(MucRoomDestroyed(ROOM, "", "", "operator")))
    assert [i for i, _ in archived(store)] == ["sid-vitals"]
    assert ok(apply(ArchiveExpired("muc.x", T0 + 10_000, 100)))
    assert [i for i, _ in archived(store)] == ["sid-vitals"]
    assert ok(apply(lifted("h-r", target)))
    assert ok(apply(ArchiveExpired("muc.x", T0 + 10_000, 100)))
    assert archived(store) == []


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (placed("h-1", "user:"), "hold-bad-target"),
        (placed("h-1", "conversation:b@x a@x"), "hold-bad-target"),
        (placed("h-1", "mailbox:a@x"), "hold-bad-target"),
        (lifted("h-9", "user:a@x"), "hold-unknown"),
    ],
)
def test_malformed_holds_are_refused(tmp_path: Path, event: object, reason: str) -> None:
    _, apply = setup(tmp_path)
    answer = apply(event)
    assert not answer["ok"] and answer["reason"].startswith(reason)


def test_a_lift_must_name_what_the_hold_covers(tmp_path: Path) -> None:
    _, apply = setup(tmp_path)
    assert apply(placed("h-1", "user:a@x"))["ok"]
    assert not apply(placed("h-1", "user:b@x"))["ok"]  # ids are unique
    assert apply(lifted("h-1", "user:b@x"))["reason"].startswith("hold-target-mismatch")
