"""Publishing side of PEP: publish (with publish-options), retract, create (XEP-0060 §7, §8.1,
XEP-0223).

A publish to a node that does not exist creates it (``#auto-create``, XEP-0163 §3) with the
publish-options as its configuration. When it exists, the options are preconditions: a node
configured otherwise answers ``conflict`` + ``precondition-not-met`` and stores nothing. The
options also travel in the event, and apply checks them again, so two devices that create the
same node differently at the same moment cannot both win.
"""

from __future__ import annotations

import secrets
from typing import Any

from xes.events.catalog import PepItemPublished, PepItemRetracted, PepNodeConfigured
from xes.features import avatar_sync
from xes.features.pep import access
from xes.features.pep.common import app, node_of, own_service, propose
from xes.features.throttle import throttle
from xes.hub import Hub, LocalSession
from xes.projections import pep as pep_view
from xes.pubsub import config as node_config
from xes.pubsub.config import NodeConfig
from xes.stanza import forms
from xes.stanza.core import StanzaError, iq_result
from xes.xml import E, Element, ns, parse_fragment, serialize

MAX_ITEM_ID = 128
LEGACY_BOOKMARKS = "storage:bookmarks"
"""XEP-0048's PEP node: a publish there is a bookmarks write (XEP-0411)."""


async def _limit(hub: Hub, session: LocalSession) -> None:
    cfg = hub.config.pep
    await throttle(session, "pep-publish", cfg.publish_per_second, cfg.publish_burst)


def _one_item(publish: Element) -> tuple[str, str]:
    """(item id, serialized payload) of a publish request (XEP-0060 §7.1.3)."""
    items = publish.find_all("{%s}item" % ns.PUBSUB)
    if not items:
        raise StanzaError("bad-request", "publish one item", app=app("item-required"))
    if len(items) > 1:
        raise StanzaError("bad-request", "one item per publish", app=app("invalid-payload"))
    item = items[0]
    payloads = item.elements()
    if not payloads:
        raise StanzaError("bad-request", "PEP items carry a payload", app=app("payload-required"))
    if len(payloads) > 1:
        raise StanzaError("bad-request", "one payload element per item", app=app("invalid-payload"))
    item_id = item.get("id") or secrets.token_hex(8)
    if len(item_id.encode()) > MAX_ITEM_ID:
        raise StanzaError("not-acceptable", "item id too long")
    return item_id, serialize(payloads[0]).decode()


def _preconditions(options: Element | None, cap: int) -> tuple[NodeConfig, dict[str, Any] | None]:
    """The configuration publish-options ask for and the keys apply must find so."""
    if options is None:
        return NodeConfig(), None
    wanted = node_config.apply_form(options, NodeConfig(), cap)
    named = {v.removeprefix("pubsub#") for v in forms.values(options)}
    keys = sorted(named & set(NodeConfig.__dataclass_fields__))
    as_json = wanted.to_json()
    return wanted, {k: as_json[k] for k in keys}


