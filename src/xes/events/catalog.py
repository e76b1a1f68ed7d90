"""The event catalogue: every kind of fact xes records, one frozen dataclass each.

Events are past-tense facts. Each field is JSON-native and documented; the stream names the
aggregate an event belongs to (optimistic concurrency and per-stream versions are kept per stream).
Importing this module registers every type (see :mod:`xes.events.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xes.events.message_facts import facts_of_xml
from xes.events.registry import event, upcaster

# --- accounts -------------------------------------------------------------------------------


@event("account.registered")
@dataclass(frozen=True, slots=True)
class AccountRegistered:
    jid: str
    """Normalised bare JID of the new account."""
    credentials: dict[str, Any]
    """Salted SCRAM keys per mechanism (salt, i, stored_key, server_key); never a password."""

    def stream(self) -> str:
        return f"account:{self.jid}"


@event("account.password_changed")
@dataclass(frozen=True, slots=True)
class AccountPasswordChanged:
    jid: str
    """Bare JID of the account."""
    credentials: dict[str, Any]
    """The new salted SCRAM keys."""

    def stream(self) -> str:
        return f"account:{self.jid}"


@event("account.removed")
@dataclass(frozen=True, slots=True)
class AccountRemoved:
    jid: str
    """Bare JID of the removed account; its roster and offline messages go with it."""

    def stream(self) -> str:
        return f"account:{self.jid}"


# --- roster (RFC 6121 §2, §3) ---------------------------------------------------------------


@event("roster.item_updated")
@dataclass(frozen=True, slots=True)
class RosterItemUpdated:
    owner: str
    """Bare JID whose roster changed."""
    contact: str
    """Bare JID of the contact."""
    name: str | None = None
    """Handle the owner gave the contact."""
    groups: list[str] = field(default_factory=list)
    """Roster groups, sorted."""
    subscription: str = "none"
    """none | to | from | both (RFC 6121 §2.1.2.5)."""
    ask: bool = False
    """An outbound subscription request is pending (``ask='subscribe'``)."""
    pending_in: str | None = None
    """Serialized inbound subscribe stanza awaiting the owner's answer (RFC 6121 §3.1.3)."""
    approved: bool = False
    """Subscription pre-approved by the owner (RFC 6121 §3.4)."""
    listed: bool = True
    """False while the item only holds an unanswered inbound request (not in the roster)."""

    def stream(self) -> str:
        return f"roster:{self.owner}"


@event("roster.item_removed")
@dataclass(frozen=True, slots=True)
class RosterItemRemoved:
    owner: str
    """Bare JID whose roster changed."""
    contact: str
    """Bare JID of the removed contact."""

    def stream(self) -> str:
        return f"roster:{self.owner}"


# --- sessions and presence ------------------------------------------------------------------


@event("node.started")
@dataclass(frozen=True, slots=True)
class NodeStarted:
    node: str
    """Node id."""
    boot: str
    """Identifier of this run of the node; sessions of earlier boots are gone."""
    raft: str = ""
    """The node's Raft address, so the leader can tell which node an unreachable peer is."""
    reads: dict[str, int] | None = None
    """Event type -> highest version this build reads (ADR 0022, the feature gate); None from
    builds before the gate (they read ``xes.events.gate.BASELINE``). Added without a bump:
    older builds drop it, and no projection they have folds it."""

    def stream(self) -> str:
        return f"node:{self.node}"


@event("node.down")
@dataclass(frozen=True, slots=True)
class NodeDown:
    """The leader could not reach a node for longer than the grace period (ADR 0007).

    Every session of that boot ends; a ``session.bound`` of that boot committed later is refused,
    so no session can point at a connection the cluster has given up on. The node itself, when it
    learns of this, closes its client connections and starts a new boot.
    """

    node: str
    """Node id."""
    boot: str
    """The boot declared down."""
    reason: str
    """unreachable | removed."""
    by: str
    """Node id of the leader that recorded it."""

    def stream(self) -> str:
        return f"node:{self.node}"


@event("session.bound")
@dataclass(frozen=True, slots=True)
class SessionBound:
    session: str
    """Session id (unique across the cluster and across restarts)."""
    jid: str
    """Full JID bound by the session (RFC 6120 §7)."""
    node: str
    """Node holding the client connection."""
    boot: str
    """Boot id of that node."""
    device: bool = False
    """The client chose the resource, so it names a device that comes back (offline messages
    wait for it, XEP-0160); a server-generated resource does not."""

    def stream(self) -> str:
        return f"session:{self.session}"


@event("session.ended")
@dataclass(frozen=True, slots=True)
class SessionEnded:
    session: str
    """Session id."""
    jid: str
    """Full JID the session had bound."""
    reason: str
    """closed | conflict | error | node_restarted | shutdown | timeout | kicked (an
    administrator ended it: the node holding it closes the stream)."""
    outbox_upto: int | None = None
    """For a stream-management session: the last outbox row the proposer re-routed; apply
    refuses the end if more rows arrived since, so none is dropped unseen (ADR 0008)."""

    def stream(self) -> str:
        return f"session:{self.session}"


@event("presence.updated")
@dataclass(frozen=True, slots=True)
class PresenceUpdated:
    session: str
    """Session whose broadcast presence changed."""
    jid: str
    """Full JID of that session."""
    available: bool
    """False for ``type='unavailable'``."""
    priority: int
    """Presence priority (RFC 6121 §4.7.2.3), -128..127."""
    xml: str
    """The presence stanza as broadcast (``from`` stamped), for probes and late joiners."""
    targets: list[str] = field(default_factory=list)
    """JIDs the broadcast goes to, decided by the proposer from the roster (RFC 6121 §4.2.2)."""

    def stream(self) -> str:
        return f"session:{self.session}"


