"""Fuzz targets (issue 20): each takes one input and raises only on a real defect.

* ``xml_stream``: the hardened parser (:class:`xes.xml.XmlStream`) fed in two chunks: only
  :class:`~xes.xml.XmlStreamError` (a stream error for the peer) may come out.
* ``c2s``: the sans-IO client session after a valid header (and STARTTLS done): it never
  raises; bad input becomes actions (stream errors, SASL failures).
* ``sasl``: the SASL server (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN) stepped with arbitrary
  payloads: it never raises; it answers a challenge, a success or a failure. (``c2s`` and
  ``sasl`` run with PBKDF2 cut to one round: see :class:`_OneRoundKdf`.)
* ``events``: journal rows as a corrupted disk could return them: decoding either gives a
  committed event or raises one of the errors the journal reader reports (never anything else).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from typing import Any

import xes.session.sasl as sasl_module
from xes.events import Committed, UnknownEvent, decode_event
from xes.jid import normalize_localpart
from xes.session.c2s import C2SPolicy, C2SProtocol
from xes.session.sasl import SaslServer
from xes.xml import XmlLimits, XmlStream, XmlStreamError

DOMAIN = "fuzz.example"
STORED_ITERATIONS = 4096
"""What the fuzz account's credentials claim (the least the SASL server accepts)."""


class _OneRoundKdf:
    """``hashlib`` as the SASL server sees it during a fuzz input, with PBKDF2 cut to one round.

    A PLAIN attempt costs the server a full PBKDF2 (4,096 rounds, about 2 ms): that is hashlib's
    C code, not ours, and it held the SASL target to a few hundred inputs a second. With one
    round the server's parsing and state machine see the same inputs at fuzzing speed; the fuzz
    account's keys are derived the same way (:func:`_one_round_credentials`), so the right
    password still succeeds."""

    @staticmethod
    def pbkdf2_hmac(name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
        return hashlib.pbkdf2_hmac(name, password, salt, 1)

    def __getattr__(self, name: str) -> Any:
        return getattr(hashlib, name)


@contextlib.contextmanager
def _one_round_kdf() -> Iterator[None]:
    """Swap the SASL module's ``hashlib`` for one input only (the suite's other tests, in the
    same process, must see the real one)."""
    real = sasl_module.hashlib
    sasl_module.hashlib = _OneRoundKdf()  # type: ignore[assignment]
    try:
        yield
    finally:
        sasl_module.hashlib = real


def _one_round_credentials(password: str) -> dict[str, dict[str, Any]]:
    """SCRAM keys (RFC 5802 §3) of ``password`` salted with one PBKDF2 round, labelled with
    :data:`STORED_ITERATIONS`: what the server checks PLAIN against under :func:`_one_round_kdf`."""
    creds = {}
    for mechanism, hash_name in (("SCRAM-SHA-256", "sha256"), ("SCRAM-SHA-1", "sha1")):
        salt = b"xes-fuzz-" + hash_name.encode()
        salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, 1)
        client_key = hmac.digest(salted, b"Client Key", hash_name)
        creds[mechanism] = {
            "salt": base64.b64encode(salt).decode(),
            "i": STORED_ITERATIONS,
            "stored_key": base64.b64encode(hashlib.new(hash_name, client_key).digest()).decode(),
            "server_key": base64.b64encode(hmac.digest(salted, b"Server Key", hash_name)).decode(),
        }
    return creds


_CREDS = {"alice": _one_round_credentials("secret")}
HEADER = (
    b"<?xml version='1.0'?><stream:stream to='fuzz.example' version='1.0' "
    b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)
LIMITS = XmlLimits(max_stanza_bytes=4096, max_depth=16, max_attributes=16)


def xml_stream(data: bytes) -> None:
    stream = XmlStream(LIMITS)
    cut = len(data) // 2
    try:
        stream.receive_data(data[:cut])
        stream.receive_data(data[cut:])
    except XmlStreamError:
        pass


def c2s(data: bytes) -> None:
    proto = C2SProtocol(
        C2SPolicy(domain=DOMAIN, tls_required=False, tls_available=False, sasl2=True),
        credentials=_CREDS.get,
        normalize_username=normalize_localpart,
    )
    with _one_round_kdf():
        proto.receive_data(HEADER)
        cut = len(data) // 2
        proto.receive_data(data[:cut])
        proto.receive_data(data[cut:])


def sasl(data: bytes) -> None:
    mechanism = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")[data[0] % 3] if data else "PLAIN"
    server = SaslServer(
        mechanism,
        _CREDS.get,
        channel_binding=None,
        tls=True,
        normalize_username=normalize_localpart,
        domain=DOMAIN,
    )
    parts = data[1:].split(b"\xff", 2)
    with _one_round_kdf():
        for part in parts:
            if server.done:
                break  # stepping a finished exchange is a caller's bug, guarded by RuntimeError
            server.step(part)


REPORTED = (ValueError, KeyError, TypeError, AttributeError, UnknownEvent, RecursionError)
"""What decoding a damaged journal row may raise: each is reported by the reader, not applied
(json.JSONDecodeError and UnicodeDecodeError are ValueErrors)."""


def events(data: bytes) -> None:
    try:
        committed = Committed.decode(data)
        decode_event(committed.envelope)
    except REPORTED:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "xml_stream": xml_stream,
    "c2s": c2s,
    "sasl": sasl,
    "events": events,
}

SEEDS: dict[str, list[bytes]] = {
    "xml_stream": [
        HEADER + b"<message to='a@b'><body>hi</body></message>",
        HEADER + b"<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
    ],
    "c2s": [
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
        b"AGFsaWNlAHNlY3JldA==</auth>",
        b"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>"
        b"AGFsaWNlAHNlY3JldA==</initial-response><bind xmlns='urn:xmpp:bind:0'/></authenticate>",
        b"<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>x</username>"
        b"<password>y</password></query></iq>",
    ],
    "sasl": [b"\x00\x00alice\x00secret", b"\x01n,,n=alice,r=abcdefgh"],
    "events": [
        json.dumps(
            {
                "index": 1,
                "pos": 0,
                "version": 1,
                "event": {
                    "type": "blocking.changed",
                    "v": 1,
                    "stream": "blocking:a@b",
                    "id": "x",
                    "at": 1,
                    "origin": "n1",
                    "data": {"owner": "a@b", "block": ["c@d"]},
                },
            }
        ).encode()
    ],
}
