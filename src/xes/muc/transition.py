"""What a committed room event does: the room after it, and what each occupant's session gets.

:func:`apply` is the one fold of room events. The ``muc`` projection runs it to store the room
(and to place the stanzas in the outboxes of stream-management sessions); every node's delivery
runs it on its own copy of the room, in the same log order, to write the stanzas to the sessions
it holds. Neither re-decides anything: the event was accepted, so its premises held (the
projection checks them before applying). Deterministic: no clock (the event's time comes in),
occupants and sessions visited in sorted order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xes.events.catalog import (
    MucAffiliationSet,
    MucMessageSent,
    MucNickChanged,
    MucOccupantJoined,
    MucOccupantLeft,
    MucOccupantPresence,
    MucPrivateSent,
    MucRoleSet,
    MucRoomConfigured,
    MucRoomCreated,
    MucRoomDestroyed,
    MucSubjectSet,
)
from xes.jid import bare_of
from xes.muc import render
from xes.muc.model import (
    AFFILIATION_RANK,
    Occupant,
    OccupantSession,
    Room,
    RoomConfig,
    default_role,
)
from xes.muc.nick import key
from xes.stanza.core import addressed


@dataclass(frozen=True, slots=True)
class Out:
    """One stanza for one session: ``xml`` has no ``to`` (see :func:`xes.stanza.core.addressed`)."""

    session: str
    jid: str
    xml: str


@dataclass(frozen=True, slots=True)
class HistoryItem:
    seq: int
    at: int
    xml: str
    """The message as the room sent it, without ``to``."""


HistoryReader = Callable[[str, int, int], list[HistoryItem]]
"""``(room, before_seq, most)``: the room's last ``most`` history messages before ``before_seq``,
oldest first."""


@dataclass(frozen=True, slots=True)
class Context:
    seq: int
    """Log position of the event (history rows after it are not history for it)."""
    at: int
    """The event's time (ms)."""
    history: HistoryReader


def _sorted(room: Room) -> list[Occupant]:
    return [room.occupants[k] for k in sorted(room.occupants)]


def _sessions(occupant: Occupant) -> list[OccupantSession]:
    return [occupant.sessions[s] for s in sorted(occupant.sessions)]


def _broadcast(
    room: Room,
    about: Occupant,
    build: Callable[[bool, bool], str],
    *,
    skip: frozenset[str] = frozenset(),
) -> list[Out]:
    """``build(show_jid, is_self)`` to every session of every occupant, one variant each."""
    variants: dict[tuple[bool, bool], str] = {}
    outs = []
    for occupant in _sorted(room):
        is_self = occupant is about
        show = room.non_anonymous or occupant.role == "moderator"
        variant = variants.get((show, is_self))
        if variant is None:
            variant = variants[(show, is_self)] = build(show, is_self)
        for s in _sessions(occupant):
            if s.session not in skip:
                outs.append(Out(s.session, s.jid, variant))
    return outs


def _announce(
    room: Room,
    occupant: Occupant,
    *,
    codes: tuple[int, ...] = (),
    skip: frozenset[str] = frozenset(),
    **presence: Any,
) -> list[Out]:
    """``occupant``'s presence to everyone in the room, with 110 added for its own sessions."""
    return _broadcast(
        room,
        occupant,
        lambda show, me: render.presence(
            room, occupant, show_jid=show, codes=[*codes, 110] if me else list(codes), **presence
        ),
        skip=skip,
    )


def apply(room: Room | None, event: Any, ctx: Context) -> tuple[Room | None, list[Out]]:
    """The room after ``event`` (None: the room is gone) and the stanzas it sends."""
    if isinstance(event, MucRoomCreated):
        created = Room(
            jid=event.room,
            config=RoomConfig.from_json(event.config),
            secret=event.secret,
            locked=event.locked,
            affiliations={bare_of(event.creator): "owner"},
            created_at=ctx.at,
            created_seq=ctx.seq,
        )
        return created, []
    if room is None:
        return None, []
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return room, []
    return handler(room, event, ctx)


# -- occupants ---------------------------------------------------------------------------------


