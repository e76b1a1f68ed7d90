"""XMPP over WebSocket (RFC 7395) with xmpp.js, an independent client, against the real server:
login over wss:// and ws:// (trusted loopback), messages both ways with a slixmpp client on TCP,
MAM, XEP-0198 resumption after a lost WebSocket; XEP-0156 host-meta; and hostile WebSocket and
HTTP clients (bad framing, oversized and malformed frames, slowloris) that get clear errors and
stall no one."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import wsproto
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from tests.integration.conftest import running_server
from tests.integration.jsdriver import (
    JsClient,
    chat_with_tcp_peer_and_read_mam,
    missed_message_arrives_once,
)
from tests.integration.server import XesServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    with running_server(
        tmp_path_factory.mktemp("ws") / "node",
        extra="[auth]\nmax_failures = 1000\n[limits]\nmax_stanza_bytes = 20000\n",
    ) as srv:
        yield srv


def wss(srv: XesServer) -> str:
    return f"wss://127.0.0.1:{srv.https}/xmpp-websocket"


def test_xmppjs_over_websocket_talks_to_tcp_client_and_reads_mam(web: XesServer) -> None:
    web.add_user("wsa", "pw-wsa")
    web.add_user("tcpb", "pw-tcpb")
    js = JsClient(wss(web), web.domain, "wsa", "pw-wsa", "browser")
    try:
        online = js.expect("online")
        assert online["jid"].startswith(f"wsa@{web.domain}/")
        assert online["sm"], "XEP-0198 is offered over WebSocket too"
        chat_with_tcp_peer_and_read_mam(js, web, online, "tcpb", "websocket")
    finally:
        js.close()


def test_websocket_resumption_delivers_what_was_missed_once(web: XesServer) -> None:
    """The WebSocket drops without <close/>; xmpp.js reconnects and resumes (XEP-0198); the
    message sent meanwhile arrives exactly once."""
    web.add_user("wsr", "pw-wsr")
    web.add_user("tcpr", "pw-tcpr")
    js = JsClient(wss(web), web.domain, "wsr", "pw-wsr", "tab")
    try:
        online = js.expect("online")
        assert online["sm"] and online["id"]
        js.send(op="cut")
        js.expect("cut")
        missed_message_arrives_once(js, web, online, "tcpr")
    finally:
        js.close()
    assert "session_resumed" in web.log_path.read_text()


def test_plain_ws_from_a_trusted_proxy_address_logs_in(web: XesServer) -> None:
    web.add_user("wsp", "pw-wsp")
    js = JsClient(f"ws://127.0.0.1:{web.http}/xmpp-websocket", web.domain, "wsp", "pw-wsp", "p")
    try:
        assert js.expect("online")["jid"].startswith(f"wsp@{web.domain}/")
    finally:
        js.close()


def test_host_meta_advertises_the_websocket_endpoint(web: XesServer) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    base = f"https://127.0.0.1:{web.https}"
    with urllib.request.urlopen(f"{base}/.well-known/host-meta.json", context=ctx) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        doc = json.load(resp)
    links = {link["rel"]: link["href"] for link in doc["links"]}
    assert links["urn:xmpp:alt-connections:websocket"] == wss(web)
    with urllib.request.urlopen(f"{base}/.well-known/host-meta", context=ctx) as resp:
        xrd = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("application/xrd+xml")
    assert f"href='{wss(web)}'" in xrd


# -- hostile clients -----------------------------------------------------------------------


class RawWs:
    """A WebSocket client built from wsproto over a plain socket (ws:// on loopback)."""

    def __init__(self, port: int, subprotocols: tuple[str, ...] = ("xmpp",), **headers: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        extra = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
        self.sock.sendall(
            self.ws.send(
                Request(
                    host="127.0.0.1",
                    target="/xmpp-websocket",
                    subprotocols=list(subprotocols),
                    extra_headers=extra,
                )
            )
        )
        self.events: list[object] = []

    def handshake(self) -> object:
        return self.next(AcceptConnection, RejectConnection)

    def next(self, *kinds: type, timeout: float = 10.0) -> object:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.ws.events():
                self.events.append(event)
                if isinstance(event, kinds):
                    return event
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                self.ws.receive_data(None)
                for event in self.ws.events():
                    self.events.append(event)
                    if isinstance(event, kinds):
                        return event
                raise AssertionError(f"closed before {kinds}; got {self.events}")
            self.ws.receive_data(data)

    def text(self, data: str) -> None:
        self.sock.sendall(self.ws.send(wsproto.events.Message(data=data)))

    def texts_until_close(self) -> list[str]:
        out = []
        while True:
            event = self.next(TextMessage, CloseConnection)
            if isinstance(event, CloseConnection):
                return out
            out.append(event.data)  # type: ignore[attr-defined]


def _open(domain: str) -> str:
    return f"<open xmlns='{FRAMING}' to='{domain}' version='1.0'/>"


def test_first_message_must_be_open(web: XesServer) -> None:
    ws = RawWs(web.http)
    assert isinstance(ws.handshake(), AcceptConnection)
    ws.text("<message to='x@y'><body>no open first</body></message>")
    texts = ws.texts_until_close()
    assert texts[0].startswith(f"<open xmlns='{FRAMING}'")
    assert "not-well-formed" in texts[1] and texts[1].startswith("<error")
    assert texts[-1] == f"<close xmlns='{FRAMING}'/>"


def test_open_reply_features_and_close_are_rfc7395(web: XesServer) -> None:
    ws = RawWs(web.http)
    assert isinstance(ws.handshake(), AcceptConnection)
    assert ws.events[0].subprotocol == "xmpp"  # type: ignore[attr-defined]
    ws.text(_open(web.domain))
    opened = ws.next(TextMessage).data  # type: ignore[attr-defined]
    assert opened.startswith(f"<open xmlns='{FRAMING}'") and "version='1.0'" in opened
    features = ws.next(TextMessage).data  # type: ignore[attr-defined]
    assert features.startswith("<features xmlns='http://etherx.jabber.org/streams'>")
    assert "SCRAM-SHA-256" in features and "starttls" not in features
    ws.text(f"<close xmlns='{FRAMING}'/>")
    assert ws.texts_until_close() == [f"<close xmlns='{FRAMING}'/>"]


def test_oversized_stanza_gets_policy_violation(web: XesServer) -> None:
    ws = RawWs(web.http)
    ws.handshake()
    ws.text(_open(web.domain))
    ws.next(TextMessage)
    ws.next(TextMessage)
    ws.text("<message><body>" + "x" * 30000 + "</body></message>")
    texts = ws.texts_until_close()
    assert any("policy-violation" in t for t in texts), texts


def test_malformed_frame_closes_with_protocol_error(web: XesServer) -> None:
    ws = RawWs(web.http)
    ws.handshake()
    # An unmasked client frame with a reserved opcode: RFC 6455 §5.1/5.2 protocol errors.
    ws.sock.sendall(bytes([0x83, 0x02]) + b"hi")
    event = ws.next(CloseConnection)
    assert event.code == 1002  # type: ignore[attr-defined]


def test_upgrade_without_xmpp_subprotocol_is_refused(web: XesServer) -> None:
    ws = RawWs(web.http, subprotocols=("chat",))
    event = ws.handshake()
    assert isinstance(event, RejectConnection) and event.status_code == 400


def test_disallowed_origin_and_untrusted_plain_http_are_refused(tmp_path: Path) -> None:
    extra = '[http]\nallowed_origins = ["https://chat.example"]\ntrusted_proxies = []\n'
    with running_server(tmp_path / "node", extra=extra) as srv:
        ws = RawWs(srv.http, origin="https://evil.example")
        event = ws.handshake()
        assert isinstance(event, RejectConnection) and event.status_code == 403
        # Plain ws:// from an address that is not a trusted proxy: TLS is required.
        ws = RawWs(srv.http, origin="https://chat.example")
        event = ws.handshake()
        assert isinstance(event, RejectConnection) and event.status_code == 403
        body = ws.next(RejectData)
        assert b"wss://" in body.data  # type: ignore[attr-defined]


def test_slowloris_and_huge_headers_stall_no_one(tmp_path: Path) -> None:
    extra = "[http]\nheader_timeout = 2.0\nmax_header_bytes = 4096\n"
    with running_server(tmp_path / "node", extra=extra) as srv:
        srv.add_user("slow", "pw-slow")
        slow = [socket.create_connection(("127.0.0.1", srv.http)) for _ in range(20)]
        for s in slow:
            s.sendall(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n")  # never finished
        huge = socket.create_connection(("127.0.0.1", srv.http), timeout=10)
        huge.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        assert huge.recv(100).startswith(b"HTTP/1.1 431")
        # Meanwhile a WebSocket client logs in as if nothing happened.
        js = JsClient(
            f"wss://127.0.0.1:{srv.https}/xmpp-websocket", srv.domain, "slow", "pw-slow", "ok"
        )
        try:
            js.expect("online")
        finally:
            js.close()
        for s in slow:
            s.settimeout(10)
            assert s.recv(100).startswith(b"HTTP/1.1 408"), "the slow head timed out"
            s.close()
