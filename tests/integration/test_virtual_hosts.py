"""Virtual hosts (ADR 0023): one server process serving ``a.test`` and ``b.test``, each with its
own certificate (SNI for direct TLS, the stream's ``to`` for STARTTLS), accounts, group chat
service and archives; a message between the two hosts is a local delivery; a third host added
by SIGHUP is served without a restart.

slixmpp clients, a raw client (SCRAM-SHA-256-PLUS bound to the certificate presented) and
Debian's go-sendxmpp (an independent implementation) log in.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import signal
import socket
import ssl
from collections.abc import Iterator

import pytest
import scramp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.integration.clients import Client, next_matching
from tests.integration.conftest import run
from tests.integration.mucclient import MucClient, body, create, join, message_from, send_message
from tests.integration.rawclient import RawClient
from tests.integration.server import XesServer
from tests.integration.test_archive import mam
from tests.integration.test_go_sendxmpp import run_go_sendxmpp, server_events, wait_for_event
from xes.tlsutil import certificate_der, ensure_self_signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

A, B, C = "a.test", "b.test", "c.test"


def write_hosts(srv: XesServer, hosts: list[str], tables: str = "") -> None:
    """The fixture's configuration with ``hosts`` at the top and ``tables`` at the end."""
    srv.write_config()
    text = srv.config.read_text()
    srv.config.write_text(f"hosts = {json.dumps(hosts)}\n{text}\n{tables}")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    root = tmp_path_factory.mktemp("vhosts") / "node"
    server = XesServer(root, domain=A)
    # b.test's own certificate files (a.test's is generated in the data directory).
    certs = root / "certs"
    ensure_self_signed(certs / "b.crt", certs / "b.key", B)
    write_hosts(
        server,
        [A, B],
        f'[host."{B}"]\ncert_file = "{certs / "b.crt"}"\nkey_file = "{certs / "b.key"}"\n',
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def direct_tls_cert(port: int, sni: str | None) -> x509.Certificate:
    """The certificate a direct-TLS connection (XEP-0368) with SNI ``sni`` is shown."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        tls_context().wrap_socket(sock, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def dns_names(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.DNSName)


def starttls_without_sni(port: int, host: str) -> RawClient:
    """STARTTLS for ``host`` with no SNI at all: only the stream's ``to`` names the host."""
    raw = RawClient(port)
    raw.open_stream(host)
    raw.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    raw.recv_until(b"<proceed")
    raw.sock = tls_context().wrap_socket(raw.sock, server_hostname=None)
    raw.open_stream(host)
    return raw


def scram_plus(raw: RawClient, user: str, password: str) -> bytes:
    """SCRAM-SHA-256-PLUS bound (tls-server-end-point, RFC 5929) to the certificate shown."""
    assert isinstance(raw.sock, ssl.SSLSocket)
    der = raw.sock.getpeercert(binary_form=True)
    assert der is not None
    binding = ("tls-server-end-point", hashlib.sha256(der).digest())
    client = scramp.ScramClient(["SCRAM-SHA-256-PLUS"], user, password, channel_binding=binding)
    first = base64.b64encode(client.get_client_first().encode()).decode()
    mech = "SCRAM-SHA-256-PLUS"
    raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{first}</auth>")
    reply = raw.recv_sasl()
    assert b"<challenge" in reply, reply
    challenge = reply.split(b">", 1)[1].split(b"<", 1)[0]
    client.set_server_first(base64.b64decode(challenge).decode())
    final = base64.b64encode(client.get_client_final().encode()).decode()
    raw.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final}</response>")
    return raw.recv_sasl()


def test_each_host_presents_its_own_certificate(srv: XesServer) -> None:
    b_der = certificate_der(srv.root / "certs" / "b.crt")
    # Direct TLS: SNI picks the certificate.
    cert_a = direct_tls_cert(srv.c2s_tls, A)
    cert_b = direct_tls_cert(srv.c2s_tls, B)
    assert A in dns_names(cert_a) and B not in dns_names(cert_a)
    assert dns_names(cert_b)[0] == B
    assert cert_b.public_bytes(Encoding.DER) == b_der  # the configured cert_file
    # No SNI, or a name we do not host: the primary host's.
    assert dns_names(direct_tls_cert(srv.c2s_tls, None))[0] == A
    assert dns_names(direct_tls_cert(srv.c2s_tls, "elsewhere.test"))[0] == A
    # STARTTLS: the stream's to, without SNI.
    for host in (A, B):
        raw = starttls_without_sni(srv.c2s, host)
        try:
            assert isinstance(raw.sock, ssl.SSLSocket)
            der = raw.sock.getpeercert(binary_form=True)
            assert der is not None
            assert dns_names(x509.load_der_x509_certificate(der))[0] == host
        finally:
            raw.close()
    # HTTPS (WebSocket, BOSH) chooses by SNI too.
    assert dns_names(direct_tls_cert(srv.https, B))[0] == B


