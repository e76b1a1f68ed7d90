"""Clients of the log process: :class:`LogClient` (anyio, group commit) and :class:`SyncClient`.

``LogClient.propose`` is how stream handlers append events. Proposals made while a command is
being written are sent together as one Raft command (group commit). A proposal whose outcome is
unknown (leader change, timeout) is re-sent with the same event ids; the projector recognises the
ids, so a retry can never apply an event twice.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import SocketStream, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from xes.eventlog import wire
from xes.events import Envelope, encode_proposal, wrap
from xes.events.gate import Gate, Gated
from xes.stats import LatencyHistogram

log = structlog.get_logger("xes.logclient")

MAX_COMMAND_BYTES = 256 * 1024
"""A group stops growing at this size; well below the Raft adapter's hard limit (ADR 0004)."""
RETRY_FOR = 20.0
"""Seconds a proposal keeps being retried while the cluster has no leader or the outcome is
unknown, before the caller gets an error (and its client a stanza error)."""


class LogUnavailable(Exception):
    """The log could not append the proposal (no quorum, log process gone, too large)."""


class FeatureGated(LogUnavailable):
    """An event type no version of which every cluster member reads yet (ADR 0022): the
    feature proposing it should have checked ``hub.gate`` first; this is the safety net."""


class ProposalRejected(Exception):
    """Apply refused the proposal, e.g. ``conflict`` on a stale ``expected_version``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Placed:
    """Where a proposal's events landed: ``(index, pos, version)`` per event."""

    events: list[tuple[int, int, int]]

    @property
    def index(self) -> int:
        return self.events[-1][0] if self.events else 0


class _Pending:
    __slots__ = ("data", "done", "error", "result")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.done = anyio.Event()
        self.result: Any = None
        self.error: Exception | None = None


