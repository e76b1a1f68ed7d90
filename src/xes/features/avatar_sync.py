"""One avatar, two protocols (XEP-0398): a vCard PHOTO (XEP-0054/XEP-0153) and a PEP avatar
(XEP-0084) are kept equal by the server, so a contact on an old client and one on a new client
see the same picture.

A vCard with a PHOTO also publishes the PEP data and metadata items (id = SHA-1 of the image);
a XEP-0084 metadata publication puts the image its data node holds into the vCard. The
conversion events join the proposal of the change that caused them, so neither side is ever
seen without the other.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from xes.events.catalog import PepItemPublished, PepNodeConfigured, VcardStored
from xes.features.pep import access
from xes.hub import Hub
from xes.projections import account_data
from xes.projections import pep as pep_view
from xes.pubsub.config import NodeConfig
from xes.xml import E, Element, parse_fragment, serialize

DATA = "urn:xmpp:avatar:data"
METADATA = "urn:xmpp:avatar:metadata"
VCARD = "vcard-temp"
FEATURE = "urn:xmpp:pep-vcard-conversion:0"


def _publish(
    hub: Hub, txn: Any, owner: str, node: str, item_id: str, payload: Element
) -> list[Any]:
    events: list[Any] = []
    row = pep_view.node(hub.store, txn, owner, node)
    if row is None:
        cfg, whitelist = NodeConfig(), []
        events.append(PepNodeConfigured(owner, node, cfg.to_json(), create="auto"))
    else:
        cfg, whitelist = row.config, row.whitelist
    notify = access.notify_targets(hub, txn, owner, node, cfg, whitelist)
    events.append(
        PepItemPublished(owner, node, item_id, serialize(payload).decode(), owner, None, notify)
    )
    return events


def from_vcard(hub: Hub, owner: str, vcard: Element, photo_hash: str | None) -> list[Any]:
    """PEP avatar events for a vCard being stored (none if the photo did not change)."""
    with hub.read() as txn:
        before = account_data.vcard(hub.store, txn, owner)
        if (before[1] if before else None) == photo_hash:
            return []
        if photo_hash is None:
            if before is None or before[1] is None:
                return []
            return _publish(hub, txn, owner, METADATA, "current", E("{%s}metadata" % METADATA))
        photo = vcard.find("{%s}PHOTO" % VCARD)
        assert photo is not None
        binval = "".join(photo.find("{%s}BINVAL" % VCARD).text.split())  # type: ignore[union-attr]
        type_el = photo.find("{%s}TYPE" % VCARD)
        size = len(base64.b64decode(binval))
        info = E(
            "{%s}info" % METADATA,
            {
                "id": photo_hash,
                "bytes": str(size),
                "type": type_el.text if type_el is not None else "image/png",
            },
        )
        data = E("{%s}data" % DATA, None, binval)
        return _publish(hub, txn, owner, DATA, photo_hash, data) + _publish(
            hub, txn, owner, METADATA, photo_hash, E("{%s}metadata" % METADATA, None, info)
        )


def from_pep(hub: Hub, owner: str, node: str, payload: str) -> list[Any]:
    """The vCard event for a XEP-0084 metadata publication (none for other nodes)."""
    if node != METADATA:
        return []
    metadata = parse_fragment(payload.encode())
    info = metadata.find("{%s}info" % METADATA)
    with hub.read() as txn:
        stored = account_data.vcard(hub.store, txn, owner)
        card = (
            parse_fragment(stored[0].encode()) if stored and stored[0] else E("{%s}vCard" % VCARD)
        )
        kept = tuple(
            c
            for c in card.children
            if not (isinstance(c, Element) and c.tag == "{%s}PHOTO" % VCARD)
        )
        if info is None or not info.get("id"):
            if stored is None or stored[1] is None:
                return []
            return [VcardStored(owner, serialize(card.replace(children=kept)).decode(), None)]
        item = pep_view.item(hub.store, txn, owner, DATA, info.get("id") or "")
    if item is None:
        return []  # an avatar hosted elsewhere (XEP-0084 <info url=...>): nothing to copy
    data = parse_fragment(item.payload.encode())
    try:
        base64.b64decode("".join(data.text.split()), validate=True)
    except (binascii.Error, ValueError):
        return []
    photo = E(
        "{%s}PHOTO" % VCARD,
        None,
        E("{%s}TYPE" % VCARD, None, info.get("type") or "image/png"),
        E("{%s}BINVAL" % VCARD, None, "".join(data.text.split())),
    )
    new = card.replace(children=(*kept, photo))
    return [VcardStored(owner, serialize(new).decode(), info.get("id"))]
