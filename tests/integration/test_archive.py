"""History on every device: MAM (XEP-0313) with stanza ids (XEP-0359), carbons (XEP-0280) and
delayed delivery (XEP-0203), checked with slixmpp clients against the real server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.integration.clients import Client
from tests.integration.conftest import run
from tests.integration.server import XesServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MAM = "urn:xmpp:mam:2"
PLUGINS = ("xep_0313", "xep_0280", "xep_0359", "xep_0334")


def accounts(srv: XesServer, *users: str) -> str:
    """Create ``users`` (password ``pw-<user>``); returns the domain."""
    for user in users:
        srv.add_user(user, f"pw-{user}")
    return srv.domain


def client(srv: XesServer, user: str, resource: str, *plugins: str) -> Client:
    return Client(f"{user}@{srv.domain}/{resource}", f"pw-{user}", plugins=(*PLUGINS, *plugins))


async def logout_all(*clients: Client) -> None:
    for c in clients:
        await c.logout()


def body_of(msg: Any) -> str:
    return str(msg["mam_result"]["forwarded"]["stanza"]["body"])


async def mam(
    client: Client,
    *,
    with_: str | None = None,
    start: str | None = None,
    end: str | None = None,
    after_id: str | None = None,
    before_id: str | None = None,
    ids: list[str] | None = None,
    rsm: dict[str, Any] | None = None,
    flip: bool = False,
) -> tuple[Any, list[Any]]:
    """One archive query through slixmpp's XEP-0313 stanzas; returns (iq result, results)."""
    iq = client.make_iq_set()
    qid = iq["id"]
    iq["mam"]["queryid"] = qid
    if with_ is not None:
        iq["mam"]["with"] = JID(with_)
    if start is not None:
        iq["mam"]["start"] = start
    if end is not None:
        iq["mam"]["end"] = end
    if after_id is not None:
        iq["mam"]["after_id"] = after_id
    if before_id is not None:
        iq["mam"]["before_id"] = before_id
    if ids is not None:
        iq["mam"]["ids"] = ids
    for key, value in (rsm or {}).items():
        iq["mam"]["rsm"][key] = value if isinstance(value, bool) else str(value)
    if flip:
        iq["mam"].xml.append(ET.Element(f"{{{MAM}}}flip-page"))
    results: list[Any] = []

    def collect(msg: Any) -> None:
        if msg["mam_result"]["queryid"] == qid:
            results.append(msg)

    name = f"mam-{qid}"
    client.register_handler(
        Callback(name, MatchXPath(f"{{jabber:client}}message/{{{MAM}}}result"), collect)
    )
    try:
        reply = await iq.send(timeout=10)
    finally:
        client.remove_handler(name)
    return reply, results


def fin(reply: Any) -> tuple[bool, str, str, str]:
    f = reply["mam_fin"]
    return (
        f["complete"] in (True, "true"),
        str(f["rsm"]["first"]),
        str(f["rsm"]["last"]),
        str(f["rsm"]["count"]),
    )


async def chat(client: Client, to: str, bodies: list[str], **extra: Any) -> None:
    for body in bodies:
        msg = client.make_message(mto=to, mbody=body, mtype="chat")
        for key, value in extra.items():
            msg[key] = value
        msg.send()


async def received(client: Client, count: int, timeout: float = 10.0) -> list[Any]:
    out = []
    while len(out) < count:
        msg = await asyncio.wait_for(client.messages.get(), timeout)
        if msg["body"]:
            out.append(msg)
    return out


