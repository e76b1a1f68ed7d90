"""TLS helpers: a self-signed certificate for first runs, server and test client contexts.

RFC 6120 §5 (STARTTLS) and XEP-0368 (direct TLS, ALPN protocol ``xmpp-client``). RFC 7590 sets
the floor: TLS 1.2 or later, forward-secret AEAD suites. Pure setup code: no sockets here, and no
events emitted or views read. The certificate's DER encoding is also what SCRAM channel binding
(``tls-server-end-point``, RFC 5929 §4) hashes, see :func:`xes.session.sasl.channel_binding_data`.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "ALPN_XMPP_CLIENT",
    "ALPN_XMPP_SERVER",
    "HostContexts",
    "certificate_der",
    "certificate_fingerprint",
    "client_context_insecure",
    "ensure_self_signed",
    "server_context",
]

ALPN_XMPP_CLIENT = "xmpp-client"
"""XEP-0368 §4: ALPN protocol id for direct-TLS c2s connections."""
ALPN_XMPP_SERVER = "xmpp-server"
"""XEP-0368 §4: ALPN protocol id for direct-TLS s2s connections."""

SELF_SIGNED_VALIDITY = datetime.timedelta(days=3650)

# RFC 7590 §3.3 / RFC 9325 §4.2: TLS 1.2 suites must be forward secret and AEAD. TLS 1.3 suites
# are not affected by set_ciphers() and are all acceptable.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


def ensure_self_signed(cert_path: Path, key_path: Path, domain: str) -> None:
    """Create a self-signed certificate for ``domain`` unless both files already exist.

    Lets ``xes serve`` start with TLS on a fresh install; operators replace the files with a real
    certificate later. The key is EC P-256 and is written with mode 0600 before it holds any
    secret. Subject alternative names are ``domain`` and ``*.domain`` (RFC 6125 DNS-IDs; the
    wildcard covers MUC and upload components). If only one of the two files exists both are
    regenerated, because a certificate without its key (or the reverse) is useless.
    """
    if cert_path.exists() and key_path.exists():
        return
    ascii_domain = _idna(domain)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ascii_domain)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Backdated a day so peers with a slightly slow clock accept it.
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + SELF_SIGNED_VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(ascii_domain), x509.DNSName(f"*.{ascii_domain}")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            # clientAuth too: s2s peers present the same certificate when they connect out.
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first: a crash between the two writes leaves a key without a certificate, which the
    # next call regenerates, never a certificate whose key is missing.
    _write_atomic(key_path, key_pem, mode=0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def server_context(
    cert_path: Path,
    key_path: Path,
    *,
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    alpn: Sequence[str] = (ALPN_XMPP_CLIENT,),
) -> ssl.SSLContext:
    """Build the server-side context used for STARTTLS and direct TLS.

    No client certificates are requested (c2s authenticates with SASL, RFC 6120 §6). TLS 1.2 is
    the floor (RFC 7590 §3.1) and its suites are limited to ECDHE with AEAD; compression is off
    (CRIME, RFC 7457 §2.6) and renegotiation is refused. ALPN ``xmpp-client`` is offered for
    XEP-0368 direct TLS; on STARTTLS clients send no ALPN and the setting has no effect.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = min_version
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(certfile=os.fspath(cert_path), keyfile=os.fspath(key_path))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class HostContexts:
    """One server context per hosted domain (ADR 0023), and the certificate each presents.

    A direct-TLS or HTTPS client names its host in SNI (RFC 6066 §3): every context's
    ``sni_callback`` switches the handshake to that host's context, and an unknown or missing
    name keeps the default host's. STARTTLS comes after the stream header, so the transport
    picks the context from the stream's ``to`` (:meth:`for_host`). Channel binding
    (``tls-server-end-point``) must hash the certificate actually presented:
    :meth:`cert_der` maps the context a handshake ended on to it. :meth:`update` swaps the
    whole map at once (a reload that adds a host); connections keep the context they had.
    """

    def __init__(
        self,
        default: str,
        certs: Mapping[str, tuple[Path, Path]],
        *,
        alpn: Sequence[str] = (ALPN_XMPP_CLIENT,),
    ) -> None:
        self._alpn = tuple(alpn)
        self._by_name: dict[str, ssl.SSLContext] = {}
        self._der: dict[int, bytes] = {}
        self._kept: list[ssl.SSLContext] = []
        """Every context ever built: a context's id stays its own while a connection uses it."""
        self.default = default
        self.update(default, certs)

    def update(self, default: str, certs: Mapping[str, tuple[Path, Path]]) -> None:
        """Build the contexts of ``certs`` (host -> certificate and key files) and use them
        from now on. Raises ``OSError``, ``ssl.SSLError`` or ``ValueError`` naming nothing:
        the caller says which host's files failed (nothing is swapped then)."""
        by_name: dict[str, ssl.SSLContext] = {}
        der: dict[int, bytes] = {}
        for host, (cert, key) in certs.items():
            try:
                ctx = server_context(cert, key, alpn=self._alpn)
                der[id(ctx)] = certificate_der(cert)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise HostCertificateError(host, cert, key, exc) from None
            ctx.sni_callback = self._sni
            by_name[host] = by_name[_idna(host)] = ctx
            self._kept.append(ctx)
        if default not in by_name:
            raise ValueError(f"no certificate for the default host {default}")
        self._der.update(der)
        self._by_name, self.default = by_name, default

    def for_host(self, domain: str) -> ssl.SSLContext:
        """The context of hosted ``domain`` (the default host's for any other name)."""
        return self._by_name.get(domain) or self._by_name[self.default]

    @property
    def entry(self) -> ssl.SSLContext:
        """The context a handshake starts with before SNI is known."""
        return self._by_name[self.default]

    def cert_der(self, ctx: ssl.SSLContext) -> bytes:
        """The DER certificate ``ctx`` presents (for RFC 5929 channel binding)."""
        return self._der.get(id(ctx)) or self._der[id(self.entry)]

    def _sni(
        self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext
    ) -> None:
        if not server_name:
            return  # no SNI: the context the handshake started with (RFC 6066 §3)
        chosen = self._by_name.get(server_name.rstrip(".").lower())
        if chosen is not None and chosen is not ctx:
            conn.context = chosen


