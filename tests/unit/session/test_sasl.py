"""xes.session.sasl: SCRAM and PLAIN exchanges, channel binding, credentials, the limiter.

SCRAM is driven by scramp's own client and, where scramp's client cannot (an authzid in the GS2
header), by a small independent client written from RFC 5802 §3 below.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketListener
from anyio.streams.tls import TLSAttribute, TLSStream
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scramp import ScramClient, ScramException
from scramp.core import CBindData

from xes import tlsutil
from xes.session import sasl
from xes.session.sasl import (
    Challenge,
    Condition,
    Failure,
    LoginLimiter,
    SaslEncodingError,
    SaslServer,
    Success,
    channel_binding_data,
    decode_sasl_payload,
    derive_credentials,
    encode_sasl_payload,
    offered_mechanisms,
    tls_server_end_point,
)

PASSWORD = "correct horse battery staple \u00e9t\u00e9"
DOMAIN = "example.org"
CB_A = ("tls-server-end-point", b"\x01" * 32)
CB_B = ("tls-server-end-point", b"\x02" * 32)
SCRAM = ["SCRAM-SHA-1", "SCRAM-SHA-256"]
PLUS = ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"]

CREDS = derive_credentials(PASSWORD)
ACCOUNTS: dict[str, Any] = {
    "juliet": CREDS,
    "sha256only": {"SCRAM-SHA-256": derive_credentials(PASSWORD)["SCRAM-SHA-256"]},
    "sha1only": {"SCRAM-SHA-1": derive_credentials(PASSWORD)["SCRAM-SHA-1"]},
}


def normalize(username: str) -> str:
    """Stand-in for PRECIS UsernameCaseMapped: lower case, and some names cannot exist."""
    if "@" in username or "/" in username or not username:
        raise ValueError("not a localpart")
    return username.lower()


def server(
    mechanism: str,
    *,
    channel_binding: tuple[str, bytes] | None = None,
    tls: bool = True,
    lookup: Callable[[str], Any] | None = None,
    **kwargs: Any,
) -> SaslServer:
    return SaslServer(
        mechanism,
        lookup or ACCOUNTS.get,
        channel_binding=channel_binding,
        tls=tls,
        normalize_username=normalize,
        domain=kwargs.pop("domain", DOMAIN),
        **kwargs,
    )


def scramp_exchange(
    srv: SaslServer, client: ScramClient, *, verify_server: bool = True
) -> Challenge | Success | Failure:
    """Run a whole SCRAM exchange; on success the client checks the server signature."""
    first = srv.step(client.get_client_first().encode())
    if not isinstance(first, Challenge):
        return first
    client.set_server_first(first.data.decode())
    result = srv.step(client.get_client_final().encode())
    if isinstance(result, Success) and verify_server:
        client.set_server_final(result.data.decode())  # raises if the signature is wrong
    return result


class MiniScramClient:
    """A SCRAM client straight from RFC 5802 §3, able to send any GS2 header."""

    def __init__(
        self,
        mechanism: str,
        username: str,
        password: str,
        gs2_header: str = "n,,",
        cb_data: bytes = b"",
    ) -> None:
        self.hash = "sha256" if mechanism.startswith("SCRAM-SHA-256") else "sha1"
        self.password = password
        self.gs2_header = gs2_header
        self.cb_data = cb_data
        self.bare = f"n={username},r=fyko+d2lbbFgONRv9qkxdawL"

    def first(self) -> bytes:
        return (self.gs2_header + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        sf = server_first.decode()
        attrs = dict(part.split("=", 1) for part in sf.split(","))
        salted = hashlib.pbkdf2_hmac(
            self.hash, self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        client_key = hmac.digest(salted, b"Client Key", self.hash)
        stored_key = hashlib.new(self.hash, client_key).digest()
        cbind = base64.b64encode(self.gs2_header.encode() + self.cb_data).decode()
        without_proof = f"c={cbind},r={attrs['r']}"
        auth_message = f"{self.bare},{sf},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, self.hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self.hash)
        self.expected_server_final = b"v=" + base64.b64encode(
            hmac.digest(server_key, auth_message, self.hash)
        )
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def run(self, srv: SaslServer) -> Challenge | Success | Failure:
        first = srv.step(self.first())
        if not isinstance(first, Challenge):
            return first
        result = srv.step(self.final(first.data))
        if isinstance(result, Success):
            assert result.data == self.expected_server_final
        return result


def client_cb(mechanism: str) -> tuple[str, bytes] | None:
    """Binding data for a client that saw our -PLUS offer (else it would signal a downgrade)."""
    return CB_A if mechanism.endswith("-PLUS") else None


def not_authorized(result: object) -> bool:
    return isinstance(result, Failure) and result.condition == Condition.NOT_AUTHORIZED


# --------------------------------------------------------------------------------------------
# Credentials


def test_derive_credentials_shape() -> None:
    creds = derive_credentials(PASSWORD, iterations=5000)
    assert set(creds) == {"SCRAM-SHA-1", "SCRAM-SHA-256"}
    for name, size in (("SCRAM-SHA-1", 20), ("SCRAM-SHA-256", 32)):
        entry = creds[name]
        assert set(entry) == {"salt", "i", "stored_key", "server_key"}
        assert entry["i"] == 5000
        assert len(base64.b64decode(str(entry["salt"]))) >= 16
        assert len(base64.b64decode(str(entry["stored_key"]))) == size
        assert len(base64.b64decode(str(entry["server_key"]))) == size
    assert creds["SCRAM-SHA-1"]["salt"] != creds["SCRAM-SHA-256"]["salt"]
    # JSON round trip: it travels inside an event.
    assert json.loads(json.dumps(creds)) == creds


def test_derive_credentials_uses_fresh_salts() -> None:
    assert derive_credentials(PASSWORD) != derive_credentials(PASSWORD)


def test_credentials_hold_no_password_material() -> None:
    dump = json.dumps(derive_credentials(PASSWORD)).encode()
    password_bytes = PASSWORD.encode()
    for needle in (
        password_bytes,
        PASSWORD.encode("ascii", "backslashreplace"),  # how json.dumps escapes it
        base64.b64encode(password_bytes),
        password_bytes.hex().encode(),
        b"correct horse",
    ):
        assert needle not in dump
    for word in PASSWORD.split():
        assert word.encode() not in dump


@pytest.mark.parametrize("iterations", [0, 1, 4095, 10_000_001])
def test_derive_credentials_iteration_bounds(iterations: int) -> None:
    with pytest.raises(ValueError):
        derive_credentials(PASSWORD, iterations=iterations)


@pytest.mark.parametrize("password", ["", "\u00ad", "bell\u0007", "\ue000private"])
def test_derive_credentials_rejects_saslprep_failures(password: str) -> None:
    with pytest.raises(ValueError):
        derive_credentials(password)


def test_saslprep_applies_to_stored_and_presented_passwords() -> None:
    # RFC 4013 §3 example: SOFT HYPHEN maps to nothing, so "I\u00adX" and "IX" are one password.
    accounts = {"romeo": derive_credentials("I\u00adX")}
    assert isinstance(server("PLAIN", lookup=accounts.get).step(b"\0romeo\0IX"), Success)
    client = ScramClient(["SCRAM-SHA-256"], "romeo", "IX")
    assert isinstance(
        scramp_exchange(server("SCRAM-SHA-256", lookup=accounts.get), client), Success
    )


# --------------------------------------------------------------------------------------------
# Payload encoding and mechanism offer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", b""),
        ("=", b""),
        ("  \n=\t", b""),
        ("AGp1bGlldABy", b"\0juliet\0r"),
        (" AGp1bGlldABy\r\n", b"\0juliet\0r"),
        ("biwsbj1qdWxpZXQ=", b"n,,n=juliet"),
    ],
)
def test_decode_sasl_payload(text: str, expected: bytes) -> None:
    assert decode_sasl_payload(text) == expected


@pytest.mark.parametrize(
    "text", ["not base64!", "AGp1b GlldABy", "biwsbj1qdWxpZXQ", "==", "b===", "é", "YQ==YQ=="]
)
def test_decode_sasl_payload_rejects_bad_base64(text: str) -> None:
    with pytest.raises(SaslEncodingError):
        decode_sasl_payload(text)
    assert issubclass(SaslEncodingError, ValueError)


@given(st.binary(max_size=200))
def test_payload_round_trip(data: bytes) -> None:
    assert decode_sasl_payload(encode_sasl_payload(data)) == data


def test_encode_empty_payload() -> None:
    assert encode_sasl_payload(b"") == "="


@pytest.mark.parametrize(
    ("tls", "cb", "allow_plain", "expected"),
    [
        (False, False, True, ["SCRAM-SHA-256", "SCRAM-SHA-1"]),
        (True, False, True, ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]),
        (True, False, False, ["SCRAM-SHA-256", "SCRAM-SHA-1"]),
        (
            True,
            True,
            True,
            ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"],
        ),
        (False, True, True, ["SCRAM-SHA-256", "SCRAM-SHA-1"]),
    ],
)
def test_offered_mechanisms(tls: bool, cb: bool, allow_plain: bool, expected: list[str]) -> None:
    assert offered_mechanisms(tls=tls, channel_binding=cb, allow_plain=allow_plain) == expected


# --------------------------------------------------------------------------------------------
# SCRAM


@pytest.mark.parametrize("mechanism", SCRAM)
@pytest.mark.parametrize("cb", [None, CB_A])
def test_scram_success(mechanism: str, cb: tuple[str, bytes] | None) -> None:
    client = ScramClient([mechanism], "Juliet", PASSWORD)  # the client offers no binding
    result = scramp_exchange(server(mechanism, channel_binding=cb), client)
    assert isinstance(result, Success)
    assert result.username == "juliet"
    assert result.data.startswith(b"v=")


@pytest.mark.parametrize("mechanism", PLUS)
def test_scram_plus_success(mechanism: str) -> None:
    client = ScramClient([mechanism], "juliet", PASSWORD, channel_binding=CB_A)
    result = scramp_exchange(server(mechanism, channel_binding=CB_A), client)
    assert isinstance(result, Success)
    assert result.username == "juliet"


@pytest.mark.parametrize("mechanism", SCRAM + PLUS)
def test_scram_wrong_password(mechanism: str) -> None:
    client = ScramClient([mechanism], "juliet", "wrong", channel_binding=client_cb(mechanism))
    result = scramp_exchange(server(mechanism, channel_binding=CB_A), client)
    assert result == Failure(Condition.NOT_AUTHORIZED)


@pytest.mark.parametrize(
    ("mechanism", "username"),
    [
        (mechanism, username)
        for mechanism in SCRAM + PLUS
        for username in ("romeo", "bad@name", "sha256only", "sha1only")
        # sha1only and sha256only exist, but only for their own hash.
        if {"sha1only": "SCRAM-SHA-1", "sha256only": "SCRAM-SHA-256"}.get(username)
        != mechanism.removesuffix("-PLUS")
    ],
)
def test_scram_unknown_user_fails_like_a_wrong_password(mechanism: str, username: str) -> None:
    client = ScramClient([mechanism], username, PASSWORD, channel_binding=client_cb(mechanism))
    result = scramp_exchange(server(mechanism, channel_binding=CB_A), client)
    assert result == Failure(Condition.NOT_AUTHORIZED)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
@pytest.mark.parametrize(
    ("username", "expected"), [("Juliet", "juliet"), ("Romeo", "romeo"), ("bad@name", None)]
)
def test_attempted_username(mechanism: str, username: str, expected: str | None) -> None:
    srv = server(mechanism)
    assert srv.attempted_username is None
    if mechanism == "PLAIN":
        srv.step(plain("", username, "wrong"))
    else:
        srv.step(f"n,,n={username},r=abcdef".encode())
    assert srv.attempted_username == expected


def _server_first(username: str, mechanism: str = "SCRAM-SHA-256") -> dict[str, str]:
    challenge = server(mechanism).step(f"n,,n={username},r=abcdef".encode())
    assert isinstance(challenge, Challenge)
    return dict(part.split("=", 1) for part in challenge.data.decode().split(","))


def test_scram_unknown_user_gets_a_plausible_stable_salt() -> None:
    real = _server_first("juliet")
    fake = _server_first("romeo")
    assert fake["i"] == real["i"] == "4096"
    assert len(base64.b64decode(fake["s"])) == len(base64.b64decode(real["s"]))
    # Asking twice must not reveal a fresh random salt each time, unlike a real account.
    assert _server_first("romeo")["s"] == fake["s"]
    assert _server_first("mercutio")["s"] != fake["s"]
    assert _server_first("romeo", "SCRAM-SHA-1")["s"] != fake["s"]
    assert _server_first("juliet")["s"] == real["s"]


def test_scram_unknown_user_iteration_count_follows_configuration() -> None:
    srv = server("SCRAM-SHA-256", iterations=10_000)
    challenge = srv.step(b"n,,n=romeo,r=abcdef")
    assert isinstance(challenge, Challenge)
    assert b",i=10000" in challenge.data


def test_scram_without_initial_response() -> None:
    srv = server("SCRAM-SHA-256")
    assert srv.step(b"") == Challenge(b"")
    client = ScramClient(["SCRAM-SHA-256"], "juliet", PASSWORD)
    assert isinstance(scramp_exchange(srv, client), Success)


def test_empty_message_after_the_first() -> None:
    srv = server("SCRAM-SHA-256")
    assert srv.step(b"") == Challenge(b"")
    result = srv.step(b"")
    assert isinstance(result, Failure)
    assert result.condition == Condition.MALFORMED_REQUEST

    srv = server("SCRAM-SHA-256")
    assert isinstance(srv.step(b"n,,n=juliet,r=abcdef"), Challenge)
    result = srv.step(b"")
    assert isinstance(result, Failure)
    assert result.condition == Condition.MALFORMED_REQUEST


@pytest.mark.parametrize(
    ("mechanism", "cb"),
    [
        ("DIGEST-MD5", None),
        ("SCRAM-SHA-512", None),
        ("scram-sha-256", None),
        ("", None),
        ("SCRAM-SHA-256-PLUS", None),
        ("SCRAM-SHA-1-PLUS", None),
        ("SCRAM-SHA-512-PLUS", CB_A),
        ("EXTERNAL", CB_A),
    ],
)
def test_invalid_mechanism(mechanism: str, cb: tuple[str, bytes] | None) -> None:
    srv = server(mechanism, channel_binding=cb)
    result = srv.step(b"n,,n=juliet,r=abcdef")
    assert isinstance(result, Failure)
    assert result.condition == Condition.INVALID_MECHANISM
    assert srv.done


def test_abort() -> None:
    srv = server("SCRAM-SHA-256")
    assert isinstance(srv.step(b"n,,n=juliet,r=abcdef"), Challenge)
    assert srv.abort() == Failure(Condition.ABORTED)
    assert srv.done
    with pytest.raises(RuntimeError):
        srv.step(b"c=biws,r=abcdef,p=AAAA")


def test_step_after_success_is_our_bug() -> None:
    srv = server("PLAIN")
    assert isinstance(srv.step(b"\0juliet\0" + PASSWORD.encode()), Success)
    assert srv.done
    with pytest.raises(RuntimeError):
        srv.step(b"\0juliet\0" + PASSWORD.encode())


def test_step_rejects_str() -> None:
    with pytest.raises(TypeError):
        server("PLAIN").step("\0juliet\0x")  # type: ignore[arg-type]


def test_oversized_and_non_utf8_messages() -> None:
    big = server("SCRAM-SHA-256").step(b"n,,n=juliet,r=" + b"a" * sasl.MAX_PAYLOAD)
    assert isinstance(big, Failure)
    assert big.condition == Condition.MALFORMED_REQUEST
    bad = server("SCRAM-SHA-256").step(b"n,,n=jul\xffiet,r=abc")
    assert isinstance(bad, Failure)
    assert bad.condition == Condition.MALFORMED_REQUEST


@pytest.mark.parametrize(
    "first",
    [
        b"n,,",
        b"n,n=juliet,r=abc",
        b"x,,n=juliet,r=abc",
        b"n,,r=abc,n=juliet",
        b"n,,n=juliet",
        b"n,,n=,r=abc",
        b"n,,n=jul=iet,r=abc",
        b"n,,m=ext,n=juliet,r=abc",
        b"n,,n=juliet,r=a\x00bc",
        b"n,,n=juliet,r=a bc",
        b",,,,",
        b"n,b=x,n=juliet,r=abc",
        b"n,a=,n=juliet,r=abc",
        b"n,a=jul=ZZ,n=juliet,r=abc",
    ],
)
def test_scram_malformed_first_message(first: bytes) -> None:
    result = server("SCRAM-SHA-256").step(first)
    assert isinstance(result, Failure)
    assert result.condition == Condition.MALFORMED_REQUEST


@pytest.mark.parametrize(
    "final",
    [
        b"garbage",
        b"c=biws,r=WRONGNONCE,p=AAAA",
        b"c=!!!,r={nonce},p=AAAA",
        b"c=biws,r={nonce}",
        b"r={nonce},c=biws,p=AAAA",
        b"c=biws,r={nonce},p=!!!",
        b"c=biws,r={nonce},p=AAAA",
        b"c=eSws,r={nonce},p=AAAA",
        b"c=biws,r={nonce},p=" + base64.b64encode(b"\0" * 32),
    ],
)
def test_scram_bad_final_message(final: bytes) -> None:
    srv = server("SCRAM-SHA-256")
    challenge = srv.step(b"n,,n=juliet,r=abcdef")
    assert isinstance(challenge, Challenge)
    nonce = challenge.data.split(b",")[0][2:]
    result = srv.step(final.replace(b"{nonce}", nonce))
    assert isinstance(result, Failure)
    assert result.condition in {Condition.MALFORMED_REQUEST, Condition.NOT_AUTHORIZED}
    assert srv.done


def test_scram_replayed_final_fails() -> None:
    # A client-final recorded from one exchange does not work in another (new server nonce).
    client = MiniScramClient("SCRAM-SHA-256", "juliet", PASSWORD)
    first = server("SCRAM-SHA-256").step(client.first())
    assert isinstance(first, Challenge)
    recorded = client.final(first.data)
    srv = server("SCRAM-SHA-256")
    assert isinstance(srv.step(client.first()), Challenge)
    assert isinstance(srv.step(recorded), Failure)


# Channel binding and downgrades (RFC 5802 §6)


def test_plus_with_mismatched_binding_fails() -> None:
    # A man in the middle terminates TLS itself: the client sees the attacker's certificate.
    client = ScramClient(["SCRAM-SHA-256-PLUS"], "juliet", PASSWORD, channel_binding=CB_B)
    result = scramp_exchange(server("SCRAM-SHA-256-PLUS", channel_binding=CB_A), client)
    assert not_authorized(result)


@pytest.mark.parametrize("mechanism", SCRAM)
def test_downgrade_detected(mechanism: str) -> None:
    # The client supports binding but saw no -PLUS offer (an attacker stripped it), so it sends
    # gs2 flag "y"; we did offer -PLUS, hence we hold binding data, hence the downgrade shows.
    client = ScramClient([mechanism], "juliet", PASSWORD, channel_binding=CB_A)
    assert client.gs2_header.gs2_char == "y"
    result = scramp_exchange(server(mechanism, channel_binding=CB_A), client)
    assert not_authorized(result)
    # Without binding data (we offered no -PLUS) the same "y" is legitimate.
    client = ScramClient([mechanism], "juliet", PASSWORD, channel_binding=CB_A)
    assert isinstance(scramp_exchange(server(mechanism), client), Success)


@pytest.mark.parametrize("mechanism", PLUS)
def test_plus_mechanism_requires_binding_flag(mechanism: str) -> None:
    client = MiniScramClient(mechanism, "juliet", PASSWORD, gs2_header="n,,")
    assert not_authorized(client.run(server(mechanism, channel_binding=CB_A)))
    client = MiniScramClient(mechanism, "juliet", PASSWORD, gs2_header="y,,")
    assert not_authorized(client.run(server(mechanism, channel_binding=CB_A)))


def test_binding_flag_on_plain_scram_is_honoured() -> None:
    # "p=" with a non-PLUS name: scramp treats it as the -PLUS mechanism. Still bound, so safe.
    good = MiniScramClient("SCRAM-SHA-256", "juliet", PASSWORD, "p=tls-server-end-point,,", CB_A[1])
    assert isinstance(good.run(server("SCRAM-SHA-256", channel_binding=CB_A)), Success)
    bad = MiniScramClient("SCRAM-SHA-256", "juliet", PASSWORD, "p=tls-server-end-point,,", CB_B[1])
    assert not_authorized(bad.run(server("SCRAM-SHA-256", channel_binding=CB_A)))
    unbound = MiniScramClient(
        "SCRAM-SHA-256", "juliet", PASSWORD, "p=tls-server-end-point,,", CB_A[1]
    )
    assert not_authorized(unbound.run(server("SCRAM-SHA-256")))


def test_binding_type_must_match() -> None:
    client = MiniScramClient("SCRAM-SHA-256-PLUS", "juliet", PASSWORD, "p=tls-unique,,", b"x")
    assert not_authorized(client.run(server("SCRAM-SHA-256-PLUS", channel_binding=CB_A)))
    client = MiniScramClient("SCRAM-SHA-256-PLUS", "juliet", PASSWORD, "p=tls-exporter,,", b"x")
    assert not_authorized(client.run(server("SCRAM-SHA-256-PLUS", channel_binding=CB_A)))


def test_unsupported_binding_type_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        server("SCRAM-SHA-256-PLUS", channel_binding=("tls-unique", b"x"))


# authzid (RFC 6120 §6.3.8)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
@pytest.mark.parametrize(
    ("authzid", "expected"),
    [
        ("juliet@example.org", None),
        ("Juliet@Example.ORG.", None),
        ("romeo@example.org", Condition.INVALID_AUTHZID),
        ("juliet@example.com", Condition.INVALID_AUTHZID),
        ("juliet@example.org/balcony", Condition.INVALID_AUTHZID),
        ("example.org", Condition.INVALID_AUTHZID),
        ("jul=2Ciet@example.org", Condition.INVALID_AUTHZID),
    ],
)
def test_scram_authzid(mechanism: str, authzid: str, expected: Condition | None) -> None:
    client = MiniScramClient(mechanism, "juliet", PASSWORD, f"n,a={authzid},")
    result = client.run(server(mechanism))
    if expected is None:
        assert isinstance(result, Success)
        assert result.username == "juliet"
    else:
        assert isinstance(result, Failure)
        assert result.condition == expected


def test_scram_authzid_with_channel_binding() -> None:
    header = "p=tls-server-end-point,a=juliet@example.org,"
    client = MiniScramClient("SCRAM-SHA-256-PLUS", "juliet", PASSWORD, header, CB_A[1])
    assert isinstance(client.run(server("SCRAM-SHA-256-PLUS", channel_binding=CB_A)), Success)
    client = MiniScramClient("SCRAM-SHA-256-PLUS", "juliet", PASSWORD, header, CB_B[1])
    assert not_authorized(client.run(server("SCRAM-SHA-256-PLUS", channel_binding=CB_A)))


def test_scram_authzid_must_match_the_c_attribute() -> None:
    # The c= attribute carries the GS2 header; it must be the one sent in client-first.
    client = MiniScramClient("SCRAM-SHA-256", "juliet", PASSWORD, "n,a=juliet@example.org,")
    srv = server("SCRAM-SHA-256")
    first = srv.step(client.first())
    assert isinstance(first, Challenge)
    client.gs2_header = "n,,"
    assert isinstance(srv.step(client.final(first.data)), Failure)


def test_scram_authzid_checked_only_after_authentication() -> None:
    client = MiniScramClient("SCRAM-SHA-256", "juliet", "wrong", "n,a=romeo@example.org,")
    assert not_authorized(client.run(server("SCRAM-SHA-256")))


def test_authzid_refused_without_domain() -> None:
    client = MiniScramClient("SCRAM-SHA-256", "juliet", PASSWORD, "n,a=juliet@example.org,")
    result = client.run(server("SCRAM-SHA-256", domain=None))
    assert result == Failure(Condition.INVALID_AUTHZID)
    assert isinstance(
        MiniScramClient("SCRAM-SHA-256", "juliet", PASSWORD).run(
            server("SCRAM-SHA-256", domain=None)
        ),
        Success,
    )


def test_mini_client_agrees_with_scramp() -> None:
    for mechanism in SCRAM:
        assert isinstance(
            MiniScramClient(mechanism, "juliet", PASSWORD).run(server(mechanism)), Success
        )
        assert not_authorized(MiniScramClient(mechanism, "juliet", "x").run(server(mechanism)))


# --------------------------------------------------------------------------------------------
# PLAIN


def plain(authzid: str, authcid: str, password: str) -> bytes:
    return f"{authzid}\0{authcid}\0{password}".encode()


def test_plain_success() -> None:
    result = server("PLAIN").step(plain("", "Juliet", PASSWORD))
    assert result == Success(b"", "juliet")


@pytest.mark.parametrize("username", ["sha1only", "sha256only"])
def test_plain_with_partial_credentials(username: str) -> None:
    assert server("PLAIN").step(plain("", username, PASSWORD)) == Success(b"", username)


def test_plain_without_initial_response() -> None:
    srv = server("PLAIN")
    assert srv.step(b"") == Challenge(b"")
    assert srv.step(plain("", "juliet", PASSWORD)) == Success(b"", "juliet")


@pytest.mark.parametrize(
    "message",
    [
        plain("", "juliet", "wrong"),
        plain("", "juliet", PASSWORD + " "),
        plain("", "juliet", PASSWORD.upper()),
        plain("", "romeo", PASSWORD),
        plain("", "bad@name", PASSWORD),
        plain("", "juliet", "bell\u0007"),
    ],
)
def test_plain_not_authorized(message: bytes) -> None:
    assert server("PLAIN").step(message) == Failure(Condition.NOT_AUTHORIZED)


def test_plain_requires_tls() -> None:
    srv = server("PLAIN", tls=False)
    result = srv.step(plain("", "juliet", PASSWORD))
    assert isinstance(result, Failure)
    assert result.condition == Condition.ENCRYPTION_REQUIRED
    # Refused before any data is looked at, including an absent initial response.
    result = server("PLAIN", tls=False).step(b"")
    assert isinstance(result, Failure)
    assert result.condition == Condition.ENCRYPTION_REQUIRED


def test_plain_disabled() -> None:
    result = server("PLAIN", allow_plain=False).step(plain("", "juliet", PASSWORD))
    assert isinstance(result, Failure)
    assert result.condition == Condition.INVALID_MECHANISM


@pytest.mark.parametrize(
    "message",
    [b"juliet", b"\0juliet", b"\0\0" + PASSWORD.encode(), b"\0juliet\0", b"a\0b\0c\0d", b"\0\0"],
)
def test_plain_malformed(message: bytes) -> None:
    result = server("PLAIN").step(message)
    assert isinstance(result, Failure)
    assert result.condition == Condition.MALFORMED_REQUEST


@pytest.mark.parametrize(
    ("authzid", "expected"),
    [
        ("juliet@example.org", None),
        ("JULIET@example.org", None),
        ("romeo@example.org", Condition.INVALID_AUTHZID),
        ("juliet@example.org/r", Condition.INVALID_AUTHZID),
        ("juliet", Condition.INVALID_AUTHZID),
        ("juliet@", Condition.INVALID_AUTHZID),
        ("@example.org", Condition.INVALID_AUTHZID),
    ],
)
def test_plain_authzid(authzid: str, expected: Condition | None) -> None:
    result = server("PLAIN").step(plain(authzid, "juliet", PASSWORD))
    if expected is None:
        assert result == Success(b"", "juliet")
    else:
        assert isinstance(result, Failure)
        assert result.condition == expected
    # A wrong password is reported as such, whatever the authzid.
    assert server("PLAIN").step(plain(authzid, "juliet", "x")) == Failure(Condition.NOT_AUTHORIZED)


def test_plain_does_the_same_work_for_unknown_users(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []
    real = hashlib.pbkdf2_hmac

    def counting(name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
        calls.append((name, iterations))
        return real(name, password, salt, iterations)

    monkeypatch.setattr(sasl.hashlib, "pbkdf2_hmac", counting)
    server("PLAIN").step(plain("", "juliet", "wrong"))
    server("PLAIN").step(plain("", "romeo", "wrong"))
    server("PLAIN").step(plain("", "bad@name", "wrong"))
    assert calls == [("sha256", 4096)] * 3


# --------------------------------------------------------------------------------------------
# Our own faults propagate


class StoreDown(Exception):
    pass


def broken_lookup(localpart: str) -> Mapping[str, Any] | None:
    raise StoreDown(localpart)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_lookup_errors_propagate(mechanism: str) -> None:
    srv = server(mechanism, lookup=broken_lookup)
    message = plain("", "juliet", PASSWORD) if mechanism == "PLAIN" else b"n,,n=juliet,r=abc"
    with pytest.raises(StoreDown):
        srv.step(message)
    assert srv.done


@pytest.mark.parametrize(
    "entry",
    [
        {},
        {"salt": "!!", "i": 4096, "stored_key": "", "server_key": ""},
        {**CREDS["SCRAM-SHA-256"], "i": 1},
        {**CREDS["SCRAM-SHA-256"], "i": "4096"},
        {**CREDS["SCRAM-SHA-256"], "salt": base64.b64encode(b"short").decode()},
        {**CREDS["SCRAM-SHA-256"], "stored_key": CREDS["SCRAM-SHA-1"]["stored_key"]},
    ],
)
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_corrupt_credentials_propagate(mechanism: str, entry: dict[str, Any]) -> None:
    accounts = {"juliet": {"SCRAM-SHA-256": entry}}
    srv = server(mechanism, lookup=accounts.get)
    message = plain("", "juliet", PASSWORD) if mechanism == "PLAIN" else b"n,,n=juliet,r=abc"
    with pytest.raises(ValueError):
        srv.step(message)


# --------------------------------------------------------------------------------------------
# Garbage in, Failure out


ANY_MECHANISM = st.sampled_from([*SCRAM, *PLUS, "PLAIN"])
SCRAMISH = st.text(alphabet="nypacrsivme=,_-+/0123456789ABCjuliet\x00é", max_size=80)


def _fresh(mechanism: str) -> SaslServer:
    return server(mechanism, channel_binding=CB_A)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mechanism=ANY_MECHANISM, data=st.binary(max_size=300) | SCRAMISH.map(str.encode))
def test_garbage_first_message(mechanism: str, data: bytes) -> None:
    result = _fresh(mechanism).step(data)
    assert isinstance(result, Challenge | Failure)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    mechanism=st.sampled_from(SCRAM + PLUS),
    data=st.binary(max_size=300) | SCRAMISH.map(str.encode),
)
def test_garbage_final_message(mechanism: str, data: bytes) -> None:
    srv = _fresh(mechanism)
    flag = "p=tls-server-end-point" if mechanism.endswith("-PLUS") else "n"
    assert isinstance(srv.step(f"{flag},,n=juliet,r=abcdef".encode()), Challenge)
    result = srv.step(data)
    assert isinstance(result, Failure)
    assert srv.done


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_valid_messages(data: st.DataObject) -> None:
    """Flip, drop or insert one byte of a genuine exchange: never an exception or a success."""
    mechanism = data.draw(st.sampled_from(SCRAM + PLUS))
    client = ScramClient([mechanism], "juliet", PASSWORD, channel_binding=CB_A)
    srv = _fresh(mechanism)
    first = client.get_client_first().encode()
    mutate_first = data.draw(st.booleans())

    def mutate(message: bytes) -> bytes:
        i = data.draw(st.integers(0, len(message) - 1))
        op = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        byte = bytes([data.draw(st.integers(0, 255))])
        if op == "drop":
            return message[:i] + message[i + 1 :]
        if op == "insert":
            return message[:i] + byte + message[i:]
        flipped = bytes([message[i] ^ (byte[0] or 1)])
        return message[:i] + flipped + message[i + 1 :]

    result = srv.step(mutate(first) if mutate_first else first)
    if not isinstance(result, Challenge):
        assert isinstance(result, Failure)
        return
    if mutate_first:
        # A change the parser tolerates (e.g. in the nonce) can still lead to a valid login.
        return
    client.set_server_first(result.data.decode())
    final = mutate(client.get_client_final().encode())
    assert isinstance(srv.step(final), Failure)


# --------------------------------------------------------------------------------------------
# Channel binding data from real TLS connections


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    tlsutil.ensure_self_signed(cert, key, DOMAIN)
    return cert, key


@contextlib.contextmanager
def tls_pair(cert_files: tuple[Path, Path]) -> Iterator[tuple[ssl.SSLSocket, ssl.SSLSocket]]:
    """A completed TLS handshake over a loopback socket pair: (server side, client side)."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    srv = tlsutil.server_context(*cert_files).wrap_socket(
        a, server_side=True, do_handshake_on_connect=False
    )
    cli = tlsutil.client_context_insecure().wrap_socket(b, do_handshake_on_connect=False)
    try:
        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(srv.do_handshake)
            try:
                cli.do_handshake()
            except BaseException:
                cli.close()
                raise
            fut.result()
        yield srv, cli
    finally:
        srv.close()
        cli.close()