def test_paging_forwards_backwards_by_peer_date_and_id(shared_server: XesServer) -> None:
    srv = shared_server
    d = accounts(srv, "mina", "olaf", "pia")

    async def scenario() -> None:
        mina = client(srv, "mina", "phone")
        olaf = client(srv, "olaf", "pc")
        pia = client(srv, "pia", "pc")
        for c in (mina, olaf, pia):
            await c.login(srv.c2s)
        first = [f"olaf {i}" for i in range(12)]
        await chat(olaf, f"mina@{d}", first)
        await received(mina, 12)
        await chat(pia, f"mina@{d}", ["pia 0", "pia 1", "pia 2"])
        await received(mina, 3)
        await asyncio.sleep(1.2)  # a second batch, later in time
        second = [f"olaf late {i}" for i in range(8)]
        await chat(olaf, f"mina@{d}", second)
        live = await received(mina, 8)

        # Forward through the whole archive, 10 at a time (RSM after).
        seen: list[str] = []
        after = None
        for _ in range(5):
            rsm: dict[str, Any] = {"max": 10}
            if after:
                rsm["after"] = after
            reply, results = await mam(mina, rsm=rsm)
            seen += [body_of(m) for m in results]
            complete, first_id, last_id, count = fin(reply)
            assert count == "23"
            assert not results or first_id == results[0]["mam_result"]["id"]
            if complete:
                break
            after = last_id
        assert len(seen) == 23
        assert seen == [*first, "pia 0", "pia 1", "pia 2", *second]

        # Backwards from the end: the empty <before/> is the last page.
        reply, results = await mam(mina, rsm={"max": 5, "before": True})
        assert [body_of(m) for m in results] == second[-5:]
        complete, first_id, _, _ = fin(reply)
        assert not complete
        reply, results = await mam(mina, rsm={"max": 5, "before": first_id})
        assert [body_of(m) for m in results] == seen[13:18]
        # flip-page: the same page, newest first.
        reply, flipped = await mam(mina, rsm={"max": 5, "before": True}, flip=True)
        assert [body_of(m) for m in flipped] == list(reversed(second[-5:]))

        # By peer: only pia's messages; by full JID too.
        _, results = await mam(mina, with_=f"pia@{d}")
        assert [body_of(m) for m in results] == ["pia 0", "pia 1", "pia 2"]
        _, results = await mam(mina, with_=f"olaf@{d}/pc", rsm={"max": 3})
        assert [body_of(m) for m in results] == first[:3]

        # By date: from the first to the last of the second batch (stamps from the archive).
        _, everything = await mam(mina, rsm={"max": 50})
        stamps = [m["mam_result"]["forwarded"]["delay"]["stamp"] for m in everything]
        assert all(stamps), "every archived message carries its time (XEP-0203)"
        start = (
            everything[15]["mam_result"]["forwarded"].xml.find("{urn:xmpp:delay}delay").get("stamp")
        )
        _, results = await mam(mina, start=start)
        assert [body_of(m) for m in results] == second
        end = (
            everything[14]["mam_result"]["forwarded"].xml.find("{urn:xmpp:delay}delay").get("stamp")
        )
        _, results = await mam(mina, end=end, with_=f"olaf@{d}")
        assert [body_of(m) for m in results] == first

        # By id (extended fields): after-id, before-id, ids.
        ids = [m["mam_result"]["id"] for m in everything]
        _, results = await mam(mina, after_id=ids[19])
        assert [body_of(m) for m in results] == second[-3:]
        _, results = await mam(mina, before_id=ids[2])
        assert [body_of(m) for m in results] == first[:2]
        _, results = await mam(mina, ids=[ids[5], ids[1]])
        assert [body_of(m) for m in results] == [first[1], first[5]]

        # The live copies carried the archive ids (XEP-0359), by the recipient's bare JID.
        for msg, archived in zip(live, everything[15:], strict=True):
            assert msg["stanza_id"]["by"] == f"mina@{d}"
            assert msg["stanza_id"]["id"] == archived["mam_result"]["id"]

        # The sender's own archive has the same conversation, outgoing.
        _, results = await mam(olaf, with_=f"mina@{d}", rsm={"max": 50})
        assert [body_of(m) for m in results] == first + second

        # An id the archive does not hold is an error, not an empty page.
        for bad in ({"rsm": {"after": "no-such-id"}}, {"after_id": "nope"}):
            with pytest.raises(IqError) as err:
                await mam(mina, **bad)
            assert err.value.iq["error"]["condition"] == "item-not-found"
        # Another user's archive is not readable.
        iq = pia.make_iq_set(ito=f"mina@{d}")
        iq["mam"]["queryid"] = "x"
        with pytest.raises(IqError) as err:
            await iq.send(timeout=10)
        assert err.value.iq["error"]["condition"] == "forbidden"

        # slixmpp's own paging helper walks the archive too.
        walked = [body_of(m) async for m in mina.plugin["xep_0313"].iterate(rsm={"max": 7})]
        assert walked == seen
        await logout_all(mina, olaf, pia)

    run(scenario())


