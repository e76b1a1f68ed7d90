"""Configuration: a TOML file read into frozen dataclasses. Every key and its default is listed
in ``docs/configuration.md``; a minimal file needs only ``domain`` and ``data_dir``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from xes.stanza.archiving import PREF_DEFAULTS
from xes.xml import XmlLimits


class ConfigError(Exception):
    """The configuration file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class ListenConfig:
    c2s: str | None = "127.0.0.1:5222"
    """Client STARTTLS listener (RFC 6120); empty string disables it."""
    c2s_tls: str | None = "127.0.0.1:5223"
    """Client direct-TLS listener (XEP-0368); empty string disables it."""
    http: str | None = "127.0.0.1:5280"
    """Plain HTTP listener (WebSocket, BOSH, upload, metrics, admin API); empty string disables
    it. Meant for loopback or a TLS-ending reverse proxy (``[http] trusted_proxies``)."""
    https: str | None = "127.0.0.1:5281"
    """HTTPS listener with the node's certificate; empty string disables it."""
    component: str | None = None
    """External component listener (XEP-0114). Unset: ``127.0.0.1:5347`` when a
    ``[components."<domain>"]`` table exists, none otherwise; empty string disables it."""
    s2s: str | None = None
    """Server-to-server listener (RFC 6120, STARTTLS), e.g. ``"127.0.0.1:5269"``; none unless
    set. Outgoing s2s needs an ``[s2s]`` section (ADR 0025)."""
    s2s_tls: str | None = None
    """Server-to-server direct-TLS listener (XEP-0368, ALPN ``xmpp-server``); none unless set."""
    component_tls: bool = False
    """Direct TLS with the node's certificate on the component listener (plain TCP otherwise,
    the XEP-0114 norm, which is refused on a non-loopback address unless
    ``[components_policy] allow_plaintext``)."""


@dataclass(frozen=True)
class HttpConfig:
    max_header_bytes: int = 16384
    """Largest request line plus headers; larger requests get 431."""
    max_body_bytes: int = 1048576
    """Largest request body outside file upload (BOSH, admin API); larger ones get 413."""
    header_timeout: float = 10.0
    """Seconds a client may take to send a request head (slowloris)."""
    idle_timeout: float = 30.0
    """Seconds a keep-alive connection may sit idle, and the longest pause inside a body."""
    send_timeout: float = 30.0
    """Seconds a client may take to read a response before the connection is dropped."""
    max_connections: int = 10000
    """Open HTTP connections (WebSockets included) on this node."""
    max_connections_per_address: int = 1000
    """Open HTTP connections from one client address."""
    requests_per_second: float = 50.0
    """Sustained requests per client address (token bucket); beyond it 429."""
    request_burst: int = 200
    """Requests one address may make at once before the rate applies."""
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    """Addresses (CIDR) whose plain-HTTP requests count as TLS-protected (a reverse proxy that
    ended TLS) and whose ``X-Forwarded-For`` names the client."""
    allowed_origins: tuple[str, ...] = ("*",)
    """``Origin`` values a browser page may come from for WebSocket and BOSH; ``*`` any."""
    public_url: str | None = None
    """The base URL clients reach this node's HTTP side at (``https://chat.example.org``);
    default: taken from each request's ``Host``. Used in host-meta and upload slots."""
    websocket: bool = True
    """Serve XMPP over WebSocket (RFC 7395) at ``/xmpp-websocket``."""


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    """Serve Prometheus metrics at ``/metrics`` on the HTTP listeners."""
    allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    """Client networks (CIDR) that may read ``/metrics``; everyone else gets 403."""


@dataclass(frozen=True)
class AdminConfig:
    token_file: str | None = None
    """File holding the admin API's bearer token (``Authorization: Bearer``, 16+ characters).
    The admin API, the status page and XEP-0133 are off unless this or ``admins`` is set."""
    admins: tuple[str, ...] = ()
    """Bare JIDs of server administrators: HTTP Basic with their XMPP password on the admin
    API and status page, and XEP-0133 ad-hoc commands from their XMPP clients."""

    @property
    def enabled(self) -> bool:
        return bool(self.token_file or self.admins)


@dataclass(frozen=True)
class UploadConfig:
    """HTTP File Upload (XEP-0363, ADR 0017): files shared in chats, stored by the nodes."""

    enabled: bool = False
    """Run the upload service (off by default: storing patients' files is a decision)."""
    domain: str = ""
    """Its JID; default ``upload.<domain>``."""
    max_file_size: int = 104857600
    """Largest file in bytes; a larger request gets ``file-too-large`` with this number."""
    quota_per_user: int = 1073741824
    """Bytes one account may keep (stored files plus open slots); 0: no quota."""
    retention_days: float = 0
    """Days a file is kept; 0 keeps it until its account is removed."""
    dir: str | None = None
    """Where this node keeps files; default ``data_dir/uploads``."""
    allowed_content_types: tuple[str, ...] = ()
    """Content types a slot may name (``image/*`` matches a family); empty: any."""
    slot_ttl: int = 300
    """Seconds between a slot being granted and the latest start of its PUT."""
    max_open_slots: int = 10
    """Granted but not yet uploaded slots one account may hold; more get ``retry``."""
    internal_url: str | None = None
    """Base URL the other nodes fetch this node's files from (default: ``[listen] https``)."""
    internal_ca: str | None = None
    """PEM CA bundle the other nodes' HTTPS certificates are verified against when fetching;
    default: not verified (the HMAC authenticates us, the event's SHA-256 the body)."""
    fetch_timeout: float = 30.0
    """Seconds a fetch from another node may stall before the GET gets 503."""
    retention_check_interval: float = 60.0
    """Seconds between the leader's checks for expired slots and files past retention."""


@dataclass(frozen=True)
class BoshConfig:
    enabled: bool = True
    """Serve XMPP over BOSH (XEP-0124, XEP-0206) at ``/http-bind`` on the HTTP listeners."""
    max_wait: int = 60
    """Longest time (s) a request is held when the client asks for more (its ``wait``)."""
    max_hold: int = 1
    """Most requests held at once (``hold``); the client may keep ``hold + 1`` open."""
    inactivity: int = 60
    """Seconds a session may go without a request open before it ends (XEP-0198 may then
    detach it for resumption)."""
    polling: int = 5
    """Shortest interval (s) between empty requests of a polling client (``hold = 0``); more
    often is a ``policy-violation``."""
    max_sessions: int = 10000
    """BOSH sessions on this node."""
    max_sessions_per_address: int = 100
    """BOSH sessions from one client address."""
    max_pending: int = 1000
    """Elements waiting for a client request; a client that lets more pile up loses the session
    (XEP-0198 resumption gets them later) instead of making the node hold them all."""


