"""Client connections on anyio: runs :class:`~xes.session.c2s.C2SProtocol` over a socket.

Before binding, replies go straight to the socket from the reading task (STARTTLS must swap the
stream under it). After binding, what the client receives is written at once when nothing waits
ahead of it (ADR 0012); otherwise it goes into one bounded queue drained by a writer task, so
delivery never blocks on a slow client: a client whose queue is full is disconnected instead of
stalling the node. The writer task exists only while the queue holds something: an idle
connection is one task (its reader) and no writer, queue or event objects (issue 19).
Authentication and idle time are bounded by ``limits.auth_timeout`` and ``limits.idle_timeout``;
inbound stanzas are rate limited with a token bucket that throttles reading (backpressure rather
than loss).
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import ssl
import time
from typing import Any

import anyio
import structlog
from anyio.abc import ByteStream
from anyio.streams.tls import TLSAttribute, TLSStream

from xes import router
from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events.catalog import (
    CarbonsToggled,
    FastTokenIssued,
    FastTokenRevoked,
    PushDeviceState,
    SessionBound,
    SmAcked,
    SmEnabled,
    SmResumed,
    SmRosterRequested,
    SmStanzasQueued,
)
from xes.features import presence, registration, session_end, stream_mgmt
from xes.hub import Hub
from xes.jid import JID, bare_of, normalize_localpart
from xes.projections import account_data
from xes.projections import accounts as accounts_view
from xes.projections import muc as muc_view
from xes.projections import push as push_view
from xes.projections import sessions as sessions_view
from xes.projections import stream_mgmt as sm_view
from xes.session import sasl2
from xes.session import stream_management as sm
from xes.session.c2s import (
    CSI,
    Action,
    Authenticated,
    AuthFailed,
    BindRequested,
    C2SPolicy,
    C2SProtocol,
    ClientState,
    Close,
    FastCredential,
    RegistrationRequested,
    Send,
    StanzaReceived,
    StartTls,
)
from xes.session.sasl import LoginLimiter, channel_binding_data
from xes.session.stream_management import SmAck, SmEnable, SmRequest, SmResume
from xes.stanza import csi
from xes.stanza.delay import stamp, with_delay
from xes.stats import stanza_kind
from xes.tlsutil import HostContexts
from xes.transport.direct import DirectWriter, buffered_plaintext, direct_writer
from xes.xml import E, ns, parse_fragment

log = structlog.get_logger("xes.c2s")

READ_SIZE = 65536
MAX_GROUPCHAT_RUN = 32
"""Most groupchat messages of one read proposed together (well inside a log command)."""
TLS_HANDSHAKE_TIMEOUT = 15.0
CLOSE_TIMEOUT = 5.0
RESUME_ATTEMPTS = 3
"""Resume proposals made for one ``<resume/>`` when the epoch moved under a stale view."""
BIND_ATTEMPTS = 3
"""Bind proposals made when the session a JID replaces changed under the read (ended by its
own client meanwhile, say)."""
IDLE_SWEEP_SECONDS = 2.0
"""A bound stream with no input over one sweep interval lets its parser go (XmlStream.release)."""
WRITE_BATCH = 64
"""Most queued stanzas coalesced into one write (one TLS record, one syscall)."""
LINGER_SECONDS = 1.0
LINGER_BYTES = 4 * 1024 * 1024
DETACH_REASONS = frozenset(
    {"disconnected", "connection-timeout", "system-shutdown", "reset", "log-unavailable"}
)
"""Why a connection ended without the session ending: a resumable session waits for its client
(XEP-0198 §5). A client's own ``</stream:stream>`` or a policy violation ends it."""


_POLICIES: dict[tuple[int, str], tuple[Any, C2SPolicy]] = {}


def client_policy(config: Any, transport: str) -> C2SPolicy:
    """The stream policy for ``transport`` under ``config``: one object shared by every
    connection made under that configuration (a reload makes a new configuration object)."""
    key = (id(config), transport)
    hit = _POLICIES.get(key)
    if hit is not None and hit[0] is config:
        return hit[1]
    policy = C2SPolicy(
        domain=config.domain,
        tls_required=config.tls.required,
        tls_available=transport == "tcp",
        mechanisms=config.auth.mechanisms,
        limits=config.xml_limits,
        extra_features=(
            *((sm.feature(),) if config.stream_management.enabled else ()),
            *((E("{%s}csi" % CSI),) if config.csi.enabled else ()),
        ),
        registration=any(config.registration_on(h) for h in config.host_names),
        hosts=frozenset(config.host_names),
        registration_hosts=frozenset(h for h in config.host_names if config.registration_on(h)),
        sasl2=config.auth.sasl2,
        fast=config.auth.sasl2 and config.auth.fast,
        bind2_inline=(
            ns.CARBONS,
            *((ns.SM,) if config.stream_management.enabled else ()),
            *((CSI,) if config.csi.enabled else ()),
        ),
    )
    if len(_POLICIES) >= 16:
        _POLICIES.clear()  # old configurations (reloads): the cache holds their objects
    _POLICIES[key] = (config, policy)
    return policy