async def publish(hub: Hub, session: LocalSession, iq: Element, pubsub: Element) -> Element:
    owner = own_service(session, iq)
    publish_el = pubsub.find("{%s}publish" % ns.PUBSUB)
    if publish_el is None:
        raise StanzaError("bad-request", "unexpected pubsub element")
    node = node_of(publish_el)
    item_id, payload = _one_item(publish_el)
    if node == LEGACY_BOOKMARKS:
        from xes.features import private_storage  # imports this package: resolved at call time

        await _limit(hub, session)
        await private_storage.legacy_pep_publish(hub, session, parse_fragment(payload.encode()))
        item = E("{%s}item" % ns.PUBSUB, {"id": item_id})
        body = E("{%s}publish" % ns.PUBSUB, {"node": node}, item)
        return iq_result(iq, E("{%s}pubsub" % ns.PUBSUB, None, body))
    cfg = hub.config.pep
    if len(payload.encode()) > cfg.max_item_bytes:
        raise StanzaError(
            "not-acceptable",
            f"items are at most {cfg.max_item_bytes} bytes here",
            app=app("payload-too-big"),
        )
    options_el = pubsub.find("{%s}publish-options" % ns.PUBSUB)
    options = node_config.submitted(options_el) if options_el is not None else None
    wanted, preconditions = _preconditions(options, cfg.max_items)
    await _limit(hub, session)
    events: list[Any] = []
    with hub.read() as txn:
        row = pep_view.node(hub.store, txn, owner, node)
        if row is None:
            if len(pep_view.nodes(hub.store, txn, owner)) >= cfg.max_nodes:
                raise StanzaError("not-allowed", f"at most {cfg.max_nodes} PEP nodes per account")
            events.append(PepNodeConfigured(owner, node, wanted.to_json(), create="auto"))
            node_cfg, whitelist = wanted, []
        else:
            if options is not None:
                node_config.check_preconditions(options, row.config, cfg.max_items)
            node_cfg, whitelist = row.config, row.whitelist
        notify = access.notify_targets(hub, txn, owner, node, node_cfg, whitelist)
    events.append(
        PepItemPublished(owner, node, item_id, payload, session.full, preconditions, notify)
    )
    events += avatar_sync.from_pep(hub, owner, node, payload)
    await propose(hub, *events)
    result = E(
        "{%s}pubsub" % ns.PUBSUB,
        None,
        E("{%s}publish" % ns.PUBSUB, {"node": node}, E("{%s}item" % ns.PUBSUB, {"id": item_id})),
    )
    return iq_result(iq, result)


async def retract(hub: Hub, session: LocalSession, iq: Element, pubsub: Element) -> Element:
    owner = own_service(session, iq)
    retract_el = pubsub.find("{%s}retract" % ns.PUBSUB)
    if retract_el is None:
        raise StanzaError("bad-request", "unexpected pubsub element")
    node = node_of(retract_el)
    items = retract_el.find_all("{%s}item" % ns.PUBSUB)
    if len(items) != 1 or not items[0].get("id"):
        raise StanzaError("bad-request", "retract one item by id", app=app("item-required"))
    item_id = items[0].get("id") or ""
    notify_attr = retract_el.get("notify", "")
    await _limit(hub, session)
    with hub.read() as txn:
        row = pep_view.node(hub.store, txn, owner, node)
        if row is None or pep_view.item(hub.store, txn, owner, node, item_id) is None:
            raise StanzaError("item-not-found")
        wants = row.config.notify_retract or notify_attr in ("1", "true")
        notify = (
            access.notify_targets(hub, txn, owner, node, row.config, row.whitelist) if wants else []
        )
    await propose(hub, PepItemRetracted(owner, node, item_id, notify))
    return iq_result(iq)


async def create(hub: Hub, session: LocalSession, iq: Element, pubsub: Element) -> Element:
    owner = own_service(session, iq)
    create_el = pubsub.find("{%s}create" % ns.PUBSUB)
    if create_el is None:
        raise StanzaError("bad-request", "unexpected pubsub element")
    if not create_el.get("node"):
        raise StanzaError("not-acceptable", "PEP has no instant nodes", app=app("nodeid-required"))
    node = node_of(create_el)
    cfg = hub.config.pep
    configure = pubsub.find("{%s}configure" % ns.PUBSUB)
    form = node_config.submitted(configure) if configure is not None else None
    wanted = node_config.apply_form(form, NodeConfig(), cfg.max_items) if form else NodeConfig()
    with hub.read() as txn:
        if pep_view.node(hub.store, txn, owner, node) is not None:
            raise StanzaError("conflict", "the node exists")
        if len(pep_view.nodes(hub.store, txn, owner)) >= cfg.max_nodes:
            raise StanzaError("not-allowed", f"at most {cfg.max_nodes} PEP nodes per account")
    await propose(hub, PepNodeConfigured(owner, node, wanted.to_json(), create="explicit"))
    return iq_result(iq)
