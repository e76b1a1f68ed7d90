"""Private XML storage (XEP-0049), bookmarks old and new as one (XEP-0048 / XEP-0402 §5.3), and
vcard-temp (XEP-0054) with the avatar hash in presence (XEP-0153), with slixmpp's plugins."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from tests.integration.clients import Client, next_matching
from tests.integration.conftest import run
from tests.integration.server import XesServer
from tests.integration.test_chat import befriend
from tests.integration.test_pep import error_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PLUGINS = ("xep_0004", "xep_0048", "xep_0049", "xep_0054", "xep_0060", "xep_0402")
BOOKMARKS = "urn:xmpp:bookmarks:1"
LEGACY = "storage:bookmarks"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"


def client(srv: XesServer, name: str, resource: str = "pc") -> Client:
    return Client(f"{name}@{srv.domain}/{resource}", f"pw-{name}", plugins=PLUGINS)


def users(srv: XesServer, *names: str) -> None:
    for name in names:
        srv.add_user(name, f"pw-{name}")


def test_private_storage_is_per_account_and_refuses_reserved_namespaces(
    shared_server: XesServer,
) -> None:
    srv = shared_server
    users(srv, "pria", "prib")

    async def scenario() -> None:
        a = client(srv, "pria")
        b = client(srv, "prib")
        await a.login(srv.c2s)
        await b.login(srv.c2s)

        async def private(
            c: Client, type_: str, payload: ET.Element, to: str | None = None
        ) -> ET.Element:
            iq = c.make_iq_get() if type_ == "get" else c.make_iq_set()
            if to:
                iq["to"] = to
            query = ET.SubElement(iq.xml, "{jabber:iq:private}query")
            query.append(payload)
            reply = await iq.send(timeout=10)
            return reply.xml.find("{jabber:iq:private}query")

        prefs = ET.Element("{exodus:prefs}exodus")
        ET.SubElement(prefs, "{exodus:prefs}defaultnick").text = "Hamlet"
        await private(a, "set", prefs)
        got = await private(a, "get", ET.Element("{exodus:prefs}exodus"))
        assert got.find("{exodus:prefs}exodus/{exodus:prefs}defaultnick").text == "Hamlet"
        # Another account sees only its own (empty) element.
        empty = await private(b, "get", ET.Element("{exodus:prefs}exodus"))
        stored = empty.find("{exodus:prefs}exodus")
        assert stored is not None and len(stored) == 0
        # Nor may it read another's.
        with pytest.raises(IqError) as forbidden:
            await private(b, "get", ET.Element("{exodus:prefs}exodus"), to=a.boundjid.bare)
        assert error_of(forbidden.value)[0] == "forbidden"
        with pytest.raises(IqError) as reserved:
            await private(a, "set", ET.Element("{jabber:client}message"))
        assert error_of(reserved.value)[0] == "not-acceptable"
        await a.logout()
        await b.logout()

    run(scenario())


def test_legacy_and_pep_bookmarks_are_one_list(shared_server: XesServer) -> None:
    """A XEP-0048 client's bookmarks appear as XEP-0402 items and the other way round."""
    srv = shared_server
    users(srv, "booka")

    async def scenario() -> None:
        old = client(srv, "booka", "old")
        new = client(srv, "booka", "new")
        await old.login(srv.c2s)
        await new.login(srv.c2s)
        room = f"team@conference.{srv.domain}"
        bookmarks = old.plugin["xep_0048"].stanza.Bookmarks()
        bookmarks.add_conference(room, "booka", name="Team", autojoin=True)
        bookmarks.add_url("https://example.org", name="Site")
        await old.plugin["xep_0048"].set_bookmarks(bookmarks, method="xep_0049", timeout=10)
        items = await new.plugin["xep_0060"].get_items(new.boundjid.bare, BOOKMARKS, timeout=10)
        [item] = items["pubsub"]["items"]
        assert item["id"] == room
        conf = item.xml.find(f"{{{BOOKMARKS}}}conference")
        assert conf.get("name") == "Team" and conf.get("autojoin") in ("true", "1")
        assert conf.find(f"{{{BOOKMARKS}}}nick").text == "booka"
        # The new client adds a room the XEP-0402 way; the old client reads both, and its URL.
        other = f"night@conference.{srv.domain}"
        payload = ET.Element(f"{{{BOOKMARKS}}}conference", name="Night")
        form = new.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value=PUBLISH_OPTIONS)
        form.add_field(var="pubsub#persist_items", value="true")
        form.add_field(var="pubsub#max_items", value="max")
        form.add_field(var="pubsub#access_model", value="whitelist")
        form.add_field(var="pubsub#send_last_published_item", value="never")
        await new.plugin["xep_0060"].publish(
            new.boundjid.bare, BOOKMARKS, id=other, payload=payload, options=form, timeout=10
        )
        reply = await old.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=10)
        legacy = reply["private"]["bookmarks"]
        assert {c["jid"] for c in legacy["conferences"]} == {room, other}
        assert [u["url"] for u in legacy["urls"]] == ["https://example.org"]
        # The old client removes the first room: the XEP-0402 item goes too.
        remaining = old.plugin["xep_0048"].stanza.Bookmarks()
        remaining.add_conference(other, "", name="Night")
        await old.plugin["xep_0048"].set_bookmarks(remaining, method="xep_0049", timeout=10)
        items = await new.plugin["xep_0060"].get_items(new.boundjid.bare, BOOKMARKS, timeout=10)
        assert [i["id"] for i in items["pubsub"]["items"]] == [other]
        # Nobody else can read the bookmarks node (whitelist).
        await old.logout()
        await new.logout()

    run(scenario())


