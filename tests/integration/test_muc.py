"""Group chat (XEP-0045) against the real server: slixmpp clients (xep_0045, xep_0313, xep_0199)
and raw sockets, each use case checked for the exact stanzas the XEP requires.

One server for the module (a restart test has its own); each test has its own rooms, so the
users are shared. Clients keep every presence and message they receive (:mod:`mucclient`), so a
test can also check that something did *not* arrive: after a later stanza that the server sent
after it would have.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import run
from tests.integration.mucclient import (
    CONFERENCE,
    DELAY,
    DISCO_INFO,
    DISCO_ITEMS,
    MAM,
    MESSAGE,
    MUC,
    MUC_ADMIN,
    MUC_OWNER,
    MUC_USER,
    OCCUPANT_ID,
    PING,
    PRESENCE,
    ROOMCONFIG,
    RSM,
    MucClient,
    bare,
    body,
    configure,
    create,
    disco_features,
    error_from,
    error_of,
    form_values,
    groupchat,
    item,
    join,
    join_xml,
    leave,
    mam_query,
    message_from,
    occupant_id,
    online,
    presence_from,
    refused,
    send_message,
    stanza_id,
    status_codes,
    subject_of,
)
from tests.integration.rawclient import RawClient
from tests.integration.server import XesServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PASSWORD = "muc-secret"
USERS = ("alice", "bob", "carol", "dave")
INFO = f"<query xmlns='{DISCO_INFO}'/>"
PING_IQ = f"<ping xmlns='{PING}'/>"
NOT_JOINED = ("not-acceptable", "cancel")  # XEP-0410 §3
STABLE_ID = f"{MUC}#stable_id"  # reflections keep the sender's id (XEP-0045 §7.4)
FORWARDED = f".//{{urn:xmpp:forward:0}}forwarded/{MESSAGE}"


@pytest.fixture(scope="module")
def srv(shared_server: XesServer) -> XesServer:
    for user in USERS:
        shared_server.add_user(user, PASSWORD)
    return shared_server


def room_jid(srv: XesServer, name: str) -> str:
    return f"{name}@conference.{srv.domain}"


def jid_of(client: MucClient) -> str:
    return str(client.boundjid)


def bare_of(client: MucClient) -> str:
    return str(client.boundjid.bare)


def admin_item(**attrs: str) -> str:
    """A ``muc#admin`` query with one item (``reason`` becomes its child)."""
    reason = attrs.pop("reason", None)
    text = "".join(f" {k}='{v}'" for k, v in attrs.items())
    inner = f"<reason>{reason}</reason>" if reason else ""
    return f"<query xmlns='{MUC_ADMIN}'><item{text}>{inner}</item></query>"


async def affiliation_list(client: MucClient, room: str, affiliation: str) -> list[str]:
    result = await client.iq("get", room, admin_item(affiliation=affiliation))
    return sorted(i.get("jid", "") for i in result.iter(f"{{{MUC_ADMIN}}}item"))


def nick_of(presence: object) -> str:
    return str(presence.get("from", "")).split("/", 1)[1]  # type: ignore[attr-defined]


# -- 1. service discovery ----------------------------------------------------------------------


def test_service_discovery_and_public_room_list(srv: XesServer) -> None:
    service = f"conference.{srv.domain}"
    items_of = f"{{{DISCO_ITEMS}}}item"

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/disco") as (alice,):
            items = await alice.iq("get", srv.domain, f"<query xmlns='{DISCO_ITEMS}'/>")
            assert service in {i.get("jid") for i in items.iter(items_of)}
            info = await alice.iq("get", service, INFO)
            identities = info.iter(f"{{{DISCO_INFO}}}identity")
            assert [(i.get("category"), i.get("type")) for i in identities] == [
                ("conference", "text")
            ]
            assert {MUC, OCCUPANT_ID, MAM, STABLE_ID} <= disco_features(info)

            public = [room_jid(srv, f"listed-{i}") for i in range(3)]
            for room in public:
                await create(alice, room, "Alice")
            hidden = room_jid(srv, "listed-hidden")
            await create(alice, hidden, "Alice", {"muc#roomconfig_publicroom": "0"})
            locked = room_jid(srv, "listed-locked")
            await join(alice, locked, "Alice")  # never configured: still locked

            unpaged = await alice.iq("get", service, f"<query xmlns='{DISCO_ITEMS}'/>")
            everything = [i.get("jid") for i in unpaged.iter(items_of)]
            assert set(public) <= set(everything)
            assert hidden not in everything and locked not in everything

            # RSM (XEP-0059) pages of two, until a short page. Rooms of other tests may end
            # meanwhile: only ours are counted on.
            seen: list[str] = []
            after = ""
            while True:
                rsm = "<max>2</max>" + (f"<after>{after}</after>" if after else "")
                query = f"<query xmlns='{DISCO_ITEMS}'><set xmlns='{RSM}'>{rsm}</set></query>"
                page = await alice.iq("get", service, query)
                jids = [i.get("jid", "") for i in page.iter(items_of)]
                rsm_set = page.find(f"{{{DISCO_ITEMS}}}query/{{{RSM}}}set")
                assert rsm_set is not None
                assert int(rsm_set.findtext(f"{{{RSM}}}count") or -1) >= len(public)
                assert len(jids) <= 2
                if jids:
                    assert rsm_set.findtext(f"{{{RSM}}}first") == jids[0]
                    assert rsm_set.findtext(f"{{{RSM}}}last") == jids[-1]
                seen += jids
                if len(jids) < 2:
                    break
                after = jids[-1]
            assert len(seen) > 2  # more than one page was needed
            assert len(seen) == len(set(seen))  # no room twice
            assert set(public) <= set(seen)
            assert hidden not in seen and locked not in seen

    run(scenario())


# -- 2. room creation --------------------------------------------------------------------------


def test_new_room_is_locked_until_the_owner_asks_for_an_instant_room(srv: XesServer) -> None:
    room = room_jid(srv, "instant")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/create", "bob/create") as (alice, bob):
            created = await join(alice, room, "Alice")
            assert {110, 201} <= created.codes
            assert created.item["affiliation"] == "owner"
            assert created.item["role"] == "moderator"
            assert created.occupants == [] and created.history == []
            assert subject_of(created.subject) == ""  # sent even when empty (§7.2.15)

            # Locked (§10.1.1): the room does not exist yet for anybody but its owner.
            assert await refused(bob, room, "Bob") == ("item-not-found", "cancel")
            assert await bob.iq_error("get", room, INFO) == ("item-not-found", "cancel")
            assert "muc_unconfigured" in disco_features(await alice.iq("get", room, INFO))

            await configure(alice, room, {})  # instant room: an empty submit form (§10.1.2)
            joined = await join(bob, room, "Bob")
            assert 201 not in joined.codes
            assert joined.nicks == ["Alice"]
            features = disco_features(await bob.iq("get", room, INFO))
            assert {
                MUC,
                STABLE_ID,
                "muc_temporary",
                "muc_public",
                "muc_open",
                "muc_unmoderated",
                "muc_unsecured",
                "muc_semianonymous",
            } <= features
            assert "muc_unconfigured" not in features
            await alice.inbox.take(presence_from(f"{room}/Bob", unavailable=False))

    run(scenario())


