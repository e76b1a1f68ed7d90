"""The event catalogue: every kind of fact xes records, one frozen dataclass each.

Events are past-tense facts. Each field is JSON-native and documented; the stream names the
aggregate an event belongs to (optimistic concurrency and per-stream versions are kept per stream).
Importing this module registers every type (see :mod:`xes.events.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xes.events.registry import event

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
    """closed | conflict | error | node_restarted | shutdown | timeout."""
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


@event("message.routed")
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

    def stream(self) -> str:
        return f"chat:{self.to.split('/', 1)[0]}"


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
