"""Read status (``urn:xes:read-status:0``, docs/protocol/read-status.md) with real servers.

A members-only room of ten members on three nodes: the originator follows two messages, some
members display (a marker for the later message covers the earlier one), some send XEP-0184
receipts, the others nothing; the originator's query and the notifications its sessions get
(one slixmpp session without stream management on one node, one raw stream-management session
on another) say exactly who received, who displayed and who not yet. Outsiders and ordinary
members may not ask. And one-to-one: a recipient with two devices, one of which displays.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from slixmpp.xmlstream import ET

from tests.integration.cluster import XesCluster
from tests.integration.conftest import run
from tests.integration.mucclient import (
    CLIENT,
    MESSAGE,
    MUC_ADMIN,
    MucClient,
    bare,
    create,
    disco_features,
    join,
    online,
    send_message,
    stanza_id,
)
from tests.integration.server import XesServer
from tests.integration.smclient import SmClient
from tests.integration.test_cluster import replay, settle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

RS = "urn:xes:read-status:0"
MARKERS = "urn:xmpp:chat-markers:0"
RECEIPTS = "urn:xmpp:receipts"
DOMAIN = "xes.test"
ROOM = f"team@conference.{DOMAIN}"
INFO = "<query xmlns='http://jabber.org/protocol/disco#info'/>"
REQUEST = f"<request xmlns='{RS}'/>"


def status_of(result: ET.Element, key: str = "jid") -> dict[str, set[str]]:
    """{displayed|received|pending: {jid or device}} from a query result."""
    status = result.find(f"{{{RS}}}status")
    assert status is not None, ET.tostring(result)
    out: dict[str, set[str]] = {"displayed": set(), "received": set(), "pending": set()}
    for el in status:
        kind = el.tag.split("}", 1)[1]
        out[kind].add(el.get(key, ""))
        if kind != "pending":
            assert el.get("at"), ET.tostring(el)
    return out


def notes_of(elems: list[ET.Element]) -> list[tuple[str, str, frozenset[str]]]:
    """(kind, who, item ids) of every read-status notification among ``elems``."""
    out = []
    for el in elems:
        marked = el.find(f"{{{RS}}}marked")
        if el.tag == MESSAGE and marked is not None:
            who = marked.get("jid") or marked.get("device") or ""
            ids = frozenset(i.get("id", "") for i in marked.iter(f"{{{RS}}}item"))
            out.append((marked.get("kind", ""), who, ids))
    return out


async def until(check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """``await check()`` until it returns something true (the log commits asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


def test_members_only_room_of_ten_on_three_nodes(tmp_path: Path) -> None:
    cluster = XesCluster(tmp_path)
    try:
        cluster.start()
        nodes = cluster.nodes
        users = [f"u{i}" for i in range(10)] + ["out"]
        for user in users:
            nodes[0].add_user(user, f"{user}-pw")
        asyncio.run(_room_scenario(cluster, nodes))
        settle(cluster)
        digests = {replay(node)[0] for node in nodes}
        assert len(digests) == 1, digests
    finally:
        cluster.stop()


async def _room_scenario(cluster: XesCluster, nodes: list[XesServer]) -> None:
    clients = [MucClient(f"u{i}@{DOMAIN}/dev", f"u{i}-pw") for i in range(10)]
    outsider = MucClient(f"out@{DOMAIN}/dev", "out-pw")
    for i, client in enumerate(clients):
        await client.login(nodes[i % 3].c2s)
    await outsider.login(nodes[2].c2s)
    owner = clients[0]
    # The owner's second session, with stream management, on another node.
    sm = SmClient(nodes[1].c2s)
    await asyncio.to_thread(sm.login_sm, nodes[1], "u0", "u0-pw", "sm")
    sm.send("<presence/>")
    try:
        await create(
            owner,
            ROOM,
            "Boss",
            {"muc#roomconfig_membersonly": "1", "muc#roomconfig_persistentroom": "1"},
        )
        assert RS in disco_features(await owner.iq("get", ROOM, INFO))
        items = "".join(f"<item affiliation='member' jid='u{i}@{DOMAIN}'/>" for i in range(1, 10))
        await owner.iq("set", ROOM, f"<query xmlns='{MUC_ADMIN}'>{items}</query>")
        # u1..u8 join; u9 is a member who is not in the room.
        for i in range(1, 9):
            await join(clients[i], ROOM, f"nick{i}")

        async def reflected(text: str) -> str:
            send_message(owner, ROOM, text, id_=f"id-{text}", extra=REQUEST)
            el = await owner.inbox.take(
                lambda e: e.tag == MESSAGE and e.findtext(f"{{{CLIENT}}}body") == text, 20
            )
            sid = stanza_id(el, ROOM)
            assert sid
            return sid

        sid1 = await reflected("first")
        sid2 = await reflected("second")
        # Every member has both before anyone marks (so the markers name known messages).
        for i in range(1, 9):
            await clients[i].inbox.take(
                lambda e: e.tag == MESSAGE and e.findtext(f"{{{CLIENT}}}body") == "second", 20
            )

        def marker(i: int, xml: str) -> None:
            clients[i].send_raw(f"<message to='{ROOM}' type='groupchat'>{xml}</message>")

        for i in (1, 2, 3):  # displayed the later one: covers both
            marker(i, f"<displayed xmlns='{MARKERS}' id='{sid2}'/>")
        for i in (4, 5):  # XEP-0184 receipts for the first
            marker(i, f"<received xmlns='{RECEIPTS}' id='{sid1}'/>")
        marker(6, f"<displayed xmlns='{MARKERS}' id='{sid1}'/>")
        marker(7, f"<displayed xmlns='{MARKERS}' id='no-such-message'/>")  # names nothing

        jid = {i: f"u{i}@{DOMAIN}" for i in range(10)}
        want1 = {
            "displayed": {jid[1], jid[2], jid[3], jid[6]},
            "received": {jid[4], jid[5]},
            "pending": {jid[7], jid[8], jid[9]},
        }
        want2 = {
            "displayed": {jid[1], jid[2], jid[3]},
            "received": set(),
            "pending": {jid[i] for i in range(4, 10)},
        }

        async def query(sid: str) -> dict[str, set[str]]:
            return status_of(await owner.iq("get", ROOM, f"<status xmlns='{RS}' id='{sid}'/>"))

        async def settled() -> bool:
            return await query(sid1) == want1 and await query(sid2) == want2

        await until(settled)
        assert await query(sid1) == want1
        assert await query(sid2) == want2
        # The sender's own id names the message too.
        assert await query("id-first") == want1

        # Notifications: one per marker event, each listing every message it newly covered.
        want_notes = sorted(
            [("displayed", jid[i], frozenset({sid1, sid2})) for i in (1, 2, 3)]
            + [("received", jid[i], frozenset({sid1})) for i in (4, 5)]
            + [("displayed", jid[6], frozenset({sid1}))]
        )

        async def slix_notes() -> bool:
            return sorted(notes_of(owner.inbox.items)) == want_notes

        assert await until(slix_notes), sorted(notes_of(owner.inbox.items))
        assert all(
            bare(e.get("from")) == ROOM
            for e in owner.inbox.items
            if e.find(f"{{{RS}}}marked") is not None
        )
        sm_notes: list[tuple[str, str, frozenset[str]]] = []
        deadline = time.monotonic() + 30
        while sorted(sm_notes) != want_notes and time.monotonic() < deadline:
            await asyncio.to_thread(sm.pump, 0.5)
            sm_notes += notes_of(sm.messages())
        assert sorted(sm_notes) == want_notes

        # Who may ask: not an ordinary member, not an outsider; unknown ids are not found.
        payload = f"<status xmlns='{RS}' id='{sid1}'/>"
        assert (await clients[4].iq_error("get", ROOM, payload))[0] == "forbidden"
        assert (await outsider.iq_error("get", ROOM, payload))[0] == "forbidden"
        missing = f"<status xmlns='{RS}' id='nope'/>"
        assert (await owner.iq_error("get", ROOM, missing))[0] == "item-not-found"

        # A non-moderator originator in a semi-anonymous room sees nicknames, not JIDs.
        send_message(clients[4], ROOM, "from four", id_="four-1", extra=REQUEST)
        el = await clients[4].inbox.take(
            lambda e: e.tag == MESSAGE and e.findtext(f"{{{CLIENT}}}body") == "from four", 20
        )
        sid4 = stanza_id(el, ROOM)
        await clients[5].inbox.take(
            lambda e: e.tag == MESSAGE and e.findtext(f"{{{CLIENT}}}body") == "from four", 20
        )
        marker(5, f"<displayed xmlns='{MARKERS}' id='{sid4}'/>")

        async def four_status() -> ET.Element | None:
            res = await clients[4].iq("get", ROOM, f"<status xmlns='{RS}' id='{sid4}'/>")
            return res if status_of(res, "nick")["displayed"] == {"nick5"} else None

        res = await until(four_status)
        assert res is not None
        assert b"u5@" not in ET.tostring(res) and b"occupant-id" in ET.tostring(res)
    finally:
        sm.close()
        for c in [*clients, outsider]:
            c.disconnect()
        await asyncio.sleep(0.5)


def test_one_to_one_two_devices_one_displays(server: XesServer) -> None:
    for user in ("alice", "bob"):
        server.add_user(user, "pw")

    async def scenario() -> None:
        async with online(server, "pw", "alice/phone", "bob/b1", "bob/b2") as clients:
            await _chat_scenario(*clients)

    run(scenario())


async def _chat_scenario(alice: MucClient, bob1: MucClient, bob2: MucClient) -> None:
    """Alice follows a chat message to Bob's two devices; b2 displays it, then b1 receives."""
    features = disco_features(await alice.iq("get", DOMAIN, INFO))
    assert RS in features
    send_message(alice, f"bob@{DOMAIN}", "hi", type_="chat", id_="c1", extra=REQUEST)
    for b in (bob1, bob2):
        await b.inbox.take(lambda e: e.findtext(f"{{{CLIENT}}}body") == "hi", 20)
    send_message(
        bob2,
        f"alice@{DOMAIN}/phone",
        type_="chat",
        extra=f"<displayed xmlns='{MARKERS}' id='c1'/>",
    )
    q = f"<status xmlns='{RS}' id='c1' with='bob@{DOMAIN}'/>"

    async def after_display() -> dict[str, set[str]] | None:
        got = status_of(await alice.iq("get", f"alice@{DOMAIN}", q), "device")
        return got if got["displayed"] else None

    got = await until(after_display)
    assert got == {"displayed": {"b2"}, "received": set(), "pending": {"b1"}}
    send_message(
        bob1,
        f"alice@{DOMAIN}",
        type_="chat",
        extra=f"<received xmlns='{RECEIPTS}' id='c1'/>",
    )

    async def after_receipt() -> dict[str, set[str]] | None:
        got = status_of(await alice.iq("get", None, q), "device")
        return got if got["received"] else None

    got = await until(after_receipt)
    assert got == {"displayed": {"b2"}, "received": {"b1"}, "pending": set()}

    async def notes() -> bool:
        return sorted(notes_of(alice.inbox.items)) == [
            ("displayed", "b2", frozenset({"c1"})),
            ("received", "b1", frozenset({"c1"})),
        ]

    assert await until(notes), notes_of(alice.inbox.items)
    marked = [e for e in alice.inbox.items if e.find(f"{{{RS}}}marked") is not None]
    assert {e.get("from") for e in marked} == {f"alice@{DOMAIN}"}
    assert {e.find(f"{{{RS}}}marked").get("with") for e in marked} == {f"bob@{DOMAIN}"}
    # Only one's own messages: asking another account is refused, an unknown id unknown.
    other = await alice.iq_error("get", f"bob@{DOMAIN}", q)
    assert other[0] == "forbidden"
    unknown = f"<status xmlns='{RS}' id='zz' with='bob@{DOMAIN}'/>"
    assert (await alice.iq_error("get", f"alice@{DOMAIN}", unknown))[0] == "item-not-found"
