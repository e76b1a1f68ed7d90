"""Projector: given events, when applied, then the views; replay gives the same digest."""

from __future__ import annotations

import json
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xes.events import Envelope, canonical_json, to_data
from xes.events.catalog import (
    AccountRegistered,
    MessageRouted,
    NodeDown,
    NodeStarted,
    OfflineFlushed,
    PresenceUpdated,
    RosterItemRemoved,
    RosterItemUpdated,
    SessionBound,
    SessionEnded,
)
from xes.projections import offline, roster, sessions
from xes.projections.projector import Projector, all_db_names, digest, rebuild
from xes.store.env import StorageFailed, open_store

_counter = iter(range(1, 10**9))


def env(event, expected=None, at=1_700_000_000_000):  # type: ignore[no-untyped-def]
    return Envelope(
        type=event.TYPE,
        v=event.V,
        stream=event.stream(),
        id=f"t.{next(_counter)}",
        at=at,
        origin="t",
        data=to_data(event),
        expected_version=expected,
    )


def command(*proposals: list[Envelope]) -> bytes:
    return canonical_json([[e.to_json() for e in p] for p in proposals])


def fresh(tmp: Path):  # type: ignore[no-untyped-def]
    store = open_store(tmp, all_db_names(), writer=True)
    return store, Projector(store)


def test_roster_and_version(tmp_path: Path) -> None:
    store, proj = fresh(tmp_path / "a")
    item = RosterItemUpdated(owner="a@x", contact="b@x", name="B", groups=["g"], subscription="to")
    result = json.loads(proj.apply(1, command([env(item)])))
    assert result == [{"ok": True, "events": [[1, 0, 1]]}]
    with store.env.begin() as txn:
        items = roster.items(store, txn, "a@x")
        assert [(i.contact, i.name, i.subscription) for i in items] == [("b@x", "B", "to")]
        assert roster.version(store, txn, "a@x") == 1
    proj.apply(2, command([env(RosterItemRemoved(owner="a@x", contact="b@x"))]))
    with store.env.begin() as txn:
        assert roster.items(store, txn, "a@x") == []
        assert roster.version(store, txn, "a@x") == 2


def test_expected_version_conflict_rejects_whole_proposal(tmp_path: Path) -> None:
    store, proj = fresh(tmp_path / "a")
    a = RosterItemUpdated(owner="a@x", contact="b@x")
    c = RosterItemUpdated(owner="c@x", contact="d@x")
    proj.apply(1, command([env(a, expected=0)]))
    # Second proposal expects version 0 but the stream is at 1: both of its events are refused,
    # while the next proposal in the same entry still applies.
    result = json.loads(proj.apply(2, command([env(c), env(a, expected=0)], [env(c)])))
    assert result[0]["ok"] is False and result[0]["reason"].startswith("conflict")
    assert result[1]["ok"] is True
    with store.env.begin() as txn:
        assert roster.version(store, txn, "c@x") == 1  # only the later proposal's event
        assert txn.stat(store.db("journal.rejected"))["entries"] == 1


def test_retried_proposal_is_not_applied_twice(tmp_path: Path) -> None:
    store, proj = fresh(tmp_path / "a")
    proposal = [env(RosterItemUpdated(owner="a@x", contact="b@x"))]
    first = json.loads(proj.apply(1, command(proposal)))
    again = json.loads(proj.apply(2, command(proposal)))
    assert first == again == [{"ok": True, "events": [[1, 0, 1]]}]
    with store.env.begin() as txn:
        assert txn.stat(store.db("journal.events"))["entries"] == 1


def test_entry_at_or_below_applied_index_is_skipped(tmp_path: Path) -> None:
    store, proj = fresh(tmp_path / "a")
    proj.apply(5, command([env(RosterItemUpdated(owner="a@x", contact="b@x"))]))
    assert proj.apply(5, command([env(RosterItemUpdated(owner="a@x", contact="c@x"))])) == b"[]"
    with store.env.begin() as txn:
        assert [i.contact for i in roster.items(store, txn, "a@x")] == ["b@x"]


def test_garbage_entry_never_raises_and_is_journalled(tmp_path: Path) -> None:
    _, proj = fresh(tmp_path / "a")
    assert json.loads(proj.apply(1, b"\xff not json")) == [{"ok": False, "reason": "bad-entry"}]
    bad_type = canonical_json(
        [
            [
                {
                    "type": "node.started",  # known type, data it cannot hold
                    "v": 1,
                    "stream": "s",
                    "id": "z",
                    "at": 0,
                    "origin": "t",
                    "data": {},
                }
            ]
        ]
    )
    result = json.loads(proj.apply(2, bad_type))
    assert result[0]["ok"] is False and "unknown-event" in result[0]["reason"]
    assert proj.last_applied() == 2


def test_sessions_conflict_and_node_restart(tmp_path: Path) -> None:
    store, proj = fresh(tmp_path / "a")
    proj.apply(1, command([env(SessionBound("s1", "a@x/r", "n1", "boot1"))]))
    proj.apply(2, command([env(PresenceUpdated("s1", "a@x/r", True, 5, "<presence/>", []))]))
    with store.env.begin() as txn:
        view = sessions.by_full_jid(store, txn, "a@x/r")
        assert view is not None and view.available and view.priority == 5
    # Same full JID bound again: the old session is gone (RFC 6120 §7.7.2.2).
    proj.apply(3, command([env(SessionBound("s2", "a@x/r", "n2", "boot1"))]))
    with store.env.begin() as txn:
        assert sessions.get(store, txn, "s1") is None
        assert [s.session for s in sessions.of_user(store, txn, "a@x")] == ["s2"]
    # Node n2 restarts with a new boot id: its sessions of the earlier boot end.
    proj.apply(4, command([env(NodeStarted("n2", "boot2"))]))
    with store.env.begin() as txn:
        assert sessions.of_user(store, txn, "a@x") == []


