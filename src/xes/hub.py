"""The node's runtime context shared by stream handlers: store reads, the log, local sessions.

The hub holds no authoritative state: the registry of local sessions is a map of open
connections (sockets), which by nature live on one node. Everything a second node must know is in
the event log and the projections.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import anyio
import lmdb

from xes.config import Config
from xes.eventlog.client import LogClient, LogUnavailable
from xes.events.gate import Gate
from xes.jid import JID
from xes.stats import NodeStats
from xes.store.env import Store
from xes.xml import Element, serialize

if TYPE_CHECKING:
    from xes.features.session_end import PendingEnd


class LocalSession(Protocol):
    """A bound client stream on this node, as features see it."""

    session_id: str
    jid: JID
    full: str
    bare: str
    available: bool
    """The session sent initial presence and has not gone unavailable (RFC 6121 §4.2)."""
    interested: bool
    """The session requested the roster, so it gets roster pushes (RFC 6121 §2.1.6)."""
    priority: int
    """Priority of its last available presence (RFC 6121 §4.7.2.3)."""
    flushed_upto: int
    """Highest offline-store ``seq`` written to this connection (so none is sent twice)."""

    sm_active: bool
    inactive: bool
    """XEP-0352: the client said it is inactive (writes are classified, some held)."""
    epoch: int
    """Resumption epoch of a managed session (a resumed connection has a higher one)."""
    """Stream management is on: every stanza to the client is a row of its outbox (ADR 0008)."""

    def sm_pull(self) -> None:
        """Write the session's outbox rows not yet written (stream management only)."""

    def sm_committed(self, event: object) -> None:
        """Delivery reached this session's ``sm.enabled`` or ``sm.resumed``."""

    def offline_stored(self) -> None:
        """An offline message for this user was committed: flush it if we are available."""

    def send_bytes(self, data: bytes) -> None:
        """Queue serialized stanza bytes; never blocks (a slow client is disconnected)."""

    def close(self, condition: str | None, text: str | None = None) -> None:
        """Close the stream, with a stream error when ``condition`` is set."""


class ComponentLink(Protocol):
    """An external component's connection on this node (XEP-0114), as features see it."""

    domain: str
    """The component's name."""
    conn: str
    """Connection id recorded in ``component.connected`` (ADR 0018)."""

    def send_bytes(self, data: bytes) -> None:
        """Queue serialized stanza bytes; never blocks (a slow component is disconnected)."""

    def close(self, condition: str | None, text: str | None = None) -> None:
        """Close the stream, with a stream error when ``condition`` is set."""


class S2SLinks(Protocol):
    """This node's server-to-server links (ADR 0025), as delivery and features see them."""

    def send(self, local: str, remote: str, data: bytes) -> None:
        """Queue a stanza (``jabber:client`` bytes) from ``local`` to ``remote``, opening the
        link if needed; never blocks. Stanzas a link cannot deliver bounce to their senders."""


@dataclass(slots=True)
class ServerRequest:
    to: str
    """Full JID the request went to: only that client may answer it."""
    deadline: float
    on_answer: Callable[[Element], Awaitable[None]]


