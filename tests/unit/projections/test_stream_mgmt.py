"""The sm projection: outbox rows decided at apply time, acks, epochs, resumption, refusals."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.projections.test_projector import command, env, fresh
from xes.events.catalog import (
    AccountRegistered,
    MessageRouted,
    OfflineFlushed,
    PresenceUpdated,
    SessionBound,
    SessionEnded,
    SmAcked,
    SmDetached,
    SmEnabled,
    SmHandled,
    SmResumed,
    SmStanzasQueued,
)
from xes.projections import offline, sessions
from xes.projections import stream_mgmt as sm
from xes.session.stream_management import WRAP, unwrap


def ok(raw: bytes) -> bool:
    return all(r["ok"] for r in json.loads(raw))


def reason(raw: bytes) -> str:
    return str(json.loads(raw)[0].get("reason", ""))


def msg(to: str, body: str, targets: list[str], offline_for: str | None = None) -> MessageRouted:
    xml = f"<message from='b@x/r' to='{to}' type='chat'><body>{body}</body></message>"
    return MessageRouted("b@x/r", to, "chat", xml, targets, offline_for)


def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    store, proj = fresh(tmp_path / "s")
    i = 0

    def apply(*events) -> bytes:  # type: ignore[no-untyped-def]
        nonlocal i
        i += 1
        return proj.apply(i, command([env(e) for e in events]))

    apply(AccountRegistered("a@x", {}))
    apply(SessionBound("s1", "a@x/phone", "n1", "b1", device=True))
    apply(SmEnabled("s1", True, 300))
    return store, apply


def rows(store, session: str = "s1", after: int = 0) -> list[str]:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        return [r.xml for r in sm.rows(store, txn, session, after)]


def state(store, session: str = "s1") -> sm.SmState:  # type: ignore[no-untyped-def]
    with store.env.begin() as txn:
        st = sm.state(store, txn, session)
    assert st is not None
    return st


def test_rows_follow_the_log_and_acks_drop_them(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(msg("a@x/phone", "one", ["a@x/phone"])))
    assert ok(apply(SmStanzasQueued("s1", 0, ["<iq type='result' id='p'/>"])))
    assert ok(apply(msg("a@x", "two", ["a@x/phone", "a@x/other"])))
    assert [("one" in x, "result" in x, "two" in x) for x in rows(store)] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
    ]
    assert state(store).next == 3
    assert ok(apply(SmAcked("s1", 2, 0)))
    assert len(rows(store)) == 1 and state(store).acked == 2
    # An ack above what was sent is clamped; a lower one changes nothing.
    assert ok(apply(SmAcked("s1", 1, 0)))
    assert state(store).acked == 2


def test_stale_epoch_is_refused_whole(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(msg("a@x/phone", "one", ["a@x/phone"])))
    assert ok(apply(SmResumed("s1", "n2", "b9", 0, 1)))
    with store.env.begin() as txn:
        view = sessions.get(store, txn, "s1")
    assert view is not None and (view.node, view.boot) == ("n2", "b9")
    # The old connection's late message, with its handled count, is refused as a whole.
    raw = apply(msg("b@x/r", "late", ["b@x/r"]), SmHandled("s1", 5, 0))
    assert not ok(raw) and "sm-stale" in reason(raw)
    # Two nodes resuming the same session: the second is refused.
    raw = apply(SmResumed("s1", "n3", "b3", 0, 1))
    assert not ok(raw) and "sm-conflict" in reason(raw)
    raw = apply(SmResumed("s1", "n3", "b3", 5, 2))
    assert not ok(raw) and "sm-bad-h" in reason(raw)


def test_end_must_reroute_every_row(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(msg("a@x/phone", "one", ["a@x/phone"])))
    raw = apply(SessionEnded("s1", "a@x/phone", "closed", 0))
    assert not ok(raw) and "sm-outbox-changed" in reason(raw)
    assert ok(apply(SessionEnded("s1", "a@x/phone", "closed", 1)))
    with store.env.begin() as txn:
        assert sm.state(store, txn, "s1") is None
        assert sm.rows(store, txn, "s1") == []
        assert sm.ended(store, txn, "s1")["handled"] == 0


def test_detached_session_is_held_by_no_node_until_resumed(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(SmDetached("s1", 1000, "node_down")))
    with store.env.begin() as txn:
        assert sessions.get(store, txn, "s1").node == ""  # type: ignore[union-attr]
        assert sm.detached_due(store, txn, 999) == []
        assert sm.detached_due(store, txn, 1000) == ["s1"]
    assert state(store).epoch == 1
    assert ok(apply(SmResumed("s1", "n2", "b2", 0, 2)))
    with store.env.begin() as txn:
        assert sm.detached_due(store, txn, 10**15) == []


def test_presence_to_bare_jid_reaches_available_managed_sessions(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    xml = "<presence from='a@x/phone'/>"
    assert ok(apply(PresenceUpdated("s1", "a@x/phone", True, 0, xml, ["a@x/phone"])))
    assert ok(apply(PresenceUpdated("s9", "c@x/r", True, 0, "<presence from='c@x/r'/>", ["a@x"])))
    assert rows(store) == [xml, "<presence from='c@x/r'/>"]


def test_offline_waits_for_every_known_device(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(SessionEnded("s1", "a@x/phone", "closed", 0)))
    assert ok(apply(SessionBound("s2", "a@x/desk", "n1", "b1", device=True)))
    assert ok(apply(SessionEnded("s2", "a@x/desk", "closed")))
    assert ok(apply(msg("a@x", "stored", [], "a@x")))
    with store.env.begin() as txn:
        (stored,) = offline.messages(store, txn, "a@x")
    assert ok(apply(OfflineFlushed("a@x", stored.seq, "s3", "phone", 0)))
    with store.env.begin() as txn:
        assert offline.count(store, txn, "a@x") == 1  # the desk still needs it
        assert offline.for_device(store, txn, "a@x", "phone", stored.seq) == []
    assert ok(apply(OfflineFlushed("a@x", stored.seq, "s4", "desk", 0)))
    with store.env.begin() as txn:
        assert offline.count(store, txn, "a@x") == 0


def test_forgotten_device_does_not_hold_messages(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    assert ok(apply(SessionEnded("s1", "a@x/phone", "closed", 0)))
    assert ok(apply(msg("a@x", "stored", [], "a@x")))
    with store.env.begin() as txn:
        (stored,) = offline.messages(store, txn, "a@x")
    # A non-device session (server-chosen resource) takes it once the phone is forgotten.
    future = 2**62
    assert ok(apply(OfflineFlushed("a@x", stored.seq, "s5", "xes-1", 0, future)))
    with store.env.begin() as txn:
        assert offline.count(store, txn, "a@x") == 0


def test_counters_wrap_at_2_32() -> None:
    assert unwrap(5, 0) == 5
    assert unwrap(3, WRAP - 2) == WRAP + 3
    assert unwrap(0, WRAP) == WRAP
    assert unwrap(WRAP - 1, 2 * WRAP - 1) == 2 * WRAP - 1


def test_state_row_holds_every_field_but_the_session() -> None:
    """``SmState.to_json`` is spelled out for speed: a field added later must be added there."""
    import dataclasses

    st = sm.SmState("s1", "a@x/r", 1, True, 300, 5, 2, 3, False, 0)
    names = {f.name for f in dataclasses.fields(sm.SmState)} - {"session"}
    assert set(st.to_json()) == names
    assert sm.SmState.from_json("s1", st.to_json()) == st
