"""vcard-temp (XEP-0054) with the avatar hash in presence (XEP-0153).

An account stores its own vCard; anyone may read it (XEP-0054 §3.1). The hash of the vCard's
photo travels in the account's presence (``<x xmlns='vcard-temp:x:update'><photo/></x>``) so
contacts know when to fetch a new avatar: the server adds it to broadcast presence that lacks
it, as XEP-0398 §4 has a server do, so even a client that never read its own vCard announces
the right avatar.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from xes.events.catalog import VcardStored
from xes.features import avatar_sync
from xes.features.pep.common import propose
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.projections import account_data
from xes.projections import accounts as accounts_view
from xes.stanza.core import StanzaError, iq_result
from xes.xml import E, Element, parse_fragment, serialize

VCARD = "vcard-temp"
UPDATE = "vcard-temp:x:update"
XEPS = ((54, "complete"), (153, "complete"))


def photo_hash(vcard: Element) -> str | None:
    """SHA-1 (hex) of the PHOTO's decoded BINVAL (XEP-0153 §3.1), None without one."""
    photo = vcard.find("{%s}PHOTO" % VCARD)
    binval = photo.find("{%s}BINVAL" % VCARD) if photo is not None else None
    if binval is None or not binval.text.strip():
        return None
    try:
        data = base64.b64decode("".join(binval.text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StanzaError("bad-request", "PHOTO BINVAL is not base64") from exc
    return hashlib.sha1(data).hexdigest()


async def handle(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    to = iq.get("to")
    if iq.get("type") == "get":
        owner = session.bare
        if to:
            try:
                owner = str(JID.parse(to).bare)
            except InvalidJID as exc:
                raise StanzaError("jid-malformed") from exc
        with hub.read() as txn:
            stored = account_data.vcard(hub.store, txn, owner)
            exists = accounts_view.exists(hub.store, txn, owner)
        if not exists or stored is None or not stored[0]:
            raise StanzaError("item-not-found", "no vCard")  # XEP-0054 §3.1
        return iq_result(iq, parse_fragment(stored[0].encode()))
    if to and to != session.bare:
        raise StanzaError("forbidden", "only your own vCard can be published")
    xml = serialize(query).decode()
    if len(xml.encode()) > hub.config.pep.max_item_bytes:
        raise StanzaError(
            "not-acceptable", f"a vCard is at most {hub.config.pep.max_item_bytes} bytes here"
        )
    empty = not query.elements()
    photo = None if empty else photo_hash(query)
    events: list[Any] = [VcardStored(session.bare, "" if empty else xml, photo)]
    if hub.config.pep.enabled:
        events += avatar_sync.from_vcard(hub, session.bare, query, photo)
    await propose(hub, *events)
    return iq_result(iq)


def with_photo_hash(hub: Hub, bare: str, presence: Element) -> Element:
    """``presence`` with the account's avatar hash, unless the client put its own there."""
    if presence.find("{%s}x" % UPDATE) is not None:
        return presence
    with hub.read() as txn:
        stored = account_data.vcard(hub.store, txn, bare)
    if stored is None:
        return presence  # never set: say nothing (XEP-0153 §4.1: "not ready")
    photo = E("{%s}photo" % UPDATE, None, stored[1] or None)
    return presence.append(E("{%s}x" % UPDATE, None, photo))
