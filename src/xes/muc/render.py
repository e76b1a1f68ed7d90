"""The stanzas a room sends (XEP-0045 §7, §9, §10), built as strings without ``to``.

A committed room event is written to many sessions that differ only in ``to``; the stanza is
built once per variant (what a moderator sees, what the occupant itself sees) and addressed per
session by :func:`addressed`, which splices the ``to`` attribute in. Every stanza is in the
stream's content namespace (``jabber:client``, undeclared), like stored stanzas.
"""

from __future__ import annotations

from collections.abc import Iterable

from xes.muc.model import Occupant, Room, occupant_id
from xes.stanza.delay import stamp
from xes.xml import escape_attr, escape_text
from xes.xml.ns import MUC_USER, OCCUPANT_ID


def occupant_jid(room: str, nick: str) -> str:
    return f"{room}/{nick}"


def item(
    room: Room,
    occupant: Occupant,
    *,
    show_jid: bool,
    role: str | None = None,
    affiliation: str | None = None,
    nick: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> str:
    """The ``<item/>`` of a ``muc#user`` payload (XEP-0045 §7.2.3)."""
    attrs = (
        f" affiliation='{affiliation or room.affiliation(occupant.bare)}'"
        f" role='{role or occupant.role}'"
    )
    if show_jid and occupant.primary in occupant.sessions:
        attrs += f" jid='{escape_attr(occupant.shown.jid)}'"
    if nick is not None:
        attrs += f" nick='{escape_attr(nick)}'"
    inner = ""
    if actor:
        inner += f"<actor nick='{escape_attr(actor)}'/>"
    if reason:
        inner += f"<reason>{escape_text(reason)}</reason>"
    return f"<item{attrs}/>" if not inner else f"<item{attrs}>{inner}</item>"


def presence(
    room: Room,
    occupant: Occupant,
    *,
    show_jid: bool,
    codes: Iterable[int] = (),
    unavailable: bool = False,
    children: str | None = None,
    nick: str | None = None,
    item_nick: str | None = None,
    role: str | None = None,
    affiliation: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
    destroy: str = "",
) -> str:
    """An occupant's presence from ``room/nick`` (``nick`` defaults to the occupant's)."""
    frm = escape_attr(occupant_jid(room.jid, nick or occupant.nick))
    kind = " type='unavailable'" if unavailable else ""
    if children is None:
        children = "" if unavailable or not occupant.sessions else occupant.shown.presence
    statuses = "".join(f"<status code='{c}'/>" for c in sorted(set(codes)))
    it = item(
        room,
        occupant,
        show_jid=show_jid,
        role=role,
        affiliation=affiliation,
        nick=item_nick,
        actor=actor,
        reason=reason,
    )
    oid = f"<occupant-id xmlns='{OCCUPANT_ID}' id='{occupant_id(room.secret, occupant.bare)}'/>"
    return (
        f"<presence from='{frm}'{kind}>{children}"
        f"<x xmlns='{MUC_USER}'>{it}{statuses}{destroy}</x>{oid}</presence>"
    )


def destroy_element(alternate: str, reason: str) -> str:
    jid = f" jid='{escape_attr(alternate)}'" if alternate else ""
    inner = f"<reason>{escape_text(reason)}</reason>" if reason else ""
    return f"<destroy{jid}>{inner}</destroy>" if inner else f"<destroy{jid}/>"


def subject_message(room: Room) -> str:
    """The subject as sent to a new occupant, after history (XEP-0045 §7.2.15): always sent,
    empty when none is set, from the occupant who set it when there is one."""
    frm = occupant_jid(room.jid, room.subject_by) if room.subject_by else room.jid
    return (
        f"<message from='{escape_attr(frm)}' type='groupchat' id='subject'>"
        f"<subject>{escape_text(room.subject)}</subject></message>"
    )


def status_message(room: Room, codes: Iterable[int]) -> str:
    """A message from the room itself carrying status codes (e.g. 104: configuration changed)."""
    statuses = "".join(f"<status code='{c}'/>" for c in sorted(set(codes)))
    return (
        f"<message from='{escape_attr(room.jid)}' type='groupchat'>"
        f"<x xmlns='{MUC_USER}'>{statuses}</x></message>"
    )


def with_history_delay(xml: str, room: str, at: int) -> str:
    """A stored groupchat message as history: a XEP-0203 ``<delay/>`` from the room."""
    delay = f"<delay xmlns='urn:xmpp:delay' from='{escape_attr(room)}' stamp='{stamp(at)}'/>"
    cut = xml.rindex("</message>")
    return xml[:cut] + delay + xml[cut:]
