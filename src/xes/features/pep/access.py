"""Who may see a PEP node, and who is notified of it (XEP-0060 §4.5 access models, XEP-0163 §4).

Entitlement is read from the owner's roster: ``presence`` lets contacts with a subscription to
the owner's presence (``from`` or ``both``) in, ``roster`` those in the allowed groups, ``open``
everyone, ``whitelist`` the JIDs on the node's list. The owner is always in. Notifications go to
each entitled *available* resource whose XEP-0115 caps name ``NODE+notify`` (filtered
notifications, XEP-0163 §4.3): the proposer computes them, so the event says who gets it.
"""

from __future__ import annotations

from typing import Any

from xes.hub import Hub
from xes.projections import blocking as blocking_view
from xes.projections import pep as pep_view
from xes.projections import roster as roster_view
from xes.projections import sessions as sessions_view
from xes.projections.pep import NodeRow
from xes.projections.roster import RosterItem
from xes.pubsub import caps
from xes.pubsub.config import NodeConfig
from xes.stanza.core import StanzaError
from xes.xml import E, ns, parse_fragment


def _app(name: str) -> Any:
    return E("{%s}%s" % (ns.PUBSUB_ERRORS, name))


def refusal(
    cfg: NodeConfig, whitelist: list[str], owner: str, requester: str, item: RosterItem | None
) -> StanzaError | None:
    """Why ``requester`` (a bare JID) may not read the node, or None if it may (§6.5.9)."""
    if requester == owner or cfg.access_model == "open":
        return None
    if cfg.access_model == "presence":
        if item is not None and item.subscription in ("from", "both"):
            return None
        return StanzaError("not-authorized", None, "auth", _app("presence-subscription-required"))
    if cfg.access_model == "roster":
        if item is not None and item.listed and set(item.groups) & set(cfg.roster_groups_allowed):
            return None
        return StanzaError("not-authorized", None, "auth", _app("not-in-roster-group"))
    if requester in whitelist:
        return None
    return StanzaError("not-allowed", None, "cancel", _app("closed-node"))


def check(hub: Hub, txn: Any, row: NodeRow, requester: str) -> None:
    item = roster_view.item(hub.store, txn, row.owner, requester)
    error = refusal(row.config, row.whitelist, row.owner, requester, item)
    if error is not None:
        raise error


def blocked_either(hub: Hub, txn: Any, a: str, b: str) -> bool:
    """Does either account block the other (XEP-0191 §3.5)?"""
    return blocking_view.blocks(hub.store, txn, a, b) or blocking_view.blocks(hub.store, txn, b, a)


def wanted_nodes(hub: Hub, txn: Any, jid: str, presence_xml: str | None) -> frozenset[str]:
    """The nodes a session asked notifications for through its caps (empty if unknown)."""
    if not presence_xml or ns.CAPS not in presence_xml:
        return frozenset()
    advertised = caps.advertised(parse_fragment(presence_xml.encode()))
    if advertised is None:
        return frozenset()
    features = pep_view.caps_features(hub.store, txn, advertised[2], jid)
    return frozenset(caps.notify_nodes(features or []))


def notify_targets(
    hub: Hub, txn: Any, owner: str, node: str, cfg: NodeConfig, whitelist: list[str]
) -> list[str]:
    """Full JIDs that get the node's notifications now (XEP-0163 §4.3.1): the owner's and the
    entitled contacts' available resources that want ``node``."""
    if not cfg.deliver_notifications:
        return []
    bares = [owner]
    items = {}
    for item in roster_view.items(hub.store, txn, owner):
        if item.subscription in ("from", "both") and item.contact != owner:
            items[item.contact] = item
            bares.append(item.contact)
    out = []
    for bare in bares:
        if refusal(cfg, whitelist, owner, bare, items.get(bare)) is not None:
            continue
        if bare != owner and blocked_either(hub, txn, owner, bare):
            continue  # XEP-0191: nothing passes between them, PEP included
        for view in sessions_view.of_user(hub.store, txn, bare):
            if view.available and node in wanted_nodes(hub, txn, view.jid, view.presence):
                out.append(view.jid)
    return out