def test_reserved_room_configured_through_the_form(srv: XesServer) -> None:
    room = room_jid(srv, "reserved")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/form", "bob/form") as (alice, bob):
            created = await join(alice, room, "Alice")
            assert {110, 201} <= created.codes
            form = await alice.plugin["xep_0045"].get_room_config(room)
            fields = form.get_fields()
            assert fields["FORM_TYPE"]["value"] == [ROOMCONFIG]  # hidden: a list in slixmpp
            for var in (
                "muc#roomconfig_roomname",
                "muc#roomconfig_persistentroom",
                "muc#roomconfig_membersonly",
                "muc#roomconfig_moderatedroom",
                "muc#roomconfig_passwordprotectedroom",
                "muc#roomconfig_roomsecret",
                "muc#roomconfig_whois",
                "muc#roomconfig_maxusers",
            ):
                assert var in fields, var
            fields["muc#roomconfig_roomname"]["value"] = "The reserved room"
            fields["muc#roomconfig_roomdesc"]["value"] = "Configured before anyone came"
            fields["muc#roomconfig_persistentroom"]["value"] = True
            fields["muc#roomconfig_moderatedroom"]["value"] = True
            fields["muc#roomconfig_passwordprotectedroom"]["value"] = True
            fields["muc#roomconfig_roomsecret"]["value"] = "s3same"
            fields["muc#roomconfig_whois"]["value"] = "anyone"
            await alice.plugin["xep_0045"].set_room_config(room, form)

            info = await bob.iq("get", room, INFO)
            names = [i.get("name") for i in info.iter(f"{{{DISCO_INFO}}}identity")]
            assert names == ["The reserved room"]
            features = disco_features(info)
            assert {
                "muc_persistent",
                "muc_public",
                "muc_open",
                "muc_moderated",
                "muc_passwordprotected",
                "muc_nonanonymous",
            } <= features
            assert not features & {"muc_temporary", "muc_unsecured", "muc_semianonymous"}
            roominfo = form_values(info)
            assert roominfo["muc#roominfo_description"] == ["Configured before anyone came"]
            assert roominfo["muc#roominfo_occupants"] == ["1"]

            joined = await join(bob, room, "Bob", password="s3same")
            assert joined.item["role"] == "visitor"  # moderated: no voice by default
            assert 100 in joined.codes  # non-anonymous (§7.2.4)
            await alice.inbox.take(presence_from(f"{room}/Bob", unavailable=False))

            # A later change is announced to the occupants (104, 173: now semi-anonymous).
            await configure(alice, room, {"muc#roomconfig_whois": "moderators"})
            for client in (alice, bob):
                notice = await client.inbox.take(message_from(room))
                assert {104, 173} <= status_codes(notice)
            again = form_values(await alice.iq("get", room, f"<query xmlns='{MUC_OWNER}'/>"))
            assert again["muc#roomconfig_roomname"] == ["The reserved room"]
            assert again["muc#roomconfig_persistentroom"] == ["1"]
            assert again["muc#roomconfig_whois"] == ["moderators"]
            assert again["muc#roomconfig_roomsecret"] in ([], [""])  # never shown
            await alice.plugin["xep_0045"].destroy(room)

    run(scenario())


def test_cancelling_the_initial_configuration_destroys_the_room(srv: XesServer) -> None:
    room = room_jid(srv, "cancelled")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/cancel", "bob/cancel") as (alice, bob):
            await join(alice, room, "Alice")
            await alice.plugin["xep_0045"].cancel_config(room)  # §10.1.3
            gone = await alice.inbox.take(presence_from(f"{room}/Alice", unavailable=True))
            assert gone.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy") is not None
            assert await alice.iq_error("get", room, INFO) == ("item-not-found", "cancel")
            # The name is free again: the next join creates a new room, owned by its creator.
            fresh = await join(bob, room, "Bob")
            assert {110, 201} <= fresh.codes and fresh.item["affiliation"] == "owner"

    run(scenario())


# -- 3. entering, presence, leaving ------------------------------------------------------------


def test_presence_in_a_semi_anonymous_room(srv: XesServer) -> None:
    room = room_jid(srv, "semianon")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/semi", "bob/semi", "carol/semi") as (
            alice,
            bob,
            carol,
        ):
            await create(alice, room, "Alice")
            b = await join(bob, room, "Bob")
            assert b.nicks == ["Alice"]
            # Bob is no moderator: no real JIDs for him (§7.2.5).
            assert item(b.occupants[0]) == {"affiliation": "owner", "role": "moderator"}
            assert b.item["affiliation"] == "none" and b.item["role"] == "participant"
            assert 110 in b.codes and 100 not in b.codes and 201 not in b.codes
            assert 170 in b.codes  # the room is archived
            alice_oid = occupant_id(b.occupants[0])
            bob_oid = occupant_id(b.self_presence)
            assert alice_oid and bob_oid and alice_oid != bob_oid

            # The moderator sees Bob's real JID.
            seen = await alice.inbox.take(presence_from(f"{room}/Bob", unavailable=False))
            assert item(seen) == {"affiliation": "none", "role": "participant", "jid": jid_of(bob)}
            assert 110 not in status_codes(seen)
            assert occupant_id(seen) == bob_oid

            c = await join(carol, room, "Carol")
            assert sorted(c.nicks) == ["Alice", "Bob"]
            assert all("jid" not in item(p) for p in c.occupants)
            by_nick = {nick_of(p): p for p in c.occupants}
            assert occupant_id(by_nick["Bob"]) == bob_oid  # stable per user (XEP-0421)
            carol_for_bob = await bob.inbox.take(presence_from(f"{room}/Carol", unavailable=False))
            assert "jid" not in item(carol_for_bob)
            await alice.inbox.take(presence_from(f"{room}/Carol", unavailable=False))

            # A presence change is broadcast (§7.7); the room's own elements in it are the
            # room's, not what the client claims (§17.3.1: never reflected).
            away = (
                "<show>away</show><status>lunch</status>"
                f"<x xmlns='{MUC_USER}'><item affiliation='owner' role='moderator'/></x>"
                f"<occupant-id xmlns='{OCCUPANT_ID}' id='forged'/>"
            )
            bob.send_raw(f"<presence to='{room}/Bob'>{away}</presence>")
            for client in (alice, carol):
                update = await client.inbox.take(presence_from(f"{room}/Bob", unavailable=False))
                assert update.findtext("{jabber:client}show") == "away"
                assert update.findtext("{jabber:client}status") == "lunch"
                assert len(update.findall(f"{{{MUC_USER}}}x")) == 1
                assert item(update)["affiliation"] == "none"
                assert item(update)["role"] == "participant"
                ids = [o.get("id") for o in update.iter(f"{{{OCCUPANT_ID}}}occupant-id")]
                assert ids == [bob_oid]
            own = await bob.inbox.take(presence_from(f"{room}/Bob", unavailable=False))
            assert 110 in status_codes(own)

            # Nickname change (§7.6): unavailable with 303 and the new nick, then the new one.
            bob.send_raw(f"<presence to='{room}/Robert'/>")
            old_or_new = {f"{room}/Bob", f"{room}/Robert"}
            for client in (alice, carol, bob):
                first = await client.inbox.take(lambda e: e.get("from") in old_or_new)
                second = await client.inbox.take(lambda e: e.get("from") in old_or_new)
                assert first.get("from") == f"{room}/Bob" and first.get("type") == "unavailable"
                assert 303 in status_codes(first) and item(first)["nick"] == "Robert"
                assert second.get("from") == f"{room}/Robert" and second.get("type") is None
                assert (110 in status_codes(first)) == (client is bob)
                assert (110 in status_codes(second)) == (client is bob)
                assert occupant_id(second) == bob_oid

            # A nickname another occupant holds is refused (§7.6.3); Bob keeps his.
            bob.send_raw(f"<presence to='{room}/carol' id='nick-2'/>")
            error = await bob.inbox.take(error_from(f"{room}/carol", PRESENCE))
            assert error.get("id") == "nick-2" and error_of(error) == ("conflict", "cancel")

            # Exit (§7.14): 110 to the leaver, role none to everyone, the status passed on.
            gone = await leave(bob, room, "Robert", status="Gone fishing")
            assert item(gone)["role"] == "none"
            for client in (alice, carol):
                seen = await client.inbox.take(presence_from(f"{room}/Robert", unavailable=True))
                assert 110 not in status_codes(seen)
                assert item(seen)["role"] == "none"
                assert seen.findtext("{jabber:client}status") == "Gone fishing"
                assert not client.inbox.matching(lambda e: bare(e.get("from")) == room)

    run(scenario())


