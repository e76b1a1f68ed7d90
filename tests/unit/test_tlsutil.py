"""xes.tlsutil: self-signed certificate generation and the TLS contexts."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import socket
import ssl
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from xes import tlsutil


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    tlsutil.ensure_self_signed(cert, key, "example.org")
    return cert, key


def _load(cert_path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert_path.read_bytes())


@contextlib.contextmanager
def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> Iterator[tuple[ssl.SSLSocket, ssl.SSLSocket]]:
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    srv = server_ctx.wrap_socket(a, server_side=True, do_handshake_on_connect=False)
    cli = client_ctx.wrap_socket(b, server_side=False, do_handshake_on_connect=False)
    try:
        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(srv.do_handshake)
            try:
                cli.do_handshake()
            except BaseException:
                cli.close()  # so the server thread stops waiting for the client
                raise
            fut.result()
        yield srv, cli
    finally:
        srv.close()
        cli.close()


def test_self_signed_certificate_contents(cert_files: tuple[Path, Path]) -> None:
    cert_path, key_path = cert_files
    cert = _load(cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.org", "*.example.org"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime >= datetime.timedelta(days=3650)
    assert cert.not_valid_before_utc <= datetime.datetime.now(datetime.UTC)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_path.read_bytes()
    assert b"PRIVATE KEY" not in cert_path.read_bytes()


def test_ensure_self_signed_keeps_existing_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    tlsutil.ensure_self_signed(cert, key, "example.org")
    before = cert.read_bytes(), key.read_bytes()
    tlsutil.ensure_self_signed(cert, key, "other.example")
    assert (cert.read_bytes(), key.read_bytes()) == before


def test_ensure_self_signed_regenerates_a_lone_file(tmp_path: Path) -> None:
    cert, key = tmp_path / "sub" / "c.pem", tmp_path / "sub" / "k.pem"
    tlsutil.ensure_self_signed(cert, key, "example.org")
    old = cert.read_bytes()
    key.unlink()
    tlsutil.ensure_self_signed(cert, key, "example.org")
    assert key.exists()
    assert cert.read_bytes() != old
    # The pair must match: the context loads it only if key and certificate belong together.
    tlsutil.server_context(cert, key)
    assert not list(cert.parent.glob(".*.tmp"))


def test_ensure_self_signed_idna_domain(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    tlsutil.ensure_self_signed(cert, key, "Bücher.example.")
    san = _load(cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "xn--bcher-kva.example",
        "*.xn--bcher-kva.example",
    ]


@pytest.mark.parametrize("domain", ["", ".", "a..b"])
def test_ensure_self_signed_rejects_bad_domain(tmp_path: Path, domain: str) -> None:
    with pytest.raises(ValueError):
        tlsutil.ensure_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", domain)
    assert not (tmp_path / "k.pem").exists()


def test_fingerprint_is_sha256_of_der(cert_files: tuple[Path, Path]) -> None:
    cert_path, _ = cert_files
    der = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
    assert tlsutil.certificate_der(cert_path) == der
    fp = tlsutil.certificate_fingerprint(cert_path)
    assert fp == hashlib.sha256(der).hexdigest()
    assert len(fp) == 64


def test_contexts_handshake_with_alpn(cert_files: tuple[Path, Path]) -> None:
    server_ctx = tlsutil.server_context(*cert_files)
    client_ctx = tlsutil.client_context_insecure(alpn=["xmpp-client"])
    with _handshake(server_ctx, client_ctx) as (srv, cli):
        assert cli.selected_alpn_protocol() == "xmpp-client"
        assert srv.selected_alpn_protocol() == "xmpp-client"
        assert cli.version() in {"TLSv1.2", "TLSv1.3"}
        assert cli.getpeercert(binary_form=True) == tlsutil.certificate_der(cert_files[0])
        assert srv.getpeercert() is None  # no client certificate requested
        cli.sendall(b"<stream:stream>")
        assert srv.recv(100) == b"<stream:stream>"


def test_starttls_client_without_alpn(cert_files: tuple[Path, Path]) -> None:
    server_ctx = tlsutil.server_context(*cert_files)
    with _handshake(server_ctx, tlsutil.client_context_insecure()) as (_srv, cli):
        assert cli.selected_alpn_protocol() is None


def test_tls12_uses_forward_secret_aead(cert_files: tuple[Path, Path]) -> None:
    server_ctx = tlsutil.server_context(*cert_files)
    client_ctx = tlsutil.client_context_insecure()
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with _handshake(server_ctx, client_ctx) as (_srv, cli):
        cipher = cli.cipher()
        assert cipher is not None
        name, version, _bits = cipher
        assert version == "TLSv1.2"
        assert name.startswith("ECDHE-")
        assert "GCM" in name or "CHACHA20" in name


def test_server_refuses_below_minimum(cert_files: tuple[Path, Path]) -> None:
    server_ctx = tlsutil.server_context(*cert_files, min_version=ssl.TLSVersion.TLSv1_3)
    client_ctx = tlsutil.client_context_insecure()
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    assert server_ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    with pytest.raises((ssl.SSLError, OSError)), _handshake(server_ctx, client_ctx):
        pass


def test_server_context_defaults(cert_files: tuple[Path, Path]) -> None:
    ctx = tlsutil.server_context(*cert_files)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.options & ssl.OP_NO_COMPRESSION
    tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    assert all(c["kea"] == "kx-ecdhe" and c["aead"] for c in tls12)
