"""Read status (``urn:xes:read-status:0``, our own protocol: ``docs/protocol/read-status.md``).

The sender of a message that carried ``<request xmlns='urn:xes:read-status:0'/>`` (or, in a
room, a moderator) asks who received it, who displayed it and who has not yet; the originator's
sessions are told as that changes. Queries go to the room JID (group chat) or to the asker's
own account (one-to-one, naming the peer). Emits no events: the answers are read from the
``read_status`` projection, the notifications are written there in apply (stream-management
sessions) and sent by delivery from the rows it leaves (:func:`deliver`).

Handles: ``iq get <status/>`` to a room (from :mod:`xes.features.muc.service`) and to the
account (router ``ACCOUNT_IQ``). Reads: ``read_status``, ``muc``.
"""

from __future__ import annotations

from typing import Any

from xes.events import Committed
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.muc import model
from xes.muc.model import occupant_id
from xes.projections import read_status as rs_view
from xes.projections.read_status import Tracked, is_moderator, sees_jids
from xes.stanza import read_status as render
from xes.stanza.core import StanzaError, addressed, iq_result
from xes.xml import Element

NS = render.NS
STATUS = "{%s}status" % NS
XEPS: tuple[tuple[int, str], ...] = ()
"""No XEP: the protocol is ours (docs/protocol/read-status.md)."""


def _id_of(iq: Element, child: Element) -> str:
    if iq.get("type") != "get":
        raise StanzaError("bad-request", "read status is asked with iq get")
    msg_id = child.get("id")
    if not msg_id:
        raise StanzaError("bad-request", "name the message: <status id='...'/>")
    return msg_id


def _entries(t: Tracked, who: Any) -> list[Element]:
    """Displayed, then received only, then pending, each in member order; members who marked
    the message without being in its audience (joined later) come after those who were."""
    members = [m for m, _ in t.audience]
    nicks = dict(t.audience)
    extra = sorted(set(t.received) - set(members))
    out: dict[str, list[Element]] = {k: [] for k in render.KINDS}
    for m in members + extra:
        if m in t.displayed:
            kind, at = "displayed", t.displayed.get(m)
        elif m in t.received:
            kind, at = "received", t.received.get(m)
        else:
            kind, at = "pending", None
        out[kind].append(render.entry(kind, who(m, nicks.get(m, "")), at))
    return [e for k in render.KINDS for e in out[k]]


async def room_query(
    hub: Hub, session: LocalSession, iq: Element, child: Element, room: model.Room
) -> Element:
    """``<status id=stanza-id/>`` to a room: for the originator and the room's moderators."""
    msg_id = _id_of(iq, child)
    member = model.AFFILIATION_RANK[room.affiliation(session.bare)] >= 1
    present = room.by_session(session.session_id) is not None
    if room.affiliation(session.bare) == "outcast" or (
        room.config.members_only and not member and not present
    ):
        # Before any lookup: an outsider learns nothing about a members-only room's messages.
        raise StanzaError("forbidden", "read status is for the room's members")
    with hub.read() as txn:
        t = rs_view.find(hub.store, txn, rs_view.room_scope(room.jid), msg_id)
    if t is None:
        raise StanzaError("item-not-found", "no followed message with that id")
    if t.sender != session.bare and not is_moderator(room, session.bare):
        raise StanzaError("forbidden", "only its sender and the room's moderators may ask")
    show = sees_jids(room, session.bare)
    current = {o.bare: o.nick for k, o in sorted(room.occupants.items(), reverse=True)}

    def who(bare: str, nick: str) -> dict[str, str | None]:
        shown_nick = nick or current.get(bare) or room.reserved.get(bare, "")
        return render.who_in_room(bare, shown_nick, occupant_id(room.secret, bare), show)

    attrs = {"msg-id": t.msg_id}
    return iq_result(iq, render.status(t.id, attrs, _entries(t, who)))


async def chat_query(hub: Hub, session: LocalSession, iq: Element, child: Element) -> Element:
    """``<status id=... with=peer/>`` to one's own account: the peer's devices."""
    msg_id = _id_of(iq, child)
    to = iq.get("to")
    if to and "@" in to and to.split("/", 1)[0] != session.bare:
        raise StanzaError("forbidden", "ask your own account about your own messages")
    try:
        peer = str(JID.parse(child.get("with") or "").bare)
    except InvalidJID as exc:
        raise StanzaError("bad-request", "name the peer: <status with='bare JID'/>") from exc
    with hub.read() as txn:
        t = rs_view.find(hub.store, txn, rs_view.chat_scope(session.bare, peer), msg_id)
    if t is None:
        raise StanzaError("item-not-found", "no followed message with that id")
    entries = _entries(t, lambda device, _nick: render.who_device(device))
    return iq_result(iq, render.status(t.id, {"with": peer}, entries))


def deliver(hub: Hub, txn: Any, committed: Committed) -> None:
    """Delivery's part: the notifications a marker event left, to the originators' sessions
    held here that do not use stream management (those got outbox rows in apply)."""
    for bare, xml in rs_view.notifications(hub.store, txn, committed.seq):
        for session in hub.local_of_bare(bare):
            if session.sm_active:
                session.sm_pull()
            elif session.available:
                session.send_bytes(addressed(xml, session.full))