def test_real_jids_shown_to_everyone_in_a_non_anonymous_room(srv: XesServer) -> None:
    room = room_jid(srv, "nonanon")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/non", "bob/non", "carol/non") as (
            alice,
            bob,
            carol,
        ):
            await create(alice, room, "Alice", {"muc#roomconfig_whois": "anyone"})
            b = await join(bob, room, "Bob")
            assert 100 in b.codes and 110 in b.codes  # §7.2.4
            assert item(b.occupants[0])["jid"] == jid_of(alice)
            c = await join(carol, room, "Carol")
            jids = {nick_of(p): item(p)["jid"] for p in c.occupants}
            assert jids == {"Alice": jid_of(alice), "Bob": jid_of(bob)}
            seen = await bob.inbox.take(presence_from(f"{room}/Carol", unavailable=False))
            assert item(seen)["jid"] == jid_of(carol)

    run(scenario())


def test_history_then_subject_on_entering(srv: XesServer) -> None:
    room = room_jid(srv, "history")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/hist", "bob/hist", "carol/hist", "dave/hist") as (
            alice,
            bob,
            carol,
            dave,
        ):
            await create(alice, room, "Alice")
            send_message(alice, room, subject="Plans for the week")
            subject = await alice.inbox.take(message_from(f"{room}/Alice"))
            assert subject_of(subject) == "Plans for the week"
            for i in range(1, 6):
                await groupchat(alice, room, f"note {i}")
            for i in range(1, 6):
                await alice.inbox.take(message_from(f"{room}/Alice", text=f"note {i}"))

            # join() checks the order: occupants, self-presence, history, then the subject.
            b = await join(bob, room, "Bob", history={"maxstanzas": "3"})
            assert [body(m) for m in b.history] == ["note 3", "note 4", "note 5"]
            for m in b.history:
                assert m.get("from") == f"{room}/Alice" and m.get("type") == "groupchat"
                delay = m.find(f"{{{DELAY}}}delay")  # XEP-0203, from the room (§7.2.15)
                assert delay is not None and delay.get("from") == room and delay.get("stamp")
            # The subject comes last, from whoever set it, without a body (§7.2.16).
            assert subject_of(b.subject) == "Plans for the week"
            assert b.subject.get("from") == f"{room}/Alice" and body(b.subject) is None

            c = await join(carol, room, "Carol", history={"maxstanzas": "0"})
            assert c.history == [] and subject_of(c.subject) == "Plans for the week"
            d = await join(dave, room, "Dave")
            assert [body(m) for m in d.history] == [f"note {i}" for i in range(1, 6)]

            # Live messages carry no delay.
            await groupchat(alice, room, "live")
            live = await bob.inbox.take(message_from(f"{room}/Alice", text="live"))
            assert live.find(f"{{{DELAY}}}delay") is None

    run(scenario())


def test_subject_changes_by_moderators_and_when_allowed_by_participants(srv: XesServer) -> None:
    room = room_jid(srv, "subject")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/subj", "bob/subj") as (alice, bob):
            await create(alice, room, "Alice")
            await join(bob, room, "Bob")
            send_message(bob, room, subject="Mine", id_="s-1")
            error = await bob.inbox.take(error_from(room))
            assert error.get("id") == "s-1"
            assert error_of(error) == ("forbidden", "auth")  # §8.1

            send_message(alice, room, subject="By the owner")
            for client in (alice, bob):
                got = await client.inbox.take(message_from(f"{room}/Alice"))
                assert subject_of(got) == "By the owner" and body(got) is None
                assert not client.inbox.matching(message_from(f"{room}/Bob"))

            await configure(alice, room, {"muc#roomconfig_changesubject": "1"})
            assert 104 in status_codes(await bob.inbox.take(message_from(room)))
            send_message(bob, room, subject="By a participant")
            for client in (alice, bob):
                got = await client.inbox.take(message_from(f"{room}/Bob"))
                assert subject_of(got) == "By a participant"

    run(scenario())


# -- 4. messages -------------------------------------------------------------------------------


def test_groupchat_reflection_stanza_id_and_room_archive(srv: XesServer) -> None:
    room = room_jid(srv, "archive")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/arch", "bob/arch") as (alice, bob):
            await create(alice, room, "Alice")
            b = await join(bob, room, "Bob")
            bob_oid = occupant_id(b.self_presence)
            # The client's own stanza-id and occupant-id claims are not the room's (XEP-0359 §6,
            # XEP-0421 §4): the room replaces them.
            forged = (
                f"<stanza-id xmlns='urn:xmpp:sid:0' by='{room}' id='forged'/>"
                f"<occupant-id xmlns='{OCCUPANT_ID}' id='forged'/>"
            )
            send_message(bob, room, "hello room", id_="bob-1", extra=forged)
            echo = await bob.inbox.take(message_from(f"{room}/Bob", text="hello room"))
            assert echo.get("id") == "bob-1" and echo.get("type") == "groupchat"
            sid = stanza_id(echo, room)
            assert sid and sid != "forged"
            assert [o.get("id") for o in echo.iter(f"{{{OCCUPANT_ID}}}occupant-id")] == [bob_oid]
            got = await alice.inbox.take(message_from(f"{room}/Bob", text="hello room"))
            assert got.get("id") == "bob-1"
            assert stanza_id(got, room) == sid and occupant_id(got) == bob_oid

            for client in (alice, bob):
                fin, results = await mam_query(client, room)
                assert fin.get("complete") == "true"
                found = [r for r in results if body(r.find(FORWARDED)) == "hello room"]
                assert len(found) == 1
                assert found[0].get("from") == room
                result = found[0].find(f"{{{MAM}}}result")
                assert result is not None and result.get("id") == sid
                archived = found[0].find(FORWARDED)
                assert archived is not None and archived.get("from") == f"{room}/Bob"

    run(scenario())


def test_groupchat_refused_to_non_occupants_and_visitors(srv: XesServer) -> None:
    room = room_jid(srv, "moderated-talk")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/mod", "bob/mod", "carol/mod") as (
            alice,
            bob,
            carol,
        ):
            await create(alice, room, "Alice", {"muc#roomconfig_moderatedroom": "1"})
            await groupchat(carol, room, "from outside", "out-1")
            error = await carol.inbox.take(error_from(room))
            assert error.get("id") == "out-1"
            assert error_of(error) == ("not-acceptable", "modify")  # §7.4

            b = await join(bob, room, "Bob")
            assert b.item["role"] == "visitor"
            await groupchat(bob, room, "a visitor speaks", "vis-1")
            error = await bob.inbox.take(error_from(room))
            assert error.get("id") == "vis-1"
            assert error_of(error) == ("forbidden", "auth")  # §7.4

            # Neither was passed on: by the time a later message arrives, they would have.
            await groupchat(alice, room, "only moderators here")
            for client in (alice, bob):
                await client.inbox.take(message_from(f"{room}/Alice", text="only moderators here"))
                for text in ("from outside", "a visitor speaks"):
                    assert not client.inbox.matching(lambda e, t=text: body(e) == t)

    run(scenario())