@dataclass(frozen=True)
class TlsConfig:
    cert: str | None = None
    """PEM certificate chain; default: a self-signed one generated in ``data_dir/tls``."""
    key: str | None = None
    """PEM private key for ``cert``."""
    required: bool = True
    """Require STARTTLS before authentication (RFC 6120 §5.3.1 mandatory-to-negotiate)."""


@dataclass(frozen=True)
class AuthConfig:
    mechanisms: tuple[str, ...] = (
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    )
    """SASL mechanisms offered, strongest first; PLAIN is only offered over TLS."""
    scram_iterations: int = 4096
    """PBKDF2 iterations for newly stored SCRAM keys (RFC 7677 recommends at least 4096)."""
    max_failures: int = 5
    """Failed logins per account and per address before a lockout."""
    failure_window: float = 60.0
    """Seconds over which failures are counted."""
    lockout: float = 60.0
    """Seconds a locked account/address is refused."""
    sasl2: bool = True
    """Offer SASL2 (XEP-0388) with Bind2 (XEP-0386) beside RFC 6120 SASL."""
    fast: bool = True
    """Offer FAST tokens (XEP-0484) through SASL2."""
    fast_token_ttl: int = 14 * 86400
    """Seconds a FAST token stays valid; the client asks for a new one before."""


@dataclass(frozen=True)
class LimitsConfig:
    max_stanza_bytes: int = 262144
    """Largest stanza accepted; larger ones close the stream with policy-violation."""
    max_depth: int = 32
    """Deepest element nesting inside a stanza."""
    max_attributes: int = 64
    """Most attributes on one element."""
    auth_timeout: float = 30.0
    """Seconds a connection may take to authenticate and bind before it is closed."""
    idle_timeout: float = 600.0
    """Seconds without any inbound data before an authenticated stream is closed."""
    outbound_queue: int = 1000
    """Stanzas queued towards one client before it counts as too slow and is disconnected."""
    stanzas_per_second: float = 200.0
    """Sustained inbound stanza rate per session (token bucket); faster clients are throttled."""
    stanza_burst: int = 400
    """Token-bucket burst size for ``stanzas_per_second``."""
    max_connections: int = 50000
    """Concurrent client connections per node."""
    offline_quota: int = 1000
    """Offline messages kept per user; beyond it the sender gets service-unavailable."""
    min_free_disk_mb: int = 256
    """Below this much free space in ``data_dir`` the node refuses new writes from clients (a
    stanza error ``resource-constraint`` naming the disk; no new sessions) and takes them again
    when space returns. What is already committed is never at risk: the margin is kept for the
    log, session ends and acknowledgements."""


@dataclass(frozen=True)
class StreamManagementConfig:
    """XEP-0198 on client streams (ADR 0008)."""

    enabled: bool = True
    """Offer ``urn:xmpp:sm:3`` (acks and resumption) to clients."""
    resume_timeout: int = 300
    """Seconds a session whose connection broke waits to be resumed (on any node); a client's
    ``max`` is honoured up to this."""
    ack_request_every: int = 5
    """Ask the client for an ack (``<r/>``) after this many unacknowledged stanzas..."""
    ack_request_after: float = 2.0
    """...or this many seconds after the oldest unacknowledged one."""
    ack_record_interval: float = 1.0
    """Seconds between ``sm.acked`` records of a session's acknowledged count (coalesced)."""
    ack_record_every: int = 50
    """Record the acknowledged count earlier once this many acknowledged stanzas are unrecorded."""
    max_unacked: int = 1000
    """Acknowledgement window: at most half of this (and of the outbound queue) is sent ahead of
    the client's acks; a session with more than ten times this unacknowledged is closed."""


@dataclass(frozen=True)
class OfflineConfig:
    """Offline storage (XEP-0160) shared by a user's devices (quota: ``limits.offline_quota``)."""

    device_ttl: int = 30 * 86400
    """Seconds a device (a client-chosen resource) is remembered after its last session: until
    then offline messages wait for it too, so one device never takes them from another."""


@dataclass(frozen=True)
class ArchiveConfig:
    """Message archive (XEP-0313), stanza ids (XEP-0359) and carbons (XEP-0280); ADR 0009."""

    enabled: bool = True
    """Archive messages and answer ``urn:xmpp:mam:2`` queries."""
    default: str = "always"
    """Archiving default for users who set no preference: always | never | roster (only
    messages with contacts in the user's roster)."""
    retention_days: float = 0
    """Days archived messages of the served domain are kept; 0 keeps them for ever."""
    retention_by_domain: dict[str, float] = field(default_factory=dict)
    """Retention in days for other domains served here (e.g. a group-chat service), by domain."""
    retention_check_interval: float = 600.0
    """Seconds between the leader's checks for archived messages past their retention."""
    page_size: int = 50
    """Messages in a query result page when the client does not say (RSM ``max``)."""
    max_page_size: int = 250
    """Most messages in one result page, whatever the client asks for."""


@dataclass(frozen=True)
class RetentionConfig:
    """Retention per category (ADR 0024); unset ages fall back to ``[archive]``'s."""

    chat_days: float | None = None
    """Days one-to-one messages stay in the archive (every hosted domain); unset: ``[archive]
    retention_days`` (or ``retention_by_domain`` for that domain). 0 keeps them for ever."""
    groupchat_days: float | None = None
    """Days room messages stay in the room archives of every hosted domain's group chat
    service; unset: ``[archive] retention_by_domain`` for the service's domain, else for ever."""
    domain: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per hosted domain: ``[retention.domain."d"]`` with ``chat_days`` / ``groupchat_days``."""


@dataclass(frozen=True)
class AuditConfig:
    """The tamper-evident audit trail (ADR 0021): signed checkpoints of the journal's hash chain."""

    checkpoint_every: int = 10000
    """Events (other than the audit trail's own) between two checkpoints the leader signs."""
    checkpoint_interval: float = 300.0
    """Most seconds between a committed event and a checkpoint covering it (when idle, none)."""
    key_file: str | None = None
    """This node's Ed25519 signing key (PEM); default ``data_dir/audit/node.key``, created on
    first start with mode 0600."""
    trusted_keys: tuple[str, ...] = ()
    """Public keys (hex, as ``xes audit key`` prints them, optionally ``node:`` first) that
    ``xes audit verify`` accepts signatures from; empty: the keys announced in the journal."""


