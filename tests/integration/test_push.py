"""Push notifications (XEP-0357) against a real ``xes serve``, with a slixmpp component as the
app server's XMPP Push Service: one notification per message while the device is offline or
its XEP-0198 session detached, none while it is connected; no message text unless
``[push] include_body``; publish options sent; disabled on the service's error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slixmpp.xmlstream import ET

from tests.integration.clients import Client
from tests.integration.componentclient import PushService, summary
from tests.integration.conftest import run
from tests.integration.server import XesServer, free_port
from tests.integration.smclient import SmClient
from tests.integration.test_cluster import XesCluster
from tests.integration.test_components_cluster import attach_until_accepted

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PUSH = "push.xes.test"
SECRET = "push-component-secret"
APP_SECRET = "app-server-credential-42"
PUSH_NS = "urn:xmpp:push:0"


def push_server(root: Path, extra: str = "") -> XesServer:
    server = XesServer(
        root,
        component=free_port(),
        extra=f'[components."{PUSH}"]\nsecret = "{SECRET}"\n{extra}',
    )
    server.write_config()
    server.start()
    return server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    server = push_server(tmp_path_factory.mktemp("push") / "node")
    for user in ("alice", "bob", "carol"):
        server.add_user(user, f"{user}pw")
    try:
        yield server
    finally:
        server.stop()


def enable_xml(node: str, secret: str | None = APP_SECRET) -> str:
    form = ""
    if secret is not None:
        form = (
            "<x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options"
            f"</value></field><field var='secret'><value>{secret}</value></field></x>"
        )
    return f"<enable xmlns='{PUSH_NS}' jid='{PUSH}' node='{node}'>{form}</enable>"


async def enable(client: Client, node: str) -> None:
    iq = client.make_iq(itype="set", ito=client.boundjid.bare)
    iq.xml.append(ET.fromstring(enable_xml(node)))
    await iq.send(timeout=10)


async def archive_count(client: Client) -> int | None:
    """How many messages the client's own archive holds (None while the cluster cannot say)."""
    iq = client.make_iq(itype="set", ito=client.boundjid.bare)
    iq.xml.append(
        ET.fromstring(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>"
            "<max>0</max></set></query>"
        )
    )
    try:
        result = await iq.send(timeout=10)
    except Exception:  # the cluster may still be electing a leader
        return None
    count = result.xml.find(".//{http://jabber.org/protocol/rsm}count")
    return int(count.text) if count is not None and count.text else None