def test_private_messages_through_the_room(srv: XesServer) -> None:
    room = room_jid(srv, "private")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/pm", "bob/pm", "carol/pm") as (alice, bob, carol):
            await create(alice, room, "Alice")
            await join(bob, room, "Bob")
            send_message(bob, f"{room}/Alice", "just for you", type_="chat", id_="pm-1")
            pm = await alice.inbox.take(message_from(f"{room}/Bob", text="just for you"))
            assert pm.get("type") == "chat" and pm.get("id") == "pm-1"
            assert pm.find(f"{{{MUC_USER}}}x") is not None  # §7.5

            send_message(bob, f"{room}/Nobody", "hello?", type_="chat", id_="pm-2")
            error = await bob.inbox.take(error_from(f"{room}/Nobody"))
            assert error.get("id") == "pm-2" and error_of(error) == ("item-not-found", "cancel")

            send_message(bob, f"{room}/Alice", "wrong type", id_="pm-3")  # type groupchat
            error = await bob.inbox.take(error_from(f"{room}/Alice"))
            assert error.get("id") == "pm-3" and error_of(error) == ("bad-request", "modify")

            send_message(carol, f"{room}/Alice", "not in there", type_="chat", id_="pm-4")
            error = await carol.inbox.take(error_from(f"{room}/Alice"))
            assert error.get("id") == "pm-4" and error_of(error) == ("not-acceptable", "modify")

            # Alice alone got the first one, and none of the refused ones.
            await alice.iq("get", f"{room}/Alice", PING_IQ)
            assert not bob.inbox.matching(message_from(f"{room}/Bob", text="just for you"))
            for text in ("hello?", "wrong type", "not in there"):
                assert not alice.inbox.matching(lambda e, t=text: body(e) == t)

    run(scenario())


# -- 5. entering refused -----------------------------------------------------------------------


def test_join_needs_the_right_password(srv: XesServer) -> None:
    room = room_jid(srv, "secret")
    protected = {
        "muc#roomconfig_passwordprotectedroom": "1",
        "muc#roomconfig_roomsecret": "open sesame",
    }

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/pw", "bob/pw") as (alice, bob):
            await create(alice, room, "Alice", protected)
            assert await refused(bob, room, "Bob") == ("not-authorized", "auth")  # §7.2.6
            wrong = await refused(bob, room, "Bob", password="open barley")
            assert wrong == ("not-authorized", "auth")
            joined = await join(bob, room, "Bob", password="open sesame")
            assert joined.nicks == ["Alice"]
            assert "muc_passwordprotected" in disco_features(await bob.iq("get", room, INFO))

    run(scenario())


def test_join_refused_to_banned_users_and_to_non_members(srv: XesServer) -> None:
    open_room = room_jid(srv, "no-carol")
    members = room_jid(srv, "members")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/ban", "bob/ban", "carol/ban") as (
            alice,
            bob,
            carol,
        ):
            muc = alice.plugin["xep_0045"]
            await create(alice, open_room, "Alice")
            await muc.set_affiliation(open_room, "outcast", jid=bare_of(carol))
            assert await refused(carol, open_room, "Carol") == ("forbidden", "auth")  # §7.2.8

            await create(alice, members, "Alice", {"muc#roomconfig_membersonly": "1"})
            assert "muc_membersonly" in disco_features(await alice.iq("get", members, INFO))
            refusal = await refused(carol, members, "Carol")
            assert refusal == ("registration-required", "auth")  # §7.2.7
            await muc.set_affiliation(members, "member", jid=bare_of(bob))
            joined = await join(bob, members, "Bob")
            assert joined.item["affiliation"] == "member" and joined.item["role"] == "participant"

    run(scenario())


def test_join_refused_for_a_nickname_in_use_and_a_full_room(srv: XesServer) -> None:
    room = room_jid(srv, "small")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/full", "bob/full", "carol/full", "dave/full") as (
            alice,
            bob,
            carol,
            dave,
        ):
            await create(alice, room, "Alice", {"muc#roomconfig_maxusers": "2"})
            assert await refused(bob, room, "Alice") == ("conflict", "cancel")  # §7.2.9
            assert await refused(bob, room, "alice") == ("conflict", "cancel")  # case-mapped
            await join(bob, room, "Bob")
            full = await refused(carol, room, "Carol")
            assert full == ("service-unavailable", "wait")  # §7.2.10
            # Admins and owners still get in (§7.2.10).
            await alice.plugin["xep_0045"].set_affiliation(room, "admin", jid=bare_of(dave))
            joined = await join(dave, room, "Dave")
            assert joined.item["role"] == "moderator"

    run(scenario())


def test_join_refused_for_malformed_or_missing_nicknames(srv: XesServer) -> None:
    room = room_jid(srv, "nicknames")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/nick", "bob/nick") as (alice, bob):
            await create(alice, room, "Alice")
            assert await refused(bob, room, "bell\x7fboy") == ("jid-malformed", "modify")
            assert await refused(bob, room, "b" * 65) == ("jid-malformed", "modify")
            bob.send_raw(join_xml(room, ""))  # no nickname at all (§7.2.1)
            error = await bob.inbox.take(error_from(room, PRESENCE))
            assert error_of(error) == ("jid-malformed", "modify")
            # The service may change a nickname (PRECIS width mapping), and says so with 210.
            joined = await join(bob, room, "\uff22\uff4f\uff42")  # fullwidth "Bob"
            assert joined.self_presence.get("from") == f"{room}/Bob"
            assert {110, 210} <= joined.codes
            # None of the refused joins entered the room: Bob is the first to arrive.
            in_room = await alice.inbox.take(lambda e: bare(e.get("from")) == room)
            assert in_room.get("from") == f"{room}/Bob" and in_room.get("type") is None

    run(scenario())


# -- 6. moderators, admins, owners -------------------------------------------------------------


def test_kick(srv: XesServer) -> None:
    room = room_jid(srv, "kick")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/kick", "bob/kick", "carol/kick", "dave/kick") as (
            alice,
            bob,
            carol,
            dave,
        ):
            await create(alice, room, "Alice")
            await join(bob, room, "Bob")
            await join(carol, room, "Carol")
            # A participant may not kick (§8.2).
            kick_bob = admin_item(nick="Bob", role="none", reason="Be nice")
            assert await carol.iq_error("set", room, kick_bob) == ("forbidden", "auth")

            await alice.iq("set", room, kick_bob)
            own = await bob.inbox.take(presence_from(f"{room}/Bob", unavailable=True))
            assert {307, 110} <= status_codes(own)
            kicked = own.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
            assert kicked is not None and kicked.get("role") == "none"
            assert kicked.findtext(f"{{{MUC_USER}}}reason") == "Be nice"
            for client in (alice, carol):
                seen = await client.inbox.take(presence_from(f"{room}/Bob", unavailable=True))
                assert 307 in status_codes(seen) and 110 not in status_codes(seen)
                assert item(seen)["role"] == "none"
            assert await bob.iq_error("get", f"{room}/Bob", PING_IQ) == NOT_JOINED
            await join(bob, room, "Bob")  # a kick is no ban

            # An admin may not kick an owner (§8.2: not-allowed), a participant yes.
            await alice.plugin["xep_0045"].set_affiliation(room, "admin", jid=bare_of(dave))
            joined = await join(dave, room, "Dave")
            assert joined.item["role"] == "moderator"
            kick_alice = admin_item(nick="Alice", role="none")
            assert await dave.iq_error("set", room, kick_alice) == ("not-allowed", "cancel")
            await dave.iq("set", room, admin_item(nick="Carol", role="none"))
            await carol.inbox.take(presence_from(f"{room}/Carol", unavailable=True, codes={307}))

    run(scenario())


