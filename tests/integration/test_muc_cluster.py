"""A room across three real nodes: every occupant gets every message once, in order, and the
room survives ``kill -9`` of the node holding a third of its occupants (ADR 0011).

Occupants are spread over the nodes (slixmpp clients, and one raw stream-management client on
the node that dies). A steady stream of numbered groupchat messages runs through the kill. The
dead node's occupants leave (status 333) after ``node_down_after``; its slixmpp users rejoin
through the other nodes with the same nicknames and fetch what they missed from the room
archive; the stream-management user resumes on another node and gets exactly the rows it had
not acknowledged. The room keeps its configuration, affiliations, subject and history, and
every node ends with the same replayed digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path

import pytest
import slixmpp

from tests.integration.clients import Client, next_matching
from tests.integration.cluster import XesCluster
from tests.integration.conftest import run
from tests.integration.smclient import CLIENT, SmClient, body
from tests.integration.test_cluster import replay, settle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

ROOM = "ops@conference.xes.test"
MUC_USER = "http://jabber.org/protocol/muc#user"
SID = "urn:xmpp:sid:0"
BEFORE_KILL = 15
AFTER_KILL = 15


class Occupant(Client):
    """A slixmpp occupant that records the room's messages (body -> stanza-id) in order."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password, plugins=("xep_0045", "xep_0004", "xep_0313", "xep_0359"))
        self.room_bodies: list[str] = []
        self.room_ids: list[str] = []
        self.left: asyncio.Queue[slixmpp.Presence] = asyncio.Queue()
        self.add_event_handler("groupchat_message", self._on_groupchat)
        self.add_event_handler("muc::%s::got_offline" % ROOM, self.left.put_nowait)

    def _on_groupchat(self, msg: slixmpp.Message) -> None:
        if msg["body"].startswith("g") and not msg["delay"]["stamp"]:
            self.room_bodies.append(msg["body"])
            self.room_ids.append(msg["stanza_id"]["id"])

    async def join(self, nick: str) -> None:
        await self.plugin["xep_0045"].join_muc_wait(ROOM, nick, maxstanzas=0, timeout=20)

    async def catch_up(self, after: str) -> list[tuple[str, str]]:
        """(stanza-id, body) of every archived room message after ``after``, paging by RSM."""
        out: list[tuple[str, str]] = []
        while True:
            iq = self.make_iq_set(ito=ROOM)
            query = iq["mam"]
            query["queryid"] = f"q{len(out)}"
            query["rsm"]["max"] = "10"
            query["rsm"]["after"] = after
            results: list[slixmpp.Message] = []
            handler = f"mam_{query['queryid']}"
            self.register_handler(
                slixmpp.xmlstream.handler.Callback(
                    handler,
                    slixmpp.xmlstream.matcher.MatchXPath(
                        "{jabber:client}message/{urn:xmpp:mam:2}result"
                    ),
                    results.append,
                )
            )
            try:
                reply = await iq.send(timeout=20)
            finally:
                self.remove_handler(handler)
            for msg in results:
                inner = msg["mam_result"]["forwarded"]["stanza"]
                if inner["body"].startswith("g"):
                    out.append((msg["mam_result"]["id"], inner["body"]))
            fin = reply["mam_fin"]
            if fin["complete"] in (True, "true") or not fin["rsm"]["last"]:
                return out
            after = fin["rsm"]["last"]


def join_raw(client: SmClient, nick: str) -> None:
    client.send(
        f"<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>"
        "<history maxstanzas='0'/></x></presence>"
    )
    client.wait_for(
        lambda e: (
            e.tag == f"{{{CLIENT}}}presence"
            and e.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}status[@code='110']") is not None
        ),
        timeout=20,
    )


def raw_room_bodies(client: SmClient) -> list[str]:
    out = []
    for msg in client.messages():
        text = body(msg)
        if msg.get("type") == "groupchat" and text and text.startswith("g"):
            out.append(text)
    return out


async def send_numbered(sender: Occupant, seqs: range) -> None:
    """One message at a time, each sent again until the room reflects it (a refused one gets
    an error while the cluster elects a leader: the client is told, nothing is assumed)."""
    for seq in seqs:
        text = f"g{seq}"
        for _attempt in range(20):
            msg = sender.make_message(mto=ROOM, mbody=text, mtype="groupchat")
            msg["id"] = f"{text}-{_attempt}"
            msg.send()
            got = await next_matching(
                sender.messages,
                lambda m, mid=msg["id"]: m["id"] == mid,
                timeout=15,
            )
            if got["type"] != "error":
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"{text} was never accepted")
        await asyncio.sleep(0.05)


