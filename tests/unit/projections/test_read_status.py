"""The read_status projection: watermarks per member, implied marking, never backwards, unknown
ids, the bound, notifications (coalesced, in outboxes and for delivery), determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.projections.test_projector import command, env, fresh
from xes.events.catalog import (
    MessageRouted,
    MucAffiliationSet,
    MucMessageSent,
    MucOccupantJoined,
    MucRoomCreated,
    MucRoomDestroyed,
    PresenceUpdated,
    SessionBound,
    SmEnabled,
)
from xes.muc.model import RoomConfig
from xes.projections import marker_targets
from xes.projections import read_status as rs
from xes.projections import stream_mgmt as sm
from xes.projections.projector import rebuild

ROOM = "room@muc.x"
T0 = 1_700_000_000_000
SESSIONS = {"sa": "a@x/1", "sb": "b@x/1", "sc": "c@x/1", "sb2": "b@x/2"}
MARKERS = "urn:xmpp:chat-markers:0"


def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Alice (owner), Bob and Carol (members) in a members-only room; Dave a member not in
    it. Alice's session is available and uses stream management."""
    store, proj = fresh(tmp_path / "s")
    index = 0

    def apply(*events: Any, at: int = T0) -> list[dict[str, Any]]:
        nonlocal index
        index += 1
        results = json.loads(proj.apply(index, command([env(e, at=at) for e in events])))
        assert all(r["ok"] for r in results), results
        return results

    for session, jid in SESSIONS.items():
        apply(SessionBound(session, jid, "n1", "b1"))
    apply(PresenceUpdated("sa", "a@x/1", True, 0, "<presence/>"))
    apply(SmEnabled("sa", True, 300))
    config = RoomConfig(members_only=True, persistent=True).to_json()
    apply(
        MucRoomCreated(ROOM, "a@x/1", config, False, "secret"),
        MucOccupantJoined(ROOM, "Alice", "a@x/1", "sa", ""),
    )
    for bare in ("b@x", "c@x", "d@x"):
        apply(MucAffiliationSet(ROOM, bare, "member", "", "a@x/1"))
    apply(MucOccupantJoined(ROOM, "Bob", "b@x/1", "sb", ""))
    apply(MucOccupantJoined(ROOM, "Carol", "c@x/1", "sc", ""))
    return store, apply


def say(session: str, nick: str, name: str, *, track: bool = True) -> MucMessageSent:
    xml = f"<message from='{ROOM}/{nick}' type='groupchat' id='{name}'><body>x</body></message>"
    return MucMessageSent(
        ROOM, session, nick, xml, f"sid-{name}", body=True, msg_id=name, track=track
    )


def mark(session: str, nick: str, kind: str, names: str) -> MucMessageSent:
    xml = f"<message from='{ROOM}/{nick}' type='groupchat'><{kind} xmlns='{MARKERS}'/></message>"
    return MucMessageSent(
        ROOM, session, nick, xml, f"sid-mark-{kind}-{names}", marker=kind, marker_id=names
    )


def status(store, name: str, scope: bytes | None = None) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        t = rs.find(store, txn, scope or rs.room_scope(ROOM), name)
    assert t is not None, name
    members = [m for m, _ in t.audience]
    return {
        "displayed": sorted(t.displayed),
        "received": sorted(set(t.received) - set(t.displayed)),
        "pending": [m for m in members if m not in t.received],
    }


def notified(store, index_seq: int) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return rs.notifications(store, txn, index_seq)


def seq_of(results: list[dict[str, Any]]) -> int:
    index, pos, _ = results[0]["events"][0]
    return int((index << 16) | pos)


