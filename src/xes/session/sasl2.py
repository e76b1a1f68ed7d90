"""SASL2 (XEP-0388) with Bind2 (XEP-0386) and FAST (XEP-0484): sans-IO pieces.

A modern client authenticates, binds a resource and asks for a FAST token in one
``<authenticate/>``, and the server answers with one ``<success/>`` (no stream restart). Later
it reconnects with the token (``HT-SHA-256-NONE``) and skips SCRAM's round trips and its PBKDF2.

FAST tokens are never stored: the log keeps a token id, the user-agent id it is bound to, the
mechanism, the expiry and a SHA-256 of the token; the token itself is
``base64url(HMAC-SHA-256(key, token id))``, with a key every node derives from its secret, so
any node can check it and nobody with the journal can use it (ADR 0015).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from xes.xml import E, Element, ns

NS = "urn:xmpp:sasl:2"
BIND2 = "urn:xmpp:bind:0"
FAST = "urn:xmpp:fast:0"
HT = "HT-SHA-256-NONE"
FAST_MECHANISMS = (HT,)
MAX_TAG = 64
MAX_AGENT_ID = 128


@dataclass(frozen=True, slots=True)
class Authenticate:
    """What one ``<authenticate/>`` asks for."""

    mechanism: str
    initial_response: bytes | None
    agent_id: str | None
    """``<user-agent id>``: the device identity (tokens are bound to it)."""
    software: str
    device: str
    bind_tag: str | None
    """With Bind2: the client's tag ("" when it gave none); None without Bind2."""
    carbons: bool
    """Bind2 asked to enable message carbons (XEP-0280) inline."""
    token_request: str | None
    """FAST: the mechanism a token is requested for."""
    fast: bool
    """FAST: this authentication uses a token."""
    invalidate: bool
    """FAST: invalidate the token used."""
    inactive: bool = False
    """Bind2 carried XEP-0352 ``<inactive/>``: the session starts inactive."""
    resume: tuple[str, int] | None = None
    """XEP-0198 ``<resume previd h/>`` inline in SASL2: resume instead of binding."""
    sm_enable: tuple[bool, int | None] | None = None
    """Bind2 asked to enable stream management inline (XEP-0198 in XEP-0386): (resume, max)."""


class Malformed(ValueError):
    pass


def parse(element: Element) -> Authenticate:
    mechanism = element.get("mechanism") or ""
    initial = element.find("{%s}initial-response" % NS)
    data: bytes | None = None
    if initial is not None:
        text = initial.text.strip()
        try:
            data = b"" if text in ("", "=") else base64.b64decode(text, validate=True)
        except ValueError as exc:
            raise Malformed("initial-response is not base64") from exc
    agent = element.find("{%s}user-agent" % NS)
    agent_id = agent.get("id") if agent is not None else None
    if agent_id is not None and not 0 < len(agent_id.encode()) <= MAX_AGENT_ID:
        raise Malformed("user-agent id too long")

    def text_of(parent: Element | None, tag: str) -> str:
        el = parent.find(tag) if parent is not None else None
        return el.text.strip()[:256] if el is not None else ""

    bind = element.find("{%s}bind" % BIND2)
    tag = None
    carbons = False
    if bind is not None:
        tag = text_of(bind, "{%s}tag" % BIND2)[:MAX_TAG]
        carbons = bind.find("{%s}enable" % ns.CARBONS) is not None
    sm_enable = None
    enable = bind.find("{%s}enable" % ns.SM) if bind is not None else None
    if enable is not None:
        try:
            max_s = int(enable.get("max") or 0) or None
        except ValueError as exc:
            raise Malformed("enable max is not a number") from exc
        sm_enable = (enable.get("resume") in ("true", "1"), max_s)
    resume = None
    resume_el = element.find("{%s}resume" % ns.SM)
    if resume_el is not None:
        try:
            h = int(resume_el.get("h") or "")
        except ValueError as exc:
            raise Malformed("resume h is not a number") from exc
        previd = resume_el.get("previd") or ""
        if not previd or not 0 <= h < 2**32:
            raise Malformed("resume needs previd and h")
        resume = (previd, h)
    request = element.find("{%s}request-token" % FAST)
    fast = element.find("{%s}fast" % FAST)
    return Authenticate(
        mechanism=mechanism,
        initial_response=data,
        agent_id=agent_id,
        software=text_of(agent, "{%s}software" % NS),
        device=text_of(agent, "{%s}device" % NS),
        bind_tag=tag,
        carbons=carbons,
        token_request=request.get("mechanism") if request is not None else None,
        fast=fast is not None,
        invalidate=fast is not None and fast.get("invalidate") in ("1", "true"),
        sm_enable=sm_enable,
        resume=resume,
        inactive=bind is not None and bind.find("{urn:xmpp:csi:0}inactive") is not None,
    )


def feature(
    mechanisms: list[str], fast: bool, bind_inline: tuple[str, ...], sm: bool = False
) -> Element:
    """The ``<authentication/>`` stream feature with what can be inlined (``bind_inline``:
    the features Bind2 lists, e.g. carbons, client state indication)."""
    listed = [E("{%s}feature" % BIND2, {"var": var}) for var in bind_inline]
    inline = [E("{%s}bind" % BIND2, None, E("{%s}inline" % BIND2, None, *listed))]
    if sm:
        inline.append(E("{%s}sm" % ns.SM))  # XEP-0198 resumption inside <authenticate/>
    if fast:
        inline.append(
            E(
                "{%s}fast" % FAST,
                None,
                *(E("{%s}mechanism" % FAST, None, m) for m in FAST_MECHANISMS),
            )
        )
    return E(
        "{%s}authentication" % NS,
        None,
        *(E("{%s}mechanism" % NS, None, m) for m in mechanisms),
        E("{%s}inline" % NS, None, *inline),
    )


def token_value(key: bytes, token_id: str) -> str:
    """The FAST token for ``token_id`` (derived, never stored)."""
    mac = hmac.new(key, b"xes fast token\x00" + token_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ht_initiator(token: str) -> bytes:
    """HT-SHA-256-NONE (draft-schmaus-kitten-sasl-ht): the client's proof, no channel binding."""
    return hmac.new(token.encode(), b"Initiator", hashlib.sha256).digest()


def ht_responder(token: str) -> bytes:
    return hmac.new(token.encode(), b"Responder", hashlib.sha256).digest()


def split_ht(data: bytes) -> tuple[str, bytes] | None:
    """``authcid NUL proof`` of an HT initial response."""
    name, sep, proof = data.partition(b"\x00")
    if not sep or not name or len(proof) != 32:
        return None
    try:
        return name.decode(), proof
    except UnicodeDecodeError:
        return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else ""


def parse_payload(text: str) -> bytes:
    """A base64 SASL payload (``=`` or nothing: empty); ValueError if it is not base64."""
    text = text.strip()
    if text in ("", "="):
        return b""
    return base64.b64decode(text, validate=True)