def test_user_add_takes_any_hosted_domain_and_refuses_others(srv: XesServer) -> None:
    srv.xes("user", "add", f"ann@{A}", "--password", "pw-ann")
    srv.xes("user", "add", f"ann@{B}", "--password", "pw-ann-b")  # a namesake on the other host
    refused = srv.xes("user", "add", f"ann@{C}", "--password", "x", check=False)
    assert refused.returncode != 0
    assert f"{C} is not a hosted domain" in refused.stderr, refused.stderr
    listed = srv.xes("user", "list").stdout.split()
    assert f"ann@{A}" in listed and f"ann@{B}" in listed
    srv.xes("user", "passwd", f"ann@{B}", "--password", "pw-ann-b2")
    removed = srv.xes("user", "remove", f"nobody@{C}", check=False)
    assert removed.returncode != 0 and C in removed.stderr


def test_login_per_host_with_channel_binding_and_no_crossing(srv: XesServer) -> None:
    srv.xes("user", "add", f"cb@{B}", "--password", "pw-cb")
    # SCRAM-PLUS over STARTTLS for b.test: binds to b.test's certificate, which the server used.
    raw = starttls_without_sni(srv.c2s, B)
    try:
        answer = scram_plus(raw, "cb", "pw-cb")
        assert b"<success" in answer, answer
    finally:
        raw.close()
    # The same account does not exist on a.test: the login fails there.
    raw = starttls_without_sni(srv.c2s, A)
    try:
        answer = raw.scram_login(A, "cb", "pw-cb")
        assert b"<failure" in answer and b"not-authorized" in answer, answer
    finally:
        raw.close()
    # An unknown host is host-unknown, as for a wrong domain on one host.
    raw = RawClient(srv.c2s)
    try:
        raw.send(
            f"<?xml version='1.0'?><stream:stream to='{C}' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        assert b"host-unknown" in raw.recv_all_until_closed()
    finally:
        raw.close()


def test_users_of_two_hosts_chat_archive_and_meet_in_rooms(srv: XesServer) -> None:
    srv.xes("user", "add", f"alice@{A}", "--password", "pw-alice")
    srv.xes("user", "add", f"bob@{B}", "--password", "pw-bob")

    async def scenario() -> None:
        alice = MucClient(f"alice@{A}/desk", "pw-alice")
        bob = MucClient(f"bob@{B}/phone", "pw-bob")
        await alice.login(srv.c2s)
        await bob.login(srv.c2s)
        assert str(alice.boundjid.bare) == f"alice@{A}" and str(bob.boundjid.bare) == f"bob@{B}"
        # Local deliveries between the hosts, both ways.
        alice.send_message(mto=f"bob@{B}", mbody="from a to b", mtype="chat")
        got = await next_matching(bob.messages, lambda m: m["body"] == "from a to b")
        assert got["from"].bare == f"alice@{A}" and got["type"] != "error"
        bob.send_message(mto=f"alice@{A}", mbody="from b to a", mtype="chat")
        got = await next_matching(alice.messages, lambda m: m["body"] == "from b to a")
        assert got["from"].bare == f"bob@{B}"
        # A domain nobody hosts is still remote: no s2s yet.
        alice.send_message(mto="carl@nowhere.test", mbody="lost", mtype="chat")
        err = await next_matching(alice.messages, lambda m: m["type"] == "error")
        assert err["error"]["condition"] == "remote-server-not-found"
        # Each user's archive has the conversation, under its own JID.
        for client, peer in ((alice, f"bob@{B}"), (bob, f"alice@{A}")):
            _, results = await mam(client, with_=peer)
            bodies = [str(r["mam_result"]["forwarded"]["stanza"]["body"]) for r in results]
            assert bodies == ["from a to b", "from b to a"], bodies
        # A room on each host's group chat service; bob visits alice's too.
        room_a, room_b = f"lobby@conference.{A}", f"lobby@conference.{B}"
        await create(alice, room_a, "alice")
        await create(bob, room_b, "bob")
        await join(bob, room_a, "bob")
        send_message(alice, room_a, "hello room a")
        for client in (alice, bob):
            el = await client.inbox.take(message_from(f"{room_a}/alice", text="hello room a"))
            assert body(el) == "hello room a"
        send_message(bob, room_b, "hello room b")
        el = await bob.inbox.take(message_from(f"{room_b}/bob", text="hello room b"))
        assert body(el) == "hello room b"
        assert not alice.inbox.matching(lambda e: (e.get("from") or "").startswith(room_b))
        # Each service lists its own rooms only.
        items_a = await alice.iq(
            "get", f"conference.{A}", "<query xmlns='http://jabber.org/protocol/disco#items'/>"
        )
        jids = [i.get("jid") for i in items_a.iter("{http://jabber.org/protocol/disco#items}item")]
        assert room_a in jids and room_b not in jids
        # The server's disco#items names each host's own group chat service.
        items = await bob.iq("get", B, "<query xmlns='http://jabber.org/protocol/disco#items'/>")
        services = [
            i.get("jid") for i in items.iter("{http://jabber.org/protocol/disco#items}item")
        ]
        assert f"conference.{B}" in services and f"conference.{A}" not in services
        await alice.logout()
        await bob.logout()

    run(scenario())


@pytest.mark.skipif(shutil.which("go-sendxmpp") is None, reason="go-sendxmpp is not installed")
def test_go_sendxmpp_on_the_second_host_reaches_the_first(srv: XesServer) -> None:
    srv.xes("user", "add", f"gosend@{B}", "--password", "pw-gosend")
    srv.xes("user", "add", f"pyget@{A}", "--password", "pw-pyget")
    text = "go from b.test to a.test"

    async def scenario() -> None:
        receiver = Client(f"pyget@{A}/desk", "pw-pyget")
        await receiver.login(srv.c2s)
        args = [
            "go-sendxmpp",
            "--debug",
            "--no-tls-verify",
            "--jserver",
            f"127.0.0.1:{srv.c2s}",
            "--username",
            f"gosend@{B}",
            "--password",
            "pw-gosend",
            "--timeout",
            "20",
            f"pyget@{A}",
        ]
        transcript = await run_go_sendxmpp(args, text.encode())
        msg = await next_matching(receiver.messages, lambda m: m["body"] == text, timeout=20)
        assert msg["from"].bare == f"gosend@{B}"
        assert f"<jid>gosend@{B}/" in transcript, transcript
        await receiver.logout()

    run(scenario())
    auths = [r for r in server_events(srv, "authenticated") if r.get("user") == "gosend"]
    assert auths, "go-sendxmpp did not authenticate"


def test_sighup_adds_a_host_and_an_invalid_file_changes_nothing(srv: XesServer) -> None:
    assert srv.proc is not None
    pid = srv.proc.pid
    original = srv.config.read_text()
    # An invalid file: one clear line, the node keeps its hosts.
    srv.config.write_text(original.replace(f'hosts = ["{A}", "{B}"]', f'hosts = ["{A}", "{A}"]'))
    srv.proc.send_signal(signal.SIGHUP)
    run(wait_for_event(srv, "reload_failed", lambda r: "listed twice" in str(r.get("error"))))
    # Then c.test is added.
    srv.config.write_text(
        original.replace(f'hosts = ["{A}", "{B}"]', f'hosts = ["{A}", "{B}", "{C}"]')
    )
    srv.xes("user", "add", f"carol@{C}", "--password", "pw-carol")  # the CLI reads the file
    srv.proc.send_signal(signal.SIGHUP)
    run(wait_for_event(srv, "config_reloaded", lambda r: C in (r.get("added") or [])))
    assert srv.proc.pid == pid and srv.running
    assert dns_names(direct_tls_cert(srv.c2s_tls, C))[0] == C  # generated on reload

    async def scenario() -> None:
        carol = Client(f"carol@{C}/laptop", "pw-carol")
        await carol.login(srv.c2s)
        alice = Client(f"alice@{A}/second", "pw-alice")
        await alice.login(srv.c2s)
        carol.send_message(mto=f"alice@{A}", mbody="hi from c", mtype="chat")
        got = await next_matching(alice.messages, lambda m: m["body"] == "hi from c")
        assert got["from"].bare == f"carol@{C}"
        await alice.logout()
        # Removing c.test again ends carol's stream with host-gone and refuses new logins.
        srv.config.write_text(original)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGHUP)
        await asyncio.wait_for(carol.ended.wait(), 15)
        again = Client(f"carol@{C}/laptop", "pw-carol")
        with pytest.raises(AssertionError, match="could not log in"):
            await again.login(srv.c2s, timeout=5)
        again.disconnect()

    run(scenario())
    record = run(wait_for_event(srv, "config_reloaded", lambda r: C in (r.get("removed") or [])))
    assert record["closed"] >= 1
    # The account is kept: re-adding the host would bring carol back.
    assert f"carol@{C}" in srv.xes("user", "list").stdout.split()
    assert srv.running


def test_check_config_names_the_hosts(srv: XesServer) -> None:
    out = srv.xes("check-config").stdout
    assert f"domain={A}" in out and f"hosts={A},{B}" in out
