"""Entity time (XEP-0202), last activity (XEP-0012), contact addresses (XEP-0157) and external
services with TURN credentials (XEP-0215), against the real server with slixmpp."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Iterator

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from tests.integration.clients import Client
from tests.integration.conftest import run, running_server
from tests.integration.server import XesServer
from tests.integration.test_chat import befriend
from tests.integration.test_pep import error_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TURN_SECRET = "turn-shared-secret"
EXTDISCO = "urn:xmpp:extdisco:2"


@pytest.fixture(scope="module")
def info_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    with running_server(
        tmp_path_factory.mktemp("info") / "node",
        (
            "[contact]\n"
            'admin = ["xmpp:admin@xes.test", "mailto:admin@example.org"]\n'
            'abuse = ["mailto:abuse@example.org"]\n'
            "[external_services]\n"
            "credential_ttl = 600\n"
            "[[external_services.services]]\n"
            'type = "stun"\nhost = "stun.example.org"\nport = 3478\ntransport = "udp"\n'
            "[[external_services.services]]\n"
            f'type = "turn"\nhost = "turn.example.org"\nport = 3478\nsecret = "{TURN_SECRET}"\n'
        ),
    ) as srv:
        yield srv


def client(srv: XesServer, name: str, resource: str = "pc") -> Client:
    return Client(
        f"{name}@{srv.domain}/{resource}",
        f"pw-{name}",
        plugins=("xep_0012", "xep_0202", "xep_0128"),
    )


def test_entity_time_and_server_uptime(info_server: XesServer) -> None:
    srv = info_server
    srv.add_user("tia", "pw-tia")

    async def scenario() -> None:
        tia = client(srv, "tia")
        await tia.login(srv.c2s)
        reply = await tia.plugin["xep_0202"].get_entity_time(srv.domain, timeout=10)
        utc = reply.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}utc").text
        assert utc.endswith("Z")
        assert (
            abs(
                time.mktime(time.strptime(utc[:19], "%Y-%m-%dT%H:%M:%S"))
                - time.mktime(time.gmtime())
            )
            < 60
        )
        uptime = await tia.plugin["xep_0012"].get_last_activity(srv.domain, timeout=10)
        assert 0 <= int(uptime["last_activity"]["seconds"]) < 600
        await tia.logout()

    run(scenario())


def test_last_activity_of_a_contact(info_server: XesServer) -> None:
    srv = info_server
    for name in ("lua", "lub", "luc"):
        srv.add_user(name, f"pw-{name}")

    async def scenario() -> None:
        a = client(srv, "lua")
        b = client(srv, "lub")
        c = client(srv, "luc")
        for x in (a, b, c):
            await x.login(srv.c2s)
        await befriend(a, b)
        online = await a.plugin["xep_0012"].get_last_activity(b.boundjid.bare, timeout=10)
        assert int(online["last_activity"]["seconds"]) == 0
        b.send_presence(ptype="unavailable", pstatus="gone fishing")
        await asyncio.sleep(2.2)
        last = await a.plugin["xep_0012"].get_last_activity(b.boundjid.bare, timeout=10)
        assert int(last["last_activity"]["seconds"]) >= 2
        assert last["last_activity"]["status"] == "gone fishing"
        # Someone without a subscription to b's presence learns nothing.
        with pytest.raises(IqError) as refused:
            await c.plugin["xep_0012"].get_last_activity(b.boundjid.bare, timeout=10)
        assert error_of(refused.value)[0] == "forbidden"
        for x in (a, b, c):
            await x.logout()

    run(scenario())


def test_contact_addresses_and_external_services(info_server: XesServer) -> None:
    srv = info_server
    srv.add_user("exa", "pw-exa")

    async def scenario() -> None:
        a = client(srv, "exa")
        await a.login(srv.c2s)
        info = await a.plugin["xep_0030"].get_info(jid=srv.domain, timeout=10)
        forms = info.xml.findall(".//{jabber:x:data}x")
        values = {}
        for form in forms:
            for field in form.findall("{jabber:x:data}field"):
                values[field.get("var")] = [v.text for v in field.findall("{jabber:x:data}value")]
        assert values["FORM_TYPE"] == ["http://jabber.org/network/serverinfo"]
        assert values["admin-addresses"] == ["xmpp:admin@xes.test", "mailto:admin@example.org"]
        assert values["abuse-addresses"] == ["mailto:abuse@example.org"]
        assert EXTDISCO in info["disco_info"]["features"]
        iq = a.make_iq_get(ito=srv.domain)
        ET.SubElement(iq.xml, f"{{{EXTDISCO}}}services")
        reply = await iq.send(timeout=10)
        services = reply.xml.findall(f".//{{{EXTDISCO}}}service")
        by_type = {s.get("type"): s for s in services}
        assert set(by_type) == {"stun", "turn"}
        assert by_type["stun"].get("username") is None
        turn = by_type["turn"]
        expiry, _, user = turn.get("username").partition(":")
        assert user == a.boundjid.bare
        assert 0 < int(expiry) - time.time() <= 600
        want = base64.b64encode(
            hmac.new(TURN_SECRET.encode(), turn.get("username").encode(), hashlib.sha1).digest()
        ).decode()
        assert turn.get("password") == want
        # Only one type asked for.
        only = a.make_iq_get(ito=srv.domain)
        ET.SubElement(only.xml, f"{{{EXTDISCO}}}services", type="stun")
        reply = await only.send(timeout=10)
        assert [s.get("type") for s in reply.xml.findall(f".//{{{EXTDISCO}}}service")] == ["stun"]
        await a.logout()

    run(scenario())
