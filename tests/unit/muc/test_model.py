"""The room model: storage round trip and the permission rules of XEP-0045 §5, §7, §8, §9."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xes.events import canonical_json
from xes.muc import model
from xes.muc.model import Occupant, OccupantSession, Room, RoomConfig
from xes.muc.nick import key

ROOM = "room@muc.x"


def occupant(nick: str, bare: str, role: str, *sessions: str) -> Occupant:
    sessions = sessions or (f"s-{nick}",)
    occ = Occupant(nick, bare, role)
    for i, sid in enumerate(sessions):
        occ.sessions[sid] = OccupantSession(sid, f"{bare}/{i}", "")
    occ.primary = sessions[0]
    return occ


def room(*occupants: Occupant, affiliations: dict[str, str] | None = None, **config: Any) -> Room:
    r = Room(ROOM, RoomConfig(**config), "secret")
    r.affiliations = {"o@x": "owner"} if affiliations is None else dict(affiliations)
    for occ in occupants:
        r.occupants[key(occ.nick)] = occ
    return r


# -- storage -----------------------------------------------------------------------------------


def test_room_round_trips_through_canonical_json() -> None:
    r = room(
        occupant("Alice", "a@x", "moderator", "s1", "s2"),
        occupant("Bob", "b@x", "visitor"),
        affiliations={"a@x": "owner", "b@x": "member", "z@x": "outcast"},
        moderated=True,
        name="Den",
    )
    r.reserved = {"b@x": "Bob"}
    r.subject, r.subject_by, r.locked, r.created_seq = "Hi", "Alice", True, 7
    again = Room.from_json(json.loads(canonical_json(r.to_json())))
    assert again == r
    assert again.occupants["alice"].shown.jid == "a@x/0"


def test_older_rows_and_unknown_config_keys_still_load() -> None:
    obj = room().to_json()
    del obj["created_seq"]
    obj["config"]["retired_option"] = True
    loaded = Room.from_json(obj)
    assert loaded.created_seq == 0 and loaded.config == RoomConfig()


def test_derived_views() -> None:
    alice = occupant("Alice", "a@x", "moderator")
    bob = occupant("Bob", "b@x", "participant", "sb1", "sb2")
    r = room(alice, bob, affiliations={"a@x": "owner", "c@x": "owner", "b@x": "member"})
    assert r.affiliation("b@x") == "member" and r.affiliation("nobody@x") == "none"
    assert r.by_session("sb2") is bob and r.by_session("nope") is None
    assert r.of_user("a@x") is alice and r.of_user("c@x") is None
    assert r.moderators() == [alice]
    assert r.owners() == ["a@x", "c@x"]
    assert not r.non_anonymous and room(whois="anyone").non_anonymous


# -- default roles (§5.1.2) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("affiliation", "moderated", "role"),
    [
        ("owner", False, "moderator"),
        ("admin", True, "moderator"),
        ("member", True, "participant"),
        ("none", False, "participant"),
        ("none", True, "visitor"),
        ("outcast", False, "none"),
    ],
)
def test_default_role(affiliation: str, moderated: bool, role: str) -> None:
    assert model.default_role(RoomConfig(moderated=moderated), affiliation) == role


# -- entering (§7.2) ---------------------------------------------------------------------------

ALICE = occupant("Alice", "a@x", "participant")


@pytest.mark.parametrize(
    ("setup", "bare", "nick", "error"),
    [
        ({"locked": True}, "n@x", "New", "item-not-found"),
        ({"locked": True}, "o@x", "Owner", None),
        (
            {"locked": True, "affiliations": {"o@x": "owner", "n@x": "outcast"}},
            "n@x",
            "N",
            "item-not-found",
        ),
        ({"affiliations": {"o@x": "owner", "n@x": "outcast"}}, "n@x", "New", "forbidden"),
        ({"members_only": True}, "n@x", "New", "registration-required"),
        (
            {"members_only": True, "affiliations": {"o@x": "owner", "n@x": "member"}},
            "n@x",
            "N",
            None,
        ),
        ({"members_only": True}, "o@x", "Owner", None),
        ({}, "n@x", "Alice", "conflict"),
        ({}, "n@x", "ALICE", "conflict"),
        ({}, "a@x", "alice", None),  # the same user: another session shares the nick
        ({"reserved": {"r@x": "Reserved"}}, "n@x", "reserved", "conflict"),
        ({"reserved": {"n@x": "Mine"}}, "n@x", "Mine", None),
        ({"max_users": 1}, "n@x", "New", "service-unavailable"),
        ({"max_users": 1, "affiliations": {"o@x": "owner", "n@x": "admin"}}, "n@x", "N", None),
        ({"max_users": 1}, "o@x", "Owner", None),
        ({"max_users": 1}, "a@x", "Alice", None),  # already in: not one more occupant
        ({"max_users": 2}, "n@x", "New", None),
        ({"max_users": 0}, "n@x", "New", None),
        ({}, "n@x", "New", None),
    ],
    ids=[
        "locked",
        "locked-owner",
        "locked-before-banned",
        "banned",
        "members-only",
        "members-only-member",
        "members-only-owner",
        "nick-taken",
        "nick-taken-other-case",
        "nick-of-same-user",
        "nick-reserved",
        "own-reserved-nick",
        "full",
        "full-admin",
        "full-owner",
        "full-but-already-in",
        "not-full",
        "no-limit",
        "open",
    ],
)
def test_join_error(setup: dict[str, Any], bare: str, nick: str, error: str | None) -> None:
    setup = dict(setup)
    r = room(ALICE, affiliations=setup.pop("affiliations", None))
    r.locked = setup.pop("locked", False)
    r.reserved = setup.pop("reserved", {})
    r.config = RoomConfig(**setup)
    assert model.join_error(r, bare, key(nick)) == error


# -- speaking, subject, private messages, invitations ------------------------------------------


@pytest.mark.parametrize(
    ("role", "speaks"), [("moderator", True), ("participant", True), ("visitor", False)]
)
def test_only_voice_speaks(role: str, speaks: bool) -> None:
    occ = occupant("X", "x@x", role)
    assert model.may_speak(room(occ, moderated=True), occ) is speaks


@pytest.mark.parametrize(
    ("role", "change_subject", "allowed"),
    [
        ("moderator", False, True),
        ("participant", False, False),
        ("participant", True, True),
        ("visitor", True, False),
    ],
)
def test_subject_rights(role: str, change_subject: bool, allowed: bool) -> None:
    occ = occupant("X", "x@x", role)
    assert model.may_change_subject(room(occ, change_subject=change_subject), occ) is allowed


@pytest.mark.parametrize(
    ("allow_pm", "role", "allowed"),
    [
        ("anyone", "visitor", True),
        ("participants", "visitor", False),
        ("participants", "participant", True),
        ("participants", "moderator", True),
        ("moderators", "participant", False),
        ("moderators", "moderator", True),
        ("none", "moderator", False),
    ],
)
def test_private_message_rights(allow_pm: str, role: str, allowed: bool) -> None:
    occ = occupant("X", "x@x", role)
    assert model.may_send_private(room(occ, allow_pm=allow_pm), occ) is allowed


def test_invitation_rights() -> None:
    member = occupant("M", "m@x", "participant")
    closed = room(member, affiliations={"o@x": "owner", "ad@x": "admin", "m@x": "member"})
    assert model.may_invite(closed, "o@x", None) and model.may_invite(closed, "ad@x", None)
    assert not model.may_invite(closed, "m@x", member)
    opened = room(member, allow_invites=True)
    assert model.may_invite(opened, "m@x", member)
    assert not model.may_invite(opened, "m@x", None)  # not in the room


# -- roles (§5.1.3, §8.2, §8.4, §8.5, §9.6, §9.7) -----------------------------------------------

ROLE_AFFILIATIONS = {
    "o@x": "owner",
    "o2@x": "owner",
    "ad@x": "admin",
    "ad2@x": "admin",
    "m@x": "member",
    "m2@x": "member",
    "mm@x": "member",
}
ROLE_OCCUPANTS = {
    "Owner": occupant("Owner", "o@x", "moderator"),
    "Owner2": occupant("Owner2", "o2@x", "moderator"),
    "Admin": occupant("Admin", "ad@x", "moderator"),
    "Admin2": occupant("Admin2", "ad2@x", "moderator"),
    "Member": occupant("Member", "m@x", "participant"),
    "Member2": occupant("Member2", "m2@x", "participant"),
    "ModMember": occupant("ModMember", "mm@x", "moderator"),  # a member given moderator
    "ModNone": occupant("ModNone", "mn@x", "moderator"),  # an unaffiliated moderator
    "None": occupant("None", "n@x", "participant"),
    "Visitor": occupant("Visitor", "v@x", "visitor"),
}


@pytest.mark.parametrize(
    ("actor", "target", "role", "error"),
    [
        # kick (§8.2)
        ("Owner", "None", "none", None),
        ("Admin", "Member", "none", None),
        ("ModNone", "Visitor", "none", None),
        ("ModMember", "Member2", "none", None),
        ("Member", "None", "none", "forbidden"),
        ("Visitor", "None", "none", "forbidden"),
        ("ModMember", "Admin", "none", "not-allowed"),
        ("Admin", "Owner", "none", "not-allowed"),
        ("ModMember", "ModNone", "none", "not-allowed"),  # only admins act on moderators
        ("ModNone", "Member", "none", "not-allowed"),  # "a moderator with a lower affiliation"
        # voice (§8.3, §8.4)
        ("ModNone", "Visitor", "participant", None),
        ("Member", "Visitor", "participant", "forbidden"),
        ("Admin", "None", "visitor", None),
        ("ModMember", "None", "visitor", None),
        ("Owner", "Admin", "visitor", "not-allowed"),  # nobody mutes an admin or owner
        ("Owner2", "Owner", "visitor", "not-allowed"),
        ("ModNone", "Member", "visitor", "not-allowed"),  # above the moderator
        ("ModMember", "Member2", "visitor", "not-allowed"),  # "at or above" the moderator
        # moderator (§9.6, §9.7)
        ("Admin", "Member", "moderator", None),
        ("Owner", "None", "moderator", None),
        ("ModMember", "Member", "moderator", "forbidden"),
        ("Member", "Member2", "moderator", "forbidden"),
        ("Admin", "ModMember", "participant", None),
        ("ModMember", "ModNone", "participant", "not-allowed"),
        ("Owner", "Admin2", "participant", "not-allowed"),  # never revoked from an admin
        # the actor must be an occupant; the role must exist
        (None, "None", "none", "not-acceptable"),
        ("Owner", "None", "chief", "bad-request"),
    ],
)
def test_role_change_error(actor: str | None, target: str, role: str, error: str | None) -> None:
    r = room(*ROLE_OCCUPANTS.values(), affiliations=ROLE_AFFILIATIONS)
    who = None if actor is None else ROLE_OCCUPANTS[actor]
    assert model.role_change_error(r, who, ROLE_OCCUPANTS[target], role) == error


# -- affiliations (§5.2.2, §9, §10) ------------------------------------------------------------

AFFILIATIONS = {
    "o@x": "owner",
    "o2@x": "owner",
    "ad@x": "admin",
    "ad2@x": "admin",
    "m@x": "member",
    "x@x": "outcast",
}


@pytest.mark.parametrize(
    ("actor", "target", "affiliation", "error"),
    [
        ("m@x", "n@x", "member", "forbidden"),
        ("n@x", "n@x", "member", "forbidden"),
        ("x@x", "n@x", "outcast", "forbidden"),
        ("ad@x", "n@x", "member", None),
        ("ad@x", "m@x", "outcast", None),
        ("ad@x", "x@x", "none", None),
        ("ad@x", "n@x", "admin", "not-allowed"),
        ("ad@x", "m@x", "owner", "not-allowed"),
        ("ad@x", "ad2@x", "none", "not-allowed"),
        ("ad@x", "o@x", "outcast", "not-allowed"),  # §9.1: nobody bans a higher affiliation
        ("o@x", "m@x", "admin", None),
        ("o@x", "n@x", "owner", None),
        ("o@x", "ad@x", "none", None),
        ("o@x", "o2@x", "admin", None),
        ("o@x", "o@x", "member", None),  # another owner remains
        ("o@x", "o@x", "outcast", "conflict"),  # §9.1: an owner may not ban himself
        ("operator", "o2@x", "none", None),
        ("operator", "n@x", "owner", None),
    ],
)
def test_affiliation_change_error(
    actor: str, target: str, affiliation: str, error: str | None
) -> None:
    r = room(affiliations=AFFILIATIONS)
    assert model.affiliation_change_error(r, actor, target, affiliation) == error


@pytest.mark.parametrize(
    ("actor", "affiliation", "error"),
    [
        ("o@x", "admin", "conflict"),
        ("o@x", "none", "conflict"),
        ("operator", "member", "conflict"),
        ("operator", "outcast", "conflict"),
        ("o@x", "owner", None),
        ("operator", "owner", None),
    ],
)
def test_the_last_owner_stays(actor: str, affiliation: str, error: str | None) -> None:
    """§10.6: a room keeps at least one owner, whoever asks."""
    r = room(affiliations={"o@x": "owner", "ad@x": "admin"})
    assert model.affiliation_change_error(r, actor, "o@x", affiliation) == error


# -- occupant ids (XEP-0421) -------------------------------------------------------------------


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_occupant_id_is_stable_per_room_and_user(secret: str, bare: str) -> None:
    oid = model.occupant_id(secret, bare)
    assert oid == model.occupant_id(secret, bare)
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", oid)
    assert oid != model.occupant_id(secret + "x", bare)
    assert oid != model.occupant_id(secret, bare + "x")
