"""Pure parts of MAM, stanza ids and carbons: query parsing, rendering, eligibility rules."""

from __future__ import annotations

import pytest

from xes.events.catalog import MessageRouted
from xes.features.mam import parse_query, parse_time, render_page
from xes.projections.archive import ArchivedMessage, Page
from xes.stanza import carbons, sid
from xes.stanza.archiving import Prefs, archivable, wanted
from xes.stanza.core import StanzaError
from xes.stanza.forward import inner
from xes.xml import parse_fragment, serialize

MAM = "urn:xmpp:mam:2"


def q(body: str) -> object:
    return parse_fragment(f"<query xmlns='{MAM}'>{body}</query>".encode())


def form(*fields: tuple[str, str]) -> str:
    inner_ = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields)
    return (
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
        f"<value>{MAM}</value></field>{inner_}</x>"
    )


def test_parse_query_fields_and_rsm() -> None:
    query = parse_query(
        q(
            form(("with", "Juliet@Capulet.lit"), ("start", "2010-06-07T00:00:00Z"))
            + "<set xmlns='http://jabber.org/protocol/rsm'><max>500</max><before/></set>"
        ),
        50,
        250,
    )
    assert query.with_ == "juliet@capulet.lit"
    assert query.start == 1275868800000
    assert query.max == 250 and query.before == ""
    assert parse_query(q(""), 50, 250).max == 50
    assert parse_time("2010-06-07T02:00:00.5+02:00") == 1275868800500


@pytest.mark.parametrize(
    "body, condition",
    [
        (form(("start", "yesterday")), "bad-request"),
        (form(("start", "2010-06-07T00:00:00")), "bad-request"),
        (form(("colour", "red")), "bad-request"),
        (form(("with", "@@")), "jid-malformed"),
        ("<set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set>", "bad-request"),
        (
            "<set xmlns='http://jabber.org/protocol/rsm'><index>3</index></set>",
            "feature-not-implemented",
        ),
        (
            "<set xmlns='http://jabber.org/protocol/rsm'><after>a</after><before>b</before></set>",
            "bad-request",
        ),
    ],
)
def test_parse_query_errors(body: str, condition: str) -> None:
    with pytest.raises(StanzaError) as err:
        parse_query(q(body), 50, 250)
    assert err.value.condition == condition


def test_render_page_wraps_stored_stanzas() -> None:
    item = ArchivedMessage(
        1,
        "abc",
        1275868800000,
        "b@x/r",
        False,
        "<message from='b@x/r'><body>hi &amp; bye</body></message>",
    )
    messages, fin = render_page(Page([item], True, 1), "a@x", "a@x/pc", "q1", False)
    parsed = parse_fragment(messages[0])
    result = parsed.find(f"{{{MAM}}}result")
    assert result is not None and result.get("id") == "abc" and result.get("queryid") == "q1"
    forwarded = result.find("{urn:xmpp:forward:0}forwarded")
    assert forwarded is not None
    delay = forwarded.find("{urn:xmpp:delay}delay")
    assert delay is not None and delay.get("stamp") == "2010-06-07T00:00:00.000Z"
    msg = forwarded.find("{jabber:client}message")
    assert msg is not None and msg.find("{jabber:client}body").text == "hi & bye"  # type: ignore[union-attr]
    assert fin.get("complete") == "true"
    assert "<first>abc</first>" in serialize(fin).decode()
    with pytest.raises(ValueError):
        inner("<presencex/>")


def msg(body: str = "<body>x</body>", type_: str = "chat") -> object:
    return parse_fragment(f"<message type='{type_}'>{body}</message>".encode())