def test_vcard_and_avatar_hash_in_presence(shared_server: XesServer) -> None:
    srv = shared_server
    users(srv, "vica", "vicb")
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

    async def scenario() -> None:
        a = client(srv, "vica")
        b = client(srv, "vicb")
        await a.login(srv.c2s)
        await b.login(srv.c2s)
        with pytest.raises(IqError) as none_yet:
            await b.plugin["xep_0054"].get_vcard(a.boundjid.bare, cached=False, timeout=10)
        assert error_of(none_yet.value)[0] == "item-not-found"
        card = a.plugin["xep_0054"].make_vcard()
        card["FN"] = "Vica Example"
        card["PHOTO"]["TYPE"] = "image/png"
        card["PHOTO"]["BINVAL"] = image
        await a.plugin["xep_0054"].publish_vcard(card, timeout=10)
        got = await b.plugin["xep_0054"].get_vcard(a.boundjid.bare, cached=False, timeout=10)
        assert got["vcard_temp"]["FN"] == "Vica Example"
        assert got["vcard_temp"]["PHOTO"]["BINVAL"] == image
        # Another's vCard cannot be written.
        with pytest.raises(IqError) as forbidden:
            iq = b.make_iq_set(ito=a.boundjid.bare)
            iq.xml.append(ET.Element("{vcard-temp}vCard"))
            await iq.send(timeout=10)
        assert error_of(forbidden.value)[0] == "forbidden"
        # The contact sees the avatar hash in presence, though the client did not add it.
        await befriend(a, b)
        a.send_presence()
        want = hashlib.sha1(image).hexdigest()

        def has_hash(p: object) -> bool:
            x = p.xml.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")  # type: ignore[attr-defined]
            return p["from"] == a.boundjid and x is not None and x.text == want  # type: ignore[index]

        await next_matching(b.presences, has_hash)
        # Bad base64 in a PHOTO is refused.
        bad = a.make_iq_set()
        vcard = ET.SubElement(bad.xml, "{vcard-temp}vCard")
        photo = ET.SubElement(vcard, "{vcard-temp}PHOTO")
        ET.SubElement(photo, "{vcard-temp}BINVAL").text = "!!!not base64!!!"
        with pytest.raises(IqError) as malformed:
            await bad.send(timeout=10)
        assert error_of(malformed.value)[0] == "bad-request"
        still = await b.plugin["xep_0054"].get_vcard(a.boundjid.bare, cached=False, timeout=10)
        assert still["vcard_temp"]["FN"] == "Vica Example"
        await asyncio.sleep(0)
        await a.logout()
        await b.logout()

    run(scenario())


def test_vcard_and_pep_avatars_are_one(shared_server: XesServer) -> None:
    """XEP-0398: a vCard PHOTO appears as the XEP-0084 PEP avatar and the other way round."""
    srv = shared_server
    users(srv, "ava", "avb")
    first = b"\x89PNG first" + bytes(range(200))
    second = b"\x89PNG second" + bytes(range(100, 250))

    async def scenario() -> None:
        a = client(srv, "ava")
        b = client(srv, "avb")
        await a.login(srv.c2s)
        await b.login(srv.c2s)
        await befriend(a, b)
        info = await a.plugin["xep_0030"].get_info(jid=a.boundjid.bare, timeout=10)
        assert "urn:xmpp:pep-vcard-conversion:0" in info["disco_info"]["features"]
        card = a.plugin["xep_0054"].make_vcard()
        card["FN"] = "Ava"
        card["PHOTO"]["TYPE"] = "image/png"
        card["PHOTO"]["BINVAL"] = first
        await a.plugin["xep_0054"].publish_vcard(card, timeout=10)
        first_id = hashlib.sha1(first).hexdigest()
        meta = await b.plugin["xep_0060"].get_items(
            a.boundjid.bare, "urn:xmpp:avatar:metadata", timeout=10
        )
        [item] = meta["pubsub"]["items"]
        info_el = item.xml.find(".//{urn:xmpp:avatar:metadata}info")
        assert info_el.get("id") == first_id and info_el.get("bytes") == str(len(first))
        data = await b.plugin["xep_0060"].get_items(
            a.boundjid.bare, "urn:xmpp:avatar:data", item_ids=[first_id], timeout=10
        )
        blob = data["pubsub"]["items"]["item"].xml.find("{urn:xmpp:avatar:data}data").text
        assert base64.b64decode(blob) == first
        # A new client publishes a PEP avatar: the vCard follows, FN kept.
        second_id = hashlib.sha1(second).hexdigest()
        payload = ET.Element("{urn:xmpp:avatar:data}data")
        payload.text = base64.b64encode(second).decode()
        await a.plugin["xep_0060"].publish(
            a.boundjid.bare, "urn:xmpp:avatar:data", id=second_id, payload=payload, timeout=10
        )
        metadata = ET.Element("{urn:xmpp:avatar:metadata}metadata")
        ET.SubElement(
            metadata,
            "{urn:xmpp:avatar:metadata}info",
            id=second_id,
            bytes=str(len(second)),
            type="image/png",
        )
        await a.plugin["xep_0060"].publish(
            a.boundjid.bare, "urn:xmpp:avatar:metadata", id=second_id, payload=metadata, timeout=10
        )
        got = await b.plugin["xep_0054"].get_vcard(a.boundjid.bare, cached=False, timeout=10)
        assert got["vcard_temp"]["PHOTO"]["BINVAL"] == second
        assert got["vcard_temp"]["FN"] == "Ava"
        a.send_presence()

        def has(p: object) -> bool:
            x = p.xml.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")  # type: ignore[attr-defined]
            return p["from"] == a.boundjid and x is not None and x.text == second_id  # type: ignore[index]

        await next_matching(b.presences, has)
        await a.logout()
        await b.logout()

    run(scenario())
