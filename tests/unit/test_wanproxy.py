"""The WAN emulator with real loopback sockets: delays, lossy-link integrity, cuts, cleanup.

Site a is 127.0.0.11, b (the exposed node) 127.0.0.12, c 127.0.0.13; the node behind b is a
threaded echo server that timestamps arrivals, so one-way delay is measured directly (same
monotonic clock in one process). Timing bounds are generous: the machine is noisy and this
only proves the emulator adds (at least) the configured delay, not that it is fast.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.wanproxy import WanEmulator

A, B, C = "127.0.0.11", "127.0.0.12", "127.0.0.13"
SLACK = 0.15
TIMEOUT = 5.0


class EchoServer:
    """Echoes everything; records the arrival time of each chunk and counts ended connections."""

    def __init__(self, host: str = "127.0.0.42") -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.2)
        self.addr: tuple[str, int] = self.sock.getsockname()[:2]
        self.arrivals: list[float] = []
        self.peers: list[str] = []
        self.ended = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.append(peer[0])
            t = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                self.arrivals.append(time.monotonic())
                if not data:
                    break
                try:
                    conn.sendall(data)
                except OSError:
                    break
        self.ended += 1

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._accepter.join(TIMEOUT)
        for t in self._threads:
            t.join(TIMEOUT)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    srv = EchoServer()
    yield srv
    srv.close()


@pytest.fixture
def wan() -> Iterator[WanEmulator]:
    emu = WanEmulator(seed=1)
    emu.add_site("a", A)
    emu.add_site("b", B)
    emu.add_site("c", C)
    yield emu
    errors = emu.errors
    emu.close()
    assert errors == []


def _expose(wan: WanEmulator, echo: EchoServer) -> tuple[str, int]:
    return wan.expose("b", (B, 0), echo.addr)


def _dial(src_ip: str, addr: tuple[str, int]) -> socket.socket:
    s = socket.create_connection(addr, timeout=TIMEOUT, source_address=(src_ip, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _probe(s: socket.socket, echo: EchoServer) -> tuple[float, float]:
    """One small round trip; returns (one-way delay to the server, round-trip time)."""
    seen = len(echo.arrivals)
    sent = time.monotonic()
    s.sendall(b"ping")
    assert _recv_exact(s, 4) == b"ping"
    rtt = time.monotonic() - sent
    return echo.arrivals[seen] - sent, rtt


def _is_dead(s: socket.socket) -> bool:
    """True if the connection was closed or reset (an echo never comes back)."""
    s.settimeout(2.0)
    try:
        s.sendall(b"x")
        return s.recv(1) == b""
    except (ConnectionError, TimeoutError, OSError):
        return True


def _wait_for(cond: object, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(0.01)
    return False


def test_one_way_delay_is_at_least_the_configured_delay(wan: WanEmulator, echo: EchoServer) -> None:
    addr = _expose(wan, echo)
    wan.set_link("a", "b", delay=0.05)
    with _dial(A, addr) as s:
        for _ in range(4):
            one_way, rtt = _probe(s, echo)
            assert 0.05 <= one_way < 0.05 + SLACK
            assert 0.10 <= rtt < 0.10 + 2 * SLACK
    assert echo.peers == [A]  # upstream connection keeps the site's source IP
    st = wan.stats()
    assert st["links"]["a->b"]["bytes"] == 16
    assert st["links"]["b->a"]["bytes"] == 16


def test_delay_depends_on_the_source_site_through_one_listener(
    wan: WanEmulator, echo: EchoServer
) -> None:
    addr = _expose(wan, echo)
    wan.set_link("a", "b", delay=0.01)
    wan.set_link("c", "b", delay=0.15)
    with _dial(A, addr) as sa, _dial(C, addr) as sc, _dial("127.0.0.1", addr) as local:
        fast = min(_probe(sa, echo)[0] for _ in range(3))
        slow = min(_probe(sc, echo)[0] for _ in range(3))
        unknown = min(_probe(local, echo)[0] for _ in range(3))
    assert 0.01 <= fast < 0.15
    assert 0.15 <= slow < 0.15 + SLACK
    assert unknown < 0.01 + SLACK  # unknown source: a zero-delay local link
    assert "127.0.0.1->b" in wan.stats()["links"]


def test_jitter_never_reorders(wan: WanEmulator, echo: EchoServer) -> None:
    addr = _expose(wan, echo)
    wan.set_link("a", "b", delay=0.005, jitter=0.03)
    payload = b"".join(b"%05d;" % i for i in range(200))
    with _dial(A, addr) as s:
        for i in range(200):
            s.sendall(b"%05d;" % i)
        assert _recv_exact(s, len(payload)) == payload


def test_half_close_fin_is_delayed_behind_the_data(wan: WanEmulator, echo: EchoServer) -> None:
    addr = _expose(wan, echo)
    wan.set_link("a", "b", delay=0.03)
    with _dial(A, addr) as s:
        s.sendall(b"last words")
        s.shutdown(socket.SHUT_WR)  # FIN must not overtake the delayed data
        assert _recv_exact(s, 10) == b"last words"
        assert s.recv(1) == b""  # the node's FIN came back through the proxy: orderly close
    assert _wait_for(lambda: wan.stats()["connections"]["closed"] == 1)
    assert wan.stats()["connections"]["active"] == 0


def test_lossy_link_keeps_5mb_exact_and_ordered(wan: WanEmulator, echo: EchoServer) -> None:
    addr = _expose(wan, echo)
    wan.set_link("a", "b", delay=0.005, jitter=0.002, loss=0.2, rto=0.01)
    payload = os.urandom(5 * 1024 * 1024)
    with _dial(A, addr) as s:
        s.settimeout(TIMEOUT)
        sender = threading.Thread(target=s.sendall, args=(payload,), daemon=True)
        sender.start()
        got = _recv_exact(s, len(payload))
        sender.join(TIMEOUT)
    assert got == payload
    links = wan.stats()["links"]
    assert links["a->b"]["bytes"] == links["b->a"]["bytes"] == len(payload)
    assert links["a->b"]["lost"] > 0 and links["b->a"]["lost"] > 0


def test_cut_resets_live_connections_refuses_new_ones_and_heal_restores(
    wan: WanEmulator, echo: EchoServer
) -> None:
    addr = _expose(wan, echo)
    with _dial(A, addr) as sa, _dial(C, addr) as sc:
        _probe(sa, echo)
        _probe(sc, echo)
        wan.cut_link("a", "b")
        assert _is_dead(sa)
        assert _wait_for(lambda: echo.ended >= 1)  # the node's end was closed too
        _probe(sc, echo)  # c<->b is not cut
    with contextlib.suppress(OSError), _dial(A, addr) as again:
        assert _is_dead(again)
    assert wan.stats()["connections"]["refused"] >= 1

    wan.cut("b")  # now c is cut off from b as well
    with contextlib.suppress(OSError), _dial(C, addr) as sc2:
        assert _is_dead(sc2)
    with _dial("127.0.0.1", addr) as local:  # unknown sources are never cut
        _probe(local, echo)

    wan.heal_link("a", "b")
    with _dial(A, addr) as sa2:
        _probe(sa2, echo)
    with contextlib.suppress(OSError), _dial(C, addr) as sc3:
        assert _is_dead(sc3)
    wan.heal("b")
    with _dial(C, addr) as sc4:
        _probe(sc4, echo)
    wan.cut("a")
    wan.heal_all()
    assert wan.stats()["cut_links"] == []
    with _dial(A, addr) as sa3:
        _probe(sa3, echo)


def test_queue_is_bounded_when_the_node_stops_reading() -> None:
    sink = socket.create_server(("127.0.0.42", 0))
    sink.settimeout(TIMEOUT)
    with WanEmulator(max_queue=1 << 20) as emu, sink:
        emu.add_site("a", A)
        emu.add_site("b", B)
        addr = emu.expose("b", (B, 0), sink.getsockname()[:2])
        with _dial(A, addr) as s:
            peer, _ = sink.accept()
            with peer:
                s.setblocking(False)
                chunk = b"\0" * 65536
                sent = 0
                stalled_since = time.monotonic()
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline and time.monotonic() - stalled_since < 0.3:
                    try:
                        sent += s.send(chunk)
                        stalled_since = time.monotonic()
                    except BlockingIOError:
                        time.sleep(0.005)
        peak = emu.stats()["peak_queued"]
        assert 0 < peak <= (1 << 20) + 65536
        assert sent < 64 * 1024 * 1024  # the sender was throttled, not buffered without limit
        assert emu.errors == []


def test_close_stops_the_thread_and_all_sockets(echo: EchoServer) -> None:
    emu = WanEmulator()
    emu.add_site("a", A)
    emu.add_site("b", B)
    addr = emu.expose("b", (B, 0), echo.addr)
    with _dial(A, addr) as s:
        _probe(s, echo)
        emu.close()
        assert not emu.thread.is_alive()
        assert not [t for t in threading.enumerate() if t.name == "wanproxy"]
        assert _is_dead(s)
    with pytest.raises(OSError):
        _dial(A, addr).close()
    with pytest.raises(RuntimeError):
        emu.add_site("c", C)
    emu.close()  # idempotent
    assert emu.errors == []
