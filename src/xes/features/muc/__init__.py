"""XEP-0045 Multi-User Chat: the group chat service on ``[muc] domain`` (ADR 0011).

Stanzas a local client addresses to the service, a room or an occupant come here from the
router. Each handler reads the ``muc`` projection, checks the XEP's rules (answering with the
error condition the XEP names) and proposes room events; what the occupants receive is written
by every node's delivery when the event is committed (:mod:`xes.muc.transition`). Sub-modules:
``occupants`` (join, leave, nickname, presence), ``messages`` (groupchat, subject, private
messages, invitations, voice requests), ``owner`` (configuration, destruction), ``admin``
(roles and affiliations), ``service`` (disco, room archive, self-ping).
"""

from __future__ import annotations

from xes.features.muc import admin, messages, occupants, owner, service
from xes.features.muc.common import is_muc_domain
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.stanza.core import StanzaError
from xes.xml import Element

XEPS = ((45, "complete"), (421, "complete"), (410, "complete"), (249, "complete"))

__all__ = ["XEPS", "handle", "is_muc_domain"]


async def handle(hub: Hub, session: LocalSession, stanza: Element) -> None:
    """A stanza from ``session`` to the service, a room or an occupant."""
    if not hub.config.muc.enabled:
        raise StanzaError("service-unavailable")
    try:
        to = JID.parse(stanza.get("to") or "")
    except InvalidJID as exc:
        if stanza.name == "presence":
            raise StanzaError("jid-malformed", "not a valid room or nickname") from exc
        raise StanzaError("jid-malformed") from exc
    name = stanza.name
    if name == "presence":
        await occupants.handle(hub, session, stanza, to)
    elif name == "message":
        await messages.handle(hub, session, stanza, to)
    else:
        await _iq(hub, session, stanza, to)


async def _iq(hub: Hub, session: LocalSession, iq: Element, to: JID) -> None:
    type_ = iq.get("type")
    if type_ in ("result", "error"):
        if to.resource is not None and to.local is not None:
            await messages.iq_answer(hub, session, iq, to)
        return
    if to.resource is not None and to.local is not None:
        await messages.iq_to_occupant(hub, session, iq, to)
        return
    child = iq.elements()[0] if iq.elements() else None
    if child is None:
        raise StanzaError("bad-request")
    if to.local is None:
        reply = await service.service_iq(hub, session, iq, child)
    elif child.ns in (owner.MUC_OWNER,):
        reply = await owner.handle(hub, session, iq, child, str(to))
    elif child.ns in (admin.MUC_ADMIN,):
        reply = await admin.handle(hub, session, iq, child, str(to))
    else:
        reply = await service.room_iq(hub, session, iq, child, str(to))
    if reply is not None:
        from xes.xml import serialize

        session.send_bytes(serialize(reply))
