"""Entering and leaving rooms (XEP-0045 §7.1-§7.3, §7.6, §7.14, §10.1): presence to room/nick.

Emits ``muc.room_created`` (the first join of a room that does not exist yet, in the same
proposal as the creator's join), ``muc.occupant_joined``, ``muc.occupant_presence``,
``muc.nick_changed`` and ``muc.occupant_left``. :func:`leave_events` gives the events that make
a session leave every room it is in: whoever ends a session proposes them with the end (the
projection refuses an end without them), so no occupant outlives its session.

Choices where the XEP leaves one (ADR 0011): a join without ``<x xmlns='...muc'/>`` is accepted
(groupchat 1.0 clients, as Prosody and ejabberd do); a join from a session that is already the
occupant is a rejoin (the room state is sent again, as Prosody does); a join under a new nickname
from a joined session is a nickname change (as ejabberd does); another session of the same user
may join under the same nickname and shares the occupant.
"""

from __future__ import annotations

import secrets
from typing import Any

import lmdb

from xes.events.catalog import (
    MucNickChanged,
    MucOccupantJoined,
    MucOccupantLeft,
    MucOccupantPresence,
    MucRoomCreated,
)
from xes.features.mam import parse_time
from xes.features.muc.common import (
    REFUSAL_TYPES,
    RoomExists,
    occupant_of,
    payload_children,
    propose,
    read_room,
)
from xes.features.throttle import throttle
from xes.hub import Hub, LocalSession
from xes.jid import JID
from xes.muc import forms, model
from xes.muc.model import RoomConfig
from xes.muc.nick import InvalidNick, enforce, key
from xes.projections import muc as muc_view
from xes.stanza.core import StanzaError
from xes.xml import Element
from xes.xml.ns import MUC

LEAVE_REASONS = {
    "unavailable": "left",
    "closed": "logout",
    "system-shutdown": "shutdown",
    "shutdown": "shutdown",
}
"""How a session's end shows in the rooms: unavailable broadcast presence is a plain leave, the
user logging out one without status code; everything else (a broken connection, a timeout, a
node declared down) is status 333, a server shutdown 332."""


async def handle(hub: Hub, session: LocalSession, stanza: Element, to: JID) -> None:
    type_ = stanza.get("type")
    if to.local is None:
        return  # presence to the service itself changes nothing
    if to.resource is None:
        if type_ is None:
            raise StanzaError("jid-malformed", "join with room@service/nickname (XEP-0045 §7.2.1)")
        return
    room_jid = str(to.bare)
    if type_ == "unavailable":
        await _leave(hub, session, room_jid, stanza)
    elif type_ is None:
        await _available(hub, session, room_jid, to.resource, stanza)
    elif type_ == "error":
        # A client bouncing room presence: it has lost the room; take it out (XEP-0045 §7.2.?).
        await _leave(hub, session, room_jid, None, reason="session_ended")
    # subscription and probe presence to rooms are ignored


async def _available(
    hub: Hub, session: LocalSession, room_jid: str, raw_nick: str, stanza: Element
) -> None:
    cfg = hub.config.muc
    try:
        nick = enforce(raw_nick, cfg.max_nick_length)
    except InvalidNick as exc:
        raise StanzaError("jid-malformed", str(exc)) from exc
    room = read_room(hub, room_jid)
    children = payload_children(stanza)
    joined = None if room is None else occupant_of(room, session)
    if room is not None and joined is not None:
        if key(joined.nick) == key(nick):
            if stanza.find("{%s}x" % MUC) is not None:
                await _join(hub, session, room, nick, raw_nick, stanza, children)
            else:
                await propose(hub, MucOccupantPresence(room_jid, session.session_id, children))
            return
        await throttle(session, "join", cfg.joins_per_second, cfg.join_burst)
        _check_nick_free(room, joined.bare, key(nick))
        await propose(hub, MucNickChanged(room_jid, session.session_id, nick, children))
        return
    await throttle(session, "join", cfg.joins_per_second, cfg.join_burst)
    if room is None:
        await _create(hub, session, room_jid, nick, raw_nick, stanza, children)
        return
    await _join(hub, session, room, nick, raw_nick, stanza, children)


def _check_nick_free(room: model.Room, bare: str, nick_key: str) -> None:
    holder = room.occupants.get(nick_key)
    if holder is not None and holder.bare != bare:
        raise StanzaError("conflict", "that nickname is in use (XEP-0045 §7.6)")
    if model.reserved_by_other(room, bare, nick_key):
        raise StanzaError("conflict", "that nickname is registered to another user")


def _history(stanza: Element) -> dict[str, Any]:
    x = stanza.find("{%s}x" % MUC)
    hist = x.find("{%s}history" % MUC) if x is not None else None
    if hist is None:
        return {}
    out: dict[str, Any] = {}
    for attr in ("maxstanzas", "maxchars", "seconds"):
        value = hist.get(attr)
        if value is not None:
            try:
                out[attr] = max(0, int(value))
            except ValueError as exc:
                raise StanzaError("bad-request", f"history {attr} must be a number") from exc
    since = hist.get("since")
    if since is not None:
        out["since"] = parse_time(since)
    return out


