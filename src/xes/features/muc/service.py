"""The service and its rooms as entities: XEP-0030 disco, the room archive (XEP-0313 on the room
JID), XEP-0199 ping, reserved nicknames (XEP-0045 §7.10 registration).

Disco of the service lists public rooms (RSM-paged, XEP-0059, when there are many); disco of a
room gives its ``muc_*`` features and the ``muc#roominfo`` form. A locked room does not exist
for anyone but its owner (XEP-0045 §10.1.1). The room archive is read like a user's archive
(:mod:`xes.features.mam`): members-only rooms show it to members only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from xes.events.catalog import MucAffiliationSet
from xes.features import mam, read_status
from xes.features.muc.common import check_affiliations, propose, read_room
from xes.hub import Hub, LocalSession
from xes.jid import domain_part
from xes.muc import forms, model
from xes.muc.nick import InvalidNick, enforce, key
from xes.projections import archive as archive_view
from xes.projections import muc as muc_view
from xes.projections.archive import ItemNotFound
from xes.stanza.core import StanzaError, iq_result
from xes.stanza.delay import stamp
from xes.xml import E, Element, ns
from xes.xml.ns import MUC, OCCUPANT_ID

SELF_PING = "http://jabber.org/protocol/muc#self-ping-optimization"
STABLE_ID = "http://jabber.org/protocol/muc#stable_id"
"""Groupchat reflections keep the sender's ``id`` (XEP-0045 §7.4, advertised since 1.31)."""
REGISTER = "jabber:iq:register"
REGISTER_FORM = "http://jabber.org/protocol/muc#register"
DISCO_PAGE = 100
"""Rooms per disco#items page when the client sends no RSM ``max``."""


def _feature(var: str) -> Element:
    return E("{%s}feature" % ns.DISCO_INFO, {"var": var})


async def service_iq(hub: Hub, session: LocalSession, iq: Element, child: Element) -> Element:
    type_ = iq.get("type")
    if child.tag == "{%s}query" % ns.DISCO_INFO and type_ == "get":
        if child.get("node"):
            raise StanzaError("item-not-found")
        features = [ns.DISCO_INFO, ns.DISCO_ITEMS, MUC, OCCUPANT_ID, SELF_PING, STABLE_ID, ns.PING]
        if hub.config.archive.enabled:
            features += [ns.MAM, ns.SID]
        identity = E(
            "{%s}identity" % ns.DISCO_INFO,
            {"category": "conference", "type": "text", "name": "Group chat"},
        )
        query = E("{%s}query" % ns.DISCO_INFO, None, identity, *map(_feature, features))
        return iq_result(iq, query)
    if child.tag == "{%s}query" % ns.DISCO_ITEMS and type_ == "get":
        if child.get("node"):
            raise StanzaError("item-not-found")
        return iq_result(iq, _room_list(hub, child, domain_part(iq.get("to"))))
    if child.tag == "{%s}ping" % ns.PING and type_ == "get":
        return iq_result(iq)
    raise StanzaError("service-unavailable")


@dataclass(frozen=True, slots=True)
class _Listed:
    jid: str
    name: str


def _room_list(hub: Hub, query: Element, service: str) -> Element:
    """Public, unlocked rooms of ``service`` in JID order, a page at a time (XEP-0045 §6.3,
    XEP-0059); each hosted domain's service lists its own rooms only (ADR 0023)."""
    suffix = "@" + service
    with hub.read() as txn:
        rooms = [
            _Listed(jid, name)
            for jid, name in muc_view.listed_rooms(hub.store, txn)
            if jid.endswith(suffix)
        ]
    rsm = query.find("{%s}set" % ns.RSM)
    size, after, before = DISCO_PAGE, None, None
    if rsm is not None:
        max_el = rsm.find("{%s}max" % ns.RSM)
        if max_el is not None:
            try:
                size = max(0, min(int(max_el.text), 1000))
            except ValueError as exc:
                raise StanzaError("bad-request", "RSM max must be a number") from exc
        after_el, before_el = rsm.find("{%s}after" % ns.RSM), rsm.find("{%s}before" % ns.RSM)
        after = after_el.text if after_el is not None else None
        before = before_el.text if before_el is not None else None
    total = len(rooms)
    if after:
        rooms = [r for r in rooms if r.jid > after]
    if before is not None:
        rooms = [r for r in rooms if not before or r.jid < before]
        page = rooms[-size:] if size else []
    else:
        page = rooms[:size]
    items = [E("{%s}item" % ns.DISCO_ITEMS, {"jid": r.jid, "name": r.name or None}) for r in page]
    if rsm is not None or total > DISCO_PAGE:
        rsm_out: list[Element] = []
        if page:
            rsm_out.append(E("{%s}first" % ns.RSM, None, page[0].jid))
            rsm_out.append(E("{%s}last" % ns.RSM, None, page[-1].jid))
        rsm_out.append(E("{%s}count" % ns.RSM, None, str(total)))
        items.append(E("{%s}set" % ns.RSM, None, *rsm_out))
    return E("{%s}query" % ns.DISCO_ITEMS, None, *items)