def test_ban(srv: XesServer) -> None:
    room = room_jid(srv, "ban")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/bann", "bob/bann", "carol/bann") as (
            alice,
            bob,
            carol,
        ):
            await create(alice, room, "Alice")
            await join(bob, room, "Bob")
            await join(carol, room, "Carol")
            ban = admin_item(jid=bare_of(bob), affiliation="outcast", reason="Spam")
            assert await carol.iq_error("set", room, ban) == ("forbidden", "auth")
            await alice.iq("set", room, ban)  # §9.1
            own = await bob.inbox.take(presence_from(f"{room}/Bob", unavailable=True))
            assert {301, 110} <= status_codes(own)
            assert item(own)["affiliation"] == "outcast" and item(own)["role"] == "none"
            for client in (alice, carol):
                seen = await client.inbox.take(presence_from(f"{room}/Bob", unavailable=True))
                assert 301 in status_codes(seen) and 110 not in status_codes(seen)
            assert await refused(bob, room, "Bob") == ("forbidden", "auth")
            assert await affiliation_list(alice, room, "outcast") == [bare_of(bob)]

            await alice.iq("set", room, admin_item(jid=bare_of(bob), affiliation="none"))
            assert await affiliation_list(alice, room, "outcast") == []
            await join(bob, room, "Bob")

    run(scenario())


def test_voice_granted_and_revoked_in_a_moderated_room(srv: XesServer) -> None:
    room = room_jid(srv, "voice")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/voice", "bob/voice") as (alice, bob):
            await create(alice, room, "Alice", {"muc#roomconfig_moderatedroom": "1"})
            b = await join(bob, room, "Bob")
            assert b.item["role"] == "visitor"
            await alice.inbox.take(presence_from(f"{room}/Bob"))

            await alice.iq("set", room, admin_item(nick="Bob", role="participant"))  # §8.3
            for client in (alice, bob):
                seen = await client.inbox.take(presence_from(f"{room}/Bob", unavailable=False))
                assert item(seen)["role"] == "participant"
            await groupchat(bob, room, "thank you")
            await alice.inbox.take(message_from(f"{room}/Bob", text="thank you"))

            await alice.iq("set", room, admin_item(nick="Bob", role="visitor"))  # §8.4
            for client in (alice, bob):
                seen = await client.inbox.take(presence_from(f"{room}/Bob", unavailable=False))
                assert item(seen)["role"] == "visitor"
            await groupchat(bob, room, "but", "but-1")
            error = await bob.inbox.take(error_from(room))
            assert error.get("id") == "but-1" and error_of(error) == ("forbidden", "auth")

    run(scenario())


def test_membership_lists_and_the_last_owner(srv: XesServer) -> None:
    room = room_jid(srv, "lists")
    carol, dave = f"carol@{srv.domain}", f"dave@{srv.domain}"

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/lists", "bob/lists") as (alice, bob):
            await create(alice, room, "Alice")
            await join(bob, room, "Bob")
            await alice.inbox.take(presence_from(f"{room}/Bob"))
            await alice.iq("set", room, admin_item(jid=bare_of(bob), affiliation="member"))
            for client in (alice, bob):
                seen = await client.inbox.take(presence_from(f"{room}/Bob", unavailable=False))
                assert item(seen)["affiliation"] == "member"
            await alice.iq("set", room, admin_item(jid=carol, affiliation="outcast"))

            assert await affiliation_list(alice, room, "member") == [bare_of(bob)]
            assert await affiliation_list(alice, room, "outcast") == [carol]
            assert await affiliation_list(alice, room, "owner") == [bare_of(alice)]
            assert await affiliation_list(alice, room, "admin") == []
            refusal = await bob.iq_error("get", room, admin_item(affiliation="outcast"))
            assert refusal == ("forbidden", "auth")

            # The last owner cannot go (§10.6, §10.7: conflict); with a second owner, one can.
            demote = admin_item(jid=bare_of(alice), affiliation="admin")
            assert await alice.iq_error("set", room, demote) == ("conflict", "cancel")
            await alice.iq("set", room, admin_item(jid=dave, affiliation="owner"))
            assert await affiliation_list(alice, room, "owner") == sorted([bare_of(alice), dave])
            await alice.iq("set", room, admin_item(jid=dave, affiliation="none"))
            assert await affiliation_list(alice, room, "owner") == [bare_of(alice)]

    run(scenario())


def test_destroy_with_a_reason_and_an_alternate_venue(srv: XesServer) -> None:
    room = room_jid(srv, "doomed")
    venue = room_jid(srv, "new-home")
    destroy = (
        f"<query xmlns='{MUC_OWNER}'>"
        f"<destroy jid='{venue}'><reason>Moving on</reason></destroy></query>"
    )

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/doom", "bob/doom") as (alice, bob):
            await create(alice, room, "Alice")
            await join(bob, room, "Bob")
            assert await bob.iq_error("set", room, destroy) == ("forbidden", "auth")
            await alice.iq("set", room, destroy)  # §10.9
            for client, nick in ((alice, "Alice"), (bob, "Bob")):
                gone = await client.inbox.take(presence_from(f"{room}/{nick}", unavailable=True))
                assert item(gone)["affiliation"] == "none" and item(gone)["role"] == "none"
                found = gone.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy")
                assert found is not None and found.get("jid") == venue
                assert found.findtext(f"{{{MUC_USER}}}reason") == "Moving on"
            assert await bob.iq_error("get", room, INFO) == ("item-not-found", "cancel")
            # One presence each, not everyone's departure.
            assert not bob.inbox.matching(presence_from(f"{room}/Alice", unavailable=True))
            assert not alice.inbox.matching(presence_from(f"{room}/Bob", unavailable=True))

    run(scenario())


# -- 7. invitations ----------------------------------------------------------------------------


def test_mediated_invitation_to_a_members_only_room_and_decline(srv: XesServer) -> None:
    room = room_jid(srv, "invited")
    invite = f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite"
    decline = f"{{{MUC_USER}}}x/{{{MUC_USER}}}decline"

    def invitation(e: object) -> bool:
        return e.get("from") == room and e.find(invite) is not None  # type: ignore[attr-defined]

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/inv", "bob/inv", "carol/inv", "dave/inv") as (
            alice,
            bob,
            carol,
            dave,
        ):
            await create(alice, room, "Alice", {"muc#roomconfig_membersonly": "1"})
            alice.plugin["xep_0045"].invite(room, bare_of(bob), reason="Join us")
            got = await bob.inbox.take(invitation)  # §7.8.2
            assert got.get("type") in (None, "normal")
            inv = got.find(invite)
            assert inv is not None and bare(inv.get("from")) == bare_of(alice)
            assert inv.findtext(f"{{{MUC_USER}}}reason") == "Join us"
            # The invitation made Bob a member of the members-only room.
            joined = await join(bob, room, "Bob")
            assert joined.item["affiliation"] == "member"
            refusal = await refused(dave, room, "Dave")
            assert refusal == ("registration-required", "auth")

            # A member without the right to invite is refused, so is an unknown invitee.
            bob.plugin["xep_0045"].invite(room, bare_of(dave))
            assert error_of(await bob.inbox.take(error_from(room))) == ("forbidden", "auth")
            alice.plugin["xep_0045"].invite(room, f"nobody@{srv.domain}")
            error = await alice.inbox.take(error_from(room))
            assert error_of(error) == ("item-not-found", "cancel")

            alice.plugin["xep_0045"].invite(room, bare_of(carol))
            await carol.inbox.take(invitation)
            carol.plugin["xep_0045"].decline(room, bare_of(alice), reason="Too busy")
            got = await alice.inbox.take(
                lambda e: e.get("from") == room and e.find(decline) is not None
            )
            dec = got.find(decline)
            assert dec is not None and bare(dec.get("from")) == bare_of(carol)
            assert dec.findtext(f"{{{MUC_USER}}}reason") == "Too busy"
            assert not dave.inbox.matching(invitation)  # Bob's was refused

    run(scenario())


