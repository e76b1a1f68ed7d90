"""Sans-IO SASL server for client-to-server streams (RFC 6120 §6).

Mechanisms: SCRAM-SHA-256(-PLUS) and SCRAM-SHA-1(-PLUS) (RFC 5802, RFC 7677) through scramp,
with ``tls-server-end-point`` channel binding (RFC 5929 §4), and PLAIN (RFC 4616) over TLS only,
checked against the stored SCRAM keys so that no password or password hash is ever stored.

Emits no events itself: :func:`derive_credentials` builds the ``credentials`` value that account
events carry. Reads no views: the caller injects ``lookup(localpart)``, which reads the accounts
view. No clock, socket or thread is used; :class:`LoginLimiter` takes the time as an argument.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from scramp import ScramException, ScramMechanism
from scramp.core import Gs2Header
from scramp.utils import ServerError, saslprep

__all__ = [
    "CB_TLS_SERVER_END_POINT",
    "DEFAULT_ITERATIONS",
    "MAX_PAYLOAD",
    "PLAIN",
    "SCRAM_SHA_1",
    "SCRAM_SHA_1_PLUS",
    "SCRAM_SHA_256",
    "SCRAM_SHA_256_PLUS",
    "Challenge",
    "Condition",
    "Credentials",
    "Failure",
    "LoginLimiter",
    "SaslEncodingError",
    "SaslResult",
    "SaslServer",
    "Success",
    "channel_binding_data",
    "decode_sasl_payload",
    "derive_credentials",
    "encode_sasl_payload",
    "offered_mechanisms",
    "tls_server_end_point",
]

SCRAM_SHA_1 = "SCRAM-SHA-1"
SCRAM_SHA_256 = "SCRAM-SHA-256"
SCRAM_SHA_1_PLUS = "SCRAM-SHA-1-PLUS"
SCRAM_SHA_256_PLUS = "SCRAM-SHA-256-PLUS"
PLAIN = "PLAIN"

CB_TLS_SERVER_END_POINT = "tls-server-end-point"
"""RFC 5929 §4: the only channel-binding type we offer. ``tls-unique`` is unsafe with TLS 1.2
without the extended master secret and undefined for TLS 1.3 (RFC 9266 §1); scramp does not
support ``tls-exporter``."""

_STORED_MECHANISMS = (SCRAM_SHA_256, SCRAM_SHA_1)
"""Credentials are derived for these; PLAIN is checked against the first one present."""

_HASHES: Mapping[str, str] = {SCRAM_SHA_1: "sha1", SCRAM_SHA_256: "sha256"}

DEFAULT_ITERATIONS = 4096
"""RFC 7677 §4 and RFC 5802 §5.1: at least 4096 iterations. scramp refuses fewer, on both the
server and the client side, so tests cannot go lower either."""
MAX_ITERATIONS = 10_000_000
"""scramp's upper bound (a DoS guard for clients); stored credentials above it are unusable."""
_MIN_SALT_BYTES = 12
"""scramp refuses shorter salts."""

MAX_PAYLOAD = 16 * 1024
"""Largest decoded SASL message accepted. Real SCRAM and PLAIN messages are a few hundred bytes;
this bounds the work a peer can cause before authenticating."""

Credentials = dict[str, dict[str, str | int]]
"""``{mechanism: {"salt": b64, "i": int, "stored_key": b64, "server_key": b64}}``; JSON only,
because it travels in account events."""

Lookup = Callable[[str], Mapping[str, Mapping[str, str | int]] | None]


