"""The uploads projection: slots reserve quota, a stored file is recorded once, two nodes'
grants racing past the quota are refused at apply, deletions and account removal free usage,
retention reads, and replay gives the same digest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.unit.projections.test_projector import command, env, fresh
from xes.events.catalog import AccountRemoved, UploadDeleted, UploadSlotGranted, UploadStored
from xes.projections import uploads
from xes.projections.projector import digest, rebuild

OWNER = "alice@x"
T0 = 1_700_000_000_000


def granted(slot: str, size: int = 100, owner: str = OWNER, **kw: Any) -> UploadSlotGranted:
    values: dict[str, Any] = {
        "filename": f"{slot}.jpg",
        "content_type": "image/jpeg",
        "expires": T0 + 300_000,
        "quota": 1000,
        "max_open": 3,
        **kw,
    }
    return UploadSlotGranted(slot=slot, owner=owner, size=size, **values)


def stored(slot: str, owner: str = OWNER, started: int = T0 + 1000) -> UploadStored:
    return UploadStored(slot, owner, "ab" * 32, "n1", "https://n1", started)


def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    store, proj = fresh(tmp_path / "s")
    index = 0

    def apply(*proposals: list[Any], at: int = T0) -> list[dict[str, Any]]:
        nonlocal index
        index += 1
        envs = [[env(e, at=at) for e in p] for p in proposals]
        return json.loads(proj.apply(index, command(*envs)))

    return store, proj, apply


def usage(store: Any, owner: str = OWNER) -> uploads.Usage:
    with store.env.begin() as txn:
        return uploads.usage(store, txn, owner)


def test_grant_store_and_read(tmp_path: Path) -> None:
    store, _, apply = setup(tmp_path)
    assert apply([granted("s1")])[0]["ok"]
    assert usage(store) == uploads.Usage(bytes=100, files=0, open=1)
    assert apply([stored("s1")])[0]["ok"]
    assert usage(store) == uploads.Usage(bytes=100, files=1, open=0)
    with store.env.begin() as txn:
        row = uploads.slot(store, txn, "s1")
        assert row is not None and row.stored and row.node == "n1" and row.size == 100
        assert uploads.stored_before(store, txn, T0 + 1, 10) == ["s1"]
        assert uploads.expired_open(store, txn, T0 + 10**9, 10) == []
    # A second PUT of the same slot (on another node, say) is refused.
    (second,) = apply([stored("s1")])
    assert not second["ok"] and second["reason"].startswith("upload-conflict")


def test_quota_race_between_nodes_is_refused_at_apply(tmp_path: Path) -> None:
    """Two nodes each saw 600 of 1000 bytes free and granted 500: only the first fits."""
    store, _, apply = setup(tmp_path)
    assert apply([granted("s0", 400)])[0]["ok"]
    first, second = apply([granted("s1", 500)], [granted("s2", 500)])
    assert first["ok"]
    assert not second["ok"] and second["reason"].startswith("upload-quota")
    assert usage(store).bytes == 900
    with store.env.begin() as txn:
        assert uploads.slot(store, txn, "s2") is None


def test_open_slot_cap_and_expiry(tmp_path: Path) -> None:
    store, _, apply = setup(tmp_path)
    for i in range(3):
        assert apply([granted(f"s{i}", 10, expires=T0 + i)])[0]["ok"]
    (refused,) = apply([granted("s9", 10)])
    assert refused["reason"].startswith("upload-retry")
    with store.env.begin() as txn:
        assert uploads.expired_open(store, txn, T0 + 2, 10) == ["s0", "s1"]
    (late,) = apply([stored("s0", started=T0 + 5)])
    assert late["reason"] == "upload-expired"
    assert apply([UploadDeleted(["s0", "s1", "unknown"], "slot_expired")])[0]["ok"]
    assert usage(store) == uploads.Usage(bytes=10, files=0, open=1)
    with store.env.begin() as txn:
        assert uploads.deletions(store, txn) == 1


def test_account_removal_frees_everything(tmp_path: Path) -> None:
    store, _, apply = setup(tmp_path)
    apply([granted("s1")])
    apply([stored("s1")])
    apply([granted("s2")])
    apply([granted("b1", owner="bob@x")])
    assert apply([AccountRemoved(OWNER)])[0]["ok"]
    assert usage(store) == uploads.Usage()
    assert usage(store, "bob@x").open == 1
    with store.env.begin() as txn:
        assert uploads.slot(store, txn, "s1") is None
        assert uploads.stored_before(store, txn, T0 + 10**9, 10) == []
        assert uploads.deletions(store, txn) == 1
    # Removing an account without uploads is not a deletion for the disk sweeper.
    apply([AccountRemoved("carol@x")])
    with store.env.begin() as txn:
        assert uploads.deletions(store, txn) == 1
        live = digest(store, txn)
    rebuilt, live_again, _, _ = rebuild(store, tmp_path / "replay")
    assert rebuilt == live_again == live
