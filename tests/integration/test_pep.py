"""Personal eventing (XEP-0163 on XEP-0060) against the real server with slixmpp's pubsub
plugins: notifications filtered by caps, last items at login, access models, publish-options,
owner requests, and bad input that stores nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from tests.integration.clients import Client, drain, next_matching
from tests.integration.conftest import run, running_server
from tests.integration.server import XesServer
from tests.integration.test_chat import befriend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PLUGINS = ("xep_0004", "xep_0060", "xep_0163", "xep_0115", "xep_0128")
PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
TUNE = "http://jabber.org/protocol/tune"
DEVICES = "eu.siacs.conversations.axolotl.devicelist"
MAX_ITEM_BYTES = 4096
MAX_NODES = 6


@pytest.fixture(scope="module")
def pep_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    with running_server(
        tmp_path_factory.mktemp("pep") / "node",
        f"[pep]\nmax_nodes = {MAX_NODES}\nmax_item_bytes = {MAX_ITEM_BYTES}\n",
    ) as srv:
        yield srv


class PepClient(Client):
    """A slixmpp client that queues the PEP events it receives."""

    def __init__(self, jid: str, password: str, interests: tuple[str, ...] = ()) -> None:
        super().__init__(jid, password, plugins=PLUGINS)
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        for kind in ("pubsub_publish", "pubsub_retract", "pubsub_purge", "pubsub_delete"):
            self.add_event_handler(kind, self.events.put_nowait)
        for node in interests:
            self.plugin["xep_0163"].add_interest(node)


def user(srv: XesServer, name: str, resource: str = "pc", *interests: str) -> PepClient:
    srv.add_user(name, f"pw-{name}")
    return PepClient(f"{name}@{srv.domain}/{resource}", f"pw-{name}", interests)


def again(srv: XesServer, name: str, resource: str, *interests: str) -> PepClient:
    return PepClient(f"{name}@{srv.domain}/{resource}", f"pw-{name}", interests)


def tune(title: str) -> ET.Element:
    el = ET.Element(f"{{{TUNE}}}tune")
    ET.SubElement(el, f"{{{TUNE}}}title").text = title
    return el


def options(client: Client, **values: str) -> Any:
    form = client.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=PUBLISH_OPTIONS)
    for name, value in values.items():
        form.add_field(var=f"pubsub#{name}", value=value)
    return form


def error_of(exc: IqError) -> tuple[str, str | None]:
    """(defined condition, pubsub#errors condition or None) of an iq error."""
    err = exc.iq.xml.find("{jabber:client}error")
    assert err is not None
    cond = app = None
    for child in err:
        ns, _, name = child.tag[1:].partition("}")
        if ns == "urn:ietf:params:xml:ns:xmpp-stanzas" and name != "text":
            cond = name
        elif ns == PUBSUB_ERRORS:
            app = name
    assert cond is not None
    return cond, app


def titles(event: Any) -> list[str]:
    items = event.xml.findall(f".//{{{TUNE}}}title")
    return [t.text for t in items]


def journal(srv: XesServer, type_: str) -> list[dict[str, Any]]:
    out = srv.xes("events", "dump").stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [r["event"]["data"] for r in rows if r["event"]["type"] == type_]


def test_publish_notifies_interested_contacts_only_and_items_are_kept(
    pep_server: XesServer,
) -> None:
    srv = pep_server

    async def scenario() -> None:
        ann = user(srv, "ann", "pc", TUNE)
        ben = user(srv, "ben", "phone", TUNE)
        cat = user(srv, "cat", "pc")  # a contact without +notify for tunes
        dan = user(srv, "dan", "pc", TUNE)  # interested, but no subscription to ann
        for c in (ann, ben, cat, dan):
            await c.login(srv.c2s)
        await befriend(ann, ben)
        await befriend(ann, cat)
        await asyncio.sleep(1.0)  # caps fetched and learned
        await ann.plugin["xep_0060"].publish(
            ann.boundjid.bare, TUNE, id="t1", payload=tune("One"), timeout=10
        )
        got = await next_matching(ben.events, lambda e: e["from"] == ann.boundjid.bare)
        assert titles(got) == ["One"]
        assert got["pubsub_event"]["items"]["node"] == TUNE
        mine = await next_matching(ann.events, lambda e: e["from"] == ann.boundjid.bare)
        assert titles(mine) == ["One"]  # the owner's own interested resource too
        await asyncio.sleep(0.5)
        assert not drain(cat.events), "a contact without +notify got a notification"
        assert not drain(dan.events), "a non-contact got a presence-access notification"
        # A contact reads the items; the owner's result names the node's items in order.
        await ann.plugin["xep_0060"].publish(
            ann.boundjid.bare, TUNE, id="t2", payload=tune("Two"), timeout=10
        )
        await next_matching(ben.events, lambda e: titles(e) == ["Two"])
        items = await ben.plugin["xep_0060"].get_items(ann.boundjid.bare, TUNE, timeout=10)
        # PEP nodes keep one item unless configured otherwise (XEP-0163 §7 defaults).
        assert [i["id"] for i in items["pubsub"]["items"]] == ["t2"]
        # A non-contact may not read a presence-access node.
        with pytest.raises(IqError) as refused:
            await dan.plugin["xep_0060"].get_items(ann.boundjid.bare, TUNE, timeout=10)
        assert error_of(refused.value) == ("not-authorized", "presence-subscription-required")
        for c in (ann, ben, cat, dan):
            await c.logout()

    run(scenario())


def test_last_item_at_login_and_caps_learned_once_for_the_cluster(pep_server: XesServer) -> None:
    srv = pep_server

    async def scenario() -> None:
        eve = user(srv, "eve", "pc")
        fay = user(srv, "fay", "pc", TUNE)
        await eve.login(srv.c2s)
        await fay.login(srv.c2s)
        await befriend(eve, fay)
        await eve.plugin["xep_0060"].publish(
            eve.boundjid.bare, TUNE, id="now", payload=tune("Playing"), timeout=10
        )
        await fay.logout()
        # fay comes back on another device: the last item arrives with its publication time.
        fay2 = again(srv, "fay", "tablet", TUNE)
        await fay2.login(srv.c2s)
        last = await next_matching(fay2.events, lambda e: e["from"] == eve.boundjid.bare)
        assert titles(last) == ["Playing"]
        delay = last.xml.find("{urn:xmpp:delay}delay")
        assert delay is not None and delay.get("stamp")
        await eve.logout()
        await fay2.logout()

    run(scenario())
    learned = journal(srv, "caps.learned")
    assert any(f"{TUNE}+notify" in row["features"] for row in learned), learned


def test_open_node_via_publish_options_and_precondition_conflict(pep_server: XesServer) -> None:
    """OMEMO's device list: published with access_model=open so anyone can fetch it
    (XEP-0384 §5.3.1); publishing with other options to the same node is a conflict
    (XEP-0223 §5), which the client resolves by reconfiguring the node."""
    srv = pep_server

    async def scenario() -> None:
        gus = user(srv, "gus", "pc")
        stranger = user(srv, "hal", "pc")
        await gus.login(srv.c2s)
        await stranger.login(srv.c2s)
        devices = ET.Element("{%s}list" % DEVICES)
        ET.SubElement(devices, "{%s}device" % DEVICES, id="1234")
        await gus.plugin["xep_0060"].publish(
            gus.boundjid.bare,
            DEVICES,
            id="current",
            payload=devices,
            options=options(gus, access_model="open"),
            timeout=10,
        )
        items = await stranger.plugin["xep_0060"].get_items(gus.boundjid.bare, DEVICES, timeout=10)
        assert [i["id"] for i in items["pubsub"]["items"]] == ["current"]
        with pytest.raises(IqError) as conflict:
            await gus.plugin["xep_0060"].publish(
                gus.boundjid.bare,
                DEVICES,
                id="current",
                payload=devices,
                options=options(gus, access_model="presence"),
                timeout=10,
            )
        assert error_of(conflict.value) == ("conflict", "precondition-not-met")
        # Reconfigure as the owner, then the same publish succeeds.
        config = await gus.plugin["xep_0060"].get_node_config(
            gus.boundjid.bare, DEVICES, timeout=10
        )
        form = config["pubsub_owner"]["configure"]["form"]
        assert form["values"]["pubsub#access_model"] == "open"
        new = gus.plugin["xep_0004"].make_form(ftype="submit")
        new.add_field(
            var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#node_config"
        )
        new.add_field(var="pubsub#access_model", value="presence")
        await gus.plugin["xep_0060"].set_node_config(gus.boundjid.bare, DEVICES, new, timeout=10)
        await gus.plugin["xep_0060"].publish(
            gus.boundjid.bare,
            DEVICES,
            id="current",
            payload=devices,
            options=options(gus, access_model="presence"),
            timeout=10,
        )
        with pytest.raises(IqError) as closed:
            await stranger.plugin["xep_0060"].get_items(gus.boundjid.bare, DEVICES, timeout=10)
        assert error_of(closed.value)[0] == "not-authorized"
        await gus.logout()
        await stranger.logout()

    run(scenario())


def test_max_items_retract_purge_delete_notify(pep_server: XesServer) -> None:
    srv = pep_server
    node = "urn:xmpp:bookmarks:1"

    async def scenario() -> None:
        ivy = user(srv, "ivy", "pc", node)
        await ivy.login(srv.c2s)
        await asyncio.sleep(0.5)
        pub = ivy.plugin["xep_0060"]
        for name in ("a", "b", "c"):
            conf = ET.Element("{urn:xmpp:bookmarks:1}conference", name=name, autojoin="true")
            await pub.publish(
                ivy.boundjid.bare,
                node,
                id=f"{name}@conference.{srv.domain}",
                payload=conf,
                options=options(ivy, max_items="max", access_model="whitelist"),
                timeout=10,
            )
        items = await pub.get_items(ivy.boundjid.bare, node, timeout=10)
        assert len(items["pubsub"]["items"]) == 3
        newest = await pub.get_items(ivy.boundjid.bare, node, max_items=2, timeout=10)
        assert [i["id"].split("@")[0] for i in newest["pubsub"]["items"]] == ["b", "c"]
        drain(ivy.events)
        await pub.retract(
            ivy.boundjid.bare, node, f"a@conference.{srv.domain}", notify=True, timeout=10
        )
        gone = await next_matching(ivy.events, lambda e: e.xml.find(".//{*}retract") is not None)
        assert gone.xml.find(".//{*}retract").get("id") == f"a@conference.{srv.domain}"
        with pytest.raises(IqError) as missing:
            await pub.retract(ivy.boundjid.bare, node, "nope", timeout=10)
        assert error_of(missing.value)[0] == "item-not-found"
        await pub.purge(ivy.boundjid.bare, node, timeout=10)
        items = await pub.get_items(ivy.boundjid.bare, node, timeout=10)
        assert len(items["pubsub"]["items"]) == 0
        await pub.delete_node(ivy.boundjid.bare, node, timeout=10)
        with pytest.raises(IqError) as deleted:
            await pub.get_items(ivy.boundjid.bare, node, timeout=10)
        assert error_of(deleted.value)[0] == "item-not-found"
        await ivy.logout()

    run(scenario())


def test_bad_input_is_refused_and_stores_nothing(pep_server: XesServer) -> None:
    srv = pep_server

    async def scenario() -> None:
        jo = user(srv, "jo", "pc")
        kim = user(srv, "kim", "pc")
        await jo.login(srv.c2s)
        await kim.login(srv.c2s)
        pub = jo.plugin["xep_0060"]
        big = tune("x" * (MAX_ITEM_BYTES + 10))
        with pytest.raises(IqError) as too_big:
            await pub.publish(jo.boundjid.bare, TUNE, id="big", payload=big, timeout=10)
        assert error_of(too_big.value) == ("not-acceptable", "payload-too-big")
        # Publishing to someone else's PEP service.
        with pytest.raises(IqError) as forbidden:
            await pub.publish(kim.boundjid.bare, TUNE, id="x", payload=tune("mine"), timeout=10)
        assert error_of(forbidden.value)[0] == "forbidden"
        # A malformed option value.
        with pytest.raises(IqError) as bad_option:
            await pub.publish(
                jo.boundjid.bare,
                TUNE,
                id="x",
                payload=tune("t"),
                options=options(jo, max_items="lots"),
                timeout=10,
            )
        assert error_of(bad_option.value)[0] == "not-acceptable"
        # Too many nodes.
        for n in range(MAX_NODES):
            await pub.publish(
                jo.boundjid.bare, f"urn:test:node:{n}", payload=tune(str(n)), timeout=10
            )
        with pytest.raises(IqError) as too_many:
            await pub.publish(
                jo.boundjid.bare, "urn:test:node:one-more", payload=tune("no"), timeout=10
            )
        assert error_of(too_many.value)[0] == "not-allowed"
        # None of the refused publishes left anything behind.
        for node in (TUNE, "urn:test:node:one-more"):
            with pytest.raises(IqError) as absent:
                await pub.get_items(jo.boundjid.bare, node, timeout=10)
            assert error_of(absent.value)[0] == "item-not-found"
        with pytest.raises(IqError) as absent:
            await kim.plugin["xep_0060"].get_items(kim.boundjid.bare, TUNE, timeout=10)
        assert error_of(absent.value)[0] == "item-not-found"
        await jo.logout()
        await kim.logout()

    run(scenario())


def test_account_disco_advertises_pep_and_lists_visible_nodes(pep_server: XesServer) -> None:
    srv = pep_server

    async def scenario() -> None:
        lou = user(srv, "lou", "pc")
        max_ = user(srv, "max", "pc")
        await lou.login(srv.c2s)
        await max_.login(srv.c2s)
        info = await lou.plugin["xep_0030"].get_info(jid=lou.boundjid.bare, timeout=10)
        features = set(info["disco_info"]["features"])
        for needed in (
            "publish-options",
            "auto-create",
            "config-node-max",
            "multi-items",
            "publish",
        ):
            assert f"http://jabber.org/protocol/pubsub#{needed}" in features
        identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
        assert ("pubsub", "pep") in identities and ("account", "registered") in identities
        pub = lou.plugin["xep_0060"]
        await pub.publish(
            lou.boundjid.bare,
            "urn:test:open",
            payload=tune("o"),
            options=options(lou, access_model="open"),
            timeout=10,
        )
        await pub.publish(lou.boundjid.bare, "urn:test:private", payload=tune("p"), timeout=10)
        mine = await lou.plugin["xep_0030"].get_items(jid=lou.boundjid.bare, timeout=10)
        assert {i[1] for i in mine["disco_items"]["items"]} == {"urn:test:open", "urn:test:private"}
        theirs = await max_.plugin["xep_0030"].get_items(jid=lou.boundjid.bare, timeout=10)
        assert {i[1] for i in theirs["disco_items"]["items"]} == {"urn:test:open"}
        await lou.logout()
        await max_.logout()

    run(scenario())
