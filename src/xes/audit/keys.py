"""Per-node Ed25519 keys that sign checkpoints and exports (ADR 0021).

The private key lives in a PEM file (default ``data_dir/audit/node.key``, ``[audit] key_file``),
created with mode 0600 on first start like the self-signed TLS pair; the public key is announced
in the journal (``audit.key_announced``). What is signed is a fixed binary statement, never JSON,
so there is one way to encode it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from xes.store import journal

CHECKPOINT = b"xes.audit.checkpoint.1\x00"
EXPORT = b"xes.audit.export.1\x00"
_SEQ = struct.Struct(">Q")


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """The node's signing key, generated (mode 0600, directory 0700) if the file is missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def public_hex(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def statement(seq: int, index: int, pos: int, head: bytes) -> bytes:
    """What a checkpoint's signers sign: the chain had ``head`` after event ``seq`` at
    ``index``/``pos``."""
    return CHECKPOINT + _SEQ.pack(seq) + journal.event_key(index, pos) + head


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return key.sign(message).hex()


def verify(public_key: str, signature: str, message: bytes) -> bool:
    """Whether ``signature`` (hex) over ``message`` verifies with ``public_key`` (hex)."""
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(
            bytes.fromhex(signature), message
        )
    except (InvalidSignature, ValueError):
        return False
    return True
