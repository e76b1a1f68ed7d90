"""Two standard clients log in over STARTTLS + SCRAM-SHA-256, subscribe and chat."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.clients import Client, next_matching
from tests.integration.conftest import run
from tests.integration.server import XesServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def befriend(alice: Client, bob: Client) -> None:
    """Mutual subscription through the RFC 6121 handshake."""
    alice.send_presence(pto=bob.boundjid.bare, ptype="subscribe")
    req = await next_matching(bob.subscriptions, lambda p: p["type"] == "subscribe")
    assert req["from"].bare == alice.boundjid.bare
    bob.send_presence(pto=alice.boundjid.bare, ptype="subscribed")
    bob.send_presence(pto=alice.boundjid.bare, ptype="subscribe")
    req = await next_matching(alice.subscriptions, lambda p: p["type"] == "subscribe")
    alice.send_presence(pto=bob.boundjid.bare, ptype="subscribed")


def test_two_clients_chat(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("alice", "alice-secret")
    srv.add_user("bob", "bob-secret")

    async def scenario() -> None:
        alice = Client(f"alice@{srv.domain}/laptop", "alice-secret")
        bob = Client(f"bob@{srv.domain}/phone", "bob-secret")
        await alice.login(srv.c2s)
        await bob.login(srv.c2s)
        await befriend(alice, bob)
        # Each sees the other's presence once subscribed both ways.
        await next_matching(
            alice.presences, lambda p: p["from"] == bob.boundjid and p["type"] == "available"
        )
        await next_matching(
            bob.presences, lambda p: p["from"] == alice.boundjid and p["type"] == "available"
        )
        alice.send_message(mto=bob.boundjid.bare, mbody="hello bob", mtype="chat")
        msg = await next_matching(bob.messages, lambda m: m["body"] == "hello bob")
        assert msg["from"] == alice.boundjid
        bob.send_message(mto=msg["from"], mbody="hi alice", mtype="chat")
        reply = await next_matching(alice.messages, lambda m: m["body"] == "hi alice")
        assert reply["from"] == bob.boundjid
        roster = await alice.get_roster()
        assert roster["roster"]["items"][bob.boundjid.bare]["subscription"] == "both"
        # Bob leaves: Alice sees him go unavailable.
        await bob.logout()
        await next_matching(
            alice.presences, lambda p: p["from"] == bob.boundjid and p["type"] == "unavailable"
        )
        await alice.logout()

    run(scenario())


def test_wrong_password_is_refused(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("carol", "right-password")

    async def scenario() -> None:
        bad = Client(f"carol@{srv.domain}/x", "wrong-password")
        bad.connect("127.0.0.1", srv.c2s)
        await asyncio.wait_for(bad.failed.wait(), 20)
        bad.disconnect()
        good = Client(f"carol@{srv.domain}/x", "right-password")
        await good.login(srv.c2s)
        await good.logout()

    run(scenario())


def test_offline_message_delivered_with_delay(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("dave", "dave-pw")
    srv.add_user("erin", "erin-pw")

    async def scenario() -> None:
        dave = Client(f"dave@{srv.domain}/a", "dave-pw")
        await dave.login(srv.c2s)
        dave.send_message(mto=f"erin@{srv.domain}", mbody="while you were out", mtype="chat")
        await asyncio.sleep(0.5)
        erin = Client(f"erin@{srv.domain}/b", "erin-pw")
        await erin.login(srv.c2s)
        msg = await next_matching(erin.messages, lambda m: m["body"] == "while you were out")
        assert msg["delay"]["stamp"] is not None
        await dave.logout()
        await erin.logout()

    run(scenario())


def test_iq_ping_disco_version(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("frank", "frank-pw")

    async def scenario() -> None:
        frank = Client(f"frank@{srv.domain}/a", "frank-pw")
        await frank.login(srv.c2s)
        await frank["xep_0199"].ping(srv.domain, timeout=10)
        info = await frank["xep_0030"].get_info(jid=srv.domain, timeout=10)
        assert "urn:xmpp:ping" in info["disco_info"]["features"]
        version = await frank["xep_0092"].get_version(srv.domain, timeout=10)
        assert version["software_version"]["name"] == "xes"
        await frank.logout()

    run(scenario())
