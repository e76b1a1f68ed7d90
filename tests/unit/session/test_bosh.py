"""The BOSH rules without HTTP (XEP-0124/0206): body parsing, creation terms, the rid window
with its retransmission cache and ack, the polling rule, and the ``<body/>`` responses."""

from __future__ import annotations

import pytest
from defusedxml import ElementTree

from xes.session import bosh
from xes.session.bosh import (
    NS_HTTPBIND,
    Accepted,
    BodyRequest,
    BoshError,
    BoshOutbound,
    InFlight,
    Replay,
    RidWindow,
    SessionLimits,
)

LIMITS = SessionLimits(max_wait=60, max_hold=1, inactivity=60, polling=5)
HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' from='example.org' id='s1' version='1.0'>"
)


def body(attrs: str = "", payload: str = "") -> bytes:
    return f"<body xmlns='{NS_HTTPBIND}' rid='10'{attrs}>{payload}</body>".encode()


def req(rid: int, payload: bytes = b"", **attrs: str) -> BodyRequest:
    return BodyRequest(rid=rid, sid="s", attrs=attrs, payload=payload)


# -- parsing -------------------------------------------------------------------------------


def test_payload_is_cut_out_byte_for_byte() -> None:
    payload = (
        "<message to='a@b' title='x&gt;y'><body>1 &lt; 2</body></message><r xmlns='urn:xmpp:sm:3'/>"
    )
    parsed = bosh.parse_body(b"<?xml version='1.0'?>" + body(" sid='abc'", payload))
    assert parsed.rid == 10 and parsed.sid == "abc"
    assert parsed.payload == payload.encode()
    assert not parsed.empty and not parsed.terminate and not parsed.restart


def test_empty_and_prefixed_bodies() -> None:
    assert bosh.parse_body(f"<body xmlns='{NS_HTTPBIND}' rid='1'/>".encode()).payload == b""
    prefixed = f"<b:body xmlns:b='{NS_HTTPBIND}' rid='1'><iq/></b:body>".encode()
    assert bosh.parse_body(prefixed).payload == b"<iq/>"
    restart = bosh.parse_body(body(" xmlns:xmpp='urn:xmpp:xbosh' xmpp:restart='true'"))
    assert restart.restart and not restart.empty
    assert bosh.parse_body(body(" type='terminate'")).terminate


@pytest.mark.parametrize(
    "data",
    [
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>",  # not well-formed
        b"<body xmlns='urn:other' rid='1'/>",  # wrong namespace
        b"<body rid='1'/>",  # no namespace
        b"<body xmlns='http://jabber.org/protocol/httpbind'/>",  # no rid
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='-3'/>",
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='9007199254740992'/>",  # 2^53
        b"<!DOCTYPE b [<!ENTITY x 'y'>]><body xmlns='http://jabber.org/protocol/httpbind'"
        b" rid='1'>&x;</body>",
        b"",
    ],
)
def test_bad_bodies_are_bad_request(data: bytes) -> None:
    with pytest.raises(BoshError) as err:
        bosh.parse_body(data)
    assert err.value.condition == "bad-request"


# -- session creation ----------------------------------------------------------------------


def test_negotiate_caps_wait_and_hold_and_lowers_the_version() -> None:
    request = bosh.parse_body(
        body(" to='example.org' wait='300' hold='3' ver='1.6' ack='1' xml:lang='de'")
    )
    terms = bosh.negotiate(request, LIMITS, "example.org")
    assert (terms.wait, terms.hold, terms.requests) == (60, 1, 2)
    assert terms.ver == "1.6" and terms.ack and terms.lang == "de"
    assert (
        bosh.negotiate(
            bosh.parse_body(body(" to='example.org' wait='5' ver='2.0'")), LIMITS, "example.org"
        ).ver
        == "1.11"
    )
    polling = bosh.negotiate(
        bosh.parse_body(body(" to='example.org' wait='5' hold='0'")), LIMITS, "example.org"
    )
    assert (polling.hold, polling.requests) == (0, 1)


def test_negotiate_picks_one_of_several_hosted_domains() -> None:
    """Virtual hosts (ADR 0023): ``to`` names the host; any other is host-unknown."""
    hosts = ("a.example", "b.example")
    terms = bosh.negotiate(bosh.parse_body(body(" to='B.example' wait='5'")), LIMITS, hosts)
    assert terms.to == "b.example"
    with pytest.raises(BoshError) as err:
        bosh.negotiate(bosh.parse_body(body(" to='c.example' wait='5'")), LIMITS, hosts)
    assert err.value.condition == "host-unknown"


def test_negotiate_refuses_other_hosts_and_missing_wait() -> None:
    with pytest.raises(BoshError) as err:
        bosh.negotiate(bosh.parse_body(body(" to='other.org' wait='5'")), LIMITS, "example.org")
    assert err.value.condition == "host-unknown"
    with pytest.raises(BoshError) as err:
        bosh.negotiate(bosh.parse_body(body(" to='example.org'")), LIMITS, "example.org")
    assert err.value.condition == "bad-request"