@event("presence.routed")
@dataclass(frozen=True, slots=True)
class PresenceRouted:
    sender: str
    """JID the stanza is from."""
    xml: str
    """The stanza as delivered."""
    targets: list[str] = field(default_factory=list)
    """Full or bare JIDs to deliver to (bare: every available resource)."""
    directed_session: str | None = None
    """Set for directed presence: the sending session remembers the target (RFC 6121 §4.6)."""
    directed_available: bool = True
    """With ``directed_session``: available (remember target) or unavailable (forget it)."""

    def stream(self) -> str:
        return f"presence:{self.sender.split('/', 1)[0]}"


# --- messages (RFC 6121 §8) -----------------------------------------------------------------


@event("message.routed", v=2)
@dataclass(frozen=True, slots=True)
class MessageRouted:
    sender: str
    """Full JID of the sender."""
    to: str
    """The ``to`` address as normalised."""
    type: str
    """normal | chat | groupchat | headline | error."""
    xml: str
    """The stanza as delivered (``from`` stamped)."""
    targets: list[str] = field(default_factory=list)
    """Full JIDs of the sessions it is delivered to, chosen per RFC 6121 §8.5."""
    offline_for: str | None = None
    """Bare JID whose offline store keeps the message (no available resource)."""
    offline_resource: str | None = None
    """With ``offline_for``: only this device (resource) still needs it (its session ended with
    the message unacknowledged while the user's other resources had it)."""
    received_at: int | None = None
    """When the server first received the message (ms), if earlier than this event: a message
    re-routed from a session that ended without acknowledging it keeps its original time."""
    stanza_id: str | None = None
    """Archive id (XEP-0359 ``stanza-id``) chosen by the proposer; the recipient's copy in
    ``xml`` already carries it when the recipient archives the message."""
    archived_by: list[str] = field(default_factory=list)
    """Bare JIDs whose message archive (XEP-0313) keeps this message under ``stanza_id``: the
    proposer applied their archiving preferences. Empty for a re-routed copy."""
    origin_id: str | None = None
    """The sender's XEP-0359 ``origin-id``: a re-send with the same one is not archived twice."""
    sent_carbons: list[str] = field(default_factory=list)
    """Full JIDs of the sender's other carbons-enabled resources (XEP-0280 ``<sent/>``)."""
    received_carbons: list[str] = field(default_factory=list)
    """Full JIDs of the recipient's carbons-enabled resources not among ``targets``
    (XEP-0280 ``<received/>``)."""
    body: bool = False
    """v2: it carries a body, an instant message (the inbox counts it, XEP-0430)."""
    marker: str | None = None
    """v2: received | displayed | acknowledged: a XEP-0333 chat marker (or XEP-0184 receipt,
    ``received``) for the earlier message ``marker_id`` (:mod:`xes.events.message_facts`)."""
    marker_id: str | None = None
    """v2: the id the marker names."""
    msg_id: str | None = None
    """v2: the sender's ``id`` attribute (what markers in one-to-one chats name)."""
    track: bool = False
    """v2: the sender asks to follow its read status (``docs/protocol/read-status.md``)."""

    def stream(self) -> str:
        return f"chat:{self.to.split('/', 1)[0]}"


@upcaster("message.routed", 1)
def _message_routed_v1(data: dict[str, Any]) -> dict[str, Any]:
    """v1 had no facts: read them from the stanza, as the v2 proposer does."""
    return {**data, **facts_of_xml(data["xml"]).fields()}


@event("iq.routed")
@dataclass(frozen=True, slots=True)
class IqRouted:
    """An iq between two clients whose target resource is connected to another node (ADR 0006).

    iq is not state, but routing it through the log gives it the same authentication, ordering
    and node-failure behaviour as messages and presence, at the cost of one commit.
    """

    sender: str
    """Full JID of the sender (``from`` as stamped)."""
    target: str
    """Full JID of the addressed resource."""
    session: str
    """Session id of the target when routed: a later session with the same JID does not get it."""
    xml: str
    """The stanza as delivered."""

    def stream(self) -> str:
        return f"iq:{self.target.split('/', 1)[0]}"


@event("offline.flushed")
@dataclass(frozen=True, slots=True)
class OfflineFlushed:
    owner: str
    """Bare JID whose offline messages were delivered."""
    upto: int
    """Every offline message with ``seq`` at or below this was delivered and is dropped."""
    session: str
    """Session that received them."""
    resource: str = ""
    """Resource of that session: a known device's cursor moves to ``upto``."""
    after: int = 0
    """The messages delivered are those above this ``seq`` (the session's cursor) up to ``upto``."""
    forget_before: int = 0
    """Devices not seen since this time (ms) are forgotten (the proposer's ``device_ttl``)."""

    def stream(self) -> str:
        return f"offline:{self.owner}"


# --- stream management (XEP-0198, ADR 0008) -------------------------------------------------