def test_offline_store_and_flush(tmp_path: Path) -> None:
    store, proj = fresh(tmp_path / "a")
    for i in range(3):
        msg = MessageRouted("a@x/r", "b@x", "chat", f"<message>{i}</message>", [], "b@x")
        proj.apply(i + 1, command([env(msg, at=1000 + i)]))
    with store.env.begin() as txn:
        stored = offline.messages(store, txn, "b@x")
    assert [m.at for m in stored] == [1000, 1001, 1002]
    proj.apply(10, command([env(OfflineFlushed("b@x", stored[1].seq, "s"))]))
    with store.env.begin() as txn:
        assert [m.xml for m in offline.messages(store, txn, "b@x")] == ["<message>2</message>"]


JIDS = st.sampled_from(["a@x", "b@x", "c@x"])
EVENTS = st.one_of(
    st.builds(AccountRegistered, jid=JIDS, credentials=st.just({"k": "v"})),
    st.builds(
        RosterItemUpdated,
        owner=JIDS,
        contact=JIDS,
        name=st.none() | st.text(max_size=5),
        subscription=st.sampled_from(["none", "to", "from", "both"]),
    ),
    st.builds(RosterItemRemoved, owner=JIDS, contact=JIDS),
    st.builds(
        SessionBound,
        session=st.sampled_from(["s1", "s2", "s3"]),
        jid=st.sampled_from(["a@x/1", "a@x/2", "b@x/1"]),
        node=st.sampled_from(["n1", "n2"]),
        boot=st.sampled_from(["b1", "b2"]),
    ),
    st.builds(
        SessionEnded,
        session=st.sampled_from(["s1", "s2", "s3"]),
        jid=st.just("a@x/1"),
        reason=st.just("closed"),
    ),
    st.builds(
        NodeStarted,
        node=st.sampled_from(["n1", "n2"]),
        boot=st.sampled_from(["b1", "b2"]),
        raft=st.sampled_from(["", "h:1"]),
    ),
    st.builds(
        NodeDown,
        node=st.sampled_from(["n1", "n2"]),
        boot=st.sampled_from(["b1", "b2"]),
        reason=st.just("unreachable"),
        by=st.just("n1"),
    ),
    st.builds(
        MessageRouted,
        sender=st.just("a@x/1"),
        to=JIDS,
        type=st.just("chat"),
        xml=st.text(max_size=10),
        targets=st.just([]),
        offline_for=st.none() | JIDS,
    ),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=st.lists(EVENTS, max_size=25), split=st.integers(min_value=1, max_value=5))
def test_replay_is_deterministic(tmp_path_factory, events, split) -> None:  # type: ignore[no-untyped-def]
    """Whatever the batching, a replay from the journal equals the live projections."""
    root = tmp_path_factory.mktemp("replay")
    store, proj = fresh(root / "live")
    envs = [env(e) for e in events]
    index = 0
    accepted = 0
    for start in range(0, len(envs), split):
        index += 1
        raw = proj.apply(index, command(*[[e] for e in envs[start : start + split]]))
        accepted += sum(1 for result in json.loads(raw) if result["ok"])
    rebuilt, live, upto, count = rebuild(store, root / "rebuilt")
    assert rebuilt == live
    assert upto == index
    assert (
        count == accepted
    )  # refused proposals (e.g. node.down with sessions left) are not replayed
    # Re-feeding every entry (the Raft journal replayed after a crash) changes nothing.
    with store.env.begin() as txn:
        before = digest(store, txn)
    for again, start in enumerate(range(0, len(envs), split), start=1):
        proj.apply(again, command(*[[e] for e in envs[start : start + split]]))
    with store.env.begin() as txn:
        assert digest(store, txn) == before


@pytest.mark.parametrize(
    ("where", "error"),
    [
        ("_apply_entry", lmdb.DiskError("mdb_txn_commit: No space left on device")),
        ("_apply_entry", lmdb.Error("mdb_txn_commit: Input/output error")),
        ("_apply_proposal", lmdb.MapFullError("mdb_put: MDB_MAP_FULL")),
    ],
)
def test_a_disk_that_refuses_the_write_stops_the_node_before_the_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, error: Exception
) -> None:
    """Fault campaign seed 2026 with --disk: a full disk made a node journal committed entries
    as rejected and skip them; the other nodes had them, and a snapshot from that node carried
    the hole to another one (acknowledged messages gone from two journals of three). A local
    storage failure must stop the node before the entry, never skip it."""
    store, proj = fresh(tmp_path / "a")
    item = RosterItemUpdated(owner="a@x", contact="b@x", name="B", groups=[], subscription="to")
    entry = command([env(item)])

    def refuse(*args: object, **kwargs: object) -> None:
        raise error

    with monkeypatch.context() as patch:
        patch.setattr(Projector, where, refuse)
        with pytest.raises(StorageFailed):
            proj.apply(1, entry)
    assert proj.last_applied() == 0
    with store.env.begin() as txn:
        assert txn.stat(store.db("journal.rejected"))["entries"] == 0
    # Started again with room on the disk, the node applies the same entry.
    assert json.loads(proj.apply(1, entry)) == [{"ok": True, "events": [[1, 0, 1]]}]
    assert proj.last_applied() == 1
