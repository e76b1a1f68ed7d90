"""RFC 6120/6121 points a standard client relies on (issue 14, item 7), each against the real
server with slixmpp: an iq without ``to`` is answered for the account, removing a mutual contact
takes its presence away on both sides, the stream's ``xml:lang`` survives storage, and the
sender's own archive copy carries the sender's ``stanza-id``."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.xmlstream import ET

from tests.integration.clients import Client, next_matching
from tests.integration.conftest import run
from tests.integration.server import XesServer
from tests.integration.test_archive import mam
from tests.integration.test_chat import befriend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DISCO_INFO = "http://jabber.org/protocol/disco#info"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
SID = "urn:xmpp:sid:0"


def _client(srv: XesServer, user: str, resource: str, **kwargs: object) -> Client:
    return Client(f"{user}@{srv.domain}/{resource}", f"pw-{user}", **kwargs)  # type: ignore[arg-type]


def _users(srv: XesServer, *names: str) -> None:
    for name in names:
        srv.add_user(name, f"pw-{name}")


def test_iq_without_to_is_answered_for_the_account(shared_server: XesServer) -> None:
    """RFC 6120 §10.3.3: no ``to`` means the sender's bare JID, not the server."""
    srv = shared_server
    _users(srv, "nota")

    async def scenario() -> None:
        nota = _client(srv, "nota", "pc")
        await nota.login(srv.c2s)
        iq = nota.make_iq_get(queryxmlns=DISCO_INFO)
        assert not iq["to"]
        reply = await iq.send(timeout=10)
        query = reply.xml.find(f"{{{DISCO_INFO}}}query")
        identities = {
            (i.get("category"), i.get("type")) for i in query.iter(f"{{{DISCO_INFO}}}identity")
        }
        features = {f.get("var") for f in query.iter(f"{{{DISCO_INFO}}}feature")}
        assert ("account", "registered") in identities
        assert ("server", "im") not in identities
        assert "urn:xmpp:mam:2" in features
        # Addressed to the server, the server answers as itself.
        server_info = await nota.plugin["xep_0030"].get_info(jid=srv.domain, timeout=10)
        server_ids = {(i[0], i[1]) for i in server_info["disco_info"]["identities"]}
        assert ("server", "im") in server_ids
        await nota.logout()

    run(scenario())


def test_removing_a_mutual_contact_takes_presence_away_both_ways(
    shared_server: XesServer,
) -> None:
    """RFC 6121 §2.5.2: removal cancels both subscriptions, so each side receives unavailable
    presence from the other's resources instead of seeing them online for ever."""
    srv = shared_server
    _users(srv, "remo", "rita")

    async def scenario() -> None:
        remo = _client(srv, "remo", "pc")
        rita = _client(srv, "rita", "phone")
        await remo.login(srv.c2s)
        await rita.login(srv.c2s)
        await befriend(remo, rita)
        await next_matching(
            rita.presences, lambda p: p["from"] == remo.boundjid and p["type"] == "available"
        )
        await next_matching(
            remo.presences, lambda p: p["from"] == rita.boundjid and p["type"] == "available"
        )
        # slixmpp's roster drops the resources on <unsubscribed/> itself, so watch the wire.
        seen: dict[str, asyncio.Queue] = {"remo": asyncio.Queue(), "rita": asyncio.Queue()}
        remo.add_event_handler("presence", seen["remo"].put_nowait)
        rita.add_event_handler("presence", seen["rita"].put_nowait)
        # The roster removal alone (a client that does not send the cancellations itself).
        remove = remo.make_iq_set()
        query = ET.SubElement(remove.xml, "{jabber:iq:roster}query")
        ET.SubElement(
            query, "{jabber:iq:roster}item", jid=rita.boundjid.bare, subscription="remove"
        )
        await remove.send(timeout=10)
        gone = await next_matching(
            seen["rita"], lambda p: p["from"] == remo.boundjid and p["type"] == "unavailable"
        )
        assert gone["to"].bare == rita.boundjid.bare
        await next_matching(
            seen["remo"], lambda p: p["from"] == rita.boundjid and p["type"] == "unavailable"
        )
        roster = await rita.get_roster()
        assert (
            remo.boundjid.bare not in roster["roster"]["items"]
            or roster["roster"]["items"][remo.boundjid.bare]["subscription"] == "none"
        )
        await remo.logout()
        await rita.logout()

    run(scenario())


def test_stream_language_survives_offline_storage_and_the_archive(
    shared_server: XesServer,
) -> None:
    """RFC 6120 §4.7.4: a stanza without ``xml:lang`` is in the sender stream's language; read
    back from offline storage or the archive (by a client whose stream says ``en``) it still is."""
    srv = shared_server
    _users(srv, "lena", "lars")

    async def scenario() -> None:
        lena = _client(srv, "lena", "pc", plugins=("xep_0313",))
        lena.default_lang = "de"
        await lena.login(srv.c2s)
        assert lena.default_lang == "de"
        lena.send_message(mto=f"lars@{srv.domain}", mbody="Guten Tag", mtype="chat")
        await asyncio.sleep(0.5)  # lars is offline: the message is stored
        lars = _client(srv, "lars", "phone", plugins=("xep_0313",))
        await lars.login(srv.c2s)
        msg = await next_matching(lars.messages, lambda m: m["body"] == "Guten Tag")
        assert msg.xml.get(XML_LANG) == "de"
        _, results = await mam(lars, with_=f"lena@{srv.domain}")
        archived = results[-1].xml.find(".//{urn:xmpp:forward:0}forwarded/{jabber:client}message")
        assert archived is not None and archived.get(XML_LANG) == "de"
        await lena.logout()
        await lars.logout()

    run(scenario())


def test_senders_archive_copy_carries_the_senders_stanza_id(shared_server: XesServer) -> None:
    """XEP-0359: the ``stanza-id`` in an archive's copy is ``by`` that archive; the sender's
    copy carries the same id by the sender, not the recipient's."""
    srv = shared_server
    _users(srv, "sina", "sven")

    async def scenario() -> None:
        sina = _client(srv, "sina", "pc", plugins=("xep_0313",))
        sven = _client(srv, "sven", "pc", plugins=("xep_0313",))
        await sina.login(srv.c2s)
        await sven.login(srv.c2s)
        sina.send_message(mto=sven.boundjid.bare, mbody="ids please", mtype="chat")
        live = await next_matching(sven.messages, lambda m: m["body"] == "ids please")
        by_sven = [
            e.get("id")
            for e in live.xml.iter(f"{{{SID}}}stanza-id")
            if e.get("by") == sven.boundjid.bare
        ]
        assert len(by_sven) == 1
        _, mine = await mam(sina, with_=sven.boundjid.bare)
        copy = mine[-1].xml.find(".//{urn:xmpp:forward:0}forwarded/{jabber:client}message")
        ids = [(e.get("by"), e.get("id")) for e in copy.iter(f"{{{SID}}}stanza-id")]
        assert ids == [(sina.boundjid.bare, mine[-1]["mam_result"]["id"])]
        assert ids[0][1] == by_sven[0]  # one message, one archive id in both archives
        _, theirs = await mam(sven, with_=sina.boundjid.bare)
        their_copy = theirs[-1].xml.find(".//{urn:xmpp:forward:0}forwarded/{jabber:client}message")
        assert [(e.get("by"), e.get("id")) for e in their_copy.iter(f"{{{SID}}}stanza-id")] == [
            (sven.boundjid.bare, by_sven[0])
        ]
        await sina.logout()
        await sven.logout()

    run(scenario())