@dataclass(frozen=True)
class InboxConfig:
    """Inbox (XEP-0430, ADR 0019): conversations with unread counts, kept from the archive."""

    enabled: bool = True
    """Answer ``urn:xmpp:inbox:1`` queries and conversation properties (the projection is
    kept either way, so turning it on later shows every conversation since the start)."""
    page_size: int = 50
    """Entries in a query result when the client does not say (RSM ``max``)."""
    max_page_size: int = 250
    """Most entries in one result, whatever the client asks for."""
    max_mute_seconds: int = 366 * 86400
    """Longest mute a client may set on a conversation."""


@dataclass(frozen=True)
class PushConfig:
    """Push notifications (XEP-0357, ADR 0020) published to app servers, usually components."""

    enabled: bool = True
    """Offer ``urn:xmpp:push:0`` on accounts and publish to the services they enable."""
    include_body: bool = False
    """Put the message text (``last-message-body``) in notifications. Off: a notification goes
    through the app vendor's and the phone maker's push systems and must not carry patient data."""
    timeout: float = 30.0
    """Seconds to wait for the push service's answer before trying again."""
    max_attempts: int = 5
    """Failed attempts in a row (timeouts, ``wait`` errors) after which a registration is
    disabled; any other error disables it at once (XEP-0357 §7)."""
    max_registrations: int = 10
    """Most push registrations per account (one per device and app server)."""
    when_inactive: bool = False
    """Also push a device whose connection is open but which said it is inactive (XEP-0352):
    for phones whose system may freeze a backgrounded app's socket. Each change of state of a
    device with a registration is then recorded (one event)."""


@dataclass(frozen=True)
class MucConfig:
    """Group chat service (XEP-0045, ADR 0011). Room defaults apply to rooms created later."""

    enabled: bool = True
    """Run the group chat service."""
    domain: str = ""
    """Its domain; default ``conference.<domain>``."""
    creators: tuple[str, ...] = ()
    """Bare JIDs that may create rooms; empty: every local account may."""
    lock_new_rooms: bool = True
    """A new room refuses others until its owner configures it (XEP-0045 §10.1: instant rooms
    are configured with an empty form)."""
    max_rooms_per_user: int = 100
    """Rooms one user may own; a creation beyond it is refused (``not-allowed``)."""
    max_occupants: int = 500
    """Most occupants of any room (a room's own ``max users`` is capped by it)."""
    max_affiliations: int = 10000
    """Most users with an affiliation (owner, admin, member, outcast) in one room: the room's
    row, rewritten at every join and leave, holds them all."""
    max_nick_length: int = 64
    """Longest nickname, in characters."""
    max_subject_length: int = 1024
    """Longest room subject, in characters."""
    messages_per_second: float = 20.0
    """Sustained groupchat and private messages per occupant session and room; a faster sender
    is slowed down (its stream is read later), nobody else is."""
    message_burst: int = 60
    """Token-bucket burst for ``messages_per_second``."""
    joins_per_second: float = 2.0
    """Sustained joins (and nickname changes) per session."""
    join_burst: int = 20
    """Token-bucket burst for ``joins_per_second``."""
    default_history_length: int = 20
    """Discussion history kept by a new room (``muc#maxhistoryfetch``)."""
    max_history_length: int = 100
    """Largest history length an owner may configure."""
    default_persistent: bool = False
    """New rooms outlive their last occupant."""
    default_public: bool = True
    """New rooms are listed in disco#items."""
    default_members_only: bool = False
    default_moderated: bool = False
    default_whois: str = "moderators"
    """Who sees real JIDs in new rooms: moderators | anyone."""
    default_logging: bool = True
    """New rooms archive their messages (XEP-0313 on the room JID)."""
    default_allow_pm: str = "anyone"
    """Who may send private messages in new rooms: anyone | participants | moderators | none."""


@dataclass(frozen=True)
class PepConfig:
    """Personal eventing (XEP-0163): every account's pubsub service (ADR 0013)."""

    enabled: bool = True
    """Offer PEP (OMEMO, bookmarks, avatars and profiles depend on it)."""
    max_nodes: int = 256
    """Nodes one account may have; creating one more is refused (``not-allowed``)."""
    max_items: int = 1000
    """Most items a node keeps (what ``pubsub#max_items=max`` means, XEP-0060 §16.4.4)."""
    max_item_bytes: int = 131072
    """Largest item payload, serialized; a bigger one is refused (``not-acceptable`` with
    ``payload-too-big``). Avatars (XEP-0084 data) are the big ones."""
    publish_per_second: float = 5.0
    """Sustained publishes (and retracts) per session; a faster client gets ``wait``
    ``resource-constraint``."""
    publish_burst: int = 50
    """Token-bucket burst for ``publish_per_second`` (a client's login publishes several)."""


@dataclass(frozen=True)
class CsiConfig:
    """Client State Indication (XEP-0352): what an inactive client (a phone in a pocket) is
    spared until it is active again or something urgent arrives (ADR 0014)."""

    enabled: bool = True
    """Offer ``urn:xmpp:csi:0`` after bind and honour ``<inactive/>``."""
    max_held: int = 500
    """Most stanzas held for one inactive session; one more sends them all."""


@dataclass(frozen=True)
class RegistrationConfig:
    """In-band registration and account management by clients (XEP-0077)."""

    enabled: bool = False
    """Anyone who reaches the client port may create an account (off: accounts come from
    ``xes user add``)."""
    per_address_per_hour: int = 5
    """Accounts one IP address may create per hour on one node; more get
    ``resource-constraint``."""
    min_password_length: int = 8
    """Shorter passwords are refused (``not-acceptable``), at registration and change."""
    password_change: bool = True
    """A logged-in user may change its password (XEP-0077 §3.3)."""
    allow_remove: bool = False
    """A logged-in user may delete its own account (XEP-0077 §3.2), with all its data."""


