"""Replay (issue 17): a fresh store folded from the journal, whole or up to an index or a time,
equals the live projections as they were then; the fast path computes what the plain fold does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.unit.projections.test_projector import command, env, fresh
from xes.events.catalog import (
    MessageRouted,
    MucMessageSent,
    MucOccupantJoined,
    MucOccupantLeft,
    MucRoomCreated,
    MucSubjectSet,
    NodeStarted,
    PresenceUpdated,
    SessionBound,
    SessionEnded,
    SmAcked,
    SmEnabled,
)
from xes.muc.model import RoomConfig
from xes.projections import muc
from xes.projections.projector import digest
from xes.projections.replay import (
    MS_FROM,
    ReplayError,
    parse_until,
    replay_into,
    resolve_until,
)
from xes.store import journal

ROOM = "room@muc.x"
T0 = 1_700_000_000_000


def said(session: str, nick: str, n: int) -> MucMessageSent:
    xml = f"<message from='{ROOM}/{nick}' type='groupchat' id='g{n}'><body>hi {n}</body></message>"
    return MucMessageSent(ROOM, session, nick, xml, f"r{n}", body=True, msg_id=f"g{n}")


def chat(n: int) -> MessageRouted:
    xml = f"<message from='a@x/1' to='b@x' type='chat' id='m{n}'><body>m{n}</body></message>"
    return MessageRouted(
        "a@x/1", "b@x", "chat", xml, ["b@x/1"], stanza_id=f"s{n}",
        archived_by=["a@x", "b@x"], body=True, msg_id=f"m{n}",
    )  # fmt: skip


def entries() -> list[tuple[list[list[Any]], int]]:
    """A small day: proposals per entry (index 1 first), with each entry's ``at``; the clock
    steps back once (index 8 is stamped before index 7, as a node with a slow clock would)."""
    config = RoomConfig(persistent=True).to_json()
    days: list[list[list[Any]]] = [
        [[NodeStarted("n1", "b1")]],
        [[SessionBound("sa", "a@x/1", "n1", "b1"), SmEnabled("sa", True, 60)]],
        [[SessionBound("sb", "b@x/1", "n1", "b1")]],
        [
            [MucRoomCreated(ROOM, "a@x/1", config, False, "k")],
            [MucOccupantJoined(ROOM, "alice", "a@x/1", "sa", "")],
        ],
        [[MucSubjectSet(ROOM, "sa", "Monday")], [chat(1)]],
        [[MucOccupantJoined(ROOM, "bob", "b@x/1", "sb", "")], [said("sa", "alice", 2)]],
        [[said("sb", "bob", 3)], [MucSubjectSet(ROOM, "sa", "Tuesday")]],
        [[chat(4)], [PresenceUpdated("sb", "b@x/1", True, 0, "<presence/>")]],
        [[MucOccupantLeft(ROOM, "sb", "", "left")], [said("sa", "alice", 5)]],
        [[SmAcked("sa", 1 << 30, 0), MucOccupantLeft(ROOM, "sa", "", "logout")]],
        [[SessionEnded("sa", "a@x/1", "closed")]],
    ]
    ats = [T0 + 1000 * (index - 1) for index in range(1, len(days) + 1)]
    ats[6], ats[7] = ats[7], ats[6]  # index 7 is stamped T0+7000, index 8 T0+6000
    return list(zip(days, ats, strict=True))


def build(root: Path) -> tuple[Any, list[str]]:
    """The live store after every entry, and its digest after each (``[k]`` = after index k)."""
    store, proj = fresh(root / "live")
    digests = [""]
    for index, (proposals, at) in enumerate(entries(), start=1):
        raw = proj.apply(index, command(*[[env(e, at=at) for e in p] for p in proposals]))
        results = json.loads(raw)
        assert all(r["ok"] for r in results), (index, results)
        with store.env.begin() as txn:
            digests.append(digest(store, txn))
    return store, digests


def test_full_replay_equals_live_and_the_plain_fold(tmp_path: Path) -> None:
    store, digests = build(tmp_path)
    done = replay_into(store, tmp_path / "out")
    assert done.digest == done.live_digest == digests[-1]
    assert done.index == len(digests) - 1
    # The in-place rebuild (the projector's own fold, with fsync'd commits) agrees.
    store.close()
    shutil.copytree(tmp_path / "live", tmp_path / "copy")
    copy, proj = fresh(tmp_path / "copy")
    proj.rebuild_in_place()
    with copy.env.begin() as txn:
        assert digest(copy, txn) == done.digest


def test_every_index_gives_the_state_of_then(tmp_path: Path) -> None:
    store, digests = build(tmp_path)
    for index in range(1, len(digests)):
        done = replay_into(store, tmp_path / f"at{index}", str(index))
        assert done.index == index
        assert done.live_digest is None
        assert done.digest == digests[index], index


def test_room_at_three_instants(tmp_path: Path) -> None:
    store, _ = build(tmp_path)
    seen = {}
    for index in (4, 6, 9):
        replay_into(store, tmp_path / f"r{index}", str(index))
        out, _ = fresh(tmp_path / f"r{index}")
        with out.env.begin() as txn:
            room = muc.get(out, txn, ROOM)
            assert room is not None
            seen[index] = (room.subject, sorted(o.nick for o in room.occupants.values()))
            assert journal.applied_index(out, txn) == index
        out.close()
    assert seen == {
        4: ("", ["alice"]),
        6: ("Monday", ["alice", "bob"]),
        9: ("Tuesday", ["alice"]),
    }


def test_time_ends_before_the_first_later_stamp(tmp_path: Path) -> None:
    """``at`` is the proposer's clock: entry 7 is stamped T0+7000, entry 8 T0+6000. Until
    T0+6500 stops at index 6 (entry 7 is later), although entry 8 is stamped earlier."""
    store, _ = build(tmp_path)
    with store.env.begin() as txn:
        assert resolve_until(store, txn, str(T0 + 6500)).index == 6
        assert resolve_until(store, txn, str(T0 + 7000)).index == 8
        assert resolve_until(store, txn, str(T0 + 60_000)).index == 11
        assert resolve_until(store, txn, "2023-11-14T22:13:22Z").index == 3  # T0 + 2000
        with pytest.raises(ReplayError):
            resolve_until(store, txn, str(T0 - 1))  # before everything
        with pytest.raises(ReplayError):
            resolve_until(store, txn, "12")  # beyond the applied index
    done = replay_into(store, tmp_path / "t", "2023-11-14T22:13:22.5+00:00")
    assert (done.index, done.events, done.last_at) == (3, 4, T0 + 2000)


def test_parse_until() -> None:
    assert parse_until("42") == ("index", 42)
    assert parse_until(str(MS_FROM)) == ("at", MS_FROM)
    assert parse_until("2026-12-03T14:02:00") == ("at", 1_796_306_520_000)
    assert parse_until("2026-12-03T15:02:00+01:00") == ("at", 1_796_306_520_000)
    with pytest.raises(ReplayError):
        parse_until("yesterday")


def test_cli_replay_until_out_and_muc_show_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``xes replay --until N --out DIR`` on a data directory, then ``xes muc show --store``."""
    from xes.cli import main

    store, digests = build(tmp_path / "data")
    store.close()
    (tmp_path / "data" / "db").mkdir()
    for f in (tmp_path / "data" / "live").iterdir():
        f.rename(tmp_path / "data" / "db" / f.name)
    config = tmp_path / "xes.toml"
    config.write_text(f'domain = "x"\ndata_dir = "{tmp_path / "data"}"\n[muc]\ndomain = "muc.x"\n')
    out = tmp_path / "at6"
    assert main(["replay", "--config", str(config), "--until", "6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "applied index: 6\n" in printed and f"rebuilt digest: {digests[6]}\n" in printed
    assert "live digest" not in printed
    assert main(["muc", "show", ROOM, "--config", str(config), "--store", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["subject"], [o["nick"] for o in shown["occupants"]]) == (
        "Monday",
        ["alice", "bob"],
    )
    with pytest.raises(SystemExit, match="beyond the journal"):
        main(["replay", "--config", str(config), "--until", "99"])
    assert main(["replay", "--config", str(config)]) == 0  # whole: equal to the live digest
    assert "OK: digests are equal" in capsys.readouterr().out
