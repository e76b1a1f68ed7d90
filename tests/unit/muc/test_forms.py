"""The muc#roomconfig form: render, submit, parse back; bad values; the room password."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xes.muc import forms
from xes.muc.model import ALLOW_PM, WHOIS, RoomConfig
from xes.stanza.core import StanzaError
from xes.xml import E, Element, ns, parse_fragment, serialize

MAX_OCCUPANTS = 200
MAX_HISTORY = 50
X = "{%s}x" % ns.DATA_FORMS
FIELD = "{%s}field" % ns.DATA_FORMS
VALUE = "{%s}value" % ns.DATA_FORMS
OPTION = "{%s}option" % ns.DATA_FORMS


def submitted(form: Element) -> Element:
    """The form as a client sends it back: over the wire, as ``type='submit'``."""
    wire = parse_fragment(serialize(form))
    return wire.with_attrs(type="submit")


def submit(*fields: tuple[str, list[str]], form_type: str | None = forms.ROOMCONFIG) -> Element:
    children = []
    if form_type is not None:
        children.append(E(FIELD, {"var": "FORM_TYPE"}, E(VALUE, None, form_type)))
    for var, values in fields:
        children.append(E(FIELD, {"var": var}, *(E(VALUE, None, v) for v in values)))
    return E(X, {"type": "submit"}, *children)


def parse(form: Element, current: RoomConfig | None = None) -> forms.SubmittedConfig:
    return forms.parse_config_form(form, current or RoomConfig(), MAX_OCCUPANTS, MAX_HISTORY)


def fields_of(form: Element) -> dict[str, Element]:
    return {f.get("var") or "": f for f in form.find_all(FIELD)}


def values_of(field: Element) -> list[str]:
    return [v.text for v in field.find_all(VALUE)]


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Cn")), max_size=30)
CONFIGS = st.builds(
    RoomConfig,
    name=TEXT,
    description=TEXT,
    persistent=st.booleans(),
    public=st.booleans(),
    members_only=st.booleans(),
    moderated=st.booleans(),
    whois=st.sampled_from(WHOIS),
    max_users=st.integers(1, MAX_OCCUPANTS),
    history_length=st.integers(0, MAX_HISTORY),
    allow_pm=st.sampled_from(ALLOW_PM),
    allow_invites=st.booleans(),
    change_subject=st.booleans(),
    logging=st.booleans(),
)
BARES = st.lists(st.sampled_from(["a@x", "b@x", "c@y"]), unique=True).map(sorted)


# -- round trip --------------------------------------------------------------------------------


@given(config=CONFIGS, owners=BARES, admins=BARES)
def test_render_then_submit_gives_the_same_configuration(
    config: RoomConfig, owners: list[str], admins: list[str]
) -> None:
    form = forms.config_form(config, owners, admins, MAX_OCCUPANTS)
    got = parse(submitted(form), RoomConfig(persistent=not config.persistent, name="other"))
    assert got.config == config
    assert (got.owners, got.admins) == (owners, admins)


@settings(max_examples=25)
@given(config=CONFIGS)
def test_a_password_protected_room_round_trips_without_its_password(config: RoomConfig) -> None:
    config = replace(config, password_hash=forms.hash_password("cauldron"))
    form = forms.config_form(config, [], [], MAX_OCCUPANTS)
    fields = fields_of(form)
    assert values_of(fields["muc#roomconfig_passwordprotectedroom"]) == ["1"]
    assert values_of(fields["muc#roomconfig_roomsecret"]) == []
    wire = serialize(form).decode()
    assert "cauldron" not in wire and config.password_hash not in wire
    assert parse(submitted(form), config).config == config


def test_the_form_a_new_owner_gets() -> None:
    form = forms.config_form(RoomConfig(max_users=0), ["o@x"], [], MAX_OCCUPANTS)
    assert form.get("type") == "form"
    fields = fields_of(form)
    assert values_of(fields["FORM_TYPE"]) == [forms.ROOMCONFIG]
    assert fields["FORM_TYPE"].get("type") == "hidden"
    assert values_of(fields["muc#roomconfig_maxusers"]) == [str(MAX_OCCUPANTS)]
    options = [o.get("label") for o in fields["muc#roomconfig_maxusers"].find_all(OPTION)]
    assert options == ["10", "20", "30", "50", "100", "200"]
    assert values_of(fields["muc#roomconfig_roomowners"]) == ["o@x"]
    assert fields["muc#roomconfig_roomsecret"].get("type") == "text-private"
    assert values_of(fields["muc#roomconfig_whois"]) == ["moderators"]


def test_fields_left_out_keep_their_value_and_unknown_ones_are_ignored() -> None:
    current = RoomConfig(name="Den", moderated=True, history_length=7)
    got = parse(
        submit(("muc#roomconfig_persistentroom", ["true"]), ("x-custom#field", ["whatever"])),
        current,
    )
    assert got.config == replace(current, persistent=True)
    assert (got.owners, got.admins) == (None, None)


def test_an_empty_form_type_field_is_taken_as_roomconfig() -> None:
    got = parse(submit(("muc#roomconfig_publicroom", ["0"]), form_type=None))
    assert got.config.public is False


@pytest.mark.parametrize(
    ("raw", "max_users"),
    [
        ("", MAX_OCCUPANTS),
        ("none", MAX_OCCUPANTS),
        ("0", MAX_OCCUPANTS),
        ("30", 30),
        ("5000", MAX_OCCUPANTS),
    ],
)
def test_max_users_is_within_the_service_limit(raw: str, max_users: int) -> None:
    got = parse(submit(("muc#roomconfig_maxusers", [raw])))
    assert got.config.max_users == max_users


@pytest.mark.parametrize(
    ("var", "raw", "length"),
    [
        ("muc#maxhistoryfetch", "10", 10),
        ("muc#maxhistoryfetch", "999", MAX_HISTORY),
        ("muc#maxhistoryfetch", "-5", 0),
        ("muc#maxhistoryfetch", "", 0),
        ("muc#roomconfig_historylength", "3", 3),
    ],
)
def test_history_length_is_clamped(var: str, raw: str, length: int) -> None:
    assert parse(submit((var, [raw]))).config.history_length == length


def test_owner_and_admin_lists_are_bare_sorted_and_unique() -> None:
    got = parse(
        submit(
            ("muc#roomconfig_roomowners", ["b@x/phone", "A@X", " ", "b@x"]),
            ("muc#roomconfig_roomadmins", []),
        )
    )
    assert got.owners == ["a@x", "b@x"] and got.admins == []


def test_name_is_cut_at_1024_characters() -> None:
    got = parse(submit(("muc#roomconfig_roomname", ["n" * 2000])))
    assert got.config.name == "n" * 1024


# -- bad values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "condition"),
    [
        ([("muc#roomconfig_persistentroom", ["maybe"])], "bad-request"),
        ([("muc#roomconfig_moderatedroom", ["yes"])], "bad-request"),
        ([("muc#roomconfig_whois", ["everyone"])], "bad-request"),
        ([("muc#roomconfig_whois", [])], "bad-request"),
        ([("muc#roomconfig_allowpm", ["friends"])], "bad-request"),
        ([("muc#roomconfig_maxusers", ["lots"])], "bad-request"),
        ([("muc#roomconfig_maxusers", ["-1"])], "bad-request"),
        ([("muc#maxhistoryfetch", ["ten"])], "bad-request"),
        ([("muc#roomconfig_roomowners", ["@x"])], "jid-malformed"),
        ([("muc#roomconfig_roomadmins", ["a@b@c"])], "jid-malformed"),
        ([("muc#roomconfig_passwordprotectedroom", ["1"])], "not-acceptable"),
        (
            [
                ("muc#roomconfig_passwordprotectedroom", ["1"]),
                ("muc#roomconfig_roomsecret", ["  "]),
            ],
            "not-acceptable",
        ),
    ],
    ids=[
        "boolean",
        "boolean-yes",
        "whois",
        "whois-empty",
        "allowpm",
        "maxusers-text",
        "maxusers-negative",
        "history-text",
        "owner-jid",
        "admin-jid",
        "protected-without-password",
        "protected-with-blank-password",
    ],
)
def test_bad_values_are_stanza_errors(fields: list[tuple[str, list[str]]], condition: str) -> None:
    with pytest.raises(StanzaError) as caught:
        parse(submit(*fields))
    assert caught.value.condition == condition


def test_only_a_submitted_roomconfig_form_is_read() -> None:
    form = submit(("muc#roomconfig_publicroom", ["0"]))
    with pytest.raises(StanzaError) as caught:
        parse(form.with_attrs(type="form"))
    assert caught.value.condition == "bad-request"
    with pytest.raises(StanzaError) as caught:
        parse(submit(form_type="http://jabber.org/protocol/muc#register"))
    assert caught.value.condition == "bad-request"


# -- the room password -------------------------------------------------------------------------


def test_password_hash_and_check() -> None:
    stored = forms.hash_password("cauldron")
    assert "cauldron" not in stored
    assert forms.check_password(stored, "cauldron")
    assert not forms.check_password(stored, "Cauldron")
    assert not forms.check_password(stored, "")
    assert forms.hash_password("cauldron") != stored  # salted
    salt, _, digest = stored.partition("$")
    assert len(salt) == 16 and len(digest) == 64


@settings(max_examples=25)
@given(TEXT, TEXT)
def test_only_the_same_password_checks(password: str, other: str) -> None:
    """Passwords come from XML text, so no NUL: HMAC pads a key with NULs, which would make
    ``""`` and ``"\\x00"`` the same password."""
    stored = forms.hash_password(password)
    assert forms.check_password(stored, password)
    assert forms.check_password(stored, other) is (other == password)


def test_empty_secret_keeps_the_password_and_a_new_one_replaces_it() -> None:
    current = RoomConfig(password_hash=forms.hash_password("old"))
    kept = parse(
        submit(("muc#roomconfig_passwordprotectedroom", ["1"]), ("muc#roomconfig_roomsecret", [])),
        current,
    )
    assert kept.config.password_hash == current.password_hash
    kept = parse(submit(("muc#roomconfig_roomname", ["renamed"])), current)
    assert kept.config.password_hash == current.password_hash
    new = parse(submit(("muc#roomconfig_roomsecret", ["new"])), current)
    assert forms.check_password(new.config.password_hash, "new")
    assert not forms.check_password(new.config.password_hash, "old")
    first = parse(
        submit(
            ("muc#roomconfig_passwordprotectedroom", ["1"]),
            ("muc#roomconfig_roomsecret", ["fresh"]),
        )
    )
    assert forms.check_password(first.config.password_hash, "fresh")


def test_unprotecting_a_room_drops_its_password() -> None:
    current = RoomConfig(password_hash=forms.hash_password("old"))
    got = parse(
        submit(
            ("muc#roomconfig_passwordprotectedroom", ["0"]),
            ("muc#roomconfig_roomsecret", ["ignored"]),
        ),
        current,
    )
    assert got.config.password_hash == ""


# -- disco -------------------------------------------------------------------------------------


def test_room_features_and_info() -> None:
    config = RoomConfig(
        persistent=True, members_only=True, password_hash="s$h", whois="anyone", public=False
    )
    assert forms.room_features(config, locked=True) == [
        "muc_persistent",
        "muc_hidden",
        "muc_membersonly",
        "muc_unmoderated",
        "muc_passwordprotected",
        "muc_nonanonymous",
        "muc_unconfigured",
    ]
    assert forms.room_features(RoomConfig(), locked=False) == [
        "muc_temporary",
        "muc_public",
        "muc_open",
        "muc_unmoderated",
        "muc_unsecured",
        "muc_semianonymous",
    ]
    info = fields_of(forms.room_info(RoomConfig(name="Den", logging=False), 3, "Topic"))
    assert values_of(info["FORM_TYPE"]) == [forms.ROOMINFO]
    assert values_of(info["muc#roominfo_occupants"]) == ["3"]
    assert values_of(info["muc#roominfo_subject"]) == ["Topic"]
    assert values_of(info["muc#roomconfig_roomname"]) == ["Den"]
    assert values_of(info["muc#roominfo_logs"]) == ["0"]