@event("sm.enabled")
@dataclass(frozen=True, slots=True)
class SmEnabled:
    """The session's client enabled stream management: from here on every stanza the server
    sends it is a numbered row of its outbox (projection ``sm``), acknowledged by the client."""

    session: str
    resume: bool
    """The client asked for resumption (``resume='true'``)."""
    timeout: int
    """Seconds the session waits for resumption after its connection breaks."""

    def stream(self) -> str:
        return f"session:{self.session}"


@event("sm.handled")
@dataclass(frozen=True, slots=True)
class SmHandled:
    """Recorded in the same proposal as the effects of the client's stanza number ``h``, so the
    count a resumed stream reports (``<resumed h=.../>``) covers exactly the committed ones."""

    session: str
    h: int
    """Client stanzas handled since enable (not wrapped)."""
    epoch: int
    """The session's resumption epoch when the stanza arrived; a stale connection is refused."""

    def stream(self) -> str:
        return f"sm:{self.session}"


@event("sm.acked")
@dataclass(frozen=True, slots=True)
class SmAcked:
    """The client acknowledged the first ``h`` outbox rows; they are dropped. Coalesced: written
    at most every ``ack_record_interval`` (ADR 0008), never needed for correctness of resumption."""

    session: str
    h: int
    epoch: int

    def stream(self) -> str:
        return f"sm:{self.session}"


@event("sm.stanzas_queued")
@dataclass(frozen=True, slots=True)
class SmStanzasQueued:
    """Stanzas the server itself answers the session with (iq results, errors, probe answers),
    placed in its outbox between the log's other stanzas, so any node can resend them."""

    session: str
    epoch: int
    stanzas: list[str] = field(default_factory=list)

    def stream(self) -> str:
        return f"sm:{self.session}"


@event("sm.roster_requested")
@dataclass(frozen=True, slots=True)
class SmRosterRequested:
    """The session asked for the roster, so roster pushes go to its outbox (RFC 6121 §2.1.6)."""

    session: str

    def stream(self) -> str:
        return f"sm:{self.session}"


@event("sm.resumed")
@dataclass(frozen=True, slots=True)
class SmResumed:
    """The session's client resumed it (XEP-0198 §5) on ``node``; the previous connection, on
    whichever node, is closed, and its later proposals are refused (``epoch`` moved on)."""

    session: str
    node: str
    boot: str
    h: int
    """Outbox rows the client said it had received (not wrapped); they are dropped."""
    epoch: int
    """The new epoch (previous + 1)."""

    def stream(self) -> str:
        return f"session:{self.session}"


@event("sm.detached")
@dataclass(frozen=True, slots=True)
class SmDetached:
    """The node holding a resumable session is gone (declared down, or restarted): the session
    waits, owned by no node, until ``deadline`` for its client to resume it on any node."""

    session: str
    deadline: int
    """Milliseconds since the epoch; after it the leader ends the session."""
    reason: str

    def stream(self) -> str:
        return f"session:{self.session}"


# --- message archive (XEP-0313) and carbons (XEP-0280) --------------------------------------


@event("archive.prefs_set")
@dataclass(frozen=True, slots=True)
class ArchivePrefsSet:
    """The owner changed its archiving preferences (XEP-0313 §6)."""

    owner: str
    """Bare JID of the archive."""
    default: str
    """always | never | roster."""
    always: list[str] = field(default_factory=list)
    """Bare JIDs whose messages are always archived, sorted."""
    never: list[str] = field(default_factory=list)
    """Bare JIDs whose messages are never archived, sorted."""

    def stream(self) -> str:
        return f"archive:{self.owner}"


@event("archive.expired")
@dataclass(frozen=True, slots=True)
class ArchiveExpired:
    """The leader applied the retention limit of ``domain``: archived messages stamped before
    ``before`` are deleted, at most ``limit`` of them (the leader repeats while more remain)."""

    domain: str
    """Domain of the archives (the owners' domain part)."""
    before: int
    """Milliseconds since the epoch (the proposer's clock minus the configured retention)."""
    limit: int
    """Most messages deleted by this event, so applying it stays short."""

    def stream(self) -> str:
        return f"archive-retention:{self.domain}"


@event("carbons.toggled")
@dataclass(frozen=True, slots=True)
class CarbonsToggled:
    """The session enabled or disabled Message Carbons (XEP-0280 §4, §5)."""

    session: str
    enabled: bool

    def stream(self) -> str:
        return f"session:{self.session}"


# --- group chat (XEP-0045, ADR 0011) --------------------------------------------------------
#
# A room is the stream ``muc:<room JID>``. Every fact about it is one of these events; the
# ``muc`` projection folds them on every node with the pure rules of :mod:`xes.muc.model`, and
# each node's delivery folds the same events into its copy of the room to write what each of
# its own occupants' sessions receives (:mod:`xes.muc.fanout`). Events name who and what;
# roles, the presence each occupant sees and the status codes are derived, never carried.


@event("muc.room_created")
@dataclass(frozen=True, slots=True)
class MucRoomCreated:
    """A user's join created a room (XEP-0045 §10.1); the creator's join follows in the same
    proposal. A room created by its owner is locked until configured unless ``locked`` is off
    (an instant room, or a service that does not lock)."""

    room: str
    """Bare JID of the room (normalised)."""
    creator: str
    """Full JID of the creating occupant; its bare JID becomes the first owner."""
    config: dict[str, Any]
    """The room configuration (``xes.muc.model.RoomConfig`` fields), the service defaults."""
    locked: bool
    """The room refuses joins (``item-not-found``) until its owner submits a configuration."""
    secret: str
    """Random key of the room's XEP-0421 occupant ids, chosen by the proposer."""

    def stream(self) -> str:
        return f"muc:{self.room}"


