"""The owner's use cases (XEP-0045 §10): configuring a room (and creating an instant or a
reserved room, §10.1), destroying it (§10.9). Emits ``muc.room_configured`` (with the owner and
admin lists the form carries as ``muc.affiliation_set`` in the same proposal) and
``muc.room_destroyed``.
"""

from __future__ import annotations

from typing import Any

from xes.events.catalog import MucAffiliationSet, MucRoomConfigured, MucRoomDestroyed
from xes.features.muc.common import check_affiliations, propose
from xes.features.muc.service import visible_room
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.muc import forms, model
from xes.stanza.core import StanzaError, iq_result
from xes.xml import E, Element, ns
from xes.xml.ns import MUC_OWNER


async def handle(
    hub: Hub, session: LocalSession, iq: Element, query: Element, room_jid: str
) -> Element:
    room = visible_room(hub, session, room_jid)
    if room.affiliation(session.bare) != "owner":
        raise StanzaError("forbidden", "only owners configure a room (XEP-0045 §10)")
    cfg = hub.config.muc
    if iq.get("type") == "get":
        admins = sorted(b for b, a in room.affiliations.items() if a == "admin")
        form = forms.config_form(room.config, room.owners(), admins, cfg.max_occupants)
        return iq_result(iq, E("{%s}query" % MUC_OWNER, None, form))
    destroy = query.find("{%s}destroy" % MUC_OWNER)
    if destroy is not None:
        await propose(hub, destroy_event(room.jid, destroy, session.full))
        return iq_result(iq)
    form = query.find("{%s}x" % ns.DATA_FORMS)
    if form is None:
        raise StanzaError("bad-request", "submit the configuration form, or destroy")
    if form.get("type") == "cancel":
        if room.locked:
            # §10.1.3: cancelling the initial configuration of a reserved room destroys it.
            await propose(hub, MucRoomDestroyed(room.jid, "", "", session.full))
        return iq_result(iq)
    submitted = forms.parse_config_form(
        form, room.config, cfg.max_occupants, cfg.max_history_length
    )
    # Promotions first (an admin added by the form that makes the room members-only stays),
    # then the configuration, then demotions (an owner may hand the room over in the form).
    changes = _list_changes(room, submitted, session.full)
    check_affiliations(hub, room, changes)
    rank = model.AFFILIATION_RANK
    ups = [e for e in changes if rank[e.affiliation] > rank[room.affiliation(e.jid)]]
    downs = [e for e in changes if e not in ups]
    events: list[Any] = [
        *ups,
        MucRoomConfigured(room.jid, submitted.config.to_json(), session.full),
        *downs,
    ]
    await propose(hub, *events)
    return iq_result(iq)


def _list_changes(room: model.Room, submitted: forms.SubmittedConfig, by: str) -> list[Any]:
    """Affiliation changes the form's owner and admin lists make (§10.2 roomowners/admins):
    one final affiliation per JID (owner over admin), one event for each that changes."""
    owners = {b for b, a in room.affiliations.items() if a == "owner"}
    admins = {b for b, a in room.affiliations.items() if a == "admin"}
    final = {b: room.affiliation(b) for b in owners | admins}
    if submitted.owners is not None:
        for bare in owners - set(submitted.owners):
            final[bare] = "none"
        for bare in submitted.owners:
            final[bare] = "owner"
    if submitted.admins is not None:
        for bare in admins - set(submitted.admins):
            if final.get(bare) == "admin":
                final[bare] = "none"
        for bare in submitted.admins:
            if final.get(bare) != "owner":
                final[bare] = "admin"
    if "owner" not in final.values():
        raise StanzaError("conflict", "a room keeps at least one owner")
    return [
        MucAffiliationSet(room.jid, bare, affiliation, "", by)
        for bare, affiliation in sorted(final.items())
        if affiliation != room.affiliation(bare)
    ]


def destroy_event(room: str, destroy: Element, by: str) -> MucRoomDestroyed:
    alternate = destroy.get("jid") or ""
    if alternate:
        try:
            alternate = str(JID.parse(alternate))
        except InvalidJID as exc:
            raise StanzaError("jid-malformed", "the alternate venue is not a JID") from exc
    reason = destroy.find("{%s}reason" % MUC_OWNER)
    return MucRoomDestroyed(room, reason.text if reason is not None else "", alternate, by)
