"""Messages in rooms (XEP-0045 §7.4-§7.9, §8.1, §8.6; XEP-0249; XEP-0421; XEP-0359).

A groupchat message is one ``muc.message_sent`` event: the room's copy of the stanza (from
room/nick, the sender's ``id`` kept so the reflection matches, a ``<stanza-id by=room>`` equal to
its archive id, the sender's ``<occupant-id/>``) built once here; every node writes it to its own
occupants. A subject change is ``muc.subject_set``; a private message or an iq between occupants
is ``muc.private_sent`` to the receiving occupant's sessions. Mediated invitations, declines and
voice requests are ordinary messages from the room to the invitee, the inviter or the moderators
(``message.routed``), with a members-only room's invitee made a member in the same proposal.
XEP-0249 direct invitations are messages to a user, not to the room: they never come here.
"""

from __future__ import annotations

from typing import Any

from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events.catalog import (
    MessageRouted,
    MucAffiliationSet,
    MucMessageSent,
    MucPrivateSent,
    MucRoleSet,
    MucSubjectSet,
)
from xes.events.message_facts import facts_of
from xes.features.muc.common import (
    check_affiliations,
    is_muc_domain,
    occupant_of,
    propose,
    read_room,
)
from xes.features.throttle import throttle
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.muc import model
from xes.muc.model import occupant_id
from xes.muc.nick import key
from xes.projections import accounts as accounts_view
from xes.projections import offline as offline_view
from xes.projections import sessions as sessions_view
from xes.stanza import sid
from xes.stanza.core import StanzaError, iq_result
from xes.xml import E, Element, ns, serialize
from xes.xml.ns import MUC_USER, OCCUPANT_ID

REQUEST_FORM = "http://jabber.org/protocol/muc#request"


def _room_copy(stanza: Element, frm: str, room: str, *extra: Element) -> str:
    """``stanza`` as the room sends it: ``from`` rewritten, no ``to``, the sender's own claims
    of ids, delays and room status removed (XEP-0359 §6, XEP-0421 §4, XEP-0203)."""
    kept = tuple(
        c
        for c in stanza.children
        if not (
            isinstance(c, Element)
            and (
                c.ns == OCCUPANT_ID
                or c.tag == sid.STANZA_ID  # only the room says which ids a message has
                or c.tag == "{urn:xmpp:delay}delay"  # nor may a sender back-date it
                or (c.ns == MUC_USER and c.name == "x")
            )
        )
    )
    out = stanza.replace(children=kept + extra).with_attrs(**{"from": frm, "to": None})
    return serialize(out).decode()


async def handle(hub: Hub, session: LocalSession, stanza: Element, to: JID) -> None:
    type_ = stanza.get("type") or "normal"
    if to.local is None:
        if type_ != "error":
            raise StanzaError("service-unavailable", "the service itself takes no messages")
        return
    room = read_room(hub, str(to.bare))
    if room is None or (room.locked and room.affiliation(session.bare) != "owner"):
        if type_ != "error":
            raise StanzaError("item-not-found", "no such room")
        return
    if type_ == "error":
        return
    if to.resource is not None:
        await _private(hub, session, room, stanza, to.resource, type_)
    elif type_ == "groupchat":
        await _groupchat(hub, session, room, stanza)
    else:
        await _to_room(hub, session, room, stanza)


async def _groupchat(hub: Hub, session: LocalSession, room: model.Room, stanza: Element) -> None:
    occupant = occupant_of(room, session)
    if occupant is None:
        raise StanzaError("not-acceptable", "join the room before sending to it (XEP-0045 §7.4)")
    cfg = hub.config.muc
    await throttle(session, "msg:" + room.jid, cfg.messages_per_second, cfg.message_burst)
    subject = stanza.find("{%s}subject" % ns.CLIENT)
    if subject is not None and stanza.find("{%s}body" % ns.CLIENT) is None:
        if not model.may_change_subject(room, occupant):
            raise StanzaError("forbidden", "you may not change the subject (XEP-0045 §8.1)")
        if len(subject.text) > cfg.max_subject_length:
            raise StanzaError("not-acceptable", f"subjects are at most {cfg.max_subject_length}")
        await propose(hub, MucSubjectSet(room.jid, session.session_id, subject.text))
        return
    await propose(hub, _message_event(hub, session, room, occupant, stanza))