@event("muc.room_configured")
@dataclass(frozen=True, slots=True)
class MucRoomConfigured:
    """An owner submitted the room configuration form (XEP-0045 §10.2); unlocks the room.

    Occupants who may no longer stay (a room made members-only) leave in the same event."""

    room: str
    config: dict[str, Any]
    """The complete new configuration."""
    by: str
    """Full JID of the owner who submitted it."""

    def stream(self) -> str:
        return f"muc:{self.room}"


@event("muc.room_destroyed")
@dataclass(frozen=True, slots=True)
class MucRoomDestroyed:
    """An owner (or the operator, or the last occupant of a temporary room leaving) ended the
    room (XEP-0045 §10.9): every occupant leaves, affiliations, history and the room go."""

    room: str
    reason: str = ""
    """Reason given to the occupants."""
    alternate: str = ""
    """JID of an alternate venue, if any."""
    by: str = ""
    """Full JID of the owner, or ``operator`` for ``xes muc destroy``."""

    def stream(self) -> str:
        return f"muc:{self.room}"


@event("muc.occupant_joined")
@dataclass(frozen=True, slots=True)
class MucOccupantJoined:
    """A session entered the room under ``nick`` (XEP-0045 §7.2), or another session of the same
    user joined the same occupant, or a joined session sent its join again (a rejoin: the room
    state is sent to it once more)."""

    room: str
    nick: str
    """The nickname as enforced (PRECIS NicknameCasePreserved, RFC 8266)."""
    jid: str
    """Full JID of the joining session."""
    session: str
    """Its session id: the occupant leaves when that session ends (no ghosts)."""
    presence: str
    """The occupant's presence payload as sent (show, status, priority, caps; serialized
    children only, the MUC ``<x/>`` removed)."""
    history: dict[str, Any] = field(default_factory=dict)
    """The ``<history/>`` limits asked for: maxstanzas, maxchars, seconds, since (ms)."""
    password_ok: bool = False
    """The proposer checked the room password (apply refuses a join without it)."""
    nick_modified: bool = False
    """The service changed the requested nick (status 210)."""

    def stream(self) -> str:
        return f"muc:{self.room}"


@event("muc.occupant_presence")
@dataclass(frozen=True, slots=True)
class MucOccupantPresence:
    """An occupant's session changed its presence in the room (show, status)."""

    room: str
    session: str
    presence: str
    """Serialized presence children as sent (MUC elements removed)."""

    def stream(self) -> str:
        return f"muc:{self.room}"


@event("muc.occupant_left")
@dataclass(frozen=True, slots=True)
class MucOccupantLeft:
    """A session left the room: its own unavailable presence, or its session ended (logout,
    broken connection without resumption, resume timeout, node declared down), recorded in the
    same proposal as that end."""

    room: str
    session: str
    presence: str = ""
    """Serialized children of the unavailable presence (a status text), if the client sent one."""
    reason: str = "left"
    """left (the session's own unavailable presence: it is told) | logout (the session ends at
    the user's request) | session_ended (status 333: the connection, not the user, ended it) |
    shutdown (status 332). All but ``left`` are part of the session's end."""

    def stream(self) -> str:
        return f"muc:{self.room}"


@event("muc.nick_changed")
@dataclass(frozen=True, slots=True)
class MucNickChanged:
    """An occupant changed its nickname (XEP-0045 §7.6): status 303, then the new presence."""

    room: str
    session: str
    nick: str
    """The new nickname as enforced."""
    presence: str = ""
    """Serialized presence children sent with the change."""

    def stream(self) -> str:
        return f"muc:{self.room}"


@event("muc.role_set")
@dataclass(frozen=True, slots=True)
class MucRoleSet:
    """A moderator (or admin) changed an occupant's role (XEP-0045 §8.2-§8.6, §9.6); role
    ``none`` is a kick (status 307): every session of the occupant leaves."""

    room: str
    nick: str
    role: str
    """moderator | participant | visitor | none."""
    reason: str = ""
    by: str = ""
    """Full JID of the actor (shown to occupants as its nick)."""

    def stream(self) -> str:
        return f"muc:{self.room}"


@event("muc.affiliation_set")
@dataclass(frozen=True, slots=True)
class MucAffiliationSet:
    """An admin or owner changed a user's affiliation (XEP-0045 §9.1-§9.5, §10.3-§10.7).

    Occupants of that user follow: ``outcast`` removes them (301), losing membership of a
    members-only room removes them (321), otherwise their role follows the new affiliation."""

    room: str
    jid: str
    """Bare JID whose affiliation changed."""
    affiliation: str
    """owner | admin | member | outcast | none."""
    reason: str = ""
    by: str = ""
    """Full JID of the actor, or ``operator``."""
    nick: str = ""
    """A nickname reserved for a member (XEP-0045 §7.10 registration), if any."""
    registration: bool = False
    """The user itself registered (or dropped) its nickname: apply checks it as a registration
    (``xes.muc.model.registration_error``), not as an admin's change."""

    def stream(self) -> str:
        return f"muc:{self.room}"


@event("muc.subject_set")
@dataclass(frozen=True, slots=True)
class MucSubjectSet:
    """An occupant changed the room subject (XEP-0045 §8.1)."""

    room: str
    session: str
    subject: str
    """The subject text (empty clears it)."""

    def stream(self) -> str:
        return f"muc:{self.room}"


