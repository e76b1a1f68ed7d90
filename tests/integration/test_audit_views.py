"""``xes audit conversation|room|user`` (issue 17, item 3) on data written by a real server.

Real clients chat (with a correction), subscribe, and use a room (a subject, a role change,
someone leaving at a known moment); the views are then asked about chosen moments, with the
node running and after it stopped, and compared with what the clients did and saw. Each use
is itself recorded as ``audit.accessed`` (in the log while the node runs, queued when not).
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.clients import next_matching
from tests.integration.conftest import run
from tests.integration.mucclient import (
    MucClient,
    create,
    item,
    join,
    leave,
    message_from,
    online,
    presence_from,
    send_message,
    stanza_id,
    subject_of,
)
from tests.integration.server import XesServer
from tests.integration.test_muc import admin_item

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PASSWORD = "views-secret"
CORRECT = "urn:xmpp:message-correct:0"


def iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, tz=datetime.UTC).isoformat(timespec="milliseconds")


def view(srv: XesServer, *args: str) -> dict[str, Any]:
    """``xes audit ARGS --json``: its one JSON document."""
    return json.loads(srv.xes("audit", *args, "--json").stdout)  # type: ignore[no-any-return]


def occupants(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(o["nick"], o["real_jid"], o["role"], o["affiliation"]) for o in doc["occupants"]]


def roster(doc: dict[str, Any]) -> dict[str, str]:
    return {i["contact"]: i["subscription"] for i in doc["roster"]["items"]}


def test_views_of_a_conversation_a_room_and_a_user(tmp_path: Path) -> None:
    srv = XesServer(tmp_path / "node")
    srv.write_config()
    d = srv.domain
    alice_jid, bob_jid, carol_jid = f"alice@{d}", f"bob@{d}", f"carol@{d}"
    room = f"views@conference.{d}"
    marks: dict[str, float] = {}
    sent: list[tuple[str, str, str, str, str | None]] = []
    """(from, to, body, kind, refers) of each one-to-one message between Alice and Bob."""
    archive_ids: dict[str, str | None] = {}
    """Body -> the archive id (XEP-0359 stanza-id) the recipient's copy carried."""

    def mark(name: str) -> None:
        # Everything so far was proposed before this instant; what follows, after a pause.
        marks[name] = time.time()
        time.sleep(0.05)

    async def chat(frm: MucClient, to: MucClient, to_addr: str, text: str, extra: str = "") -> str:
        id_ = send_message(frm, to_addr, text, type_="chat", extra=extra)
        got = await to.inbox.take(message_from(str(frm.boundjid), text=text))
        archive_ids[text] = stanza_id(got, to.boundjid.bare)
        return id_

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/a", "bob/b", "carol/c") as (alice, bob, carol):
            first = await chat(alice, bob, bob_jid, "hello bob")
            sent.append((f"{alice_jid}/a", bob_jid, "hello bob", "message", None))
            await chat(bob, alice, f"{alice_jid}/a", "hi alice")
            sent.append((f"{bob_jid}/b", f"{alice_jid}/a", "hi alice", "message", None))
            fix = f"<replace xmlns='{CORRECT}' id='{first}'/>"
            await chat(alice, bob, bob_jid, "hello, bob", fix)
            sent.append((f"{alice_jid}/a", bob_jid, "hello, bob", "correction", first))
            await chat(alice, carol, carol_jid, "not for bob")  # another pair: not listed
            mark("before_subscription")

            alice.send_presence(pto=bob_jid, ptype="subscribe")
            await next_matching(bob.subscriptions, lambda p: p["type"] == "subscribe")
            bob.send_presence(pto=alice_jid, ptype="subscribed")
            await next_matching(alice.subscriptions, lambda p: p["type"] == "subscribed")

            await create(alice, room, "Alice")
            send_message(alice, room, subject="Plans")
            got = await alice.inbox.take(message_from(f"{room}/Alice"))
            assert subject_of(got) == "Plans"
            await join(bob, room, "Bob")
            await join(carol, room, "Carol")
            await alice.iq("set", room, admin_item(nick="Carol", role="visitor"))
            seen = await bob.inbox.take(presence_from(f"{room}/Carol"))
            while item(seen).get("role") != "visitor":
                seen = await bob.inbox.take(presence_from(f"{room}/Carol"))
            mark("carol_visitor")

            await leave(carol, room, "Carol")
            await alice.inbox.take(presence_from(f"{room}/Carol", unavailable=True))
            mark("carol_gone")

    try:
        srv.start()
        for user in ("alice", "bob", "carol"):
            srv.add_user(user, PASSWORD)
        run(scenario())

        # -- the conversation, from the journal, with the node running --------------------------
        talk = view(srv, "conversation", "alice", bob_jid)
        assert "access recorded in the log at index" in talk["access"]
        got = [(m["from"], m["to"], m["body"], m["kind"], m["refers"]) for m in talk["messages"]]
        assert got == sent
        assert [m["stanza_id"] for m in talk["messages"]] == [
            archive_ids[body] for _, _, body, _, _ in sent
        ]
        assert all(talk["messages"][i]["stanza_id"] for i in range(3))
        times = [m["at"] for m in talk["messages"]]
        assert times == sorted(times)
        assert all(t < iso(marks["before_subscription"]) for t in times)
        upto_first = talk["messages"][0]["index"]
        only = view(srv, "conversation", "alice", "bob", "--until", str(upto_first))
        assert [m["body"] for m in only["messages"]] == ["hello bob"]
        text = srv.xes("audit", "conversation", "alice", "bob").stdout
        assert "3 messages" in text and f"[correction of {sent[2][4]}] hello, bob" in text
        assert "not for bob" not in text

        # -- the room at two moments, by time and by index ------------------------------------
        at1 = view(srv, "room", room, "--at", iso(marks["carol_visitor"]))
        assert occupants(at1) == [
            ("Alice", f"{alice_jid}/a", "moderator", "owner"),
            ("Bob", f"{bob_jid}/b", "participant", "none"),
            ("Carol", f"{carol_jid}/c", "visitor", "none"),
        ]
        assert (at1["subject"], at1["subject_by"]) == ("Plans", "Alice")
        assert at1["affiliations"] == {alice_jid: "owner"}
        assert at1["locked"] is False and at1["config"]["persistent"] is False
        by_index = view(srv, "room", "views", "--at", str(at1["at"]["index"]))
        assert occupants(by_index) == occupants(at1)
        assert by_index["at"]["digest"] == at1["at"]["digest"]
        at2 = view(srv, "room", room, "--at", iso(marks["carol_gone"]))
        assert [o[0] for o in occupants(at2)] == ["Alice", "Bob"]
        assert at2["at"]["index"] > at1["at"]["index"]
        text = srv.xes("audit", "room", room, "--at", iso(marks["carol_gone"])).stdout
        assert "subject: 'Plans' (set by Alice)" in text
        assert "Carol" not in text
        early = srv.xes(
            "audit", "room", room, "--at", iso(marks["before_subscription"]), check=False
        )
        assert early.returncode == 1 and f"no room {room}" in early.stdout, early

        # -- a user before and after a subscription, and once logged out ------------------------
        alice_before = view(srv, "user", "alice", "--at", iso(marks["before_subscription"]))
        assert bob_jid not in roster(alice_before)
        assert [s["jid"] for s in alice_before["sessions"]] == [f"{alice_jid}/a"]
        assert alice_before["sessions"][0]["available"] is True
        assert alice_before["presence"]["available"] == [f"{alice_jid}/a"]
        alice_after = view(srv, "user", "alice", "--at", iso(marks["carol_visitor"]))
        assert roster(alice_after) == {bob_jid: "to"}
        bob_after = view(srv, "user", "bob", "--at", iso(marks["carol_visitor"]))
        assert roster(bob_after) == {alice_jid: "from"}
        now = view(srv, "user", "alice", "--at", iso(time.time() + 1))
        assert now["sessions"] == [] and now["presence"]["last_unavailable"] is not None
        assert [d["resource"] for d in now["devices"]["offline"]] == ["a"]
        text = srv.xes("audit", "user", "alice", "--at", iso(marks["carol_visitor"])).stdout
        assert f"{bob_jid}  to" in text and f"{alice_jid}/a" in text

        # -- with the node stopped: the same answers, the accesses queued -----------------------
        srv.stop()
        again = view(srv, "room", room, "--at", str(at1["at"]["index"]))
        assert occupants(again) == occupants(at1)
        assert again["at"]["digest"] == at1["at"]["digest"]
        assert again["access"].startswith("access queued")
        assert view(srv, "conversation", "alice", "bob")["messages"] == talk["messages"]
        queued = (srv.data_dir / "audit" / "access-queue.jsonl").read_text().splitlines()
        assert [json.loads(line)["command"] for line in queued] == ["room", "conversation"]
        dump = [json.loads(line) for line in srv.xes("events", "dump").stdout.splitlines()]
        recorded = [e["event"]["data"] for e in dump if e["event"]["type"] == "audit.accessed"]
        assert {r["command"] for r in recorded} == {"conversation", "room", "user"}
        rooms = [r["args"] for r in recorded if r["command"] == "room"]
        assert (rooms[0]["room"], rooms[0]["at"]) == (room, iso(marks["carol_visitor"]))
    finally:
        if srv.running:
            srv.stop()