def test_carbons_and_live_copies_carry_the_archive_id(shared_server: XesServer) -> None:
    srv = shared_server
    d = accounts(srv, "quin", "rhea")

    async def scenario() -> None:
        q_phone = client(srv, "quin", "phone")
        q_desk = client(srv, "quin", "desk", "xep_0198")
        r_phone = client(srv, "rhea", "phone")
        r_desk = client(srv, "rhea", "desk")
        sent: asyncio.Queue[Any] = asyncio.Queue()
        got: asyncio.Queue[Any] = asyncio.Queue()
        q_desk.add_event_handler("carbon_sent", sent.put_nowait)
        r_desk.add_event_handler("carbon_received", got.put_nowait)
        for c in (q_phone, q_desk, r_phone, r_desk):
            await c.login(srv.c2s)
        await q_desk.plugin["xep_0280"].enable()
        await r_desk.plugin["xep_0280"].enable()

        # To rhea's phone (full JID): her desk gets a received carbon, quin's desk a sent one.
        msg = q_phone.make_message(mto=f"rhea@{d}/phone", mbody="to your phone", mtype="chat")
        msg.send()
        live = (await received(r_phone, 1))[0]
        carbon_in = await asyncio.wait_for(got.get(), 10)
        carbon_out = await asyncio.wait_for(sent.get(), 10)
        inner_in = carbon_in["carbon_received"]
        inner_out = carbon_out["carbon_sent"]
        assert carbon_in["from"] == JID(f"rhea@{d}") and carbon_out["from"] == JID(f"quin@{d}")
        assert str(inner_in["body"]) == str(inner_out["body"]) == "to your phone"
        _, rhea_archive = await mam(r_desk, with_=f"quin@{d}")
        _, quin_archive = await mam(q_desk, with_=f"rhea@{d}")
        rhea_id = rhea_archive[-1]["mam_result"]["id"]
        quin_id = quin_archive[-1]["mam_result"]["id"]
        assert live["stanza_id"]["id"] == rhea_id and live["stanza_id"]["by"] == f"rhea@{d}"
        assert inner_in["stanza_id"]["id"] == rhea_id
        assert inner_out["stanza_id"]["id"] == quin_id
        assert inner_out["stanza_id"]["by"] == f"quin@{d}"
        assert inner_out["origin_id"]["id"] == msg["origin_id"]["id"]

        # <private/> (XEP-0280) and <no-copy/> (XEP-0334): no carbons, still delivered.
        private = q_phone.make_message(mto=f"rhea@{d}/phone", mbody="private", mtype="chat")
        private.append(ET.Element("{urn:xmpp:carbons:2}private"))
        private.send()
        nocopy = q_phone.make_message(mto=f"rhea@{d}/phone", mbody="no copy", mtype="chat")
        nocopy.append(ET.Element("{urn:xmpp:hints}no-copy"))
        nocopy.send()
        assert [str(m["body"]) for m in await received(r_phone, 2)] == ["private", "no copy"]
        await asyncio.sleep(0.5)
        assert sent.empty() and got.empty()

        # Disabled: no more copies.
        await r_desk.plugin["xep_0280"].disable()
        q_phone.make_message(mto=f"rhea@{d}/phone", mbody="after disable", mtype="chat").send()
        await received(r_phone, 1)
        await asyncio.wait_for(sent.get(), 10)  # quin's desk still has carbons on
        await asyncio.sleep(0.5)
        assert got.empty()
        await logout_all(q_phone, q_desk, r_phone, r_desk)

    run(scenario())


def test_origin_id_resend_is_not_archived_or_delivered_twice(shared_server: XesServer) -> None:
    srv = shared_server
    d = accounts(srv, "sven", "tara")

    async def scenario() -> None:
        sven = client(srv, "sven", "pc")
        tara = client(srv, "tara", "pc")
        await sven.login(srv.c2s)
        await tara.login(srv.c2s)
        for attempt in range(2):
            msg = sven.make_message(mto=f"tara@{d}", mbody="exactly once", mtype="chat")
            msg["origin_id"]["id"] = "origin-4711"
            msg.send()
            if attempt == 0:
                await received(tara, 1)
                # The client lost its connection before the server's ack and sends it again.
                await sven.logout()
                sven = client(srv, "sven", "pc")
                await sven.login(srv.c2s)
        sven.make_message(mto=f"tara@{d}", mbody="next", mtype="chat").send()
        later = await received(tara, 1)
        assert str(later[0]["body"]) == "next", "the re-sent message was delivered again"
        for who in (sven, tara):
            _, results = await mam(who)
            assert [body_of(m) for m in results] == ["exactly once", "next"]
        await sven.logout()
        await tara.logout()

    run(scenario())


