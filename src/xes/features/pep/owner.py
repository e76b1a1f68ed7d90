"""The owner's side of a PEP node (XEP-0060 §8): configure, default configuration, delete,
purge, and the whitelist of a ``whitelist`` node as ``member`` affiliations (§8.9)."""

from __future__ import annotations

from xes.events.catalog import PepNodeConfigured, PepNodeDeleted, PepNodePurged
from xes.features.pep import access
from xes.features.pep.common import node_of, own_service, propose
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.projections import pep as pep_view
from xes.projections.pep import NodeRow
from xes.pubsub import config as node_config
from xes.pubsub.config import NodeConfig
from xes.stanza.core import StanzaError, iq_result
from xes.xml import E, Element, ns

OWNER = ns.PUBSUB_OWNER


def _node(hub: Hub, owner: str, node: str) -> NodeRow:
    with hub.read() as txn:
        row = pep_view.node(hub.store, txn, owner, node)
    if row is None:
        raise StanzaError("item-not-found", "no such node")
    return row


async def handle(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    owner = own_service(session, iq)
    children = query.elements()
    if len(children) != 1:
        raise StanzaError("bad-request", "one owner request at a time")
    child = children[0]
    type_ = iq.get("type")
    cap = hub.config.pep.max_items
    if child.name == "default" and type_ == "get":
        form = node_config.config_form("", NodeConfig(), cap)
        return iq_result(iq, E("{%s}pubsub" % OWNER, None, E("{%s}default" % OWNER, None, form)))
    node = node_of(child)
    row = _node(hub, owner, node)
    if child.name == "configure" and type_ == "get":
        form = node_config.config_form(node, row.config, cap)
        configure = E("{%s}configure" % OWNER, {"node": node}, form)
        return iq_result(iq, E("{%s}pubsub" % OWNER, None, configure))
    if child.name == "configure" and type_ == "set":
        form = node_config.submitted(child)
        if form is None:
            raise StanzaError("bad-request", "configure carries a form")
        if form.get("type") == "cancel":
            return iq_result(iq)
        new = node_config.apply_form(form, row.config, cap)
        await propose(hub, PepNodeConfigured(owner, node, new.to_json()))
        return iq_result(iq)
    if type_ == "set" and child.name in ("delete", "purge"):
        with hub.read() as txn:
            wants = child.name == "purge" or row.config.notify_delete
            notify = (
                access.notify_targets(hub, txn, owner, node, row.config, row.whitelist)
                if wants
                else []
            )
        event = (PepNodeDeleted if child.name == "delete" else PepNodePurged)(owner, node, notify)
        await propose(hub, event)
        return iq_result(iq)
    if child.name == "affiliations":
        return await _affiliations(hub, iq, child, owner, node, row)
    raise StanzaError("feature-not-implemented", f"owner request {child.name} not supported")


async def _affiliations(
    hub: Hub, iq: Element, child: Element, owner: str, node: str, row: NodeRow
) -> Element:
    tag = "{%s}affiliation" % OWNER
    if iq.get("type") == "get":
        listed = [E(tag, {"jid": owner, "affiliation": "owner"})]
        listed += [E(tag, {"jid": j, "affiliation": "member"}) for j in row.whitelist]
        affs = E("{%s}affiliations" % OWNER, {"node": node}, *listed)
        return iq_result(iq, E("{%s}pubsub" % OWNER, None, affs))
    whitelist = set(row.whitelist)
    for aff in child.find_all(tag):
        try:
            jid = str(JID.parse(aff.get("jid") or "").bare)
        except InvalidJID as exc:
            raise StanzaError("jid-malformed") from exc
        kind = aff.get("affiliation")
        if jid == owner:
            raise StanzaError("not-acceptable", "the owner's affiliation cannot change")
        if kind in ("member", "publisher"):
            whitelist.add(jid)
        elif kind == "none":
            whitelist.discard(jid)
        else:
            raise StanzaError("not-acceptable", f"affiliation {kind!r} is not supported in PEP")
    event = PepNodeConfigured(owner, node, row.config.to_json(), whitelist=sorted(whitelist))
    await propose(hub, event)
    return iq_result(iq)