@event("muc.message_sent", v=2)
@dataclass(frozen=True, slots=True)
class MucMessageSent:
    """A groupchat message to the room (XEP-0045 §7.4): one event, written by every node to its
    own occupants' sessions (each copy differs only in ``to``), kept in the room's history and,
    if the room logs, in its archive (XEP-0313, owner = the room JID)."""

    room: str
    session: str
    """Session of the sending occupant (apply refuses a message from a non-occupant)."""
    nick: str
    """The sender's nickname when sent (the archive's ``with`` is room/nick)."""
    xml: str
    """The message as the room sends it, without ``to``: ``from`` = room/nick, the sender's
    ``id`` kept (the reflection carries it), ``<stanza-id by=room>`` and ``<occupant-id/>``."""
    stanza_id: str
    """The room's archive id of the message (XEP-0359), chosen by the proposer."""
    archived: bool = True
    """The room logs its messages (``muc#roomconfig_enablelogging``)."""
    origin_id: str | None = None
    """The sender's XEP-0359 ``origin-id``."""
    body: bool = False
    """v2: it carries a body (the members' inboxes count it, XEP-0430)."""
    marker: str | None = None
    """v2: received | displayed | acknowledged: the occupant marks the room message
    ``marker_id`` (XEP-0333 in a room names the room's stanza-id; XEP-0184 is ``received``)."""
    marker_id: str | None = None
    """v2: the id the marker names."""
    msg_id: str | None = None
    """v2: the sender's ``id`` attribute."""
    track: bool = False
    """v2: the sender asks to follow who received and displayed it (read status)."""

    def stream(self) -> str:
        return f"muc:{self.room}"


@upcaster("muc.message_sent", 1)
def _muc_message_sent_v1(data: dict[str, Any]) -> dict[str, Any]:
    """v1 had no facts: read them from the room's copy, as the v2 proposer does."""
    return {**data, **facts_of_xml(data["xml"]).fields()}


@event("muc.private_sent")
@dataclass(frozen=True, slots=True)
class MucPrivateSent:
    """A private message or iq between occupants (XEP-0045 §7.5), through the room: the
    receiving occupant's sessions get it from room/nick of the sender."""

    room: str
    session: str
    """Session of the sending occupant."""
    to_nick: str
    """Nickname of the receiving occupant (apply refuses it if that occupant is gone)."""
    xml: str
    """The stanza as delivered, without ``to``, ``from`` = room/sender's nick."""
    to_session: str = ""
    """For an iq (or an answer to one): only this session of the receiving occupant gets it."""

    def stream(self) -> str:
        return f"muc:{self.room}"


# --- personal eventing (XEP-0163 on XEP-0060), ADR 0013 -----------------------------------


@event("pep.node_configured")
@dataclass(frozen=True, slots=True)
class PepNodeConfigured:
    """A PEP node was created (``create``) or its configuration replaced."""

    owner: str
    """Bare JID of the account whose PEP service holds the node."""
    node: str
    """Node name."""
    config: dict[str, Any]
    """The whole configuration (:class:`xes.pubsub.config.NodeConfig` as JSON)."""
    create: str = ""
    """``""``: reconfigure an existing node; ``"explicit"``: create, refused if it exists
    (XEP-0060 §8.1: conflict); ``"auto"``: create unless it exists (publish, §7.1.4)."""
    whitelist: list[str] | None = None
    """With ``access_model`` whitelist: the bare JIDs allowed (the owner always is); None
    keeps the current list."""
    notify: list[str] = field(default_factory=list)
    """Full JIDs that get a configuration notification (none for PEP by default)."""

    def stream(self) -> str:
        return f"pep:{self.owner}"


@event("pep.item_published")
@dataclass(frozen=True, slots=True)
class PepItemPublished:
    owner: str
    node: str
    item_id: str
    """Item id (given by the publisher or chosen by the proposer)."""
    payload: str
    """The item's payload element, serialized (one element, XEP-0060 §7.1.3.5)."""
    publisher: str
    """Full JID of the publishing resource."""
    preconditions: dict[str, Any] | None = None
    """XEP-0223 publish-options the node's configuration must match at apply, as
    configuration keys; a mismatch rejects the proposal (``pubsub-precondition-not-met``)."""
    notify: list[str] = field(default_factory=list)
    """Full JIDs entitled to the node that asked for its notifications (XEP-0163 §4.3)."""

    def stream(self) -> str:
        return f"pep:{self.owner}"


@event("pep.item_retracted")
@dataclass(frozen=True, slots=True)
class PepItemRetracted:
    owner: str
    node: str
    item_id: str
    notify: list[str] = field(default_factory=list)
    """Who gets a ``<retract/>`` notification (empty unless the node notifies retractions)."""

    def stream(self) -> str:
        return f"pep:{self.owner}"


@event("pep.node_purged")
@dataclass(frozen=True, slots=True)
class PepNodePurged:
    owner: str
    node: str
    notify: list[str] = field(default_factory=list)

    def stream(self) -> str:
        return f"pep:{self.owner}"


@event("pep.node_deleted")
@dataclass(frozen=True, slots=True)
class PepNodeDeleted:
    owner: str
    node: str
    notify: list[str] = field(default_factory=list)

    def stream(self) -> str:
        return f"pep:{self.owner}"


