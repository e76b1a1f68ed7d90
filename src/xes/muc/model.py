"""The room model (XEP-0045 §5): configuration, affiliations, occupants, and who may do what.

A :class:`Room` is the state both the ``muc`` projection and every node's delivery hold for a
room; it round-trips through canonical JSON (:meth:`Room.to_json`, :meth:`Room.from_json`) so
the projection stores it as one row. An occupant is a nickname in the room held by one user,
through one or more of that user's sessions (XEP-0045 §7.2.? "multi-session nicks"): each
session keeps its own presence, and the room shows the presence of the session that spoke last
(``primary``). The permission rules are pure functions of the room, used by the proposer to
answer with the right error and by apply to refuse a proposal whose premise changed meanwhile.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from xes.muc.nick import key

AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")
ROLES = ("moderator", "participant", "visitor", "none")
AFFILIATION_RANK = {"outcast": -1, "none": 0, "member": 1, "admin": 2, "owner": 3}
ROLE_RANK = {"none": 0, "visitor": 1, "participant": 2, "moderator": 3}
WHOIS = ("moderators", "anyone")
ALLOW_PM = ("anyone", "participants", "moderators", "none")


@dataclass(slots=True)
class RoomConfig:
    """The ``muc#roomconfig`` settings (XEP-0045 §10.2, §15.5.3). Defaults are the service's."""

    name: str = ""
    description: str = ""
    persistent: bool = False
    """Kept when the last occupant leaves (else the room ends then)."""
    public: bool = True
    """Listed in the service's disco#items."""
    members_only: bool = False
    moderated: bool = False
    """Only occupants with voice (participants, moderators) may send groupchat messages."""
    password_hash: str = ""
    """PBKDF2 of the room password (``salt$hex``); empty: no password. Never the password."""
    whois: str = "moderators"
    """Who sees occupants' real JIDs: moderators (semi-anonymous) or anyone (non-anonymous)."""
    max_users: int = 0
    """Most occupants; 0 means the service limit."""
    history_length: int = 20
    """Messages kept as discussion history for new occupants (XEP-0045 §7.2.15)."""
    allow_pm: str = "anyone"
    """Who may send private messages: anyone | participants | moderators | none."""
    allow_invites: bool = False
    """Occupants who are not admins may invite others (and, members-only, make them members)."""
    change_subject: bool = False
    """Participants may change the subject (moderators always may)."""
    logging: bool = True
    """Messages are kept in the room's archive (XEP-0313 on the room JID)."""

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RoomConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class OccupantSession:
    session: str
    jid: str
    """Full JID of the session."""
    presence: str = ""
    """Serialized presence children (show, status, caps) as the session last sent them."""