def _message_event(
    hub: Hub, session: LocalSession, room: model.Room, occupant: model.Occupant, stanza: Element
) -> MucMessageSent:
    """The ``muc.message_sent`` of one groupchat message, the room's copy built once."""
    if not model.may_speak(room, occupant):
        raise StanzaError("forbidden", "visitors may not speak in a moderated room (XEP-0045 §7.4)")
    stanza_id = sid.new_id()
    frm = f"{room.jid}/{occupant.nick}"
    extra = (
        E(sid.STANZA_ID, {"by": room.jid, "id": stanza_id}),
        E("{%s}occupant-id" % OCCUPANT_ID, {"id": occupant_id(room.secret, occupant.bare)}),
    )
    xml = _room_copy(stanza, frm, room.jid, *extra)
    archived = room.config.logging and hub.config.archive.enabled
    return MucMessageSent(
        room.jid,
        session.session_id,
        occupant.nick,
        xml,
        stanza_id,
        archived=archived,
        origin_id=sid.origin_id(stanza),
        **facts_of(stanza).fields(),
    )


def plain_groupchat_room(hub: Hub, stanza: Element) -> str | None:
    """The room a groupchat message without a subject change goes to, if it is one: such
    messages from one session, read together, are proposed together (:func:`groupchat_run`)."""
    if stanza.name != "message" or stanza.get("type") != "groupchat":
        return None
    to = stanza.get("to") or ""
    if "/" in to or "@" not in to or not is_muc_domain(hub, to.rsplit("@", 1)[1].lower()):
        return None
    if stanza.find("{%s}subject" % ns.CLIENT) is not None:
        return None
    try:
        return str(JID.parse(to))
    except InvalidJID:
        return None  # handled alone, answered jid-malformed


async def groupchat_run(
    hub: Hub, session: LocalSession, stanzas: list[Element]
) -> list[tuple[Element, StanzaError]]:
    """Several groupchat messages of one session to one room, read in one go, as one proposal.

    One proposal keeps them in the order sent (they commit together or not at all) and lets
    every node write them to each occupant in one go; a sender with many messages in flight
    pays one commit for them instead of one each. Returns the messages refused, each with its
    error; if the proposal itself fails, every message in it gets that error."""
    room_jid = str(JID.parse(stanzas[0].get("to") or ""))
    refused: list[tuple[Element, StanzaError]] = []
    room = read_room(hub, room_jid)
    if room is None or (room.locked and room.affiliation(session.bare) != "owner"):
        error = StanzaError("item-not-found", "no such room")
        return [(stanza, error) for stanza in stanzas]
    occupant = occupant_of(room, session)
    if occupant is None:
        error = StanzaError("not-acceptable", "join the room before sending to it (XEP-0045 §7.4)")
        return [(stanza, error) for stanza in stanzas]
    cfg = hub.config.muc
    events: list[MucMessageSent] = []
    sent: list[Element] = []
    for stanza in stanzas:
        await throttle(session, "msg:" + room.jid, cfg.messages_per_second, cfg.message_burst)
        try:
            events.append(_message_event(hub, session, room, occupant, stanza))
            sent.append(stanza)
        except StanzaError as exc:
            refused.append((stanza, exc))
    if events:
        try:
            await propose(hub, *events)
        except StanzaError as exc:
            refused += [(stanza, exc) for stanza in sent]
        except LogUnavailable:
            error = StanzaError("resource-constraint", "the cluster cannot record this now", "wait")
            refused += [(stanza, error) for stanza in sent]
        except ProposalRejected:
            refused += [(stanza, StanzaError("internal-server-error")) for stanza in sent]
    return refused


async def _private(
    hub: Hub, session: LocalSession, room: model.Room, stanza: Element, nick: str, type_: str
) -> None:
    """XEP-0045 §7.5: through the room, from room/sender-nick, to every session of the target."""
    occupant = occupant_of(room, session)
    if occupant is None:
        raise StanzaError("not-acceptable", "only occupants send private messages")
    if type_ == "groupchat":
        raise StanzaError("bad-request", "groupchat goes to the room, not to an occupant")
    target = room.occupants.get(key(nick))
    if target is None:
        raise StanzaError("item-not-found", "no occupant with that nickname")
    if not model.may_send_private(room, occupant):
        raise StanzaError("forbidden", "private messages are not allowed in this room")
    cfg = hub.config.muc
    await throttle(session, "msg:" + room.jid, cfg.messages_per_second, cfg.message_burst)
    extra = (
        E("{%s}x" % MUC_USER),
        E("{%s}occupant-id" % OCCUPANT_ID, {"id": occupant_id(room.secret, occupant.bare)}),
    )
    xml = _room_copy(stanza, f"{room.jid}/{occupant.nick}", room.jid, *extra)
    await propose(hub, MucPrivateSent(room.jid, session.session_id, target.nick, xml))