class ClientConnection:
    """One client stream from accept to close; after bind it is a :class:`~xes.hub.LocalSession`."""

    # Thousands of these live at once: slots instead of a per-instance dict (about 1.5 KiB
    # less each; a class with this many attributes gets no key-sharing dict). A weak
    # reference is how features keep per-session state (pep.interest, throttle).
    __slots__ = (
        "__weakref__",
        "_cancel",
        "_channel_binding",
        "_close_reason",
        "_csi_checked_upto",
        "_csi_held",
        "_csi_seq",
        "_csi_urgent_upto",
        "_direct",
        "_dispatching",
        "_flush_again",
        "_flushing",
        "_interest_recorded",
        "_locals",
        "_outq",
        "_push_inactive",
        "_push_lock",
        "_reads",
        "_reads_swept",
        "_refilled",
        "_sm_acked",
        "_sm_asked",
        "_sm_held",
        "_sm_inline",
        "_sm_ready",
        "_sm_ready_set",
        "_sm_recorded",
        "_sm_requested",
        "_sm_resend_upto",
        "_sm_sent",
        "_sm_wake",
        "_stats",
        "_tg",
        "_tokens",
        "_writer_running",
        "_writes_ended",
        "_writes_ended_event",
        "_writes_from_queue",
        "_writing",
        "available",
        "bare",
        "boot",
        "bound",
        "closing",
        "direct_tls",
        "epoch",
        "flushed_upto",
        "full",
        "hub",
        "inactive",
        "interested",
        "jid",
        "limiter",
        "peer",
        "priority",
        "protocol",
        "resumable",
        "secured",
        "session_id",
        "sm_active",
        "stream",
        "tls",
        "transport",
    )

    def __init__(
        self,
        hub: Hub,
        stream: ByteStream,
        tls: HostContexts,
        limiter: LoginLimiter,
        peer: str,
        direct_tls: bool,
        *,
        transport: str = "tcp",
        secured: bool = False,
        channel_binding: tuple[str, bytes] | None = None,
    ) -> None:
        self.hub = hub
        self.stream: ByteStream = stream
        self.tls = tls
        """The hosts' TLS contexts: STARTTLS takes the stream's host's, direct TLS the one SNI
        names (ADR 0023)."""
        self.limiter = limiter
        self.peer = peer
        self.direct_tls = direct_tls
        self.transport = transport
        """``tcp``, ``websocket`` or ``bosh``: which listener the stream came through."""
        self.secured = secured
        """The transport under this stream is already encrypted (HTTPS, or a trusted proxy's
        TLS): no STARTTLS; ``channel_binding`` is that TLS connection's, if we ended it."""
        self._channel_binding = channel_binding
        self._stats = hub.stats
        self._stats.connections_opened[transport] += 1
        config = hub.config
        self.protocol = C2SProtocol(
            client_policy(config, transport),
            credentials=self._credentials,
            normalize_username=normalize_localpart,
            auth_allowed=self._auth_allowed,
            fast_token=self._fast_token,
        )
        self.session_id = ""
        self.jid: JID = JID(None, config.domain, None)
        self.full = ""
        self.bare = ""
        self.available = False
        self.interested = False
        self.priority = 0
        self.flushed_upto = 0
        self._flushing = False
        self._flush_again = False
        self.bound = False
        self.boot = hub.boot
        """The node boot this session was bound under (a node starts a new boot on rejoining)."""
        self.closing = False
        self._outq: list[bytes | None] = []
        """Bound for the socket, oldest first, at most ``limits.outbound_queue``; ``None`` ends
        the writes (what is before it still goes out)."""
        self._writes_from_queue = False
        """Bound (or resumed): queued bytes are written by a writer task started on demand."""
        self._writer_running = False
        self._writes_ended = False
        """The writer met the end of the queue or a broken socket: nothing more is written."""
        self._writes_ended_event: anyio.Event | None = None
        self._reads = 0
        self._reads_swept = -1
        self._tokens = float(config.limits.stanza_burst)
        self._refilled = time.monotonic()
        self._close_reason = "closed"
        self._cancel = anyio.CancelScope()
        # XEP-0198 (ADR 0008): counters are outbox row numbers, never wrapped here.
        self.sm_active = False
        self.resumable = False
        self.epoch = 0
        self._sm_sent = 0
        self._sm_acked = 0
        self._sm_recorded = 0
        self._sm_requested = 0.0
        self._sm_asked = False
        self._sm_resend_upto = 0
        self._sm_held = False
        self.inactive = False
        """XEP-0352: the client said it is inactive; what can wait is held (ADR 0014)."""
        self._push_inactive = False
        """The inactivity last recorded for push (``[push] when_inactive``)."""
        self._push_lock: anyio.Lock | None = None
        self._sm_inline = False
        self._csi_held: dict[object, bytes] = {}
        self._csi_seq = 0
        self._csi_urgent_upto = 0
        """Highest outbox row known to be urgent while inactive (stream management)."""
        self._csi_checked_upto = 0
        """Outbox rows beyond the acknowledgement window wait for the next ``<a/>``."""
        self._sm_ready: anyio.Event | None = None
        """Made by the first waiter (events cost a deque each; most connections never wait)."""
        self._sm_ready_set = False
        self._sm_wake: anyio.Event | None = None
        self._locals: list[bytes] = []
        self._interest_recorded = False
        self._dispatching = False
        self._direct: DirectWriter | None = None
        """Writes to the socket from the caller when nothing is queued (see transport.direct)."""
        self._writing = False
        """The writer task is inside a write (the direct path must not overtake it)."""

    # -- LocalSession ------------------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        if self.sm_active:
            # A managed session's stanzas are outbox rows: the server's own answers are queued
            # through the log, in order with everything else (ADR 0008).
            self._locals.append(data)
            if not self._dispatching:
                self._tg.start_soon(self._queue_locals)
            return
        if self.inactive:
            urgent, fold = csi.classify(data)
            if not urgent:
                self._hold(data, fold)
                return
            self._release_held()
        self._enqueue(data)

    def _hold(self, data: bytes, fold: bytes | None) -> None:
        """Keep ``data`` back while inactive; a later copy with the same key replaces it."""
        key: object
        if fold is None:
            self._csi_seq += 1
            key = self._csi_seq
        else:
            key = fold
            self._csi_held.pop(key, None)  # the latest copy, at its own place
        self._csi_held[key] = data
        if len(self._csi_held) > self.hub.config.csi.max_held:
            self._release_held()

    def _release_held(self) -> None:
        held, self._csi_held = self._csi_held, {}
        for data in held.values():
            self._enqueue(data)

    def client_state(self, active: bool) -> None:
        """XEP-0352 ``<active/>`` / ``<inactive/>``: going active sends everything held."""
        if not self.hub.config.csi.enabled or active != self.inactive:
            return
        self.inactive = not active
        if active:
            self._release_held()
            if self.sm_active:
                self.sm_pull()
        if self.hub.config.push.when_inactive and self.hub.config.push.enabled:
            self._tg.start_soon(self._record_device_state)

    async def _record_device_state(self) -> None:
        """With ``[push] when_inactive``: a device with a push registration that goes inactive
        is pushed like an offline one (ADR 0020); record the latest state, once per change."""
        if self._push_lock is None:
            self._push_lock = anyio.Lock()
        async with self._push_lock:
            want = self.inactive
            if want == self._push_inactive:
                return
            resource = self.full.partition("/")[2]
            with self.hub.read() as txn:
                regs = push_view.registrations(self.hub.store, txn, self.bare)
            if not any(r.resource == resource for r in regs):
                return
            try:
                await self.hub.log.append(
                    PushDeviceState(self.bare, resource, self.session_id, want)
                )
            except (LogUnavailable, ProposalRejected):
                return
            self._push_inactive = want

    def _enqueue(self, data: bytes) -> None:
        if self.closing:
            return
        self._stats.stanzas_out[stanza_kind(data)] += 1
        if self._direct is not None and not self._writing and not self._outq:
            # Nothing ahead of it: write now instead of waking the writer (transport.direct).
            try:
                if self._direct.write(data):
                    return
            except (OSError, RuntimeError):
                pass  # the writer task meets the same broken transport and ends the stream
        if self._writes_ended:
            return
        if not self._queue(data):
            log.warning("client_too_slow", session=self.session_id, jid=self.full)
            self.close("policy-violation", "too slow: outbound queue full")

    def _queue(self, data: bytes | None) -> bool:
        """Queue ``data`` for the writer task (started if it is not running); False when full."""
        if len(self._outq) >= self.hub.config.limits.outbound_queue:
            return False
        self._outq.append(data)
        if self._writes_from_queue and not self._writer_running and not self._writes_ended:
            self._writer_running = True
            self._tg.start_soon(self._writer)
        return True

    def _start_writes(self) -> None:
        """Bound or resumed: bytes go to the socket from here on (directly or queued)."""
        self._direct = direct_writer(self.stream)
        self._writes_from_queue = True
        if self._outq and not self._writer_running:
            self._writer_running = True
            self._tg.start_soon(self._writer)

    def _ready(self) -> None:
        """Stream management is on (or a resume was settled): wake ``_enable``/``_resume``."""
        self._sm_ready_set = True
        if self._sm_ready is not None:
            self._sm_ready.set()

    async def _wait_ready(self) -> None:
        if self._sm_ready_set:
            return
        if self._sm_ready is None:
            self._sm_ready = anyio.Event()
        await self._sm_ready.wait()

    def _wake_keeper(self) -> None:
        """Wake ``_sm_keeper``; a wake-up while it is busy is kept for its next wait."""
        if self._sm_wake is None:
            self._sm_wake = anyio.Event()
        self._sm_wake.set()

    def release_if_idle(self) -> None:
        """Called every ``IDLE_SWEEP_SECONDS``: a bound stream that read nothing since the last
        call lets its parser go; the next read makes it again (XmlStream.release)."""
        if self._reads == self._reads_swept:
            self.protocol.idle()
        self._reads_swept = self._reads

    def offline_stored(self) -> None:
        if not self.available or self.closing:
            return
        self._flush_again = True  # a flush in progress may have read before this message
        if not self._flushing:
            self._flushing = True
            self._tg.start_soon(self._flush_offline)

    async def _flush_offline(self) -> None:
        try:
            while self._flush_again:
                self._flush_again = False
                await presence.flush_offline(self.hub, self)
        except (LogUnavailable, ProposalRejected) as exc:
            log.warning("offline_flush_not_recorded", error=str(exc), session=self.session_id)
        finally:
            self._flushing = False

    # -- stream management (XEP-0198, ADR 0008) ----------------------------------------------

    def sm_pull(self) -> None:
        if not self.sm_active or self.closing:
            return
        cfg = self.hub.config.stream_management
        with self.hub.read() as txn:
            rows = sm_view.rows(self.hub.store, txn, self.session_id, self._sm_sent)
        # Rows go out at most a window ahead of the client's acknowledgements, the rest when it
        # acknowledges: a session resumed after a long absence in a busy room may find
        # thousands waiting, more than its outbound queue holds.
        window = max(1, min(cfg.max_unacked, self.hub.config.limits.outbound_queue) // 2)
        if self.inactive and rows and self._csi_may_wait(rows):
            return  # the rows stay in the outbox, numbered, until something urgent or active
        pending = rows[-1].n - self._sm_acked if rows else 0
        held = [row for row in rows if row.n > self._sm_acked + window]
        rows = rows[: len(rows) - len(held)]
        was_idle = self._sm_sent == self._sm_acked
        for row in rows:
            data = row.xml.encode()
            if row.n <= self._sm_resend_upto and row.kind == "message":
                data = with_delay(row.xml, row.at, self.jid.domain, "Resent")
            self._enqueue(data)
            self._sm_sent = row.n
        self._sm_held = bool(held)
        unacked = self._sm_sent - self._sm_acked
        if pending > 10 * cfg.max_unacked:
            log.warning("client_not_acking", session=self.session_id, unacked=pending)
            self.close("policy-violation", "too many unacknowledged stanzas")
        elif (held or (rows and unacked >= cfg.ack_request_every)) and not self._sm_asked:
            self._request_ack()
        elif rows and was_idle:
            self._wake_keeper()  # the keeper asks later if no ack comes

    def _csi_may_wait(self, rows: list[Any]) -> bool:
        """While inactive, may these unsent outbox rows wait? Not if one is urgent (then all go,
        in order: their numbers stay those of the outbox) or too many are waiting."""
        for row in rows:
            if row.n > self._csi_checked_upto:
                self._csi_checked_upto = row.n
                if csi.classify(row.xml.encode())[0]:
                    self._csi_urgent_upto = row.n
        if self._csi_urgent_upto > self._sm_sent:
            return False
        return len(rows) <= self.hub.config.csi.max_held

    def _request_ack(self) -> None:
        self._sm_asked = True
        self._sm_requested = time.monotonic()
        self._enqueue(sm.request())

    def sm_committed(self, event: object) -> None:
        """Delivery reached our ``sm.enabled``/``sm.resumed``: from here on, rows only."""
        if isinstance(event, SmEnabled):
            if self.sm_active or self._sm_inline:
                return  # enabled inline with Bind2: announced inside <bound/> already
            # What client state indication held was written before the enable: it must go out
            # before <enabled/>, uncounted, as it would have without the hold.
            self._release_held()
            max_s = event.timeout if event.resume else None
            self._enqueue(sm.enabled(self.session_id if event.resume else None, max_s))
        elif isinstance(event, SmResumed):
            self.hub.resuming.pop(self.session_id, None)
            with self.hub.read() as txn:
                state = sm_view.state(self.hub.store, txn, self.session_id)
                view = sessions_view.get(self.hub.store, txn, self.session_id)
            if state is None or view is None or state.epoch != event.epoch:
                self._ready()
                return  # ended or resumed again before we got here: _resume fails it
            self.available, self.priority = view.available, view.priority
            self.interested = self._interest_recorded = state.interested
            self.bound = True
            self.hub.register(self)
            self._start_writes()
            resumed = sm.resumed(self.session_id, state.handled)
            self.protocol.resume_succeeded(self.jid, state.handled)
            # Resumed inside SASL2 (XEP-0198 inline): <resumed/> rides in <success/>.
            self._enqueue(self.protocol.sasl2_resumed(resumed) or resumed)
            self._sm_sent = self._sm_acked = self._sm_recorded = event.h
            self._sm_resend_upto = state.next
        self._sm_start()

    def _sm_start(self) -> None:
        if self.sm_active:
            return
        self.sm_active = True
        self._tg.start_soon(self._sm_keeper)
        self.sm_pull()
        self._ready()

    async def _sm_keeper(self) -> None:
        """Ask for acks when some are overdue; record acknowledged counts, coalesced."""
        cfg = self.hub.config.stream_management
        last_record = time.monotonic()
        while not self.closing:
            pending = self._sm_sent > self._sm_acked or self._sm_acked > self._sm_recorded
            # Idle sessions sleep until there is something to ask for or to record.
            wait = min(cfg.ack_record_interval, cfg.ack_request_after) if pending else None
            if self._sm_wake is None:
                self._sm_wake = anyio.Event()
            with anyio.move_on_after(wait):
                await self._sm_wake.wait()
            self._sm_wake = None  # a wake-up from here on makes (and sets) a fresh one
            now = time.monotonic()
            if self._sm_sent > self._sm_acked and now - self._sm_requested >= cfg.ack_request_after:
                self._request_ack()
            due = now - last_record >= cfg.ack_record_interval
            many = self._sm_acked - self._sm_recorded >= cfg.ack_record_every
            if self._sm_acked > self._sm_recorded and (due or many):
                acked = self._sm_acked
                try:
                    await self.hub.log.append(SmAcked(self.session_id, acked, self.epoch))
                    self._sm_recorded = max(self._sm_recorded, acked)
                except (LogUnavailable, ProposalRejected) as exc:
                    log.info("sm_ack_not_recorded", error=str(exc), session=self.session_id)
                last_record = time.monotonic()

    def _on_ack(self, action: SmAck) -> bool:
        h = sm.unwrap(action.h, self._sm_acked)
        if h > self._sm_sent:
            log.warning("sm_h_too_high", h=h, sent=self._sm_sent, session=self.session_id)
            return False
        self._sm_acked = h
        self._sm_asked = False
        if self._sm_held:
            self.sm_pull()  # the window moved: the rows held back can go
        if h - self._sm_recorded >= self.hub.config.stream_management.ack_record_every:
            self._wake_keeper()
        return True

    async def _queue_locals(self) -> None:
        if not self._locals:
            return
        stanzas = [data.decode() for data in self._locals]
        self._locals = []
        events: list[Any] = [SmStanzasQueued(self.session_id, self.epoch, stanzas)]
        if self.interested and not self._interest_recorded:
            # Asked for the roster (the answer is among these): pushes follow it in the outbox.
            events.insert(0, SmRosterRequested(self.session_id))
        try:
            await self.hub.log.append(*events)
            self._interest_recorded = self.interested
        except (LogUnavailable, ProposalRejected) as exc:
            # The answer cannot be placed in order: drop the connection (not the session), so
            # the client resumes and resends what the resumed count says was not handled.
            log.warning("sm_answer_not_queued", error=str(exc), session=self.session_id)
            self._abort("log-unavailable")

    def _detached_epoch(self, session: str, refused: ProposalRejected) -> int | None:
        """The epoch of ``session`` if a refused resume met a detach (held by no node)."""
        if not refused.reason.startswith("sm-conflict"):
            return None
        with self.hub.read() as txn:
            state = sm_view.state(self.hub.store, txn, session)
        if state is None or not state.resume or not state.deadline or state.epoch < self.epoch:
            return None
        return state.epoch

    def _abort(self, reason: str) -> None:
        self.closing = True
        self._close_reason = reason
        self._cancel.cancel()

    async def _enable(self, action: SmEnable) -> None:
        cfg = self.hub.config.stream_management
        timeout = min(action.max or cfg.resume_timeout, cfg.resume_timeout)
        self.resumable = action.resume
        event = SmEnabled(self.session_id, action.resume, timeout if action.resume else 0)
        events: list[Any] = [event]
        if self.interested:
            events.append(SmRosterRequested(self.session_id))
        try:
            await self.hub.log.append(*events)
            self._interest_recorded = self.interested
        except (LogUnavailable, ProposalRejected) as exc:
            log.warning("sm_enable_failed", error=str(exc))
            self.protocol.sm_enabled = False
            self.resumable = False
            self._enqueue(sm.failed("resource-constraint"))
            return
        with anyio.move_on_after(self.hub.config.cluster.commit_timeout):
            await self._wait_ready()

    async def _resume(self, action: SmResume) -> None:
        user = f"{self.protocol.username}@{self.protocol.domain}"
        with self.hub.read() as txn:
            state = sm_view.state(self.hub.store, txn, action.previd)
            view = sessions_view.get(self.hub.store, txn, action.previd)
            tomb = sm_view.ended(self.hub.store, txn, action.previd)
        if state is None or view is None or not state.resume or view.bare != user:
            handled = None
            if tomb is not None and bare_of(tomb["jid"]) == user:
                handled = tomb["handled"]  # §5: tells the client which stanzas were handled
            await self._execute(self.protocol.resume_failed("item-not-found", handled))
            return
        h = sm.unwrap(action.h, state.acked)
        if h > state.next:
            await self._execute(
                self.protocol.stream_error("undefined-condition", "handled count too high")
            )
            return
        self.session_id = action.previd
        self.jid = JID.parse(view.jid)
        self.full, self.bare = view.jid, view.bare
        self.boot = self.hub.boot
        self.epoch = state.epoch + 1
        self.resumable = True
        self.hub.resuming[self.session_id] = self
        try:
            for attempt in range(RESUME_ATTEMPTS):
                try:
                    await self.hub.log.append(
                        SmResumed(self.session_id, self.hub.node, self.boot, h, self.epoch)
                    )
                    break
                except ProposalRejected as exc:
                    # This node's view was behind the log: the epoch moved on because the session
                    # was detached (its node declared down, or its own connection's end), not
                    # because another connection resumed it. The refusal is applied here by
                    # now: re-read, and take the detached session over at its new epoch.
                    epoch = self._detached_epoch(action.previd, exc)
                    if epoch is None or attempt == RESUME_ATTEMPTS - 1:
                        raise
                    self.epoch, self.boot = epoch + 1, self.hub.boot
        except LogUnavailable as exc:
            if self.bound:
                # The outcome was unknown to the proposer, but the resume was committed and
                # delivered to us meanwhile (sm_committed bound this connection): resumed.
                # Resetting it here left a bound connection without a session id, whose end
                # then crashed the node (fault campaign, seed 7).
                log.info("sm_resume_outcome_late", error=str(exc), session=action.previd)
                structlog.contextvars.bind_contextvars(session=self.session_id, jid=self.full)
                log.info("session_resumed", peer=self.peer, h=h, epoch=self.epoch)
                return
            # No majority here: the session lives on, only this node cannot record its move.
            # <failed><item-not-found/> would tell the client it is gone (XEP-0198 §5), so it
            # would bind a new session and strand the old one with acknowledgements this node
            # could not record: re-routed at its deadline, they arrive twice. Drop the
            # connection instead; the client keeps its state and resumes again, elsewhere.
            self.hub.resuming.pop(self.session_id, None)
            log.info("sm_resume_deferred", error=str(exc), session=action.previd)
            self.session_id = ""
            self._abort("log-unavailable")
            return
        except ProposalRejected as exc:
            self.hub.resuming.pop(self.session_id, None)
            log.info("sm_resume_failed", error=str(exc), session=action.previd)
            self.session_id = ""
            await self._execute(self.protocol.resume_failed("item-not-found", None))
            return
        with anyio.move_on_after(self.hub.config.cluster.commit_timeout):
            await self._wait_ready()
        if not self.bound:
            await self._resume_not_delivered(action.previd)
            return
        structlog.contextvars.bind_contextvars(session=self.session_id, jid=self.full)
        log.info("session_resumed", peer=self.peer, h=h, epoch=self.epoch)

    async def _resume_not_delivered(self, session: str) -> None:
        """Our ``sm.resumed`` is applied here (``append`` waits for that) but its delivery did
        not reach this connection within ``commit_timeout``, or the session moved on first.

        Moved on (ended, or resumed again by another connection): ``item-not-found``. Still at
        our epoch, the session did move to this connection: ``item-not-found`` would make the
        client bind a new session and strand this one, held by this node with no connection,
        its outbox never delivered (finding 5 of docs/reliability.md). Instead the session is
        detached (held by no node, resumable anywhere until its deadline) and the connection
        dropped, as when the log is unavailable: the client keeps its state and resumes again.
        """
        self.hub.resuming.pop(session, None)  # a late delivery must not bind a dropped stream
        self.session_id = ""
        with self.hub.read() as txn:
            state = sm_view.state(self.hub.store, txn, session)
            view = sessions_view.get(self.hub.store, txn, session)
            ours = state is not None and view is not None and state.epoch == self.epoch
            events = (
                session_end.end_events(
                    self.hub, txn, [view], "resume_not_delivered", detach=True, epoch=self.epoch
                )
                if ours and view is not None
                else []
            )
        if not ours:
            await self._execute(self.protocol.resume_failed("item-not-found", None))
            return
        log.warning("sm_resume_not_delivered", session=session, epoch=self.epoch)
        if events:
            try:
                await self.hub.log.append(*events)
            except (LogUnavailable, ProposalRejected) as exc:
                # Resumed elsewhere meanwhile (refused by its epoch), or no majority: either
                # way the client's next resume settles it.
                log.info("sm_resume_not_delivered_detach", error=str(exc), session=session)
        self._abort("resume-not-delivered")

    def close(self, condition: str | None, text: str | None = None) -> None:
        if self.closing:
            return
        self._release_held()  # held by client state indication: still the client's
        self.closing = True
        self._close_reason = condition or "closed"
        tail = b""
        for action in self.protocol.stream_error(condition, text) if condition else []:
            if isinstance(action, Send):
                tail += action.data
        if not condition:
            tail = b"</stream:stream>"
        if not self._writes_ended:
            self._queue(tail)  # a full queue drops the tail and the end, as before
            self._queue(None)
        if not self.bound:
            self._cancel.cancel()

    # -- auth helpers --------------------------------------------------------------------------

    def _credentials(self, username: str) -> dict[str, Any] | None:
        with self.hub.read() as txn:
            return accounts_view.credentials(
                self.hub.store, txn, f"{username}@{self.protocol.domain}"
            )

    def _fast_token(self, username: str, agent: str) -> FastCredential | None:
        """The device's FAST token, derived again from its id (never stored, ADR 0015)."""
        with self.hub.read() as txn:
            row = account_data.fast_token(
                self.hub.store, txn, f"{username}@{self.protocol.domain}", agent
            )
        if row is None or not self.hub.fast_key:
            return None
        token = sasl2.token_value(self.hub.fast_key, row["id"])
        if not hmac.compare_digest(sasl2.token_hash(token), row["hash"]):
            return None  # derived with another key (a lone node that joined a cluster)
        expired = row["expires"] <= int(time.time() * 1000)
        return FastCredential(token, row["mechanism"], expired)

    def _auth_allowed(self, username: str) -> bool:
        return self.limiter.check(self._account(username), self.peer, time.monotonic())

    def _account(self, username: str) -> str:
        """The account a login names: its lockout is its own, not its namesake's on another
        hosted domain (ADR 0023)."""
        return f"{username}@{self.protocol.domain}"

    # -- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self._cancel:
                if self.direct_tls:
                    await self._start_tls()
                elif self.secured:
                    self.protocol.tls_started(self._channel_binding)
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    await self._read_loop()
                    if self.bound:
                        # Let the writer flush what is queued (e.g. our stream error) and stop.
                        if not self._writes_ended:
                            self._queue(None)
                        with anyio.move_on_after(CLOSE_TIMEOUT):
                            await self._wait_writes_ended()
                    tg.cancel_scope.cancel()
        except (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
            OSError,
            ssl.SSLError,
        ):
            pass
        except Exception as exc:
            log.error("connection_failed", error=repr(exc), session=self.session_id, exc_info=True)
            with contextlib.suppress(Exception):
                await self._raw_send(b"</stream:stream>")
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish()

    async def _read_loop(self) -> None:
        limits = self.hub.config.limits
        deadline = time.monotonic() + limits.auth_timeout
        while True:
            timeout = limits.idle_timeout if self.bound else deadline - time.monotonic()
            data = b""
            with anyio.move_on_after(max(timeout, 0)) as scope:
                try:
                    data = await self.stream.receive(READ_SIZE)
                    self._reads += 1
                    if self.bound:
                        data += buffered_plaintext(self.stream, READ_SIZE)
                except (
                    anyio.EndOfStream,
                    anyio.BrokenResourceError,
                    anyio.ClosedResourceError,
                    OSError,
                    ssl.SSLError,
                ):
                    self.closing = True
                    self._close_reason = (
                        self._close_reason if self._close_reason != "closed" else "disconnected"
                    )
                    return
            if not data and not scope.cancelled_caught:
                self.closing = True
                return
            if not data:
                if self.closing:
                    return
                condition = "connection-timeout"
                await self._execute(self.protocol.stream_error(condition, "timed out"))
                return
            if await self._execute(self.protocol.receive_data(data)):
                return

    async def _register(self, action: RegistrationRequested) -> None:
        try:
            jid = await registration.register(
                self.hub, action.username, action.password, self.peer, self.protocol.domain
            )
        except registration.RegistrationRefused as exc:
            log.info("registration_refused", condition=exc.condition, peer=self.peer)
            await self._execute(
                self.protocol.registration_done(action.iq_id, exc.condition, exc.text)
            )
        except (LogUnavailable, ProposalRejected):
            await self._execute(
                self.protocol.registration_done(action.iq_id, "resource-constraint", "try again")
            )
        else:
            log.info("registered", user=jid, peer=self.peer)
            await self._execute(self.protocol.registration_done(action.iq_id, None))

    async def _execute(self, actions: list[Action]) -> bool:
        """Carry out protocol actions; True when the stream is finished."""
        i = 0
        while i < len(actions):
            action = actions[i]
            i += 1
            if isinstance(action, Send):
                await self._out(action.data)
            elif isinstance(action, StanzaReceived):
                self._stats.stanzas_in[action.stanza.name] += 1
                run = self._groupchat_run(action, actions, i)
                i += len(run) - 1
                for _ in run:
                    await self._throttle()
                try:
                    if len(run) > 1:
                        await self._dispatch_run(run)
                    elif action.sm_n:
                        await self._dispatch_managed(action)
                    else:
                        await router.dispatch(self.hub, self, action.stanza)
                except router.InvalidFrom:
                    await self._execute(self.protocol.stream_error("invalid-from", None))
                    return True
            elif isinstance(action, SmEnable):
                await self._enable(action)
            elif isinstance(action, SmResume):
                await self._resume(action)
            elif isinstance(action, ClientState):
                self.client_state(action.active)
            elif isinstance(action, SmRequest):
                # The protocol counted every stanza of this read, also those after the <r/>
                # that are not handled yet: the answer must not acknowledge those (XEP-0198 §4).
                later = sum(1 for a in actions[i:] if isinstance(a, StanzaReceived) and a.sm_n)
                self._enqueue(sm.ack(self.protocol.sm_in - later))
            elif isinstance(action, SmAck):
                if not self._on_ack(action):
                    await self._execute(
                        self.protocol.stream_error("undefined-condition", "handled count too high")
                    )
                    return True
            elif isinstance(action, StartTls):
                await self._start_tls()
            elif isinstance(action, BindRequested):
                await self._bind(action)
            elif isinstance(action, RegistrationRequested):
                await self._register(action)
            elif isinstance(action, Authenticated):
                self._stats.logins[self.transport] += 1
                self.limiter.record_success(
                    self._account(action.username), self.peer, time.monotonic()
                )
                log.info(
                    "authenticated",
                    user=action.username,
                    mechanism=action.mechanism,
                    peer=self.peer,
                )
            elif isinstance(action, AuthFailed):
                self._stats.login_failures[action.condition or "unknown"] += 1
                who = self._account(action.username) if action.username else ""
                self.limiter.record_failure(who, self.peer, time.monotonic())
                log.info("auth_failed", condition=action.condition, peer=self.peer)
            elif isinstance(action, Close):
                self.closing = True
                self._close_reason = action.condition or "closed"
                return True
        return False

    def _groupchat_run(
        self, first: StanzaReceived, actions: list[Action], after: int
    ) -> list[StanzaReceived]:
        """``first`` and the groupchat messages to the same room right after it in this read:
        they are proposed together, in order (one commit, one write per occupant)."""
        run = [first]
        if not self.bound:
            return run
        room = router.groupchat_room(self.hub, first.stanza)
        if room is None:
            return run
        for action in actions[after : after + MAX_GROUPCHAT_RUN - 1]:
            if not isinstance(action, StanzaReceived):
                break
            if router.groupchat_room(self.hub, action.stanza) != room:
                break
            run.append(action)
        return run

    async def _dispatch_run(self, run: list[StanzaReceived]) -> None:
        stanzas = [action.stanza for action in run]
        if not run[-1].sm_n:
            await router.dispatch_groupchat_run(self.hub, self, stanzas)
            return
        # One proposal for all of them: it carries the handled count of the last (ADR 0008).
        self._dispatching = True
        try:
            with stream_mgmt.handling(self.session_id, run[-1].sm_n, self.epoch):
                await router.dispatch_groupchat_run(self.hub, self, stanzas)
                await self._queue_locals()
        finally:
            self._dispatching = False

    async def _dispatch_managed(self, action: StanzaReceived) -> None:
        """Handle client stanza number ``sm_n``: its effects and answers carry the count."""
        self._dispatching = True
        try:
            with stream_mgmt.handling(self.session_id, action.sm_n, self.epoch):
                await router.dispatch(self.hub, self, action.stanza)
                await self._queue_locals()
        finally:
            self._dispatching = False

    async def _out(self, data: bytes) -> None:
        if self.bound:
            # Protocol output (stream errors, <failed/>, the close) is never an outbox stanza.
            self._enqueue(data)
        else:
            await self._raw_send(data)

    async def _raw_send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def _throttle(self) -> None:
        limits = self.hub.config.limits
        now = time.monotonic()
        self._tokens = min(
            limits.stanza_burst, self._tokens + (now - self._refilled) * limits.stanzas_per_second
        )
        self._refilled = now
        self._tokens -= 1
        if self._tokens < 0:
            await anyio.sleep(-self._tokens / limits.stanzas_per_second)

    async def _start_tls(self) -> None:
        # STARTTLS follows the stream header: its host's certificate. Direct TLS has had no
        # header yet: the default host's context, which SNI switches (HostContexts).
        with anyio.fail_after(TLS_HANDSHAKE_TIMEOUT):
            self.stream = await TLSStream.wrap(
                self.stream,
                server_side=True,
                ssl_context=self.tls.for_host(self.protocol.domain),
                standard_compatible=False,
            )
        ssl_object = self.stream.extra(TLSAttribute.ssl_object)
        # Channel binding hashes the certificate the handshake presented (RFC 5929 §4.1).
        presented = self.tls.cert_der(ssl_object.context)
        self.protocol.tls_started(channel_binding_data(ssl_object, server_cert_der=presented))

    async def _bind(self, action: BindRequested) -> None:
        if self.hub.disk_low:
            log.warning("bind_refused_disk_low", peer=self.peer)
            await self._execute(self.protocol.bind_failed(action.iq_id, "resource-constraint"))
            return
        session_id = secrets.token_urlsafe(18)
        self.boot = self.hub.boot
        event = SessionBound(
            session_id, str(action.jid), self.hub.node, self.boot, device=action.chosen
        )
        for attempt in range(1, BIND_ATTEMPTS + 1):
            # The proposal ends a session it read (the one this JID replaces); if that session
            # ended, detached or resumed meanwhile (its client's own close racing this login),
            # apply refuses the whole proposal: read again and retry, the premise is fresh.
            replaced = self._replaced_session_events(action)
            inline, token = self._inline_events(action, session_id)
            sm_event = self._inline_sm(action, session_id)
            if sm_event is not None:
                inline.append(sm_event)  # after session.bound in the same proposal
            try:
                await self.hub.log.append(*replaced, event, *inline)
                break
            except ProposalRejected as exc:
                if replaced and attempt < BIND_ATTEMPTS:
                    log.info("bind_retried", reason=exc.reason, attempt=attempt)
                    continue
                log.warning("bind_failed", error=str(exc))
            except LogUnavailable as exc:
                log.warning("bind_failed", error=str(exc))
            await self._execute(self.protocol.bind_failed(action.iq_id, "resource-constraint"))
            return
        self.session_id = session_id
        self.jid = action.jid
        self.full = str(action.jid)
        self.bare = str(action.jid.bare)
        self.bound = True
        self._sm_inline = sm_event is not None  # delivery must not announce it a second time
        structlog.contextvars.bind_contextvars(session=session_id, jid=self.full)
        self.hub.register(self)
        self._start_writes()
        log.info("session_bound", peer=self.peer)
        enabled = None
        if sm_event is not None:
            self.resumable = sm_event.resume
            max_s = sm_event.timeout if sm_event.resume else None
            enabled = parse_fragment(sm.enabled(session_id if sm_event.resume else None, max_s))
        await self._execute(self.protocol.bind_succeeded(action.iq_id, action.jid, token, enabled))
        if sm_event is not None:
            self._sm_start()  # its <enabled/> went inside <bound/>: rows from here on
        if action.inline is not None and action.inline.inactive:
            self.client_state(False)  # XEP-0352 inline in Bind2

    def _replaced_session_events(self, action: BindRequested) -> list[Any]:
        """Events ending the managed session this JID replaces (RFC 6120 §7.7.2.2), if any."""
        with self.hub.read() as txn:
            # A managed session with this JID (say, detached) ends first, re-routing what it
            # holds unacknowledged: XEP-0198 must not drop it.
            old = sessions_view.by_full_jid(self.hub.store, txn, str(action.jid))
            if old is not None and (
                sm_view.state(self.hub.store, txn, old.session) is not None
                or muc_view.rooms_of_session(self.hub.store, txn, old.session)
            ):
                # Its occupants leave their rooms too: a replaced session leaves no ghost.
                return session_end.end_events(self.hub, txn, [old], "conflict")
        return []

    def _inline_sm(self, action: BindRequested, session_id: str) -> SmEnabled | None:
        """XEP-0198 enabled inline in Bind2 (XEP-0386), as an event of the bind's proposal."""
        sm_inline = action.inline.sm_enable if action.inline is not None else None
        if sm_inline is None or not self.hub.config.stream_management.enabled:
            return None
        cfg = self.hub.config.stream_management
        resume, max_s = sm_inline
        timeout = min(max_s or cfg.resume_timeout, cfg.resume_timeout)
        return SmEnabled(session_id, resume, timeout if resume else 0)

    def _inline_events(
        self, action: BindRequested, session_id: str
    ) -> tuple[list[Any], tuple[str, str] | None]:
        """What a SASL2 authentication asked for besides the session (XEP-0386 inline
        carbons, XEP-0484 token), as events of the same proposal; and the token to send."""
        req = action.inline
        if req is None:
            return [], None
        events: list[Any] = []
        if req.carbons:
            events.append(CarbonsToggled(session_id, True))
        bare = str(action.jid.bare)
        token = None
        if req.fast and req.invalidate and req.agent_id:
            events.append(FastTokenRevoked(bare, req.agent_id))
        elif (
            (req.token_request in sasl2.FAST_MECHANISMS or req.fast)
            and req.agent_id
            and self.hub.fast_key
            and self.hub.config.auth.fast
        ):
            # A login with a token gets a new one, which replaces it: a captured HT exchange
            # cannot be replayed once the device has logged in again (ADR 0015).
            mechanism = req.token_request or req.mechanism
            token_id = secrets.token_urlsafe(12)
            value = sasl2.token_value(self.hub.fast_key, token_id)
            expires = int(time.time() * 1000) + self.hub.config.auth.fast_token_ttl * 1000
            events.append(
                FastTokenIssued(
                    bare,
                    req.agent_id,
                    token_id,
                    sasl2.token_hash(value),
                    mechanism,
                    expires,
                )
            )
            token = (value, stamp(expires))
        return events, token

    async def _writer(self) -> None:
        """Drain the queue, then exit: started by ``_queue`` whenever it finds none running."""
        ended = True  # unless the queue drains: cancelled, the stream is going down anyway
        try:
            ended = await self._write_queued()
        finally:
            self._writer_running = False
            if ended:
                self._writes_ended = True
                if self._writes_ended_event is not None:
                    self._writes_ended_event.set()
        if ended:
            self._tg.cancel_scope.cancel()

    async def _write_queued(self) -> bool:
        """Write what is queued, coalesced; True at the end of the writes (``None``, or a broken
        socket), False once the queue is empty."""
        queue = self._outq
        while queue:
            batch = queue[:WRITE_BATCH]
            del queue[:WRITE_BATCH]
            if None in batch:
                # What follows the end is never written (the stream is closing).
                end = batch.index(None)
                del queue[:]
                if end:
                    await self._write(b"".join(batch[:end]))  # type: ignore[arg-type]
                return True
            if not await self._write(b"".join(batch)):  # type: ignore[arg-type]
                return True
        return False

    async def _wait_writes_ended(self) -> None:
        if self._writes_ended:
            return
        if self._writes_ended_event is None:
            self._writes_ended_event = anyio.Event()
        await self._writes_ended_event.wait()

    async def _write(self, data: bytes) -> bool:
        self._writing = True
        try:
            await self.stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError):
            self.closing = True
            self._close_reason = "disconnected"
            return False
        finally:
            self._writing = False
        return True

    async def _finish(self) -> None:
        """Record the end of the session (RFC 6121 §4.5.2 unavailable presence) and close."""
        if self.bound:
            self.hub.unregister(self)
            await self._record_end()
            log.info("session_ended", reason=self._close_reason, session=self.session_id)
            # Anything still queued (error tail, close) goes out before the socket closes.
            with anyio.move_on_after(1.0):
                pending: list[bytes] = []
                if not self._writes_ended:
                    for item in self._outq:
                        if item is None:
                            break
                        pending.append(item)
                self._outq = []
                if pending:
                    with contextlib.suppress(Exception):
                        await self.stream.send(b"".join(pending))
        await self._linger()
        with anyio.move_on_after(1.0), contextlib.suppress(Exception):
            await self.stream.aclose()

    async def _record_end(self) -> None:
        """Record the session's end, or its detachment when its client may resume it."""
        if not self.session_id:
            # A connection whose resume was given up holds no session (and LMDB refuses the
            # empty key: an exception here ended the whole node).
            log.warning("session_end_without_session", reason=self._close_reason)
            return
        end = session_end.PendingEnd(
            self.session_id,
            self._close_reason,
            detach=self.resumable and self._close_reason in DETACH_REASONS,
            acked=self._sm_acked,
            epoch=self.epoch,
            managed=self.sm_active,
        )
        self.hub.ending.add(end.session)
        try:
            with anyio.move_on_after(CLOSE_TIMEOUT):
                for _ in range(20):  # each refusal re-reads what changed; bounded by the timeout
                    try:
                        await session_end.record_end(self.hub, end)
                        return
                    except ProposalRejected as exc:
                        # New outbox rows arrived after the read (re-read them) or it moved on.
                        log.info("session_end_retry", error=exc.reason, session=end.session)
                    except LogUnavailable as exc:
                        log.warning("session_end_not_recorded", error=str(exc), session=end.session)
                        break
            # Not recorded: the session would stay held by this node with no connection (a
            # ghost whose outbox nobody reads). The node's sweep records it once the log takes
            # writes again (xes.session_sweep, finding 9).
            self.hub.pending_ends[end.session] = end
            log.warning("session_end_deferred", session=end.session, reason=end.reason)
        finally:
            self.hub.ending.discard(end.session)

    async def _linger(self) -> None:
        await linger(self.stream)


async def release_idle_parsers(connections: set[ClientConnection]) -> None:
    """Every ``IDLE_SWEEP_SECONDS``, let the parser of each stream idle since the last sweep
    go (its expat state is most of an idle connection's Python memory, issue 19). One task
    for the node, instead of a timer per connection."""
    while True:
        await anyio.sleep(IDLE_SWEEP_SECONDS)
        for conn in list(connections):
            conn.release_if_idle()


async def linger(stream: ByteStream) -> None:
    """Read and drop what the peer still sends for a moment before closing.

    Closing a socket with unread input makes the kernel answer with a reset, which can
    destroy our stream error before the peer reads it. A bounded drain avoids that.
    """
    with anyio.move_on_after(LINGER_SECONDS), contextlib.suppress(Exception):
        with contextlib.suppress(Exception):
            await stream.send_eof()
        drained = 0
        while drained < LINGER_BYTES:
            chunk = await stream.receive(READ_SIZE)
            drained += len(chunk)