@event("caps.learned")
@dataclass(frozen=True, slots=True)
class CapsLearned:
    """A XEP-0115 caps hash and the features behind it (the cluster-wide caps cache)."""

    ver: str
    """The advertised ``ver``."""
    hash: str
    """Its hash function (``sha-1``, ...)."""
    features: list[str]
    """Sorted disco#info features behind the hash."""
    jid: str = ""
    """Empty when the answer hashed to ``ver`` (valid for every entity advertising it);
    otherwise the full JID that answered: its features hold for it alone (XEP-0115 §5.4)."""

    def stream(self) -> str:
        return f"caps:{self.ver}"


# --- account data: private XML storage (XEP-0049), vcard-temp (XEP-0054) -------------------


@event("private.stored")
@dataclass(frozen=True, slots=True)
class PrivateStored:
    owner: str
    """Bare JID of the account."""
    key: str
    """The stored element's Clark name (``{namespace}name``), XEP-0049 §2."""
    xml: str
    """The element as stored (an empty one deletes the key)."""

    def stream(self) -> str:
        return f"private:{self.owner}"


@event("vcard.stored")
@dataclass(frozen=True, slots=True)
class VcardStored:
    owner: str
    """Bare JID of the account."""
    xml: str
    """The ``<vCard xmlns='vcard-temp'/>`` as stored; an empty one clears it."""
    photo_hash: str | None = None
    """SHA-1 (hex) of the PHOTO's binary value, for XEP-0153 presence; None without a photo."""

    def stream(self) -> str:
        return f"vcard:{self.owner}"


# --- blocking (XEP-0191) ----------------------------------------------------------------


@event("blocking.changed")
@dataclass(frozen=True, slots=True)
class BlockingChanged:
    owner: str
    """Bare JID whose block list changed."""
    block: list[str] = field(default_factory=list)
    """JIDs added (domain, bare or full JIDs, as the XEP allows), sorted."""
    unblock: list[str] = field(default_factory=list)
    """JIDs removed, sorted."""
    unblock_all: bool = False
    """The whole list was cleared (``<unblock/>`` without items)."""

    def stream(self) -> str:
        return f"blocking:{self.owner}"


# --- inbox (XEP-0430), ADR 0019 ------------------------------------------------------------


@event("inbox.updated")
@dataclass(frozen=True, slots=True)
class InboxUpdated:
    """The owner changed a conversation's entry: read it all, marked it unread, or set its
    properties (archive box, mute, pin). Messages and markers change counts without it."""

    owner: str
    """Bare JID whose inbox it is."""
    conversation: str
    """The entry: the peer's bare JID or the room's JID."""
    read: bool | None = None
    """True: every message is read; False: the last one shows as unread again (if none does)."""
    archived: bool | None = None
    """Move the entry to the archive box (True) or back (False); None leaves it."""
    muted_until: int | None = None
    """ms since the epoch until which it is muted (0: unmuted); the proposer's clock."""
    pinned: bool | None = None
    """Pin the entry to the top of the inbox, or unpin it."""

    def stream(self) -> str:
        return f"inbox:{self.owner}"


@event("inbox.watched")
@dataclass(frozen=True, slots=True)
class InboxWatched:
    """A session asked for the inbox: from now on it is told when an entry is read elsewhere or
    its properties change (its first query records this once)."""

    owner: str
    session: str

    def stream(self) -> str:
        return f"inbox:{self.owner}"


# --- push notifications (XEP-0357), ADR 0020 ------------------------------------------------


@event("push.enabled")
@dataclass(frozen=True, slots=True)
class PushEnabled:
    """A device asked for push notifications through an app server (XEP-0357 §5); a repeated
    enable of the same service and node replaces the earlier one (its publish options)."""

    owner: str
    """Bare JID of the account."""
    resource: str
    """The device (resource) that enabled it: it is pushed while that device is not connected."""
    service: str
    """JID of the XMPP Push Service (the app server, usually a XEP-0114 component)."""
    node: str
    """The push service's node for this device."""
    options: dict[str, list[str]] = field(default_factory=dict)
    """Publish options (e.g. ``secret``): the app server's credentials, sent with each push."""

    def stream(self) -> str:
        return f"push:{self.owner}"


@event("push.disabled")
@dataclass(frozen=True, slots=True)
class PushDisabled:
    """Notifications to a service stop (XEP-0357 §6), for one node or (``node`` None) all."""

    owner: str
    service: str
    node: str | None = None
    reason: str = "user"
    """user | the error condition the service answered | timeout."""

    def stream(self) -> str:
        return f"push:{self.owner}"


@event("push.device_state")
@dataclass(frozen=True, slots=True)
class PushDeviceState:
    """A device with a push registration told its server it is inactive or active again
    (XEP-0352), recorded only with ``[push] when_inactive``: while inactive it is pushed."""

    owner: str
    resource: str
    session: str
    """The session that said so (a later session of the device starts active)."""
    inactive: bool

    def stream(self) -> str:
        return f"push:{self.owner}"


@event("push.notified")
@dataclass(frozen=True, slots=True)
class PushNotified:
    """The push service acknowledged a notification covering every trigger up to ``upto``."""

    owner: str
    service: str
    node: str
    upto: int
    """Log position (``seq``) of the last message the acknowledged notification covered."""

    def stream(self) -> str:
        return f"push:{self.owner}"


# --- FAST tokens (XEP-0484), ADR 0015 -------------------------------------------------------