def test_direct_invitation_passes_unchanged(srv: XesServer) -> None:
    room = room_jid(srv, "direct")
    tag = f"{{{CONFERENCE}}}x"

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/dir", "bob/dir") as (alice, bob):
            await create(alice, room, "Alice")
            direct = f"<x xmlns='{CONFERENCE}' jid='{room}' reason='Come over' password='pw'/>"
            send_message(alice, jid_of(bob), type_="normal", id_="dinv-1", extra=direct)
            got = await bob.inbox.take(lambda e: e.find(tag) is not None)  # XEP-0249
            assert got.get("from") == jid_of(alice) and got.get("id") == "dinv-1"
            x = got.find(tag)
            assert x is not None
            assert dict(x.attrib) == {"jid": room, "reason": "Come over", "password": "pw"}

    run(scenario())


# -- 8. no ghosts ------------------------------------------------------------------------------


def _raw_join(srv: XesServer, room: str, nick: str) -> tuple[RawClient, bytes]:
    """bob/ghost over a raw socket (no stream management), joined as ``nick``."""
    raw = RawClient(srv.c2s)
    assert raw.login(srv, "bob", PASSWORD, resource="ghost") == f"bob@{srv.domain}/ghost"
    raw.send(join_xml(room, nick))
    return raw, raw.recv_until(b"</subject></message>")


def test_dropped_connection_leaves_the_room_and_the_same_jid_can_rejoin(srv: XesServer) -> None:
    room = room_jid(srv, "ghosts")
    bob = f"{room}/Bob"
    entered = b"<status code='110'/>"

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/ghost") as (alice,):
            await create(alice, room, "Alice")
            raw, answer = await asyncio.to_thread(_raw_join, srv, room, "Bob")
            assert entered in answer and b"type='error'" not in answer
            await alice.inbox.take(presence_from(bob, unavailable=False))

            raw.sock.close()  # the TCP connection is cut: no </stream:stream>
            gone = await alice.inbox.take(presence_from(bob, unavailable=True), timeout=20)
            assert 333 in status_codes(gone) and 307 not in status_codes(gone)  # XEP-0045 §12.1
            assert item(gone)["role"] == "none"

            # A new session with the same full JID joins again: no conflict with a ghost.
            raw, answer = await asyncio.to_thread(_raw_join, srv, room, "Bob")
            assert entered in answer and b"type='error'" not in answer
            await alice.inbox.take(presence_from(bob, unavailable=False))

            # Again, reconnecting at once, before the server may have noticed the cut: the new
            # bind then replaces (ends) the old session. Either way Bob left (333) before the
            # new session joined, and is gone once it leaves: a ghost would keep him in.
            raw.sock.close()
            raw, answer = await asyncio.to_thread(_raw_join, srv, room, "Bob")
            assert entered in answer and b"type='error'" not in answer
            raw.send(f"<presence to='{bob}' type='unavailable'/>")
            left, back, gone = [await alice.inbox.take(presence_from(bob)) for _ in range(3)]
            assert left.get("type") == "unavailable" and 333 in status_codes(left)
            assert back.get("type") is None
            assert gone.get("type") == "unavailable" and 333 not in status_codes(gone)
            info = form_values(await alice.iq("get", room, INFO))
            assert info["muc#roominfo_occupants"] == ["1"]
            raw.close()

    run(scenario())


def test_two_resources_share_one_occupant(srv: XesServer) -> None:
    room = room_jid(srv, "shared-nick")
    bob_jid = f"{room}/Bob"

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/res", "bob/one", "bob/two", "carol/res") as (
            alice,
            bob1,
            bob2,
            carol,
        ):
            await create(alice, room, "Alice")
            first = await join(bob1, room, "Bob")
            second = await join(bob2, room, "Bob")  # §7.2.9: same bare JID, same nick
            assert 110 in second.codes and second.nicks == ["Alice"]
            assert occupant_id(second.self_presence) == occupant_id(first.self_presence)
            c = await join(carol, room, "Carol")
            assert sorted(c.nicks) == ["Alice", "Bob"]  # one occupant, not two
            info = form_values(await alice.iq("get", room, INFO))
            assert info["muc#roominfo_occupants"] == ["3"]

            # Both resources get the room's messages and private messages; both may speak.
            await groupchat(alice, room, "to both")
            send_message(alice, bob_jid, "private, to both", type_="chat")
            for client in (bob1, bob2):
                await client.inbox.take(message_from(f"{room}/Alice", text="to both"))
                await client.inbox.take(message_from(f"{room}/Alice", text="private, to both"))
            await groupchat(bob2, room, "from the second")
            await alice.inbox.take(message_from(bob_jid, text="from the second"))

            # One resource leaves: the occupant stays.
            await leave(bob1, room, "Bob")
            await groupchat(alice, room, "still there?")
            for client in (carol, bob2):
                await client.inbox.take(message_from(f"{room}/Alice", text="still there?"))
            assert not carol.inbox.matching(presence_from(bob_jid, unavailable=True))
            assert not alice.inbox.matching(presence_from(bob_jid, unavailable=True))
            # The session that left is no occupant (XEP-0410) and gets nothing more: the answer
            # comes after anything the room sent it before.
            assert await bob1.iq_error("get", bob_jid, PING_IQ) == NOT_JOINED
            assert not bob1.inbox.matching(message_from(f"{room}/Alice", text="still there?"))
            await bob2.iq("get", bob_jid, PING_IQ)

            await leave(bob2, room, "Bob")
            seen = await carol.inbox.take(presence_from(bob_jid, unavailable=True))
            assert item(seen)["role"] == "none"

    run(scenario())


def test_self_ping(srv: XesServer) -> None:
    room = room_jid(srv, "self-ping")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/ping", "bob/ping") as (alice, bob):
            await create(alice, room, "Alice")
            result = await alice.iq("get", f"{room}/Alice", PING_IQ)
            assert result.get("type") == "result" and result.get("from") == f"{room}/Alice"
            assert await bob.iq_error("get", f"{room}/Bob", PING_IQ) == NOT_JOINED
            assert await bob.iq_error("get", f"{room}/Alice", PING_IQ) == NOT_JOINED
            await join(bob, room, "Bob")
            await bob.iq("get", f"{room}/Bob", PING_IQ)
            await leave(bob, room, "Bob")
            assert await bob.iq_error("get", f"{room}/Bob", PING_IQ) == NOT_JOINED

    run(scenario())


# -- 9. room lifetime --------------------------------------------------------------------------


def test_temporary_room_ends_with_its_last_occupant(srv: XesServer) -> None:
    room = room_jid(srv, "temporary")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/temp", "bob/temp", "carol/temp") as (
            alice,
            bob,
            carol,
        ):
            await create(alice, room, "Alice")
            await groupchat(alice, room, "soon gone")
            await join(bob, room, "Bob")
            await leave(alice, room, "Alice")
            info = form_values(await bob.iq("get", room, INFO))
            assert info["muc#roominfo_occupants"] == ["1"]
            await leave(bob, room, "Bob")
            assert await alice.iq_error("get", room, INFO) == ("item-not-found", "cancel")
            # The name is free: a new room, with nothing of the old one.
            fresh = await join(carol, room, "Carol")
            assert 201 in fresh.codes and fresh.item["affiliation"] == "owner"
            assert fresh.history == []

    run(scenario())


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[XesServer]:
    node = XesServer(tmp_path / "node")
    node.write_config()
    node.start()
    try:
        for user in ("alice", "bob", "carol"):
            node.add_user(user, PASSWORD)
        yield node
    finally:
        node.stop()