def _password(stanza: Element) -> str | None:
    x = stanza.find("{%s}x" % MUC)
    el = x.find("{%s}password" % MUC) if x is not None else None
    return None if el is None else el.text


async def _join(
    hub: Hub,
    session: LocalSession,
    room: model.Room,
    nick: str,
    raw_nick: str,
    stanza: Element,
    children: str,
) -> None:
    nick_key = key(nick)
    existing = room.occupants.get(nick_key)
    shared = existing is not None and existing.bare == session.bare
    rejoin = shared and existing is not None and session.session_id in existing.sessions
    password_ok = False
    if not rejoin and not shared:
        # What this node sees may be a moment behind the log (the owner just unlocked the room
        # through another node, an admin just made the user a member): a refusal is never
        # decided here. The join is proposed anyway and apply, in log order, gives the verdict;
        # the local view only decides what we can vouch for, the password.
        given = _password(stanza)
        password_ok = (
            given is not None
            and bool(room.config.password_hash)
            and forms.check_password(room.config.password_hash, given)
        )
    event = MucOccupantJoined(
        room.jid,
        nick,
        session.full,
        session.session_id,
        children,
        _history(stanza),
        password_ok=password_ok,
        nick_modified=nick != raw_nick,
    )
    try:
        await propose(hub, event)
    except StanzaError as exc:
        raise StanzaError(
            exc.condition,
            JOIN_REFUSALS.get(exc.condition, exc.text),
            REFUSAL_TYPES.get(exc.condition),
        ) from exc


JOIN_REFUSALS = {
    "item-not-found": "the room is locked until its owner configures it",
    "forbidden": "you are banned from this room",
    "registration-required": "this room is for members only",
    "conflict": "that nickname is in use or registered to another user",
    "service-unavailable": "the room is full",
    "not-authorized": "a password is required (XEP-0045 §7.2.6)",
}
"""What a refused join is told, per XEP-0045 §7.2 condition."""


def default_config(hub: Hub) -> RoomConfig:
    cfg = hub.config.muc
    return RoomConfig(
        persistent=cfg.default_persistent,
        public=cfg.default_public,
        members_only=cfg.default_members_only,
        moderated=cfg.default_moderated,
        whois=cfg.default_whois,
        max_users=cfg.max_occupants,
        history_length=cfg.default_history_length,
        allow_pm=cfg.default_allow_pm,
        logging=cfg.default_logging and hub.config.archive.enabled,
    )


async def _create(
    hub: Hub,
    session: LocalSession,
    room_jid: str,
    nick: str,
    raw_nick: str,
    stanza: Element,
    children: str,
) -> None:
    """XEP-0045 §10.1: the first join creates the room, its creator the owner."""
    cfg = hub.config.muc
    if cfg.creators and session.bare not in cfg.creators:
        raise StanzaError("not-allowed", "you may not create rooms on this service")
    with hub.read() as txn:
        if muc_view.owned_by(hub.store, txn, session.bare) >= cfg.max_rooms_per_user:
            raise StanzaError("not-allowed", f"you own {cfg.max_rooms_per_user} rooms already")
    created = MucRoomCreated(
        room_jid,
        session.full,
        default_config(hub).to_json(),
        locked=cfg.lock_new_rooms,
        secret=secrets.token_urlsafe(16),
    )
    joined = MucOccupantJoined(
        room_jid,
        nick,
        session.full,
        session.session_id,
        children,
        _history(stanza),
        nick_modified=nick != raw_nick,
    )
    try:
        await propose(hub, created, joined)
    except RoomExists as exc:
        room = read_room(hub, room_jid)  # created meanwhile by someone else: join it
        if room is None:  # ... and gone again already
            raise StanzaError(
                "resource-constraint", "the room is changing; try again", "wait"
            ) from exc
        await _join(hub, session, room, nick, raw_nick, stanza, children)


async def _leave(
    hub: Hub,
    session: LocalSession,
    room_jid: str,
    stanza: Element | None,
    reason: str = "left",
) -> None:
    room = read_room(hub, room_jid)
    if room is None or occupant_of(room, session) is None:
        return  # not in the room: nothing to leave (no error for presence)
    children = "" if stanza is None else payload_children(stanza)
    await propose(hub, MucOccupantLeft(room_jid, session.session_id, children, reason))


def leave_events(
    hub: Hub, txn: lmdb.Transaction, session_id: str, why: str
) -> list[MucOccupantLeft]:
    """The session leaves every room it is in; ``why`` is the session's end reason."""
    reason = LEAVE_REASONS.get(why, "session_ended")
    return [
        MucOccupantLeft(room, session_id, "", reason)
        for room in muc_view.rooms_of_session(hub.store, txn, session_id)
    ]