@pytest.mark.parametrize("mechanism", PLUS)
def test_plus_over_real_tls(cert_files: tuple[Path, Path], mechanism: str) -> None:
    der = tlsutil.certificate_der(cert_files[0])
    with tls_pair(cert_files) as (srv_sock, cli_sock):
        server_cb = channel_binding_data(srv_sock, server_cert_der=der)
        assert server_cb is not None
        assert server_cb == channel_binding_data(cli_sock)
        assert server_cb[1] == hashlib.sha256(der).digest()  # ECDSA with SHA-256
        # scramp's client computes its side from the socket's peer certificate.
        client = ScramClient(
            [mechanism], "juliet", PASSWORD, channel_binding=("tls-server-end-point", cli_sock)
        )
        result = scramp_exchange(server(mechanism, channel_binding=server_cb), client)
        assert isinstance(result, Success)


def test_plus_over_real_tls_detects_another_certificate(
    cert_files: tuple[Path, Path], tmp_path: Path
) -> None:
    # The client talks TLS to an interceptor with its own certificate, which relays SASL.
    other_cert, other_key = tmp_path / "c.pem", tmp_path / "k.pem"
    tlsutil.ensure_self_signed(other_cert, other_key, DOMAIN)
    real = tls_server_end_point(tlsutil.certificate_der(cert_files[0]))
    assert real is not None
    server_cb = ("tls-server-end-point", real)
    with tls_pair((other_cert, other_key)) as (_srv_sock, cli_sock):
        client = ScramClient(
            ["SCRAM-SHA-256-PLUS"],
            "juliet",
            PASSWORD,
            channel_binding=("tls-server-end-point", cli_sock),
        )
        result = scramp_exchange(server("SCRAM-SHA-256-PLUS", channel_binding=server_cb), client)
        assert not_authorized(result)