class Condition(enum.StrEnum):
    """SASL failure conditions (RFC 6120 §6.5), as the element names used in ``<failure/>``."""

    ABORTED = "aborted"
    ACCOUNT_DISABLED = "account-disabled"
    CREDENTIALS_EXPIRED = "credentials-expired"
    ENCRYPTION_REQUIRED = "encryption-required"
    INCORRECT_ENCODING = "incorrect-encoding"
    INVALID_AUTHZID = "invalid-authzid"
    INVALID_MECHANISM = "invalid-mechanism"
    MALFORMED_REQUEST = "malformed-request"
    MECHANISM_TOO_WEAK = "mechanism-too-weak"
    NOT_AUTHORIZED = "not-authorized"
    TEMPORARY_AUTH_FAILURE = "temporary-auth-failure"


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``<challenge/>`` with ``data`` and wait for the client's ``<response/>``."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    """Send ``<success/>`` with ``data`` (RFC 6120 §6.3.10: SCRAM's server-final message rides
    here, not in a further challenge) and restart the stream as ``username``."""

    data: bytes
    username: str
    """The normalised localpart that authenticated."""


@dataclass(frozen=True, slots=True)
class Failure:
    """Send ``<failure/>`` with ``condition`` and, if not empty, ``<text/>``.

    ``text`` never says whether the account exists (RFC 6120 §6.5.10 allows a generic
    ``not-authorized`` for exactly that reason).
    """

    condition: Condition
    text: str = ""


SaslResult = Challenge | Success | Failure


class SaslEncodingError(ValueError):
    """The payload of ``<auth/>`` or ``<response/>`` is not valid base64 (RFC 6120 §6.4.2);
    the caller answers with ``incorrect-encoding``."""


# --------------------------------------------------------------------------------------------
# Credentials and payload encoding


def derive_credentials(password: str, iterations: int = DEFAULT_ITERATIONS) -> Credentials:
    """Return the salted SCRAM keys for ``password``, for both stored mechanisms.

    Only ``StoredKey`` and ``ServerKey`` are kept (RFC 5802 §3): they let the server verify a
    client and prove itself, but do not let anyone who reads them log in. Each mechanism gets its
    own random salt. The password is SASLprep'd (RFC 4013) by scramp, as RFC 5802 §2.2 requires.
    The result contains only JSON types because it goes into an event.

    Raises ``ValueError`` for a password SASLprep forbids or an iteration count out of range.
    """
    if not isinstance(iterations, int) or not DEFAULT_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be in [{DEFAULT_ITERATIONS}, {MAX_ITERATIONS}]")
    try:
        prepared = saslprep(password)
    except ScramException as exc:
        raise ValueError("password contains characters SASLprep prohibits") from exc
    if not prepared:
        raise ValueError("password is empty after SASLprep")
    result: Credentials = {}
    for name in _STORED_MECHANISMS:
        salt, stored_key, server_key, i = ScramMechanism(name).make_auth_info(
            password, iteration_count=iterations
        )
        result[name] = {
            "salt": _b64(salt),
            "i": int(i),
            "stored_key": _b64(stored_key),
            "server_key": _b64(server_key),
        }
    return result


def decode_sasl_payload(text: str) -> bytes:
    """Decode the character data of ``<auth/>`` or ``<response/>`` (RFC 6120 §6.4.2).

    ``"="`` is an explicitly empty response and an empty element is no data; both give
    ``b""``. Leading and trailing XML whitespace is tolerated, but anything else outside the
    base64 alphabet, or bad padding, raises :class:`SaslEncodingError` (``incorrect-encoding``).
    """
    text = text.strip(" \t\r\n")
    if text in ("", "="):
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise SaslEncodingError("invalid base64 in SASL payload") from exc


def encode_sasl_payload(data: bytes) -> str:
    """Encode ``data`` for ``<challenge/>`` or ``<success/>``; empty data is ``"="`` (RFC 6120
    §6.4.2), so the peer can tell it from no data."""
    return _b64(data) if data else "="


# --------------------------------------------------------------------------------------------
# Mechanism offer


def offered_mechanisms(*, tls: bool, channel_binding: bool, allow_plain: bool = True) -> list[str]:
    """Return the mechanisms to advertise, strongest first (RFC 6120 §6.3.3).

    -PLUS variants only when channel-binding data for this connection exists (RFC 5802 §6; a
    server that advertises them must then pass the same data to :class:`SaslServer`, which is
    how downgrades are caught). PLAIN only over TLS (RFC 4616 §6: it sends the password itself).
    """
    mechanisms: list[str] = []
    if tls and channel_binding:
        mechanisms += [SCRAM_SHA_256_PLUS, SCRAM_SHA_1_PLUS]
    mechanisms += [SCRAM_SHA_256, SCRAM_SHA_1]
    if tls and allow_plain:
        mechanisms.append(PLAIN)
    return mechanisms


# --------------------------------------------------------------------------------------------
# Channel binding


def tls_server_end_point(cert_der: bytes) -> bytes | None:
    """Return the ``tls-server-end-point`` channel-binding data for a certificate (RFC 5929 §4.1).

    That is the certificate's DER hashed with the hash of its signature algorithm, where MD5 and
    SHA-1 are replaced by SHA-256. Returns ``None`` when the binding is undefined: signature
    algorithms without a single hash (Ed25519, Ed448) or ones we cannot parse.
    """
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        algorithm = cert.signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm):
        return None
    if algorithm is None:
        return None
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert_der)
    return digest.finalize()


def channel_binding_data(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, *, server_cert_der: bytes | None = None
) -> tuple[str, bytes] | None:
    """Return ``("tls-server-end-point", data)`` for a finished TLS handshake, or ``None``.

    The binding hashes the *server's* certificate. A client-side object reports it through
    ``getpeercert``; Python's ``ssl`` has no way to read back a server's own certificate, so the
    server side must pass ``server_cert_der`` (see :func:`xes.tlsutil.certificate_der`; with SNI,
    the certificate that was actually selected). anyio's ``TLSStream`` exposes the object as
    ``stream.extra(TLSAttribute.ssl_object)``. ``None`` means: do not offer -PLUS.
    """
    der = server_cert_der if ssl_object.server_side else ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    data = tls_server_end_point(der)
    return None if data is None else (CB_TLS_SERVER_END_POINT, data)


# --------------------------------------------------------------------------------------------
# SASL server


class _State(enum.Enum):
    START = enum.auto()
    AWAIT_INITIAL = enum.auto()  # empty challenge sent for a missing initial response
    SCRAM_FINAL = enum.auto()  # server-first sent, waiting for client-final
    DONE = enum.auto()


@dataclass(frozen=True, slots=True)
class _StoredKeys:
    hash_name: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


class _Gs2HeaderWithAuthzid(Gs2Header):  # type: ignore[misc]  # scramp has no type hints
    """A scramp GS2 header that renders the client's original header, authzid included.

    scramp refuses a non-empty authzid, yet RFC 6120 §6.3.8 lets a client send its own bare JID.
    We hand scramp the header without it, then swap this in so that the ``c=`` check of the
    client-final message (RFC 5802 §5.1: base64 of the *whole* GS2 header) still compares
    against what the client sent.
    """

    def __init__(self, base: Gs2Header, original: str) -> None:
        super().__init__(base.gs2_char, base.cb_name)
        self._original = original

    def __str__(self) -> str:
        return self._original

    def __bytes__(self) -> bytes:
        return self._original.encode("utf-8")


# scramp errors that mean "authentication failed" rather than "could not parse": answered with
# not-authorized (RFC 6120 §6.5.10). Downgrade detection (RFC 5802 §6, flag "y" while we offer
# -PLUS) is among them: the credentials may be fine, but the connection is not trustworthy.
_NOT_AUTHORIZED_ERRORS = frozenset(
    {
        ServerError.INVALID_PROOF,
        ServerError.CHANNEL_BINDINGS_DONT_MATCH,
        ServerError.SERVER_DOES_SUPPORT_CHANNEL_BINDING,
        ServerError.CHANNEL_BINDING_NOT_SUPPORTED,
        ServerError.UNSUPPORTED_CHANNEL_BINDING_TYPE,
        ServerError.UNKNOWN_USER,
    }
)

# A per-process key for the stand-in credentials of unknown users. Stable for the life of the
# process, so that asking twice about the same unknown user gives the same salt, as it would for
# a real account.
_DUMMY_SECRET = secrets.token_bytes(32)


class _LookupFailed(Exception):
    """Carries an exception from ``lookup`` through scramp, which wraps whatever ``auth_fn``
    raises into a ScramException; ours is our fault, not the client's, and must propagate."""


