"""PEP node configuration: submitted forms, publish-options preconditions, items kept."""

from __future__ import annotations

from dataclasses import replace

import pytest

from xes.pubsub import config
from xes.pubsub.config import NodeConfig, apply_form, check_preconditions, submitted
from xes.stanza.core import StanzaError
from xes.xml import E, Element, ns, parse_fragment, serialize

CAP = 50
X = "{%s}x" % ns.DATA_FORMS
FIELD = "{%s}field" % ns.DATA_FORMS
VALUE = "{%s}value" % ns.DATA_FORMS
PRECONDITION_NOT_MET = "{%s}precondition-not-met" % ns.PUBSUB_ERRORS


def form(
    *fields: tuple[str, list[str]],
    form_type: str | None = ns.PUBSUB_NODE_CONFIG,
    type_: str | None = "submit",
) -> Element:
    children = []
    if form_type is not None:
        children.append(E(FIELD, {"var": "FORM_TYPE", "type": "hidden"}, E(VALUE, None, form_type)))
    for var, values in fields:
        children.append(E(FIELD, {"var": var}, *(E(VALUE, None, v) for v in values)))
    return E(X, {"type": type_}, *children)


def options(*fields: tuple[str, list[str]]) -> Element:
    return form(*fields, form_type=ns.PUBSUB_PUBLISH_OPTIONS)


def apply(*fields: tuple[str, list[str]], current: NodeConfig | None = None) -> NodeConfig:
    return apply_form(form(*fields), current or NodeConfig(), CAP)


# -- apply_form ----------------------------------------------------------------------------------


def test_pep_defaults() -> None:
    cfg = NodeConfig()
    assert cfg.access_model == "presence"  # XEP-0163 §7
    assert cfg.max_items == 1
    assert cfg.persist_items and cfg.send_last_published_item == "on_sub_and_presence"
    assert cfg.publish_model == "publishers"


def test_empty_form_keeps_the_current_configuration() -> None:
    current = NodeConfig(access_model="open", max_items=7, title="t")
    assert apply(current=current) == current


@pytest.mark.parametrize(
    ("var", "values", "expected"),
    [
        ("pubsub#access_model", ["open"], {"access_model": "open"}),
        ("pubsub#access_model", ["whitelist"], {"access_model": "whitelist"}),
        ("pubsub#access_model", ["roster"], {"access_model": "roster"}),
        ("pubsub#publish_model", ["publishers"], {"publish_model": "publishers"}),
        ("pubsub#send_last_published_item", ["never"], {"send_last_published_item": "never"}),
        ("pubsub#send_last_published_item", ["on_sub"], {"send_last_published_item": "on_sub"}),
        ("pubsub#max_items", ["10"], {"max_items": 10}),
        ("pubsub#max_items", [" 3 "], {"max_items": 3}),
        ("pubsub#max_items", [str(CAP)], {"max_items": CAP}),
        ("pubsub#max_items", ["max"], {"max_items": CAP}),
        ("pubsub#persist_items", ["0"], {"persist_items": False}),
        ("pubsub#persist_items", ["false"], {"persist_items": False}),
        ("pubsub#notify_retract", ["false"], {"notify_retract": False}),
        ("pubsub#notify_delete", ["0"], {"notify_delete": False}),
        ("pubsub#deliver_notifications", ["0"], {"deliver_notifications": False}),
        ("pubsub#deliver_payloads", ["FALSE"], {"deliver_payloads": False}),
        ("pubsub#title", ["My node"], {"title": "My node"}),
        ("pubsub#title", [], {"title": ""}),
        ("pubsub#type", ["urn:example"], {"type": "urn:example"}),
        (
            "pubsub#roster_groups_allowed",
            ["b", "a", "b", ""],
            {"roster_groups_allowed": ["a", "b"]},
        ),
    ],
)
def test_each_field_sets_its_option(
    var: str, values: list[str], expected: dict[str, object]
) -> None:
    assert apply((var, values)) == replace(NodeConfig(), **expected)


def test_booleans_turn_back_on() -> None:
    off = NodeConfig(persist_items=False, notify_retract=False, deliver_payloads=False)
    cfg = apply(
        ("pubsub#persist_items", ["1"]),
        ("pubsub#notify_retract", ["true"]),
        ("pubsub#deliver_payloads", ["1"]),
        current=off,
    )
    assert cfg.persist_items and cfg.notify_retract and cfg.deliver_payloads