def test_channel_binding_data_server_side_needs_certificate(
    cert_files: tuple[Path, Path],
) -> None:
    with tls_pair(cert_files) as (srv_sock, _cli_sock):
        assert channel_binding_data(srv_sock) is None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_channel_binding_with_anyio_tls_stream(cert_files: tuple[Path, Path]) -> None:
    """The transport's view: anyio TLSStream exposes an ssl.SSLObject for the binding."""
    der = tlsutil.certificate_der(cert_files[0])
    server_ctx = tlsutil.server_context(*cert_files)
    seen: dict[str, tuple[str, bytes] | None] = {}
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
    listener = multi.listeners[0]
    assert isinstance(listener, SocketListener)
    port = listener.extra(SocketAttribute.local_port)

    async def serve_one() -> None:
        async with multi:
            conn = await listener.accept()
            tls = await TLSStream.wrap(conn, server_side=True, ssl_context=server_ctx)
            obj = tls.extra(TLSAttribute.ssl_object)
            assert isinstance(obj, ssl.SSLObject)
            seen["server"] = channel_binding_data(obj, server_cert_der=der)
            await tls.send(b"ok")
            await tls.aclose()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_one)
            conn = await anyio.connect_tcp("127.0.0.1", port)
            tls = await TLSStream.wrap(
                conn, server_side=False, ssl_context=tlsutil.client_context_insecure()
            )
            seen["client"] = channel_binding_data(tls.extra(TLSAttribute.ssl_object))
            assert await tls.receive() == b"ok"
            await tls.aclose()
    assert seen["server"] is not None
    assert seen["server"] == seen["client"]