@dataclass(frozen=True)
class ContactConfig:
    """XEP-0157 contact addresses the server publishes in its disco#info (URIs: ``mailto:``,
    ``xmpp:``, ``https:``). Empty lists are left out."""

    abuse: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()
    feedback: tuple[str, ...] = ()
    sales: tuple[str, ...] = ()
    security: tuple[str, ...] = ()
    support: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExternalServicesConfig:
    """XEP-0215 external services (STUN/TURN for calls). Each entry of ``services`` is a table
    with ``type`` (stun, turn, turns), ``host``, ``port``, optional ``transport`` (udp, tcp) and,
    for a TURN server using the REST API shared secret (coturn ``use-auth-secret``),
    ``secret`` or ``secret_file``: clients then get time-limited credentials."""

    services: tuple[dict[str, Any], ...] = ()
    credential_ttl: int = 86400
    """Seconds the TURN credentials handed out stay valid."""


@dataclass(frozen=True)
class ClusterConfig:
    node_id: str = "n1"
    """This node's id (unique in the cluster)."""
    raft: str = "127.0.0.1:5290"
    """This node's Raft address as the other nodes reach it (and list it in their ``peers``)."""
    raft_bind: str | None = None
    """Where the Raft endpoint listens when ``raft`` is a NAT or proxy address (default: ``raft``).
    Outgoing Raft connections leave from this address's host, so firewalls can match it."""
    peers: tuple[str, ...] = ()
    """The other nodes' Raft addresses; empty for a single node."""
    secret: str | None = None
    """Cluster secret (required with peers): encrypts and authenticates Raft traffic."""
    secret_file: str | None = None
    """File holding the cluster secret (alternative to ``secret``)."""
    commit_timeout: float = 5.0
    """Seconds a stanza may wait for the cluster to commit it (a leader election, a slow link)
    before its sender gets a ``resource-constraint`` error (the outcome may still be unknown)."""
    election_timeout_min: float = 0.4
    """Raft election timeout range in seconds; raise to about 1.0-2.5 for WAN links of 80 ms."""
    election_timeout_max: float = 1.2
    node_down_after: float = 10.0
    """Seconds a node may be unreachable from the Raft leader before the cluster records the end
    of its client sessions (contacts see them unavailable). A node that comes back after that
    closes its client connections, so their clients reconnect to a live session."""
    compaction_entries: int | None = None
    """Compact the Raft log (a snapshot of the store, then journal truncation) after this many
    entries (default: 5,000 with peers, 50,000 alone). Lower it only to exercise snapshots:
    each one copies the whole store (the fault campaign's ``snapshot_kill`` uses 300)."""
    compaction_interval: float = 300.0
    """...or after this many seconds with new entries, whichever comes first."""


S2S_AUTHENTICATION = ("certificates", "certificates+dialback")


@dataclass(frozen=True)
class S2SConfig:
    """Federation with other XMPP servers (ADR 0025). Without an ``[s2s]`` section stanzas to
    other domains get ``remote-server-not-found`` and no outgoing connection is made."""

    hosts: dict[str, str] = field(default_factory=dict)
    """Static routes, looked up before DNS: ``{ "other.example" = "127.0.0.1:5270" }``
    (tests, closed networks). A value ``"tls:host:port"`` connects with direct TLS."""
    authentication: str = "certificates"
    """``certificates``: peers must present a certificate valid for their domain (SASL
    EXTERNAL, XEP-0178, names checked per RFC 6125); ``certificates+dialback``: Server
    Dialback (XEP-0220) where a certificate does not verify."""
    ca_file: str | None = None
    """PEM file of CAs trusted for peer certificates (a private CA); default: the system's."""
    dialback_secret: str | None = field(default=None, repr=False)
    """Secret dialback keys are made from (XEP-0185), the same on every node; default:
    derived from the cluster secret, else from a random one kept in ``data_dir``."""
    require_encryption: bool = True
    """STARTTLS before anything else, in both directions (RFC 7590)."""
    connect_timeout: float = 10.0
    """Seconds to connect and authenticate an outgoing stream before its stanzas bounce."""

    @property
    def dialback(self) -> bool:
        return self.authentication == "certificates+dialback"


DEFAULT_COMPONENT_LISTEN = "127.0.0.1:5347"


@dataclass(frozen=True)
class HostConfig:
    """One domain the cluster serves (a virtual host, ADR 0023): an entry of ``hosts`` with its
    optional ``[host."<domain>"]`` table. Accounts, rooms and archives are keyed by bare JID,
    so each host's data is its own; what differs per host is here."""

    domain: str
    """The hosted domain (bare, normalised)."""
    cert_file: str | None = None
    """PEM certificate chain presented to clients of this host (SNI, or the stream's ``to``
    for STARTTLS); default: ``[tls] cert`` for the primary host, else a self-signed one
    generated in ``data_dir/tls/<domain>.crt``."""
    key_file: str | None = None
    """PEM private key for ``cert_file``."""
    muc_domain: str = ""
    """The host's group chat service (default ``conference.<domain>``; for the primary host
    ``[muc] domain`` when set)."""
    registration: bool | None = None
    """In-band registration on this host (XEP-0077); unset: ``[registration] enabled``."""


_HOST_KEYS = frozenset({"cert_file", "key_file", "muc_domain", "registration"})


@dataclass(frozen=True)
class ComponentConfig:
    """One external component (XEP-0114), a ``[components."<domain>"]`` table."""

    domain: str
    """The component's JID (a bare domain, not the server's nor a built-in service's)."""
    secret: str | None = field(default=None, repr=False)
    """The shared secret of its handshake (prefer ``secret_file``); never logged."""
    secret_file: str | None = None
    """File holding the secret (read when a component connects, so it can be rotated)."""

    def read_secret(self) -> str | None:
        """The secret, or None when its file cannot be read (the handshake then fails)."""
        if self.secret_file:
            try:
                return Path(self.secret_file).read_text().strip() or None
            except OSError:
                return None
        return self.secret or None


@dataclass(frozen=True)
class ComponentsPolicyConfig:
    allow_plaintext: bool = False
    """Allow the component listener on a non-loopback address without ``[listen]
    component_tls`` (the handshake is then sent in the clear, like everything after it)."""
    max_failures: int = 5
    """Failed handshakes per component name and per address within ``failure_window``
    seconds before further attempts are refused for ``lockout`` seconds."""
    failure_window: float = 60.0
    lockout: float = 60.0


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    """debug | info | warning | error."""
    format: str = "auto"
    """json | console | auto (console on a terminal, JSON otherwise)."""


