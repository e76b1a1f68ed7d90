"""The archive projection: rows per owner in log order, paging, indexes, dedup, retention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.projections.test_projector import command, env, fresh
from xes.events.catalog import (
    AccountRemoved,
    ArchiveExpired,
    ArchivePrefsSet,
    MessageRouted,
)
from xes.projections import archive
from xes.projections.archive import ArchiveQuery, ItemNotFound
from xes.stanza.archiving import Prefs

T0 = 1_700_000_000_000


def routed(i: int, sender: str = "b@x/pc", to: str = "a@x", **kw) -> MessageRouted:  # type: ignore[no-untyped-def]
    xml = f"<message from='{sender}' to='{to}' type='chat'><body>m{i}</body></message>"
    kw.setdefault("archived_by", [to.split("/")[0], sender.split("/")[0]])
    return MessageRouted(sender, to, "chat", xml, [], None, stanza_id=f"id{i}", **kw)


def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    store, proj = fresh(tmp_path / "s")
    index = 0

    def apply(*events, at: int = T0) -> list[dict]:  # type: ignore[no-untyped-def]
        nonlocal index
        index += 1
        return json.loads(proj.apply(index, command([env(e, at=at) for e in events])))

    return store, apply


def page(store, owner: str = "a@x", **kw) -> tuple[list[str], archive.Page]:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        p = archive.query(store, txn, owner, ArchiveQuery(**kw))
    return [m.id for m in p.items], p


def test_pages_forwards_backwards_and_by_time(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    for i in range(10):
        apply(routed(i), at=T0 + i * 1000)
    ids, p = page(store, max=4)
    assert ids == ["id0", "id1", "id2", "id3"] and not p.complete and p.count == 10
    ids, p = page(store, max=4, after="id7")
    assert ids == ["id8", "id9"] and p.complete
    ids, p = page(store, max=3, before="")
    assert ids == ["id7", "id8", "id9"] and not p.complete
    ids, p = page(store, max=3, before="id3")
    assert ids == ["id0", "id1", "id2"] and p.complete
    ids, p = page(store, start=T0 + 2000, end=T0 + 4000)
    assert ids == ["id2", "id3", "id4"] and p.count is None
    ids, _ = page(store, start=T0 + 2500, end=T0 + 2600)
    assert ids == []
    ids, _ = page(store, after_id="id5", before_id="id8")
    assert ids == ["id6", "id7"]
    ids, _ = page(store, ids=("id9", "id2"))
    assert ids == ["id2", "id9"]
    ids, p = page(store, max=0)
    assert ids == [] and p.count == 10 and not p.complete
    with pytest.raises(ItemNotFound):
        page(store, after="nope")
    with pytest.raises(ItemNotFound):
        page(store, ids=("id1", "nope"))


def test_peer_filter_bare_and_full(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(routed(0, sender="b@x/pc"))
    apply(routed(1, sender="c@x/pc"))
    apply(routed(2, sender="b@x/phone"))
    assert page(store, with_="b@x")[0] == ["id0", "id2"]
    assert page(store, with_="b@x/phone")[0] == ["id2"]
    assert page(store, with_="c@x", before="")[0] == ["id1"]
    # The sender's archive holds the same messages as outgoing, with the recipient as peer.
    with store.env.begin() as txn:
        p = archive.query(store, txn, "b@x", ArchiveQuery(with_="a@x"))
    assert [(m.id, m.outgoing, m.peer) for m in p.items] == [
        ("id0", True, "a@x"),
        ("id2", True, "a@x"),
    ]


def test_times_are_monotonic_per_archive(tmp_path: Path) -> None:
    """A proposer with a slow clock cannot stamp a message before the one archived before it."""
    store, apply = setup(tmp_path)
    apply(routed(0), at=T0 + 5000)
    apply(routed(1), at=T0 + 1000)  # another node's clock is behind
    with store.env.begin() as txn:
        items = archive.query(store, txn, "a@x", ArchiveQuery()).items
    assert [m.at for m in items] == [T0 + 5000, T0 + 5000]
    assert page(store, start=T0 + 5000)[0] == ["id0", "id1"]


def test_origin_id_archived_once_and_only_what_is_listed(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(routed(0, origin_id="o-1"))
    apply(routed(1, origin_id="o-1"))  # the same message re-sent
    apply(routed(2, archived_by=["b@x"]))  # recipient's preferences said never
    apply(routed(3, archived_by=[]))
    assert page(store)[0] == ["id0"]
    assert page(store, owner="b@x")[0] == ["id0", "id2"]
    with store.env.begin() as txn:
        assert archive.has_origin(store, txn, "b@x", "o-1")
        assert not archive.has_origin(store, txn, "a@x", "o-1")


def test_prefs_retention_and_account_removal(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(ArchivePrefsSet("a@x", "roster", ["c@x"], ["d@x"]))
    with store.env.begin() as txn:
        assert archive.prefs(store, txn, "a@x", "always") == Prefs("roster", ("c@x",), ("d@x",))
        assert archive.prefs(store, txn, "z@x", "never") == Prefs("never")
    for i in range(6):
        apply(routed(i, origin_id=f"o{i}"), at=T0 + i * 1000)
    apply(ArchiveExpired("x", T0 + 3000, 4))  # limit: four rows (two messages, two archives)
    assert page(store)[0] == ["id2", "id3", "id4", "id5"]
    apply(ArchiveExpired("x", T0 + 3000, 4))
    assert page(store)[0] == ["id3", "id4", "id5"]
    assert page(store)[1].count == 3
    with store.env.begin() as txn:
        assert not archive.expiry_pending(store, txn, "x", T0 + 3000)
        assert archive.expiry_pending(store, txn, "x", T0 + 3001)
        assert not archive.has_origin(store, txn, "b@x", "o0")
        first, last = archive.edges(store, txn, "a@x") or (None, None)
        assert first is not None and last is not None
        assert (first.id, last.id) == ("id3", "id5")
    apply(ArchiveExpired("other.domain", T0 + 10_000, 100))
    assert page(store)[0] == ["id3", "id4", "id5"]
    apply(AccountRemoved("a@x"))
    assert page(store)[0] == []
    with store.env.begin() as txn:
        assert archive.edges(store, txn, "a@x") is None
        assert archive.count(store, txn, "a@x") == 0
    # b@x's archive is untouched; a later expiry finds no stale keys of a@x.
    assert page(store, owner="b@x")[0] == ["id3", "id4", "id5"]
    apply(ArchiveExpired("x", T0 + 10_000, 100))
    assert page(store, owner="b@x")[0] == []
    with store.env.begin() as txn:
        assert txn.stat(store.db(archive.EXPIRY))["entries"] == 0
