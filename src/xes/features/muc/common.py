"""What every MUC handler shares: reading rooms, proposing room events, per-session throttles.

A proposal apply refuses (``muc-<condition>: ...``, see :mod:`xes.projections.muc`) means a
premise the handler checked changed between its read and the commit (another node's join took
the nickname, an admin lost the right meanwhile): the client gets that condition, exactly as if
the handler had seen the new state first.
"""

from __future__ import annotations

from typing import Any

import structlog

from xes.eventlog.client import ProposalRejected
from xes.hub import Hub, LocalSession
from xes.muc.model import Occupant, Room
from xes.projections import muc as muc_view
from xes.stanza.core import ERROR_TYPES, StanzaError
from xes.xml import Element, serialize

log = structlog.get_logger("xes.muc")


REJECTIONS = {
    "no-room": "item-not-found",
    "no-occupant": "item-not-found",
    "not-occupant": "not-acceptable",
    "no-session": "not-acceptable",
    "already-occupant": "conflict",
}


REFUSAL_TYPES = {"registration-required": "auth", "service-unavailable": "wait"}
"""Error types of refused joins where XEP-0045 differs from RFC 6120's defaults: not being on
the member list is an auth error (§7.2.7), a full room a temporary one (§7.2.10: wait). Apply
refuses with these conditions only for joins, so a rejected proposal gets them too."""


class RoomExists(Exception):
    """A creation lost the race: another join created the room first (join it instead)."""


def is_muc_domain(hub: Hub, domain: str) -> bool:
    return hub.config.muc.enabled and hub.config.muc_host(domain) is not None


_parsed: dict[str, tuple[bytes, Room]] = {}
"""The last parsed copy of each room read here, with the row it came from: a room's row changes
on joins and leaves, not on messages, so most reads of a busy room parse nothing."""
PARSED_ROOMS = 4096


def read_room(hub: Hub, room: str) -> Room | None:
    """The room as this node's projection holds it. Read-only: the copy may be shared."""
    with hub.read() as txn:
        raw = muc_view.raw(hub.store, txn, room)
    if raw is None:
        _parsed.pop(room, None)
        return None
    cached = _parsed.get(room)
    if cached is not None and cached[0] == raw:
        return cached[1]
    parsed = muc_view.parse(raw)
    if len(_parsed) >= PARSED_ROOMS:
        _parsed.clear()
    _parsed[room] = (raw, parsed)
    return parsed


def occupant_of(room: Room, session: LocalSession) -> Occupant | None:
    """The session's occupant in ``room``, if it is joined."""
    return room.by_session(session.session_id)


def check_affiliations(hub: Hub, room: Room, events: list[Any]) -> None:
    """``[muc] max_affiliations``: the affiliation changes in ``events`` keep the room within it."""
    after = dict(room.affiliations)
    for event in events:
        if getattr(event, "TYPE", "") == "muc.affiliation_set" and event.room == room.jid:
            if event.affiliation == "none":
                after.pop(event.jid, None)
            else:
                after[event.jid] = event.affiliation
    if len(after) > max(len(room.affiliations), hub.config.muc.max_affiliations):
        raise StanzaError(
            "resource-constraint",
            f"a room has at most {hub.config.muc.max_affiliations} affiliated users",
            "wait",
        )


async def propose(hub: Hub, *events: Any) -> None:
    """Append room events; a refusal by apply becomes the XEP's error for the client."""
    try:
        await hub.log.append(*events)
    except ProposalRejected as exc:
        reason = exc.reason
        if not reason.startswith("muc-"):
            raise
        log.info("muc_refused_at_commit", reason=reason)
        code, _, text = reason[4:].partition(":")
        if code == "room-exists":
            raise RoomExists(text) from exc
        condition = REJECTIONS.get(code, code)
        if condition not in ERROR_TYPES and condition != "registration-required":
            condition = "internal-server-error"
        raise StanzaError(condition, text.strip() or None, REFUSAL_TYPES.get(condition)) from exc


PRESENCE_KEEP = frozenset(
    {
        "{jabber:client}show",
        "{jabber:client}status",
        "{jabber:client}priority",
        "{http://jabber.org/protocol/caps}c",
        "{vcard-temp:x:update}x",
        "{urn:xmpp:idle:1}idle",
        "{http://jabber.org/protocol/nick}nick",
        "{urn:xmpp:hats:0}hats",
    }
)
"""Presence payloads a room keeps and shows for an occupant; anything else a client puts in its
room presence is not stored (every occupant session's presence lives in the room's row)."""
MAX_PRESENCE = 4096
"""Most bytes of an occupant session's kept presence payload; a longer one keeps what fits."""


def payload_children(stanza: Element) -> str:
    """The presence payload a room keeps for an occupant session (see ``PRESENCE_KEEP``)."""
    out, size = [], 0
    for child in stanza.elements():
        if child.tag not in PRESENCE_KEEP:
            continue
        data = serialize(child).decode()
        if size + len(data) > MAX_PRESENCE:
            break
        out.append(data)
        size += len(data)
    return "".join(out)
