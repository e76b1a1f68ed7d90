"""AES-256-GCM sealing of one field under a data key (ADR 0024).

The associated data binds a ciphertext to where it belongs (its key id and the event field),
so a sealed value moved to another event or opened under another key id fails instead of
reading as something else. Sealing draws a random nonce: it happens once, at proposal time, and
apply stores the result as committed (ADR 0003 keeps apply deterministic).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = b"\x01"
"""First byte of every sealed value: the format, so a later one can be told apart."""


class Unreadable(Exception):
    """The value cannot be opened: its key was destroyed (expired, erased) or it was altered."""


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def seal(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, VERSION + context)


def open_sealed(key: bytes | None, sealed: bytes, context: bytes) -> bytes:
    """The plaintext; :class:`Unreadable` if ``key`` is None (destroyed) or does not fit."""
    if key is None:
        raise Unreadable("its key was destroyed")
    if sealed[:1] != VERSION or len(sealed) < 1 + NONCE_BYTES + 16:
        raise Unreadable("not a sealed value of this format")
    nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, VERSION + context)
    except InvalidTag as exc:
        raise Unreadable("the key or the context does not fit, or it was altered") from exc
