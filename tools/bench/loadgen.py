#!/usr/bin/env python3
"""XMPP load generator for the server comparison of issue 5 (driven by ``tools/bench/run.py``).

One process, one event loop (uvloop when installed: ``pip install -e '.[bench]'``), raw sockets
and no XML library: stanzas are cut at their closing tags and read with byte regexes, so the
generator costs a few microseconds per stanza and stays far from saturation on one core.

Each client logs in like a real one: TCP, stream header, STARTTLS (any certificate accepted),
SASL SCRAM-SHA-1 or SCRAM-SHA-256 (PLAIN only when the server offers no SCRAM), resource bind,
initial presence. The SCRAM salted password is cached per (password, salt, iterations) as real
clients do, so PBKDF2 does not bound the login rate.

Workloads (``--spec`` JSON, ``workload`` key):

* ``register``: XEP-0077 in-band registration of many accounts (setup for ``idle``).
* ``logins``: ``concurrency`` clients log in, bind and close in a loop for ``duration`` s.
* ``messages``: ``pairs`` sender/receiver pairs. ``mode: "saturate"``: each sender keeps at most
  ``window`` messages undelivered; ``mode: "rate"``: senders follow a fixed schedule of ``rate``
  messages/s in total (open loop; latency counted from the scheduled time). Every body carries
  pair, sequence number and send time; receivers count, so lost and duplicated messages show.
* ``muc``: ``occupants`` clients join one room; one of them sends groupchat messages (at most
  ``window`` not yet reflected to itself); every occupant counts what it receives.
* ``idle``: ``connections`` clients log in and stay; the runner reads the server's memory.
* ``archive``: one user sends ``fill`` messages to another (XEP-0313 archiving on the server),
  then asks ``queries`` times for the last page (``page`` items) of its archive.

Control: the generator prints ``MARK <name>`` lines at phase boundaries and, when ``spec.sync``
is true, waits for a ``GO`` line on stdin before going on, so the runner can read server CPU and
memory exactly around the measured phase. The result is one ``RESULT <json>`` line; the
generator's own CPU time over the measured phase is in ``gen_cpu``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import resource
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NS_STREAM = "http://etherx.jabber.org/streams"
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
FEATURES_END = re.compile(rb"</(?:stream:)?features>|<(?:stream:)?features\b[^>]*/>")
"""Over WebSocket (RFC 7395) features may come unprefixed: ``<features xmlns=...streams>``."""
PROCEED = re.compile(rb"<proceed\b[^>]*>|<failure\b[^>]*>")
MECHANISM = re.compile(rb"<mechanism>([^<]+)</mechanism>")
SASL_STEP = re.compile(
    rb"<(challenge|success|failure)\b[^>]*?(?:/>|>(.*?)</(?:challenge|success|failure)>)", re.S
)
BODY = re.compile(rb"<body>([BGW]) (\d+) (\d+) ([0-9.]+) ")
MESSAGE_END = b"</message>"
ERROR_STANZA = re.compile(rb"<(message|iq|presence)\b[^>]*type=['\"]error['\"]")
MAM_RESULT = re.compile(rb"<result\b[^>]*urn:xmpp:mam:2")
PAD = "x" * 100
_STANZA_NAME = re.compile(r"^<(iq|message|presence)(?=[\s/>])")

_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
_TLS.check_hostname = False
_TLS.verify_mode = ssl.CERT_NONE
_SALTED: dict[tuple[str, str, bytes, int], bytes] = {}


def iq_rx(iq_id: str) -> re.Pattern[bytes]:
    """The whole ``<iq>`` answer with this id (self-closed or with children)."""
    return re.compile(
        rb"<iq\b[^>]*\bid=['\"]" + re.escape(iq_id.encode()) + rb"['\"][^>]*?(?:/>|>.*?</iq>)", re.S
    )


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile, None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


# ------------------------------------------------------------------------------------- SCRAM


class Scram:
    """RFC 5802 client side (no channel binding: ``n,,``)."""

    def __init__(self, mechanism: str, user: str, password: str) -> None:
        self.hash = "sha256" if mechanism == "SCRAM-SHA-256" else "sha1"
        self.password = password
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.bare = f"n={user},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        attrs = dict(part.split("=", 1) for part in server_first.decode().split(","))
        if not attrs["r"].startswith(self.nonce):
            raise RuntimeError("SCRAM: server nonce does not extend ours")
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        key = (self.hash, self.password, salt, iterations)
        salted = _SALTED.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac(self.hash, self.password.encode(), salt, iterations)
            _SALTED[key] = salted
        client_key = hmac.digest(salted, b"Client Key", self.hash)
        stored_key = hashlib.new(self.hash, client_key).digest()
        without_proof = "c=biws,r=" + attrs["r"]
        message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(stored_key, message, self.hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self.hash)
        self.server_signature = hmac.digest(server_key, message, self.hash)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        attrs = dict(part.split("=", 1) for part in server_final.decode().split(","))
        if base64.b64decode(attrs.get("v", "")) != self.server_signature:
            raise RuntimeError("SCRAM: wrong server signature")


# ------------------------------------------------------------------------------ client stream


class Conn:
    """One client stream: sequential reads while logging in, then a reader task."""

    STREAM_END = "</stream:stream>"

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.buf = bytearray()
        self.jid = ""
        self.mechanism = ""
        self.task: asyncio.Task[None] | None = None

    async def connect(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port, limit=1 << 20)

    async def recv(self) -> bytes:
        """The next bytes of the XMPP stream (b"" at its end)."""
        return await self.reader.read(1 << 18)

    async def until(self, rx: re.Pattern[bytes], timeout: float) -> re.Match[bytes]:
        """Read until ``rx`` matches; consume the buffer up to the match's end.

        The match is taken again on the consumed bytes, so ``m.string`` is everything read up
        to and including it.
        """
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                data = bytes(self.buf[: m.end()])
                del self.buf[: m.end()]
                return rx.search(data)  # type: ignore[return-value]  # matches again
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waited for {rx.pattern!r}; got {bytes(self.buf[-200:])!r}")
            chunk = await asyncio.wait_for(self.recv(), left)
            if not chunk:
                raise ConnectionError(
                    f"closed waiting for {rx.pattern!r}: {bytes(self.buf[-200:])!r}"
                )
            self.buf += chunk

    def send(self, data: str) -> None:
        self.writer.write(data.encode())

    async def header(self, timeout: float) -> bytes:
        self.send(
            f"<?xml version='1.0'?><stream:stream to='{self.domain}' version='1.0' "
            f"xmlns='jabber:client' xmlns:stream='{NS_STREAM}'>"
        )
        return (await self.until(FEATURES_END, timeout)).string

    async def starttls(self, timeout: float) -> bytes:
        """Stream header, STARTTLS; returns the features offered over TLS."""
        await self.header(timeout)
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        m = await self.until(PROCEED, timeout)
        if not m.group(0).startswith(b"<proceed"):
            raise RuntimeError("STARTTLS refused")
        self.buf.clear()
        await asyncio.wait_for(self.writer.start_tls(_TLS, server_hostname=self.domain), timeout)
        return await self.header(timeout)

    async def login(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        resource: str,
        *,
        mechanisms: tuple[str, ...],
        presence: bool,
        timeout: float,
    ) -> None:
        await self.connect(host, port)
        features = await self.starttls(timeout)
        offered = [m.decode() for m in MECHANISM.findall(features)]
        mech = next((m for m in mechanisms if m in offered), None)
        if mech is None:
            raise RuntimeError(f"no usable SASL mechanism among {offered}")
        self.mechanism = mech
        if mech == "PLAIN":
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            self.send(
                f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
            )
            step = await self.until(SASL_STEP, timeout)
            if step.group(1) != b"success":
                raise RuntimeError(f"login of {user} failed: {step.group(0)[:200]!r}")
        else:
            scram = Scram(mech, user, password)
            first = base64.b64encode(scram.first()).decode()
            self.send(
                f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{first}</auth>"
            )
            step = await self.until(SASL_STEP, timeout)
            if step.group(1) != b"challenge":
                raise RuntimeError(f"login of {user} failed: {step.group(0)[:200]!r}")
            final = scram.final(base64.b64decode(step.group(2) or b""))
            self.send(
                "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                f"{base64.b64encode(final).decode()}</response>"
            )
            step = await self.until(SASL_STEP, timeout)
            if step.group(1) == b"challenge":  # RFC 6120 §6.4.6: additional data as a challenge
                scram.verify(base64.b64decode(step.group(2) or b""))
                self.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
                step = await self.until(SASL_STEP, timeout)
            elif step.group(1) == b"success":
                scram.verify(base64.b64decode(step.group(2) or b""))
            if step.group(1) != b"success":
                raise RuntimeError(f"login of {user} failed: {step.group(0)[:200]!r}")
        self.buf.clear()
        features = await self.header(timeout)
        self.send(
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        answer = (await self.until(iq_rx("b1"), timeout)).group(0)
        jid = re.search(rb"<jid>([^<]+)</jid>", answer)
        if jid is None:
            raise RuntimeError(f"bind of {user} failed: {answer[:200]!r}")
        self.jid = jid.group(1).decode()
        if b"xmpp-session" in features and b"<optional" not in features:
            self.send(
                "<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
            )
            await self.until(iq_rx("s1"), timeout)
        if presence:
            self.send("<presence/>")

    async def login_as(
        self, spec: Spec, user: str, port: int, resource: str, *, presence: bool
    ) -> None:
        """``login`` with the host, password, mechanisms and timeout of ``spec``."""
        await self.login(
            spec.host,
            port,
            user,
            spec.password,
            resource,
            mechanisms=spec.mechanisms,
            presence=presence,
            timeout=spec.timeout,
        )

    def start_reader(self, on_data: Callable[[bytes, float], None]) -> None:
        """Hand every received chunk (with its arrival time) to ``on_data``."""

        async def loop() -> None:
            if self.buf:
                on_data(bytes(self.buf), time.monotonic())
                self.buf.clear()
            while True:
                chunk = await self.recv()
                if not chunk:
                    return
                on_data(chunk, time.monotonic())

        self.task = asyncio.create_task(loop())

    async def close(self, timeout: float = 5.0) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        with contextlib.suppress(Exception):
            self.send(self.STREAM_END)
            await asyncio.wait_for(self.writer.drain(), timeout)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), timeout)


class WsConn(Conn):
    """The same client over XMPP-over-WebSocket (RFC 7395) on ``wss://HOST:PORT/xmpp-websocket``.

    What the workloads write (stream header, stanzas, stream end) is framed: the header becomes
    ``<open/>``, the end ``<close/>``, each send one text message (the workloads send one
    stanza per call); what arrives is the text of the messages, concatenated, so the byte
    regexes read it as they read a TCP stream. No STARTTLS: the WebSocket runs over TLS."""

    STREAM_END = f"<close xmlns='{FRAMING}'/>"
    PATH = "/xmpp-websocket"

    def __init__(self, domain: str) -> None:
        super().__init__(domain)
        import wsproto

        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)

    async def connect(self, host: str, port: int) -> None:
        from wsproto.events import AcceptConnection, RejectConnection, Request

        self.reader, self.writer = await asyncio.open_connection(
            host, port, ssl=_TLS, server_hostname=self.domain, limit=1 << 20
        )
        self.writer.write(
            self.ws.send(Request(host=self.domain, target=self.PATH, subprotocols=["xmpp"]))
        )
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("closed during the WebSocket handshake")
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    raise RuntimeError(f"WebSocket refused: HTTP {event.status_code}")

    def send(self, data: str) -> None:
        from wsproto.events import Message

        if data.startswith(("<?xml", "<stream:stream")):
            data = f"<open xmlns='{FRAMING}' to='{self.domain}' version='1.0'/>"
        elif data == "</stream:stream>":
            data = self.STREAM_END
        elif "xmlns=" not in data[: data.find(">")]:
            data = _STANZA_NAME.sub(r"<\1 xmlns='jabber:client'", data, count=1)
        self.writer.write(self.ws.send(Message(data=data)))

    async def starttls(self, timeout: float) -> bytes:
        return await self.header(timeout)

    async def recv(self) -> bytes:
        from wsproto.events import CloseConnection, Ping, TextMessage

        while True:
            out = []
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    out.append(event.data.encode())
                elif isinstance(event, Ping):
                    self.writer.write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    return b""
            if out:
                return b"".join(out)
            data = await self.reader.read(1 << 18)
            if not data:
                return b""
            self.ws.receive_data(data)


def new_conn(spec: Spec) -> Conn:
    return WsConn(spec.domain) if spec.transport == "websocket" else Conn(spec.domain)


class Counter:
    """Counts benchmark bodies in a stream of chunks (cut at ``</message>``)."""

    def __init__(self, on_body: Callable[[bytes, int, int, float, float], None]) -> None:
        self.buf = b""
        self.on_body = on_body
        self.errors: list[bytes] = []

    def feed(self, chunk: bytes, now: float) -> None:
        data = self.buf + chunk
        cut = data.rfind(MESSAGE_END)
        if cut < 0:
            if len(data) > 1 << 20:  # presences only: keep from the last message start
                start = data.rfind(b"<message")
                data = data[start:] if start >= 0 else data[-200:]
            self.buf = data
            return
        cut += len(MESSAGE_END)
        done, self.buf = data[:cut], data[cut:]
        for m in BODY.finditer(done):
            self.on_body(m.group(1), int(m.group(2)), int(m.group(3)), float(m.group(4)), now)
        if b"error" in done:
            self.errors += [e.group(0)[:200] for e in ERROR_STANZA.finditer(done)]


def count_bodies(
    conns: list[Conn], on_body: Callable[[bytes, int, int, float, float, int], None]
) -> list[Counter]:
    """Start a reader on each connection that reports bodies with the connection's index."""
    counters = []
    for i, conn in enumerate(conns):
        counter = Counter(lambda k, p, s, t, now, i=i: on_body(k, p, s, t, now, i))
        counters.append(counter)
        conn.start_reader(counter.feed)
    return counters