@dataclass(frozen=True)
class Config:
    domain: str = "localhost"
    """The primary XMPP domain served (RFC 7622 domainpart): the first of ``hosts`` unless
    given; the node's own address for defaults (``upload.<domain>``, the status page)."""
    hosts: tuple[HostConfig, ...] = ()
    """Every domain served (ADR 0023), the primary one among them; empty: ``domain`` alone.
    Read through :attr:`virtual_hosts`."""
    data_dir: Path = Path("./xes-data")
    """Where LMDB, the Raft journal, the TLS material and the log-process socket live."""
    listen: ListenConfig = field(default_factory=ListenConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    bosh: BoshConfig = field(default_factory=BoshConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    stream_management: StreamManagementConfig = field(default_factory=StreamManagementConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    inbox: InboxConfig = field(default_factory=InboxConfig)
    push: PushConfig = field(default_factory=PushConfig)
    muc: MucConfig = field(default_factory=MucConfig)
    pep: PepConfig = field(default_factory=PepConfig)
    csi: CsiConfig = field(default_factory=CsiConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    contact: ContactConfig = field(default_factory=ContactConfig)
    external_services: ExternalServicesConfig = field(default_factory=ExternalServicesConfig)
    components: tuple[ComponentConfig, ...] = ()
    """External components (XEP-0114), from the ``[components."<domain>"]`` tables."""
    components_policy: ComponentsPolicyConfig = field(default_factory=ComponentsPolicyConfig)
    s2s: S2SConfig | None = None
    """Server-to-server (``[s2s]``); None: federation off."""
    log: LogConfig = field(default_factory=LogConfig)
    source: Path | None = None
    """The file this configuration was read from (not a key)."""

    @property
    def xml_limits(self) -> XmlLimits:
        return XmlLimits(
            max_stanza_bytes=self.limits.max_stanza_bytes,
            max_depth=self.limits.max_depth,
            max_attributes=self.limits.max_attributes,
        )

    @property
    def virtual_hosts(self) -> tuple[HostConfig, ...]:
        """The hosted domains with their settings, the primary one first."""
        if self.hosts:
            return self.hosts
        return (HostConfig(self.domain, muc_domain=self.muc.domain or f"conference.{self.domain}"),)

    @property
    def host_names(self) -> tuple[str, ...]:
        return tuple(h.domain for h in self.virtual_hosts)

    def host(self, domain: str) -> HostConfig | None:
        """The settings of hosted ``domain``, or None when it is not served here."""
        return next((h for h in self.virtual_hosts if h.domain == domain), None)

    def is_hosted(self, domain: str) -> bool:
        """Is ``domain`` one of ours (a local domain: never routed to another server)?"""
        return any(h.domain == domain for h in self.virtual_hosts)

    def muc_domain_of(self, domain: str) -> str:
        """The group chat service of hosted ``domain`` (the primary's for any other)."""
        host = self.host(domain) or self.virtual_hosts[0]
        return host.muc_domain or f"conference.{host.domain}"

    def muc_host(self, muc_domain: str) -> str | None:
        """The hosted domain whose group chat service is ``muc_domain``, if any."""
        return next((h.domain for h in self.virtual_hosts if h.muc_domain == muc_domain), None)

    def registration_on(self, domain: str) -> bool:
        """Is in-band registration (XEP-0077) offered on hosted ``domain``?"""
        host = self.host(domain)
        if host is not None and host.registration is not None:
            return host.registration
        return self.registration.enabled

    @property
    def muc_domain(self) -> str:
        """The primary host's group chat service (``[muc] domain``, default
        ``conference.<domain>``); :meth:`muc_domain_of` gives any host's."""
        return self.muc_domain_of(self.domain)

    @property
    def upload_domain(self) -> str:
        """The upload service's JID (``[upload] domain``, default ``upload.<domain>``)."""
        return self.upload.domain or f"upload.{self.domain}"

    @property
    def upload_dir(self) -> Path:
        """Where this node keeps uploaded files (``[upload] dir``, default ``data_dir/uploads``)."""
        return Path(self.upload.dir) if self.upload.dir else self.data_dir / "uploads"

    @property
    def component_listen(self) -> str | None:
        """Where the component listener listens (``[listen] component``), or None."""
        if self.listen.component is None:
            return DEFAULT_COMPONENT_LISTEN if self.components else None
        return self.listen.component or None

    def component(self, domain: str) -> ComponentConfig | None:
        """The configured component named ``domain``, if any."""
        return next((c for c in self.components if c.domain == domain), None)

    @property
    def audit_key_path(self) -> Path:
        """This node's audit signing key (``[audit] key_file``, default in ``data_dir``)."""
        return (
            Path(self.audit.key_file) if self.audit.key_file else self.data_dir / "audit/node.key"
        )

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "log.sock"

    @property
    def cluster_secret(self) -> str | None:
        if self.cluster.secret:
            return self.cluster.secret
        if self.cluster.secret_file:
            try:
                return Path(self.cluster.secret_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"[cluster] secret_file {self.cluster.secret_file} cannot be read "
                    f"({exc.strerror or exc}): fix the path or its permissions"
                ) from None
        return None


_SECTIONS: dict[str, type[Any]] = {
    "listen": ListenConfig,
    "tls": TlsConfig,
    "http": HttpConfig,
    "metrics": MetricsConfig,
    "admin": AdminConfig,
    "upload": UploadConfig,
    "bosh": BoshConfig,
    "auth": AuthConfig,
    "limits": LimitsConfig,
    "cluster": ClusterConfig,
    "stream_management": StreamManagementConfig,
    "offline": OfflineConfig,
    "archive": ArchiveConfig,
    "retention": RetentionConfig,
    "audit": AuditConfig,
    "inbox": InboxConfig,
    "push": PushConfig,
    "muc": MucConfig,
    "pep": PepConfig,
    "csi": CsiConfig,
    "registration": RegistrationConfig,
    "contact": ContactConfig,
    "external_services": ExternalServicesConfig,
    "components_policy": ComponentsPolicyConfig,
    "s2s": S2SConfig,
    "log": LogConfig,
}


def _section(cls: type[Any], raw: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"unknown key(s) in [{where}]: {', '.join(sorted(unknown))}")
    values = {}
    for name, value in raw.items():
        if isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


RETENTION_KEYS = ("chat_days", "groupchat_days")


def _check_retention(config: Config) -> None:
    ret = config.retention
    tables = {"retention": {k: getattr(ret, k) for k in RETENTION_KEYS}}
    for domain, table in ret.domain.items():
        if not isinstance(table, dict):
            raise ConfigError(f'[retention.domain."{domain}"] must be a table')
        if not config.is_hosted(domain):
            raise ConfigError(
                f'[retention.domain."{domain}"]: {domain} is not a hosted domain '
                f"(hosted: {', '.join(config.host_names)})"
            )
        unknown = set(table) - set(RETENTION_KEYS)
        if unknown:
            raise ConfigError(
                f'unknown key(s) in [retention.domain."{domain}"]: {", ".join(sorted(unknown))}'
            )
        tables[f'retention.domain."{domain}"'] = table
    for where, table in tables.items():
        for key, value in table.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"[{where}] {key} must be a number of days, 0 or more")


def _bare_domain(value: Any, where: str) -> str:
    """``value`` as a bare domain, normalised (RFC 7622)."""
    from xes.jid import JID, InvalidJID

    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string (a domain name)")
    try:
        parsed = JID.parse(value)
    except InvalidJID as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if parsed.local or parsed.resource:
        raise ConfigError(f"{where} must be a bare domain name")
    return parsed.domain


def _host_names(raw: Any) -> tuple[str, ...]:
    """The ``hosts`` list: bare domains, at least one, none twice."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError('hosts must be a non-empty list of domains: hosts = ["a.example"]')
    names = tuple(_bare_domain(value, f"hosts: {value!r}") for value in raw)
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"hosts: {name} is listed twice")
    return names


def _host_tables(config: Config, raw: Any, base: Path | None) -> tuple[HostConfig, ...]:
    """Each hosted domain with its ``[host."<domain>"]`` table applied and its group chat
    domain resolved; every table must name a hosted domain."""
    if not isinstance(raw, dict):
        raise ConfigError('[host] must be tables keyed by hosted domain: [host."a.example"]')
    names = config.host_names
    for key, table in raw.items():
        if key not in names:
            raise ConfigError(
                f'[host."{key}"]: {key} is not a hosted domain (hosts = {list(names)}); '
                "add it to hosts or remove the table"
            )
        if not isinstance(table, dict):
            raise ConfigError(f'[host."{key}"] must be a table')
        unknown = set(table) - _HOST_KEYS
        if unknown:
            raise ConfigError(f'unknown key(s) in [host."{key}"]: {", ".join(sorted(unknown))}')
    out = []
    for name in names:
        table = raw.get(name, {})
        where = f'[host."{name}"]'
        cert, key = table.get("cert_file"), table.get("key_file")
        if bool(cert) != bool(key):
            raise ConfigError(f"{where} needs both cert_file and key_file, or neither")
        if cert and name == config.domain and (config.tls.cert or config.tls.key):
            raise ConfigError(
                f"{where} cert_file and [tls] cert both name the certificate of the primary "
                f"host {name}: keep one"
            )
        cert, key = (_path(v, base) if v else None for v in (cert, key))
        reg = table.get("registration")
        if reg is not None and not isinstance(reg, bool):
            raise ConfigError(f"{where} registration must be true or false")
        muc = table.get("muc_domain")
        if muc is not None:
            muc = _bare_domain(muc, f"{where} muc_domain")
            if muc != table["muc_domain"]:
                raise ConfigError(f"{where} muc_domain must be written normalised: {muc}")
        elif name == config.domain and config.muc.domain:
            muc = config.muc.domain
        else:
            muc = f"conference.{name}"
        out.append(HostConfig(name, cert, key, muc, reg))
    mucs = [h.muc_domain for h in out]
    for host in out:
        if host.muc_domain in names:
            raise ConfigError(
                f'[host."{host.domain}"] group chat domain {host.muc_domain} is a hosted domain'
            )
        if mucs.count(host.muc_domain) > 1:
            raise ConfigError(f"group chat domain {host.muc_domain} is used by two hosts")
    return tuple(out)


def _path(value: Any, base: Path | None) -> str:
    path = Path(str(value)).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path)


def _check_service_domain(config: Config, section: str, domain: str) -> None:
    """A service's own domain (``[muc] domain``, ``[upload] domain``): bare, normalised, and
    not the server's."""
    if not domain:
        return
    from xes.jid import JID, InvalidJID

    try:
        parsed = JID.parse(domain)
    except InvalidJID as exc:
        raise ConfigError(f"[{section}] domain: {exc}") from exc
    if parsed.local or parsed.resource or config.is_hosted(parsed.domain):
        raise ConfigError(f"[{section}] domain must be a bare domain other than the server's")
    if parsed.domain != domain:
        raise ConfigError(f"[{section}] domain must be written normalised: {parsed.domain}")


def _check_muc(config: Config) -> None:
    muc = config.muc
    _check_service_domain(config, "muc", muc.domain)
    if muc.default_whois not in ("moderators", "anyone"):
        raise ConfigError("[muc] default_whois must be moderators or anyone")
    if muc.default_allow_pm not in ("anyone", "participants", "moderators", "none"):
        raise ConfigError("[muc] default_allow_pm must be anyone, participants, moderators or none")
    for name in (
        "max_occupants",
        "max_affiliations",
        "max_nick_length",
        "max_subject_length",
        "max_rooms_per_user",
    ):
        if getattr(muc, name) <= 0:
            raise ConfigError(f"[muc] {name} must be positive")
    if not 0 <= muc.default_history_length <= muc.max_history_length:
        raise ConfigError("[muc] needs 0 <= default_history_length <= max_history_length")
    if muc.messages_per_second <= 0 or muc.joins_per_second <= 0:
        raise ConfigError("[muc] messages_per_second and joins_per_second must be positive")
    if muc.message_burst < 1 or muc.join_burst < 1:
        raise ConfigError("[muc] message_burst and join_burst must be at least 1")


def _positive(section: Any, where: str, *names: str) -> None:
    for name in names:
        if getattr(section, name) <= 0:
            raise ConfigError(f"[{where}] {name} must be positive")


def _check_http(config: Config) -> None:
    import ipaddress

    http = config.http
    _positive(
        http,
        "http",
        "max_header_bytes",
        "max_body_bytes",
        "max_connections",
        "max_connections_per_address",
        "request_burst",
        "header_timeout",
        "idle_timeout",
        "send_timeout",
        "requests_per_second",
    )
    for key, nets in (
        ("[http] trusted_proxies", http.trusted_proxies),
        ("[metrics] allow", config.metrics.allow),
    ):
        for net in nets:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(f"{key}: {net!r} is not an address or CIDR network") from None
    for admin in config.admin.admins:
        from xes.jid import JID, InvalidJID

        try:
            jid = JID.parse(admin)
        except InvalidJID as exc:
            raise ConfigError(f"[admin] admins: {admin!r} is not a JID ({exc})") from None
        if (
            jid.local is None
            or jid.resource
            or not config.is_hosted(jid.domain)
            or str(jid) != admin
        ):
            hosted = ", ".join(config.host_names)
            raise ConfigError(
                f"[admin] admins: {admin!r} must be a normalised bare JID of a hosted domain "
                f"({hosted})"
            )
    if http.public_url and not http.public_url.startswith(("http://", "https://")):
        raise ConfigError("[http] public_url must start with http:// or https://")


def _check_upload(config: Config) -> None:
    upload = config.upload
    _check_service_domain(config, "upload", upload.domain)
    mucs = {h.muc_domain for h in config.virtual_hosts}
    if upload.enabled and config.upload_domain in mucs and config.muc.enabled:
        raise ConfigError("[upload] domain must differ from the group chat service's")
    for name in ("max_file_size", "slot_ttl", "max_open_slots"):
        if getattr(upload, name) <= 0:
            raise ConfigError(f"[upload] {name} must be positive")
    if upload.quota_per_user < 0 or upload.retention_days < 0:
        raise ConfigError("[upload] quota_per_user and retention_days must not be negative")
    if 0 < upload.quota_per_user < upload.max_file_size:
        raise ConfigError("[upload] quota_per_user (when set) must be at least max_file_size")
    if upload.fetch_timeout <= 0 or upload.retention_check_interval <= 0:
        raise ConfigError("[upload] fetch_timeout and retention_check_interval must be positive")
    for pattern in upload.allowed_content_types:
        kind, slash, sub = str(pattern).partition("/")
        if not (kind and slash and sub) or any(c.isspace() or c in ";," for c in pattern):
            raise ConfigError(
                f"[upload] allowed_content_types: {pattern!r} is not type/subtype or type/*"
            )
    if upload.internal_url and not upload.internal_url.startswith(("http://", "https://")):
        raise ConfigError("[upload] internal_url must start with http:// or https://")
    if upload.internal_ca and not Path(upload.internal_ca).is_file():
        raise ConfigError(f"[upload] internal_ca {upload.internal_ca} is not a readable file")
    if upload.enabled and not (config.listen.https or config.http.public_url):
        raise ConfigError("[upload] needs [listen] https or [http] public_url for its URLs")


def _check_bosh(config: Config) -> None:
    bosh = config.bosh
    _positive(
        bosh,
        "bosh",
        "max_wait",
        "inactivity",
        "max_sessions",
        "max_sessions_per_address",
        "max_pending",
    )
    if bosh.max_hold < 0 or bosh.polling < 0:
        raise ConfigError("[bosh] max_hold and polling must not be negative")
    if bosh.inactivity <= bosh.polling:
        # A polling client waits `polling` between requests: it must not time out meanwhile.
        raise ConfigError("[bosh] needs polling < inactivity")


def _check_pep(config: Config) -> None:
    pep = config.pep
    for name in ("max_nodes", "max_items", "max_item_bytes", "publish_burst"):
        if getattr(pep, name) <= 0:
            raise ConfigError(f"[pep] {name} must be positive")
    if pep.publish_per_second <= 0:
        raise ConfigError("[pep] publish_per_second must be positive")


def _check_external_services(config: Config) -> None:
    for i, svc in enumerate(config.external_services.services):
        where = f"[external_services] services[{i}]"
        if not isinstance(svc, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = set(svc) - {"type", "host", "port", "transport", "secret", "secret_file", "name"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        if svc.get("type") not in ("stun", "stuns", "turn", "turns"):
            raise ConfigError(f"{where}: type must be stun, stuns, turn or turns")
        if not svc.get("host") or not isinstance(svc.get("port", 0), int):
            raise ConfigError(f"{where}: needs a host and a numeric port")
        if svc.get("transport") not in (None, "udp", "tcp"):
            raise ConfigError(f"{where}: transport must be udp or tcp")
        if svc.get("secret_file"):
            try:
                Path(svc["secret_file"]).read_text()
            except OSError as exc:
                raise ConfigError(
                    f"{where}: secret_file {svc['secret_file']} cannot be read ({exc.strerror})"
                ) from None
    if config.external_services.credential_ttl <= 0:
        raise ConfigError("[external_services] credential_ttl must be positive")


def _components(config: Config, raw: Any, base: Path | None) -> tuple[ComponentConfig, ...]:
    """The ``[components."<domain>"]`` tables: each a bare domain of its own with one secret."""
    from xes.jid import JID, InvalidJID

    if not isinstance(raw, dict):
        raise ConfigError("[components] must be a table of components keyed by their domain")
    taken = {h.domain: "a hosted domain" for h in config.virtual_hosts}
    taken.update({h.muc_domain: "a group chat domain" for h in config.virtual_hosts})
    taken[config.domain] = "the server's domain"
    taken[config.muc_domain] = "[muc] domain"
    taken.setdefault(config.upload_domain, "[upload] domain")
    out = []
    for domain, table in raw.items():
        where = f'[components."{domain}"]'
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table with secret_file (or secret)")
        unknown = set(table) - {"secret", "secret_file"}
        if unknown:
            raise ConfigError(f"unknown key(s) in {where}: {', '.join(sorted(unknown))}")
        try:
            parsed = JID.parse(domain)
        except InvalidJID as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if parsed.local or parsed.resource or parsed.domain != domain:
            raise ConfigError(f"{where}: the key must be a bare domain, written normalised")
        if domain in taken:
            raise ConfigError(f"{where}: the domain is {taken[domain]}; choose another one")
        secret, secret_file = table.get("secret"), table.get("secret_file")
        if bool(secret) == bool(secret_file):
            raise ConfigError(f"{where} needs exactly one of secret_file or secret")
        if secret_file:
            path = Path(str(secret_file)).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
            secret_file = str(path)
        out.append(ComponentConfig(domain, str(secret) if secret else None, secret_file))
    return tuple(out)


def _check_component_listener(config: Config) -> None:
    """XEP-0114 is plain TCP: only on loopback, unless TLS or plaintext is chosen explicitly."""
    import ipaddress

    addr = config.component_listen
    if not addr or config.listen.component_tls or config.components_policy.allow_plaintext:
        return
    host = addr.rpartition(":")[0].strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConfigError(
            f"[listen] component {addr} is not a loopback address and XEP-0114 is plain TCP: "
            "set [listen] component_tls = true (or [components_policy] allow_plaintext = true)"
        )


def _check_s2s(config: Config) -> None:
    s2s = config.s2s
    if s2s is None:
        return
    if s2s.authentication not in S2S_AUTHENTICATION:
        raise ConfigError(f"[s2s] authentication must be one of {', '.join(S2S_AUTHENTICATION)}")
    if not isinstance(s2s.hosts, dict):
        raise ConfigError('[s2s] hosts must be a table: { "other.example" = "host:port" }')
    for domain, addr in s2s.hosts.items():
        where = f"[s2s] hosts.{domain}"
        if config.is_hosted(domain):
            raise ConfigError(f"{where}: {domain} is hosted here")
        target = str(addr).removeprefix("tls:")
        host, sep, port = target.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"{where} must be host:port (or tls:host:port), not {addr!r}")
    if s2s.connect_timeout <= 0:
        raise ConfigError("[s2s] connect_timeout must be positive")


def load_config(path: Path | str) -> Config:
    """Read and validate ``path``. Relative ``data_dir`` is taken relative to the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parse_config(raw, base=path.parent.resolve(), source=path.resolve())


def parse_config(
    raw: dict[str, Any], base: Path | None = None, source: Path | None = None
) -> Config:
    top = {k: v for k, v in raw.items() if k not in _SECTIONS and k != "components"}
    unknown = set(top) - {"domain", "data_dir", "hosts", "host"}
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    config = Config(source=source)
    if "domain" in top:
        config = replace(config, domain=_bare_domain(top["domain"], "domain"))
    if "hosts" in top:
        names = _host_names(top["hosts"])
        if "domain" in top and config.domain not in names:
            raise ConfigError(
                f"domain {config.domain!r} is not in hosts {list(names)}: list it there "
                "(it is the primary host) or leave domain out (then the first host is)"
            )
        if "domain" not in top:
            config = replace(config, domain=names[0])
        config = replace(config, hosts=tuple(HostConfig(n) for n in names))
    if "data_dir" in top:
        data_dir = Path(str(top["data_dir"])).expanduser()
        if not data_dir.is_absolute() and base is not None:
            data_dir = base / data_dir
        config = replace(config, data_dir=data_dir)
    for name, cls in _SECTIONS.items():
        if name in raw:
            if not isinstance(raw[name], dict):
                raise ConfigError(f"[{name}] must be a table")
            config = replace(config, **{name: _section(cls, raw[name], name)})
    if config.upload.dir and base is not None and not Path(config.upload.dir).is_absolute():
        upload = replace(config.upload, dir=str(base / Path(config.upload.dir).expanduser()))
        config = replace(config, upload=upload)
    if config.archive.default not in PREF_DEFAULTS:
        raise ConfigError("[archive] default must be always, never or roster")
    if not 0 < config.archive.page_size <= config.archive.max_page_size:
        raise ConfigError("[archive] needs 0 < page_size <= max_page_size")
    if not 0 < config.inbox.page_size <= config.inbox.max_page_size:
        raise ConfigError("[inbox] needs 0 < page_size <= max_page_size")
    _positive(config.audit, "audit", "checkpoint_every", "checkpoint_interval")
    if config.audit.key_file and base is not None and not Path(config.audit.key_file).is_absolute():
        audit = replace(config.audit, key_file=str(base / Path(config.audit.key_file).expanduser()))
        config = replace(config, audit=audit)
    if config.push.timeout <= 0 or config.push.max_attempts < 1:
        raise ConfigError("[push] needs timeout > 0 and max_attempts >= 1")
    if "hosts" in top or "host" in top:
        config = replace(config, hosts=_host_tables(config, top.get("host", {}), base))
    _check_retention(config)
    _check_http(config)
    _check_bosh(config)
    _check_muc(config)
    _check_upload(config)
    _check_pep(config)
    _check_external_services(config)
    config = replace(config, components=_components(config, raw.get("components", {}), base))
    _check_component_listener(config)
    _check_s2s(config)
    _positive(config.components_policy, "components_policy", "max_failures", "failure_window")
    if not 0 < config.csi.max_held < 10 * config.stream_management.max_unacked:
        # More held than that would look like a client that never acknowledges (XEP-0198).
        raise ConfigError("[csi] needs 0 < max_held < 10 * [stream_management] max_unacked")
    if config.registration.per_address_per_hour < 0 or config.registration.min_password_length < 1:
        raise ConfigError(
            "[registration] needs per_address_per_hour >= 0 and min_password_length >= 1"
        )
    if config.cluster.peers and not config.cluster_secret:
        raise ConfigError("[cluster] peers require a secret (or secret_file)")
    entries = config.cluster.compaction_entries
    if (entries is not None and entries < 2) or config.cluster.compaction_interval <= 0:
        raise ConfigError("[cluster] needs compaction_entries >= 2, compaction_interval > 0")
    if config.cluster.node_down_after <= 0:
        raise ConfigError("[cluster] node_down_after must be positive")
    if not 0 < config.cluster.commit_timeout < config.cluster.node_down_after:
        # A cut-off node drops its clients after node_down_after: their pending stanzas must
        # have had their error replies by then.
        raise ConfigError("[cluster] needs 0 < commit_timeout < node_down_after")
    if not 0 < config.cluster.election_timeout_min < config.cluster.election_timeout_max:
        raise ConfigError("[cluster] needs 0 < election_timeout_min < election_timeout_max")
    return config
