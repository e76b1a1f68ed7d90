"""Inbox (XEP-0430) against a real server with slixmpp: 50 conversations (one-to-one and rooms)
sorted by last activity with exact counts and last messages, RSM paging, filters, properties,
and a displayed marker from one device resetting the entry on the user's other device."""

from __future__ import annotations

import random

import pytest
from slixmpp.xmlstream import ET

from tests.integration.conftest import run
from tests.integration.inboxclient import displayed, is_push, query, set_properties
from tests.integration.mucclient import (
    MUC_ADMIN,
    create,
    groupchat,
    message_from,
    online,
    send_message,
)
from tests.integration.server import XesServer

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
RSM_NS = "http://jabber.org/protocol/rsm"
