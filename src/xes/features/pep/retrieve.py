"""Retrieving items (XEP-0060 §6.5): all, the newest N (``max_items``), by id, or a page (RSM,
XEP-0059). Anyone the access model lets in may read; for ``open`` nodes that is everyone,
which is how a contact without a subscription fetches an OMEMO bundle (XEP-0384 §5.3)."""

from __future__ import annotations

from xes.features.pep import access
from xes.features.pep.common import node_of, service_of
from xes.hub import Hub, LocalSession
from xes.projections import pep as pep_view
from xes.projections.pep import Item
from xes.pubsub import render
from xes.stanza.core import StanzaError, iq_result
from xes.xml import Element, escape_attr, escape_text, ns, serialize

LEGACY_BOOKMARKS = "storage:bookmarks"
"""XEP-0048's PEP node, kept as a view of the bookmarks (XEP-0411)."""
MAX_PAGE = 100
"""Most items in one answer; a bigger node is read page by page (RSM)."""


def _page(items: list[Item], rsm: Element) -> tuple[list[Item], str]:
    """Items of one RSM page (over publication order) and the ``<set/>`` that describes it."""
    max_el = rsm.find("{%s}max" % ns.RSM)
    try:
        limit = min(int(max_el.text), MAX_PAGE) if max_el is not None else MAX_PAGE
    except ValueError as exc:
        raise StanzaError("bad-request", "RSM max must be a number") from exc
    ids = [i.id for i in items]
    after, before = rsm.find("{%s}after" % ns.RSM), rsm.find("{%s}before" % ns.RSM)
    if after is not None:
        if after.text not in ids:
            raise StanzaError("item-not-found", "no such item to page after")
        chosen = items[ids.index(after.text) + 1 :][:limit]
    elif before is not None:
        end = ids.index(before.text) if before.text in ids else len(items)
        if before.text and before.text not in ids:
            raise StanzaError("item-not-found", "no such item to page before")
        chosen = items[max(0, end - limit) : end]
    else:
        chosen = items[:limit]
    parts = [f"<set xmlns='{ns.RSM}'>"]
    if chosen:
        first = items.index(chosen[0])
        parts.append(f"<first index='{first}'>{escape_text(chosen[0].id)}</first>")
        parts.append(f"<last>{escape_text(chosen[-1].id)}</last>")
    parts.append(f"<count>{len(items)}</count></set>")
    return chosen, "".join(parts)


async def items(hub: Hub, session: LocalSession, iq: Element, pubsub: Element) -> bytes:
    owner = service_of(session, iq)
    items_el = pubsub.find("{%s}items" % ns.PUBSUB)
    if items_el is None:
        raise StanzaError("bad-request", "unexpected pubsub element")
    node = node_of(items_el)
    if node == LEGACY_BOOKMARKS:
        from xes.features import private_storage  # imports this package: resolved at call time

        body = private_storage.legacy_pep_items(hub, session, owner)
        return serialize(iq_result(iq, body).with_attrs(to=session.full))
    wanted_ids = [i.get("id") for i in items_el.find_all("{%s}item" % ns.PUBSUB)]
    with hub.read() as txn:
        row = pep_view.node(hub.store, txn, owner, node)
        if row is None:
            raise StanzaError("item-not-found", "no such node")
        access.check(hub, txn, row, session.bare)
        stored = pep_view.items(hub.store, txn, owner, node)
    rsm_xml = ""
    if wanted_ids:
        if any(not i for i in wanted_ids):
            raise StanzaError("bad-request", "an item request names the item id")
        by_id = {i.id: i for i in stored}
        chosen = [by_id[i] for i in wanted_ids if i in by_id]  # type: ignore[index]
    elif items_el.get("max_items"):
        try:
            n = int(items_el.get("max_items") or "")
        except ValueError as exc:
            raise StanzaError("bad-request", "max_items must be a number") from exc
        if n < 1:
            raise StanzaError("bad-request", "max_items must be positive")
        chosen = stored[-n:]  # the N most recent (§6.5.7), oldest of them first
    else:
        rsm = pubsub.find("{%s}set" % ns.RSM)
        if rsm is not None:
            chosen, rsm_xml = _page(stored, rsm)
        else:
            chosen = stored[-MAX_PAGE:]
    body = render.items_payload(node, [(i.id, i.payload) for i in chosen])
    if rsm_xml:
        body = body.replace("</pubsub>", rsm_xml + "</pubsub>")
    head = (
        f"<iq type='result' id='{escape_attr(iq.get('id') or '')}' to='{escape_attr(session.full)}'"
    )
    if iq.get("to"):
        head += f" from='{escape_attr(iq.get('to') or '')}'"
    return f"{head}>{body}</iq>".encode()
