"""A raw-socket XMPP client for exact control in hostile-input and protocol tests."""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import time

import scramp

from tests.integration.server import XesServer


class RawClient:
    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout
        )
        self.buffer = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def recv_until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        """Read until ``marker`` appears (or the peer closes); returns everything read so far."""
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{marker!r} not received; got {self.buffer[-500:]!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        data, self.buffer = self.buffer, b""
        return data

    def recv_all_until_closed(self, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"connection not closed; got {self.buffer[-500:]!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                data, self.buffer = self.buffer, b""
                return data
            self.buffer += chunk

    def open_stream(self, domain: str) -> bytes:
        self.send(
            f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        return self.recv_until(b"</stream:features>")

    def starttls(self, domain: str) -> bytes:
        self.open_stream(domain)
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.recv_until(b"<proceed")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname=domain)
        return self.open_stream(domain)

    def recv_sasl(self, timeout: float = 10.0) -> bytes:
        """One SASL answer: challenge, success or failure, complete."""
        ends = (b"</challenge>", b"</success>", b"</failure>")
        deadline = time.monotonic() + timeout
        while True:
            for end in ends:
                if end in self.buffer:
                    cut = self.buffer.index(end) + len(end)
                    data, self.buffer = self.buffer[:cut], self.buffer[cut:]
                    return data
            if b"<success" in self.buffer and b"/>" in self.buffer.split(b"<success", 1)[1]:
                data, self.buffer = self.buffer, b""
                return data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no SASL answer; got {self.buffer!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                data, self.buffer = self.buffer, b""
                return data
            self.buffer += chunk

    def scram_login(
        self, domain: str, user: str, password: str, mech: str = "SCRAM-SHA-256"
    ) -> bytes:
        """SCRAM exchange; returns the server's final answer (success or failure)."""
        client = scramp.ScramClient([mech], user, password)
        first = base64.b64encode(client.get_client_first().encode()).decode()
        self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{first}</auth>"
        )
        reply = self.recv_sasl()
        if b"<challenge" not in reply:
            return reply
        challenge = reply.split(b">", 1)[1].split(b"<", 1)[0]
        client.set_server_first(base64.b64decode(challenge).decode())
        final = base64.b64encode(client.get_client_final().encode()).decode()
        self.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final}</response>")
        return self.recv_sasl()

    def login(self, server: XesServer, user: str, password: str, resource: str = "raw") -> str:
        self.starttls(server.domain)
        answer = self.scram_login(server.domain, user, password)
        assert b"<success" in answer, answer
        self.buffer = b""
        self.open_stream(server.domain)
        self.send(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        reply = self.recv_until(b"</iq>").decode()
        return reply.split("<jid>", 1)[1].split("</jid>", 1)[0]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