@dataclass(slots=True)
class Occupant:
    nick: str
    bare: str
    """The user behind the nickname (only that user's sessions may share it)."""
    role: str
    sessions: dict[str, OccupantSession] = field(default_factory=dict)
    """By session id."""
    primary: str = ""
    """Session id whose presence (and real JID) the room shows."""

    @property
    def shown(self) -> OccupantSession:
        return self.sessions[self.primary]

    def to_json(self) -> dict[str, Any]:
        return {
            "nick": self.nick,
            "bare": self.bare,
            "role": self.role,
            "primary": self.primary,
            "sessions": {sid: [s.jid, s.presence] for sid, s in self.sessions.items()},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Occupant:
        sessions = {
            sid: OccupantSession(sid, jid, presence)
            for sid, (jid, presence) in sorted(obj["sessions"].items())
        }
        return cls(obj["nick"], obj["bare"], obj["role"], sessions, obj["primary"])


@dataclass(slots=True)
class Room:
    jid: str
    config: RoomConfig
    secret: str
    """Key of the XEP-0421 occupant ids."""
    locked: bool = False
    subject: str = ""
    subject_by: str = ""
    """Nickname that set the subject."""
    affiliations: dict[str, str] = field(default_factory=dict)
    """Bare JID -> owner | admin | member | outcast (``none`` is not stored)."""
    reserved: dict[str, str] = field(default_factory=dict)
    """Bare JID -> the nickname registered for it (XEP-0045 §7.10)."""
    occupants: dict[str, Occupant] = field(default_factory=dict)
    """By nickname key (:func:`xes.muc.nick.key`)."""
    created_at: int = 0
    created_seq: int = 0
    """Log position of the creation: the join right after it gets status 201."""

    # -- derived -------------------------------------------------------------------------------

    def affiliation(self, bare: str) -> str:
        return self.affiliations.get(bare, "none")

    def by_session(self, session: str) -> Occupant | None:
        for occupant in self.occupants.values():
            if session in occupant.sessions:
                return occupant
        return None

    def of_user(self, bare: str) -> Occupant | None:
        """The user's first occupant (by nickname key), if it is in the room at all."""
        found = self.occupants_of(bare)
        return found[0] if found else None

    def occupants_of(self, bare: str) -> list[Occupant]:
        """Every occupant of the user (one per nickname it holds), in nickname-key order: the
        same order whether the room was folded in place or read back from its row."""
        return [self.occupants[k] for k in sorted(self.occupants) if self.occupants[k].bare == bare]

    def moderators(self) -> list[Occupant]:
        return [o for o in self.occupants.values() if o.role == "moderator"]

    @property
    def non_anonymous(self) -> bool:
        return self.config.whois == "anyone"

    def owners(self) -> list[str]:
        return sorted(b for b, a in self.affiliations.items() if a == "owner")

    # -- storage -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "jid": self.jid,
            "config": self.config.to_json(),
            "secret": self.secret,
            "locked": self.locked,
            "subject": self.subject,
            "subject_by": self.subject_by,
            "affiliations": self.affiliations,
            "reserved": self.reserved,
            "occupants": {k: o.to_json() for k, o in self.occupants.items()},
            "created_at": self.created_at,
            "created_seq": self.created_seq,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Room:
        return cls(
            jid=obj["jid"],
            config=RoomConfig.from_json(obj["config"]),
            secret=obj["secret"],
            locked=obj["locked"],
            subject=obj["subject"],
            subject_by=obj["subject_by"],
            affiliations=dict(obj["affiliations"]),
            reserved=dict(obj["reserved"]),
            occupants={k: Occupant.from_json(o) for k, o in sorted(obj["occupants"].items())},
            created_at=obj["created_at"],
            created_seq=obj.get("created_seq", 0),
        )


# -- rules (XEP-0045 §5.1, §5.2) ---------------------------------------------------------------


def default_role(config: RoomConfig, affiliation: str) -> str:
    """The role an occupant gets on entering (XEP-0045 §5.1.2 table)."""
    if affiliation in ("owner", "admin"):
        return "moderator"
    if affiliation == "member":
        return "participant"
    if affiliation == "outcast":
        return "none"
    return "visitor" if config.moderated else "participant"


def join_error(room: Room, bare: str, nick_key: str) -> str | None:
    """Why ``bare`` may not enter under ``nick_key`` (the XEP-0045 §7.2 error), or None.

    The password is checked by the proposer (it never reaches the log)."""
    affiliation = room.affiliation(bare)
    if room.locked and affiliation != "owner":
        return "item-not-found"  # §10.1.1: a locked room does not exist for others yet
    if affiliation == "outcast":
        return "forbidden"  # §7.2.8
    if room.config.members_only and AFFILIATION_RANK[affiliation] < AFFILIATION_RANK["member"]:
        return "registration-required"  # §7.2.7
    holder = room.occupants.get(nick_key)
    if holder is not None and holder.bare != bare:
        return "conflict"  # §7.2.9
    if reserved_by_other(room, bare, nick_key):
        return "conflict"  # §7.2.9: registered to another user
    if holder is None:
        limit = room.config.max_users
        if (
            limit
            and len(room.occupants) >= limit
            and AFFILIATION_RANK[affiliation] < AFFILIATION_RANK["admin"]
        ):
            return "service-unavailable"  # §7.2.10: room full (admins and owners exempt)
    return None


def reserved_by_other(room: Room, bare: str, nick_key: str) -> bool:
    """The nickname is registered to another user of the room (XEP-0045 §7.10)."""
    return any(other != bare and key(nick) == nick_key for other, nick in room.reserved.items())


def may_speak(room: Room, occupant: Occupant) -> bool:
    """Groupchat messages need voice in a moderated room (XEP-0045 §7.4, §8.3)."""
    return occupant.role in ("moderator", "participant")


def may_change_subject(room: Room, occupant: Occupant) -> bool:
    if occupant.role == "moderator":
        return True
    return room.config.change_subject and occupant.role == "participant"


def may_send_private(room: Room, occupant: Occupant) -> bool:
    allow = room.config.allow_pm
    if allow == "anyone":
        return True
    if allow == "participants":
        return ROLE_RANK[occupant.role] >= ROLE_RANK["participant"]
    if allow == "moderators":
        return occupant.role == "moderator"
    return False


def may_invite(room: Room, bare: str, occupant: Occupant | None) -> bool:
    """XEP-0045 §7.8: admins and owners always; others if the room allows invitations."""
    if AFFILIATION_RANK[room.affiliation(bare)] >= AFFILIATION_RANK["admin"]:
        return True
    return room.config.allow_invites and occupant is not None


def role_change_error(
    room: Room, actor: Occupant | None, target: Occupant, role: str
) -> str | None:
    """Why ``actor`` may not give ``target`` the role ``role`` (XEP-0045 §8, §9.6), or None."""
    if actor is None:
        return "not-acceptable"  # only occupants act on roles
    actor_aff = AFFILIATION_RANK[room.affiliation(actor.bare)]
    target_aff = AFFILIATION_RANK[room.affiliation(target.bare)]
    if role in ("none", "visitor", "participant"):
        if actor.role != "moderator":
            return "forbidden"
        if target_aff >= AFFILIATION_RANK["admin"]:
            return "not-allowed"  # §8.2: an admin or owner cannot be kicked or muted
        if target.role == "moderator" and actor_aff < AFFILIATION_RANK["admin"]:
            return "not-allowed"  # §9.7: only admins revoke moderator
        if role == "none" and target_aff > actor_aff:
            return "not-allowed"  # §8.2: not by a moderator of lower affiliation
        if role == "visitor" and target_aff >= actor_aff:
            return "not-allowed"  # §8.4: not from a user at or above the moderator's level
        return None
    if role == "moderator":
        return None if actor_aff >= AFFILIATION_RANK["admin"] else "forbidden"  # §9.6
    return "bad-request"


def affiliation_change_error(
    room: Room, actor_bare: str, target: str, affiliation: str
) -> str | None:
    """Why ``actor_bare`` may not set ``target``'s affiliation (XEP-0045 §9, §10), or None.
    ``operator`` (the command line) may do anything an owner may."""
    actor = 3 if actor_bare == "operator" else AFFILIATION_RANK[room.affiliation(actor_bare)]
    current = AFFILIATION_RANK[room.affiliation(target)]
    wanted = AFFILIATION_RANK[affiliation]
    if actor < AFFILIATION_RANK["admin"]:
        return "forbidden"
    if affiliation == "outcast" and target == actor_bare:
        return "conflict"  # §9.1: an admin or owner cannot ban himself
    if actor == AFFILIATION_RANK["admin"] and (
        current >= AFFILIATION_RANK["admin"] or wanted >= AFFILIATION_RANK["admin"]
    ):
        return "not-allowed"  # §9: admins manage members and outcasts only
    if affiliation != "owner" and room.owners() == [target]:
        return "conflict"  # §10.6: a room keeps at least one owner
    return None


def registration_error(room: Room, bare: str, affiliation: str, nick: str) -> str | None:
    """Why ``bare`` may not register (or drop) its nickname itself (XEP-0045 §7.10), or None:
    open rooms make a registering user a member, members-only rooms register members only, an
    outcast registers nothing, and a nickname held or registered by another user is taken."""
    current = room.affiliation(bare)
    if current == "outcast":
        return "forbidden"
    if affiliation == "none":
        return None if current == "member" else "not-allowed"  # dropping a registration
    if affiliation != ("member" if current == "none" else current):
        return "not-allowed"  # nothing but member, or one's own affiliation with a nickname
    if current == "none" and room.config.members_only:
        return "registration-required"
    k = key(nick)
    holder = room.occupants.get(k)
    if not nick or reserved_by_other(room, bare, k) or (holder is not None and holder.bare != bare):
        return "conflict"
    return None


def occupant_id(secret: str, bare: str) -> str:
    """XEP-0421: stable per user and room, and not revealing the real JID."""
    digest = hmac.new(secret.encode(), bare.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()
