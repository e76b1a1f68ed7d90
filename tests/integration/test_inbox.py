"""Inbox (XEP-0430) against a real server with slixmpp: 50 conversations (one-to-one and rooms)
sorted by last activity with exact counts and last messages, RSM paging, filters, properties,
and a displayed marker from one device resetting the entry on the user's other device."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from slixmpp.xmlstream import ET

from tests.integration.cluster import running_cluster
from tests.integration.conftest import run
from tests.integration.inboxclient import displayed, is_push, query, set_properties
from tests.integration.mucclient import (
    MUC_ADMIN,
    MucClient,
    create,
    groupchat,
    mam_query,
    message_from,
    online,
    send_message,
)
from tests.integration.server import XesServer
from tests.integration.test_cluster import replay, settle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PASSWORD = "inbox-secret"
CARBONS = "urn:xmpp:carbons:2"


def sent_carbon_to(peer: str, text: str):  # type: ignore[no-untyped-def]
    def pred(el) -> bool:  # type: ignore[no-untyped-def]
        sent = el.find(f"{{{CARBONS}}}sent")
        if sent is None:
            return False
        inner = sent.find(".//{jabber:client}message")
        found = inner is not None and inner.get("to", "").startswith(peer)
        return found and inner.findtext("{jabber:client}body") == text

    return pred


def test_fifty_conversations_sorted_counted_paged_and_read_elsewhere(server: XesServer) -> None:
    srv = server
    domain = srv.domain
    rng = random.Random(430)
    senders = [f"s{i}" for i in range(20)]
    written = [f"w{i}" for i in range(20)]
    for name in ("alice", "owner", *senders, *written):
        srv.add_user(name, PASSWORD)
    rooms = [f"team{i}@conference.{domain}" for i in range(10)]

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/phone", "alice/tablet", "owner/pc") as clients:
            alice, tablet, owner = clients
            enable = tablet.make_iq(itype="set")
            enable.xml.append(ET.fromstring(f"<enable xmlns='{CARBONS}'/>"))
            await enable.send(timeout=10)
            for room in rooms:
                await create(owner, room, "Owner")
                item = f"<item affiliation='member' jid='alice@{domain}'/>"
                await owner.iq("set", room, f"<query xmlns='{MUC_ADMIN}'>{item}</query>")
            async with online(srv, PASSWORD, *(f"{s}/pc" for s in senders)) as peers:
                # Every action is confirmed before the next, so the log has them in this order.
                actions: list[tuple[str, str]] = [("from", s) for s in senders for _ in range(3)]
                actions += [("to", w) for w in written]
                actions += [("room", r) for r in rooms for _ in range(2)]
                rng.shuffle(actions)
                expected: dict[str, dict] = {}
                for n, (kind, who) in enumerate(actions):
                    text = f"msg {n}"
                    if kind == "from":
                        peer = peers[senders.index(who)]
                        send_message(peer, f"alice@{domain}", text, type_="chat", id_=f"id{n}")
                        await alice.inbox.take(message_from(f"{who}@{domain}/pc", text=text))
                        conv = f"{who}@{domain}"
                        e = expected.setdefault(conv, {"unread": 0})
                        e["unread"] += 1
                    elif kind == "to":
                        send_message(alice, f"{who}@{domain}", text, type_="chat")
                        await tablet.inbox.take(sent_carbon_to(f"{who}@{domain}", text))
                        conv = f"{who}@{domain}"
                        e = expected.setdefault(conv, {"unread": 0})
                        e["unread"] = 0
                    else:
                        await groupchat(owner, who, text)
                        conv = who
                        e = expected.setdefault(conv, {"unread": 0})
                        e["unread"] += 1
                    e["body"], e["order"] = text, n
            order = sorted(expected, key=lambda c: -expected[c]["order"])
            assert len(order) == 50

            fin, rows = await query(alice, max_=50)
            assert [r.jid for r in rows] == order
            assert [r.unread for r in rows] == [expected[c]["unread"] for c in order]
            assert [r.last_body for r in rows] == [expected[c]["body"] for c in order]
            assert all(r.id for r in rows)
            unread_total = sum(e["unread"] for e in expected.values())
            assert fin.get("total") == "50" and fin.get("all-unread") == str(unread_total)
            assert fin.get("unread") == str(sum(1 for e in expected.values() if e["unread"]))

            # RSM: three pages of 20 give the same list.
            paged, after = [], None
            for _ in range(3):
                _, page = await query(alice, max_=20, after=after)
                paged += page
                if page:
                    after_fin = _.find(f"{{{RSM_NS}}}set/{{{RSM_NS}}}last")
                    after = after_fin.text if after_fin is not None else None
            assert [r.jid for r in paged] == order
            # unread-only and messages='false'.
            _, unread_rows = await query(alice, "unread-only='true' messages='false'", max_=50)
            assert [r.jid for r in unread_rows] == [c for c in order if expected[c]["unread"]]
            assert all(r.last_body is None for r in unread_rows)

            # The tablet watches the inbox; the phone reads a sender's conversation up to its
            # second message: the tablet is told, and both see one unread message left.
            await query(tablet, max_=1)
            conv = next(c for c in order if c.startswith("s") and expected[c]["unread"] == 3)
            sender = conv.split("@")[0]
            ids = [f"id{n}" for n, (k, w) in enumerate(actions) if k == "from" and w == sender]
            displayed(alice, conv, ids[1])
            await tablet.inbox.take(is_push(conv, unread=1))
            for device in (alice, tablet):
                _, rows = await query(device, max_=50)
                assert next(r for r in rows if r.jid == conv).unread == 1
            # Properties: pin one, archive another; box='inbox' leaves the archived one out.
            pinned, archived = order[-1], order[0]
            await set_properties(alice, pinned, pin="true")
            await set_properties(alice, archived, archive="true", read="true")
            _, rows = await query(alice, max_=50)
            assert rows[0].jid == pinned and rows[0].pinned
            assert next(r for r in rows if r.jid == archived).archived
            _, boxed = await query(alice, "box='inbox'", max_=50)
            assert archived not in [r.jid for r in boxed] and len(boxed) == 49
            _, boxed = await query(alice, "box='archive'", max_=50)
            assert [r.jid for r in boxed] == [archived] and boxed[0].unread == 0
            # Refused: another user's inbox, a bad flag, an unknown conversation.
            assert await owner.iq_error(
                "get", f"alice@{domain}", f"<inbox xmlns='{INBOX_NS}'/>"
            ) == (
                "forbidden",
                "auth",
            )
            bad = f"<inbox xmlns='{INBOX_NS}' unread-only='maybe'/>"
            assert (await alice.iq_error("get", f"alice@{domain}", bad))[0] == "bad-request"
            props = f"<query xmlns='urn:xes:inbox:0' jid='nobody@{domain}'><pin>true</pin></query>"
            assert (await alice.iq_error("set", f"alice@{domain}", props))[0] == "item-not-found"

    run(scenario())


INBOX_NS = "urn:xmpp:inbox:1"
MARKERS_NS = "urn:xmpp:chat-markers:0"
FORWARDED_MSG = "{urn:xmpp:mam:2}result/{urn:xmpp:forward:0}forwarded/{jabber:client}message"
RSM_NS = "http://jabber.org/protocol/rsm"


async def whole_archive(client: MucClient) -> list:  # type: ignore[type-arg]
    """Every message of the user's archive, in order (RSM pages of 200)."""
    out: list = []  # type: ignore[type-arg]
    after = ""
    while True:
        rsm = f"<set xmlns='{RSM_NS}'><max>200</max>{after}</set>"
        fin, results = await mam_query(client, client.boundjid.bare, rsm)
        out += results
        last = fin.find(f"{{{RSM_NS}}}set/{{{RSM_NS}}}last")
        if fin.get("complete") == "true" or last is None:
            return out
        after = f"<after>{last.text}</after>"