def _joined(room: Room, ev: MucOccupantJoined, ctx: Context) -> tuple[Room | None, list[Out]]:
    nick_key = key(ev.nick)
    bare = bare_of(ev.jid)
    fresh = ctx.seq == room.created_seq + 1  # the creator's join, in the creating proposal
    occupant = room.occupants.get(nick_key)
    if occupant is None:
        role = default_role(room.config, room.affiliation(bare))
        occupant = Occupant(ev.nick, bare, role)
        room.occupants[nick_key] = occupant
    occupant.sessions[ev.session] = OccupantSession(ev.session, ev.jid, ev.presence)
    occupant.primary = ev.session
    outs: list[Out] = []
    joiner_show = room.non_anonymous or occupant.role == "moderator"
    # To the joining session: everyone else, then itself (110), history, subject (§7.2.3-§7.2.15).
    for other in _sorted(room):
        if other is not occupant:
            xml = render.presence(room, other, show_jid=joiner_show)
            outs.append(Out(ev.session, ev.jid, xml))
    codes = [110]
    if room.non_anonymous:
        codes.append(100)
    if room.config.logging:
        codes.append(170)
    if fresh:
        codes.append(201)
    if ev.nick_modified:
        codes.append(210)
    own = render.presence(room, occupant, show_jid=True, codes=codes)
    outs.append(Out(ev.session, ev.jid, own))
    for item in _history(room, ev, ctx):
        outs.append(Out(ev.session, ev.jid, render.with_history_delay(item.xml, room.jid, item.at)))
    outs.append(Out(ev.session, ev.jid, render.subject_message(room)))
    # To everyone else (and the user's other sessions in this occupant): the new presence.
    outs += _announce(room, occupant, skip=frozenset([ev.session]))
    return room, outs


def _history(room: Room, ev: MucOccupantJoined, ctx: Context) -> list[HistoryItem]:
    """The discussion history the joiner asked for (XEP-0045 §7.2.15), oldest first."""
    want = ev.history or {}
    most = room.config.history_length
    if "maxstanzas" in want:
        most = min(most, max(0, int(want["maxstanzas"])))
    if most <= 0:
        return []
    items = ctx.history(room.jid, ctx.seq, most)
    if "seconds" in want:
        since = ctx.at - int(want["seconds"]) * 1000
        items = [i for i in items if i.at >= since]
    if "since" in want:
        items = [i for i in items if i.at > int(want["since"])]
    if "maxchars" in want:
        # XEP-0045 §7.2.15: characters of the complete stanzas as sent (delay and to included).
        budget, kept = int(want["maxchars"]), []
        for item in reversed(items):
            sent = addressed(render.with_history_delay(item.xml, room.jid, item.at), ev.jid)
            budget -= len(sent.decode())
            if budget < 0:
                break
            kept.append(item)
        items = list(reversed(kept))
    return items


def _presence(room: Room, ev: MucOccupantPresence, ctx: Context) -> tuple[Room | None, list[Out]]:
    occupant = room.by_session(ev.session)
    if occupant is None:
        return room, []
    occupant.sessions[ev.session].presence = ev.presence
    occupant.primary = ev.session
    return room, _announce(room, occupant)


LEAVE_CODES = {"left": (), "logout": (), "session_ended": (333,), "shutdown": (332,)}
"""Status codes of a departure, by ``muc.occupant_left`` reason. Every reason but ``left`` is
part of the end of the session itself: its stream is gone (or going), so the session is not sent
its own departure (a stream-management session would otherwise get an outbox row in the very
proposal that ends it)."""


def _left(room: Room, ev: MucOccupantLeft, ctx: Context) -> tuple[Room | None, list[Out]]:
    occupant = room.by_session(ev.session)
    if occupant is None:
        return room, []
    leaving = occupant.sessions.pop(ev.session)
    codes = list(LEAVE_CODES.get(ev.reason, ()))
    tell_leaver = ev.reason == "left"
    outs: list[Out] = []
    if occupant.sessions:
        # Another session of the user keeps the nickname: only this session is told it left.
        if occupant.primary == ev.session:
            occupant.primary = sorted(occupant.sessions)[0]
        xml = render.presence(
            room,
            occupant,
            show_jid=True,
            unavailable=True,
            children=ev.presence,
            codes=[110],
            role="none",
        )
        if tell_leaver:
            outs.append(Out(leaving.session, leaving.jid, xml))
        outs += _announce(room, occupant)
        return room, outs
    # The last session: the occupant leaves (§7.14); it is told first, then everyone else, with
    # role none (the occupant has no role any more; clients read that as "left").
    occupant.sessions[ev.session] = leaving
    occupant.primary = ev.session
    xml = render.presence(
        room,
        occupant,
        show_jid=True,
        unavailable=True,
        children=ev.presence,
        codes=[110, *codes],
        role="none",
    )
    if tell_leaver:
        outs.append(Out(leaving.session, leaving.jid, xml))
    del room.occupants[key(occupant.nick)]
    variants: dict[bool, str] = {}
    for other in _sorted(room):
        show = room.non_anonymous or other.role == "moderator"
        if show not in variants:
            variants[show] = render.presence(
                room,
                occupant,
                show_jid=show,
                unavailable=True,
                children=ev.presence,
                codes=codes,
                role="none",
            )
        outs += [Out(s.session, s.jid, variants[show]) for s in _sessions(other)]
    if not room.occupants and (room.locked or not room.config.persistent):
        return None, outs  # §10.9: a temporary room ends with its last occupant
    return room, outs


