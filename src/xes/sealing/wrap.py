"""Wrapping a data key to a node key: how keys travel through the log (ADR 0024).

A data key goes into an event once per cluster member, each copy encrypted to that member's
current X25519 node key: an ephemeral X25519 exchange, HKDF-SHA256 over the shared secret and
both public keys, AES-256-GCM over the data key (the construction of HPKE's base mode, RFC 9180,
with fixed algorithms). A member unwraps its copy in apply and keeps the data key in its key
store. Once a node has destroyed the private half of a node key, the copies wrapped to it in the
journal can be opened by no one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from xes.sealing.seal import NONCE_BYTES, Unreadable

INFO = b"xes key wrap v1"


@dataclass(frozen=True, slots=True)
class Wrapped:
    """One copy of a data key for one node key (hex fields: it goes into an event's JSON)."""

    node_key: str
    """The recipient's public key, hex: which node key opens it."""
    ephemeral: str
    nonce: str
    ciphertext: str

    def to_json(self) -> dict[str, str]:
        return {
            "node_key": self.node_key,
            "ephemeral": self.ephemeral,
            "nonce": self.nonce,
            "ciphertext": self.ciphertext,
        }

    @classmethod
    def from_json(cls, obj: dict[str, str]) -> Wrapped:
        return cls(obj["node_key"], obj["ephemeral"], obj["nonce"], obj["ciphertext"])


def public_hex(key: X25519PrivateKey | X25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def _kek(shared: bytes, ephemeral: bytes, recipient: bytes, key_id: bytes) -> bytes:
    hkdf = HKDF(hashes.SHA256(), 32, salt=None, info=INFO + b"\x00" + key_id)
    return hkdf.derive(shared + ephemeral + recipient)


def wrap(data_key: bytes, recipient_hex: str, key_id: bytes) -> Wrapped:
    recipient = X25519PublicKey.from_public_bytes(bytes.fromhex(recipient_hex))
    ephemeral = X25519PrivateKey.generate()
    eph = bytes.fromhex(public_hex(ephemeral))
    kek = _kek(ephemeral.exchange(recipient), eph, bytes.fromhex(recipient_hex), key_id)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(kek).encrypt(nonce, data_key, key_id)
    return Wrapped(recipient_hex, eph.hex(), nonce.hex(), ciphertext.hex())


def unwrap(wrapped: Wrapped, private: X25519PrivateKey, key_id: bytes) -> bytes:
    """The data key; :class:`Unreadable` if ``private`` is not the key it was wrapped to, or
    the copy (or its key id) was altered."""
    if wrapped.node_key != public_hex(private):
        raise Unreadable("wrapped to another node key")
    eph = bytes.fromhex(wrapped.ephemeral)
    shared = private.exchange(X25519PublicKey.from_public_bytes(eph))
    kek = _kek(shared, eph, bytes.fromhex(wrapped.node_key), key_id)
    try:
        return AESGCM(kek).decrypt(
            bytes.fromhex(wrapped.nonce), bytes.fromhex(wrapped.ciphertext), key_id
        )
    except InvalidTag as exc:
        raise Unreadable("the wrapped key was altered") from exc
