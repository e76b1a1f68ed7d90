"""Virtual hosts in the configuration (ADR 0023): ``hosts``, ``[host."<domain>"]`` tables, and
the per-host TLS contexts chosen by SNI."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from xes.config import ConfigError, parse_config
from xes.tlsutil import HostContexts, client_context_insecure, ensure_self_signed


def test_domain_alone_is_one_host_as_before() -> None:
    config = parse_config({"domain": "xes.test"})
    assert config.host_names == ("xes.test",)
    assert config.muc_domain == "conference.xes.test"
    assert config.is_hosted("xes.test") and not config.is_hosted("other.test")
    assert parse_config({}).host_names == ("localhost",)


def test_hosts_with_tables() -> None:
    config = parse_config(
        {
            "hosts": ["a.example", "b.example"],
            "host": {
                "b.example": {
                    "muc_domain": "rooms.b.example",
                    "registration": True,
                    "cert_file": "b.crt",
                    "key_file": "b.key",
                }
            },
        },
        base=Path("/etc/xes"),
    )
    assert config.domain == "a.example"  # the first host is the primary one
    assert config.host_names == ("a.example", "b.example")
    assert config.muc_domain_of("a.example") == "conference.a.example"
    assert config.muc_domain_of("b.example") == "rooms.b.example"
    assert config.muc_host("rooms.b.example") == "b.example"
    assert config.muc_host("conference.b.example") is None
    assert config.registration_on("b.example") and not config.registration_on("a.example")
    b = config.host("b.example")
    assert b is not None and b.cert_file == "/etc/xes/b.crt" and b.key_file == "/etc/xes/b.key"


def test_domain_and_hosts_together() -> None:
    config = parse_config({"domain": "b.example", "hosts": ["a.example", "b.example"]})
    assert config.domain == "b.example"
    assert config.muc_domain == "conference.b.example"
    with pytest.raises(ConfigError, match=r"domain 'c\.example' is not in hosts"):
        parse_config({"domain": "c.example", "hosts": ["a.example", "b.example"]})


def test_muc_domain_of_the_old_key_is_the_primary_hosts() -> None:
    config = parse_config(
        {"hosts": ["a.example", "b.example"], "muc": {"domain": "chat.a.example"}}
    )
    assert config.muc_domain_of("a.example") == "chat.a.example"
    assert config.muc_domain_of("b.example") == "conference.b.example"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"hosts": []}, "non-empty list"),
        ({"hosts": "a.example"}, "non-empty list"),
        ({"hosts": ["a.example", "A.example"]}, "listed twice"),
        ({"hosts": ["user@a.example"]}, "bare domain"),
        ({"hosts": ["a.example"], "host": {"b.example": {}}}, "not a hosted domain"),
        ({"hosts": ["a.example"], "host": {"a.example": {"colour": 1}}}, "unknown key"),
        ({"hosts": ["a.example"], "host": {"a.example": {"cert_file": "x"}}}, "both cert_file"),
        ({"hosts": ["a.example"], "host": {"a.example": {"registration": "yes"}}}, "true or"),
        (
            {
                "hosts": ["a.example", "b.example"],
                "host": {"a.example": {"muc_domain": "b.example"}},
            },
            "is a hosted domain",
        ),
        (
            {
                "hosts": ["a.example", "b.example"],
                "host": {"b.example": {"muc_domain": "conference.a.example"}},
            },
            "used by two hosts",
        ),
        (
            {
                "hosts": ["a.example"],
                "tls": {"cert": "c", "key": "k"},
                "host": {"a.example": {"cert_file": "c", "key_file": "k"}},
            },
            "keep one",
        ),
        ({"hosts": ["a.example", "b.example"], "muc": {"domain": "b.example"}}, "hosted domain"),
        (
            {"hosts": ["a.example", "b.example"], "components": {"b.example": {"secret": "s"}}},
            "hosted",
        ),
        ({"hosts": ["a.example"], "admin": {"admins": ["root@c.example"]}}, "hosted domain"),
    ],
)
def test_invalid_host_configurations_say_why(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_admins_of_any_hosted_domain() -> None:
    config = parse_config(
        {"hosts": ["a.example", "b.example"], "admin": {"admins": ["root@b.example"]}}
    )
    assert config.admin.admins == ("root@b.example",)


def _handshake(
    server_ctx: ssl.SSLContext, sni: str | None
) -> tuple[x509.Certificate, ssl.SSLObject]:
    """A TLS handshake over memory BIOs: the certificate the client saw, the server's object."""
    client_ctx = client_context_insecure()
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=sni)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der), server


def _sans(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.DNSName)


def test_sni_picks_the_hosts_certificate_and_channel_binding_follows(tmp_path: Path) -> None:
    certs = {}
    for host in ("a.example", "b.example", "c.example"):
        paths = tmp_path / f"{host}.crt", tmp_path / f"{host}.key"
        ensure_self_signed(*paths, host)
        certs[host] = paths
    two = {k: v for k, v in certs.items() if k != "c.example"}
    contexts = HostContexts("a.example", two)
    for sni, expected in (
        ("b.example", "b.example"),
        ("a.example", "a.example"),
        (None, "a.example"),
        ("x.example", "a.example"),
    ):
        cert, server = _handshake(contexts.entry, sni)
        assert _sans(cert)[0] == expected
        # What channel binding hashes is the certificate the client was shown.
        assert contexts.cert_der(server.context) == cert.public_bytes(Encoding.DER)
    # STARTTLS: the stream's host picks the context itself.
    cert, _ = _handshake(contexts.for_host("b.example"), None)
    assert _sans(cert)[0] == "b.example"
    # A reload adds a host: new handshakes see it, the old contexts still map.
    old_entry = contexts.entry
    contexts.update("a.example", certs)
    cert, server = _handshake(contexts.entry, "c.example")
    assert _sans(cert)[0] == "c.example"
    assert contexts.cert_der(old_entry)  # a connection made before the reload still binds
