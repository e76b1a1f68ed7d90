"""The inbox projection: entries in activity order, exact unread counts under any interleaving
of messages, markers and explicit changes, room members, pushes for watching managed sessions."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.unit.projections.test_muc import created, joined, ok
from tests.unit.projections.test_projector import command, env, fresh
from xes.events.catalog import (
    AccountRegistered,
    AccountRemoved,
    InboxUpdated,
    InboxWatched,
    MessageRouted,
    MucAffiliationSet,
    MucMessageSent,
    MucRoomDestroyed,
    SessionBound,
    SmEnabled,
)
from xes.projections import inbox
from xes.projections import stream_mgmt as sm
from xes.projections.projector import digest, rebuild

T0 = 1_700_000_000_000
ROOM = "room@muc.x"


def chat(n: int, sender: str, to: str, **kw: Any) -> MessageRouted:
    """Message ``n`` from ``sender`` (full JID) to ``to`` with a body, archived by both."""
    xml = f"<message from='{sender}' to='{to}' type='chat' id='m{n}'><body>b{n}</body></message>"
    kw.setdefault("archived_by", sorted({sender.split("/")[0], to.split("/")[0]}))
    return MessageRouted(
        sender, to, "chat", xml, [], stanza_id=f"s{n}", body=True, msg_id=f"m{n}", **kw
    )


def marker(sender: str, to: str, marked: str, kind: str = "displayed") -> MessageRouted:
    xml = f"<message from='{sender}' to='{to}'><{kind} xmlns='urn:xmpp:chat-markers:0'/></message>"
    return MessageRouted(sender, to, "chat", xml, [], marker=kind, marker_id=marked)


def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    store, proj = fresh(tmp_path / "s")
    index = 0

    def apply(*events: Any, at: int = T0) -> list[dict[str, Any]]:
        nonlocal index
        index += 1
        return json.loads(proj.apply(index, command([env(e, at=at) for e in events])))

    return store, apply


def entry(store, owner: str, conv: str) -> inbox.Entry | None:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return inbox.entry(store, txn, owner, conv)


def listing(store, owner: str) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return [(e.conversation, e.unread) for e in inbox.by_activity(store, txn, owner)]


def totals(store, owner: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return inbox.summary(store, txn, owner)


def test_counts_last_message_and_activity_order(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(chat(1, "b@x/pc", "a@x"))
    apply(chat(2, "c@x/pc", "a@x"))
    apply(chat(3, "b@x/pc", "a@x/phone"))
    assert listing(store, "a@x") == [("b@x", 2), ("c@x", 1)]
    b = entry(store, "a@x", "b@x")
    assert b is not None and (b.last, b.unread) == ("s3", 2)
    # The sender's side: the entry, nothing unread.
    assert listing(store, "b@x") == [("a@x", 0)]
    assert totals(store, "a@x") == {"entries": 2, "unread_conversations": 2, "unread": 3}
    # Alice answers Carol: Carol's conversation moves up and is read.
    apply(chat(4, "a@x/pc", "c@x"))
    assert listing(store, "a@x") == [("c@x", 0), ("b@x", 2)]
    assert totals(store, "a@x") == {"entries": 2, "unread_conversations": 1, "unread": 2}


def test_a_displayed_marker_reads_up_to_its_message_never_beyond_or_back(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    for n in range(1, 6):
        apply(chat(n, "b@x/pc", "a@x"))
    apply(marker("a@x/phone", "b@x", "m3"))
    assert entry(store, "a@x", "b@x").unread == 2  # type: ignore[union-attr]
    apply(marker("a@x/tablet", "b@x/pc", "m2"))  # an older one from another device
    assert entry(store, "a@x", "b@x").unread == 2  # type: ignore[union-attr]
    apply(marker("a@x/phone", "b@x", "nonsense"))
    apply(marker("a@x/phone", "b@x", "m5", kind="received"))  # receipts do not read
    assert entry(store, "a@x", "b@x").unread == 2  # type: ignore[union-attr]
    apply(marker("a@x/phone", "b@x", "s5", kind="acknowledged"))  # by archive id too
    assert entry(store, "a@x", "b@x").unread == 0  # type: ignore[union-attr]
    assert totals(store, "a@x") == {"entries": 1, "unread_conversations": 0, "unread": 0}
    # A marker for another conversation's id changes nothing here.
    apply(chat(6, "c@x/pc", "a@x"))
    apply(marker("a@x/phone", "b@x", "m6"))
    assert entry(store, "a@x", "c@x").unread == 1  # type: ignore[union-attr]


def test_explicit_read_mark_unread_and_properties(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    for n in range(1, 4):
        apply(chat(n, "b@x/pc", "a@x"))
    apply(chat(4, "c@x/pc", "a@x"))
    assert ok(apply(InboxUpdated("a@x", "b@x", read=True)))
    assert entry(store, "a@x", "b@x").unread == 0  # type: ignore[union-attr]
    apply(InboxUpdated("a@x", "b@x", read=False))
    assert entry(store, "a@x", "b@x").unread == 1  # type: ignore[union-attr]
    apply(InboxUpdated("a@x", "b@x", pinned=True, archived=True, muted_until=T0 + 5))
    got = entry(store, "a@x", "b@x")
    assert got is not None and (got.pinned, got.archived, got.muted_until) == (True, True, T0 + 5)
    # Pinned first, whatever the activity.
    assert [c for c, _ in listing(store, "a@x")] == ["b@x", "c@x"]
    # A new message brings an archived entry back to the inbox box; pin and mute stay.
    apply(chat(5, "b@x/pc", "a@x"))
    got = entry(store, "a@x", "b@x")
    assert got is not None and (got.pinned, got.archived, got.unread) == (True, False, 2)
    apply(InboxUpdated("a@x", "nobody@x", read=True))  # no entry: nothing happens
    assert entry(store, "a@x", "nobody@x") is None


def test_rsm_cursor_pages_in_activity_order(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    for n in range(10):
        apply(chat(n, f"u{n}@x/pc", "a@x"))
    with store.env.begin() as txn:
        first = list(inbox.by_activity(store, txn, "a@x"))[:4]
        after = list(inbox.by_activity(store, txn, "a@x", first[-1].cursor))
        with pytest.raises(ValueError):
            list(inbox.by_activity(store, txn, "a@x", "garbage"))
    assert [e.conversation for e in first] == [f"u{n}@x" for n in (9, 8, 7, 6)]
    assert [e.conversation for e in after] == [f"u{n}@x" for n in (5, 4, 3, 2, 1, 0)]


def test_room_messages_count_for_members_and_occupants(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    for bare in ("a@x", "b@x", "c@x", "d@x"):
        apply(AccountRegistered(bare, {}))
    for sid, jid in (("sa", "a@x/1"), ("sb", "b@x/1")):
        apply(SessionBound(sid, jid, "n1", "b1"))
    assert ok(apply(created(members_only=False), joined("sa", "Alice")))
    assert ok(apply(joined("sb", "Bob")))
    assert ok(apply(MucAffiliationSet(ROOM, "c@x", "member", by="a@x/1")))  # Carol: not present
    xml = f"<message from='{ROOM}/Alice' type='groupchat' id='g1'><body>hi</body></message>"
    assert ok(apply(MucMessageSent(ROOM, "sa", "Alice", xml, "r1", body=True, msg_id="g1")))
    assert entry(store, "a@x", ROOM).unread == 0  # type: ignore[union-attr]
    assert entry(store, "b@x", ROOM).unread == 1  # type: ignore[union-attr]
    assert entry(store, "c@x", ROOM).unread == 1  # type: ignore[union-attr]
    assert entry(store, "d@x", ROOM) is None
    mark = (
        "<message type='groupchat'><displayed xmlns='urn:xmpp:chat-markers:0' id='r1'/></message>"
    )
    assert ok(
        apply(MucMessageSent(ROOM, "sb", "Bob", mark, "r2", marker="displayed", marker_id="r1"))
    )
    assert entry(store, "b@x", ROOM).unread == 0  # type: ignore[union-attr]
    assert entry(store, "c@x", ROOM).unread == 1  # type: ignore[union-attr]
    assert ok(apply(MucRoomDestroyed(ROOM, "bye", "", "a@x/1")))
    assert entry(store, "c@x", ROOM) is None and listing(store, "c@x") == []
    assert totals(store, "c@x") == {"entries": 0, "unread_conversations": 0, "unread": 0}


def test_watching_managed_sessions_get_the_changed_entry_as_an_outbox_row(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(SessionBound("s1", "a@x/phone", "n1", "b1"), SmEnabled("s1", True, 300))
    apply(SessionBound("s2", "a@x/tablet", "n1", "b1"))
    apply(InboxWatched("a@x", "s1"), InboxWatched("a@x", "s2"), InboxWatched("a@x", "gone"))
    apply(chat(1, "b@x/pc", "a@x"))
    apply(marker("a@x/tablet", "b@x", "m1"))
    with store.env.begin() as txn:
        rows = [r.xml for r in sm.rows(store, txn, "s1")]
        assert inbox.watchers(store, txn, "a@x") == ["s1", "s2"]  # the ended one is forgotten
    assert len(rows) == 1 and "unread='0'" in rows[0].replace('"', "'") and "b@x" in rows[0]


def test_account_removal_drops_the_inbox(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(chat(1, "b@x/pc", "a@x"))
    apply(AccountRemoved("a@x"))
    assert listing(store, "a@x") == [] and totals(store, "a@x")["entries"] == 0


def test_random_races_end_with_the_counts_the_history_implies(tmp_path: Path) -> None:
    """Messages from three peers, answers and markers from two devices, explicit reads, in a
    random order (as several nodes would commit them): every count equals a plain reading of
    the history, the totals are the sum of the entries, and a replay gives the same digest."""
    rng = random.Random(16)
    store, apply = setup(tmp_path)
    peers = ["b@x", "c@x", "d@x"]
    received: dict[str, list[str]] = {p: [] for p in peers}
    read = dict.fromkeys(peers, 0)
    for n in range(400):
        peer = rng.choice(peers)
        roll = rng.random()
        if roll < 0.55:
            apply(chat(n, f"{peer}/pc", rng.choice(["a@x", "a@x/phone"])))
            received[peer].append(f"m{n}")
        elif roll < 0.62:
            apply(chat(n, rng.choice(["a@x/phone", "a@x/tablet"]), peer))
            read[peer] = len(received[peer])  # one's own message reads the conversation
        elif roll < 0.66:
            apply(InboxUpdated("a@x", peer, read=True))
            if received[peer]:
                read[peer] = len(received[peer])
        elif received[peer]:
            k = rng.randrange(len(received[peer]))
            kind = rng.choice(["displayed", "received", "acknowledged"])
            apply(marker(rng.choice(["a@x/phone", "a@x/tablet"]), peer, received[peer][k], kind))
            if kind != "received":
                read[peer] = max(read[peer], k + 1)
        for p in peers:
            got = entry(store, "a@x", p)
            assert (got.unread if got else 0) == len(received[p]) - read[p], (n, p)
    total = totals(store, "a@x")
    assert total["unread"] == sum(len(received[p]) - read[p] for p in peers)
    assert total["unread_conversations"] == sum(1 for p in peers if len(received[p]) > read[p])
    rebuilt, live, _, _ = rebuild(store, tmp_path / "replayed")
    assert rebuilt == live
    with store.env.begin() as txn:
        assert digest(store, txn) == live
