"""An idle connection has no writer task and no parser state (issue 19); it must not show.

A bound stream with nothing to write runs no writer task, and one that has read nothing for a
sweep interval lets its XML parser go (``XmlStream.release``). These tests hold connections
idle past that and check that delivery, parsing and the slow-consumer limit are unchanged.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import running_server
from tests.integration.rawclient import RawClient
from tests.integration.server import XesServer
from xes.transport.c2s import IDLE_SWEEP_SECONDS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

QUEUE = 5


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    extra = f"[limits]\noutbound_queue = {QUEUE}\nstanzas_per_second = 100000.0\n"
    extra += "stanza_burst = 100000\n"
    with running_server(Path(tmp_path_factory.mktemp("idle")) / "node", extra=extra) as srv:
        for user in ("alice", "bob", "carol"):
            srv.add_user(user, f"{user}-pw")
        yield srv


def login(server: XesServer, user: str, presence: bool = True) -> RawClient:
    client = RawClient(server.c2s)
    client.login(server, user, f"{user}-pw")
    if presence:
        client.send("<presence/>")
        client.recv_until(b"<presence")
    return client


def test_message_reaches_a_connection_idle_for_several_sweeps(idle_server: XesServer) -> None:
    alice, bob = login(idle_server, "alice"), login(idle_server, "bob")
    try:
        time.sleep(3 * IDLE_SWEEP_SECONDS)  # bob's parser is let go, no writer runs
        alice.send(
            "<message to='bob@xes.test' type='chat' id='m1'><body>after a while</body></message>"
        )
        assert b"after a while" in bob.recv_until(b"</message>")
        time.sleep(3 * IDLE_SWEEP_SECONDS)
        # bob's next stanzas are parsed by a parser made again on demand, in the same stream
        # (namespace context, stanza after stanza, split reads).
        ping = "<iq type='get' id='p1' to='xes.test'><ping xmlns='urn:xmpp:ping'/></iq>"
        bob.send(ping[:17])
        time.sleep(0.2)
        bob.send(ping[17:] + "<message to='alice@xes.test' type='chat' id='m2'><body>back")
        assert b"result" in bob.recv_until(b"p1")
        bob.send("</body></message>")
        assert b"back" in alice.recv_until(b"</message>")
        time.sleep(3 * IDLE_SWEEP_SECONDS)
        bob.send("</stream:stream>")
        assert b"</stream:stream>" in bob.recv_all_until_closed(timeout=10)
    finally:
        alice.close()
        bob.close()


def test_a_consumer_that_does_not_read_hits_the_queue_limit(idle_server: XesServer) -> None:
    """The server never blocks on a client that stops reading: once the socket's buffers are
    full, stanzas queue up to ``limits.outbound_queue`` and then the client is dropped as too
    slow (the stanzas after that are not queued); others are served meanwhile."""
    alice = login(idle_server, "alice")
    carol = RawClient(idle_server.c2s)
    carol.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    carol.login(idle_server, "carol", "carol-pw")
    carol.send("<presence/>")
    carol.recv_until(b"<presence")
    time.sleep(2 * IDLE_SWEEP_SECONDS)  # idle first: no writer task is running
    try:
        body = "x" * 60000
        sent = 160  # about 10 MB: more than the kernel's socket buffers hold
        for i in range(sent):
            alice.send(
                f"<message to='carol@xes.test' type='chat' id='s{i}'><body>{i} {body}</body>"
                "</message>"
            )
            if i % 20 == 0:
                # The server still answers others while carol's queue fills.
                ping = f"<iq type='get' id='q{i}' to='xes.test'><ping xmlns='urn:xmpp:ping'/></iq>"
                alice.send(ping)
                assert f"q{i}".encode() in alice.recv_until(f"q{i}".encode(), timeout=30)
        deadline = time.monotonic() + 30
        while "client_too_slow" not in idle_server.log_text():
            assert time.monotonic() < deadline, "the slow client was never dropped"
            time.sleep(0.2)
        # What carol still gets is what the socket buffers and the bounded queue held.
        got = b""
        carol.sock.settimeout(3)
        try:
            while chunk := carol.sock.recv(1 << 20):
                got += chunk
        except OSError:
            pass  # nothing more for 3 s (a timeout is an OSError)
        received = got.count(b"</message>")
        assert 0 < received < sent
    finally:
        alice.close()
        carol.close()
