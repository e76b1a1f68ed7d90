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

    def stream(self) -> str:
        return f"offline:{self.owner}"
