"""XEP-0430 query paging over a real inbox projection: RSM ``after`` and ``before`` walk the
same order from either side, and ``complete`` says when a direction is exhausted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.projections.test_inbox import chat, setup
from xes.features.inbox import parse_query, render
from xes.stanza.core import StanzaError
from xes.xml import parse_fragment

RSM = "http://jabber.org/protocol/rsm"
OWNER = "b@x"


def page(store, rsm: str = "") -> tuple[list[str], dict[str, str]]:  # type: ignore[no-untyped-def]
    xml = f"<inbox xmlns='urn:xmpp:inbox:1'><set xmlns='{RSM}'>{rsm}</set></inbox>"
    q = parse_query(parse_fragment(xml.encode()), 50, 250)
    with store.env.begin() as txn:
        messages, fin = render(store, txn, OWNER, OWNER + "/1", q, "q")
    peers = [re.search(rb"<entry [^>]*jid='([^']+)'", m).group(1).decode() for m in messages]  # type: ignore[union-attr]
    rsm_set = fin.find("{%s}set" % RSM)
    cursors = {c.name: c.text or "" for c in rsm_set.children if not isinstance(c, str)}
    return peers, {**cursors, "complete": fin.get("complete", "")}


PEERS = [f"a{i}@x" for i in range(1, 6)]


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    store, apply = setup(tmp_path)
    for n, peer in enumerate(PEERS):  # a5 is the most recent conversation
        assert all(r["ok"] for r in apply(chat(n, f"{peer}/1", OWNER)))
    return store


def test_after_and_before_walk_the_same_order(store) -> None:  # type: ignore[no-untyped-def]
    first, fin1 = page(store, "<max>2</max>")
    assert first == ["a5@x", "a4@x"] and fin1["complete"] == ""
    second, fin2 = page(store, f"<max>2</max><after>{fin1['last']}</after>")
    assert second == ["a3@x", "a2@x"]
    back, fin3 = page(store, f"<max>2</max><before>{fin2['first']}</before>")
    assert back == first and fin3["complete"] == "true"  # nothing above the first page
    assert (fin3["first"], fin3["last"]) == (fin1["first"], fin1["last"])
    up, fin4 = page(store, f"<max>1</max><before>{fin2['first']}</before>")
    assert up == ["a4@x"] and fin4["complete"] == ""


def test_an_empty_before_is_the_last_page(store) -> None:  # type: ignore[no-untyped-def]
    last, fin = page(store, "<max>2</max><before/>")
    assert last == ["a2@x", "a1@x"] and fin["complete"] == ""
    everything, fin = page(store, "<max>10</max><before/>")
    assert everything == list(reversed(PEERS)) and fin["complete"] == "true"


def test_bad_cursors(store) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StanzaError) as exc:
        page(store, "<before>nope</before>")
    assert exc.value.condition == "item-not-found"
    with pytest.raises(StanzaError) as exc:
        page(store, "<after>0-1</after><before>0-2</before>")
    assert exc.value.condition == "bad-request"
