"""Offline storage with several devices (XEP-0160), server timestamps (XEP-0203), and receipts
(XEP-0184) and chat markers (XEP-0333) stored and routed like any other message."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.xmlstream import ET

from tests.integration.clients import Client
from tests.integration.conftest import run
from tests.integration.server import XesServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RECEIPTS = "urn:xmpp:receipts"
MARKERS = "urn:xmpp:chat-markers:0"


async def _drain(client: Client, count: int, timeout: float = 10.0) -> list:  # type: ignore[type-arg]
    out = []
    while len(out) < count:
        out.append(await asyncio.wait_for(client.messages.get(), timeout))
    return out


async def _quiet(client: Client, seconds: float = 1.0) -> list:  # type: ignore[type-arg]
    await asyncio.sleep(seconds)
    out = []
    while not client.messages.empty():
        out.append(client.messages.get_nowait())
    return out


def test_each_device_gets_offline_messages(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("dana", "pw-dana")
    srv.add_user("sam", "pw-sam")

    async def scenario() -> None:
        # Both devices have been used before: the server knows them.
        for resource in ("phone", "desktop"):
            device = Client(f"dana@{srv.domain}/{resource}", "pw-dana")
            await device.login(srv.c2s)
            await device.logout()
        # slixmpp hands bodyless receipts and markers to its plugins, not to "message".
        sam = Client(f"sam@{srv.domain}/pc", "pw-sam", plugins=("xep_0184", "xep_0333"))
        sam.add_event_handler("receipt_received", sam.messages.put_nowait)
        sam.add_event_handler("marker_displayed", sam.messages.put_nowait)
        await sam.login(srv.c2s)
        for i in range(3):
            msg = sam.make_message(mto=f"dana@{srv.domain}", mbody=f"while away {i}", mtype="chat")
            msg["id"] = f"away-{i}"
            if i == 0:
                msg.append(ET.Element(f"{{{RECEIPTS}}}request"))
                msg.append(ET.Element(f"{{{MARKERS}}}markable"))
            msg.send()
        await asyncio.sleep(0.5)

        phone = Client(f"dana@{srv.domain}/phone", "pw-dana")
        await phone.login(srv.c2s)
        got = await _drain(phone, 3)
        assert [m["body"] for m in got] == [f"while away {i}" for i in range(3)]
        for m in got:
            assert m["delay"]["stamp"] is not None, "offline message without a server timestamp"
            assert m["delay"]["from"] == srv.domain
        first = got[0]
        assert first.xml.find(f"{{{RECEIPTS}}}request") is not None
        assert first.xml.find(f"{{{MARKERS}}}markable") is not None
        # The receipt and a displayed marker go back to Sam like any message.
        reply = phone.make_message(mto=first["from"], mtype="chat")
        received = ET.Element(f"{{{RECEIPTS}}}received", {"id": first["id"]})
        reply.append(received)
        reply.send()
        marker = phone.make_message(mto=first["from"], mtype="chat")
        marker.append(ET.Element(f"{{{MARKERS}}}displayed", {"id": first["id"]}))
        marker.send()
        acks = await _drain(sam, 2)
        assert acks[0].xml.find(f"{{{RECEIPTS}}}received").get("id") == "away-0"
        assert acks[1].xml.find(f"{{{MARKERS}}}displayed").get("id") == "away-0"
        await phone.logout()

        # The phone did not take them away from the desktop.
        desktop = Client(f"dana@{srv.domain}/desktop", "pw-dana")
        await desktop.login(srv.c2s)
        got = await _drain(desktop, 3)
        assert [m["body"] for m in got] == [f"while away {i}" for i in range(3)]
        assert all(m["delay"]["stamp"] is not None for m in got)
        await desktop.logout()

        # Each device got them once: they are not delivered again.
        phone = Client(f"dana@{srv.domain}/phone", "pw-dana")
        await phone.login(srv.c2s)
        assert await _quiet(phone) == []
        await phone.logout()
        await sam.logout()

    run(scenario())


def test_receipt_request_to_offline_user_stored_and_answered(shared_server: XesServer) -> None:
    """A receipt (no body) for a user who went offline is stored and delivered later too."""
    srv = shared_server
    srv.add_user("rita", "pw-rita")
    srv.add_user("olaf", "pw-olaf")

    async def scenario() -> None:
        olaf = Client(f"olaf@{srv.domain}/pc", "pw-olaf")
        await olaf.login(srv.c2s)
        await olaf.logout()
        rita = Client(f"rita@{srv.domain}/pc", "pw-rita")
        await rita.login(srv.c2s)
        receipt = rita.make_message(mto=f"olaf@{srv.domain}", mtype="chat")
        receipt.append(ET.Element(f"{{{RECEIPTS}}}received", {"id": "earlier-1"}))
        receipt.send()
        await asyncio.sleep(0.5)
        olaf = Client(f"olaf@{srv.domain}/pc", "pw-olaf", plugins=("xep_0184",))
        olaf.add_event_handler("receipt_received", olaf.messages.put_nowait)
        await olaf.login(srv.c2s)
        (got,) = await _drain(olaf, 1)
        assert got.xml.find(f"{{{RECEIPTS}}}received").get("id") == "earlier-1"
        assert got["delay"]["stamp"] is not None
        await olaf.logout()
        await rita.logout()

    run(scenario())