def test_creation_attrs_and_stream_header() -> None:
    terms = bosh.negotiate(
        bosh.parse_body(body(" to='example.org' wait='30' hold='1' ack='1' xml:lang='de'")),
        LIMITS,
        "example.org",
    )
    response = bosh.response_body([], bosh.creation_attrs(terms, "SID", 10, "s1"))
    attrs = ElementTree.fromstring(response).attrib
    assert attrs["sid"] == "SID" and attrs["requests"] == "2" and attrs["ack"] == "10"
    assert attrs["{urn:xmpp:xbosh}restartlogic"] == "true" and attrs["authid"] == "s1"
    assert "maxpause" not in attrs
    header = bosh.session_header(terms)
    assert header.startswith(b"<stream:stream xmlns='jabber:client'")
    assert b"to='example.org'" in header and b"xml:lang='de'" in header


# -- the rid window ------------------------------------------------------------------------


def test_in_order_requests_are_ready_at_once() -> None:
    window = RidWindow(next_rid=11, requests=2)
    verdict = window.receive(req(11, b"<a/>"))
    assert isinstance(verdict, Accepted) and [r.rid for r in verdict.ready] == [11]
    assert window.acked == 11


def test_an_early_request_waits_for_the_gap() -> None:
    window = RidWindow(next_rid=11, requests=2)
    early = window.receive(req(12, b"<b/>"))
    assert isinstance(early, Accepted) and early.ready == []
    assert window.acked == 10
    gap = window.receive(req(11, b"<a/>"))
    assert isinstance(gap, Accepted) and [r.payload for r in gap.ready] == [b"<a/>", b"<b/>"]
    assert window.acked == 12


def test_outside_the_window_is_item_not_found() -> None:
    window = RidWindow(next_rid=11, requests=2)
    for rid in (13, 100, 10, 5):
        with pytest.raises(BoshError) as err:
            window.receive(req(rid))
        assert err.value.condition == "item-not-found"


def test_answered_rids_are_replayed_and_open_ones_in_flight() -> None:
    window = RidWindow(next_rid=11, requests=2)
    window.receive(req(11))
    assert isinstance(window.receive(req(11)), InFlight), "not answered yet: not twice"
    window.answered(11, b"<body/>")
    replay = window.receive(req(11))
    assert isinstance(replay, Replay) and replay.body == b"<body/>"
    for rid in (12, 13, 14):
        window.receive(req(rid))
        window.answered(rid, b"r%d" % rid)
    assert isinstance(window.receive(req(13)), Replay)
    with pytest.raises(BoshError):  # only the last `requests` answers are kept
        window.receive(req(11))


def test_ack_is_reported_only_for_an_older_rid() -> None:
    window = RidWindow(next_rid=11, requests=2)
    window.receive(req(11))
    window.receive(req(12))
    assert window.ack_for(12) is None
    assert window.ack_for(11) == 12


def test_polling_rule_only_for_polling_sessions() -> None:
    request = bosh.parse_body(body(" to='example.org' wait='5' hold='0'"))
    polling = bosh.negotiate(request, LIMITS, "example.org")
    holding = bosh.negotiate(
        bosh.parse_body(body(" to='example.org' wait='5'")), LIMITS, "example.org"
    )
    poll = req(11)
    assert bosh.too_frequent(polling, poll, held=0, since_answer=1.0)
    assert not bosh.too_frequent(polling, poll, held=0, since_answer=6.0)
    assert not bosh.too_frequent(polling, req(11, b"<iq/>"), held=0, since_answer=0.1)
    assert not bosh.too_frequent(holding, poll, held=0, since_answer=0.0)


# -- responses -----------------------------------------------------------------------------


def test_outbound_drops_the_header_keeps_stream_prefix_and_marks_errors() -> None:
    out = BoshOutbound()
    elements = out.outbound(
        HEADER
        + b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        + b" <message to='a'><body>hi</body></message>"
    )
    assert out.stream_id == "s1"
    assert elements[0].startswith("<stream:features>")
    assert elements[1].startswith("<message xmlns='jabber:client' to='a'")
    response = bosh.response_body(elements)
    root = ElementTree.fromstring(response)  # the prefix resolves through <body/>
    assert [c.tag for c in root] == [
        "{http://etherx.jabber.org/streams}features",
        "{jabber:client}message",
    ]
    tail = out.outbound(
        b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
        b"</stream:stream>"
    )
    assert out.stream_error and out.closed and len(tail) == 1


def test_terminate_body() -> None:
    root = ElementTree.fromstring(bosh.terminate_body("item-not-found"))
    assert root.tag == f"{{{NS_HTTPBIND}}}body"
    assert root.get("type") == "terminate" and root.get("condition") == "item-not-found"
    assert ElementTree.fromstring(bosh.terminate_body()).get("condition") is None


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bosh_section", "message"),
    [
        ({"max_wait": 0}, "max_wait must be positive"),
        ({"max_pending": -1}, "max_pending must be positive"),
        ({"max_hold": -1}, "must not be negative"),
        ({"polling": 60, "inactivity": 60}, "polling < inactivity"),
        ({"hold": 1}, "unknown key"),
    ],
)
def test_bosh_section_is_validated(bosh_section: dict[str, object], message: str) -> None:
    from xes.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=message):
        parse_config({"bosh": bosh_section})
    assert parse_config({"bosh": {"max_wait": 30}}).bosh.max_wait == 30