def test_several_fields_at_once_and_others_kept() -> None:
    current = NodeConfig(title="kept", notify_delete=False)
    cfg = apply(
        ("pubsub#access_model", ["open"]),
        ("pubsub#max_items", ["max"]),
        ("pubsub#persist_items", ["0"]),
        current=current,
    )
    assert cfg == replace(current, access_model="open", max_items=CAP, persist_items=False)


def test_unknown_fields_and_form_type_are_ignored() -> None:
    cfg = apply(
        ("pubsub#unknown_option", ["whatever"]),
        ("x-custom", ["1"]),
        ("pubsub#collection", ["parent"]),
        ("pubsub#max_items", ["2"]),
    )
    assert cfg == NodeConfig(max_items=2)


def test_a_field_without_var_is_ignored() -> None:
    f = form(("pubsub#max_items", ["4"])).append(E(FIELD, None, E(VALUE, None, "junk")))
    assert apply_form(f, NodeConfig(), CAP) == NodeConfig(max_items=4)


@pytest.mark.parametrize(
    ("var", "values"),
    [
        ("pubsub#max_items", ["0"]),
        ("pubsub#max_items", ["-1"]),
        ("pubsub#max_items", [str(CAP + 1)]),
        ("pubsub#max_items", ["ten"]),
        ("pubsub#max_items", ["MAX"]),
        ("pubsub#max_items", [""]),
        ("pubsub#max_items", []),
        ("pubsub#max_items", ["1.5"]),
        ("pubsub#access_model", ["authorize"]),
        ("pubsub#access_model", [""]),
        ("pubsub#access_model", []),
        ("pubsub#publish_model", ["open"]),
        ("pubsub#publish_model", ["subscribers"]),
        ("pubsub#send_last_published_item", ["always"]),
        ("pubsub#persist_items", ["yes"]),
        ("pubsub#persist_items", []),
        ("pubsub#notify_retract", ["2"]),
        ("pubsub#notify_delete", ["on"]),
        ("pubsub#deliver_notifications", [""]),
        ("pubsub#deliver_payloads", ["no"]),
    ],
)
def test_bad_values_are_not_acceptable(var: str, values: list[str]) -> None:
    with pytest.raises(StanzaError) as info:
        apply((var, values))
    assert info.value.condition == "not-acceptable"
    assert info.value.type == "modify"  # RFC 6120 §8.3.3.12, XEP-0060 §8.2.5
    assert info.value.text


def test_a_bad_value_fails_the_whole_form() -> None:
    current = NodeConfig()
    with pytest.raises(StanzaError):
        apply(("pubsub#access_model", ["open"]), ("pubsub#max_items", ["0"]), current=current)
    assert current == NodeConfig()  # frozen: nothing was half-applied


def test_the_owner_form_round_trips() -> None:
    """The configuration form, returned as submitted, gives back the same configuration."""
    cfg = NodeConfig(
        access_model="roster",
        max_items=9,
        persist_items=False,
        send_last_published_item="on_sub",
        notify_retract=False,
        title="Mood",
        type="urn:x",
        roster_groups_allowed=["Family", "Friends"],
    )
    shown = config.config_form("n", cfg, CAP)
    assert config.submitted(E("c", None, shown.with_attrs(type="submit"))) is not None
    wire = parse_fragment(serialize(shown)).with_attrs(type="submit")
    assert apply_form(wire, NodeConfig(), CAP) == cfg


def test_config_json_round_trip_ignores_unknown_keys() -> None:
    cfg = NodeConfig(access_model="open", max_items=5, roster_groups_allowed=["g"])
    assert NodeConfig.from_json(cfg.to_json()) == cfg
    assert NodeConfig.from_json({**cfg.to_json(), "future_option": 1}) == cfg
    assert NodeConfig.from_json({}) == NodeConfig()


# -- check_preconditions (XEP-0223) --------------------------------------------------------------


