"""The moderator's and admin's use cases (XEP-0045 §8, §9): kick, grant and revoke voice,
moderator rights, membership, bans, admin and owner lists, and reading those lists.

One ``muc#admin`` set may carry several items; they are one proposal (all or nothing), each a
``muc.role_set`` (by nickname) or ``muc.affiliation_set`` (by JID). The permission rules are
:mod:`xes.muc.model`'s, which apply checks again at commit.
"""

from __future__ import annotations

from typing import Any

from xes.events.catalog import MucAffiliationSet, MucRoleSet
from xes.features.muc.common import check_affiliations, occupant_of, propose
from xes.features.muc.messages import deliver_to_user
from xes.features.muc.service import visible_room
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.muc import model
from xes.muc.nick import key
from xes.stanza.core import StanzaError, iq_result
from xes.xml import E, Element, ns
from xes.xml.ns import MUC_ADMIN, MUC_USER

_ITEM = "{%s}item" % MUC_ADMIN

LIST_RIGHTS = {
    "owner": "owner",
    "admin": "owner",
    "member": "admin",
    "outcast": "admin",
}
"""Affiliation lists and the least affiliation that may read them (XEP-0045 §9.5, §10.5, §10.8);
members lists are also readable by... admins only here (muc#roomconfig_getmemberlist is not
offered)."""


async def handle(
    hub: Hub, session: LocalSession, iq: Element, query: Element, room_jid: str
) -> Element:
    room = visible_room(hub, session, room_jid)
    items = query.find_all(_ITEM)
    if not items:
        raise StanzaError("bad-request", "a muc#admin query needs an item")
    if iq.get("type") == "get":
        return iq_result(iq, _list(room, session, items[0]))
    events: list[Any] = [_change(room, session, item) for item in items]
    check_affiliations(hub, room, events)
    events += _absent_notices(hub, room, events)
    await propose(hub, *events)
    return iq_result(iq)


def _absent_notices(hub: Hub, room: model.Room, events: list[Any]) -> list[Any]:
    """XEP-0045 §9.3-§9.5: a user whose affiliation changed while not in the room is told by a
    message from the room with status 101 (members learn they may now enter, and so on)."""
    notices: list[Any] = []
    for event in events:
        if not isinstance(event, MucAffiliationSet) or room.occupants_of(event.jid):
            continue
        if room.affiliation(event.jid) == event.affiliation:
            continue
        x = E(
            "{%s}x" % MUC_USER,
            None,
            E("{%s}item" % MUC_USER, {"affiliation": event.affiliation, "jid": event.jid}),
            E("{%s}status" % MUC_USER, {"code": "101"}),
        )
        notice = deliver_to_user(hub, room.jid, event.jid, E("{%s}message" % ns.CLIENT, None, x))
        if notice is not None:
            notices.append(notice)
    return notices


def _list(room: model.Room, session: LocalSession, item: Element) -> Element:
    affiliation, role = item.get("affiliation"), item.get("role")
    mine = model.AFFILIATION_RANK[room.affiliation(session.bare)]
    out: list[Element] = []
    if affiliation is not None:
        need = LIST_RIGHTS.get(affiliation)
        if need is None:
            raise StanzaError("bad-request", f"no list of affiliation {affiliation!r}")
        if mine < model.AFFILIATION_RANK[need]:
            raise StanzaError("forbidden", f"you may not see the {affiliation} list")
        for bare in sorted(b for b, a in room.affiliations.items() if a == affiliation):
            attrs = {"affiliation": affiliation, "jid": bare, "nick": room.reserved.get(bare)}
            out.append(E(_ITEM, attrs))
    elif role is not None:
        if role not in ("moderator", "participant", "visitor"):
            raise StanzaError("bad-request", f"no list of role {role!r}")
        me = occupant_of(room, session)
        if role == "moderator" and mine < model.AFFILIATION_RANK["admin"]:
            raise StanzaError("forbidden", "admins read the moderator list")
        if me is None or me.role != "moderator":
            raise StanzaError("forbidden", "moderators read role lists")
        for k in sorted(room.occupants):
            occupant = room.occupants[k]
            if occupant.role == role:
                attrs = {
                    "role": role,
                    "nick": occupant.nick,
                    "affiliation": room.affiliation(occupant.bare),
                    "jid": occupant.shown.jid,
                }
                out.append(E(_ITEM, attrs))
    else:
        raise StanzaError("bad-request", "ask for an affiliation or a role")
    return E("{%s}query" % MUC_ADMIN, None, *out)


def _reason(item: Element) -> str:
    el = item.find("{%s}reason" % MUC_ADMIN)
    return el.text if el is not None else ""


def _change(room: model.Room, session: LocalSession, item: Element) -> Any:
    role, affiliation = item.get("role"), item.get("affiliation")
    if role is not None:
        if role not in model.ROLES:
            raise StanzaError("bad-request", f"unknown role {role!r}")
        nick = item.get("nick")
        target = room.occupants.get(key(nick)) if nick else None
        if target is None:
            raise StanzaError("item-not-found", "no occupant with that nickname")
        error = model.role_change_error(room, occupant_of(room, session), target, role)
        if error is not None:
            raise StanzaError(error, f"you may not make {nick} a {role}")
        return MucRoleSet(room.jid, target.nick, role, _reason(item), session.full)
    if affiliation is not None:
        if affiliation not in model.AFFILIATIONS:
            raise StanzaError("bad-request", f"unknown affiliation {affiliation!r}")
        raw = item.get("jid")
        if raw is None and item.get("nick"):
            target = room.occupants.get(key(item.get("nick") or ""))
            if target is None:
                raise StanzaError("item-not-found", "no occupant with that nickname")
            raw = target.bare
        try:
            bare = str(JID.parse(raw or "").bare)
        except InvalidJID as exc:
            raise StanzaError("jid-malformed", "an affiliation change needs a JID") from exc
        error = model.affiliation_change_error(room, session.bare, bare, affiliation)
        if error is not None:
            raise StanzaError(error, f"you may not make {bare} {affiliation}")
        return MucAffiliationSet(room.jid, bare, affiliation, _reason(item), session.full)
    raise StanzaError("bad-request", "an item needs a role or an affiliation")