def _nick_changed(room: Room, ev: MucNickChanged, ctx: Context) -> tuple[Room | None, list[Out]]:
    occupant = room.by_session(ev.session)
    if occupant is None:
        return room, []
    old_nick = occupant.nick
    if ev.presence:
        occupant.sessions[ev.session].presence = ev.presence
    occupant.primary = ev.session
    # §7.6.3: unavailable from the old nick with 303 and the new one, then the new presence.
    outs = _announce(room, occupant, codes=(303,), unavailable=True, item_nick=ev.nick)
    del room.occupants[key(old_nick)]
    occupant.nick = ev.nick
    room.occupants[key(ev.nick)] = occupant
    outs += _announce(room, occupant)
    return room, outs


def _actor_nick(room: Room, by: str) -> str | None:
    for occupant in room.occupants.values():
        for s in occupant.sessions.values():
            if s.jid == by:
                return occupant.nick
    return None


def _remove(
    room: Room, occupant: Occupant, code: int, actor: str | None, reason: str, **item: str
) -> list[Out]:
    """``occupant`` removed by the room (kick 307, ban 301, 321, 322): told with the others."""
    outs = _announce(
        room, occupant, codes=(code,), unavailable=True, actor=actor, reason=reason or None, **item
    )
    del room.occupants[key(occupant.nick)]
    return outs


def _ended_if_empty(room: Room, outs: list[Out]) -> tuple[Room | None, list[Out]]:
    if not room.occupants and not room.config.persistent:
        return None, outs
    return room, outs


def _role_set(room: Room, ev: MucRoleSet, ctx: Context) -> tuple[Room | None, list[Out]]:
    occupant = room.occupants.get(key(ev.nick))
    if occupant is None:
        return room, []
    actor = _actor_nick(room, ev.by)
    if ev.role == "none":
        return _ended_if_empty(room, _remove(room, occupant, 307, actor, ev.reason, role="none"))
    became_moderator = ev.role == "moderator" and occupant.role != "moderator"
    occupant.role = ev.role
    outs = _announce(room, occupant, actor=actor, reason=ev.reason or None)
    if became_moderator and not room.non_anonymous:
        outs += _real_jids_for(room, occupant)
    return room, outs


def _real_jids_for(room: Room, moderator: Occupant) -> list[Out]:
    """A new moderator of a semi-anonymous room sees the others' real JIDs from now on: their
    presence once more, with ``jid`` (XEP-0045 §9.6; Prosody does the same)."""
    outs: list[Out] = []
    for other in _sorted(room):
        if other is moderator:
            continue
        xml = render.presence(room, other, show_jid=True)
        outs += [Out(s.session, s.jid, xml) for s in _sessions(moderator)]
    return outs


def _affiliation_set(
    room: Room, ev: MucAffiliationSet, ctx: Context
) -> tuple[Room | None, list[Out]]:
    actor = _actor_nick(room, ev.by)
    affected = room.occupants_of(ev.jid)
    outs: list[Out] = []
    if ev.affiliation == "outcast":
        for occupant in affected:
            outs += _remove(
                room, occupant, 301, actor, ev.reason, role="none", affiliation="outcast"
            )
        affected = []
    elif room.config.members_only and AFFILIATION_RANK[ev.affiliation] < AFFILIATION_RANK["member"]:
        for occupant in affected:
            outs += _remove(room, occupant, 321, actor, ev.reason, role="none", affiliation="none")
        affected = []
    if ev.affiliation == "none":
        room.affiliations.pop(ev.jid, None)
    else:
        room.affiliations[ev.jid] = ev.affiliation
    if ev.nick and AFFILIATION_RANK[ev.affiliation] >= AFFILIATION_RANK["member"]:
        room.reserved[ev.jid] = ev.nick
    elif AFFILIATION_RANK[ev.affiliation] < AFFILIATION_RANK["member"]:
        room.reserved.pop(ev.jid, None)
    for found in affected:
        was_moderator = found.role == "moderator"
        found.role = default_role(room.config, ev.affiliation)
        if found.role == "moderator" and not was_moderator and not room.non_anonymous:
            outs += _real_jids_for(room, found)
        outs += _announce(room, found, actor=actor, reason=ev.reason or None)
    return _ended_if_empty(room, outs) if outs else (room, outs)


