"""XMPP over BOSH (XEP-0124/0206) against the real server: StanzaJS, an independent client,
logs in over ``/http-bind``, talks with a slixmpp client on TCP, reads MAM and resumes its
XEP-0198 session in a new BOSH session; host-meta lists the BOSH URL; and a raw client sends
what no library would (wrong rid and sid, rids far outside the window, retransmissions, early
rids, oversized, malformed and foreign bodies, polling too often) and gets the XEP's
terminate conditions and HTTP statuses, while other clients are not stalled."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.boshclient import HTTPBIND, STREAMS, RawBosh, post
from tests.integration.clients import Client
from tests.integration.conftest import run, running_server
from tests.integration.jsdriver import (
    JsClient,
    chat_with_tcp_peer_and_read_mam,
    missed_message_arrives_once,
)
from tests.integration.server import XesServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    extra = (
        "[auth]\nmax_failures = 1000\n"
        "[http]\nmax_body_bytes = 65536\nrequests_per_second = 1000.0\nrequest_burst = 5000\n"
        "[bosh]\nmax_wait = 10\ninactivity = 6\npolling = 2\nmax_pending = 50\n"
    )
    with running_server(tmp_path_factory.mktemp("bosh") / "node", extra=extra) as srv:
        yield srv


def bosh_url(srv: XesServer) -> str:
    # Plain http from loopback: a trusted proxy address, so it counts as TLS (ADR 0016).
    return f"http://127.0.0.1:{srv.http}/http-bind"


def stanzajs(srv: XesServer, user: str, resource: str) -> JsClient:
    return JsClient(
        bosh_url(srv),
        srv.domain,
        user,
        f"pw-{user}",
        resource,
        script="stanza_driver.mjs",
        package="stanza",
    )


def test_stanzajs_over_bosh_talks_to_tcp_client_and_reads_mam(web: XesServer) -> None:
    web.add_user("ba", "pw-ba")
    web.add_user("tcpb", "pw-tcpb")
    js = stanzajs(web, "ba", "tab")
    try:
        online = js.expect("online")
        assert online["jid"].startswith(f"ba@{web.domain}/")
        assert online["sm"], "XEP-0198 is offered over BOSH too"
        chat_with_tcp_peer_and_read_mam(js, web, online, "tcpb", "bosh")
    finally:
        js.close()


def test_bosh_resumption_delivers_what_was_missed_once(web: XesServer) -> None:
    """StanzaJS abandons its BOSH session (no terminate), reconnects in a new one and resumes
    (XEP-0198); the message sent meanwhile arrives exactly once."""
    web.add_user("br", "pw-br")
    web.add_user("tcpr", "pw-tcpr")
    js = stanzajs(web, "br", "tab")
    try:
        online = js.expect("online")
        assert online["sm"] and online["id"]
        js.send(op="cut")
        cut = js.expect("cut")
        resumed = missed_message_arrives_once(js, web, online, "tcpr")
        assert resumed["sid"] != cut["sid"], "resumed in a new BOSH session"
    finally:
        js.close()
    assert "session_resumed" in web.log_path.read_text()


def test_host_meta_advertises_the_bosh_endpoint(web: XesServer) -> None:
    base = f"http://127.0.0.1:{web.http}"
    with urllib.request.urlopen(f"{base}/.well-known/host-meta.json") as resp:
        doc = json.load(resp)
    links = {link["rel"]: link["href"] for link in doc["links"]}
    assert links["urn:xmpp:alt-connections:xbosh"] == bosh_url(web)
    with urllib.request.urlopen(f"{base}/.well-known/host-meta") as resp:
        assert f"href='{bosh_url(web)}'" in resp.read().decode()


# -- the protocol, raw ---------------------------------------------------------------------


def test_creation_response_carries_the_terms_and_the_features(web: XesServer) -> None:
    bosh = RawBosh(web.http, web.domain)
    reply = bosh.create(hold=5, wait=600, ack=1)
    attrs = reply.attrs
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/xml")
    assert attrs["sid"] and attrs["hold"] == "1" and attrs["requests"] == "2"
    assert attrs["wait"] == "10", "capped by [bosh] max_wait"
    assert attrs["inactivity"] == "6" and attrs["polling"] == "2"
    assert attrs["ver"] == "1.11" and attrs["from"] == web.domain
    assert attrs["{urn:xmpp:xbosh}version"] == "1.0"
    assert attrs["{urn:xmpp:xbosh}restartlogic"] == "true"
    assert attrs["ack"] == str(bosh.rid), "ack: the creation rid (§9.1)"
    assert attrs["authid"]
    assert "maxpause" not in attrs, "pause is not supported, so not advertised"
    (features,) = reply.children()
    assert features.tag == f"{{{STREAMS}}}features"
    assert b"<stream:features>" in reply.data, "kept prefixed under xmlns:stream (as Prosody)"
    # A retransmission of the creation rid gets the same response (§14.3).
    again = bosh.send(rid=bosh.rid)
    assert again.data == reply.data


def test_stanzas_carry_jabber_client_and_restart_gives_new_features(web: XesServer) -> None:
    web.add_user("braw", "pw-braw")
    bosh = RawBosh(web.http, web.domain)
    jid = bosh.login("braw", "pw-braw", "raw")  # SASL, xmpp:restart, bind: asserted inside
    assert jid == f"braw@{web.domain}/raw"
    reply = bosh.send(
        "<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    (iq,) = reply.children()
    assert iq.tag == "{jabber:client}iq" and iq.get("type") == "result"
    assert b"<iq xmlns='jabber:client'" in reply.data
    ended = bosh.send(type="terminate")
    assert ended.terminated and ended.condition is None
    assert bosh.send().terminated, "the sid is over"


def test_out_of_order_rids_are_processed_in_order(web: XesServer) -> None:
    web.add_user("bord", "pw-bord")
    bosh = RawBosh(web.http, web.domain)
    bosh.login("bord", "pw-bord", "o")
    first, second = bosh.rid + 1, bosh.rid + 2
    bosh.rid += 2
    # The later request arrives first: its iq must wait for the earlier one (§14).
    late_thread, late = bosh.send_async(
        "<iq xmlns='jabber:client' type='get' id='second'><ping xmlns='urn:xmpp:ping'/></iq>",
        rid=second,
    )
    time.sleep(0.5)
    early = bosh.send(
        "<iq xmlns='jabber:client' type='get' id='first'><ping xmlns='urn:xmpp:ping'/></iq>",
        rid=first,
    )
    late_thread.join(15)
    got = [c.get("id") for r in (early, late["reply"]) for c in r.children()]
    while len(got) < 2:  # the second answer may come in the next response
        got += [c.get("id") for c in bosh.send().children()]
    assert got == ["first", "second"]


def test_wrong_sid_and_rid_outside_the_window_are_item_not_found(web: XesServer) -> None:
    stranger = RawBosh(web.http, web.domain)
    stranger.sid = "no-such-session"
    reply = stranger.send()
    assert reply.status == 200 and reply.terminated and reply.condition == "item-not-found"

    bosh = RawBosh(web.http, web.domain)
    bosh.create()
    far = bosh.send(rid=bosh.rid + 1000)
    assert far.terminated and far.condition == "item-not-found"
    # The session is gone: its sid now names nothing.
    assert bosh.send().terminated

    old = RawBosh(web.http, web.domain)
    old.create(wait=1)
    for _ in range(4):
        old.send()  # each answered at once or after wait=1
    stale = old.send(rid=old.rid - 3)
    assert stale.terminated and stale.condition == "item-not-found", "older than the cache"


def test_retransmitted_rid_gets_the_same_answer(web: XesServer) -> None:
    web.add_user("bre", "pw-bre")
    bosh = RawBosh(web.http, web.domain)
    bosh.login("bre", "pw-bre", "re")
    ping = "<iq xmlns='jabber:client' type='get' id='once'><ping xmlns='urn:xmpp:ping'/></iq>"
    first = bosh.send(ping)
    again = bosh.send(ping, rid=bosh.rid)
    assert again.data == first.data and b"id='once'" in first.data
    # The payload was not processed twice: the next poll carries no second result.
    assert b"once" not in bosh.send().data


def test_bad_bodies_get_bad_request_or_413(web: XesServer) -> None:
    malformed = post(web.http, b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>")
    assert malformed.status == 200 and malformed.condition == "bad-request"
    foreign = post(web.http, b"<body xmlns='urn:example:other' rid='1' to='x' wait='5'/>")
    assert foreign.condition == "bad-request"
    no_rid = post(web.http, f"<body xmlns='{HTTPBIND}' to='{web.domain}' wait='5'/>".encode())
    assert no_rid.condition == "bad-request"
    entity = post(
        web.http,
        b"<!DOCTYPE body [<!ENTITY x 'y'>]><body xmlns='http://jabber.org/protocol/httpbind'"
        b" rid='1'>&x;</body>",
    )
    assert entity.condition == "bad-request"
    wrong_host = RawBosh(web.http, "elsewhere.example").create()
    assert wrong_host.condition == "host-unknown"
    huge = post(web.http, b"<body xmlns='" + HTTPBIND.encode() + b"' rid='1'>" + b"x" * 70000)
    assert huge.status == 413


def test_polling_too_often_is_a_policy_violation(web: XesServer) -> None:
    bosh = RawBosh(web.http, web.domain)
    created = bosh.create(hold=0)
    assert created.attrs["hold"] == "0" and created.attrs["requests"] == "1"
    reply = bosh.send()
    assert reply.terminated and reply.condition == "policy-violation"

    patient = RawBosh(web.http, web.domain)
    patient.create(hold=0)
    time.sleep(2.1)
    assert not patient.send().terminated, "a poll after the interval is fine"


def test_more_than_hold_requests_answers_the_oldest(web: XesServer) -> None:
    bosh = RawBosh(web.http, web.domain)
    bosh.create(wait=10)
    thread, first = bosh.send_async()
    time.sleep(0.3)
    started = time.monotonic()
    thread2, _second = bosh.send_async()
    thread.join(5)
    assert "reply" in first and time.monotonic() - started < 3, "answered when the next came"
    assert not first["reply"].terminated
    bosh.send(type="terminate")
    thread2.join(5)


def test_inactivity_ends_the_session_and_the_client_resumes_elsewhere(web: XesServer) -> None:
    """A raw client enables resumable stream management, goes silent; after inactivity the
    XMPP session is detached, not ended, and a new BOSH session resumes it."""
    web.add_user("bin", "pw-bin")
    bosh = RawBosh(web.http, web.domain)
    jid = bosh.login("bin", "pw-bin", "idle")
    enabled = bosh.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>").children()
    (en,) = [c for c in enabled if c.tag == "{urn:xmpp:sm:3}enabled"]
    previd = en.get("id")
    bosh.send("<presence xmlns='jabber:client'/>")
    time.sleep(6 + 2.5)  # inactivity = 6
    gone = bosh.send()
    assert gone.terminated
    log = web.log_path.read_text()
    assert "bosh_session_inactive" in log

    again = RawBosh(web.http, web.domain)
    again.authenticate("bin", "pw-bin")
    resumed = again.send(f"<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>")
    tags = [c.tag for c in resumed.children()]
    while not tags:
        tags = [c.tag for c in again.send().children()]
    assert "{urn:xmpp:sm:3}resumed" in tags, tags
    assert jid == f"bin@{web.domain}/idle"


def test_slow_consumer_loses_the_session_not_the_node(web: XesServer) -> None:
    """A client that stops asking while stanzas pile up for it: past [bosh] max_pending the
    BOSH session ends (policy-violation) instead of growing."""
    web.add_user("bslow", "pw-bslow")
    web.add_user("bflood", "pw-bflood")
    bosh = RawBosh(web.http, web.domain)
    bosh.login("bslow", "pw-bslow", "s")
    bosh.send("<presence xmlns='jabber:client'/>")

    async def flood() -> None:
        peer = Client(f"bflood@{web.domain}/pc", "pw-bflood")
        await peer.login(web.c2s)
        for i in range(120):
            peer.send_message(mto=f"bslow@{web.domain}/s", mbody=f"m{i}", mtype="chat")
        await asyncio.sleep(2)
        await peer.logout()

    run(flood())
    for _ in range(100):  # no request meanwhile: the elements pile up
        if "bosh_client_too_slow" in web.log_path.read_text():
            break
        time.sleep(0.2)
    reply = bosh.send()
    assert reply.terminated and reply.condition == "policy-violation"


def test_cors_preflight_and_origin(tmp_path: Path) -> None:
    extra = '[http]\nallowed_origins = ["https://chat.example"]\ntrusted_proxies = []\n'
    with running_server(tmp_path / "node", extra=extra) as srv:
        req = urllib.request.Request(
            f"http://127.0.0.1:{srv.http}/http-bind",
            method="OPTIONS",
            headers={"Origin": "https://chat.example", "Access-Control-Request-Method": "POST"},
        )
        with urllib.request.urlopen(req) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "https://chat.example"
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]
        data = RawBosh(srv.http, srv.domain).body(to=srv.domain, wait=5)
        evil = post(srv.http, data, Origin="https://evil.example")
        assert evil.status == 403
        # Plain http from an address that is not a trusted proxy while TLS is required.
        plain = post(srv.http, data, Origin="https://chat.example")
        assert plain.status == 403 and b"https" in plain.data


def test_hostile_bosh_clients_stall_no_one(web: XesServer) -> None:
    """Held requests, bad bodies and unknown sids from many threads at once; meanwhile a
    StanzaJS client logs in and a raw session answers at once."""
    web.add_user("bok", "pw-bok")
    stop = threading.Event()

    def pester() -> None:
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            post(web.http, b"<body xmlns='http://jabber.org/protocol/httpbind' rid='x'/>")
            stranger = RawBosh(web.http, web.domain)
            stranger.sid = "nope"
            stranger.send()
            time.sleep(0.01)

    idle = [RawBosh(web.http, web.domain) for _ in range(10)]
    threads = [threading.Thread(target=pester) for _ in range(3)]
    held = []
    for bosh in idle:
        bosh.create(wait=10)
        held.append(bosh.send_async()[0])
    for t in threads:
        t.start()
    try:
        js = stanzajs(web, "bok", "ok")
        try:
            assert js.expect("online")["jid"].startswith("bok@")
        finally:
            js.close()
    finally:
        stop.set()
        for t in threads + held:
            t.join(20)