def test_persistent_room_survives_a_restart(own_server: XesServer) -> None:
    srv = own_server
    room = room_jid(srv, "lasting")
    carol = f"carol@{srv.domain}"
    before: dict[str, str] = {}
    config = {"muc#roomconfig_persistentroom": "1", "muc#roomconfig_roomname": "Lasting"}

    async def empty_after_restart(client: MucClient) -> None:
        """The room is there, and nobody from before the restart is left in it (no ghost)."""
        info = await client.iq("get", room, INFO)
        assert [i.get("name") for i in info.iter(f"{{{DISCO_INFO}}}identity")] == ["Lasting"]
        assert "muc_persistent" in disco_features(info)
        assert form_values(info)["muc#roominfo_occupants"] == ["0"]

    async def first_life() -> None:
        async with online(srv, PASSWORD, "alice/keep", "bob/keep") as (alice, bob):
            await create(alice, room, "Alice", config)
            await alice.iq("set", room, admin_item(jid=bare_of(bob), affiliation="member"))
            await alice.iq("set", room, admin_item(jid=carol, affiliation="outcast"))
            send_message(alice, room, subject="Still here")
            await alice.inbox.take(message_from(f"{room}/Alice"))
            for i in range(3):
                await groupchat(alice, room, f"kept {i}")
                echo = await alice.inbox.take(message_from(f"{room}/Alice", text=f"kept {i}"))
                before[f"kept {i}"] = stanza_id(echo, room) or ""
            await leave(alice, room, "Alice")
            # Empty, and still there.
            info = await bob.iq("get", room, INFO)
            assert "muc_persistent" in disco_features(info)
            assert form_values(info)["muc#roominfo_occupants"] == ["0"]
            await join(bob, room, "Bob")  # still in the room when the server stops
            await asyncio.to_thread(srv.stop)

    async def second_life() -> None:
        async with online(srv, PASSWORD, "alice/keep", "bob/keep", "carol/keep") as (
            alice,
            bob,
            carol_client,
        ):
            await empty_after_restart(bob)
            joined = await join(alice, room, "Alice")
            assert joined.occupants == []
            assert 201 not in joined.codes and joined.item["affiliation"] == "owner"
            assert [body(m) for m in joined.history] == ["kept 0", "kept 1", "kept 2"]
            assert {body(m): stanza_id(m, room) for m in joined.history} == before
            assert subject_of(joined.subject) == "Still here"
            assert await affiliation_list(alice, room, "member") == [bare_of(bob)]
            assert await affiliation_list(alice, room, "outcast") == [carol]
            assert await refused(carol_client, room, "Carol") == ("forbidden", "auth")
            b = await join(bob, room, "Bob")
            assert b.item["affiliation"] == "member"
            _, results = await mam_query(bob, room)
            archived = {}
            for r in results:
                result = r.find(f"{{{MAM}}}result")
                assert result is not None
                archived[body(r.find(FORWARDED))] = result.get("id")
            assert archived == before
            # A crash with both inside: their sessions end when the server is back.
            await asyncio.to_thread(srv.stop, signal.SIGKILL)

    async def third_life() -> None:
        async with online(srv, PASSWORD, "alice/keep") as (alice,):
            await empty_after_restart(alice)
            joined = await join(alice, room, "Alice")
            assert joined.occupants == [] and len(joined.history) == 3

    run(first_life())
    srv.start()
    run(second_life())
    srv.start()
    run(third_life())


def test_a_burst_of_groupchat_messages_arrives_whole_and_in_order(srv: XesServer) -> None:
    """Messages a client writes in one go are read, proposed and delivered together (one commit,
    one write per occupant): each still gets its reflection with its own ``id``, its own
    stanza-id, in the order sent, to every occupant; a refused burst gets an error for each."""
    room = room_jid(srv, "burst")
    other = room_jid(srv, "burst-other")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/burst", "bob/burst") as (alice, bob):
            await create(alice, room, "Alice", {"muc#roomconfig_moderatedroom": "1"})
            await create(alice, other, "Alice")
            await join(bob, room, "Bob")
            texts = [f"burst {i}" for i in range(12)]
            burst = "".join(
                f"<message to='{room}' type='groupchat' id='b{i}'><body>{t}</body></message>"
                for i, t in enumerate(texts[:6])
            )
            # A message to another room in the middle ends one run and starts the next.
            burst += (
                f"<message to='{other}' type='groupchat' id='x'><body>elsewhere</body></message>"
            )
            burst += "".join(
                f"<message to='{room}' type='groupchat' id='b{i + 6}'><body>{t}</body></message>"
                for i, t in enumerate(texts[6:])
            )
            alice.send_raw(burst)
            for client in (alice, bob):
                got = [
                    await client.inbox.take(message_from(f"{room}/Alice", text=t)) for t in texts
                ]
                assert [m.get("id") for m in got] == [f"b{i}" for i in range(12)]
                ids = [stanza_id(m, room) for m in got]
                assert all(ids) and len(set(ids)) == 12
            await alice.inbox.take(message_from(f"{other}/Alice", text="elsewhere"))
            _fin, results = await mam_query(bob, room)
            archived = [body(r.find(FORWARDED)) for r in results]
            assert [a for a in archived if a and a.startswith("burst")] == texts
            # Bob is a visitor in this moderated room: every message of his burst is refused.
            bob.send_raw(
                "".join(
                    f"<message to='{room}' type='groupchat' id='v{i}'><body>no</body></message>"
                    for i in range(5)
                )
            )
            for i in range(5):
                error = await bob.inbox.take(
                    lambda e, i=i: e.get("id") == f"v{i}" and e.get("type") == "error"
                )
                assert error_of(error) == ("forbidden", "auth")

    run(scenario())


def test_operator_lists_shows_and_destroys_a_room(srv: XesServer) -> None:
    """``xes muc list|show|destroy`` against the running server: the destruction is a logged
    event like an owner's, and the occupants are told."""
    room = room_jid(srv, "operated")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/op", "bob/op") as (alice, bob):
            await create(alice, room, "Alice", {"muc#roomconfig_roomname": "Ward 7"})
            await join(bob, room, "Bob")
            listed = await asyncio.to_thread(srv.xes, "muc", "list")
            assert f"{room} (Ward 7): 2 occupants" in listed.stdout, listed.stdout
            shown = (await asyncio.to_thread(srv.xes, "muc", "show", room.split("@")[0])).stdout
            assert '"nick": "Bob"' in shown and f'"{bare_of(alice)}": "owner"' in shown, shown
            assert "password_hash" not in shown
            await asyncio.to_thread(srv.xes, "muc", "destroy", room, "--reason", "ward closed")
            for client, nick in ((alice, "Alice"), (bob, "Bob")):
                gone = await client.inbox.take(presence_from(f"{room}/{nick}", unavailable=True))
                found = gone.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy")
                assert found is not None
                assert found.findtext(f"{{{MUC_USER}}}reason") == "ward closed"
            missing = await asyncio.to_thread(srv.xes, "muc", "show", room, check=False)
            assert missing.returncode != 0 and "no such room" in missing.stderr
            bad = await asyncio.to_thread(srv.xes, "muc", "show", "x@elsewhere.test", check=False)
            assert bad.returncode != 0 and "not a group chat service of this server" in bad.stderr

    run(scenario())


