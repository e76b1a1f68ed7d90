"""Hostile input gets the exact RFC 6120 stream error, and other clients are unaffected."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.rawclient import RawClient
from tests.integration.server import XesServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

HEADER = (
    "<?xml version='1.0'?><stream:stream to='xes.test' version='1.0' "
    "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)
BOMB = (
    "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
    "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]>"
    "<stream:stream to='xes.test' version='1.0' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams'>&lol3;"
)


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    srv = XesServer(
        Path(tmp_path_factory.mktemp("hostile")) / "node",
        extra="[limits]\nmax_stanza_bytes = 20000\nauth_timeout = 3.0\n"
        "[auth]\nmax_failures = 3\nlockout = 30.0\n",
    )
    srv.write_config()
    srv.start()
    srv.add_user("victim", "victim-pw")
    srv.add_user("bystander", "bystander-pw")
    srv.add_user("locked", "locked-pw")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def bystander(hostile_server: XesServer) -> Iterator[RawClient]:
    """A logged-in client that must keep working while others misbehave."""
    client = RawClient(hostile_server.c2s)
    client.login(hostile_server, "bystander", "bystander-pw")
    try:
        yield client
    finally:
        client.close()


def assert_alive(client: RawClient) -> None:
    stamp = str(time.monotonic_ns())
    client.send(f"<iq type='get' id='p{stamp}' to='xes.test'><ping xmlns='urn:xmpp:ping'/></iq>")
    reply = client.recv_until(stamp.encode())
    assert stamp.encode() in reply


def stream_error_of(data: bytes) -> str:
    text = data.decode(errors="replace")
    assert "<stream:error>" in text, text
    inner = text.split("<stream:error>", 1)[1]
    return inner.split("<", 2)[1].split(" ", 1)[0].rstrip("/>")


def attack(server: XesServer, payload: bytes | str) -> bytes:
    raw = RawClient(server.c2s)
    try:
        raw.send(payload)
        return raw.recv_all_until_closed(timeout=15)
    finally:
        raw.close()


def test_billion_laughs_is_restricted_xml(hostile_server: XesServer, bystander: RawClient) -> None:
    assert stream_error_of(attack(hostile_server, BOMB)) == "restricted-xml"
    assert_alive(bystander)


def test_dtd_is_restricted_xml(hostile_server: XesServer, bystander: RawClient) -> None:
    payload = "<?xml version='1.0'?><!DOCTYPE stream SYSTEM 'file:///etc/passwd'>" + HEADER[21:]
    assert stream_error_of(attack(hostile_server, payload)) == "restricted-xml"
    assert_alive(bystander)


def test_garbage_is_not_well_formed(hostile_server: XesServer, bystander: RawClient) -> None:
    assert (
        stream_error_of(attack(hostile_server, HEADER + "<message><<<>>>\x00\xff"))
        == "not-well-formed"
    )
    assert stream_error_of(attack(hostile_server, b"\x16\x03\x01\x02\x00garbage")) in (
        "not-well-formed",
        "unsupported-encoding",
    )
    assert_alive(bystander)


def test_oversized_stanza_before_auth(hostile_server: XesServer, bystander: RawClient) -> None:
    payload = HEADER + "<message><body>" + "A" * 50000 + "</body></message>"
    assert stream_error_of(attack(hostile_server, payload)) == "policy-violation"
    assert_alive(bystander)


def test_oversized_stanza_after_auth_and_endless_stanza(
    hostile_server: XesServer, bystander: RawClient
) -> None:
    victim = RawClient(hostile_server.c2s)
    try:
        victim.login(hostile_server, "victim", "victim-pw")
        # A stanza that never ends: the server cuts it off at the limit, not at our patience.
        victim.send("<message to='bystander@xes.test'><body>")
        for _ in range(20):
            try:
                victim.send("B" * 4096)
            except OSError:
                break
        data = victim.recv_all_until_closed(timeout=15)
        assert stream_error_of(data) == "policy-violation"
    finally:
        victim.close()
    assert_alive(bystander)


def test_slow_unauthenticated_client_times_out(
    hostile_server: XesServer, bystander: RawClient
) -> None:
    slow = RawClient(hostile_server.c2s)
    try:
        slow.send(HEADER)
        started = time.monotonic()
        data = slow.recv_all_until_closed(timeout=20)
        assert stream_error_of(data) == "connection-timeout"
        assert time.monotonic() - started < 15
    finally:
        slow.close()
    assert_alive(bystander)


def test_wrong_passwords_then_lockout(hostile_server: XesServer, bystander: RawClient) -> None:
    answers = []
    for _ in range(4):
        raw = RawClient(hostile_server.c2s)
        try:
            raw.starttls(hostile_server.domain)
            answers.append(raw.scram_login(hostile_server.domain, "locked", "wrong"))
        finally:
            raw.close()
    assert all(b"<failure" in a for a in answers)
    assert b"<not-authorized" in answers[0]
    # Past max_failures even the right password is refused for the lockout period.
    raw = RawClient(hostile_server.c2s)
    try:
        raw.starttls(hostile_server.domain)
        answer = raw.scram_login(hostile_server.domain, "locked", "locked-pw")
        assert b"temporary-auth-failure" in answer, answer
    finally:
        raw.close()
    assert_alive(bystander)


def test_plaintext_auth_refused_before_tls(hostile_server: XesServer) -> None:
    raw = RawClient(hostile_server.c2s)
    try:
        features = raw.open_stream(hostile_server.domain)
        assert b"<required" in features and b"mechanism" not in features
        raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
        data = raw.recv_all_until_closed()
        assert stream_error_of(data) == "policy-violation"
    finally:
        raw.close()


def test_stanza_before_auth_is_not_authorized(hostile_server: XesServer) -> None:
    data = attack(hostile_server, HEADER + "<message to='victim@xes.test'><body>x</body></message>")
    assert stream_error_of(data) == "not-authorized"


def test_wrong_host_is_host_unknown(hostile_server: XesServer) -> None:
    payload = HEADER.replace("to='xes.test'", "to='elsewhere.example'")
    assert stream_error_of(attack(hostile_server, payload)) == "host-unknown"