def test_watermarks_implied_marking_and_never_backwards(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(say("sa", "Alice", "m1"))
    apply(say("sa", "Alice", "m2"))
    apply(say("sb", "Bob", "m3", track=False))  # not followed, but markers may name it
    # The audience when sent: members and occupants, without the sender (Dave is a member).
    assert status(store, "sid-m1") == {
        "displayed": [],
        "received": [],
        "pending": ["b@x", "c@x", "d@x"],
    }
    # Bob displays m3: m1 and m2 are displayed (and received) by Bob too (XEP-0333 §3).
    res = apply(mark("sb", "Bob", "displayed", "sid-m3"))
    assert status(store, "sid-m1")["displayed"] == ["b@x"]
    assert status(store, "sid-m2")["displayed"] == ["b@x"]
    (row,) = notified(store, seq_of(res))
    assert row[0] == "a@x"
    assert row[1].count("<item ") == 2 and "sid-m1" in row[1] and "sid-m2" in row[1]
    assert "kind='displayed'" in row[1] or 'kind="displayed"' in row[1]
    # Carol's receipt for m1 (a XEP-0184 <received/> arrives as marker "received").
    apply(mark("sc", "Carol", "received", "sid-m1"))
    assert status(store, "sid-m1") == {
        "displayed": ["b@x"],
        "received": ["c@x"],
        "pending": ["d@x"],
    }
    assert status(store, "sid-m2")["pending"] == ["c@x", "d@x"]
    # Going back changes nothing and notifies nobody.
    res = apply(mark("sb", "Bob", "received", "sid-m1"))
    assert notified(store, seq_of(res)) == []
    assert status(store, "sid-m1")["displayed"] == ["b@x"]
    # Carol displays m1 after having received it: displayed now, m2 still only pending.
    res = apply(mark("sc", "Carol", "displayed", "sid-m1"))
    assert status(store, "sid-m1")["displayed"] == ["b@x", "c@x"]
    assert status(store, "sid-m2")["pending"] == ["c@x", "d@x"]
    (row,) = notified(store, seq_of(res))
    assert row[1].count("<item ") == 1


def test_unknown_ids_and_the_senders_own_markers_change_nothing(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(say("sa", "Alice", "m1"))
    apply(mark("sb", "Bob", "displayed", "no-such-id"))
    with store.env.begin() as txn:
        assert txn.stat(store.db(rs.MARKS))["entries"] == 0  # no watermark moved
    assert status(store, "sid-m1")["pending"] == ["b@x", "c@x", "d@x"]
    res = apply(mark("sa", "Alice", "displayed", "sid-m1"))
    assert notified(store, seq_of(res)) == []
    assert status(store, "sid-m1")["displayed"] == []
    with store.env.begin() as txn:
        assert rs.find(store, txn, rs.room_scope(ROOM), "nothing") is None


def test_notifications_reach_the_managed_outbox_with_the_whois_rule(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(say("sa", "Alice", "m1"))
    apply(mark("sb", "Bob", "displayed", "sid-m1"))
    with store.env.begin() as txn:
        xmls = [r.xml for r in sm.rows(store, txn, "sa")]
    notes = [x for x in xmls if "urn:xes:read-status:0" in x]
    assert len(notes) == 1
    # Alice owns the room: she sees Bob's real JID even though the room is semi-anonymous.
    assert "b@x" in notes[0] and "Bob" in notes[0] and "to='a@x/1'" in notes[0]


def test_non_moderator_originator_sees_no_real_jids(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    res = apply(say("sb", "Bob", "m1"))
    res = apply(mark("sc", "Carol", "displayed", "sid-m1"))
    (row,) = notified(store, seq_of(res))
    assert row[0] == "b@x"
    assert "Carol" in row[1] and "c@x" not in row[1] and "occupant-id" in row[1]


def test_the_bound_forgets_the_oldest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(marker_targets, "KEEP_PER_SCOPE", 3)
    store, apply = setup(tmp_path)
    for name in ("m1", "m2", "m3", "m4"):
        apply(say("sa", "Alice", name))
    with store.env.begin() as txn:
        assert rs.find(store, txn, rs.room_scope(ROOM), "sid-m1") is None
        assert rs.find(store, txn, rs.room_scope(ROOM), "m1") is None
        assert rs.find(store, txn, rs.room_scope(ROOM), "sid-m2") is not None
    res = apply(mark("sb", "Bob", "displayed", "sid-m1"))  # forgotten: changes nothing
    assert notified(store, seq_of(res)) == []
    assert status(store, "sid-m2")["displayed"] == []
    # Time bounds it too: a message a week later drops everything before it.
    apply(say("sa", "Alice", "m5"), at=T0 + marker_targets.KEEP_MS + 1)
    with store.env.begin() as txn:
        assert rs.find(store, txn, rs.room_scope(ROOM), "sid-m4") is None
        assert rs.find(store, txn, rs.room_scope(ROOM), "sid-m5") is not None


def test_one_to_one_devices(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    xml = "<message from='a@x/1' to='b@x' type='chat' id='c1'><body>hi</body></message>"
    apply(
        MessageRouted(
            "a@x/1", "b@x", "chat", xml, ["b@x/1", "b@x/2"], body=True, msg_id="c1", track=True
        )
    )
    scope = rs.chat_scope("a@x", "b@x")
    assert status(store, "c1", scope) == {"displayed": [], "received": [], "pending": ["1", "2"]}
    receipt = (
        "<message from='b@x/1' to='a@x/1'><received xmlns='urn:xmpp:receipts' id='c1'/></message>"
    )
    apply(
        MessageRouted(
            "b@x/1", "a@x/1", "normal", receipt, ["a@x/1"], marker="received", marker_id="c1"
        )
    )
    shown = f"<message from='b@x/2' to='a@x'><displayed xmlns='{MARKERS}' id='c1'/></message>"
    res = apply(
        MessageRouted("b@x/2", "a@x", "chat", shown, ["a@x/1"], marker="displayed", marker_id="c1")
    )
    assert status(store, "c1", scope) == {"displayed": ["2"], "received": ["1"], "pending": []}
    (row,) = notified(store, seq_of(res))
    assert row[0] == "a@x" and "device='2'" in row[1] and "with='b@x'" in row[1]
    # A marker from Alice's side for her own conversation's scope resolves nothing there.
    assert status(store, "c1", scope)["displayed"] == ["2"]


def test_destroyed_room_forgets_everything(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(say("sa", "Alice", "m1"))
    apply(MucRoomDestroyed(ROOM, by="a@x/1"))
    with store.env.begin() as txn:
        assert rs.find(store, txn, rs.room_scope(ROOM), "sid-m1") is None


def test_replay_gives_the_same_digest(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    for name in ("m1", "m2", "m3"):
        apply(say("sa", "Alice", name, track=name != "m2"))
    apply(mark("sb", "Bob", "received", "sid-m2"))
    apply(mark("sc", "Carol", "displayed", "sid-m3"))
    apply(mark("sb", "Bob", "displayed", "m1"))  # the sender's own id names it too
    rebuilt, live, _, _ = rebuild(store, tmp_path / "rebuilt")
    assert rebuilt == live
    with store.env.begin() as txn:
        dbs = (*rs.ReadStatus.dbs, marker_targets.TARGETS)
        names = [n for n in dbs if txn.stat(store.db(n))["entries"]]
    assert set(names) >= {marker_targets.TARGETS, rs.TRACKED, rs.MARKS, rs.NOTIFY}