def test_an_absent_user_is_told_of_its_new_affiliation(srv: XesServer) -> None:
    """XEP-0045 §9.3: a user made a member while not in the room gets status 101 from it."""
    room = room_jid(srv, "absent")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/abs", "bob/abs") as (alice, bob):
            await create(alice, room, "Alice", {"muc#roomconfig_membersonly": "1"})
            await alice.iq("set", room, admin_item(affiliation="member", jid=bare_of(bob)))
            notice = await bob.inbox.take(
                lambda e: e.tag == MESSAGE and e.get("from") == room and 101 in status_codes(e)
            )
            assert item(notice) == {"affiliation": "member", "jid": bare_of(bob)}
            await join(bob, room, "Bob")  # and may now enter the members-only room
            # Someone in the room is told by presence, not by a 101 message.
            await alice.iq("set", room, admin_item(affiliation="admin", jid=bare_of(bob)))
            await bob.inbox.take(presence_from(f"{room}/Bob"))
            assert not [e for e in bob.inbox.items if 101 in status_codes(e)]

    run(scenario())


def test_a_flooder_is_slowed_down_and_the_room_is_not(srv: XesServer) -> None:
    """``[muc] messages_per_second`` (20, burst 60 by default) holds back one sender's flood:
    another occupant's message goes through while the flood is still being read, and none of
    the flood is lost."""
    room = room_jid(srv, "flood")
    count = 160

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/fl", "bob/fl", "carol/fl") as (alice, bob, carol):
            await create(alice, room, "Alice")
            await join(bob, room, "Bob")
            await join(carol, room, "Carol")
            for i in range(count):
                send_message(bob, room, f"flood {i}", id_=f"f{i}")
            await alice.inbox.take(message_from(f"{room}/Bob", text="flood 0"))
            send_message(carol, room, "meanwhile", id_="calm")
            await alice.inbox.take(message_from(f"{room}/Carol", text="meanwhile"), timeout=10)
            # Carol got through before the flood was over: it is still coming in.
            assert not alice.inbox.matching(message_from(f"{room}/Bob", text=f"flood {count - 1}"))
            for i in range(1, count):  # flood 0 was taken above
                await alice.inbox.take(message_from(f"{room}/Bob", text=f"flood {i}"), timeout=20)

    run(scenario())


def test_a_new_moderator_sees_real_jids_and_the_reserved_nick_is_discoverable(
    srv: XesServer,
) -> None:
    """XEP-0045 §9.6: a moderator of a semi-anonymous room sees occupants' real JIDs, so one
    made moderator gets them; §7.12: disco#info node x-roomuser-item gives the reserved nick."""
    room = room_jid(srv, "promote")

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/pro", "bob/pro", "carol/pro") as (
            alice,
            bob,
            carol,
        ):
            await create(alice, room, "Alice")
            await join(bob, room, "Bob")
            c = await join(carol, room, "Carol")
            assert all("jid" not in item(p) for p in c.occupants)  # semi-anonymous
            await alice.iq("set", room, admin_item(nick="Carol", role="moderator"))
            mine = await carol.inbox.take(presence_from(f"{room}/Carol", unavailable=False))
            assert item(mine)["role"] == "moderator"
            for nick, user in (("Alice", alice), ("Bob", bob)):
                seen = await carol.inbox.take(presence_from(f"{room}/{nick}", unavailable=False))
                assert item(seen)["jid"] == jid_of(user)
            query = f"<query xmlns='{DISCO_INFO}' node='x-roomuser-item'/>"
            empty = await bob.iq("get", room, query)
            assert empty.find(f"{{{DISCO_INFO}}}query/{{{DISCO_INFO}}}identity") is None
            register = (
                "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>"
                "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value>"
                "</field><field var='muc#register_roomnick'><value>Bobby</value></field>"
                "</x></query>"
            )
            await bob.iq("set", room, register)
            found = await bob.iq("get", room, query)
            identity = found.find(f"{{{DISCO_INFO}}}query/{{{DISCO_INFO}}}identity")
            assert identity is not None and identity.get("name") == "Bobby"

    run(scenario())


def test_service_limits_from_the_configuration(tmp_path: Path) -> None:
    """``[muc] creators``, ``max_rooms_per_user``, ``max_subject_length`` and the join rate:
    each refusal with its condition, and joins faster than the rate slowed down, not refused."""
    node = XesServer(tmp_path / "node")
    node.extra = (
        "\n[muc]\n"
        f'creators = ["alice@{node.domain}"]\n'
        "max_rooms_per_user = 1\nmax_subject_length = 10\njoins_per_second = 5.0\njoin_burst = 1\n"
    )
    node.write_config()
    node.start()
    try:
        for user in ("alice", "bob"):
            node.add_user(user, PASSWORD)

        async def scenario() -> None:
            async with online(node, PASSWORD, "alice/lim", "bob/lim") as (alice, bob):
                room = room_jid(node, "only")
                # Bob may not create rooms at all (XEP-0045 §10.1.1: not-allowed).
                assert await refused(bob, room_jid(node, "bobs"), "Bob") == (
                    "not-allowed",
                    "cancel",
                )
                await create(alice, room, "Alice")
                # Alice owns one room already: the cap.
                assert await refused(alice, room_jid(node, "second"), "Alice") == (
                    "not-allowed",
                    "cancel",
                )
                send_message(alice, room, subject="far too long a subject", id_="subj")
                error = await alice.inbox.take(error_from(room))
                assert error.get("id") == "subj" and error_of(error)[0] == "not-acceptable"
                send_message(alice, room, subject="short", id_="subj2")
                await alice.inbox.take(lambda e: subject_of(e) == "short")
                # Five nickname changes at once with a burst of 1: all done, in order.
                for i in range(5):
                    bob.send_raw(
                        join_xml(room, f"b{i}") if i == 0 else f"<presence to='{room}/b{i}'/>"
                    )
                for i in range(5):
                    seen = await alice.inbox.take(
                        presence_from(f"{room}/b{i}", unavailable=False), timeout=20
                    )
                    assert item(seen)["role"] == "participant"

        run(scenario())
    finally:
        node.stop()


def test_voice_request_and_a_groupchat_1_0_join(srv: XesServer) -> None:
    """XEP-0045 §7.13: a visitor asks for voice, moderators get the form, approving it grants
    voice; a join without ``<x xmlns='...muc'/>`` (groupchat 1.0 clients) is a join too."""
    room = room_jid(srv, "askvoice")
    request = (
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
        "<value>http://jabber.org/protocol/muc#request</value></field>"
        "<field var='muc#role'><value>participant</value></field></x>"
    )

    async def scenario() -> None:
        async with online(srv, PASSWORD, "alice/ask", "bob/ask") as (alice, bob):
            await create(alice, room, "Alice", {"muc#roomconfig_moderatedroom": "1"})
            bob.send_raw(f"<presence to='{room}/Bob'/>")  # no <x/>: groupchat 1.0
            own = await bob.inbox.take(presence_from(f"{room}/Bob", unavailable=False))
            assert 110 in status_codes(own) and item(own)["role"] == "visitor"
            await alice.inbox.take(presence_from(f"{room}/Bob", unavailable=False))
            bob.send_raw(f"<message to='{room}'>{request}</message>")
            form = await alice.inbox.take(
                lambda e: (
                    e.tag == MESSAGE
                    and e.get("from") == room
                    and e.find(".//{jabber:x:data}x") is not None
                )
            )
            values = form_values(form)
            assert values["muc#roomnick"] == ["Bob"] and values["muc#jid"] == [jid_of(bob)]
            approve = (
                "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
                "<value>http://jabber.org/protocol/muc#request</value></field>"
                "<field var='muc#roomnick'><value>Bob</value></field>"
                "<field var='muc#request_allow'><value>true</value></field></x>"
            )
            alice.send_raw(f"<message to='{room}'>{approve}</message>")
            seen = await bob.inbox.take(presence_from(f"{room}/Bob", unavailable=False))
            assert item(seen)["role"] == "participant"
            await groupchat(bob, room, "thanks for the voice")
            await alice.inbox.take(message_from(f"{room}/Bob", text="thanks for the voice"))

    run(scenario())