# ------------------------------------------------------------------------------------ control


class Control:
    """MARK lines to the runner; with ``sync`` wait for its GO after each."""

    def __init__(self, sync: bool) -> None:
        self.sync = sync
        self.marks: dict[str, float] = {}

    async def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()
        print(f"MARK {name}", flush=True)
        if self.sync:
            line = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline), 600
            )
            if line.strip() != "GO":
                raise RuntimeError(f"expected GO, got {line!r}")


@dataclass
class Spec:
    workload: str
    host: str = "127.0.0.1"
    ports: list[int] = field(default_factory=lambda: [5222])
    domain: str = "localhost"
    password: str = "bench-pw"
    mechanisms: tuple[str, ...] = ("SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN")
    timeout: float = 60.0
    sync: bool = False
    duration: float = 10.0
    drain: float = 15.0
    concurrency: int = 10
    users: list[str] = field(default_factory=list)
    pairs: int = 10
    window: int = 16
    mode: str = "saturate"
    rate: float = 250.0
    occupants: int = 50
    room: str = ""
    connections: int = 5000
    hold: float = 5.0
    fill: int = 5500
    queries: int = 30
    page: int = 50
    extra: dict[str, Any] = field(default_factory=dict)
    transport: str = "tcp"
    """``tcp`` (STARTTLS) or ``websocket`` (wss, RFC 7395: ``ports`` are then HTTPS ports)."""

    def port(self, i: int) -> int:
        return self.ports[i % len(self.ports)]


