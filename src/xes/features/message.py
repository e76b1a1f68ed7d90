"""Message routing (RFC 6121 §8.5) for local users.

Decides the delivery targets from the sessions projection and emits one ``message.routed``
event; :mod:`xes.delivery` hands the stanza to the target sessions on whichever node holds them
once it is committed. A chat or normal message for a user with no available resource goes to the
offline store (``offline_for``), within the per-user quota. Reads accounts, sessions, offline.
"""

from __future__ import annotations

from xes.events.catalog import MessageRouted
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.projections import accounts as accounts_view
from xes.projections import offline as offline_view
from xes.projections import sessions as sessions_view
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
    if to.domain != hub.domain:
        raise StanzaError(
            "remote-server-not-found", "no server-to-server connection to that domain"
        )
    if to.local is None:
        if type_ == "error":
            return
        raise StanzaError("service-unavailable")
    bare = str(to.bare)
    stamped = stanza.with_attrs(**{"from": session.full})
    targets: list[str] = []
    offline_for: str | None = None
    with hub.read() as txn:
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
    await hub.log.append(
        MessageRouted(
            sender=session.full,
            to=str(to),
            type=type_,
            xml=serialize(stamped).decode(),
            targets=targets,
            offline_for=offline_for,
        )
    )
