"""Blocking Command (XEP-0191) with slixmpp's plugin: the list and its pushes to the user's
other resources, refusal in both directions for messages, presence and iq, presence taken away
at block and given back at unblock, and the same across a 3-node cluster."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from tests.integration.clients import Client, drain, next_matching
from tests.integration.cluster import running_cluster
from tests.integration.conftest import run
from tests.integration.server import XesServer
from tests.integration.test_chat import befriend
from tests.integration.test_pep import error_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


class BlockingClient(Client):
    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password, plugins=("xep_0191",))
        self.pushes: asyncio.Queue = asyncio.Queue()  # type: ignore[type-arg]
        self.add_event_handler("blocked", self.pushes.put_nowait)
        self.add_event_handler("unblocked", self.pushes.put_nowait)
        self.raw_presence: asyncio.Queue = asyncio.Queue()  # type: ignore[type-arg]
        self.add_event_handler("presence", self.raw_presence.put_nowait)


def client(srv: XesServer, name: str, resource: str) -> BlockingClient:
    return BlockingClient(f"{name}@{srv.domain}/{resource}", f"pw-{name}")


def test_block_refuses_both_ways_and_unblock_restores(shared_server: XesServer) -> None:
    srv = shared_server
    for name in ("bla", "blb"):
        srv.add_user(name, f"pw-{name}")

    async def scenario() -> None:
        a = client(srv, "bla", "pc")
        a2 = client(srv, "bla", "phone")
        b = client(srv, "blb", "pc")
        for c in (a, a2, b):
            await c.login(srv.c2s)
        await befriend(a, b)
        await next_matching(
            b.raw_presence, lambda p: p["from"] == a.boundjid and p["type"] == "available"
        )
        await a2.plugin["xep_0191"].get_blocked()  # a2 asked for the list: it gets pushes
        await a.plugin["xep_0191"].block([b.boundjid.bare], timeout=10)
        push = await next_matching(a2.pushes, lambda iq: True)
        assert {str(i["jid"]) for i in push["block"]["items"]} == {b.boundjid.bare}
        assert await a2.plugin["xep_0191"].get_blocked_jids(timeout=10) == {b.boundjid.bare}
        # b sees a go offline; a sees b go offline.
        await next_matching(
            b.raw_presence, lambda p: p["from"] == a.boundjid and p["type"] == "unavailable"
        )
        await next_matching(
            a.raw_presence, lambda p: p["from"] == b.boundjid and p["type"] == "unavailable"
        )
        # a cannot write to b: not-acceptable with <blocked/>.
        a.send_message(mto=b.boundjid.bare, mbody="to blocked", mtype="chat")
        err = await next_matching(a.messages, lambda m: m["type"] == "error")
        assert err["error"]["condition"] == "not-acceptable"
        assert err.xml.find(".//{urn:xmpp:blocking:errors}blocked") is not None
        # b's messages and iq to a are refused as if a did not exist; nothing reaches a.
        drain(a.messages)
        drain(a2.messages)
        b.send_message(mto=a.boundjid.bare, mbody="from blocked", mtype="chat")
        bounce = await next_matching(b.messages, lambda m: m["type"] == "error")
        assert bounce["error"]["condition"] == "service-unavailable"
        with pytest.raises(IqError) as refused:
            await b.plugin["xep_0092"].get_version(a.boundjid, timeout=10)
        assert error_of(refused.value)[0] == "service-unavailable"
        # b's presence changes do not reach a.
        drain(a.raw_presence)
        b.send_presence(pstatus="still here")
        await asyncio.sleep(1.0)
        assert not [p for p in drain(a.raw_presence) if p["from"].bare == b.boundjid.bare]
        assert not [
            m for m in drain(a.messages) + drain(a2.messages) if m["body"] == "from blocked"
        ]
        # Unblock: presence comes back both ways, and messages flow.
        await a.plugin["xep_0191"].unblock([b.boundjid.bare], timeout=10)
        push = await next_matching(a2.pushes, lambda iq: iq["unblock"] is not None)
        await next_matching(
            b.raw_presence, lambda p: p["from"] == a.boundjid and p["type"] == "available"
        )
        await next_matching(
            a.raw_presence, lambda p: p["from"] == b.boundjid and p["type"] == "available"
        )
        b.send_message(mto=a.boundjid, mbody="after unblock", mtype="chat")
        await next_matching(a.messages, lambda m: m["body"] == "after unblock")
        # Unblock everything with an empty <unblock/>; domain blocks match every JID there.
        await a.plugin["xep_0191"].block([srv.domain], timeout=10)
        b.send_message(mto=a.boundjid.bare, mbody="domain blocked", mtype="chat")
        bounce = await next_matching(b.messages, lambda m: m["type"] == "error")
        assert bounce["error"]["condition"] == "service-unavailable"
        unblock_all = a.make_iq_set()
        ET.SubElement(unblock_all.xml, "{urn:xmpp:blocking}unblock")  # no items: everything
        await unblock_all.send(timeout=10)
        assert await a.plugin["xep_0191"].get_blocked_jids(timeout=10) == set()
        for c in (a, a2, b):
            await c.logout()

    run(scenario())


def test_block_list_is_enforced_on_every_node(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        n1, n2, n3 = cluster.nodes
        for name in ("cla", "clb"):
            n1.add_user(name, f"pw-{name}")
        domain = n1.domain

        async def scenario() -> None:
            a = BlockingClient(f"cla@{domain}/pc", "pw-cla")
            b = BlockingClient(f"clb@{domain}/pc", "pw-clb")
            await a.login(n1.c2s)
            await b.login(n2.c2s)
            await a.plugin["xep_0191"].block([f"clb@{domain}"], timeout=20)
            await b.logout()
            # b comes back through the third node: still refused there.
            b3 = BlockingClient(f"clb@{domain}/tablet", "pw-clb")
            await b3.login(n3.c2s)
            b3.send_message(mto=f"cla@{domain}", mbody="via n3", mtype="chat")
            bounce = await next_matching(b3.messages, lambda m: m["type"] == "error", 20)
            assert bounce["error"]["condition"] == "service-unavailable"
            await asyncio.sleep(0.5)
            assert not [m for m in drain(a.messages) if m["body"] == "via n3"]
            await a.logout()
            await b3.logout()

        run(scenario())


def test_offline_messages_from_a_jid_blocked_since_are_not_delivered(
    shared_server: XesServer,
) -> None:
    from tests.integration.smclient import CLIENT, SmClient

    srv = shared_server
    for name in ("ofa", "ofb"):
        srv.add_user(name, f"pw-{name}")

    async def send() -> None:
        b = client(srv, "ofb", "pc")
        await b.login(srv.c2s)
        b.send_message(mto=f"ofa@{srv.domain}", mbody="stored while you were away", mtype="chat")
        b.send_message(mto=f"ofa@{srv.domain}", mbody="also stored", mtype="chat")
        await asyncio.sleep(0.5)
        await b.logout()

    run(send())
    a = SmClient(srv.c2s)
    a.login_parsed(srv, "ofa", "pw-ofa", "phone")
    # Block before going available: the stored messages are flushed, not delivered.
    a.send(
        "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'>"
        f"<item jid='ofb@{srv.domain}'/></block></iq>"
    )
    a.wait_for(lambda e: e.tag == f"{{{CLIENT}}}iq" and e.get("id") == "b1")
    a.send("<presence/>")
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        a.pump(0.2)
    bodies = [
        e.findtext(f"{{{CLIENT}}}body") for e in a.received if e.tag == f"{{{CLIENT}}}message"
    ]
    assert "stored while you were away" not in bodies and "also stored" not in bodies, bodies
    a.close()
