"""XEP-0359 Unique and Stable Stanza IDs: the archive id a message carries, and the client's own.

The server chooses one ``stanza-id`` per archived message (the proposer of ``message.routed``,
so every node and every copy agree on it without a read of the archive) and adds it, with
``by`` set to the archive's JID, to the copy the owner of that archive receives. A client cannot
forge one: ``stanza-id`` elements whose ``by`` is one of our JIDs are removed from what clients
send (XEP-0359 §3.1, MUST). ``origin-id`` is the sending client's own id, kept as sent.
"""

from __future__ import annotations

import secrets

from xes.xml import E, Element, ns

STANZA_ID = "{%s}stanza-id" % ns.SID
ORIGIN_ID = "{%s}origin-id" % ns.SID
MAX_ORIGIN_ID = 256
"""Longest ``origin-id`` remembered for de-duplication (a longer one is kept but not indexed)."""


def new_id() -> str:
    """A fresh archive id: 96 random bits, URL-safe base64 (16 characters), opaque to clients."""
    return secrets.token_urlsafe(12)


def is_ours(by: str | None, domain: str) -> bool:
    """``by`` names this server or one of its accounts (or, later, rooms of its services)."""
    if not by:
        return False
    host = by.rsplit("@", 1)[-1].split("/", 1)[0]
    return host == domain or host.endswith("." + domain)


def strip_ours(stanza: Element, domain: str) -> Element:
    """``stanza`` without the ``stanza-id`` elements a client may not set (XEP-0359 §3.1)."""
    kept = tuple(
        c
        for c in stanza.children
        if not (isinstance(c, Element) and c.tag == STANZA_ID and is_ours(c.get("by"), domain))
    )
    if len(kept) == len(stanza.children):
        return stanza
    return stanza.replace(children=kept)


def with_stanza_id(stanza: Element, by: str, id_: str, domain: str) -> Element:
    """``stanza`` carrying exactly one of our ``stanza-id``: the archive ``by``'s."""
    return strip_ours(stanza, domain).append(E(STANZA_ID, {"by": by, "id": id_}))


def strip_by(stanza: Element, by: str) -> Element:
    """``stanza`` without the ``stanza-id`` that archive ``by`` gave it."""
    kept = tuple(
        c
        for c in stanza.children
        if not (isinstance(c, Element) and c.tag == STANZA_ID and c.get("by") == by)
    )
    return stanza.replace(children=kept)


def origin_id(stanza: Element) -> str | None:
    """The client's ``origin-id`` (XEP-0359 §3.2), if present and of a sane length."""
    el = stanza.find(ORIGIN_ID)
    value = el.get("id") if el is not None else None
    if not value or len(value) > MAX_ORIGIN_ID:
        return None
    return value


def stanza_id_of(stanza: Element, by: str) -> str | None:
    """The ``stanza-id`` that archive ``by`` gave this stanza, if it carries one."""
    for el in stanza.find_all(STANZA_ID):
        if el.get("by") == by:
            return el.get("id")
    return None