def test_matching_preconditions_pass() -> None:
    cfg = NodeConfig(access_model="whitelist", max_items=CAP, persist_items=True)
    check_preconditions(
        options(
            ("pubsub#access_model", ["whitelist"]),
            ("pubsub#max_items", ["max"]),
            ("pubsub#persist_items", ["true"]),
        ),
        cfg,
        CAP,
    )
    check_preconditions(options(), cfg, CAP)  # no options: nothing to hold
    check_preconditions(options(("pubsub#unknown", ["x"])), cfg, CAP)  # unknown: ignored


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        (NodeConfig(), ("pubsub#access_model", ["whitelist"])),
        (NodeConfig(max_items=3), ("pubsub#max_items", ["4"])),
        (NodeConfig(max_items=3), ("pubsub#max_items", ["max"])),
        (NodeConfig(), ("pubsub#persist_items", ["0"])),
        (NodeConfig(), ("pubsub#send_last_published_item", ["never"])),
        (NodeConfig(title="a"), ("pubsub#title", ["b"])),
    ],
)
def test_a_mismatch_is_precondition_not_met(cfg: NodeConfig, field: tuple[str, list[str]]) -> None:
    with pytest.raises(StanzaError) as info:
        check_preconditions(options(("pubsub#deliver_payloads", ["1"]), field), cfg, CAP)
    err = info.value
    assert err.condition == "conflict"
    assert err.type == "cancel"
    assert err.app is not None and err.app.tag == PRECONDITION_NOT_MET
    assert err.app.ns == ns.PUBSUB_ERRORS
    assert field[0] in (err.text or "")


def test_precondition_not_met_helper() -> None:
    err = config.precondition_not_met("why")
    assert (err.condition, err.text) == ("conflict", "why")
    assert err.app == E(PRECONDITION_NOT_MET)


def test_a_bad_precondition_value_is_not_acceptable() -> None:
    with pytest.raises(StanzaError) as info:
        check_preconditions(options(("pubsub#max_items", ["zero"])), NodeConfig(), CAP)
    assert info.value.condition == "not-acceptable"


# -- submitted -----------------------------------------------------------------------------------


def container(*children: Element) -> Element:
    return E("{%s}publish-options" % ns.PUBSUB, None, *children)


def test_submitted_finds_the_form() -> None:
    for f in (
        form(("pubsub#max_items", ["2"])),
        options(("pubsub#max_items", ["2"])),
        form(form_type=None),  # no FORM_TYPE: accepted
        form(type_=None),  # no type: taken as submit
    ):
        assert submitted(container(f)) == f


def test_submitted_without_a_form_is_none() -> None:
    assert submitted(container()) is None
    assert submitted(container(E("{urn:other}x"))) is None


@pytest.mark.parametrize("type_", ["form", "result", "SUBMIT", ""])
def test_a_form_not_of_type_submit_is_bad_request(type_: str) -> None:
    with pytest.raises(StanzaError) as info:
        submitted(container(form(type_=type_)))
    assert info.value.condition == "bad-request"


@pytest.mark.parametrize(
    "form_type", ["http://jabber.org/protocol/muc#roomconfig", ns.PUBSUB_META_DATA, ""]
)
def test_a_form_of_another_form_type_is_bad_request(form_type: str) -> None:
    with pytest.raises(StanzaError) as info:
        submitted(container(form(form_type=form_type)))
    assert info.value.condition == "bad-request"


# -- kept ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_items", "persist", "kept"), [(1, True, 1), (10, True, 10), (10, False, 1), (1, False, 1)]
)
def test_kept(max_items: int, persist: bool, kept: int) -> None:
    assert NodeConfig(max_items=max_items, persist_items=persist).kept == kept


def test_parse_jids_gives_sorted_bare_jids() -> None:
    assert config.parse_jids(["b@x/r", " a@x ", "b@x"]) == ["a@x", "b@x"]
    with pytest.raises(StanzaError) as info:
        config.parse_jids(["@bad"])
    assert info.value.condition == "jid-malformed"


def test_a_cancelled_configuration_is_accepted_for_the_owner_to_ignore() -> None:
    """XEP-0060 §8.2.5: the owner may cancel the configuration form."""
    container = parse_fragment(
        b"<configure xmlns='http://jabber.org/protocol/pubsub#owner' node='n'>"
        b"<x xmlns='jabber:x:data' type='cancel'/></configure>"
    )
    form = config.submitted(container)
    assert form is not None and form.get("type") == "cancel"
