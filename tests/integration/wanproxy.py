"""User-space WAN emulator for Raft links: a delaying, lossy, cuttable TCP proxy.

Why this exists: the test kernel has no ``netem`` qdisc, so multi-site behaviour (slow links,
lossy links, partitions) cannot be shaped in the kernel. Instead a proxy sits in front of every
cluster node's Raft port and the nodes are told to dial the proxy (the *advertised* address)
instead of each other (the *real* address).

Model
-----
* A **site** is a name plus the source IP its node(s) bind outgoing Raft connections to
  (n1 -> 127.0.0.11, n2 -> 127.0.0.12, ...; every 127/8 address works on Linux). The proxy tells
  which site a connection comes *from* by its source IP, and which site it goes *to* by which
  listener accepted it (:meth:`WanEmulator.expose`).
* A **link** joins two sites and is symmetric: :meth:`WanEmulator.set_link` applies the same
  one-way delay, jitter and loss to both directions. Unconfigured links have zero delay.
* A connection from an **unknown source IP** (a CLI tool or test client on 127.0.0.1, say) is
  treated as local to the site it dials: zero delay, no loss, never cut. Likewise a site
  dialling itself through the proxy.

Delay and loss
--------------
Each chunk read from one side is forwarded after ``delay + uniform(0, jitter)``; chunks in one
direction never overtake each other (release time = max(previous release, now + delay)). TCP
never loses bytes from the middle of a stream, so "loss" is emulated the way a real stream
experiences it: a lost chunk arrives an extra retransmission timeout (``rto``) late and
everything behind it waits too (head-of-line blocking). Bytes are never dropped or reordered.

Cuts
----
Cutting a link closes every connection crossing it abortively (RST on both ends) and discards
whatever was queued for them; new connections across it are accepted and reset at once until
the link is healed. So a partition here looks like a connection reset rather than a silent
black hole, and Raft simply reconnects after :meth:`WanEmulator.heal`. Cuts are stored per pair
of sites: ``cut("c")`` cuts c from every site known at that moment, and ``heal_link("a", "c")``
heals exactly that one link.

Backpressure
------------
At most ``max_queue`` bytes (default 8 MiB) wait in one direction of one connection; beyond
that the proxy stops reading the sending side, so the sender feels normal TCP flow control and
the proxy's memory stays bounded.

The emulator runs its own asyncio loop in a daemon thread; the public methods are synchronous,
thread-safe, and must not be called from that loop's thread. It logs nothing: unexpected loop
errors are collected in :attr:`WanEmulator.errors` for tests to assert on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["DEFAULT_MAX_QUEUE", "DEFAULT_RTO", "LinkParams", "WanEmulator"]

DEFAULT_RTO = 0.2
"""Extra delay of a "lost" chunk: roughly Linux's minimum TCP retransmission timeout."""
DEFAULT_MAX_QUEUE = 8 * 1024 * 1024
"""Bytes queued per connection direction before the proxy stops reading the sender."""
READ_SIZE = 64 * 1024
CONNECT_TIMEOUT = 5.0
CALL_TIMEOUT = 10.0

T = TypeVar("T")
Addr = tuple[str, int]


@dataclass(frozen=True)
class LinkParams:
    """Shape of one (symmetric) link; ``rto`` None means the emulator's default."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    rto: float | None = None


_LOCAL = LinkParams()


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close abortively with an RST, so the peer sees a reset, not an orderly FIN."""
    if writer is None:
        return
    transport = writer.transport
    if transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _close(writer: asyncio.StreamWriter | None) -> None:
    """Orderly close (flushes what the transport still buffers)."""
    if writer is not None and not writer.transport.is_closing():
        writer.transport.close()