async def iq_to_occupant(hub: Hub, session: LocalSession, iq: Element, to: JID) -> None:
    """An iq to room/nick: XEP-0410 self-ping is answered here; others go to the occupant."""
    room = read_room(hub, str(to.bare))
    occupant = None if room is None else occupant_of(room, session)
    if room is None or occupant is None:
        # XEP-0410 §3: the client rejoins on this error, which is not worth retrying as is.
        raise StanzaError("not-acceptable", "not joined (XEP-0410)", "cancel")
    assert to.resource is not None
    target = room.occupants.get(key(to.resource))
    child = iq.elements()[0] if iq.elements() else None
    if target is occupant and child is not None and child.tag == "{%s}ping" % ns.PING:
        session.send_bytes(serialize(iq_result(iq.with_attrs(**{"from": session.full}))))
        return
    if target is None:
        raise StanzaError("item-not-found", "no occupant with that nickname")
    xml = _room_copy(iq, f"{room.jid}/{occupant.nick}", room.jid)
    event = MucPrivateSent(room.jid, session.session_id, target.nick, xml, target.primary)
    await propose(hub, event)


async def iq_answer(hub: Hub, session: LocalSession, iq: Element, to: JID) -> None:
    """An occupant answers an iq it got through the room: back to the asking occupant."""
    room = read_room(hub, str(to.bare))
    occupant = None if room is None else occupant_of(room, session)
    if room is None or occupant is None or to.resource is None:
        return
    target = room.occupants.get(key(to.resource))
    if target is None:
        return
    xml = _room_copy(iq, f"{room.jid}/{occupant.nick}", room.jid)
    await propose(
        hub, MucPrivateSent(room.jid, session.session_id, target.nick, xml, target.primary)
    )


# -- messages to the room itself ---------------------------------------------------------------


MAX_INVITES = 20
"""Most ``<invite/>`` in one message (each becomes a message to a user, maybe stored offline)."""


async def _to_room(hub: Hub, session: LocalSession, room: model.Room, stanza: Element) -> None:
    # Invitations, declines and voice requests reach other users: the same per-room limit as
    # the room's messages keeps one sender from flooding them.
    cfg = hub.config.muc
    await throttle(session, "msg:" + room.jid, cfg.messages_per_second, cfg.message_burst)
    x = stanza.find("{%s}x" % MUC_USER)
    events: list[Any] = []
    if x is not None and x.find("{%s}invite" % MUC_USER) is not None:
        events = _invitations(hub, session, room, x)
    elif x is not None and x.find("{%s}decline" % MUC_USER) is not None:
        events = _decline(hub, session, room, x)
    elif _is_voice_request(stanza):
        events = _voice_request(hub, session, room, stanza)
    else:
        raise StanzaError("bad-request", "messages to a room are of type groupchat")
    if events:
        check_affiliations(hub, room, events)
        await propose(hub, *events)


def deliver_to_user(hub: Hub, frm: str, to_bare: str, stanza: Element) -> MessageRouted | None:
    """A message from the room to a local user: to its available resources, else offline."""
    xml = serialize(stanza.with_attrs(**{"from": frm, "to": to_bare})).decode()
    with hub.read() as txn:
        if not accounts_view.exists(hub.store, txn, to_bare):
            return None
        targets = [s.jid for s in sessions_view.available_resources(hub.store, txn, to_bare)]
        full = offline_view.count(hub.store, txn, to_bare) >= hub.config.limits.offline_quota
    if targets:
        return MessageRouted(frm, to_bare, "normal", xml, targets)
    if full:
        return None
    return MessageRouted(frm, to_bare, "normal", xml, [], to_bare)


def _invitations(hub: Hub, session: LocalSession, room: model.Room, x: Element) -> list[Any]:
    """XEP-0045 §7.8.2 mediated invitations (several ``<invite/>`` may come in one message)."""
    occupant = occupant_of(room, session)
    if not model.may_invite(room, session.bare, occupant):
        raise StanzaError("forbidden", "you may not invite to this room")
    events: list[Any] = []
    invites = x.find_all("{%s}invite" % MUC_USER)
    if len(invites) > MAX_INVITES:
        raise StanzaError("policy-violation", f"at most {MAX_INVITES} invitations per message")
    for invite in invites:
        try:
            invitee = JID.parse(invite.get("to") or "")
        except InvalidJID as exc:
            raise StanzaError("jid-malformed", "invite to a valid JID") from exc
        if not hub.is_local(invitee.domain):
            raise StanzaError("remote-server-not-found", "no server-to-server connection yet")
        bare = str(invitee.bare)
        reason = invite.find("{%s}reason" % MUC_USER)
        inner = E(
            "{%s}invite" % MUC_USER,
            {"from": session.bare},
            E("{%s}reason" % MUC_USER, None, reason.text) if reason is not None else None,
        )
        body = f"{session.bare} invites you to the room {room.jid}"
        if reason is not None and reason.text:
            body += f": {reason.text}"
        message = E(
            "{%s}message" % ns.CLIENT,
            None,
            E("{%s}x" % MUC_USER, None, inner),
            E("{%s}body" % ns.CLIENT, None, body),
        )
        if room.config.members_only and room.affiliation(bare) in ("none",):
            events.append(MucAffiliationSet(room.jid, bare, "member", "invited", session.full))
        routed = deliver_to_user(hub, room.jid, bare, message)
        if routed is None:
            raise StanzaError("item-not-found", f"{bare} cannot be invited")
        events.append(routed)
    return events