def test_room_survives_kill_of_a_node_with_a_third_of_its_occupants(tmp_path: Path) -> None:
    cluster = XesCluster(tmp_path, extra="node_down_after = 3.0\ncommit_timeout = 2.0\n")
    try:
        cluster.start()
        n1, n2, n3 = cluster.nodes
        users = [f"o{i}" for i in range(1, 7)]
        for user in users:
            n1.add_user(user, f"{user}-pw")

        async def scenario() -> None:
            # o1, o2 on n1; o3, o4 on n2; o5 (slixmpp) and o6 (raw, stream management) on n3.
            placement = [n1, n1, n2, n2, n3]
            occupants = [Occupant(f"{u}@xes.test/dev", f"{u}-pw") for u in users[:5]]
            for client, node in zip(occupants, placement, strict=True):
                await client.login(node.c2s)
            owner = occupants[0]
            await owner.join("o1")
            form = owner.plugin["xep_0004"].make_form(ftype="submit")
            form.add_field(var="FORM_TYPE", value="http://jabber.org/protocol/muc#roomconfig")
            form.add_field(var="muc#roomconfig_persistentroom", value=True)
            form.add_field(var="muc#roomconfig_roomname", value="Operations")
            await owner.plugin["xep_0045"].set_room_config(ROOM, form)
            owner.plugin["xep_0045"].set_subject(ROOM, "night shift")
            for client, user in zip(occupants[1:], users[1:5], strict=True):
                await client.join(user)
            sm = SmClient(n3.c2s)
            _, sm_id = await asyncio.to_thread(sm.login_sm, n3, "o6", "o6-pw", "dev")
            sm.auto_ack = False  # it acknowledges what the test says, when the test says
            await asyncio.to_thread(join_raw, sm, "o6")
            sm.ack()

            await send_numbered(owner, range(1, BEFORE_KILL + 1))
            # Everyone, on every node, has 1..15 exactly once and in order.
            want = [f"g{i}" for i in range(1, BEFORE_KILL + 1)]
            for client in occupants:
                deadline = time.monotonic() + 20
                while client.room_bodies != want and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert client.room_bodies == want, (client.boundjid, client.room_bodies)
            seen: list[str] = []
            while len(seen) < BEFORE_KILL:
                await asyncio.to_thread(sm.pump, 0.5)
                seen += raw_room_bodies(sm)
            assert seen == want, seen
            # The stream-management user acknowledges 1..10 only (the last five stanzas it
            # counted are g11..g15), then its node dies.
            handled_at_10 = sm.handled - (BEFORE_KILL - 10)
            sm.send(f"<a xmlns='urn:xmpp:sm:3' h='{handled_at_10}'/>")
            await asyncio.sleep(0.3)

            victim_last_id = occupants[4].room_ids[-1]
            await asyncio.to_thread(cluster.kill, n3)
            sm.cut()
            # The stream goes on through the kill, across the two surviving nodes.
            await send_numbered(owner, range(BEFORE_KILL + 1, BEFORE_KILL + AFTER_KILL + 1))
            # The dead node's plain occupant leaves (333), seen by all, after node_down_after;
            # the stream-management one is detached and stays joined, waiting to resume.
            for watcher in occupants[:4]:
                pres = await asyncio.wait_for(watcher.left.get(), 30)
                codes = set(re.findall(r"code=['\"](\d+)", str(pres)))
                assert pres["from"].resource == "o5" and "333" in codes, pres
            full = [f"g{i}" for i in range(1, BEFORE_KILL + AFTER_KILL + 1)]
            for client in occupants[:4]:
                deadline = time.monotonic() + 20
                while client.room_bodies != full and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert client.room_bodies == full, (client.boundjid, client.room_bodies)

            # o5 comes back through n1 with its nickname: no lock-out, no ghost in the way.
            back = Occupant("o5@xes.test/dev", "o5-pw")
            await back.login(n1.c2s)
            await back.join("o5")
            missed = await back.catch_up(victim_last_id)
            bodies = [b for _, b in missed]
            assert bodies == full[BEFORE_KILL:], bodies
            assert len({i for i, _ in missed}) == len(missed)

            # o6 resumes its stream on n2: exactly the rows it had not acknowledged, in order.
            resumer = SmClient(n2.c2s)
            answer = await asyncio.to_thread(
                resumer.resume_on, n2, "o6", "o6-pw", sm_id, handled_at_10
            )
            if answer.tag.endswith("failed"):
                # Declared down before we resumed? Only if the deadline passed: it must not.
                raise AssertionError("resumption failed")
            got: list[str] = []
            deadline = time.monotonic() + 20
            while len(got) < BEFORE_KILL + AFTER_KILL - 10 and time.monotonic() < deadline:
                await asyncio.to_thread(resumer.pump, 0.5)
                got += raw_room_bodies(resumer)
            assert got == full[10:], got
            # Still joined: XEP-0410 self-ping answers result on the new node.
            resumer.send(
                f"<iq type='get' id='sp1' to='{ROOM}/o6'><ping xmlns='urn:xmpp:ping'/></iq>"
            )
            pong = await asyncio.to_thread(resumer.wait_for, lambda e: e.get("id") == "sp1", 10.0)
            assert pong.get("type") == "result"
            for client in [*occupants[:4], back]:
                client.disconnect()
            # The resumed session ends cleanly (its own goodbye): its occupant leaves with it.
            resumer.send("</stream:stream>")
            await asyncio.to_thread(resumer.recv_all_until_closed, 10.0)
            resumer.close()
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                sm.close()

        run(scenario())
        show = n2.xes("muc", "show", "ops").stdout
        assert '"persistent": true' in show and '"subject": "night shift"' in show, show
        assert '"o1@xes.test": "owner"' in show, show
        n3.start()
        settle(cluster, 60)
        results = [replay(node) for node in cluster.nodes]
        assert len({index for _, index in results}) == 1, results
        assert len({digest for digest, _ in results}) == 1, results
        for node in cluster.nodes:
            assert '"name": "Operations"' in node.xes("muc", "show", "ops").stdout
        # A full cluster restart: the persistent room comes back whole on every node.
        cluster.stop()
        cluster.start()
        settle(cluster, 60)
        for node in cluster.nodes:
            shown = node.xes("muc", "show", "ops").stdout
            assert '"name": "Operations"' in shown and '"subject": "night shift"' in shown, shown
            assert '"o1@xes.test": "owner"' in shown and '"occupants": []' in shown, shown
            assert f'"archived_messages": {BEFORE_KILL + AFTER_KILL}' in shown, shown
    finally:
        cluster.stop()