def _implied_counts(results: list, me: str) -> dict[str, int]:  # type: ignore[type-arg]
    """Unread counts per peer as the user's archive (in log order) implies them: a received
    message is unread until one's own message or a displayed marker naming it or a later one."""
    received: dict[str, list[str]] = {}
    read: dict[str, int] = {}
    for el in results:
        msg = el.find(FORWARDED_MSG)
        assert msg is not None
        frm, to = msg.get("from", "").split("/")[0], msg.get("to", "").split("/")[0]
        has_body = msg.find("{jabber:client}body") is not None
        mark = msg.find(f"{{{MARKERS_NS}}}displayed")
        if frm != me and has_body:
            received.setdefault(frm, []).append(msg.get("id", ""))
            read.setdefault(frm, 0)
        elif frm == me and has_body:
            read[to] = len(received.get(to, []))
        elif frm == me and mark is not None and mark.get("id") in received.get(to, []):
            read[to] = max(read[to], received[to].index(mark.get("id", "")) + 1)
    return {peer: len(ids) - read[peer] for peer, ids in received.items()}


def test_markers_and_messages_racing_on_three_nodes_end_with_the_archives_counts(
    tmp_path: Path,
) -> None:
    """Three devices of one user on three nodes, a peer on each node: the phone's marker resets
    the entry on the tablet (another node); then messages, answers and markers race from all
    nodes, and every node's inbox ends with the counts the archive implies, identical, with
    equal replay digests."""
    rng = random.Random(1616)
    with running_cluster(tmp_path) as cluster:
        n1, n2, n3 = cluster.nodes
        domain = n1.domain
        for name in ("ra", "rp1", "rp2", "rp3"):
            n1.add_user(name, PASSWORD)
        me = f"ra@{domain}"

        async def scenario() -> None:
            devices = [MucClient(f"{me}/d{i + 1}", PASSWORD) for i in range(3)]
            peers = [MucClient(f"rp{i + 1}@{domain}/pc", PASSWORD) for i in range(3)]
            nodes = (n1, n2, n3)
            await asyncio.gather(
                *(c.login(nodes[i].c2s) for i, c in enumerate(devices)),
                *(c.login(nodes[i].c2s) for i, c in enumerate(peers)),
            )
            p3 = f"rp3@{domain}"
            for i in range(3):
                send_message(peers[2], me, f"first {i}", type_="chat", id_=f"f{i}")
            for i in range(3):
                await devices[0].inbox.take(message_from(f"{p3}/pc", text=f"first {i}"), 20)
            await query(devices[1])  # the tablet (on n2) watches the inbox
            displayed(devices[0], p3, "f1")  # the phone (on n1) read up to the second
            await devices[1].inbox.take(is_push(p3, unread=1), 20)
            _, rows = await query(devices[2])  # and n3 agrees
            assert [(r.jid, r.unread) for r in rows] == [(p3, 1)]

            seen: list[list[tuple[str, str]]] = [[], [], []]  # (peer, id) each device got

            def harvest(d: int) -> None:
                for el in list(devices[d].inbox.items):
                    frm = el.get("from", "")
                    if (
                        frm.startswith("rp")
                        and (el.findtext("{jabber:client}body") or "")[:4] == "race"
                    ):
                        seen[d].append((frm.split("/")[0], el.get("id", "")))
                        devices[d].inbox.items.remove(el)

            sent = 0
            for step in range(160):
                roll = rng.random()
                if roll < 0.6:
                    k = rng.randrange(3)
                    send_message(peers[k], me, f"race {step}", type_="chat", id_=f"r{step}")
                    sent += 1
                elif roll < 0.7:
                    d = rng.randrange(3)
                    peer = f"rp{rng.randrange(3) + 1}@{domain}"
                    send_message(devices[d], peer, f"re {step}", type_="chat")
                else:
                    d = rng.randrange(3)
                    harvest(d)
                    if seen[d]:
                        peer, marked = rng.choice(seen[d][-8:])
                        displayed(devices[d], peer, marked)
                if step % 20 == 0:
                    await asyncio.sleep(0.05)
            # Quiet: every device has had every message (the last ones too).
            deadline = asyncio.get_running_loop().time() + 30
            while any(len(seen[d]) < sent for d in range(3)):
                assert asyncio.get_running_loop().time() < deadline, [len(x) for x in seen]
                await asyncio.sleep(0.2)
                for d in range(3):
                    harvest(d)
            await asyncio.sleep(1.0)  # the last markers
            results = await whole_archive(devices[0])
            expected = _implied_counts(results, me)
            assert sum(expected.values()) > 0, expected
            for d in devices:
                _, rows = await query(d, max_=50)
                assert {r.jid: r.unread for r in rows} == expected, (d.boundjid, rows)
            for c in (*devices, *peers):
                await c.logout()

        run(scenario())
        settle(cluster, 60)
        results = [replay(node) for node in cluster.nodes]
        assert len({digest for digest, _ in results}) == 1, results
