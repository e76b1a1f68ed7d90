"""The proofs of the upload side (ADR 0017): a PUT proves its slot, a node proves it is one.

Both are HMAC-SHA-256 with keys derived from the cluster secret, so every node checks what any
node issued and nothing that grants anything is in the log (events never hold secrets):

* **PUT token** (``Authorization: Bearer``, XEP-0363 §4 lets the slot name that header) over
  the slot id, size, content type and expiry as the ``upload.slot_granted`` event records them:
  it proves the slot, and that the PUT is the one asked for.
* **Peer proof** (``X-Xes-Peer: <node> <expiry ms> <mac>``) over the method, the path, the node
  and a short expiry: a node fetching a file it lacks from the node that holds it. The holder
  answers such a request from its own disk only, so fetches never chain or loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

PEER_HEADER = "x-xes-peer"
PEER_PROOF_TTL_MS = 60_000
"""A peer proof is valid this long after it was made (clocks of nodes may differ a little)."""


def _mac(key: bytes, *parts: str) -> str:
    digest = hmac.new(key, "\x00".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def put_token(key: bytes, slot: str, size: int, content_type: str, expires: int) -> str:
    return _mac(key, "put", slot, str(size), content_type, str(expires))


def put_token_valid(
    key: bytes, token: str, slot: str, size: int, content_type: str, expires: int
) -> bool:
    return hmac.compare_digest(token, put_token(key, slot, size, content_type, expires))


def peer_proof(key: bytes, node: str, method: str, path: str, now_ms: int) -> str:
    """The ``X-Xes-Peer`` value ``node`` sends with ``method path``."""
    expires = now_ms + PEER_PROOF_TTL_MS
    return f"{node} {expires} {_mac(key, 'peer', method, path, node, str(expires))}"


def peer_of(key: bytes, value: str, method: str, path: str, now_ms: int) -> str | None:
    """The node a valid ``X-Xes-Peer`` value names, or None (forged, altered or stale)."""
    parts = value.split(" ")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    node, expires, mac = parts[0], int(parts[1]), parts[2]
    if not now_ms <= expires <= now_ms + 2 * PEER_PROOF_TTL_MS:
        return None
    if not hmac.compare_digest(mac, _mac(key, "peer", method, path, node, str(expires))):
        return None
    return node
