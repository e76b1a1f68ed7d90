"""The audit views (issue 17, item 3): selection of a conversation from the journal, the state
of a room and a user at a point of the log, and their text and JSON shapes."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.unit.projections.test_projector import command, env, fresh
from xes.audit import views
from xes.events.catalog import (
    FastTokenIssued,
    MessageRouted,
    MucOccupantJoined,
    MucOccupantLeft,
    MucRoleSet,
    MucRoomCreated,
    MucSubjectSet,
    NodeStarted,
    PresenceUpdated,
    RosterItemUpdated,
    SessionBound,
    SmEnabled,
)
from xes.muc.model import RoomConfig
from xes.projections.replay import ReplayError

ROOM = "room@muc.x"
T0 = 1_700_000_000_000


def chat(
    sender: str, to: str, n: int, extra: str = "", body: bool = True, **kw: Any
) -> MessageRouted:
    inner = f"<body>m{n}</body>" if body else ""
    xml = f"<message from='{sender}' to='{to}' type='chat' id='m{n}'>{inner}{extra}</message>"
    return MessageRouted(
        sender, to, "chat", xml, [to], stanza_id=f"s{n}", archived_by=[], body=body,
        msg_id=f"m{n}", **kw,
    )  # fmt: skip


def build(root: Path, days: list[list[list[Any]]]) -> Any:
    """A store fed one entry per item of ``days`` (index 1 first), entry k stamped T0 + k s."""
    store, proj = fresh(root)
    for index, proposals in enumerate(days, start=1):
        at = T0 + 1000 * index
        results = json.loads(
            proj.apply(index, command(*[[env(e, at=at) for e in p] for p in proposals]))
        )
        assert all(r["ok"] for r in results), (index, results)
    return store


# -- pure pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "body", "expected"),
    [
        ("", True, ("m1", "message", None)),
        ("<replace xmlns='urn:xmpp:message-correct:0' id='m0'/>", True, ("m1", "correction", "m0")),
        (
            "<retract xmlns='urn:xmpp:message-retract:1' id='m0'/>",
            False,
            (None, "retraction", "m0"),
        ),
        (
            "<apply-to xmlns='urn:xmpp:fasten:0' id='m0'>"
            "<retract xmlns='urn:xmpp:message-retract:0'/></apply-to>",
            True,
            ("m1", "retraction", "m0"),
        ),
        (
            "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
            False,
            (None, "other", None),
        ),
    ],
)
def test_classify(extra: str, body: bool, expected: tuple[Any, ...]) -> None:
    assert views.classify(chat("a@x/1", "b@x", 1, extra, body).xml) == expected


def test_bound_filter_reads_what_replay_until_reads() -> None:
    assert views.bound_filter(None) is None
    assert views.bound_filter("42") == "42"
    assert views.bound_filter("2026-12-03T14:02Z") == "2026-12-03T14:02:00.000Z"
    assert views.bound_filter(str(T0)) == views.iso(T0)  # ms since the epoch: a time
    with pytest.raises(ReplayError):
        views.bound_filter("yesterday")


def test_table_aligns_columns_and_says_none() -> None:
    lines = views.table(("A", "LONGER", "LAST"), [("xxxx", "y", "z z"), ("q", "", "")])
    assert lines == ["  A     LONGER  LAST", "  xxxx  y       z z", "  q"]
    assert views.table(("A", "B"), []) == ["  (none)"]


def test_progress_is_silent_for_a_short_replay_then_every_few_seconds() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = views.Progress(out, after=3.0, every=2.0, clock=lambda: now[0])
    for t, index in ((1.0, 10), (3.5, 40), (4.0, 50), (6.0, 70)):
        now[0] = t
        progress(index * 10, index, 100)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("replaying the journal: index 40 of 100 (40%), 400 events")
    assert "index 70 of 100 (70%)" in lines[1]
    now[0] = 7.0
    progress.finish(100)
    assert out.getvalue().splitlines()[-1] == "replayed to index 100 in 7 s"
    quiet = io.StringIO()
    views.Progress(quiet, clock=lambda: 0.0).finish(5)  # never spoke: says nothing at the end
    assert quiet.getvalue() == ""


# -- a conversation ----------------------------------------------------------------------------


def test_conversation_selects_the_pair_in_log_order(tmp_path: Path) -> None:
    marker = "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>"
    copy = chat("a@x/1", "b@x", 1)
    store = build(
        tmp_path / "s",
        [
            [[chat("a@x/1", "b@x", 1)]],
            [[chat("b@x/2", "a@x/1", 2), chat("a@x/1", "c@x", 3)]],  # a@x and c@x: not listed
            [[chat("a@x/1", "bb@x", 4), chat("b@xy/1", "a@x", 5)]],  # other JIDs around b@x
            [[chat("b@x/2", "a@x", 6, marker, body=False, marker="displayed", marker_id="m1")]],
            [[MessageRouted(copy.sender, copy.to, "chat", copy.xml, ["b@x/3"], received_at=T0)]],
            [[chat("a@x/1", "b@x", 7, "<replace xmlns='urn:xmpp:message-correct:0' id='m1'/>")]],
        ],
    )
    with store.env.begin() as txn:
        said, copies = views.conversation(store, txn, "a@x", "b@x")
        assert [(m.index, m.pos, m.msg_id, m.kind) for m in said] == [
            (1, 0, "m1", "message"),
            (2, 0, "m2", "message"),
            (6, 0, "m7", "correction"),
        ]
        assert copies == 1
        assert said[0].at == T0 + 1000 and said[0].sender == "a@x/1" and said[0].stanza_id == "s1"
        everything, _ = views.conversation(store, txn, "b@x", "a@x", everything=True)
        assert [(m.msg_id, m.kind, m.refers) for m in everything][2] == ("m6", "marker", "m1")
        # Bounds as xes replay --until reads them: an index, or a time (entry k at T0 + k s).
        since, _ = views.conversation(store, txn, "a@x", "b@x", since="2", until="5")
        assert [m.msg_id for m in since] == ["m2"]
        timed, _ = views.conversation(store, txn, "a@x", "b@x", since=views.iso(T0 + 5500))
        assert [m.msg_id for m in timed] == ["m7"]
    store.close()
    doc = {
        "a": "a@x", "b": "b@x", "since": None, "until": None, "journal_index": 6,
        "messages": [m.to_json() for m in said], "rerouted_copies": copies,
    }  # fmt: skip
    text = views.format_conversation(doc)
    assert "3 messages (1 re-routed copies not listed)" in text
    rows = text.splitlines()[-4:]
    assert rows[0].split() == ["TIME", "INDEX", "FROM", "TO", "ID", "ARCHIVE", "ID", "BODY"]
    assert rows[3].endswith("[correction of m1] m7")
    # Columns are aligned: every row's body starts where the header's BODY does.
    column = rows[0].index("BODY")
    assert rows[1][column:] == "m1" and rows[2][column:] == "m2"


# -- a room and a user at a point --------------------------------------------------------------


def day() -> list[list[list[Any]]]:
    config = RoomConfig(persistent=True, name="Ops").to_json()
    item = RosterItemUpdated("a@x", "b@x", "Bob", ["Team"], "none", ask=True)
    return [
        [[NodeStarted("n1", "b1")]],
        [[SessionBound("sa", "a@x/1", "n1", "b1", device=True), SmEnabled("sa", True, 60)]],
        [[SessionBound("sb", "b@x/1", "n1", "b1")]],
        [
            [MucRoomCreated(ROOM, "a@x/1", config, False, "k")],
            [MucOccupantJoined(ROOM, "alice", "a@x/1", "sa", "")],
        ],
        [[MucOccupantJoined(ROOM, "bob", "b@x/1", "sb", "")], [MucSubjectSet(ROOM, "sa", "Hi")]],
        [[MucRoleSet(ROOM, "bob", "visitor", "", "a@x/1")], [item]],  # 6
        [[PresenceUpdated("sa", "a@x/1", True, 5, "<presence><show>away</show></presence>")]],
        [[FastTokenIssued("a@x", "phone", "t1", "h", "HT-SHA-256-NONE", T0 + 10**9)]],
        [
            [MucOccupantLeft(ROOM, "sb", "", "left")],
            [item.__class__("a@x", "b@x", "Bob", ["Team"], "to")],
        ],
    ]


def test_room_and_user_as_they_were(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = build(tmp_path / "live", day())
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where state_at replays
    seen = {}
    for index in ("6", "9"):
        with views.state_at(live, index) as (store, done), store.env.begin() as txn:
            room = views.room_doc(store, txn, ROOM)
            user = views.user_doc(store, txn, "a@x")
            assert done.index == int(index)
            seen[index] = (room, user, views.point(index, done))
            assert [p.name[:10] for p in scratch.iterdir()] == ["xes-audit-"]
    with views.state_at(live, "3") as (store, _), store.env.begin() as txn:
        assert views.room_doc(store, txn, ROOM) is None  # not created yet
    live.close()
    assert list(scratch.iterdir()) == []  # each replay's directory is gone

    room6, user6, at6 = seen["6"]
    assert room6 is not None
    assert [
        (o["nick"], o["real_jid"], o["role"], o["affiliation"]) for o in room6["occupants"]
    ] == [
        ("alice", "a@x/1", "moderator", "owner"),
        ("bob", "b@x/1", "visitor", "none"),
    ]
    assert (room6["subject"], room6["subject_by"]) == ("Hi", "alice")
    assert room6["affiliations"] == {"a@x": "owner"}
    room9 = seen["9"][0]
    assert room9 is not None and [o["nick"] for o in room9["occupants"]] == ["alice"]
    text = views.format_room(room6, at6)
    assert "as of log index 6 (asked: 6;" in text
    assert "subject: 'Hi' (set by alice)" in text
    lines = text.splitlines()
    head = lines.index("occupants (2):") + 1
    assert lines[head].split() == ["NICK", "REAL", "JID", "ROLE", "AFFILIATION", "SESSIONS"]
    assert lines[head + 2].split() == ["bob", "b@x/1", "visitor", "none", "1"]

    assert [i["subscription"] for i in user6["roster"]["items"]] == ["none"]
    assert user6["roster"]["items"][0]["ask"] is True
    assert user6["sessions"][0]["available"] is False
    user9 = seen["9"][1]
    assert [(i["contact"], i["subscription"], i["ask"]) for i in user9["roster"]["items"]] == [
        ("b@x", "to", False)
    ]
    session = user9["sessions"][0]
    assert (session["jid"], session["node"], session["available"], session["show"]) == (
        "a@x/1", "n1", True, "away",
    )  # fmt: skip
    assert session["stream_management"]["resumable"] is True
    assert user9["presence"]["available"] == ["a@x/1"]
    assert [d["resource"] for d in user9["devices"]["offline"]] == ["1"]
    assert user9["devices"]["fast_tokens"] == [
        {"agent": "phone", "mechanism": "HT-SHA-256-NONE", "expires": views.iso(T0 + 10**9)}
    ]
    text = views.format_user(user9, seen["9"][2])
    assert "a@x/1  n1    away" in text
    assert "b@x      to" in text
    json.dumps(user9)  # one JSON document
