"""The muc projection: rooms, history and occupancy from room events; premises re-checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.projections.test_projector import command, env, fresh
from xes.events.catalog import (
    AccountRemoved,
    MucAffiliationSet,
    MucMessageSent,
    MucNickChanged,
    MucOccupantJoined,
    MucOccupantLeft,
    MucRoleSet,
    MucRoomConfigured,
    MucRoomCreated,
    MucRoomDestroyed,
    MucSubjectSet,
    NodeStarted,
    SessionBound,
    SessionEnded,
    SmEnabled,
    SmHandled,
)
from xes.muc import forms
from xes.muc.model import RoomConfig
from xes.projections import archive, muc
from xes.projections import stream_mgmt as sm
from xes.projections.archive import ArchiveQuery
from xes.projections.projector import digest, rebuild
from xes.xml import escape_text

ROOM = "room@muc.x"
OTHER = "other@muc.x"
T0 = 1_700_000_000_000
SESSIONS = {"sa": "a@x/1", "sb": "b@x/1", "sc": "c@x/1"}


def created(room: str = ROOM, *, locked: bool = False, **config: Any) -> MucRoomCreated:
    return MucRoomCreated(room, "a@x/1", RoomConfig(**config).to_json(), locked, "secret")


def joined(session: str, nick: str, room: str = ROOM, **kw: Any) -> MucOccupantJoined:
    return MucOccupantJoined(room, nick, SESSIONS[session], session, "", **kw)


def said(session: str, nick: str, body: str, room: str = ROOM, **kw: Any) -> MucMessageSent:
    xml = (
        f"<message from='{room}/{nick}' type='groupchat' id='{body}'>"
        f"<body>{escape_text(body)}</body></message>"
    )
    return MucMessageSent(room, session, nick, xml, f"sid-{body}", **kw)


def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A store with Alice, Bob and Carol bound (sessions sa, sb, sc on node n1, boot b1)."""
    store, proj = fresh(tmp_path / "s")
    index = 0

    def apply(*events: Any, at: int = T0) -> list[dict[str, Any]]:
        nonlocal index
        index += 1
        return json.loads(proj.apply(index, command([env(e, at=at) for e in events])))

    for session, jid in SESSIONS.items():
        assert ok(apply(SessionBound(session, jid, "n1", "b1")))
    return store, apply


def ok(results: list[dict[str, Any]]) -> bool:
    return all(r["ok"] for r in results)


def reason(results: list[dict[str, Any]]) -> str:
    (result,) = results
    assert not result["ok"], result
    return str(result["reason"])


def opened(apply, **config: Any) -> None:  # type: ignore[no-untyped-def]
    """Alice creates the room and joins it in one proposal (as the service proposes it)."""
    assert ok(apply(created(**config), joined("sa", "Alice")))


def room_of(store, room: str = ROOM):  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return muc.get(store, txn, room)


def history(store, room: str = ROOM) -> list[str]:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return [i.xml for i in muc.history(store, txn, room, 2**63, 10_000)]


def archived(store, room: str = ROOM) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        page = archive.query(store, txn, room, ArchiveQuery(max=10_000))
    return [(m.id, m.peer) for m in page.items]


def rows(store, session: str) -> list[str]:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return [r.xml for r in sm.rows(store, txn, session)]


def entries(store, db: str) -> int:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return int(txn.stat(store.db(db))["entries"])


# -- rooms, history, archive -------------------------------------------------------------------


