"""Message routing (RFC 6121 §8.5) for local users.

Decides the delivery targets from the sessions projection and emits one ``message.routed``
event; :mod:`xes.delivery` hands the stanza to the target sessions on whichever node holds them
once it is committed. A chat or normal message for a user with no available resource goes to the
offline store (``offline_for``), within the per-user quota.

The same event carries every decision that depends on state read here (ADR 0009): which archives
keep the message (the owners' preferences, XEP-0313) under which archive id (XEP-0359, added to
the recipient's copy, so the live message, the offline copy and the outbox rows all carry it),
and which resources get carbon copies (XEP-0280). A message re-sent with an ``origin-id`` the
sender's archive already holds was routed before: it is dropped, not delivered twice.
Reads accounts, sessions, offline, roster, archive.
"""

from __future__ import annotations

import lmdb

from xes.events.catalog import MessageRouted
from xes.events.message_facts import facts_of
from xes.features import blocking, s2s
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID, domain_part
from xes.projections import accounts as accounts_view
from xes.projections import archive as archive_view
from xes.projections import offline as offline_view
from xes.projections import roster as roster_view
from xes.projections import sessions as sessions_view
from xes.stanza import carbons, sid
from xes.stanza.archiving import archivable, wanted
from xes.stanza.core import StanzaError
from xes.xml import Element, serialize

MESSAGE_TYPES = ("normal", "chat", "groupchat", "headline", "error")


async def handle(hub: Hub, session: LocalSession, stanza: Element) -> None:
    type_ = stanza.get("type") or "normal"
    if type_ not in MESSAGE_TYPES:
        type_ = "normal"  # RFC 6121 §5.2.2: an unknown type is treated as normal.
    to_attr = stanza.get("to")
    try:
        to = JID.parse(to_attr) if to_attr else session.jid.bare
    except InvalidJID as exc:
        raise StanzaError("jid-malformed") from exc
    if not hub.is_local(to.domain):
        with hub.read() as txn:
            blocking.check_outbound(hub, txn, session.bare, str(to))
        stanza = sid.strip_ours(stanza, hub.config.host_names)
        await s2s.route(hub, session.full, stanza.with_attrs(to=str(to)))  # ADR 0025
        return
    if to.local is None:
        if type_ == "error":
            return
        raise StanzaError("service-unavailable")
    bare = str(to.bare)
    stanza = sid.strip_ours(stanza, hub.config.host_names)
    stamped = stanza.with_attrs(**{"from": session.full})
    targets: list[str] = []
    offline_for: str | None = None
    origin = sid.origin_id(stanza)
    with hub.read() as txn:
        if bare != session.bare:
            blocking.check_outbound(hub, txn, session.bare, str(to))
            if blocking.refuses(hub, txn, bare, session.full):
                # XEP-0191 §3.5: the blocked sender learns nothing but "unavailable".
                if type_ in ("error", "groupchat", "headline"):
                    return
                raise StanzaError("service-unavailable")
        if not accounts_view.exists(hub.store, txn, bare):
            if type_ in ("error", "groupchat", "headline"):
                return
            raise StanzaError("service-unavailable")  # §8.5.1: no such user
        if to.resource is not None:
            full = sessions_view.by_full_jid(hub.store, txn, str(to))
            if full is not None:
                targets = [full.jid]  # §8.5.3.1: a connected resource gets it
            elif type_ in ("groupchat", "error"):
                if type_ == "groupchat":
                    raise StanzaError("service-unavailable")
                return
        if not targets:
            # §8.5.2: to the bare JID (or §8.5.3.2.1: full JID without that resource).
            if type_ == "groupchat":
                raise StanzaError("service-unavailable")
            available = sessions_view.available_resources(hub.store, txn, bare)
            if type_ == "headline" or type_ == "error":
                targets = [s.jid for s in available]
                if not targets:
                    return
            elif available:
                # §8.5.2.1.1: every non-negative resource gets it, so every device keeps up.
                targets = [s.jid for s in available]
            else:
                if offline_view.count(hub.store, txn, bare) >= hub.config.limits.offline_quota:
                    raise StanzaError("service-unavailable", "recipient's offline storage is full")
                offline_for = bare
        if origin is not None and archive_view.has_origin(hub.store, txn, session.bare, origin):
            return  # re-sent after a reconnect: routed (and archived) the first time
        archived_by = _archives(hub, txn, stanza, type_, session.bare, bare)
        sent_carbons: list[str] = []
        received_carbons: list[str] = []
        if carbons.eligible(stanza, type_):
            skip = frozenset([session.full, *targets])
            sent_carbons = sessions_view.carbon_copies(hub.store, txn, session.bare, skip)
            if bare != session.bare:
                received_carbons = sessions_view.carbon_copies(hub.store, txn, bare, skip)
    stanza_id = sid.new_id() if archived_by else None
    if stanza_id is not None and bare in archived_by:
        stamped = sid.with_stanza_id(stamped, bare, stanza_id, hub.config.host_names)
    await hub.log.append(
        MessageRouted(
            sender=session.full,
            to=str(to),
            type=type_,
            xml=serialize(stamped).decode(),
            targets=targets,
            offline_for=offline_for,
            stanza_id=stanza_id,
            archived_by=archived_by,
            origin_id=origin if session.bare in archived_by else None,
            sent_carbons=sent_carbons,
            received_carbons=received_carbons,
            **facts_of(stanza).fields(),
        )
    )


def _archives(
    hub: Hub, txn: lmdb.Transaction, stanza: Element, type_: str, sender: str, recipient: str
) -> list[str]:
    """The bare JIDs whose archive keeps this message: sender's and recipient's preferences."""
    cfg = hub.config.archive
    if not cfg.enabled or not archivable(stanza, type_):
        return []
    owners = []
    for owner, peer in ((sender, recipient), (recipient, sender)):
        if owner in owners or not hub.is_local(domain_part(owner)):
            continue  # a message to oneself is archived once; a component has no archive here
        prefs = archive_view.prefs(hub.store, txn, owner, cfg.default)
        item = roster_view.item(hub.store, txn, owner, peer)
        if wanted(prefs, peer, item is not None and item.listed):
            owners.append(owner)
    return owners