async def login_many(
    spec: Spec, users: list[tuple[str, int]], failures: list[str] | None = None
) -> list[Conn]:
    """Log ``users`` (name, port) in, ``spec.concurrency`` at a time; connections in order.

    With a ``failures`` list, a login that fails is recorded there and the others go on.
    """
    conns: list[Conn | None] = [None] * len(users)
    sem = asyncio.Semaphore(spec.concurrency)

    async def one(i: int, user: str, port: int) -> None:
        async with sem:
            conn = new_conn(spec)
            try:
                await conn.login_as(spec, user, port, "bench", presence=True)
            except Exception as exc:
                if failures is None:
                    raise
                failures.append(f"{user}: {exc!r}"[:200])
                with contextlib.suppress(Exception):
                    await conn.close(1.0)
                return
            conns[i] = conn

    try:
        await asyncio.gather(*(one(i, u, p) for i, (u, p) in enumerate(users)))
    except BaseException:
        await asyncio.gather(*(c.close(1.0) for c in conns if c is not None))
        raise
    return [c for c in conns if c is not None]


async def close_all(conns: list[Conn], concurrency: int = 200) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(c: Conn) -> None:
        async with sem:
            await c.close()

    await asyncio.gather(*(one(c) for c in conns))


async def drain(count: Callable[[], int], expected: int, spec: Spec) -> None:
    """Wait until ``count()`` reaches ``expected``, or nothing arrives for ``spec.drain`` s.

    A server still working off a backlog keeps delivering, so only silence ends the wait
    early; whatever has not arrived then is counted lost. Bounded by 10 x ``spec.drain``.
    """
    now = time.monotonic()
    cap, quiet_since, seen = now + 10 * spec.drain, now, count()
    while (n := count()) < expected:
        now = time.monotonic()
        if n != seen:
            seen, quiet_since = n, now
        if now - quiet_since > spec.drain or now > cap:
            return
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------------- workloads