def _decline(hub: Hub, session: LocalSession, room: model.Room, x: Element) -> list[Any]:
    """XEP-0045 §7.8.? declining an invitation: passed on to the inviter, from the room."""
    decline = x.find("{%s}decline" % MUC_USER)
    assert decline is not None
    if room.affiliation(session.bare) == "outcast":
        raise StanzaError("forbidden", "you are banned from this room")
    try:
        inviter = JID.parse(decline.get("to") or "")
    except InvalidJID as exc:
        raise StanzaError("jid-malformed") from exc
    if not hub.is_local(inviter.domain):
        return []
    reason = decline.find("{%s}reason" % MUC_USER)
    inner = E(
        "{%s}decline" % MUC_USER,
        {"from": session.bare},
        E("{%s}reason" % MUC_USER, None, reason.text) if reason is not None else None,
    )
    message = E("{%s}message" % ns.CLIENT, None, E("{%s}x" % MUC_USER, None, inner))
    routed = deliver_to_user(hub, room.jid, str(inviter.bare), message)
    return [] if routed is None else [routed]


def _is_voice_request(stanza: Element) -> bool:
    form = stanza.find("{%s}x" % ns.DATA_FORMS)
    if form is None:
        return False
    for field in form.find_all("{%s}field" % ns.DATA_FORMS):
        if field.get("var") == "FORM_TYPE":
            return any(v.text == REQUEST_FORM for v in field.find_all("{%s}value" % ns.DATA_FORMS))
    return False


def _voice_request(hub: Hub, session: LocalSession, room: model.Room, stanza: Element) -> list[Any]:
    """XEP-0045 §7.13: a visitor asks for voice; the moderators get the approval form."""
    occupant = occupant_of(room, session)
    if occupant is None:
        raise StanzaError("not-acceptable", "join the room first")
    if occupant.role == "moderator":
        return _voice_approval(session, room, stanza)
    if occupant.role != "visitor":
        return []
    moderators = [s.jid for m in room.moderators() for s in m.sessions.values()]
    if not moderators:
        return []

    def field(var: str, type_: str, label: str, value: str) -> Element:
        return E(
            "{%s}field" % ns.DATA_FORMS,
            {"var": var, "type": type_, "label": label},
            E("{%s}value" % ns.DATA_FORMS, None, value),
        )

    form = E(
        "{%s}x" % ns.DATA_FORMS,
        {"type": "form"},
        E("{%s}title" % ns.DATA_FORMS, None, "Voice request"),
        field("FORM_TYPE", "hidden", "", REQUEST_FORM),
        field("muc#role", "list-single", "Requested role", "participant"),
        field("muc#jid", "jid-single", "User ID", session.full),
        field("muc#roomnick", "text-single", "Room Nickname", occupant.nick),
        field("muc#request_allow", "boolean", "Grant voice?", "false"),
    )
    events: list[Any] = []
    for to in sorted(moderators):
        message = E("{%s}message" % ns.CLIENT, {"from": room.jid, "to": to}, form)
        events.append(MessageRouted(room.jid, to, "normal", serialize(message).decode(), [to]))
    return events


def _voice_approval(session: LocalSession, room: model.Room, stanza: Element) -> list[Any]:
    """A moderator submits a voice request form: ``muc#request_allow`` true grants voice."""
    form = stanza.find("{%s}x" % ns.DATA_FORMS)
    assert form is not None
    values = {
        f.get("var"): [v.text for v in f.find_all("{%s}value" % ns.DATA_FORMS)]
        for f in form.find_all("{%s}field" % ns.DATA_FORMS)
    }
    allow = (values.get("muc#request_allow") or [""])[0].strip().lower() in ("1", "true")
    nick = (values.get("muc#roomnick") or [""])[0]
    target = room.occupants.get(key(nick)) if nick else None
    if not allow or target is None or target.role != "visitor":
        return []
    return [MucRoleSet(room.jid, target.nick, "participant", "", session.full)]