@dataclass
class Hub:
    config: Config
    node: str
    boot: str
    store: Store
    log: LogClient
    on_self_down: Callable[[], None] | None = None
    """Called by delivery when the cluster recorded this boot of the node as down."""
    on_isolated: Callable[[], None] | None = None
    """Called by the cluster watch when this node has had no majority for ``node_down_after``."""
    sessions: dict[str, LocalSession] = field(default_factory=dict)
    by_jid: dict[str, LocalSession] = field(default_factory=dict)
    resuming: dict[str, LocalSession] = field(default_factory=dict)
    """Connections waiting for their ``sm.resumed`` to be delivered, by session id."""
    ending: set[str] = field(default_factory=set)
    """Sessions whose closing connection is recording their end right now."""
    pending_ends: dict[str, PendingEnd] = field(default_factory=dict)
    """Session ends a closed connection could not record, for the sweep to record
    (:mod:`xes.session_sweep`)."""
    disk_low: bool = False
    """``data_dir`` is below ``[limits] min_free_disk_mb``: client writes are refused."""
    fast_key: bytes = b""
    """What FAST tokens are derived from (XEP-0484, ADR 0015): the same on every node."""
    upload_key: bytes = b""
    """What upload PUT tokens and the nodes' proofs to each other are made with (ADR 0017)."""
    started: float = field(default_factory=time.time)
    """When this node's process started serving (XEP-0012 server uptime)."""
    farewells: dict[str, bytes] = field(default_factory=dict)
    """The last stanza a session gets before delivery closes it for an event it asked for
    (the result of its own account removal, XEP-0077 §3.2), by session id."""
    requests: dict[str, ServerRequest] = field(default_factory=dict)
    """iq requests the server sent to local clients (e.g. XEP-0115 disco#info) and
    components, by id."""
    components: dict[str, ComponentLink] = field(default_factory=dict)
    """Component connections this node holds, by component domain (ADR 0018)."""
    s2s: S2SLinks | None = None
    """Outgoing server-to-server links, when ``[s2s]`` is configured (ADR 0025)."""
    stats: NodeStats = field(default_factory=NodeStats)
    """Counters for ``/metrics`` (not state: they start at zero with the process)."""
    gates: Callable[[], Gate] = Gate.unknown
    """The feature gate's current state (ADR 0022): :meth:`xes.gate_watch.GateView.gate` once
    the node runs; closed (baseline only) before."""

    @property
    def domain(self) -> str:
        """The primary hosted domain (the server's own address for defaults)."""
        return self.config.domain

    def is_local(self, domain: str) -> bool:
        """Is ``domain`` hosted here (ADR 0023)? A stanza to it is a local delivery; to any
        other domain it is for server-to-server (:mod:`xes.features.s2s`, ADR 0025)."""
        return self.config.is_hosted(domain)

    @property
    def gate(self) -> Gate:
        """What every cluster member can read now (cheap: a cached view)."""
        return self.gates()

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        with self.store.env.begin(buffers=False) as txn:
            yield txn

    def register(self, session: LocalSession) -> None:
        old = self.by_jid.get(session.full)
        if old is not None and old is not session:
            old.close("conflict", "replaced by a new connection")
        self.sessions[session.session_id] = session
        self.by_jid[session.full] = session

    def unregister(self, session: LocalSession) -> None:
        if self.sessions.get(session.session_id) is session:
            del self.sessions[session.session_id]
        if self.by_jid.get(session.full) is session:
            del self.by_jid[session.full]

    def request(
        self,
        session: LocalSession,
        iq: Element,
        on_answer: Callable[[Element], Awaitable[None]],
        timeout: float = 30.0,
    ) -> None:
        """Send ``iq`` (a get or set from the server to ``session``) and call ``on_answer`` with
        the client's result or error. Unanswered requests are forgotten after ``timeout``."""
        iq_id = self.track(session.full, iq, on_answer, timeout)
        session.send_bytes(serialize(iq.with_attrs(id=iq_id, to=session.full)))

    def track(
        self,
        to: str,
        iq: Element,
        on_answer: Callable[[Element], Awaitable[None]],
        timeout: float,
    ) -> str:
        """Remember a request the server sends to ``to`` (only it may answer); its id."""
        now = time.monotonic()
        for key in [k for k, r in self.requests.items() if r.deadline < now]:
            del self.requests[key]
        iq_id = iq.get("id") or secrets.token_urlsafe(9)
        self.requests[iq_id] = ServerRequest(to, now + timeout, on_answer)
        return iq_id

    def answer_for(self, session: LocalSession, iq: Element) -> ServerRequest | None:
        """The pending request ``iq`` answers, if it is from the client it was sent to."""
        request = self.requests.get(iq.get("id") or "")
        if request is None or request.to != session.full:
            return None
        del self.requests[iq.get("id") or ""]
        return request

    def local_of_bare(self, bare: str) -> list[LocalSession]:
        return [s for s in self.sessions.values() if s.bare == bare]


async def run_while_leader(
    hub: Hub,
    period: float,
    duty: Callable[[Hub, int], Awaitable[object]],
    wanted: Callable[[], bool] = lambda: True,
) -> None:
    """Every ``period`` seconds, ``duty(hub, now_ms)`` if this node leads the cluster.

    Duties that turn configuration into events (retention) run on the leader alone, so two
    nodes never propose the same deletions; any node may run this loop. ``wanted`` skips a
    round without asking the log (nothing configured)."""
    while True:
        await anyio.sleep(period)
        if not wanted():
            continue
        try:
            status = await hub.log.status()
        except LogUnavailable:
            continue
        if status.get("state") == "leader":
            await duty(hub, int(time.time() * 1000))