async def w_register(spec: Spec, ctl: Control) -> dict[str, Any]:
    """XEP-0077 in-band registration of ``spec.users`` (setup, not measured)."""
    sem = asyncio.Semaphore(spec.concurrency)
    failed: list[str] = []

    async def one(i: int, user: str) -> None:
        async with sem:
            conn = new_conn(spec)
            try:
                await conn.connect(spec.host, spec.port(i))
                await conn.starttls(spec.timeout)
                conn.send(
                    "<iq type='set' id='r1'><query xmlns='jabber:iq:register'>"
                    f"<username>{user}</username><password>{spec.password}</password>"
                    "</query></iq>"
                )
                answer = (await conn.until(iq_rx("r1"), spec.timeout)).group(0)
                if not re.search(rb"type=['\"]result", answer) and b"conflict" not in answer:
                    failed.append(f"{user}: {answer[:200]!r}")
            finally:
                await conn.close(2.0)

    t0 = time.monotonic()
    await asyncio.gather(*(one(i, u) for i, u in enumerate(spec.users)))
    return {
        "registered": len(spec.users) - len(failed),
        "failed": failed[:20],
        "seconds": time.monotonic() - t0,
    }


async def w_logins(spec: Spec, ctl: Control) -> dict[str, Any]:
    users = spec.users or ["login1"]
    done = 0
    errors: list[str] = []
    times: list[float] = []
    await ctl.mark("start")
    cpu0, t0 = time.process_time(), time.monotonic()
    end = t0 + spec.duration

    async def worker(w: int) -> None:
        nonlocal done
        n = w
        while time.monotonic() < end and len(errors) < 50:
            user = users[n % len(users)]
            port = spec.port(n)
            n += spec.concurrency
            conn = new_conn(spec)
            started = time.monotonic()
            try:
                await conn.login_as(spec, user, port, f"l{n}", presence=False)
                if time.monotonic() <= end:
                    done += 1
                    times.append(time.monotonic() - started)
            except Exception as exc:
                errors.append(f"{user}: {exc!r}"[:200])
            finally:
                # Like a client that quits: it sends </stream:stream> and does not wait for the
                # server's TLS close_notify and FIN (ejabberd takes ~100 ms to send them).
                closing.add(asyncio.create_task(conn.close(5.0)))

    closing: set[asyncio.Task[None]] = set()
    await asyncio.wait_for(
        asyncio.gather(*(worker(w) for w in range(spec.concurrency))), spec.duration + 120
    )
    span = time.monotonic() - t0
    gen_cpu = time.process_time() - cpu0
    await asyncio.wait(closing, timeout=10)
    await ctl.mark("end")
    return {
        "logins": done,
        "span": span,
        "rate": done / spec.duration,
        "login_p50_ms": ms(pct(times, 50)),
        "login_p99_ms": ms(pct(times, 99)),
        "errors": len(errors),
        "error_sample": errors[:5],
        "gen_cpu": gen_cpu,
        "gen_wall": span,
    }


