"""What a client wants to hear about: XEP-0115 caps and the last published items.

A client says which PEP nodes it wants notifications for with ``NODE+notify`` features behind
its caps hash (XEP-0163 §4.3). The server looks the hash up in the cluster's caps cache; an
unknown one is asked of the client itself (disco#info to ``node#ver``) and, if the answer
hashes to the advertised ``ver``, recorded as ``caps.learned`` for every node. When a session
comes online, or its caps change, it gets the last item of every node it may see and asked
for, from its contacts and its own account (XEP-0163 §4.3.2, ``send_last_published_item =
on_sub_and_presence``).
"""

from __future__ import annotations

import secrets
import weakref
from typing import Any

import structlog

from xes.events.catalog import CapsLearned
from xes.features.pep import access
from xes.hub import Hub, LocalSession
from xes.projections import pep as pep_view
from xes.projections import roster as roster_view
from xes.pubsub import caps, render
from xes.stanza.core import addressed
from xes.stanza.delay import stamp
from xes.xml import E, Element, ns

log = structlog.get_logger("xes.pep")

_announced: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_learned: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
"""How many caps answers of each local session were recorded (bounded: they stay in the log)."""
MAX_LEARNED_PER_SESSION = 8
MAX_FEATURES = 512
MAX_FEATURE_BYTES = 32768
"""The caps ``ver`` each local session last announced (connection state, not cluster state)."""


async def on_available(hub: Hub, session: LocalSession, presence: Element, initial: bool) -> None:
    """After an available broadcast presence: learn the caps if new, then send last items."""
    advertised = caps.advertised(presence)
    ver = advertised[2] if advertised else ""
    previous = _announced.get(session)
    _announced[session] = ver
    if not initial and ver == previous:
        return
    if advertised is None:
        if initial:
            send_last_items(hub, session, frozenset())  # only nodes it may see: none wanted
        return
    hash_name, node, ver = advertised
    with hub.read() as txn:
        known = pep_view.caps_features(hub.store, txn, ver, session.full)
    if known is not None:
        send_last_items(hub, session, frozenset(caps.notify_nodes(known)))
        return
    query = E("{%s}query" % ns.DISCO_INFO, {"node": f"{node}#{ver}"})
    iq = E(
        "{%s}iq" % ns.CLIENT,
        {"type": "get", "from": session.jid.domain, "id": "caps-" + secrets.token_hex(6)},
        query,
    )

    async def answered(reply: Element) -> None:
        await _learn(hub, session, reply, hash_name, ver)

    hub.request(session, iq, answered)


async def _learn(hub: Hub, session: LocalSession, reply: Element, hash_name: str, ver: str) -> None:
    query = reply.find("{%s}query" % ns.DISCO_INFO)
    if reply.get("type") != "result" or query is None:
        return
    features = caps.features(query)
    if len(features) > MAX_FEATURES or sum(len(f) for f in features) > MAX_FEATURE_BYTES:
        log.info("caps_too_large", jid=session.full, ver=ver, features=len(features))
        return
    learned = _learned.get(session, 0)
    if learned >= MAX_LEARNED_PER_SESSION:
        log.info("caps_learning_limited", jid=session.full, ver=ver)
        return
    _learned[session] = learned + 1
    if caps.verify(query, hash_name, ver):
        await hub.log.append(CapsLearned(ver, hash_name, features))
    else:
        # Not cached for others (§5.4), but this client told us what it wants: believed for it
        # alone, as Prosody does, so a client with a miscomputed hash still gets its events.
        log.info("caps_unverified", jid=session.full, ver=ver, hash=hash_name)
        await hub.log.append(CapsLearned(ver, hash_name, features, jid=session.full))
    if _announced.get(session) == ver:
        send_last_items(hub, session, frozenset(caps.notify_nodes(features)))


def send_last_items(
    hub: Hub, session: LocalSession, wanted: frozenset[str], owners: list[str] | None = None
) -> None:
    """The last item of each node ``session`` may see and wants, from its contacts (those it
    has a subscription to) and its own account; or only from ``owners``."""
    if not wanted:
        return
    with hub.read() as txn:
        out = _last_items(hub, txn, session, wanted, owners)
    for xml in out:
        session.send_bytes(addressed(xml, session.full))


def on_new_subscription(hub: Hub, txn: Any, subscriber: str, owner: str) -> None:
    """``subscriber`` was just granted a subscription to ``owner``: a new PEP subscriber, due
    the last items it wants (XEP-0163 §4.3.4, ``on_sub``) on each available session."""
    for session in hub.local_of_bare(subscriber):
        ver = _announced.get(session)
        if not session.available or not ver:
            continue
        known = pep_view.caps_features(hub.store, txn, ver, session.full)
        if known is None:
            continue
        wanted = frozenset(caps.notify_nodes(known))
        for xml in _last_items(hub, txn, session, wanted, [owner]):
            session.send_bytes(addressed(xml, session.full))


def _last_items(
    hub: Hub, txn: Any, session: LocalSession, wanted: frozenset[str], only: list[str] | None
) -> list[str]:
    out = []
    owners = [session.bare] + [
        i.contact
        for i in roster_view.items(hub.store, txn, session.bare)
        if i.subscription in ("to", "both") and i.contact != session.bare
    ]
    if only is not None:
        owners = [o for o in owners if o in only]
    for owner in owners:
        if owner != session.bare and access.blocked_either(hub, txn, owner, session.bare):
            continue
        for row in pep_view.nodes(hub.store, txn, owner):
            if (
                row.node not in wanted
                or row.config.send_last_published_item != "on_sub_and_presence"
            ):
                continue
            item = roster_view.item(hub.store, txn, owner, session.bare)
            if access.refusal(row.config, row.whitelist, owner, session.bare, item) is not None:
                continue
            last = pep_view.last_item(hub.store, txn, owner, row.node)
            if last is None:
                continue
            stanza_id = f"pep-last-{secrets.token_hex(6)}"
            out.append(
                render.last_published(
                    owner, row.node, stanza_id, last.id, last.payload, stamp(last.at)
                )
            )
    return out