def test_catch_up_after_offline_and_preferences(shared_server: XesServer) -> None:
    srv = shared_server
    d = accounts(srv, "ugo", "vera", "walt")

    async def scenario() -> None:
        ugo = client(srv, "ugo", "pc")
        vera_phone = client(srv, "vera", "phone")
        vera_desk = client(srv, "vera", "desk")
        await ugo.login(srv.c2s)
        await vera_phone.login(srv.c2s)
        await vera_desk.login(srv.c2s)
        await chat(ugo, f"vera@{d}", ["before 0", "before 1"])
        have = await received(vera_desk, 2)
        last_known = have[-1]["stanza_id"]["id"]
        await vera_desk.logout()
        # While the desk is away, the phone gets these live.
        await chat(ugo, f"vera@{d}", [f"missed {i}" for i in range(4)])
        await received(vera_phone, 6)
        # The desk comes back and catches up from the id of the last message it has.
        vera_desk = client(srv, "vera", "desk")
        await vera_desk.login(srv.c2s)
        reply, results = await mam(vera_desk, rsm={"max": 50, "after": last_known})
        assert [body_of(m) for m in results] == [f"missed {i}" for i in range(4)]
        assert fin(reply)[0], "complete: nothing further"
        # Metadata: the archive's first and last ids.
        meta = vera_desk.make_iq_get()
        meta.append(ET.Element(f"{{{MAM}}}metadata"))
        answer = await meta.send(timeout=10)
        end = answer.xml.find(f"{{{MAM}}}metadata/{{{MAM}}}end")
        assert end is not None and end.get("id") == results[-1]["mam_result"]["id"]

        # Preferences: never archive walt; default roster (ugo is not in vera's roster).
        walt = client(srv, "walt", "pc")
        await walt.login(srv.c2s)
        prefs = vera_desk.make_iq_set()
        el = ET.SubElement(prefs.xml, f"{{{MAM}}}prefs", {"default": "roster"})
        never = ET.SubElement(el, f"{{{MAM}}}never")
        ET.SubElement(never, f"{{{MAM}}}jid").text = f"walt@{d}"
        answer = await prefs.send(timeout=10)
        assert answer.xml.find(f"{{{MAM}}}prefs").get("default") == "roster"
        await chat(walt, f"vera@{d}", ["not archived"])
        await chat(ugo, f"vera@{d}", ["not in roster"])
        live = await received(vera_phone, 2)
        assert all(not m["stanza_id"]["id"] for m in live), "no id for what is not archived"
        _, results = await mam(vera_desk, rsm={"max": 50, "after": last_known})
        assert [body_of(m) for m in results] == [f"missed {i}" for i in range(4)]
        # The sender's archive (default always) still has it.
        _, results = await mam(walt)
        assert [body_of(m) for m in results] == ["not archived"]
        await logout_all(ugo, vera_phone, vera_desk, walt)

    run(scenario())


def test_offline_messages_carry_stanza_id_and_delay(shared_server: XesServer) -> None:
    srv = shared_server
    d = accounts(srv, "xena", "yuri")

    async def scenario() -> None:
        xena = client(srv, "xena", "pc")
        await xena.login(srv.c2s)
        await chat(xena, f"yuri@{d}", ["while offline"])
        await asyncio.sleep(0.5)
        yuri = client(srv, "yuri", "pc", "xep_0198")
        await yuri.login(srv.c2s)
        msg = (await received(yuri, 1))[0]
        assert msg["delay"]["stamp"] is not None
        _, results = await mam(yuri)  # answered through the stream-management outbox
        assert [body_of(m) for m in results] == ["while offline"]
        assert msg["stanza_id"]["id"] == results[0]["mam_result"]["id"]
        await xena.logout()
        await yuri.logout()

    run(scenario())


def started_with_short_retention(tmp_path: Path) -> XesServer:
    """A started server whose archive keeps messages 2.6 s (0.00003 days), checked every 0.5 s."""
    srv = XesServer(tmp_path / "node")
    srv.extra = "\n[archive]\nretention_days = 0.00003\nretention_check_interval = 0.5\n"
    srv.write_config()
    srv.start()
    return srv


def test_retention_deletes_old_messages(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = started_with_short_retention(tmp_path)
    try:
        srv.add_user("zoe", "pw-zoe")
        srv.add_user("abe", "pw-abe")
        d = srv.domain

        async def scenario() -> None:
            zoe = client(srv, "zoe", "pc")
            abe = client(srv, "abe", "pc")
            await zoe.login(srv.c2s)
            await abe.login(srv.c2s)
            await chat(abe, f"zoe@{d}", ["old 0", "old 1"])
            await received(zoe, 2)
            _, results = await mam(zoe)
            assert [body_of(m) for m in results] == ["old 0", "old 1"]
            for _ in range(40):
                await asyncio.sleep(0.25)
                _, results = await mam(zoe)
                if not results:
                    break
            assert results == [], "messages past retention are deleted"
            await chat(abe, f"zoe@{d}", ["new"])
            await received(zoe, 1)
            _, results = await mam(zoe)
            assert [body_of(m) for m in results] == ["new"]
            _, results = await mam(abe)
            assert [body_of(m) for m in results] == ["new"]
            await zoe.logout()
            await abe.logout()

        run(scenario())
        assert "archive_expired" in srv.log_text()
    finally:
        srv.stop()