@dataclass
class Flow:
    """One sender's messages as seen by its receiver(s)."""

    sent: int = 0
    received: set[int] = field(default_factory=set)
    duplicates: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)


async def w_messages(spec: Spec, ctl: Control) -> dict[str, Any]:
    """One-to-one messages: ``saturate`` (window per pair) or fixed ``rate`` (open loop)."""
    n = spec.pairs
    senders_u = [(f"s{i + 1}", spec.port(0)) for i in range(n)]
    # Receivers on the other ports when several are given (cluster: messages cross nodes).
    rports = spec.ports[1:] or spec.ports
    receivers_u = [(f"r{i + 1}", rports[i % len(rports)]) for i in range(n)]
    receivers = await login_many(spec, receivers_u)
    senders = await login_many(spec, senders_u)
    flows = [Flow() for _ in range(n)]
    latencies: list[float] = []
    phase = {"measure": False, "last": 0.0}
    warm = [asyncio.Event() for _ in range(n)]
    stray = [0]

    def on_body(kind: bytes, pair: int, seq: int, sent_at: float, now: float, i: int) -> None:
        if pair != i:
            stray[0] += 1
            return
        if kind == b"W":
            warm[i].set()
            return
        flow = flows[i]
        if seq in flow.received:
            flow.duplicates += 1
            return
        flow.received.add(seq)
        latencies.append(now - sent_at)
        phase["last"] = now
        flow.progress.set()

    counters = count_bodies(receivers, on_body)
    sender_counters = []
    for conn in senders:
        counter = Counter(lambda *a: None)
        sender_counters.append(counter)
        conn.start_reader(counter.feed)

    def body(kind: str, i: int, seq: int, at: float) -> str:
        return (
            f"<message to='r{i + 1}@{spec.domain}' type='chat' id='m{seq}'>"
            f"<body>{kind} {i} {seq} {at:.6f} {PAD}</body></message>"
        )

    # Warm-up: until the receiver's presence is known, messages may go to offline storage.
    deadline = time.monotonic() + 60
    for i, conn in enumerate(senders):
        while not warm[i].is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"warm-up message of pair {i} never arrived")
            conn.send(body("W", i, 0, time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(warm[i].wait(), 1.0)
    for c in counters + sender_counters:
        c.errors.clear()

    await ctl.mark("start")
    cpu0, t0 = time.process_time(), time.monotonic()
    end = t0 + spec.duration
    stalls = [0]

    async def saturate(i: int, conn: Conn) -> None:
        flow, seq = flows[i], 0
        while time.monotonic() < end:
            if flow.sent - len(flow.received) >= spec.window:
                flow.progress.clear()
                try:
                    await asyncio.wait_for(flow.progress.wait(), 10.0)
                except TimeoutError:
                    stalls[0] += 1
                    return
                continue
            seq += 1
            flow.sent = seq
            conn.send(body("B", i, seq, time.monotonic()))
            if conn.writer.transport.get_write_buffer_size() > 1 << 16:
                await conn.writer.drain()

    async def paced(i: int, conn: Conn) -> None:
        flow, seq = flows[i], 0
        interval = n / spec.rate
        due = t0 + interval * i / n  # pairs staggered evenly
        while due < end:
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            seq += 1
            flow.sent = seq
            conn.send(body("B", i, seq, due))
            if conn.writer.transport.get_write_buffer_size() > 1 << 16:
                await conn.writer.drain()
            due += interval

    run = saturate if spec.mode == "saturate" else paced
    await asyncio.wait_for(
        asyncio.gather(*(run(i, c) for i, c in enumerate(senders))), spec.duration + 60
    )
    send_end = time.monotonic()
    total_sent = sum(f.sent for f in flows)
    await drain(lambda: sum(len(f.received) for f in flows), total_sent, spec)
    gen_cpu = time.process_time() - cpu0
    last = phase["last"] or send_end
    await ctl.mark("end")
    await asyncio.sleep(0.3)  # late duplicates
    await close_all(senders + receivers)
    received = sum(len(f.received) for f in flows)
    span = max(last - t0, 1e-9)
    errors = [e for c in counters + sender_counters for e in c.errors]
    return {
        "mode": spec.mode,
        "offered_rate": spec.rate if spec.mode == "rate" else None,
        "sent": total_sent,
        "received": received,
        "lost": total_sent - received,
        "duplicated": sum(f.duplicates for f in flows),
        "stray": stray[0],
        "stalls": stalls[0],
        "errors": len(errors),
        "error_sample": [e.decode(errors="replace") for e in errors[:3]],
        "span": span,
        "send_seconds": send_end - t0,
        "rate": received / span,
        "p50_ms": ms(pct(latencies, 50)),
        "p99_ms": ms(pct(latencies, 99)),
        "max_ms": ms(max(latencies) if latencies else None),
        "gen_cpu": gen_cpu,
        "gen_wall": time.monotonic() - t0,
    }


async def w_muc(spec: Spec, ctl: Control) -> dict[str, Any]:
    """MUC fan-out: occupant 0 sends groupchat messages, every occupant counts them."""
    room = spec.room or f"bench@conference.{spec.domain}"
    users = [(f"m{i + 1}", spec.port(i)) for i in range(spec.occupants)]
    conns = await login_many(spec, users)
    # The joiner's own presence from the room carries status 110 (XEP-0045 §7.2.3).
    self_presence = re.compile(
        rb"<presence\b(?:(?!</presence>).)*?code=['\"]110['\"].*?</presence>", re.S
    )
    try:
        # Join one at a time; the first creates the room (and unlocks it: XEP-0045 §10.1.2).
        for i, conn in enumerate(conns):
            conn.send(
                f"<presence to='{room}/n{i + 1}'><x xmlns='http://jabber.org/protocol/muc'>"
                "<history maxstanzas='0'/></x></presence>"
            )
            joined = (await conn.until(self_presence, spec.timeout)).group(0)
            if re.search(rb"code=['\"]201['\"]", joined):
                conn.send(
                    f"<iq type='set' to='{room}' id='cfg1'>"
                    "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                    "<x xmlns='jabber:x:data' type='submit'/></query></iq>"
                )
                await conn.until(re.compile(rb"id=['\"]cfg1['\"]"), spec.timeout)
        await asyncio.sleep(1.0)  # the last joins' presence broadcasts settle
        flows_recv: list[set[int]] = [set() for _ in conns]
        dup = [0]
        latencies: list[float] = []
        echo = Flow()
        last = [0.0]

        def on_body(kind: bytes, pair: int, seq: int, sent_at: float, now: float, i: int) -> None:
            if kind != b"G":
                return
            if seq in flows_recv[i]:
                dup[0] += 1
                return
            flows_recv[i].add(seq)
            latencies.append(now - sent_at)
            last[0] = now
            if i == 0:
                echo.received.add(seq)
                echo.progress.set()

        counters = count_bodies(conns, on_body)
        sender = conns[0]
        await ctl.mark("start")
        cpu0, t0 = time.process_time(), time.monotonic()
        end = t0 + spec.duration
        seq = 0
        stalls = 0
        paced = spec.mode == "rate"
        due, interval = t0, 1.0 / spec.rate
        while time.monotonic() < end:
            if paced:
                # Fixed rate: latency counts from when the message was due, so a server that
                # falls behind shows it in p99 rather than in a slower sender.
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                sent_at = due
                due += interval
            elif echo.sent - len(echo.received) >= spec.window:
                echo.progress.clear()
                try:
                    await asyncio.wait_for(echo.progress.wait(), 10.0)
                except TimeoutError:
                    stalls += 1
                    break
                continue
            else:
                sent_at = time.monotonic()
            seq += 1
            echo.sent = seq
            sender.send(
                f"<message to='{room}' type='groupchat' id='g{seq}'>"
                f"<body>G 0 {seq} {sent_at:.6f} {PAD}</body></message>"
            )
            if sender.writer.transport.get_write_buffer_size() > 1 << 16:
                await sender.writer.drain()
        send_end = time.monotonic()
        expected = seq * len(conns)
        await drain(lambda: sum(len(s) for s in flows_recv), expected, spec)
        gen_cpu = time.process_time() - cpu0
        await ctl.mark("end")
        delivered = sum(len(s) for s in flows_recv)
        span = max((last[0] or send_end) - t0, 1e-9)
        errors = [e for c in counters for e in c.errors]
        return {
            "occupants": len(conns),
            "offered_rate": spec.rate if spec.mode == "rate" else None,
            "sent": seq,
            "delivered": delivered,
            "lost": expected - delivered,
            "duplicated": dup[0],
            "stalls": stalls,
            "errors": len(errors),
            "error_sample": [e.decode(errors="replace") for e in errors[:3]],
            "span": span,
            "rate": delivered / span,
            "p50_ms": ms(pct(latencies, 50)),
            "p99_ms": ms(pct(latencies, 99)),
            "gen_cpu": gen_cpu,
            "gen_wall": time.monotonic() - t0,
        }
    finally:
        await close_all(conns)


async def w_idle(spec: Spec, ctl: Control) -> dict[str, Any]:
    """Open ``connections`` authenticated, bound, available streams; hold them."""
    users = spec.users or [f"i{i + 1}" for i in range(spec.connections)]
    users = users[: spec.connections]
    await ctl.mark("before")
    cpu0, t0 = time.process_time(), time.monotonic()
    failures: list[str] = []
    conns = await login_many(spec, [(u, spec.port(i)) for i, u in enumerate(users)], failures)
    login_seconds = time.monotonic() - t0
    gen_cpu = time.process_time() - cpu0
    drained = [0]

    def count(chunk: bytes, now: float) -> None:
        drained[0] += len(chunk)

    for conn in conns:  # keep reading so the server never blocks on a full socket
        conn.start_reader(count)
    await asyncio.sleep(spec.hold)
    await ctl.mark("holding")
    alive = sum(1 for c in conns if c.task is not None and not c.task.done())
    await close_all(conns)
    return {
        "connections": len(conns),
        "alive_at_mark": alive,
        "errors": len(failures),
        "error_sample": failures[:3],
        "login_seconds": login_seconds,
        "rate": len(conns) / login_seconds,
        "mechanism": conns[0].mechanism if conns else "",
        "gen_cpu": gen_cpu,
        "gen_wall": login_seconds,
    }


async def w_archive(spec: Spec, ctl: Control) -> dict[str, Any]:
    """Fill an archive (``fill`` messages a1 -> a2), then time last-page MAM queries."""
    a1, a2 = await login_many(spec, [("a1", spec.port(0)), ("a2", spec.port(0))])
    got: set[int] = set()
    progress = asyncio.Event()
    target = spec.fill
    already = int(spec.extra.get("already", 0))

    def on_body(kind: bytes, pair: int, seq: int, sent_at: float, now: float) -> None:
        if kind == b"B":
            got.add(seq)
            progress.set()

    counter = Counter(on_body)
    a2.start_reader(counter.feed)
    t_fill = time.monotonic()
    seq = already
    # Fill in-line on a1's stream, then read the query answers from a1 sequentially.
    while seq < target:
        if seq - already - len(got) >= spec.window:
            progress.clear()
            await asyncio.wait_for(progress.wait(), 30.0)
            continue
        seq += 1
        a1.send(
            f"<message to='a2@{spec.domain}' type='chat' id='f{seq}'>"
            f"<body>B 0 {seq} {time.monotonic():.6f} {PAD}</body></message>"
        )
        if a1.writer.transport.get_write_buffer_size() > 1 << 16:
            await a1.writer.drain()
    deadline = time.monotonic() + 60
    while len(got) < target - already and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    fill_seconds = time.monotonic() - t_fill
    await asyncio.sleep(1.0)  # the archive writes behind the last deliveries
    a1.buf.clear()
    with contextlib.suppress(TimeoutError):
        while True:
            a1.buf += await asyncio.wait_for(a1.reader.read(1 << 18), 0.2)
    a1.buf.clear()
    await ctl.mark("start")
    cpu0, t0 = time.process_time(), time.monotonic()
    times: list[float] = []
    items: list[int] = []
    errors = 0
    end = t0 + spec.duration
    for q in range(spec.queries):
        if time.monotonic() > end:
            break
        started = time.monotonic()
        a1.send(
            f"<iq type='set' id='q{q}'><query xmlns='urn:xmpp:mam:2' queryid='qq{q}'>"
            "<set xmlns='http://jabber.org/protocol/rsm'>"
            f"<max>{spec.page}</max><before/></set></query></iq>"
        )
        m = await a1.until(iq_rx(f"q{q}"), spec.timeout)
        times.append(time.monotonic() - started)
        if re.search(rb"type=['\"]error", m.group(0)):
            errors += 1
        items.append(len(MAM_RESULT.findall(m.string)))
    gen_cpu = time.process_time() - cpu0
    await ctl.mark("end")
    await close_all([a1, a2])
    return {
        "archive": target,
        "filled": len(got),
        "fill_seconds": fill_seconds,
        "queries": len(times),
        "items_min": min(items) if items else 0,
        "items_max": max(items) if items else 0,
        "errors": errors,
        "p50_ms": ms(pct(times, 50)),
        "p99_ms": ms(pct(times, 99)),
        "gen_cpu": gen_cpu,
        "gen_wall": time.monotonic() - t0,
    }


WORKLOADS = {
    "register": w_register,
    "logins": w_logins,
    "messages": w_messages,
    "muc": w_muc,
    "idle": w_idle,
    "archive": w_archive,
}


async def amain(spec: Spec) -> dict[str, Any]:
    ctl = Control(spec.sync)
    return await WORKLOADS[spec.workload](spec, ctl)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--spec", required=True, help="JSON object of Spec fields")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    raw = json.loads(args.spec)
    raw["mechanisms"] = tuple(raw.get("mechanisms", Spec.mechanisms))
    spec = Spec(**raw)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = spec.connections * 2 + 1000
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    loop_name = "asyncio"
    runner: Callable[[Any], Any] = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop

            runner, loop_name = uvloop.run, "uvloop"
        except ImportError:
            pass
    result = runner(amain(spec))
    result["loop"] = loop_name
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