def _self_signed_der(key: Any, algorithm: hashes.HashAlgorithm | None) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, algorithm)
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _sha1_rsa_der() -> bytes:
    """An RSA certificate signed with SHA-1, which cryptography no longer produces itself."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = asn1_x509.Certificate.load(_self_signed_der(key, hashes.SHA256()))
    tbs = cert["tbs_certificate"]
    tbs["signature"] = asn1_x509.SignedDigestAlgorithm({"algorithm": "sha1_rsa"})
    tbs_der = tbs.dump(force=True)
    return asn1_x509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": asn1_x509.SignedDigestAlgorithm({"algorithm": "sha1_rsa"}),
            "signature_value": key.sign(tbs_der, padding.PKCS1v15(), hashes.SHA1()),
        }
    ).dump()


@pytest.mark.parametrize(
    ("make", "digest"),
    [
        (
            lambda: _self_signed_der(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()),
            "sha256",
        ),
        (
            lambda: _self_signed_der(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384()),
            "sha384",
        ),
        (
            lambda: _self_signed_der(
                rsa.generate_private_key(public_exponent=65537, key_size=2048), hashes.SHA512()
            ),
            "sha512",
        ),
        (_sha1_rsa_der, "sha256"),  # RFC 5929 §4.1: MD5 and SHA-1 are replaced by SHA-256
    ],
)
def test_tls_server_end_point_hash_choice(make: Callable[[], bytes], digest: str) -> None:
    der = make()
    data = tls_server_end_point(der)
    assert data == hashlib.new(digest, der).digest()
    assert data == bytes(CBindData.from_der(der))  # scramp's client computes the same


def test_tls_server_end_point_undefined_cases() -> None:
    # RFC 5929 §4.1: undefined for signatures without a single hash, so no -PLUS offer.
    assert (
        tls_server_end_point(_self_signed_der(ed25519.Ed25519PrivateKey.generate(), None)) is None
    )
    assert tls_server_end_point(b"not a certificate") is None


# --------------------------------------------------------------------------------------------
# LoginLimiter


def test_limiter_locks_after_max_failures() -> None:
    lim = LoginLimiter(max_failures=3, window_s=60, lockout_s=30)
    for t in range(3):
        assert lim.check("juliet", "192.0.2.1", now=t)
        lim.record_failure("juliet", "192.0.2.1", now=t)
    assert not lim.check("juliet", "192.0.2.1", now=3)
    assert not lim.check("juliet", "192.0.2.99", now=3)  # account lock, any address
    assert not lim.check("romeo", "192.0.2.1", now=3)  # address lock, any account
    assert lim.check("romeo", "192.0.2.99", now=3)
    assert lim.check("juliet", "192.0.2.1", now=2 + 30)  # the lock expires


def test_limiter_window_slides_out_old_failures() -> None:
    lim = LoginLimiter(max_failures=3, window_s=10, lockout_s=30)
    lim.record_failure("juliet", "192.0.2.1", now=0)
    lim.record_failure("juliet", "192.0.2.1", now=5)
    lim.record_failure("juliet", "192.0.2.1", now=11)  # a new window began at 11
    assert lim.check("juliet", "192.0.2.1", now=12)
    lim.record_failure("juliet", "192.0.2.1", now=12)
    lim.record_failure("juliet", "192.0.2.1", now=13)
    assert not lim.check("juliet", "192.0.2.1", now=13)


def test_limiter_success_clears_account_not_address() -> None:
    lim = LoginLimiter(max_failures=2, window_s=60, lockout_s=60)
    lim.record_failure("juliet", "192.0.2.1", now=0)
    lim.record_success("juliet", "192.0.2.1", now=1)
    lim.record_failure("juliet", "192.0.2.2", now=2)
    assert lim.check("juliet", "192.0.2.3", now=2)  # one failure since the success
    # An attacker cannot wash their address by logging in to their own account in between.
    lim.record_failure("victim", "198.51.100.7", now=3)
    lim.record_success("attacker", "198.51.100.7", now=4)
    lim.record_failure("victim2", "198.51.100.7", now=5)
    assert not lim.check("attacker", "198.51.100.7", now=6)


def test_limiter_groups_ipv6_by_64_and_unmaps_ipv4() -> None:
    lim = LoginLimiter(max_failures=2, window_s=60, lockout_s=60)
    lim.record_failure("a", "2001:db8:1:2::1", now=0)
    lim.record_failure("b", "2001:db8:1:2:ffff::9", now=0)
    assert not lim.check("c", "2001:db8:1:2::abcd", now=1)
    assert lim.check("c", "2001:db8:1:3::1", now=1)
    lim.record_failure("a", "::ffff:192.0.2.1", now=0)
    lim.record_failure("b", "192.0.2.1", now=0)
    assert not lim.check("c", "192.0.2.1", now=1)
    lim.record_failure("a", "unix-socket", now=0)  # not an IP address: used as is
    assert lim.check("c", "unix-socket", now=1)


def test_limiter_memory_is_bounded() -> None:
    lim = LoginLimiter(max_failures=5, window_s=60, lockout_s=60, max_entries=50)
    for i in range(5000):
        lim.record_failure(f"user{i}", f"10.0.{i // 256}.{i % 256}", now=i / 1000)
    assert len(lim) <= 100
    # Old records expire and are dropped as new failures arrive.
    lim.record_failure("late", "192.0.2.1", now=10_000)
    assert len(lim) == 2


def test_limiter_checks_do_not_allocate() -> None:
    lim = LoginLimiter()
    for i in range(100):
        assert lim.check(f"user{i}", f"10.0.0.{i}", now=0)
    assert len(lim) == 0


def test_limiter_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        LoginLimiter(max_failures=0)
    with pytest.raises(ValueError):
        LoginLimiter(max_entries=0)


def test_scramp_client_checks_server_signature() -> None:
    # Guards scramp_exchange: the Success tests above rely on the client checking "v=".
    client = ScramClient(["SCRAM-SHA-256"], "juliet", PASSWORD)
    srv = server("SCRAM-SHA-256")
    first = srv.step(client.get_client_first().encode())
    assert isinstance(first, Challenge)
    client.set_server_first(first.data.decode())
    assert isinstance(srv.step(client.get_client_final().encode()), Success)
    with pytest.raises(ScramException):
        client.set_server_final("v=" + base64.b64encode(b"\0" * 32).decode())
