"""Server-to-server (ADR 0025): xes federating with another xes and with a real Prosody.

Each pair of servers routes to the other by a static address: xes by ``[s2s] hosts``;
Prosody, which has no static route option, by DNS: its libunbound resolver is pointed at a
small DNS server in this test (``unbound = { forward = ... }``) that answers the SRV record
``_xmpp-server._tcp.<xes domain>`` with xes's s2s port. Certificates are self-signed, so the
servers authenticate each other with Server Dialback (XEP-0220) after STARTTLS. slixmpp clients
on each side exchange messages both ways, subscribe to each other's presence both ways and
send iq (ping, software version) across.
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rdatatype
import dns.rrset
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.clients import Client, next_matching
from tests.integration.conftest import run
from tests.integration.server import XesServer, free_port, wait_port
from xes.tlsutil import ensure_self_signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

A, B, P = "a.s2s.example", "b.s2s.example", "prosody.s2s.example"
C, D = "c.s2s.example", "d.s2s.example"
"""Not under ``test.``: libunbound (Prosody's resolver) answers every ``test.`` name itself with
NXDOMAIN (one of its default local zones, RFC 6761), so a query never reaches the stub."""
PASSWORD = "s2s-password"
DIALBACK = 'authentication = "certificates+dialback"\n'


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[XesServer, XesServer]]:
    root = tmp_path_factory.mktemp("s2s")
    a_port, b_port, b_tls = free_port(), free_port(), free_port()
    # a reaches b with direct TLS (XEP-0368), b reaches a with STARTTLS.
    a = XesServer(
        root / "a",
        domain=A,
        s2s=a_port,
        extra=f'[s2s]\n{DIALBACK}hosts = {{ "{B}" = "tls:127.0.0.1:{b_tls}" }}\n',
    )
    b = XesServer(
        root / "b",
        domain=B,
        s2s=b_port,
        s2s_tls=b_tls,
        extra=f'[s2s]\n{DIALBACK}hosts = {{ "{A}" = "127.0.0.1:{a_port}" }}\n',
    )
    for srv in (a, b):
        srv.write_config()
        srv.start()
    try:
        yield a, b
    finally:
        for srv in (a, b):
            srv.stop()


async def scenario(alice: Client, bob: Client) -> None:
    """Messages, subscriptions and iq between two users of different servers."""
    a_jid, b_jid = alice.boundjid.bare, bob.boundjid.bare
    # Messages, both directions.
    alice.send_message(mto=b_jid, mbody="hello from alice", mtype="chat")
    got = await next_matching(bob.messages, lambda m: m["body"] == "hello from alice", 20)
    assert got["from"].bare == a_jid
    bob.send_message(mto=a_jid, mbody="hello from bob", mtype="chat")
    got = await next_matching(alice.messages, lambda m: m["body"] == "hello from bob", 20)
    assert got["from"].bare == b_jid
    # Presence subscription, alice -> bob, approved: alice then sees bob online.
    alice.send_presence(pto=b_jid, ptype="subscribe")
    request = await next_matching(bob.subscriptions, lambda p: p["type"] == "subscribe", 20)
    assert request["from"].bare == a_jid
    bob.send_presence(pto=a_jid, ptype="subscribed")
    await next_matching(
        alice.subscriptions, lambda p: p["type"] == "subscribed" and p["from"].bare == b_jid, 20
    )
    await next_matching(alice.presences, lambda p: p["from"].bare == b_jid, 20)
    # And bob -> alice.
    bob.send_presence(pto=a_jid, ptype="subscribe")
    request = await next_matching(alice.subscriptions, lambda p: p["type"] == "subscribe", 20)
    assert request["from"].bare == b_jid
    alice.send_presence(pto=b_jid, ptype="subscribed")
    await next_matching(
        bob.subscriptions, lambda p: p["type"] == "subscribed" and p["from"].bare == a_jid, 20
    )
    await next_matching(bob.presences, lambda p: p["from"].bare == a_jid, 20)
    # iq across: ping the other server, ask the other user's client for its version.
    await alice.plugin["xep_0199"].ping(jid=bob.boundjid.domain, timeout=20)
    version = await alice.plugin["xep_0092"].get_version(bob.boundjid, timeout=20)
    assert version["software_version"]["name"]
    version = await bob.plugin["xep_0092"].get_version(alice.boundjid, timeout=20)
    assert version["software_version"]["name"]
    # Alice's server tells bob's that she left (RFC 6121 §4.5.2).
    await alice.logout()
    await next_matching(
        bob.presences,
        lambda p: p["from"] == alice.boundjid and p["type"] == "unavailable",
        20,
    )


async def _run_pair(
    a_port: int, a_user: str, b_port: int, b_user: str, b_mech: str = "SCRAM-SHA-256"
) -> None:
    alice, bob = Client(a_user, PASSWORD), Client(b_user, PASSWORD, mech=b_mech)
    await alice.login(a_port)
    await bob.login(b_port)
    try:
        await scenario(alice, bob)
    finally:
        await alice.logout()
        await bob.logout()


def test_xes_to_xes_over_dialback(pair: tuple[XesServer, XesServer]) -> None:
    a, b = pair
    a.add_user("alice", PASSWORD)
    b.add_user("bob", PASSWORD)
    run(_run_pair(a.c2s, f"alice@{A}", b.c2s, f"bob@{B}"))
    assert "s2s_peer_authenticated" in a.log_text()
    assert "dialback" in b.log_text()
    ready = [line for line in a.log_text().splitlines() if "s2s_link_ready" in line]
    assert ready and all('"direct_tls": true' in line for line in ready)


def test_unreachable_domain_bounces(pair: tuple[XesServer, XesServer]) -> None:
    a, _ = pair
    a.add_user("carol", PASSWORD)

    async def go() -> None:
        carol = Client(f"carol@{A}", PASSWORD)
        await carol.login(a.c2s)
        try:
            carol.send_message(mto="nobody@unreachable.invalid", mbody="anyone?")
            err = await next_matching(carol.messages, lambda m: m["type"] == "error", 30)
            assert err["error"]["condition"] == "remote-server-not-found"
        finally:
            await carol.logout()

    run(go())


# -- SASL EXTERNAL with a private CA (XEP-0178) ----------------------------------------------


def make_ca(directory: Path, domains: list[str]) -> Path:
    """A private CA and, for each domain, a certificate it signed (``<domain>.crt``/``.key``,
    SAN DNS:<domain>, server and client authentication); returns the CA file."""
    now = datetime.datetime.now(datetime.UTC)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xes test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for domain in domains:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        (directory / f"{domain}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{domain}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return ca_file


@pytest.fixture(scope="module")
def ca_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[XesServer, XesServer]]:
    """Two xes servers whose certificates a private CA signed, on the default policy
    (``authentication = "certificates"``: no dialback at all)."""
    root = tmp_path_factory.mktemp("s2s-ca")
    certs = root / "certs"
    ca_file = make_ca(certs, [C, D])
    c_port, d_port = free_port(), free_port()
    servers = []
    for domain, other, port, own in ((C, D, d_port, c_port), (D, C, c_port, d_port)):
        servers.append(
            XesServer(
                root / domain,
                domain=domain,
                s2s=own,
                extra=(
                    f'[s2s]\nca_file = "{ca_file}"\n'
                    f'hosts = {{ "{other}" = "127.0.0.1:{port}" }}\n'
                    f'[tls]\ncert = "{certs / domain}.crt"\nkey = "{certs / domain}.key"\n'
                ),
            )
        )
    for srv in servers:
        srv.write_config()
        srv.start()
    try:
        yield servers[0], servers[1]
    finally:
        for srv in servers:
            srv.stop()


def test_xes_to_xes_over_sasl_external(ca_pair: tuple[XesServer, XesServer]) -> None:
    c, d = ca_pair
    c.add_user("alice", PASSWORD)
    d.add_user("bob", PASSWORD)
    run(_run_pair(c.c2s, f"alice@{C}", d.c2s, f"bob@{D}"))
    for srv in (c, d):
        log = srv.log_text()
        assert '"how": "external"' in log
        assert '"how": "dialback"' not in log


# -- Prosody ---------------------------------------------------------------------------------


class DnsStub:
    """A tiny authoritative DNS server on loopback UDP: SRV and A records for the test's
    domains, empty answers for anything else. Prosody's libunbound forwards to it."""

    def __init__(self, srv: dict[str, tuple[str, int]]) -> None:
        self.srv = srv
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            reply = dns.message.make_response(query)
            reply.flags |= dns.flags.AA | dns.flags.RA
            for question in query.question:
                name = question.name.to_text().rstrip(".")
                if question.rdtype == dns.rdatatype.SRV and name.startswith("_xmpp-server._tcp."):
                    target = self.srv.get(name.removeprefix("_xmpp-server._tcp."))
                    if target is not None:
                        reply.answer.append(
                            dns.rrset.from_text(
                                question.name, 60, "IN", "SRV", f"0 5 {target[1]} {target[0]}."
                            )
                        )
                        continue
                if question.rdtype == dns.rdatatype.A and name.startswith("s2s-host."):
                    reply.answer.append(
                        dns.rrset.from_text(question.name, 60, "IN", "A", "127.0.0.1")
                    )
                # Anything else: an empty answer, never NXDOMAIN. libunbound checks the DS of
                # the parent zones (to prove them unsigned) and would take an NXDOMAIN for
                # ``test.`` as one for every name under it (RFC 8020).
            self.sock.sendto(reply.to_wire(), peer)


@contextlib.contextmanager
def xes_and_prosody(root: Path, *, ca: bool) -> Iterator[tuple[XesServer, Path, int]]:
    """xes serving ``A`` and Prosody serving ``P``, routed to each other. ``ca``: both
    certificates signed by a private CA both trust, xes on its default policy
    (certificates only) and Prosody with ``s2s_secure_auth``; else self-signed and dialback."""
    if shutil.which("prosody") is None:
        pytest.skip("prosody is not installed (apt-get install prosody)")
    prosody_s2s, prosody_c2s = free_port(), free_port()
    pdir = root / "prosody"
    (pdir / "data").mkdir(parents=True)
    routes = f'hosts = {{ "{P}" = "127.0.0.1:{prosody_s2s}" }}\n'
    if ca:
        ca_file = make_ca(root / "certs", [A, P])
        xes_tls = f'[tls]\ncert = "{root}/certs/{A}.crt"\nkey = "{root}/certs/{A}.key"\n'
        extra = f'[s2s]\nca_file = "{ca_file}"\n{routes}{xes_tls}'
        pcert, pkey = root / "certs" / f"{P}.crt", root / "certs" / f"{P}.key"
        pssl = f'certificate = "{pcert}"; key = "{pkey}"; cafile = "{ca_file}";'
        secure = "true"
    else:
        extra = f"[s2s]\n{DIALBACK}{routes}"
        pcert, pkey = pdir / f"{P}.crt", pdir / f"{P}.key"
        ensure_self_signed(pcert, pkey, P)
        pssl = f'certificate = "{pcert}"; key = "{pkey}";'
        secure = "false"
    xes = XesServer(root / "xes", domain=A, s2s=free_port(), extra=extra)
    xes.write_config()
    xes.start()
    dns_stub = DnsStub({A: ("s2s-host.example", xes.s2s or 0)})
    dns_stub.start()
    config = pdir / "prosody.cfg.lua"
    config.write_text(
        f"""-- written by tests/integration/test_s2s.py
run_as_root = true
prosody_user = "root"
pidfile = "{pdir}/prosody.pid"
data_path = "{pdir}/data"
log = {{ debug = "{pdir}/prosody.log" }}
network_backend = "epoll"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {prosody_c2s} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ {prosody_s2s} }}
s2s_direct_tls_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "version"; "presence";
}}
modules_disabled = {{ "offline" }}
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {secure}
authentication = "internal_hashed"
storage = "internal"
ssl = {{ {pssl} }}
-- No static s2s routes in Prosody: its DNS resolver asks the test's DNS stub instead.
unbound = {{ resolvconf = false; hoststxt = false; forward = "127.0.0.1@{dns_stub.port}" }}

VirtualHost "{P}"
"""
    )
    proc = subprocess.Popen(
        ["prosody", "-F", "--config", str(config)],
        stdout=open(pdir / "console.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_port(prosody_c2s, timeout=30)
        subprocess.run(
            ["prosodyctl", "--config", str(config), "register", "paula", P, PASSWORD],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield xes, pdir, prosody_c2s
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        dns_stub.stop()
        xes.stop()


@pytest.fixture(scope="module")
def prosody_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[XesServer, Path, int]]:
    with xes_and_prosody(tmp_path_factory.mktemp("s2s-prosody"), ca=False) as servers:
        yield servers


@pytest.fixture(scope="module")
def prosody_ca_pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[XesServer, Path, int]]:
    with xes_and_prosody(tmp_path_factory.mktemp("s2s-prosody-ca"), ca=True) as servers:
        yield servers


def test_xes_with_prosody_over_dialback(prosody_pair: tuple[XesServer, Path, int]) -> None:
    xes, pdir, prosody_c2s = prosody_pair
    xes.add_user("alice", PASSWORD)
    try:
        # Prosody 0.12 offers SCRAM-SHA-1 and PLAIN to clients.
        run(_run_pair(xes.c2s, f"alice@{A}", prosody_c2s, f"paula@{P}", "SCRAM-SHA-1"))
    except BaseException:
        print((pdir / "prosody.log").read_text(errors="replace")[-6000:])
        print(xes.log_text()[-6000:])
        raise
    log = xes.log_text()
    assert "s2s_peer_authenticated" in log  # Prosody's stream to us
    assert "s2s_link_ready" in log  # ours to Prosody


def test_xes_with_prosody_over_sasl_external(
    prosody_ca_pair: tuple[XesServer, Path, int],
) -> None:
    xes, pdir, prosody_c2s = prosody_ca_pair
    xes.add_user("alice", PASSWORD)
    try:
        run(_run_pair(xes.c2s, f"alice@{A}", prosody_c2s, f"paula@{P}", "SCRAM-SHA-1"))
    except BaseException:
        print((pdir / "prosody.log").read_text(errors="replace")[-6000:])
        print(xes.log_text()[-6000:])
        raise
    log = xes.log_text()
    assert '"how": "external"' in log
    assert '"how": "dialback"' not in log