@event("fast.token_issued")
@dataclass(frozen=True, slots=True)
class FastTokenIssued:
    """A FAST token for one device of an account; replaces that device's earlier token."""

    jid: str
    """Bare JID of the account."""
    agent: str
    """The SASL2 ``<user-agent id>`` the token is bound to."""
    token_id: str
    """What the token is derived from (with a key that is not in the log)."""
    token_hash: str
    """SHA-256 (hex) of the token: never the token itself."""
    mechanism: str
    """The only mechanism the token works with (XEP-0484 §3.2)."""
    expires: int
    """Expiry (ms since the epoch)."""

    def stream(self) -> str:
        return f"fast:{self.jid}"


@event("fast.token_revoked")
@dataclass(frozen=True, slots=True)
class FastTokenRevoked:
    jid: str
    agent: str = ""
    """The device whose token goes; empty: every token of the account."""

    def stream(self) -> str:
        return f"fast:{self.jid}"


# --- HTTP File Upload (XEP-0363), ADR 0017 -------------------------------------------------


@event("upload.slot_granted")
@dataclass(frozen=True, slots=True)
class UploadSlotGranted:
    """A slot for one file: its bytes reserved against the owner's quota until it expires
    unused or the file is deleted. The PUT token is derived from ``slot`` with a key that is
    not in the log, so this event grants nothing to whoever reads it."""

    slot: str
    """Slot id chosen by the proposer (128 random bits, URL-safe base64): the file's name on
    disk and the path segment of its URLs."""
    owner: str
    """Bare JID that asked for the slot (its quota pays for the file)."""
    filename: str
    """The file name the client gave (already checked: no path separators or controls)."""
    size: int
    """Exact size in bytes the PUT must carry."""
    content_type: str
    """Content type the PUT must carry and the GET answers with."""
    expires: int
    """Latest start of the PUT (ms since the epoch)."""
    quota: int
    """The owner's quota in bytes as the proposer read ``[upload] quota_per_user`` (0: none):
    apply refuses the slot if it would take the owner's usage beyond it."""
    max_open: int
    """``[upload] max_open_slots`` as the proposer read it: apply refuses a slot beyond it."""

    def stream(self) -> str:
        return f"upload:{self.owner}"


@event("upload.stored")
@dataclass(frozen=True, slots=True)
class UploadStored:
    """The PUT of a slot completed on one node, which now holds the file; other nodes fetch
    it from there when asked for it."""

    slot: str
    """The slot whose file arrived."""
    owner: str
    """Bare JID of the slot's owner (names the stream)."""
    sha256: str
    """SHA-256 (hex) of the bytes: a node that fetches the file checks it."""
    node: str
    """Node id holding the file."""
    url: str
    """Base URL of that node's HTTP side for other nodes (``[upload] internal_url``)."""
    put_started: int
    """When the PUT began (ms): apply refuses the file if that was after the slot expired."""

    def stream(self) -> str:
        return f"upload:{self.owner}"


@event("upload.deleted")
@dataclass(frozen=True, slots=True)
class UploadDeleted:
    """Slots and their files deleted: past retention, expired unused, or by their owner.
    Every node then deletes its copy on disk (a side task following the projection)."""

    slots: list[str]
    """Slot ids, sorted; ids already gone are ignored."""
    reason: str
    """retention | slot_expired | owner."""

    def stream(self) -> str:
        return "upload:deletions"


# --- external components (XEP-0114), ADR 0018 ---------------------------------------------


@event("component.connected")
@dataclass(frozen=True, slots=True)
class ComponentConnected:
    """A component completed its handshake on a node, which now holds its connection.

    Refused in apply while another connection holds the name anywhere in the cluster (the new
    one gets ``<conflict/>``), or when the boot was declared down (ADR 0018)."""

    domain: str
    """The component's JID (a configured domain)."""
    node: str
    """Node id holding the connection."""
    boot: str
    """That node's boot: a new boot or ``node.down`` of this one releases the name."""
    conn: str
    """Random id of the connection: a late ``component.disconnected`` of an older connection
    does not release a newer one."""

    def stream(self) -> str:
        return f"component:{self.domain}"


@event("component.disconnected")
@dataclass(frozen=True, slots=True)
class ComponentDisconnected:
    """The connection that held a component closed; the name is free on every node."""

    domain: str
    """The component's JID."""
    node: str
    """Node id that held it."""
    boot: str
    """That node's boot."""
    conn: str
    """The connection id of its ``component.connected`` (others are left alone)."""
    reason: str
    """Why it closed: closed | disconnected | policy-violation | system-shutdown | ..."""

    def stream(self) -> str:
        return f"component:{self.domain}"


@event("component.routed")
@dataclass(frozen=True, slots=True)
class ComponentRouted:
    """A stanza for a component whose connection another node holds (like ``iq.routed``,
    ADR 0006): that node writes it if the same connection still holds the name."""

    sender: str
    """JID the stanza is from (a client's full JID, the server, another component)."""
    domain: str
    """The component it is for."""
    conn: str
    """The holding connection when routed: a later connection does not get it."""
    xml: str
    """The stanza as delivered."""

    def stream(self) -> str:
        return f"component:{self.domain}"


# --- server-to-server (ADR 0025) ------------------------------------------------------------