def visible_room(hub: Hub, session: LocalSession, room_jid: str) -> model.Room:
    """The room, unless it does not exist or is locked for this user (``item-not-found``)."""
    room = read_room(hub, room_jid)
    if room is None or (room.locked and room.affiliation(session.bare) != "owner"):
        raise StanzaError("item-not-found", "no such room")
    return room


async def room_iq(
    hub: Hub, session: LocalSession, iq: Element, child: Element, room_jid: str
) -> Element | None:
    room = visible_room(hub, session, room_jid)
    type_ = iq.get("type")
    if child.tag == "{%s}query" % ns.DISCO_INFO and type_ == "get":
        return iq_result(iq, _room_info(hub, session, room, child))
    if child.tag == "{%s}query" % ns.DISCO_ITEMS and type_ == "get":
        return iq_result(iq, E("{%s}query" % ns.DISCO_ITEMS))
    if child.tag == "{%s}ping" % ns.PING and type_ == "get":
        return iq_result(iq)
    if child.tag == "{%s}query" % ns.MAM:
        return await _archive_query(hub, session, iq, child, room)
    if child.tag == "{%s}metadata" % ns.MAM and type_ == "get":
        _archive_access(hub, session, room)
        return await mam_metadata(hub, iq, room.jid, room.created_seq)
    if child.tag == "{%s}query" % REGISTER:
        return await _register(hub, session, iq, child, room)
    if child.tag == read_status.STATUS:
        return await read_status.room_query(hub, session, iq, child, room)
    raise StanzaError("service-unavailable")


ROOMUSER_NODE = "x-roomuser-item"
"""XEP-0045 §7.12: disco#info with this node asks for the user's reserved nickname."""


def _room_info(hub: Hub, session: LocalSession, room: model.Room, query: Element) -> Element:
    node = query.get("node")
    if node == ROOMUSER_NODE:
        # §7.12: the reserved nickname as an identity, or an empty result when there is none.
        reserved = room.reserved.get(session.bare)
        identity = (
            E(
                "{%s}identity" % ns.DISCO_INFO,
                {"category": "conference", "type": "text", "name": reserved},
            )
            if reserved
            else None
        )
        return E("{%s}query" % ns.DISCO_INFO, {"node": ROOMUSER_NODE}, identity)
    if node:
        raise StanzaError("item-not-found")
    identity = E(
        "{%s}identity" % ns.DISCO_INFO,
        {"category": "conference", "type": "text", "name": room.config.name or None},
    )
    features = [ns.DISCO_INFO, MUC, OCCUPANT_ID, SELF_PING, STABLE_ID, ns.PING, REGISTER]
    features.append(read_status.NS)
    features += forms.room_features(room.config, room.locked)
    if room.config.logging and hub.config.archive.enabled:
        features += [ns.MAM, ns.SID]
    info = forms.room_info(room.config, len(room.occupants), room.subject)
    return E("{%s}query" % ns.DISCO_INFO, None, identity, *map(_feature, sorted(features)), info)


def _archive_access(hub: Hub, session: LocalSession, room: model.Room) -> None:
    if not (room.config.logging and hub.config.archive.enabled):
        raise StanzaError("service-unavailable", "this room keeps no archive")
    affiliation = room.affiliation(session.bare)
    if affiliation == "outcast":
        raise StanzaError("forbidden", "you are banned from this room")
    member = model.AFFILIATION_RANK[affiliation] >= 1
    if room.config.members_only and not member:
        raise StanzaError("forbidden", "the archive of a members-only room is for its members")
    closed = room.config.password_hash or not room.config.public
    if closed and not member and room.by_session(session.session_id) is None:
        # A hidden or password-protected room shows its archive to its members and occupants.
        raise StanzaError("forbidden", "join the room to read its archive")