class SaslServer:
    """One SASL exchange on one stream, sans-IO (RFC 6120 §6.4).

    Feed the decoded payload of ``<auth/>`` and then of each ``<response/>`` to :meth:`step`; it
    returns what to send. ``<abort/>`` maps to :meth:`abort`. After a :class:`Success` or
    :class:`Failure` the exchange is over; the caller starts a new ``SaslServer`` for a retry
    (RFC 6120 §6.4.5) and applies its :class:`LoginLimiter` first.

    ``lookup(localpart)`` returns the stored :data:`Credentials` for an already normalised
    localpart, or ``None``. Exceptions from it propagate (a storage fault is ours, not a login
    failure). ``normalize_username`` maps the SASL username to that localpart (for XMPP, PRECIS
    UsernameCaseMapped, RFC 7622 §3.3) and raises ``ValueError`` for names that cannot exist.

    ``channel_binding`` is the data from :func:`channel_binding_data`, and must be given exactly
    when -PLUS was offered: scramp uses it both for -PLUS and to detect downgrades on the plain
    SCRAM mechanisms. ``domain`` is the served domain; without it any non-empty authzid is
    refused. ``iterations`` is the count shown for unknown users and should be the one new
    credentials are derived with, so that the answer does not reveal whether an account exists.
    """

    def __init__(
        self,
        mechanism: str,
        lookup: Lookup,
        *,
        channel_binding: tuple[str, bytes] | None,
        tls: bool,
        normalize_username: Callable[[str], str],
        allow_plain: bool = True,
        domain: str | None = None,
        iterations: int = DEFAULT_ITERATIONS,
    ) -> None:
        if channel_binding is not None and channel_binding[0] != CB_TLS_SERVER_END_POINT:
            raise ValueError(f"unsupported channel binding type {channel_binding[0]!r}")
        if not DEFAULT_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise ValueError(f"iterations must be in [{DEFAULT_ITERATIONS}, {MAX_ITERATIONS}]")
        self.mechanism = mechanism
        self._lookup = lookup
        self._channel_binding = channel_binding
        self._tls = tls
        self._normalize = normalize_username
        self._allow_plain = allow_plain
        self._domain = domain
        self._iterations = iterations
        self._state = _State.START
        self._scram: Any = None  # scramp's ScramServer (untyped), built on the first message
        self._base_mechanism = mechanism.removesuffix("-PLUS")
        self._authzid = ""
        self._username: str | None = None  # set by _auth_fn only for an existing account
        self._attempted: str | None = None

    @property
    def attempted_username(self) -> str | None:
        """The normalised localpart the client tried to log in as, known or not; ``None`` before
        the client named one or if the name cannot be a localpart. For the per-account count of
        :class:`LoginLimiter` after a :class:`Failure`."""
        return self._attempted

    @property
    def done(self) -> bool:
        """True once a :class:`Success` or :class:`Failure` has been returned."""
        return self._state is _State.DONE

    def abort(self) -> Failure:
        """Handle the client's ``<abort/>`` (RFC 6120 §6.4.4): the exchange ends, ``aborted``."""
        self._state = _State.DONE
        return Failure(Condition.ABORTED)

    def step(self, data: bytes) -> SaslResult:
        """Process one client message and return the server's answer.

        Every client input, however malformed, gives a result; only our own misuse (calling
        after the exchange ended, a failing ``lookup``, corrupt stored credentials) raises.
        """
        if self._state is _State.DONE:
            raise RuntimeError("the SASL exchange has already finished")
        if not isinstance(data, bytes):
            raise TypeError("step() takes the decoded payload as bytes")
        try:
            result = self._step(data)
        except _LookupFailed as exc:
            self._state = _State.DONE
            raise exc.__cause__ or exc from None
        if not isinstance(result, Challenge):
            self._state = _State.DONE
        return result

    def _step(self, data: bytes) -> SaslResult:
        if self._state is _State.START:
            refusal = self._check_mechanism()
            if refusal is not None:
                return refusal
        if len(data) > MAX_PAYLOAD:
            return Failure(Condition.MALFORMED_REQUEST, "SASL message too large")
        if not data:
            # RFC 6120 §6.4.2: no initial response, so send an empty challenge for it. PLAIN and
            # SCRAM are client-first, so an empty message at any later point is malformed.
            if self._state is _State.START:
                self._state = _State.AWAIT_INITIAL
                return Challenge(b"")
            return Failure(Condition.MALFORMED_REQUEST, "empty SASL message")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return Failure(Condition.MALFORMED_REQUEST, "SASL message is not UTF-8")
        if self.mechanism == PLAIN:
            return self._plain(text)
        if self._state is _State.SCRAM_FINAL:
            return self._scram_final(text)
        return self._scram_first(text)

    def _check_mechanism(self) -> Failure | None:
        """Refuse a mechanism we did not offer (RFC 6120 §6.4.5, ``invalid-mechanism``)."""
        if self.mechanism == PLAIN:
            if not self._allow_plain:
                return Failure(Condition.INVALID_MECHANISM)
            if not self._tls:
                # RFC 6120 §6.5.4: the mechanism exists but needs an encrypted stream.
                return Failure(Condition.ENCRYPTION_REQUIRED, "PLAIN requires TLS")
            return None
        if self._base_mechanism not in _HASHES:
            return Failure(Condition.INVALID_MECHANISM)
        if self.mechanism != self._base_mechanism and self._channel_binding is None:
            return Failure(Condition.INVALID_MECHANISM, "channel binding is not available")
        return None

    # -- PLAIN (RFC 4616) -------------------------------------------------------------------

    def _plain(self, text: str) -> SaslResult:
        """Check ``[authzid] NUL authcid NUL passwd`` against the stored SCRAM keys.

        SaltedPassword = Hi(SASLprep(passwd), salt, i) and StoredKey = H(HMAC(SaltedPassword,
        "Client Key")) (RFC 5802 §3), compared in constant time. Unknown users get the same
        work against stand-in credentials, so timing does not tell them apart.
        """
        parts = text.split("\x00")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return Failure(Condition.MALFORMED_REQUEST, "expected authzid NUL authcid NUL passwd")
        authzid, authcid, password = parts
        try:
            # RFC 4616 §4: the server prepares authcid and password with SASLprep.
            authcid = saslprep(authcid)
            password = saslprep(password)
        except ScramException:
            return Failure(Condition.NOT_AUTHORIZED)
        localpart = self._attempted = self._normalize_or_none(authcid)
        keys = self._stored_keys(localpart) if localpart is not None else None
        known = keys is not None
        if keys is None:
            keys = self._dummy_keys(_STORED_MECHANISMS[0], authcid)
        salted = hashlib.pbkdf2_hmac(
            keys.hash_name, password.encode("utf-8"), keys.salt, keys.iterations
        )
        client_key = hmac.digest(salted, b"Client Key", keys.hash_name)
        stored_key = hashlib.new(keys.hash_name, client_key).digest()
        if not hmac.compare_digest(stored_key, keys.stored_key) or not known:
            return Failure(Condition.NOT_AUTHORIZED)
        assert localpart is not None  # known implies a lookup happened
        if not self._authzid_allowed(authzid, localpart):
            return Failure(Condition.INVALID_AUTHZID)
        return Success(b"", localpart)

    # -- SCRAM (RFC 5802, RFC 7677) ----------------------------------------------------------

    def _scram_first(self, text: str) -> SaslResult:
        """Handle client-first-message; answer with server-first-message as a challenge."""
        first = text.find(",")
        second = text.find(",", first + 1) if first >= 0 else -1
        if second < 0:
            return Failure(Condition.MALFORMED_REQUEST, "missing GS2 header")
        authzid_field = text[first + 1 : second]
        if authzid_field:
            # RFC 5802 §7: authzid = "a=" saslname, where "," and "=" are escaped as =2C, =3D.
            authzid = _unescape_saslname(authzid_field[2:]) if authzid_field[:2] == "a=" else None
            if not authzid:
                return Failure(Condition.MALFORMED_REQUEST, "malformed authzid in GS2 header")
            self._authzid = authzid
        scram = ScramMechanism(self.mechanism).make_server(
            self._auth_fn, channel_binding=self._channel_binding
        )
        self._scram = scram
        try:
            scram.set_client_first(f"{text[:first]},,{text[second + 1 :]}")
            server_first: str = scram.get_server_first()
        except ScramException as exc:
            return self._scram_failure(exc)
        if authzid_field:
            scram.gs2_header = _Gs2HeaderWithAuthzid(scram.gs2_header, text[: second + 1])
        self._state = _State.SCRAM_FINAL
        return Challenge(server_first.encode("utf-8"))

    def _scram_final(self, text: str) -> SaslResult:
        """Handle client-final-message; on success the server-final-message goes in
        ``<success/>`` (RFC 6120 §6.3.10)."""
        scram = self._scram
        assert scram is not None  # SCRAM_FINAL is entered only after building it
        try:
            scram.set_client_final(text)
            server_final: str = scram.get_server_final()
        except ScramException as exc:
            return self._scram_failure(exc)
        username = self._username
        if username is None:
            # Stand-in credentials cannot produce a valid proof; this is a second lock.
            return Failure(Condition.NOT_AUTHORIZED)
        if not self._authzid_allowed(self._authzid, username):
            return Failure(Condition.INVALID_AUTHZID)
        return Success(server_final.encode("utf-8"), username)

    def _auth_fn(self, username: str) -> tuple[bytes, bytes, bytes, int]:
        """scramp's credential callback, called with the SASLprep'd ``n=`` username.

        Never returns ``None`` (scramp would answer ``e=unknown-user`` at once): an unknown user
        gets stand-in credentials and fails only at the proof, like a wrong password, so neither
        the answer, its timing nor the salt reveals which it was (RFC 6120 §13.11, directory
        harvesting; §6.5.10 lets us answer both with ``not-authorized``).
        """
        localpart = self._attempted = self._normalize_or_none(username)
        keys = self._stored_keys(localpart) if localpart is not None else None
        if keys is None:
            keys = self._dummy_keys(self._base_mechanism, username)
        else:
            self._username = localpart
        return keys.salt, keys.stored_key, keys.server_key, keys.iterations

    def _scram_failure(self, exc: ScramException) -> Failure:
        if isinstance(exc.__cause__, _LookupFailed):
            raise exc.__cause__  # step() unwraps it
        if exc.server_error in _NOT_AUTHORIZED_ERRORS:
            if exc.server_error is ServerError.INVALID_PROOF:
                return Failure(Condition.NOT_AUTHORIZED)
            return Failure(Condition.NOT_AUTHORIZED, "channel binding failed")
        return Failure(Condition.MALFORMED_REQUEST, str(exc.args[0]) if exc.args else "")

    # -- Shared helpers ----------------------------------------------------------------------

    def _normalize_or_none(self, username: str) -> str | None:
        try:
            return self._normalize(username)
        except ValueError:
            return None

    def _stored_keys(self, localpart: str) -> _StoredKeys | None:
        """Look up the account's keys for this mechanism (PLAIN: the strongest stored one)."""
        try:
            credentials = self._lookup(localpart)
        except Exception as exc:
            raise _LookupFailed from exc
        if credentials is None:
            return None
        names = _STORED_MECHANISMS if self.mechanism == PLAIN else (self._base_mechanism,)
        for name in names:
            entry = credentials.get(name)
            if entry is not None:
                try:
                    return _parse_stored(name, entry)
                except ValueError as exc:
                    raise _LookupFailed from exc
        return None  # e.g. an account with SHA-256 keys only, asked for SCRAM-SHA-1

    def _dummy_keys(self, mechanism: str, username: str) -> _StoredKeys:
        """Stand-in credentials for an unknown user, stable per username for this process."""
        hash_name = _HASHES[mechanism]
        size = hashlib.new(hash_name).digest_size

        def derive(label: bytes) -> bytes:
            msg = label + b"\x00" + mechanism.encode() + b"\x00" + username.encode("utf-8")
            return hmac.digest(_DUMMY_SECRET, msg, "sha256")

        return _StoredKeys(
            hash_name=hash_name,
            salt=derive(b"salt"),  # 32 bytes, like scramp's own salts
            iterations=self._iterations,
            stored_key=derive(b"stored")[:size],
            server_key=derive(b"server")[:size],
        )

    def _authzid_allowed(self, authzid: str, localpart: str) -> bool:
        """RFC 6120 §6.3.8: we allow no impersonation, so an authzid must be absent or be the
        user's own bare JID (compared after normalising both parts, RFC 7622 §3)."""
        if not authzid:
            return True
        if self._domain is None or "/" in authzid:
            return False
        local, at, domain = authzid.partition("@")
        if not at or self._normalize_or_none(local) != localpart:
            return False
        ours = _domain_key(self._domain)
        return ours is not None and _domain_key(domain) == ours


