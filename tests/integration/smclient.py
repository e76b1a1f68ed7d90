"""A raw-socket XEP-0198 client for exact control of acknowledgements and resumption.

It counts every stanza it receives (XEP-0198 §4), answers ``<r/>`` only when told to, and can
resume on any port; parsing uses the standard library's pull parser, not xes code.
"""

from __future__ import annotations

import contextlib
import time
import xml.etree.ElementTree as ET

from tests.integration.rawclient import RawClient

SM = "urn:xmpp:sm:3"
CLIENT = "jabber:client"
STANZAS = ("message", "presence", "iq")


class SmClient(RawClient):
    def __init__(self, port: int, timeout: float = 10.0) -> None:
        super().__init__(port, timeout)
        self.handled = 0
        """Stanzas received since enable/resume accounting (not wrapped)."""
        self.auto_ack = True
        self.received: list[ET.Element] = []
        self._parser: ET.XMLPullParser | None = None
        self._depth = 0

    def _reset_parser(self) -> None:
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._parser.feed(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        self._depth = 0
        for _ in self._parser.read_events():
            pass
        self._depth = 1

    def login_sm(
        self,
        server,
        user: str,
        password: str,
        resource: str,
        resume: bool = True,  # type: ignore[no-untyped-def]
    ) -> tuple[str, str]:
        """Log in, bind, enable stream management; returns (full JID, SM id)."""
        jid = self.login_parsed(server, user, password, resource)
        self.send(f"<enable xmlns='{SM}' resume='{'true' if resume else 'false'}'/>")
        enabled = self.wait_for(lambda e: e.tag in (f"{{{SM}}}enabled", f"{{{SM}}}failed"))
        assert enabled.tag == f"{{{SM}}}enabled", ET.tostring(enabled)
        return jid, enabled.get("id", "")

    def login_parsed(
        self,
        server,
        user: str,
        password: str,
        resource: str,
        presence: bool = False,  # type: ignore[no-untyped-def]
    ) -> str:
        """Log in and bind; from here on what arrives is parsed (and counted). Returns the JID."""
        jid = self.login(server, user, password, resource)
        self._start(self.buffer)
        if presence:
            self.send("<presence/>")
        return jid

    def resume_on(self, server, user: str, password: str, previd: str, h: int) -> ET.Element:  # type: ignore[no-untyped-def]
        """On a fresh connection: authenticate and send ``<resume/>``; the answer element."""
        self.starttls(server.domain)
        answer = self.scram_login(server.domain, user, password)
        assert b"<success" in answer, answer
        self.buffer = b""
        self.open_stream(server.domain)
        self._start(self.buffer)
        # XEP-0198 §5: the resumed stream goes on counting from what we said we handled.
        self.handled = h
        self.send(f"<resume xmlns='{SM}' previd='{previd}' h='{h % 2**32}'/>")
        return self.wait_for(lambda e: e.tag in (f"{{{SM}}}resumed", f"{{{SM}}}failed"))

    def _start(self, leftover: bytes) -> None:
        self.buffer = b""
        self._reset_parser()
        if leftover:
            self._feed(leftover)

    def _feed(self, data: bytes) -> None:
        assert self._parser is not None
        self._parser.feed(data)
        for event, elem in self._parser.read_events():
            if event == "start":
                self._depth += 1
                continue
            self._depth -= 1
            if self._depth != 1:
                continue
            name = elem.tag.split("}", 1)[-1]
            if elem.tag.startswith(f"{{{CLIENT}}}") and name in STANZAS:
                self.handled += 1
            if elem.tag == f"{{{SM}}}r" and self.auto_ack:
                self.ack()
            self.received.append(elem)

    def ack(self) -> None:
        self.send(f"<a xmlns='{SM}' h='{self.handled % 2**32}'/>")

    def pump(self, timeout: float) -> bool:
        """Read what arrives within ``timeout``; False once the connection is closed."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        self._feed(chunk)
        return True

    def wait_for(self, predicate, timeout: float = 10.0) -> ET.Element:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for elem in self.received[seen:]:
                if predicate(elem):
                    self.received.remove(elem)
                    return elem
            seen = len(self.received)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tags = [e.tag for e in self.received[-5:]]
                raise TimeoutError(f"not received; last: {tags}")
            if not self.pump(min(remaining, 0.5)):
                raise ConnectionError("closed by the server")

    def messages(self) -> list[ET.Element]:
        out = [e for e in self.received if e.tag == f"{{{CLIENT}}}message"]
        for e in out:
            self.received.remove(e)
        return out

    def cut(self) -> None:
        """Drop the TCP connection without a goodbye (as a network failure would)."""
        with contextlib.suppress(OSError):
            self.sock.close()


def body(elem: ET.Element) -> str | None:
    b = elem.find(f"{{{CLIENT}}}body")
    return None if b is None else b.text