async def _archive_query(
    hub: Hub, session: LocalSession, iq: Element, child: Element, room: model.Room
) -> Element:
    """XEP-0313 on the room JID: the room's messages, from room/nick, with their archive ids."""
    _archive_access(hub, session, room)
    if iq.get("type") == "get":
        return iq_result(iq, E("{%s}query" % ns.MAM, None, mam.query_form()))
    cfg = hub.config.archive
    # A room keeps the archive of an earlier room of the same name; this room shows only its
    # own messages (those logged after its creation).
    q = replace(mam.parse_query(child, cfg.page_size, cfg.max_page_size), min_seq=room.created_seq)
    try:
        with hub.read() as txn:
            page = mam.fit_page(
                archive_view.query(hub.store, txn, room.jid, q), q.before is not None
            )
    except ItemNotFound as exc:
        raise StanzaError("item-not-found", f"no message with id {exc} in the archive") from exc
    flip = child.find("{%s}flip-page" % ns.MAM) is not None
    messages, fin = mam.render_page(page, room.jid, session.full, child.get("queryid"), flip)
    for data in messages:
        session.send_bytes(data)
    return iq_result(iq, fin)


async def mam_metadata(hub: Hub, iq: Element, owner: str, min_seq: int = 0) -> Element:
    with hub.read() as txn:
        edges = archive_view.edges(hub.store, txn, owner, min_seq)
    children = []
    if edges is not None:
        for tag, item in zip(("start", "end"), edges, strict=True):
            children.append(
                E("{%s}%s" % (ns.MAM, tag), {"id": item.id, "timestamp": stamp(item.at)})
            )
    return iq_result(iq, E("{%s}metadata" % ns.MAM, None, *children))


async def _register(
    hub: Hub, session: LocalSession, iq: Element, child: Element, room: model.Room
) -> Element:
    """XEP-0045 §7.10: reserve a nickname, which makes the user a member of the room.

    Open rooms take anyone who is not banned; a members-only room takes its members only (a
    registration is not a way in). The nickname is then refused to everybody else."""
    affiliation = room.affiliation(session.bare)
    if affiliation == "outcast":
        raise StanzaError("forbidden", "you are banned from this room")
    if room.config.members_only and model.AFFILIATION_RANK[affiliation] < 1:
        raise StanzaError("registration-required", "only members register in this room", "auth")
    registered = room.reserved.get(session.bare)
    if iq.get("type") == "get":
        if registered is not None:
            return iq_result(
                iq,
                E(
                    "{%s}query" % REGISTER,
                    None,
                    E("{%s}registered" % REGISTER),
                    E("{%s}username" % REGISTER, None, registered),
                ),
            )
        field = E(
            "{%s}field" % ns.DATA_FORMS,
            {"var": "muc#register_roomnick", "type": "text-single", "label": "Nickname"},
            E("{%s}required" % ns.DATA_FORMS),
        )
        form = E(
            "{%s}x" % ns.DATA_FORMS,
            {"type": "form"},
            E(
                "{%s}field" % ns.DATA_FORMS,
                {"var": "FORM_TYPE", "type": "hidden"},
                E("{%s}value" % ns.DATA_FORMS, None, REGISTER_FORM),
            ),
            field,
        )
        return iq_result(iq, E("{%s}query" % REGISTER, None, form))
    if child.find("{%s}remove" % REGISTER) is not None:
        if registered is None:
            raise StanzaError("item-not-found", "no nickname registered")
        if affiliation != "member":
            raise StanzaError("not-allowed", "only a member's registration can be dropped")
        await propose(
            hub,
            MucAffiliationSet(room.jid, session.bare, "none", "", session.full, registration=True),
        )
        return iq_result(iq)
    form = child.find("{%s}x" % ns.DATA_FORMS)
    raw = ""
    if form is not None:
        for f in form.find_all("{%s}field" % ns.DATA_FORMS):
            if f.get("var") == "muc#register_roomnick":
                values = f.find_all("{%s}value" % ns.DATA_FORMS)
                raw = values[0].text if values else ""
    if not raw:
        raise StanzaError("not-acceptable", "a nickname is required")
    try:
        nick = enforce(raw, hub.config.muc.max_nick_length)
    except InvalidNick as exc:
        raise StanzaError("jid-malformed", str(exc)) from exc
    holder = room.occupants.get(key(nick))
    if model.reserved_by_other(room, session.bare, key(nick)) or (
        holder is not None and holder.bare != session.bare
    ):
        raise StanzaError("conflict", "that nickname is taken")
    new = affiliation if model.AFFILIATION_RANK[affiliation] >= 1 else "member"
    # The user acts on its own affiliation; apply checks it as a registration (model.
    # registration_error), against the room as it is then, not as this node saw it.
    event = MucAffiliationSet(
        room.jid, session.bare, new, "", session.full, nick, registration=True
    )
    check_affiliations(hub, room, [event])
    await propose(hub, event)
    return iq_result(iq)