# --------------------------------------------------------------------------------------------
# Failed-login limiter


@dataclass(slots=True)
class _Record:
    window_start: float
    failures: int
    locked_until: float


class LoginLimiter:
    """Limits failed logins per account and per client address (RFC 6120 §13.12 asks servers to
    resist dictionary attacks). Pure: the caller passes ``now`` (monotonic seconds).

    A key that collects ``max_failures`` failures within ``window_s`` seconds is locked for
    ``lockout_s`` seconds. An attempt is allowed only if neither the account nor the address is
    locked. IPv6 addresses are keyed by their /64, which one client usually controls whole.

    A success clears the account's record but not the address's: otherwise an attacker could
    reset their address between guesses by logging in to an account of their own. Note that the
    account lock lets anyone delay a victim's logins by ``lockout_s``; it is short for that
    reason. Memory is bounded: each table keeps at most ``max_entries`` keys, dropping expired
    and then least recently failed ones. Per node only; it is not replicated.
    """

    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 60,
        lockout_s: float = 60,
        *,
        max_entries: int = 10_000,
    ) -> None:
        if max_failures < 1 or max_entries < 1:
            raise ValueError("max_failures and max_entries must be at least 1")
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_entries = max_entries
        self._accounts: OrderedDict[str, _Record] = OrderedDict()
        self._addresses: OrderedDict[str, _Record] = OrderedDict()

    def check(self, account: str, address: str, now: float) -> bool:
        """Return True if a login attempt for ``account`` from ``address`` may proceed."""
        return not (
            self._locked(self._accounts, account, now)
            or self._locked(self._addresses, _address_key(address), now)
        )

    def record_failure(self, account: str, address: str, now: float) -> None:
        """Count a failed attempt against both the account and the address."""
        self._fail(self._accounts, account, now)
        self._fail(self._addresses, _address_key(address), now)

    def record_success(self, account: str, address: str, now: float) -> None:
        """Forget the account's failures (see the class docstring for why not the address's)."""
        del address, now  # part of the signature for symmetry and future policies
        self._accounts.pop(account, None)

    def __len__(self) -> int:
        """Number of keys tracked, for statistics and tests."""
        return len(self._accounts) + len(self._addresses)

    def _locked(self, table: OrderedDict[str, _Record], key: str, now: float) -> bool:
        record = table.get(key)
        return record is not None and now < record.locked_until

    def _fail(self, table: OrderedDict[str, _Record], key: str, now: float) -> None:
        record = table.get(key)
        if record is None or self._expired(record, now):
            record = _Record(window_start=now, failures=0, locked_until=0.0)
        record.failures += 1
        if record.failures >= self.max_failures:
            record.locked_until = now + self.lockout_s
            # The lock is its own penalty; counting starts afresh once it ends.
            record.window_start = record.locked_until
            record.failures = 0
        table[key] = record
        table.move_to_end(key)
        # The table is in order of last failure, so expired records gather at the front: dropping
        # them from there costs amortised O(1). Past the cap, the least recently failed key goes,
        # locked or not; a flood of fresh keys can thus unlock one, which the cap trades for
        # bounded memory.
        while table:
            oldest_key, oldest = next(iter(table.items()))
            if len(table) <= self.max_entries and not self._expired(oldest, now):
                break
            del table[oldest_key]

    def _expired(self, record: _Record, now: float) -> bool:
        return now >= record.locked_until and now - record.window_start >= self.window_s