def test_create_join_and_message_give_room_history_and_archive_rows(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    opened(apply)
    assert ok(apply(joined("sb", "Bob")))
    message = said("sb", "Bob", "hello")
    assert ok(apply(message, at=T0 + 5))
    room = room_of(store)
    assert room is not None
    assert sorted(room.occupants) == ["alice", "bob"]
    assert room.affiliations == {"a@x": "owner"} and not room.locked
    assert history(store) == [message.xml]
    with store.env.begin() as txn:
        (item,) = muc.history(store, txn, ROOM, 2**63, 5)
        assert item.at == T0 + 5
        assert muc.rooms_of_session(store, txn, "sb") == [ROOM]
        assert muc.rooms_of_session(store, txn, "sc") == []
        assert muc.owned_by(store, txn, "a@x") == 1
        assert muc.room_names(store, txn) == [ROOM]
        (row,) = archive.query(store, txn, ROOM, ArchiveQuery()).items
    assert (row.id, row.peer, row.outgoing, row.xml) == (
        "sid-hello",
        f"{ROOM}/Bob",
        False,
        message.xml,
    )
    # The room's archive is the room's: neither sender nor the other occupant got a row.
    assert archived(store, "b@x") == [] and archived(store, "a@x") == []


def test_unlogged_message_is_history_but_not_archive(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    opened(apply, logging=False)
    assert ok(apply(said("sa", "Alice", "off the record", archived=False)))
    assert len(history(store)) == 1 and archived(store) == []


def test_history_reads_before_a_position(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    opened(apply)
    assert ok(apply(said("sa", "Alice", "one")))
    assert ok(apply(said("sa", "Alice", "two")))
    with store.env.begin() as txn:
        one, two = muc.history(store, txn, ROOM, 2**63, 10)
        assert [i.xml for i in muc.history(store, txn, ROOM, two.seq, 10)] == [one.xml]
        assert muc.history(store, txn, ROOM, one.seq, 10) == []
        assert muc.history(store, txn, ROOM, 2**63, 1) == [two]
        assert muc.history(store, txn, OTHER, 2**63, 10) == []


def test_history_is_trimmed_beyond_its_length_and_slack(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    opened(apply, history_length=2)
    total = 2 + muc.HISTORY_SLACK + 5
    messages = [said("sa", "Alice", f"m{i}") for i in range(total)]
    for start in range(0, total, 50):
        assert ok(apply(*messages[start : start + 50]))
    kept = history(store)
    assert len(kept) == 2 + muc.HISTORY_SLACK == entries(store, muc.HISTORY)
    assert kept[0] == messages[5].xml and kept[-1] == messages[-1].xml
    with store.env.begin() as txn:
        latest = muc.history(store, txn, ROOM, 2**63, 2)
    assert [i.xml for i in latest] == [m.xml for m in messages[-2:]]
    assert len(archived(store)) == total  # the archive is not trimmed


def test_no_history_rows_when_the_room_keeps_none(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    opened(apply, history_length=0)
    assert ok(apply(said("sa", "Alice", "gone")))
    assert history(store) == [] and len(archived(store)) == 1


# -- premises re-checked at apply --------------------------------------------------------------


def test_a_locked_room_admits_only_its_owner(tmp_path: Path) -> None:
    _, apply = setup(tmp_path)
    opened(apply, locked=True)
    assert reason(apply(joined("sb", "Bob"))).startswith("muc-item-not-found")
    assert ok(apply(MucRoomConfigured(ROOM, RoomConfig().to_json(), "a@x/1")))
    assert ok(apply(joined("sb", "Bob")))


def test_message_from_a_non_occupant_is_refused(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    opened(apply)
    assert reason(apply(said("sc", "Carol", "hi"))).startswith("muc-not-occupant")
    assert history(store) == [] and archived(store) == []


def test_a_taken_nick_is_refused(tmp_path: Path) -> None:
    _, apply = setup(tmp_path)
    opened(apply)
    assert ok(apply(joined("sb", "Bob")))
    for nick in ("Bob", "BOB", "bob"):
        assert reason(apply(joined("sc", nick))).startswith("muc-conflict")
    assert ok(apply(joined("sc", "Carol")))
    assert reason(apply(MucNickChanged(ROOM, "sc", "bob"))).startswith("muc-conflict")


def test_a_banned_user_cannot_join(tmp_path: Path) -> None:
    _, apply = setup(tmp_path)
    opened(apply)
    assert ok(apply(MucAffiliationSet(ROOM, "c@x", "outcast", "", "a@x/1")))
    assert reason(apply(joined("sc", "Carol"))).startswith("muc-forbidden")


def test_a_password_room_needs_the_checked_password(tmp_path: Path) -> None:
    _, apply = setup(tmp_path)
    opened(apply)
    protected = RoomConfig(password_hash=forms.hash_password("cauldron"))
    assert ok(apply(MucRoomConfigured(ROOM, protected.to_json(), "a@x/1")))
    assert reason(apply(joined("sb", "Bob"))).startswith("muc-not-authorized")
    assert ok(apply(joined("sb", "Bob", password_ok=True)))


def test_other_premises(tmp_path: Path) -> None:
    _, apply = setup(tmp_path)
    assert reason(apply(joined("sa", "Alice"))).startswith("muc-no-room")
    opened(apply, moderated=True)
    assert reason(apply(created())).startswith("muc-room-exists")
    assert ok(apply(joined("sb", "Bob")))  # a visitor in a moderated room
    assert reason(apply(said("sb", "Bob", "hi"))).startswith("muc-forbidden")
    assert reason(apply(MucSubjectSet(ROOM, "sb", "x"))).startswith("muc-forbidden")
    assert reason(apply(joined("sb", "Robert"))).startswith("muc-already-occupant")
    unbound = MucOccupantJoined(ROOM, "Dave", "d@x/1", "sd", "")
    assert reason(apply(unbound)).startswith("muc-no-session")
    wrong_jid = MucOccupantJoined(ROOM, "Carol", "c@x/other", "sc", "")
    assert reason(apply(wrong_jid)).startswith("muc-no-session")
    configure = MucRoomConfigured(ROOM, RoomConfig().to_json(), "b@x/1")
    assert reason(apply(configure)).startswith("muc-forbidden")
    assert reason(apply(MucRoomDestroyed(ROOM, "", "", "b@x/1"))).startswith("muc-forbidden")
    assert reason(apply(MucRoleSet(ROOM, "Alice", "none", "", "b@x/1"))).startswith("muc-")
    assert reason(apply(MucRoleSet(ROOM, "Nobody", "none", "", "a@x/1"))).startswith(
        "muc-no-occupant"
    )
    ban = MucAffiliationSet(ROOM, "a@x", "outcast", "", "b@x/1")
    assert reason(apply(ban)).startswith("muc-forbidden")
    last_owner = MucAffiliationSet(ROOM, "a@x", "admin", "", "operator")
    assert reason(apply(last_owner)).startswith("muc-conflict")
    # A rejoin by the same session under its nick is accepted (the room state is sent again).
    assert ok(apply(joined("sb", "bob")))


def test_a_refused_proposal_changes_nothing(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    opened(apply)
    before = room_of(store)
    # The join is fine, the message after it in the same proposal is not: both are refused.
    assert not ok(apply(joined("sb", "Bob"), said("sc", "Carol", "x")))
    assert room_of(store) == before
    with store.env.begin() as txn:
        assert muc.rooms_of_session(store, txn, "sb") == []


# -- no ghosts ---------------------------------------------------------------------------------


def test_a_session_in_a_room_cannot_end_without_leaving(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    opened(apply)
    assert ok(apply(joined("sb", "Bob")))
    end = SessionEnded("sb", "b@x/1", "closed")
    assert reason(apply(end)).startswith("muc-occupant-remains")
    assert ok(apply(MucOccupantLeft(ROOM, "sb", "", "session_ended"), end))
    room = room_of(store)
    assert room is not None and sorted(room.occupants) == ["alice"]
    with store.env.begin() as txn:
        assert muc.rooms_of_session(store, txn, "sb") == []


def test_a_replacing_bind_and_a_new_boot_are_ends_too(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    opened(apply, persistent=True)
    assert ok(apply(joined("sb", "Bob")))
    replace_bob = SessionBound("sb-new", "b@x/1", "n1", "b1")
    assert reason(apply(replace_bob)).startswith("muc-occupant-remains")
    assert ok(apply(MucOccupantLeft(ROOM, "sb", "", "session_ended"), replace_bob))
    restart = NodeStarted("n1", "b2")
    assert reason(apply(restart)).startswith("muc-occupant-remains")
    assert ok(apply(MucOccupantLeft(ROOM, "sa", "", "shutdown"), restart))
    room = room_of(store)
    assert room is not None and room.occupants == {}  # persistent: it stays


def test_a_kicked_session_may_end(tmp_path: Path) -> None:
    _, apply = setup(tmp_path)
    opened(apply)
    assert ok(apply(joined("sb", "Bob")))
    assert ok(apply(MucRoleSet(ROOM, "Bob", "none", "", "a@x/1")))
    assert ok(apply(SessionEnded("sb", "b@x/1", "closed")))


# -- stream management -------------------------------------------------------------------------


def test_a_managed_session_gets_the_room_stanzas_as_outbox_rows(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(SmEnabled("sa", True, 300)))
    opened(apply)
    own, subject = rows(store, "sa")
    assert own.startswith("<presence to='a@x/1' from='room@muc.x/Alice'")
    assert "<status code='201'/>" in own and "<status code='110'/>" in own
    assert subject.startswith("<message to='a@x/1' from='room@muc.x'") and "<subject>" in subject
    assert ok(apply(joined("sb", "Bob")))
    message = said("sb", "Bob", "hello")
    assert ok(apply(message))
    _, _, bob, hello = rows(store, "sa")
    assert bob.startswith("<presence to='a@x/1' from='room@muc.x/Bob'")
    assert hello == message.xml.replace("<message ", "<message to='a@x/1' ", 1)
    assert rows(store, "sb") == []  # not managed: its node's delivery writes its copies
    with store.env.begin() as txn:
        st = sm.state(store, txn, "sa")
    assert st is not None and st.next == 4


def test_a_managed_session_in_a_room_can_end(tmp_path: Path) -> None:
    """What ``session_end.end_events`` proposes for a managed session that closes: its
    occupant leaves, then ``session.ended`` with the outbox rows it re-routed (all of them as
    read before the proposal). The leave must not leave a row that end did not account for."""
    store, apply = setup(tmp_path)
    assert ok(apply(SmEnabled("sa", True, 300)))
    opened(apply)
    with store.env.begin() as txn:
        st = sm.state(store, txn, "sa")
    assert st is not None
    end = [
        MucOccupantLeft(ROOM, "sa", "", "logout"),  # as leave_events("closed") gives it
        SmHandled("sa", st.handled, st.epoch),
        SessionEnded("sa", "a@x/1", "closed", st.next),
    ]
    assert ok(apply(*end))
    assert room_of(store) is None


# -- the room goes -----------------------------------------------------------------------------


def test_destroy_drops_the_room_history_and_archive(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    opened(apply, persistent=True)
    assert ok(apply(joined("sb", "Bob")))
    assert ok(apply(said("sb", "Bob", "one"), said("sa", "Alice", "two")))
    assert ok(apply(created(OTHER), joined("sc", "Carol", OTHER)))
    assert ok(apply(said("sc", "Carol", "elsewhere", OTHER)))
    assert ok(apply(MucRoomDestroyed(ROOM, "bye", "", "a@x/1")))
    assert room_of(store) is None
    assert history(store) == [] and archived(store) == []
    with store.env.begin() as txn:
        assert muc.rooms_of_session(store, txn, "sb") == []
        assert muc.room_names(store, txn) == [OTHER]
    # The other room keeps its own.
    assert len(history(store, OTHER)) == 1 and len(archived(store, OTHER)) == 1
    # Nobody is an occupant of the destroyed room any more: the sessions may end.
    assert ok(apply(SessionEnded("sb", "b@x/1", "closed")))
    # The same name can be created again, from nothing.
    opened(apply)
    assert history(store) == [] and archived(store) == []


def test_a_temporary_room_ending_with_its_last_occupant_drops_its_history(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    opened(apply)
    assert ok(apply(said("sa", "Alice", "one")))
    assert ok(apply(MucOccupantLeft(ROOM, "sa")))
    assert room_of(store) is None and history(store) == []
    assert entries(store, muc.META) == 0 and entries(store, muc.SESSIONS) == 0


def test_a_temporary_room_ending_keeps_its_archive_from_a_later_room_of_its_name(
    tmp_path: Path,
) -> None:
    """A temporary room whose occupants all left (say, with their node) keeps its messages in
    the archive, for retention and audit; a room created later under the same name does not
    serve them to its new occupants (its queries start after its own creation)."""
    store, apply = setup(tmp_path)
    opened(apply)
    assert ok(apply(said("sa", "Alice", "secret plans")))
    assert ok(apply(MucOccupantLeft(ROOM, "sa")))
    assert room_of(store) is None
    assert [id_ for id_, _ in archived(store)] == ["sid-secret plans"]
    opened(apply)
    room = room_of(store)
    assert room is not None
    with store.env.begin() as txn:
        page = archive.query(store, txn, ROOM, ArchiveQuery(min_seq=room.created_seq))
        assert page.items == []
        assert archive.edges(store, txn, ROOM, room.created_seq) is None
    assert ok(apply(said("sa", "Alice", "new plans")))
    with store.env.begin() as txn:
        page = archive.query(store, txn, ROOM, ArchiveQuery(min_seq=room.created_seq))
    assert [m.id for m in page.items] == ["sid-new plans"]


# -- replay ------------------------------------------------------------------------------------


def scenario() -> list[list[Any]]:
    """Proposals, some refused, through the life of two rooms."""
    return [
        [SessionBound(s, jid, "n1", "b1") for s, jid in SESSIONS.items()],
        [SmEnabled("sb", True, 300)],
        [created(history_length=3), joined("sa", "Alice")],
        [joined("sb", "Bob")],
        [said("sb", "Bob", "one")],
        [said("sc", "Carol", "refused")],
        [joined("sc", "Carol", history={"maxstanzas": 1})],
        *[[said("sc", "Carol", f"m{i}")] for i in range(6)],
        [MucNickChanged(ROOM, "sc", "Caroline", "<show>away</show>")],
        [MucSubjectSet(ROOM, "sa", "Topic")],
        [MucSubjectSet(ROOM, "sb", "refused")],
        [MucRoleSet(ROOM, "Caroline", "none", "bye", "a@x/1")],
        [SessionEnded("sc", "c@x/1", "closed")],
        [MucAffiliationSet(ROOM, "c@x", "outcast", "", "a@x/1")],
        [MucAffiliationSet(ROOM, "b@x", "admin", "", "a@x/1")],
        [MucRoomConfigured(ROOM, RoomConfig(persistent=True, history_length=2).to_json(), "a@x/1")],
        [SessionEnded("sa", "a@x/1", "closed")],
        [MucOccupantLeft(ROOM, "sa", "", "session_ended"), SessionEnded("sa", "a@x/1", "closed")],
        [created(OTHER), joined("sb", "Bob", OTHER)],
        [said("sb", "Bob", "two", OTHER)],
        [MucRoomDestroyed(OTHER, "", "", "operator")],
        [said("sb", "Bob", "three")],
        [NodeStarted("n1", "b2")],
        [MucOccupantLeft(ROOM, "sb", "", "shutdown"), NodeStarted("n1", "b2")],
    ]


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(split=st.integers(min_value=1, max_value=6))
def test_replay_of_a_muc_scenario_gives_the_same_digest(tmp_path_factory, split: int) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("muc-replay")
    store, proj = fresh(root / "live")
    proposals = [[env(e) for e in p] for p in scenario()]
    index = accepted = 0
    for start in range(0, len(proposals), split):
        index += 1
        raw = proj.apply(index, command(*proposals[start : start + split]))
        accepted += sum(
            len(p)
            for p, r in zip(proposals[start : start + split], json.loads(raw), strict=True)
            if r["ok"]
        )
    room = room_of(store)
    assert room is not None and room.occupants == {} and room.config.persistent
    assert room_of(store, OTHER) is None
    rebuilt, live, upto, count = rebuild(store, root / "rebuilt")
    assert rebuilt == live and upto == index and count == accepted
    # Entries re-fed after a crash are skipped: nothing changes.
    with store.env.begin() as txn:
        before = digest(store, txn)
    for again, start in enumerate(range(0, len(proposals), split), start=1):
        proj.apply(again, command(*proposals[start : start + split]))
    with store.env.begin() as txn:
        assert digest(store, txn) == before


# -- review findings ---------------------------------------------------------------------------


def _end(store, session: str, leave_reason: str = "session_ended") -> list[Any]:  # type: ignore[no-untyped-def]
    """What ``session_end.end_events`` proposes for one session in ROOM (its state read now)."""
    with store.env.begin() as txn:
        st = sm.state(store, txn, session)
    events: list[Any] = [MucOccupantLeft(ROOM, session, "", leave_reason)]
    if st is not None:
        events.append(SmHandled(session, st.handled, st.epoch))
    events.append(SessionEnded(session, SESSIONS[session], "node_restarted", st and st.next))
    return events


def test_several_sessions_of_one_room_end_in_one_proposal(tmp_path: Path) -> None:
    """A restarting node ends all its sessions in one proposal: the first one's leave gives the
    managed second one an outbox row, which must not refuse the second's end (it re-routes
    nothing: room presence is dropped at an end anyway)."""
    store, apply = setup(tmp_path)
    assert ok(apply(SmEnabled("sb", False, 0)))
    opened(apply)
    assert ok(apply(joined("sb", "Bob")))
    assert ok(apply(*_end(store, "sa"), *_end(store, "sb")))
    assert room_of(store) is None


def test_room_traffic_racing_an_end_does_not_refuse_it(tmp_path: Path) -> None:
    """The end was read before a room message was committed: the message's outbox row is room
    traffic, not something the end should have re-routed."""
    store, apply = setup(tmp_path)
    assert ok(apply(SmEnabled("sb", False, 0)))
    opened(apply)
    assert ok(apply(joined("sb", "Bob")))
    end = _end(store, "sb")
    assert ok(apply(said("sa", "Alice", "meanwhile")))
    assert ok(apply(*end))
    assert [o.nick for o in room_of(store).occupants.values()] == ["Alice"]


def test_registration_is_checked_against_the_room_as_applied(tmp_path: Path) -> None:
    """A registration read before a ban commits after it: refused, not an unban."""
    store, apply = setup(tmp_path)
    opened(apply)
    assert ok(apply(MucAffiliationSet(ROOM, "b@x", "outcast", "", "a@x/1")))
    register = MucAffiliationSet(ROOM, "b@x", "member", "", "b@x/1", "Bobby", registration=True)
    assert reason(apply(register)).startswith("muc-forbidden")
    drop = MucAffiliationSet(ROOM, "b@x", "none", "", "b@x/1", registration=True)
    assert reason(apply(drop)).startswith("muc-forbidden")
    # Nobody registers for someone else, and a taken nickname is taken.
    other = MucAffiliationSet(ROOM, "c@x", "member", "", "b@x/1", "Cee", registration=True)
    assert reason(apply(other)).startswith("muc-forbidden")
    assert ok(
        apply(MucAffiliationSet(ROOM, "c@x", "member", "", "c@x/1", "Cee", registration=True))
    )
    clash = MucAffiliationSet(ROOM, "a@x", "owner", "", "a@x/1", "cee", registration=True)
    assert reason(apply(clash)).startswith("muc-conflict")
    assert room_of(store).reserved == {"c@x": "Cee"}


def test_a_message_under_a_nickname_given_up_meanwhile_is_refused(tmp_path: Path) -> None:
    _store, apply = setup(tmp_path)
    opened(apply)
    stale = said("sa", "Alice", "hello")
    assert ok(apply(MucNickChanged(ROOM, "sa", "Alicia")))
    assert reason(apply(stale)).startswith("muc-not-acceptable")
    assert ok(apply(said("sa", "Alicia", "hello")))


def test_listing_and_owner_indexes_follow_the_rooms(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)

    def listed() -> list[tuple[str, str]]:
        with store.env.begin() as txn:
            return muc.listed_rooms(store, txn)

    def owned(bare: str) -> int:
        with store.env.begin() as txn:
            return muc.owned_by(store, txn, bare)

    assert ok(apply(created(locked=True, name="Ward"), joined("sa", "Alice")))
    assert listed() == [] and owned("a@x") == 1  # locked: not listed yet
    config = RoomConfig(name="Ward 7", persistent=True).to_json()
    assert ok(apply(MucRoomConfigured(ROOM, config, "a@x/1")))
    assert listed() == [(ROOM, "Ward 7")]
    assert ok(apply(MucAffiliationSet(ROOM, "b@x", "owner", "", "a@x/1")))
    assert owned("b@x") == 1
    hidden = RoomConfig(name="Ward 7", persistent=True, public=False).to_json()
    assert ok(apply(MucRoomConfigured(ROOM, hidden, "a@x/1")))
    assert listed() == []
    assert ok(apply(AccountRemoved("b@x")))
    assert owned("b@x") == 0 and "b@x" not in room_of(store).affiliations
    assert ok(apply(MucRoomDestroyed(ROOM, "", "", "operator")))
    assert owned("a@x") == 0 and listed() == []