class _Conn:
    """One proxied connection: client side, upstream side and the task pumping between them."""

    def __init__(
        self,
        src: str,
        dst: str,
        src_ip: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.src = src  # site name, or the raw IP for an unknown source
        self.dst = dst
        self.src_ip = src_ip
        self.client_reader = reader
        self.client_writer = writer
        self.upstream: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.killed = False

    def kill(self) -> None:
        """Reset both ends and stop pumping; queued chunks are dropped with the task."""
        self.killed = True
        _reset(self.client_writer)
        _reset(self.upstream)
        if self.task is not None:
            self.task.cancel()


class WanEmulator:
    """Delaying, lossy, cuttable TCP proxy between named sites (see the module docstring)."""

    def __init__(
        self,
        *,
        rto: float = DEFAULT_RTO,
        max_queue: int = DEFAULT_MAX_QUEUE,
        seed: int | None = None,
    ) -> None:
        self.rto = rto
        self.max_queue = max_queue
        self._rng = random.Random(seed)
        # Everything below is owned by the loop thread once the loop runs.
        self._sites: dict[str, str] = {}
        self._ip_site: dict[str, str] = {}
        self._links: dict[frozenset[str], LinkParams] = {}
        self._cut: set[frozenset[str]] = set()
        self._servers: list[asyncio.Server] = []
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._link_stats: dict[str, dict[str, int]] = {}
        self._conn_stats = {"accepted": 0, "refused": 0, "closed": 0, "cut": 0, "failed": 0}
        self._peak_queued = 0
        self._errors: list[str] = []
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._on_loop_error)
        self._thread = threading.Thread(target=self._run_loop, name="wanproxy", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- public, any other thread

    def add_site(self, name: str, ip: str) -> None:
        """Declare a site and the source IP its nodes bind outgoing connections to."""

        def do() -> None:
            if name in self._sites:
                raise ValueError(f"site {name!r} already exists")
            if ip in self._ip_site:
                raise ValueError(f"IP {ip} already belongs to site {self._ip_site[ip]!r}")
            self._sites[name] = ip
            self._ip_site[ip] = name

        self._call(do)

    def expose(
        self, site: str, listen: Addr, target: Addr, *, preserve_source: bool = True
    ) -> Addr:
        """Listen on ``listen`` (the advertised address) and forward to ``target`` (the real one).

        Returns the bound listen address (useful with port 0). With ``preserve_source`` the
        upstream connection is bound to the client's source IP when both are loopback, so the
        node's own logs still show which site dialled it.
        """

        async def do() -> Addr:
            self._need_site(site)

            def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                self._accept(site, target, preserve_source, reader, writer)

            server = await asyncio.start_server(on_accept, listen[0], listen[1])
            self._servers.append(server)
            host, port = server.sockets[0].getsockname()[:2]
            return (host, port)

        return self._call_async(do())

    def set_link(
        self,
        a: str,
        b: str,
        delay: float = 0.0,
        jitter: float = 0.0,
        loss: float = 0.0,
        rto: float | None = None,
    ) -> None:
        """Shape the a<->b link (both directions). Applies to new chunks of live connections too."""
        if delay < 0 or jitter < 0 or not 0.0 <= loss < 1.0 or (rto is not None and rto < 0):
            raise ValueError("need delay >= 0, jitter >= 0, 0 <= loss < 1, rto >= 0")
        params = LinkParams(delay, jitter, loss, rto)
        self._call(lambda: self._links.__setitem__(self._pair(a, b), params))

    def cut(self, site: str) -> None:
        """Partition ``site`` from every other currently known site, both directions."""

        def do() -> None:
            self._need_site(site)
            for other in self._sites:
                if other != site:
                    self._cut.add(frozenset((site, other)))
            self._enforce_cuts()

        self._call(do)

    def cut_link(self, a: str, b: str) -> None:
        """Cut the single a<->b link, both directions."""

        def do() -> None:
            self._cut.add(self._pair(a, b))
            self._enforce_cuts()

        self._call(do)

    def heal(self, site: str) -> None:
        """Heal every cut link touching ``site``."""

        def do() -> None:
            self._need_site(site)
            self._cut = {pair for pair in self._cut if site not in pair}

        self._call(do)

    def heal_link(self, a: str, b: str) -> None:
        """Heal the single a<->b link."""
        self._call(lambda: self._cut.discard(self._pair(a, b)))

    def heal_all(self) -> None:
        """Heal every cut."""
        self._call(self._cut.clear)

    def stats(self) -> dict[str, Any]:
        """Snapshot of counters.

        ``links`` maps ``"src->dst"`` (site names, or the raw IP of an unknown source) to
        ``bytes``/``chunks`` forwarded and ``lost`` (chunks held back by an emulated
        retransmission). ``connections`` counts accepted, refused (while cut), closed, cut
        (killed by a cut), failed (upstream unreachable) and active. ``peak_queued`` is the
        largest number of bytes ever waiting in one direction of one connection.
        """

        def do() -> dict[str, Any]:
            return {
                "links": {k: dict(v) for k, v in self._link_stats.items()},
                "connections": {**self._conn_stats, "active": len(self._conns)},
                "cut_links": sorted("-".join(sorted(pair)) for pair in self._cut),
                "peak_queued": self._peak_queued,
            }

        return self._call(do)

    @property
    def errors(self) -> list[str]:
        """Unexpected errors the loop reported (should stay empty; nothing is logged)."""
        return list(self._errors)

    @property
    def thread(self) -> threading.Thread:
        """The loop thread (tests check it is gone after :meth:`close`)."""
        return self._thread

    def close(self) -> None:
        """Stop listening, reset every connection, cancel every task and join the thread."""
        if self._closed:
            return
        self._check_thread()
        self._closed = True
        try:
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(CALL_TIMEOUT)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CALL_TIMEOUT)

    def __enter__(self) -> WanEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------ thread plumbing

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _check_thread(self) -> None:
        if threading.get_ident() == self._thread.ident:
            raise RuntimeError("WanEmulator methods must not be called from its own loop thread")

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop thread: all state is owned by it, so no locks are needed."""

        async def wrap() -> T:
            return fn()

        return self._call_async(wrap())

    def _call_async(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("WanEmulator is closed")
        self._check_thread()
        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(CALL_TIMEOUT)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self._errors.append(f"{context.get('message')}: {exc!r}" if exc else str(context))

    # ------------------------------------------------------------------------ loop-thread only

    def _need_site(self, site: str) -> None:
        if site not in self._sites:
            raise ValueError(f"unknown site {site!r}")

    def _pair(self, a: str, b: str) -> frozenset[str]:
        self._need_site(a)
        self._need_site(b)
        if a == b:
            raise ValueError("a link joins two different sites")
        return frozenset((a, b))

    def _is_local(self, src: str, dst: str) -> bool:
        """Unknown sources and a site dialling itself bypass shaping and cuts."""
        return src == dst or src not in self._sites

    def _is_cut(self, src: str, dst: str) -> bool:
        return not self._is_local(src, dst) and frozenset((src, dst)) in self._cut

    def _params(self, src: str, dst: str) -> LinkParams:
        if self._is_local(src, dst):
            return _LOCAL
        return self._links.get(frozenset((src, dst)), _LOCAL)

    def _enforce_cuts(self) -> None:
        for conn in list(self._conns):
            if self._is_cut(conn.src, conn.dst):
                self._conn_stats["cut"] += 1
                conn.kill()

    def _accept(
        self,
        dst: str,
        target: Addr,
        preserve_source: bool,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        peer = writer.get_extra_info("peername")
        src_ip = str(peer[0]) if peer else "?"
        src = self._ip_site.get(src_ip, src_ip)
        if self._closed or self._is_cut(src, dst):
            self._conn_stats["refused"] += 1
            _reset(writer)
            return
        self._conn_stats["accepted"] += 1
        conn = _Conn(src, dst, src_ip, reader, writer)
        self._conns.add(conn)
        bind = src_ip if preserve_source and _loopback(src_ip) and _loopback(target[0]) else None
        task = self._loop.create_task(self._run_conn(conn, target, bind))
        conn.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_conn(self, conn: _Conn, target: Addr, bind: str | None) -> None:
        graceful = False
        try:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        target[0], target[1], local_addr=(bind, 0) if bind else None
                    ),
                    CONNECT_TIMEOUT,
                )
            except (OSError, TimeoutError):
                self._conn_stats["failed"] += 1
                return
            conn.upstream = up_writer
            if conn.killed:  # cut while we were dialling
                return
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(conn.client_reader, up_writer, conn.src, conn.dst))
                tg.create_task(self._pump(up_reader, conn.client_writer, conn.dst, conn.src))
            graceful = True
        except Exception:  # a reset or I/O error on either side: pass it on as a reset
            graceful = False
        finally:
            self._conns.discard(conn)
            self._conn_stats["closed"] += 1
            for w in (conn.client_writer, conn.upstream):
                (_close if graceful else _reset)(w)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        src: str,
        dst: str,
    ) -> None:
        """Forward one direction until EOF, delaying each chunk; raises on reset."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        space = asyncio.Event()
        space.set()
        queued = 0
        counters = self._link_stats.setdefault(
            f"{src}->{dst}", {"bytes": 0, "chunks": 0, "lost": 0}
        )

        async def feed() -> None:
            nonlocal queued
            last = 0.0
            while True:
                data = await reader.read(READ_SIZE)
                p = self._params(src, dst)
                release = loop.time() + p.delay
                if p.jitter:
                    release += self._rng.uniform(0.0, p.jitter)
                if data and p.loss and self._rng.random() < p.loss:
                    release += self.rto if p.rto is None else p.rto
                    counters["lost"] += 1
                last = max(last, release)
                queue.put_nowait((last, data))  # b"" = EOF, forwarded as a (delayed) FIN
                if not data:
                    return
                queued += len(data)
                self._peak_queued = max(self._peak_queued, queued)
                if queued > self.max_queue:
                    space.clear()
                    await space.wait()

        async def drain() -> None:
            nonlocal queued
            while True:
                release, data = await queue.get()
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if writer.transport.is_closing():
                    raise ConnectionResetError("peer side closed")
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                counters["bytes"] += len(data)
                counters["chunks"] += 1
                queued -= len(data)
                if queued <= self.max_queue // 2:
                    space.set()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(feed())
            tg.create_task(drain())

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self._conns):
            conn.kill()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CALL_TIMEOUT)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        # Let the transports' connection_lost callbacks run so every socket is really closed.
        for _ in range(3):
            await asyncio.sleep(0)


def _loopback(host: str) -> bool:
    return host.startswith("127.")
