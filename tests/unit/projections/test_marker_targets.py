"""The marker_targets index: which message a marker's id names, newest first, within the bounds,
and the inbox reading up to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.projections.test_inbox import T0, setup
from xes.events.catalog import MessageRouted, MucRoomDestroyed
from xes.projections import inbox as inbox_view
from xes.projections import marker_targets as mt


def chat(sender: str, to: str, msg_id: str | None, **kw: Any) -> MessageRouted:
    xml = f"<message from='{sender}/1' to='{to}' type='chat'><body>x</body></message>"
    return MessageRouted(f"{sender}/1", to, "chat", xml, [], body=True, msg_id=msg_id, **kw)


def seq_of(results: list[dict[str, Any]]) -> int:
    assert all(r["ok"] for r in results), results
    index, pos, _ = results[0]["events"][0]
    return int(index) << 16 | int(pos)


def resolve(store, scope: bytes, marked: str) -> int | None:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return mt.resolve(store, txn, scope, marked)


def test_any_id_names_the_message_and_the_newest_wins(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    first = seq_of(apply(chat("a@x", "b@x", "m1", origin_id="o1", stanza_id="s1")))
    second = seq_of(apply(chat("a@x", "b@x", "m1", stanza_id="s2")))  # a client reused "m1"
    scope = mt.chat_scope("a@x", "b@x")
    assert resolve(store, scope, "o1") == first
    assert resolve(store, scope, "s1") == first
    assert resolve(store, scope, "m1") == second
    assert resolve(store, scope, "s2") == second
    # Only whole ids match, and only in their own scope (direction matters).
    assert resolve(store, scope, "m") is None
    assert resolve(store, scope, "1\x00m") is None
    assert resolve(store, mt.chat_scope("b@x", "a@x"), "m1") is None
    assert resolve(store, mt.chat_scope("a@x", "b@xy"), "m1") is None


def test_what_is_not_kept(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    scope = mt.chat_scope("a@x", "b@x")
    xml = (
        "<message from='a@x/1' to='b@x' type='chat'><received xmlns='urn:xmpp:receipts'/></message>"
    )
    apply(MessageRouted("a@x/1", "b@x", "chat", xml, [], msg_id="r1"))  # no body
    apply(chat("a@x", "b@x", "copy", received_at=T0))  # a re-routed copy
    apply(chat("a@x", "a@x", "self"))  # to one's own account
    apply(chat("a@x", "b@x", "x" * (mt.MAX_ID + 1)))
    with store.env.begin() as txn:
        assert txn.stat(store.db(mt.TARGETS))["entries"] == 0
    assert resolve(store, scope, "r1") is None


def test_bounds_by_count_and_age(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mt, "KEEP_PER_SCOPE", 3)
    store, apply = setup(tmp_path)
    scope = mt.chat_scope("a@x", "b@x")
    seqs = [seq_of(apply(chat("a@x", "b@x", f"m{i}"))) for i in range(5)]
    assert [resolve(store, scope, f"m{i}") for i in range(5)] == [None, None, *seqs[2:]]
    with store.env.begin() as txn:
        assert mt.oldest(store, txn, scope) == seqs[2]
    late = seq_of(apply(chat("a@x", "b@x", "late"), at=T0 + mt.KEEP_MS + 1))
    assert [resolve(store, scope, f"m{i}") for i in range(5)] == [None] * 5
    assert resolve(store, scope, "late") == late
    # Other scopes keep their own.
    apply(chat("c@x", "b@x", "m0"))
    assert resolve(store, mt.chat_scope("c@x", "b@x"), "m0") is not None
    assert resolve(store, scope, "late") == late


def test_a_destroyed_room_forgets_its_messages(tmp_path: Path) -> None:
    from tests.unit.projections.test_read_status import ROOM, say
    from tests.unit.projections.test_read_status import setup as room_setup

    store, apply = room_setup(tmp_path)
    apply(say("sa", "Alice", "m1"))
    assert resolve(store, mt.room_scope(ROOM), "sid-m1") is not None
    apply(MucRoomDestroyed(ROOM, by="a@x/1"))
    assert resolve(store, mt.room_scope(ROOM), "sid-m1") is None


def test_the_inbox_marker_reads_up_to_the_named_message(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    for i in range(4):
        apply(chat("a@x", "b@x", f"m{i}", stanza_id=f"s{i}", archived_by=["a@x", "b@x"]))
    xml = "<message from='b@x/1' to='a@x' type='chat'><displayed/></message>"

    def displayed(name: str) -> None:
        apply(MessageRouted("b@x/1", "a@x", "chat", xml, [], marker="displayed", marker_id=name))

    def unread() -> int:
        with store.env.begin() as txn:
            entry = inbox_view.entry(store, txn, "b@x", "a@x")
        assert entry is not None
        return entry.unread

    assert unread() == 4
    displayed("s1")  # by archive id: the first two are read
    assert unread() == 2
    displayed("m0")  # already read: nothing moves back
    assert unread() == 2
    displayed("nope")
    assert unread() == 2
    displayed("m3")
    assert unread() == 0
