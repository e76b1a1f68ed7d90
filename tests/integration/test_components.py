"""XEP-0114 external components against a real ``xes serve``: slixmpp's ``ComponentXMPP`` on
one side, slixmpp clients on the other (ADR 0018)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
import slixmpp

from tests.integration.clients import Client, next_matching
from tests.integration.componentclient import Component
from tests.integration.conftest import run
from tests.integration.server import XesServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PUSH, BOT = "push.xes.test", "bot.xes.test"
PUSH_SECRET = "push-secret-in-a-file"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    root = tmp_path_factory.mktemp("components")
    secret_file = root / "push.secret"
    secret_file.write_text(PUSH_SECRET + "\n")
    server = XesServer(
        root / "node",
        component=free_port(),
        extra=(
            f'[components."{PUSH}"]\nsecret_file = "{secret_file}"\n'
            f'[components."{BOT}"]\nsecret = "bot-secret"\n'
        ),
    )
    server.write_config()
    server.start()
    for user in ("alice", "bob", "carol", "dave"):
        server.add_user(user, f"{user}pw")
    try:
        yield server
    finally:
        server.stop()


def test_handshake_ok_bad_secret_unknown_name_and_secret_never_logged(srv: XesServer) -> None:
    assert srv.component is not None

    async def scenario() -> None:
        good = Component(PUSH, PUSH_SECRET)
        assert await good.attach(srv.component)  # type: ignore[arg-type]
        await good.detach()
        bad = Component(BOT, "wrong")
        assert not await bad.attach(srv.component)  # type: ignore[arg-type]
        assert bad.error == "not-authorized"
        unknown = Component("nope.xes.test", "x")
        assert not await unknown.attach(srv.component)  # type: ignore[arg-type]
        assert unknown.error == "host-unknown"

    run(scenario())
    log = srv.log_text()
    assert "component_handshake_failed" in log
    assert PUSH_SECRET not in log and "bot-secret" not in log


def test_client_message_iq_and_disco_reach_the_component(srv: XesServer) -> None:
    async def scenario() -> None:
        comp = Component(PUSH, PUSH_SECRET)
        assert await comp.attach(srv.component)  # type: ignore[arg-type]
        alice = Client("alice@xes.test/pc", "alicepw")
        await alice.login(srv.c2s)
        try:
            alice.send_message(mto=f"app@{PUSH}", mbody="hello", mtype="chat")
            got = await next_matching(comp.messages, lambda m: m["body"] == "hello")
            assert got["from"] == alice.boundjid
            reply = await next_matching(alice.messages, lambda m: m["body"] == "echo: hello")
            assert reply["from"].bare == f"app@{PUSH}"
            await alice.plugin["xep_0199"].ping(jid=PUSH, timeout=10)  # answered by slixmpp
            info = await alice.plugin["xep_0030"].get_info(jid=PUSH, timeout=10)
            assert ("pubsub", "push", None, "test push") in [
                tuple(i) for i in info["disco_info"]["identities"]
            ]
            items = await alice.plugin["xep_0030"].get_items(jid="xes.test", timeout=10)
            jids = {item[0] for item in items["disco_items"]["items"]}
            assert {PUSH, BOT} <= jids
            # The component asks the server itself (ping, disco) like a client would.
            await comp.plugin["xep_0199"].ping(jid="xes.test", ifrom=PUSH, timeout=10)
            server_info = await comp.plugin["xep_0030"].get_info(
                jid="xes.test", ifrom=PUSH, timeout=10
            )
            assert "urn:xmpp:ping" in server_info["disco_info"]["features"]
        finally:
            await alice.logout()
            await comp.detach()

    run(scenario())


def test_component_message_to_an_offline_user_is_stored(srv: XesServer) -> None:
    async def scenario() -> None:
        comp = Component(BOT, "bot-secret")
        assert await comp.attach(srv.component)  # type: ignore[arg-type]
        comp.send_message(mto="bob@xes.test", mbody="while you were away", mfrom=f"news@{BOT}")
        # Results of a server ping come back in order: the message was handled before it.
        await comp.plugin["xep_0199"].ping(jid="xes.test", ifrom=BOT, timeout=10)
        await comp.detach()
        bob = Client("bob@xes.test/phone", "bobpw")
        await bob.login(srv.c2s)
        try:
            msg = await next_matching(bob.messages, lambda m: m["body"] == "while you were away")
            assert msg["from"] == f"news@{BOT}"
            assert msg["delay"]["stamp"] is not None  # XEP-0203: it waited offline
        finally:
            await bob.logout()

    run(scenario())


def test_second_connection_gets_conflict_and_the_first_keeps_working(srv: XesServer) -> None:
    async def scenario() -> None:
        first = Component(PUSH, PUSH_SECRET)
        assert await first.attach(srv.component)  # type: ignore[arg-type]
        second = Component(PUSH, PUSH_SECRET)
        assert not await second.attach(srv.component)  # type: ignore[arg-type]
        assert second.error == "conflict"
        carol = Client("carol@xes.test/pc", "carolpw")
        await carol.login(srv.c2s)
        try:
            carol.send_message(mto=PUSH, mbody="still there?", mtype="chat")
            await next_matching(carol.messages, lambda m: m["body"] == "echo: still there?")
        finally:
            await carol.logout()
            await first.detach()
        # Once the first is gone the name is free again at once.
        third = Component(PUSH, PUSH_SECRET)
        assert await third.attach(srv.component)  # type: ignore[arg-type]
        await third.detach()

    run(scenario())


def test_unconnected_component_is_service_unavailable(srv: XesServer) -> None:
    async def scenario() -> None:
        dave = Client("dave@xes.test/pc", "davepw")
        await dave.login(srv.c2s)
        try:
            dave.send_message(mto=BOT, mbody="anyone?", mtype="chat")
            err = await next_matching(dave.messages, lambda m: m["type"] == "error")
            assert err["error"]["condition"] == "service-unavailable"
            with pytest.raises(slixmpp.exceptions.IqError) as exc:
                await dave.plugin["xep_0199"].ping(jid=BOT, timeout=10)
            assert exc.value.iq["error"]["condition"] == "service-unavailable"
        finally:
            await dave.logout()

    run(scenario())


def raw_component(port: int, data: bytes) -> bytes:
    """Send ``data`` on a raw component stream and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_stanzas_before_handshake_and_foreign_from_close_the_stream(srv: XesServer) -> None:
    assert srv.component is not None
    header = (
        b"<stream:stream xmlns='jabber:component:accept' "
        b"xmlns:stream='http://etherx.jabber.org/streams' to='bot.xes.test'>"
    )
    out = raw_component(srv.component, header + b"<message from='bot.xes.test' to='a@xes.test'/>")
    assert b"<not-authorized" in out and out.endswith(b"</stream:stream>")

    async def scenario() -> None:
        comp = Component(BOT, "bot-secret")
        assert await comp.attach(srv.component)  # type: ignore[arg-type]
        comp.send_message(mto="alice@xes.test", mbody="spoof", mfrom="alice@xes.test")
        await asyncio.wait_for(comp.ended.wait(), 10)
        assert comp.error == "invalid-from"

    run(scenario())