def test_archivable_and_carbon_rules() -> None:
    assert archivable(msg(), "chat")
    assert archivable(msg(), "normal")
    assert not archivable(msg(), "headline")
    assert not archivable(msg("<active xmlns='http://jabber.org/protocol/chatstates'/>"), "chat")
    assert archivable(msg("<received xmlns='urn:xmpp:receipts' id='1'/>"), "chat")
    assert not archivable(msg("<body>x</body><no-store xmlns='urn:xmpp:hints'/>"), "chat")
    assert archivable(msg("<store xmlns='urn:xmpp:hints'/>"), "chat")
    assert carbons.eligible(msg(), "chat")
    assert carbons.eligible(
        msg("<active xmlns='http://jabber.org/protocol/chatstates'/>", "normal"), "normal"
    )
    assert not carbons.eligible(msg("", "normal"), "normal")
    assert not carbons.eligible(msg("<body>x</body><private xmlns='urn:xmpp:carbons:2'/>"), "chat")
    assert not carbons.eligible(msg("<body>x</body><no-copy xmlns='urn:xmpp:hints'/>"), "chat")
    assert not carbons.eligible(msg(type_="headline"), "headline")
    prefs = Prefs("roster", ("a@x",), ("b@x",))
    assert wanted(prefs, "a@x", False) and not wanted(prefs, "b@x", True)
    assert wanted(prefs, "c@x", True) and not wanted(prefs, "c@x", False)
    assert not wanted(Prefs("never"), "c@x", True) and wanted(Prefs("always"), "c@x", False)


def test_stanza_ids_cannot_be_forged_and_carbons_get_the_right_one() -> None:
    forged = parse_fragment(
        b"<message><body>x</body><stanza-id xmlns='urn:xmpp:sid:0' by='a@x' id='fake'/>"
        b"<stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.x' id='fake2'/>"
        b"<stanza-id xmlns='urn:xmpp:sid:0' by='other.org' id='keep'/></message>"
    )
    clean = sid.strip_ours(forged, "x")
    assert [el.get("id") for el in clean.find_all(sid.STANZA_ID)] == ["keep"]
    tagged = sid.with_stanza_id(clean, "a@x", "real", "x")
    assert sid.stanza_id_of(tagged, "a@x") == "real"
    ev = MessageRouted(
        "b@x/pc",
        "a@x",
        "chat",
        serialize(tagged).decode(),
        ["a@x/phone"],
        stanza_id="real",
        archived_by=["a@x", "b@x"],
        sent_carbons=["b@x/desk"],
        received_carbons=["a@x/desk"],
    )
    copies = dict(carbons.copies(ev, lambda full: True))
    assert list(carbons.copies(ev, lambda full: full == "a@x/desk")) == [
        ("a@x/desk", copies["a@x/desk"])
    ]
    sent = parse_fragment(copies["b@x/desk"])
    got = parse_fragment(copies["a@x/desk"])
    assert sent.get("from") == "b@x" and got.get("from") == "a@x"
    fwd = "{urn:xmpp:carbons:2}sent/{urn:xmpp:forward:0}forwarded/{jabber:client}message"
    sent_inner = sent
    for step in fwd.split("/"):
        sent_inner = sent_inner.find(step)  # type: ignore[assignment]
    assert sid.stanza_id_of(sent_inner, "b@x") == "real"
    assert sid.stanza_id_of(sent_inner, "a@x") is None


def test_pages_are_cut_to_a_byte_budget_at_the_far_end() -> None:
    from xes.features.mam import fit_page

    items = [
        ArchivedMessage(i, f"id{i}", 0, "b@x", False, "<message>" + "x" * 1000 + "</message>")
        for i in range(10)
    ]
    page = Page(items, True, 10)
    forwards = fit_page(page, backwards=False, budget=4000)
    assert [m.id for m in forwards.items] == ["id0", "id1", "id2"] and not forwards.complete
    backwards = fit_page(page, backwards=True, budget=4000)
    assert [m.id for m in backwards.items] == ["id7", "id8", "id9"] and not backwards.complete
    assert fit_page(page, backwards=False) is page
    assert len(fit_page(page, backwards=False, budget=10).items) == 1