class LogClient:
    """Async client of the log process over its Unix socket."""

    def __init__(self, path: Path, origin: str, boot: str, retry_for: float = RETRY_FOR) -> None:
        self.path = path
        self.retry_for = retry_for
        """Seconds a proposal is retried (same event ids) before the caller gets LogUnavailable."""
        self.origin = origin
        self.boot = boot
        self._ids = itertools.count(1)
        self.gate: Callable[[], Gate] = Gate.unknown
        """The feature gate every envelope passes (ADR 0022): the node points it at the hub's
        refreshed gate; on its own, as if one member read only the baseline."""
        self.riders: Callable[[], list[Any]] | None = None
        """Events added to every proposal made in the current context (XEP-0198 handled counts
        ride with the effects of the stanza they count: see :mod:`xes.features.stream_mgmt`)."""
        self._req = itertools.count(1)
        self._queue: list[_Pending] = []
        self._wake = anyio.Event()
        self._inflight: dict[int, list[_Pending]] = {}
        self._status: dict[int, _Pending] = {}
        self._stream: SocketStream | None = None
        self._send_lock = anyio.Lock()
        self.applied = 0
        self._applied_event = anyio.Event()
        self._listeners: list[anyio.Event] = []
        self.closed = anyio.Event()
        self.proposal_latency = LatencyHistogram()
        """Seconds from proposing to applied here (read-your-writes), for ``/metrics``."""
        self.rejected = 0
        """Proposals the log refused (a premise no longer held) or did not commit in time."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self, task_group: TaskGroup, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._stream = await anyio.connect_unix(str(self.path))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(0.05)
        self._tg = task_group
        task_group.start_soon(self._reader)
        task_group.start_soon(self._flusher)

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()

    # -- events ------------------------------------------------------------------------------

    def envelope(self, event: Any, expected_version: int | None = None) -> Envelope:
        """Wrap a catalogue event in an envelope with a cluster-unique id, in the version every
        cluster member reads (the feature gate, ADR 0022)."""
        env = wrap(
            event,
            id=f"{self.origin}.{self.boot}.{next(self._ids)}",
            at=int(time.time() * 1000),
            origin=self.origin,
            expected_version=expected_version,
        )
        try:
            return self.gate().shape(env)
        except Gated as exc:
            raise FeatureGated(str(exc)) from exc

    async def append(self, *events: Any, expected: dict[str, int] | None = None) -> Placed:
        """Propose ``events`` as one all-or-nothing proposal and wait until applied here.

        ``expected``: the version each named stream must be at *before* this proposal (the
        proposer's read); only the first event of that stream carries it, so a proposal with
        several events of one stream (a session's unavailable presence and its end) is guarded
        once, not refused by its own earlier event."""
        expected = dict(expected or {})
        if self.riders is not None:
            events = (*events, *self.riders())
        envs = []
        for ev in events:
            stream = ev.stream()
            envs.append(self.envelope(ev, expected.pop(stream, None)))
        return await self.propose(envs)

    async def propose(self, envelopes: list[Envelope]) -> Placed:
        data = encode_proposal(envelopes)
        if len(data) > MAX_COMMAND_BYTES:
            raise LogUnavailable("proposal too large")
        pending = _Pending(data)
        self._queue.append(pending)
        self._wake.set()
        started = time.monotonic()
        # The caller hears back within retry_for whatever Raft does (a submit to a leader that
        # is cut off may stay unanswered for longer). Retries with the same ids go on in the
        # background, so the proposal may still be committed: the outcome is unknown.
        with anyio.move_on_after(self.retry_for):
            await pending.done.wait()
        if not pending.done.is_set():
            self.rejected += 1
            raise LogUnavailable(f"not committed within {self.retry_for:g} s (outcome unknown)")
        if pending.error is not None:
            raise pending.error
        result = pending.result
        if not result.get("ok"):
            self.rejected += 1
            raise ProposalRejected(result.get("reason", "rejected"))
        placed = Placed([tuple(e) for e in result["events"]])  # type: ignore[misc]
        await self.wait_applied(placed.index)
        self.proposal_latency.observe(time.monotonic() - started)
        return placed

    async def wait_applied(self, index: int) -> None:
        """Read-your-writes: wait until this node's projections include log index ``index``."""
        while self.applied < index:
            if self.closed.is_set():
                raise LogUnavailable("log process gone")
            event = anyio.Event()
            self._listeners.append(event)
            await event.wait()

    async def wait_applied_change(self, after: int) -> int:
        while self.applied <= after:
            if self.closed.is_set():
                raise LogUnavailable("log process gone")
            event = anyio.Event()
            self._listeners.append(event)
            await event.wait()
        return self.applied

    async def status(self) -> dict[str, Any]:
        req = next(self._req)
        pending = _Pending(b"")
        self._status[req] = pending
        await self._send(wire.frame(wire.STATUS, wire.U64.pack(req)))
        await pending.done.wait()
        return pending.result  # type: ignore[no-any-return]

    # -- tasks -------------------------------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        assert self._stream is not None
        async with self._send_lock:
            await self._stream.send(data)

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._queue:
                group, size = [], 0
                while self._queue and (
                    not group or size + len(self._queue[0].data) < MAX_COMMAND_BYTES
                ):
                    item = self._queue.pop(0)
                    group.append(item)
                    size += len(item.data) + 1
                await self._submit(group)

    async def _submit(self, group: list[_Pending], req: int | None = None) -> None:
        """Send ``group`` as one command under request id ``req`` (retries: same bytes)."""
        req = next(self._req) if req is None else req
        self._inflight[req] = group
        command = b"[" + b",".join(p.data for p in group) + b"]"
        try:
            await self._send(wire.frame(wire.PROPOSE, wire.U64.pack(req) + command))
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._fail(req, LogUnavailable("log process gone"))

    def _fail(self, req: int, error: Exception) -> None:
        for pending in self._inflight.pop(req, []):
            pending.error = error
            pending.done.set()

    async def _reader(self) -> None:
        assert self._stream is not None
        reader = BufferedByteReceiveStream(self._stream)
        started: dict[int, float] = {}
        try:
            while True:
                length, kind = wire.HEADER.unpack(await reader.receive_exactly(wire.HEADER.size))
                body = await reader.receive_exactly(length - 1)
                if kind == wire.APPLIED:
                    self._set_applied(wire.U64.unpack(body)[0])
                elif kind == wire.RESULT_KIND:
                    req, code, _index = wire.RESULT.unpack(body[: wire.RESULT.size])
                    await self._on_result(
                        req, wire.OUTCOME_NAMES[code], body[wire.RESULT.size :], started
                    )
                elif kind == wire.STATUS_REPLY:
                    req = wire.U64.unpack(body[:8])[0]
                    pending = self._status.pop(req, None)
                    if pending is not None:
                        pending.result = json.loads(body[8:])
                        pending.done.set()
        except (
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            OSError,
        ):
            log.error("log_process_connection_lost")
        finally:
            self.closed.set()
            for req in list(self._inflight):
                self._fail(req, LogUnavailable("log process gone"))
            for pending in self._status.values():
                pending.result = {"error": "log process gone"}
                pending.done.set()
            self._wake_listeners()

    async def _on_result(
        self, req: int, outcome: str, body: bytes, started: dict[int, float]
    ) -> None:
        group = self._inflight.get(req)
        if group is None:
            return
        if outcome == "APPLIED":
            del self._inflight[req]
            started.pop(req, None)
            results = json.loads(body)
            for pending, result in zip(group, results, strict=True):
                pending.result = result
                pending.done.set()
            return
        if outcome == "TOO_LARGE":
            self._fail(req, LogUnavailable("command too large"))
            return
        # NOT_APPENDED (no leader, queue full) or UNKNOWN (leader changed, timeout): retry the
        # same bytes, hence the same event ids, until RETRY_FOR has passed.
        first = started.setdefault(req, time.monotonic())
        if time.monotonic() - first > self.retry_for:
            del started[req]
            self._fail(req, LogUnavailable(f"log unavailable ({outcome.lower()})"))
            return
        del self._inflight[req]
        self._tg.start_soon(self._retry, req, group, started)

    async def _retry(self, req: int, group: list[_Pending], started: dict[int, float]) -> None:
        await anyio.sleep(0.05)
        new_req = next(self._req)
        started[new_req] = started.pop(req)
        await self._submit(group, new_req)

    def _set_applied(self, index: int) -> None:
        if index > self.applied:
            self.applied = index
            self._wake_listeners()

    def _wake_listeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        for event in listeners:
            event.set()


class SyncClient:
    """Blocking client for the CLI (``xes user add`` while the server runs)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")
        self._req = itertools.count(1)

    def _read_frame(self) -> tuple[int, bytes]:
        head = self.reader.read(wire.HEADER.size)
        if len(head) < wire.HEADER.size:
            raise LogUnavailable("log process closed the connection")
        length, kind = wire.HEADER.unpack(head)
        return kind, self.reader.read(length - 1)

    def _await(self, want_kind: int, req: int) -> bytes:
        while True:
            kind, body = self._read_frame()
            if kind == want_kind and wire.U64.unpack(body[:8])[0] == req:
                return body

    def submit(self, command: bytes) -> tuple[str, bytes]:
        deadline = time.monotonic() + RETRY_FOR
        while True:
            req = next(self._req)
            self.sock.sendall(wire.frame(wire.PROPOSE, wire.U64.pack(req) + command))
            body = self._await(wire.RESULT_KIND, req)
            _, code, _ = wire.RESULT.unpack(body[: wire.RESULT.size])
            outcome = wire.OUTCOME_NAMES[code]
            if outcome in ("APPLIED", "TOO_LARGE") or time.monotonic() > deadline:
                return outcome, body[wire.RESULT.size :]
            time.sleep(0.1)

    def status(self) -> dict[str, Any]:
        req = next(self._req)
        self.sock.sendall(wire.frame(wire.STATUS, wire.U64.pack(req)))
        return json.loads(self._await(wire.STATUS_REPLY, req)[8:])  # type: ignore[no-any-return]

    def membership(self, op: str, addr: str) -> str:
        req = next(self._req)
        body = json.dumps({"op": op, "addr": addr}).encode()
        self.sock.sendall(wire.frame(wire.MEMBERSHIP, wire.U64.pack(req) + body))
        reply = self._await(wire.RESULT_KIND, req)
        return wire.OUTCOME_NAMES[wire.RESULT.unpack(reply[: wire.RESULT.size])[1]]

    def close(self) -> None:
        self.sock.close()


def socket_alive(path: Path) -> bool:
    if not os.path.exists(path):
        return False
    try:
        SyncClient(path, timeout=2.0).close()
        return True
    except OSError:
        return False
