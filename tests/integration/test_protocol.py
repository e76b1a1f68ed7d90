"""RFC 6120/6121 behaviour seen by standard clients: errors, iq routing, versions, conflicts."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from tests.integration.clients import Client, next_matching
from tests.integration.clients import drain as _drain
from tests.integration.conftest import run
from tests.integration.rawclient import RawClient
from tests.integration.server import XesServer
from tests.integration.test_chat import befriend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_iq_between_clients_and_stanza_errors(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("ivy", "pw-i")
    srv.add_user("jack", "pw-j")

    async def scenario() -> None:
        ivy = Client(f"ivy@{srv.domain}/desk", "pw-i")
        jack = Client(f"jack@{srv.domain}/phone", "pw-j")
        await ivy.login(srv.c2s)
        await jack.login(srv.c2s)
        # iq to a full JID is routed to that client, which answers (XEP-0199 in slixmpp).
        await ivy.plugin["xep_0199"].ping(jack.boundjid, timeout=10)
        # iq to a resource that does not exist: service-unavailable (RFC 6121 §8.5.3.2.2).
        with pytest.raises(IqError) as err:
            await ivy.plugin["xep_0199"].ping(f"jack@{srv.domain}/nowhere", timeout=10)
        assert err.value.condition == "service-unavailable"
        # Message to a user that does not exist: service-unavailable (§8.5.1).
        ivy.send_message(mto=f"nobody@{srv.domain}", mbody="anyone?", mtype="chat")
        bounced = await next_matching(ivy.messages, lambda m: m["type"] == "error")
        assert bounced["error"]["condition"] == "service-unavailable"
        # Malformed JID: jid-malformed.
        ivy.send_raw("<message to='a@b@c' type='chat'><body>x</body></message>")
        bad = await next_matching(ivy.messages, lambda m: m["type"] == "error")
        assert bad["error"]["condition"] == "jid-malformed"
        # Remote domain without federation: remote-server-not-found.
        ivy.send_message(mto="someone@elsewhere.example", mbody="hi", mtype="chat")
        remote = await next_matching(ivy.messages, lambda m: m["type"] == "error")
        assert remote["error"]["condition"] == "remote-server-not-found"
        # Unknown iq payload to the server: service-unavailable (RFC 6120 §8.4).
        iq = ivy.make_iq_get(queryxmlns="urn:example:unknown", ito=srv.domain)
        with pytest.raises(IqError) as err:
            await iq.send(timeout=10)
        assert err.value.condition == "service-unavailable"
        await ivy.logout()
        await jack.logout()

    run(scenario())


def test_message_to_full_jid_and_bare_jid_reaches_every_resource(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("kim", "pw-k")
    srv.add_user("lee", "pw-l")

    async def scenario() -> None:
        kim = Client(f"kim@{srv.domain}/a", "pw-k")
        lee1 = Client(f"lee@{srv.domain}/one", "pw-l")
        lee2 = Client(f"lee@{srv.domain}/two", "pw-l")
        for c in (kim, lee1, lee2):
            await c.login(srv.c2s)
        kim.send_message(mto=f"lee@{srv.domain}", mbody="to both", mtype="chat")
        await next_matching(lee1.messages, lambda m: m["body"] == "to both")
        await next_matching(lee2.messages, lambda m: m["body"] == "to both")
        kim.send_message(mto=lee2.boundjid, mbody="only two", mtype="chat")
        await next_matching(lee2.messages, lambda m: m["body"] == "only two")
        await asyncio.sleep(0.5)
        assert all(m["body"] != "only two" for m in _drain(lee1.messages))
        for c in (kim, lee1, lee2):
            await c.logout()

    run(scenario())


def test_roster_versioning_and_pushes(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("mia", "pw-m")
    srv.add_user("ned", "pw-n")

    async def scenario() -> None:
        mia = Client(f"mia@{srv.domain}/a", "pw-m")
        ned = Client(f"ned@{srv.domain}/b", "pw-n")
        await mia.login(srv.c2s)
        await ned.login(srv.c2s)
        await befriend(mia, ned)
        await next_matching(mia.presences, lambda p: p["from"] == ned.boundjid)

    run(scenario())
    raw = RawClient(srv.c2s)
    try:
        raw.login(srv, "mia", "pw-m", resource="raw")
        raw.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        full = raw.recv_until(b"</iq>").decode()
        ver = full.split("ver='", 1)[1].split("'", 1)[0]
        assert f"ned@{srv.domain}" in full and "subscription='both'" in full
        # XEP-0237: the current version gives an empty result.
        raw.send(f"<iq type='get' id='r2'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>")
        same = raw.recv_until(b"id='r2'")
        same += raw.recv_until(b"/>") if not same.endswith(b"/>") else b""
        assert b"<query" not in same.split(b"id='r2'", 1)[1]
        # A roster set is pushed with a newer version.
        raw.send(
            "<iq type='set' id='r3'><query xmlns='jabber:iq:roster'>"
            f"<item jid='ned@{srv.domain}' name='Ned'><group>Work</group></item></query></iq>"
        )
        pushed = raw.recv_until(b"id='r3'").decode()
        assert "name='Ned'" in pushed and "<group>Work</group>" in pushed
        new_ver = int(pushed.split("ver='", 1)[1].split("'", 1)[0])
        assert new_ver > int(ver)
    finally:
        raw.close()


def test_same_resource_replaces_old_session_with_conflict(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("olga", "pw-o")
    first = RawClient(srv.c2s)
    second = RawClient(srv.c2s)
    try:
        jid1 = first.login(srv, "olga", "pw-o", resource="same")
        jid2 = second.login(srv, "olga", "pw-o", resource="same")
        assert jid1 == jid2 == f"olga@{srv.domain}/same"
        data = first.recv_all_until_closed(timeout=10)
        assert b"<conflict" in data
        second.send(f"<iq type='get' id='p1' to='{srv.domain}'><ping xmlns='urn:xmpp:ping'/></iq>")
        assert b"id='p1'" in second.recv_until(b"id='p1'")
    finally:
        first.close()
        second.close()


def test_server_generates_resource_and_rejects_spoofed_from(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("pia", "pw-p")
    raw = RawClient(srv.c2s)
    try:
        raw.starttls(srv.domain)
        assert b"<success" in raw.scram_login(srv.domain, "pia", "pw-p")
        raw.buffer = b""
        raw.open_stream(srv.domain)
        raw.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        reply = raw.recv_until(b"</iq>").decode()
        jid = reply.split("<jid>", 1)[1].split("</jid>", 1)[0]
        assert jid.startswith(f"pia@{srv.domain}/") and len(jid) > len(f"pia@{srv.domain}/")
        raw.send(
            f"<message from='olga@{srv.domain}/x' to='pia@{srv.domain}'>"
            "<body>spoof</body></message>"
        )
        data = raw.recv_all_until_closed(timeout=10)
        assert b"<invalid-from" in data
    finally:
        raw.close()


def test_roster_set_works_after_account_removed_and_recreated(shared_server: XesServer) -> None:
    """Stream versions outlive a removed account: re-adding the user and setting its roster
    must check ``expected_version`` against those versions, not against zero."""
    srv = shared_server

    def set_item(name: str) -> bytes:
        raw = RawClient(srv.c2s)
        try:
            raw.login(srv, "quinn", "pw-q")
            raw.send(
                "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'>"
                f"<item jid='someone@{srv.domain}' name='{name}'/></query></iq>"
            )
            return raw.recv_until(b"id='s1'")
        finally:
            raw.close()

    srv.add_user("quinn", "pw-q")
    assert b"type='result'" in set_item("first")
    srv.xes("user", "remove", f"quinn@{srv.domain}")
    srv.add_user("quinn", "pw-q")
    reply = set_item("second")
    assert b"type='result'" in reply and b"type='error'" not in reply, reply
