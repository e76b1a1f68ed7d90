"""Client State Indication (XEP-0352) against the real server: an inactive client is spared
presence updates and chat states (folded to the latest) until something urgent arrives or it is
active again; with stream management nothing is folded and every held stanza keeps its number.
Also measures the bytes an inactive phone saves while a busy resource changes presence."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET

import pytest

from tests.integration.clients import Client
from tests.integration.conftest import run
from tests.integration.server import XesServer
from tests.integration.smclient import CLIENT, SmClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CSI = "urn:xmpp:csi:0"
CHATSTATES = "http://jabber.org/protocol/chatstates"
UPDATES = 30


class Counting(SmClient):
    """A raw client that counts the bytes it receives."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.bytes = 0

    def _feed(self, data: bytes) -> None:
        self.bytes += len(data)
        super()._feed(data)

    def settle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump(0.2)


def _presences_from(client: SmClient, jid: str) -> list[ET.Element]:
    return [e for e in client.received if e.tag == f"{{{CLIENT}}}presence" and e.get("from") == jid]


def _status(e: ET.Element) -> str | None:
    s = e.find(f"{{{CLIENT}}}status")
    return None if s is None else s.text


async def _busy(srv: XesServer, user: str, to: str, body: str | None) -> Client:
    """Another resource of ``user`` changes presence UPDATES times and types at ``to``."""
    busy = Client(f"{user}@{srv.domain}/pc", f"pw-{user}")
    await busy.login(srv.c2s)
    for i in range(UPDATES):
        busy.send_presence(pstatus=f"s{i}")
    for state in ("composing", "paused") * 5:
        msg = busy.make_message(mto=to, mtype="chat")
        msg.xml.append(ET.Element(f"{{{CHATSTATES}}}{state}"))
        msg.send()
    await asyncio.sleep(1.0)
    if body is not None:
        busy.send_message(mto=to, mbody=body, mtype="chat")
    return busy


def test_inactive_client_gets_folded_updates_with_the_urgent_message(
    shared_server: XesServer,
) -> None:
    srv = shared_server
    srv.add_user("csia", "pw-csia")
    phone = Counting(srv.c2s)
    phone_jid = phone.login_parsed(srv, "csia", "pw-csia", "phone", presence=True)
    watcher = Counting(srv.c2s)  # the same traffic, to an active client, for comparison
    watcher.login_parsed(srv, "csia", "pw-csia", "watch", presence=True)
    phone.settle(1.0)
    watcher.settle(0.2)
    phone.received.clear()
    phone.send(f"<inactive xmlns='{CSI}'/>")
    phone.settle(0.3)
    phone.bytes = watcher.bytes = 0
    busy_jid = f"csia@{srv.domain}/pc"

    async def scenario() -> None:
        busy = await _busy(srv, "csia", phone_jid, None)
        phone.settle(1.0)
        held_bytes = phone.bytes
        assert not _presences_from(phone, busy_jid), "presence reached an inactive client"
        busy.send_message(mto=phone_jid, mbody="urgent", mtype="chat")
        await asyncio.sleep(0.5)  # let slixmpp write it: the raw client below blocks the loop
        message = phone.wait_for(lambda e: e.tag == f"{{{CLIENT}}}message" and _body(e))
        assert _body(message) == "urgent"
        got = _presences_from(phone, busy_jid)
        assert [_status(p) for p in got] == [f"s{UPDATES - 1}"]  # folded to the latest
        states = [e for e in phone.received if e.find(f"{{{CHATSTATES}}}paused") is not None]
        assert len(states) == 1 and not [
            e for e in phone.received if e.find(f"{{{CHATSTATES}}}composing") is not None
        ]
        watcher.settle(1.0)
        print(
            f"\nCSI: {UPDATES} presence updates and 10 chat states: active client "
            f"{watcher.bytes} bytes, inactive {phone.bytes} bytes "
            f"(held {held_bytes} before the urgent message)"
        )
        assert phone.bytes < watcher.bytes / 3
        await busy.logout()

    run(scenario())
    phone.close()
    watcher.close()


def test_active_again_releases_what_was_held(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("csib", "pw-csib")
    phone = Counting(srv.c2s)
    phone.login_parsed(srv, "csib", "pw-csib", "phone", presence=True)
    phone.settle(0.5)
    phone.send(f"<inactive xmlns='{CSI}'/>")
    phone.settle(0.3)
    phone.received.clear()

    async def scenario() -> None:
        busy = await _busy(srv, "csib", f"csib@{srv.domain}/phone", None)
        phone.settle(0.5)
        assert not _presences_from(phone, f"csib@{srv.domain}/pc")
        phone.send(f"<active xmlns='{CSI}'/>")
        last = phone.wait_for(
            lambda e: e.tag == f"{{{CLIENT}}}presence" and _status(e) == f"s{UPDATES - 1}"
        )
        assert last is not None
        await busy.logout()

    run(scenario())
    phone.close()


def test_with_stream_management_held_stanzas_keep_their_numbers(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("csic", "pw-csic")
    phone = Counting(srv.c2s)
    phone_jid, _ = phone.login_sm(srv, "csic", "pw-csic", "phone")
    phone.send("<presence/>")
    phone.settle(1.0)
    phone.send(f"<inactive xmlns='{CSI}'/>")
    phone.settle(0.3)
    phone.received.clear()
    busy_jid = f"csic@{srv.domain}/pc"

    async def scenario() -> None:
        busy = await _busy(srv, "csic", phone_jid, None)
        phone.settle(1.0)
        assert not _presences_from(phone, busy_jid)
        before = phone.handled
        busy.send_message(mto=phone_jid, mbody="urgent", mtype="chat")
        await asyncio.sleep(0.5)  # let slixmpp write it: the raw client below blocks the loop
        phone.wait_for(lambda e: e.tag == f"{{{CLIENT}}}message" and _body(e) == "urgent")
        # Nothing folded: every presence of the busy resource arrived, in order.
        got = [_status(p) for p in _presences_from(phone, busy_jid) if _status(p)]
        assert got == [f"s{i}" for i in range(UPDATES)]
        assert phone.handled - before >= UPDATES + 10 + 1
        # The numbers agree: our <a h=.../> is accepted and the stream goes on.
        phone.ack()
        phone.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        pong = phone.wait_for(lambda e: e.tag == f"{{{CLIENT}}}iq" and e.get("id") == "p1")
        assert pong.get("type") == "result"
        await busy.logout()

    run(scenario())
    phone.close()


def _body(e: ET.Element) -> str | None:
    b = e.find(f"{{{CLIENT}}}body")
    return None if b is None else b.text