# -- room --------------------------------------------------------------------------------------


def _configured(room: Room, ev: MucRoomConfigured, ctx: Context) -> tuple[Room | None, list[Out]]:
    old, was_locked = room.config, room.locked
    room.config = RoomConfig.from_json(ev.config)
    room.locked = False
    outs: list[Out] = []
    if room.config.members_only:
        for occupant in _sorted(room):
            if AFFILIATION_RANK[room.affiliation(occupant.bare)] < AFFILIATION_RANK["member"]:
                outs += _remove(room, occupant, 322, None, "", role="none")
    if not was_locked:
        codes = [104]
        if old.whois != room.config.whois:
            codes.append(172 if room.non_anonymous else 173)
        if old.logging != room.config.logging:
            codes.append(170 if room.config.logging else 171)
        xml = render.status_message(room, codes)
        for occupant in _sorted(room):
            outs += [Out(s.session, s.jid, xml) for s in _sessions(occupant)]
    if not room.occupants and not room.config.persistent:
        return None, outs
    return room, outs


def _destroyed(room: Room, ev: MucRoomDestroyed, ctx: Context) -> tuple[Room | None, list[Out]]:
    destroy = render.destroy_element(ev.alternate, ev.reason)
    outs: list[Out] = []
    for occupant in _sorted(room):
        for s in _sessions(occupant):
            xml = render.presence(
                room,
                occupant,
                show_jid=True,
                unavailable=True,
                codes=[110],
                role="none",
                affiliation="none",
                destroy=destroy,
            )
            outs.append(Out(s.session, s.jid, xml))
    return None, outs


def _subject_set(room: Room, ev: MucSubjectSet, ctx: Context) -> tuple[Room | None, list[Out]]:
    occupant = room.by_session(ev.session)
    if occupant is None:
        return room, []
    room.subject, room.subject_by = ev.subject, occupant.nick
    xml = render.subject_message(room)
    outs = [Out(s.session, s.jid, xml) for o in _sorted(room) for s in _sessions(o)]
    return room, outs


def _message(room: Room, ev: MucMessageSent, ctx: Context) -> tuple[Room | None, list[Out]]:
    return room, [Out(s.session, s.jid, ev.xml) for o in _sorted(room) for s in _sessions(o)]


def _private(room: Room, ev: MucPrivateSent, ctx: Context) -> tuple[Room | None, list[Out]]:
    target = room.occupants.get(key(ev.to_nick))
    if target is None:
        return room, []
    sessions = _sessions(target)
    if ev.to_session:
        sessions = [s for s in sessions if s.session == ev.to_session]
    return room, [Out(s.session, s.jid, ev.xml) for s in sessions]


_HANDLERS: dict[type, Callable[[Room, Any, Context], tuple[Room | None, list[Out]]]] = {
    MucOccupantJoined: _joined,
    MucOccupantPresence: _presence,
    MucOccupantLeft: _left,
    MucNickChanged: _nick_changed,
    MucRoleSet: _role_set,
    MucAffiliationSet: _affiliation_set,
    MucRoomConfigured: _configured,
    MucRoomDestroyed: _destroyed,
    MucSubjectSet: _subject_set,
    MucMessageSent: _message,
    MucPrivateSent: _private,
}

EVENT_TYPES = (
    "muc.room_created",
    "muc.room_configured",
    "muc.room_destroyed",
    "muc.occupant_joined",
    "muc.occupant_presence",
    "muc.occupant_left",
    "muc.nick_changed",
    "muc.role_set",
    "muc.affiliation_set",
    "muc.subject_set",
    "muc.message_sent",
    "muc.private_sent",
)
