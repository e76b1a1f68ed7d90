"""XEP-0359 Unique and Stable Stanza IDs: the archive id a message carries, and the client's own.

The server chooses one ``stanza-id`` per archived message (the proposer of ``message.routed``,
so every node and every copy agree on it without a read of the archive) and adds it, with
``by`` set to the archive's JID, to the copy the owner of that archive receives. A client cannot
forge one: ``stanza-id`` elements whose ``by`` is one of our JIDs are removed from what clients
send (XEP-0359 §3.1, MUST). ``origin-id`` is the sending client's own id, kept as sent.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable

from xes.xml import E, Element, ns

STANZA_ID = "{%s}stanza-id" % ns.SID
ORIGIN_ID = "{%s}origin-id" % ns.SID
MAX_ORIGIN_ID = 256
"""Longest ``origin-id`` remembered for de-duplication (a longer one is kept but not indexed)."""


SORTABLE = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
"""64 URL-safe characters in ASCII order: an id written with them sorts as its bits do."""


def new_id(now_ms: int | None = None) -> str:
    """A fresh archive id: 16 URL-safe characters, opaque to clients (XEP-0359 only asks for
    unique and stable), made of 48 bits of the proposer's clock in ms and 48 random bits.

    Time first, so an archive's ids arrive in nearly increasing order and its id index is
    appended to at its end instead of dirtying a random page per message (as ejabberd's and
    MongooseIM's time-based archive ids do); 48 random bits keep ids from one millisecond apart.
    Nothing relies on the order: queries page by log position, ids are only looked up."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & (1 << 48) - 1) << 48 | secrets.randbits(48)
    return "".join(SORTABLE[value >> shift & 63] for shift in range(90, -1, -6))


def is_ours(by: str | None, domain: str | Iterable[str]) -> bool:
    """``by`` names this server or one of its accounts (or, later, rooms of its services);
    ``domain`` may be several: every hosted domain (ADR 0023) is ours."""
    if not by:
        return False
    host = by.rsplit("@", 1)[-1].split("/", 1)[0]
    domains = (domain,) if isinstance(domain, str) else domain
    return any(host == d or host.endswith("." + d) for d in domains)


def strip_ours(stanza: Element, domain: str | Iterable[str]) -> Element:
    """``stanza`` without the ``stanza-id`` elements a client may not set (XEP-0359 §3.1)."""
    kept = tuple(
        c
        for c in stanza.children
        if not (isinstance(c, Element) and c.tag == STANZA_ID and is_ours(c.get("by"), domain))
    )
    if len(kept) == len(stanza.children):
        return stanza
    return stanza.replace(children=kept)


def with_stanza_id(stanza: Element, by: str, id_: str, domain: str | Iterable[str]) -> Element:
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