async def archived_beyond(client: Client, count: int, within: float = 30.0) -> None:
    """Wait until the client's archive holds more than ``count`` messages (its last one is
    committed)."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        now = await archive_count(client)
        if now is not None and now > count:
            return
        await asyncio.sleep(0.5)
    raise AssertionError("the message never reached the archive")


async def no_more(service: PushService, seconds: float = 2.0) -> None:
    await asyncio.sleep(seconds)
    assert service.publishes.empty(), ET.tostring(service.publishes.get_nowait())


def test_offline_and_detached_devices_are_pushed_once_per_message_connected_ones_never(
    srv: XesServer,
) -> None:
    assert srv.component is not None
    domain = srv.domain

    async def scenario() -> None:
        service = PushService(PUSH, SECRET)
        assert await service.attach(srv.component)  # type: ignore[arg-type]
        phone = Client(f"alice@{domain}/phone", "alicepw")
        bob = Client(f"bob@{domain}/pc", "bobpw")
        await phone.login(srv.c2s)
        await bob.login(srv.c2s)
        info = await phone.plugin["xep_0030"].get_info(jid=phone.boundjid.bare, timeout=10)
        assert PUSH_NS in info["disco_info"]["features"]
        await enable(phone, "node-phone")
        # Connected: no push.
        bob.send_message(mto=f"alice@{domain}", mbody="while online", mtype="chat")
        await asyncio.wait_for(phone.messages.get(), 10)
        await no_more(service)
        # Offline: one push per message, no text, the app server's secret, from alice's JID.
        await phone.logout()
        await asyncio.sleep(1.5)  # its session's end committed (the stream closed first)
        for n in range(3):
            bob.send_message(mto=f"alice@{domain}", mbody=f"patient data {n}", mtype="chat")
            got = await asyncio.wait_for(service.publishes.get(), 10)
            fields = summary(got)
            assert got.get("from") == f"alice@{domain}" and got.get("type") == "set"
            assert fields["node"] == ["node-phone"]
            assert fields["last-message-sender"] == [f"bob@{domain}/pc"]
            assert "last-message-body" not in fields
            assert b"patient data" not in ET.tostring(got)
            assert fields["option:secret"] == [APP_SECRET]
            assert int(fields["message-count"][0]) >= 1
        await no_more(service)
        # Messages that come while a push is unanswered are coalesced into one more push.
        service.silent = True
        bob.send_message(mto=f"alice@{domain}", mbody="burst 0", mtype="chat")
        first = await asyncio.wait_for(service.publishes.get(), 10)
        for n in range(1, 5):
            bob.send_message(mto=f"alice@{domain}", mbody=f"burst {n}", mtype="chat")
        await asyncio.sleep(1.5)
        assert service.publishes.empty()  # nothing more while that one is unanswered
        service.silent = False
        first_id = first.get("id")
        reply = ET.fromstring(
            f"<iq xmlns='jabber:component:accept' type='result' id='{first_id}'"
            f" from='{PUSH}' to='alice@{domain}'/>"
        )
        service.send_raw(ET.tostring(reply, encoding="unicode"))
        extra = await asyncio.wait_for(service.publishes.get(), 10)  # bursts 1 to 4, once
        assert summary(extra)["node"] == ["node-phone"]
        await no_more(service)
        # Detached (XEP-0198 session whose connection broke): pushed too.
        sm = SmClient(srv.c2s)
        await asyncio.to_thread(sm.login_sm, srv, "alice", "alicepw", "phone")
        await asyncio.to_thread(sm.send, "<presence/>")
        await asyncio.sleep(0.5)
        bob.send_message(mto=f"alice@{domain}", mbody="to the live sm session", mtype="chat")
        await no_more(service, 1.5)
        sm.cut()
        await asyncio.sleep(1.5)
        bob.send_message(mto=f"alice@{domain}", mbody="to the detached one", mtype="chat")
        got = await asyncio.wait_for(service.publishes.get(), 10)
        assert summary(got)["node"] == ["node-phone"]
        # The service refuses: the registration is disabled, nothing more is published.
        service.answer_error = ("item-not-found", "cancel")
        bob.send_message(mto=f"alice@{domain}", mbody="refused", mtype="chat")
        await asyncio.wait_for(service.publishes.get(), 10)
        service.answer_error = None
        await asyncio.sleep(1.0)
        bob.send_message(mto=f"alice@{domain}", mbody="after disable", mtype="chat")
        await no_more(service)
        await bob.logout()
        await service.detach()

    run(scenario())
    dump = srv.xes("events", "dump").stdout
    assert '"push.disabled"' in dump and "item-not-found" in dump


def test_enable_is_checked(srv: XesServer) -> None:
    domain = srv.domain

    async def scenario() -> None:
        carol = Client(f"carol@{domain}/pc", "carolpw")
        await carol.login(srv.c2s)

        async def error_of(payload: str, to: str | None = None) -> str:
            iq = carol.make_iq(itype="set", ito=to or carol.boundjid.bare)
            iq.xml.append(ET.fromstring(payload))
            try:
                await iq.send(timeout=10)
            except Exception as exc:  # slixmpp IqError
                return str(exc.iq["error"]["condition"])  # type: ignore[attr-defined]
            return "ok"

        assert await error_of(f"<enable xmlns='{PUSH_NS}' jid='{PUSH}'/>") == "bad-request"
        assert await error_of(f"<enable xmlns='{PUSH_NS}' jid='@bad' node='n'/>") == (
            "jid-malformed"
        )
        assert await error_of(enable_xml("n1"), to=f"alice@{domain}") == "forbidden"
        bad_form = (
            f"<enable xmlns='{PUSH_NS}' jid='{PUSH}' node='n'><x xmlns='jabber:x:data'>"
            "<field var='FORM_TYPE'><value>urn:other</value></field></x></enable>"
        )
        assert await error_of(bad_form) == "bad-request"
        assert await error_of(enable_xml("n1")) == "ok"
        assert await error_of(f"<disable xmlns='{PUSH_NS}' jid='{PUSH}'/>") == "ok"
        await carol.logout()

    run(scenario())


def test_message_text_and_inactive_devices_when_configured(tmp_path: Path) -> None:
    """``include_body`` puts the text in; ``when_inactive`` pushes a connected device that said
    it is inactive (XEP-0352), and stops when it is active again."""
    server = push_server(tmp_path / "node", "[push]\ninclude_body = true\nwhen_inactive = true\n")
    try:
        for user in ("alice", "bob"):
            server.add_user(user, f"{user}pw")
        domain = server.domain

        async def scenario() -> None:
            service = PushService(PUSH, SECRET)
            assert await service.attach(server.component)  # type: ignore[arg-type]
            phone = Client(f"alice@{domain}/phone", "alicepw")
            await phone.login(server.c2s)
            await enable(phone, "node-phone")
            await phone.logout()
            await asyncio.sleep(1.5)
            bob = Client(f"bob@{domain}/pc", "bobpw")
            await bob.login(server.c2s)
            bob.send_message(mto=f"alice@{domain}", mbody="wake up, ward 7", mtype="chat")
            got = await asyncio.wait_for(service.publishes.get(), 10)
            assert summary(got)["last-message-body"] == ["wake up, ward 7"]
            phone = Client(f"alice@{domain}/phone", "alicepw")
            await phone.login(server.c2s)
            bob.send_message(mto=f"alice@{domain}", mbody="while active", mtype="chat")
            await asyncio.wait_for(phone.messages.get(), 10)
            await no_more(service, 1.5)
            phone.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")
            await asyncio.sleep(0.5)
            bob.send_message(mto=f"alice@{domain}", mbody="while inactive", mtype="chat")
            got = await asyncio.wait_for(service.publishes.get(), 10)
            assert summary(got)["last-message-body"] == ["while inactive"]
            phone.send_raw("<active xmlns='urn:xmpp:csi:0'/>")
            await asyncio.sleep(0.5)
            bob.send_message(mto=f"alice@{domain}", mbody="active again", mtype="chat")
            await no_more(service, 1.5)
            await phone.logout()
            await bob.logout()
            await service.detach()

        run(scenario())
    finally:
        server.stop()


def test_pushes_keep_coming_after_the_node_holding_the_service_is_killed(tmp_path: Path) -> None:
    """3 nodes: the push service on n1, the user's phone enabled push through n2 and went
    offline, the sender is on n3. Each message is pushed once through n1; n1 is killed; the
    service reconnects to n2 and what arrived meanwhile is pushed once, then every new message."""
    cluster = XesCluster(
        tmp_path,
        extra=(
            "node_down_after = 3.0\ncommit_timeout = 2.0\n"
            f'[components."{PUSH}"]\nsecret = "{SECRET}"\n'
        ),
    )
    for node in cluster.nodes:
        node.component = free_port()
        node.write_config()
    n1, n2, n3 = cluster.nodes
    try:
        cluster.start()
        for user in ("alice", "bob"):
            n1.add_user(user, f"{user}pw")
        domain = n1.domain

        async def scenario() -> None:
            service = PushService(PUSH, SECRET)
            assert await service.attach(n1.component)  # type: ignore[arg-type]
            phone = Client(f"alice@{domain}/phone", "alicepw")
            await phone.login(n2.c2s)
            await enable(phone, "node-phone")
            await phone.logout()
            await asyncio.sleep(1.5)
            bob = Client(f"bob@{domain}/pc", "bobpw")
            await bob.login(n3.c2s)
            for n in range(3):
                bob.send_message(mto=f"alice@{domain}", mbody=f"before {n}", mtype="chat")
                await asyncio.wait_for(service.publishes.get(), 20)
            await no_more(service)
            before = await archive_count(bob)
            assert before is not None
            cluster.kill(n1)
            bob.send_message(mto=f"alice@{domain}", mbody="while nobody holds it", mtype="chat")
            await archived_beyond(bob, before)  # committed before the service is back
            service2, _ = await attach_until_accepted(
                n2.component,  # type: ignore[arg-type]
                time.monotonic() + 60,
                lambda: PushService(PUSH, SECRET),
            )
            assert isinstance(service2, PushService)
            got = await asyncio.wait_for(service2.publishes.get(), 20)  # what was due
            assert summary(got)["node"] == ["node-phone"]
            await no_more(service2)
            for n in range(3):
                bob.send_message(mto=f"alice@{domain}", mbody=f"after {n}", mtype="chat")
                await asyncio.wait_for(service2.publishes.get(), 20)
            await no_more(service2)
            await bob.logout()
            await service2.detach()

        run(scenario())
    finally:
        cluster.stop()