@event("s2s.routed")
@dataclass(frozen=True, slots=True)
class S2sRouted:
    """A stanza for a remote domain, handed to the node that holds the link to it (ADR 0025).

    Today that node is the proposer; once links are owned by the leader, the s2s outbox
    projection numbers these events per remote domain and the owner writes them in order."""

    sender: str
    """JID the stanza is from (a local user, a hosted domain)."""
    to: str
    """JID it is addressed to, in ``domain``."""
    domain: str
    """The remote domain (a stream goes from ``sender``'s domain to it)."""
    node: str
    """Node id that holds (or opens) the link and writes the stanza."""
    xml: str
    """The stanza as sent (``from`` stamped), in ``jabber:client``."""

    def stream(self) -> str:
        return f"s2s:{self.domain}"


# --- audit trail (ADR 0021) -----------------------------------------------------------------


@event("audit.key_announced")
@dataclass(frozen=True, slots=True)
class AuditKeyAnnounced:
    """A node's Ed25519 public key, so the journal carries what its checkpoints are checked with.

    A verifier still decides which keys it trusts (``--trust-key``, ``[audit] trusted_keys``):
    anyone able to append events could announce a key of their own.
    """

    node: str
    """Node id the key belongs to."""
    public_key: str
    """Raw 32-byte Ed25519 public key, hex."""

    def stream(self) -> str:
        return f"audit:key:{self.node}"


@event("audit.checkpoint")
@dataclass(frozen=True, slots=True)
class AuditCheckpoint:
    """The leader's signed statement of the hash chain's head at an earlier event.

    Apply refuses it unless the chain really has ``head`` at ``seq`` (``index``, ``pos``) and the
    signature verifies with an announced key of ``node``, so every checkpoint in the journal was
    true when committed; a later edit of the journal shows as a head that no longer matches.
    """

    seq: int
    """Number of the covered event in the chain (1 for the first event ever committed)."""
    index: int
    """Log index of the covered event (below the checkpoint's own)."""
    pos: int
    """Its position in that entry."""
    head: str
    """Chain hash after the covered event, hex."""
    work: int
    """Events up to the covered one that are not ``audit.*`` (what "every N events" counts)."""
    node: str
    """Node id of the signer (the leader that proposed it)."""
    public_key: str
    """The signer's public key, hex (announced earlier by ``audit.key_announced``)."""
    signature: str
    """Ed25519 signature of the statement (:func:`xes.audit.keys.statement`), hex."""

    def stream(self) -> str:
        return "audit:checkpoints"


@event("audit.vouched")
@dataclass(frozen=True, slots=True)
class AuditVouched:
    """Another node computed the same head for a checkpoint and signs it too.

    A checkpoint's signers are the leader that proposed it and every node that vouched for it,
    so someone holding one node's key (and disk) cannot rewrite history the others signed.
    """

    seq: int
    """``seq`` of the checkpoint vouched for."""
    index: int
    """Log index of the covered event."""
    pos: int
    """Its position in that entry."""
    head: str
    """The head this node computed there, hex (apply refuses it unless it is the checkpoint's)."""
    node: str
    """Node id of the signer."""
    public_key: str
    """Its public key, hex."""
    signature: str
    """Ed25519 signature of the same statement as the checkpoint's, hex."""

    def stream(self) -> str:
        return "audit:checkpoints"


@event("audit.accessed")
@dataclass(frozen=True, slots=True)
class AuditAccessed:
    """Someone read the audit trail through ``xes audit`` (issue 17, item 6): who, how, what."""

    command: str
    """``verify``, ``export``, or a view: ``conversation``, ``room``, ``user``."""
    user: str
    """Operating-system user name that ran the command."""
    uid: int
    """Its numeric user id."""
    host: str
    """Host name the command ran on."""
    args: dict[str, Any] = field(default_factory=dict)
    """Filters and options (``since``, ``until``, ``jid``, ``room``, ``stream``, ``out``; a view's
    ``a``, ``b``, ``at``)."""
    result: str = ""
    """What it found or wrote (``intact``, ``problems at index N``, ``42 events``)."""
    ran_at: int = 0
    """When it ran, ms since the epoch (a queued record is proposed later than it ran)."""

    def stream(self) -> str:
        return "audit:access"


# --- legal holds (issue 17, item 5; ADR 0024) -------------------------------------------------


@event("hold.placed")
@dataclass(frozen=True, slots=True)
class HoldPlaced:
    """An operator suspended retention for a user, a room or a conversation (``xes hold add``):
    what it covers is kept past its retention age until the hold is lifted."""

    hold: str
    """The hold's id (``xes hold list`` shows it; ``xes hold remove`` names it)."""
    target: str
    """What it covers: ``user:<bare JID>``, ``room:<room JID>`` or ``conversation:<a> <b>``
    (the two bare JIDs in sorted order)."""
    reason: str
    """Why, as the operator gave it (a case number, say)."""
    user: str
    """Operating-system user that placed it."""
    uid: int
    """Its numeric user id."""
    host: str
    """Host name the command ran on."""

    def stream(self) -> str:
        return f"hold:{self.hold}"


@event("hold.lifted")
@dataclass(frozen=True, slots=True)
class HoldLifted:
    """An operator ended a hold (``xes hold remove``): what it alone kept expires as usual."""

    hold: str
    """The hold's id."""
    target: str
    """What it covered (as in ``hold.placed``; repeated so the event reads on its own)."""
    reason: str
    """Why it ended."""
    user: str
    """Operating-system user that lifted it."""
    uid: int
    """Its numeric user id."""
    host: str
    """Host name the command ran on."""

    def stream(self) -> str:
        return f"hold:{self.hold}"