# --------------------------------------------------------------------------------------------
# Module helpers


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse_stored(name: str, entry: Mapping[str, str | int]) -> _StoredKeys:
    """Validate one stored credential entry; ``ValueError`` means our data is corrupt."""
    try:
        salt = base64.b64decode(str(entry["salt"]), validate=True)
        stored_key = base64.b64decode(str(entry["stored_key"]), validate=True)
        server_key = base64.b64decode(str(entry["server_key"]), validate=True)
        iterations = entry["i"]
    except (KeyError, binascii.Error) as exc:
        raise ValueError(f"corrupt stored {name} credentials") from exc
    size = hashlib.new(_HASHES[name]).digest_size
    if (
        not isinstance(iterations, int)
        or not DEFAULT_ITERATIONS <= iterations <= MAX_ITERATIONS
        or len(salt) < _MIN_SALT_BYTES
        or len(stored_key) != size
        or len(server_key) != size
    ):
        raise ValueError(f"corrupt stored {name} credentials")
    return _StoredKeys(_HASHES[name], salt, iterations, stored_key, server_key)


def _unescape_saslname(value: str) -> str | None:
    """Undo RFC 5802 §5.1 saslname escaping; ``None`` if an ``=`` starts no valid escape."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "=":
            escape = value[i : i + 3]
            if escape == "=2C":
                out.append(",")
            elif escape == "=3D":
                out.append("=")
            else:
                return None
            i += 3
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _domain_key(domain: str) -> str | None:
    """Comparable form of a domainpart: A-labels, lower case, no trailing dot (RFC 7622 §3.2)."""
    try:
        return domain.rstrip(".").encode("idna").decode("ascii").lower() or None
    except UnicodeError:
        return None


def _address_key(address: str) -> str:
    """Key for the per-address table: IPv4 as is (also when IPv4-mapped), IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip), 64), strict=False))
    return str(ip)