class HostCertificateError(ValueError):
    """A hosted domain's certificate or key could not be loaded."""

    def __init__(self, host: str, cert: Path, key: Path, cause: Exception) -> None:
        super().__init__(
            f"the TLS certificate {cert} or its key {key} of host {host} cannot be loaded ({cause})"
        )
        self.host = host


def client_context_insecure(*, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """Return a client context that verifies nothing. For tests against self-signed servers only.

    Never use it for s2s or any real peer: without verification TLS gives no protection against
    an active attacker (RFC 6120 §13.7.2).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def certificate_der(cert_path: Path) -> bytes:
    """Return the DER encoding of the first certificate in a PEM file (the leaf).

    The server needs it for ``tls-server-end-point`` channel binding (RFC 5929 §4.1): Python's
    ``ssl`` module exposes the peer's certificate but not our own.
    """
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_fingerprint(cert_path: Path) -> str:
    """Return the SHA-256 fingerprint of the leaf certificate as lowercase hex, for operators.

    Clients that pin self-signed certificates show this value for comparison.
    """
    return hashlib.sha256(certificate_der(cert_path)).hexdigest()


def _idna(domain: str) -> str:
    """Return the A-label form of ``domain``: X.509 DNS names are ASCII (RFC 5280 §4.2.1.6)."""
    domain = domain.rstrip(".")
    if not domain:
        raise ValueError("empty domain")
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"not a valid domain name: {domain!r}") from exc


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` via a temporary file created with ``mode`` and a rename.

    Creating the file with its final mode (not chmod afterwards) means the private key is never
    readable by others, not even for a moment; the rename means readers never see half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left behind by an earlier crash of a process with the same pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have removed bits we asked for; never adds any
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def s2s_server_contexts(
    default: str,
    certs: Mapping[str, tuple[Path, Path]],
    *,
    verify_peers: bool,
    ca_file: str | None = None,
) -> HostContexts:
    """The hosts' contexts for incoming server-to-server streams (ADR 0025).

    ALPN ``xmpp-server`` (XEP-0368). With ``verify_peers`` the peer is asked for its
    certificate (``CERT_OPTIONAL``) against ``ca_file`` or the system's CAs, so SASL EXTERNAL
    (XEP-0178) can be offered; OpenSSL then fails a handshake whose certificate does not
    verify, which is why dialback policy (``certificates+dialback``) does not ask: Python's
    ``ssl`` has no verify callback to accept an unverified certificate and fall back."""
    contexts = HostContexts(default, certs, alpn=(ALPN_XMPP_SERVER,))
    if verify_peers:
        for ctx in {id(c): c for c in contexts._by_name.values()}.values():
            ctx.verify_mode = ssl.CERT_OPTIONAL
            if ca_file:
                ctx.load_verify_locations(cafile=ca_file)
            else:
                ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return contexts


def s2s_client_context(
    cert: tuple[Path, Path] | None,
    *,
    verify: bool,
    ca_file: str | None = None,
    alpn: Sequence[str] = (),
) -> ssl.SSLContext:
    """The context of an outgoing server-to-server stream (ADR 0025).

    ``verify``: the peer's chain against ``ca_file`` (or the system's CAs) and its name
    against the domain (``server_hostname``; RFC 6125 DNS-ID, what OpenSSL checks). Without
    it (a dialback fallback) nothing is checked: dialback, not TLS, authenticates then.
    ``cert`` is our host's certificate, presented for the peer's SASL EXTERNAL."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION
    if verify:
        if ca_file:
            ctx.load_verify_locations(cafile=ca_file)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(certfile=os.fspath(cert[0]), keyfile=os.fspath(cert[1]))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def peer_matches(peer: dict[str, object] | None, domain: str) -> bool:
    """Does a *verified* peer certificate (``getpeercert()``) name ``domain`` (RFC 6125 §6.4:
    a DNS-ID, exact or with a wildcard in the leftmost label; the CN only without SANs)?"""
    if not peer:
        return False
    wanted = _idna(domain).lower()
    sans = [v for k, v in peer.get("subjectAltName", ()) if k == "DNS"]  # type: ignore[attr-defined]
    if not sans:
        for rdn in peer.get("subject", ()):  # type: ignore[attr-defined]
            sans += [v for k, v in rdn if k == "commonName"]
    for name in sans:
        name = str(name).lower().rstrip(".")
        if name == wanted:
            return True
        if name.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == name[2:]:
            return True
    return False
