"""A raw BOSH client (XEP-0124/0206) over plain HTTP on loopback, for the tests that must send
what no library would: wrong rids and sids, early rids, retransmissions, floods of polls. Each
request is its own HTTP connection, so requests can be in flight together."""

from __future__ import annotations

import base64
import http.client
import threading
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import ElementTree

HTTPBIND = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
STREAMS = "http://etherx.jabber.org/streams"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"


class Reply:
    """One HTTP response: its status and, when it is XML, the ``<body/>``."""

    def __init__(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.data = data
        self.headers = headers
        self.body: Element | None = None
        if data.startswith(b"<"):
            self.body = ElementTree.fromstring(data)

    @property
    def attrs(self) -> dict[str, str]:
        assert self.body is not None, self.data
        return dict(self.body.attrib)

    @property
    def terminated(self) -> bool:
        return self.attrs.get("type") == "terminate"

    @property
    def condition(self) -> str | None:
        return self.attrs.get("condition")

    def children(self) -> list[Element]:
        assert self.body is not None, self.data
        return list(self.body)


def post(port: int, data: bytes, timeout: float = 30.0, **headers: str) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/http-bind",
            body=data,
            headers={"Content-Type": "text/xml; charset=utf-8", **headers},
        )
        resp = conn.getresponse()
        return Reply(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


class RawBosh:
    """One BOSH session, rids counted by hand."""

    def __init__(self, port: int, domain: str, rid: int = 1000) -> None:
        self.port = port
        self.domain = domain
        self.rid = rid
        self.sid = ""
        self.created: Reply | None = None

    def body(self, payload: str = "", rid: int | None = None, **attrs: Any) -> bytes:
        if rid is None:
            rid = self.next_rid()
        extra = "".join(f" {k.replace('__', ':')}='{v}'" for k, v in attrs.items())
        sid = f" sid='{self.sid}'" if self.sid else ""
        return (
            f"<body xmlns='{HTTPBIND}' xmlns:xmpp='{XBOSH}' rid='{rid}'{sid}{extra}>"
            f"{payload}</body>"
        ).encode()

    def next_rid(self) -> int:
        self.rid += 1
        return self.rid

    def create(self, hold: int = 1, wait: int = 10, **attrs: Any) -> Reply:
        reply = post(
            self.port,
            self.body(
                to=self.domain,
                hold=hold,
                wait=wait,
                ver="1.11",
                xmpp__version="1.0",
                **attrs,
            ),
        )
        if reply.body is not None and "sid" in reply.attrs:
            self.sid = reply.attrs["sid"]
        self.created = reply
        return reply

    def send(self, payload: str = "", rid: int | None = None, **attrs: Any) -> Reply:
        return post(self.port, self.body(payload, rid, **attrs))

    def send_async(
        self, payload: str = "", rid: int | None = None
    ) -> tuple[threading.Thread, dict[str, Reply]]:
        """Send from a thread (a request the server may hold): join it, then read ``reply``."""
        out: dict[str, Reply] = {}
        data = self.body(payload, rid)
        thread = threading.Thread(target=lambda: out.update(reply=post(self.port, data)))
        thread.start()
        return thread, out

    def authenticate(self, user: str, password: str, wait: int = 3) -> None:
        """A new session, SASL PLAIN and the stream restart (XEP-0206 §5)."""
        created = self.create(wait=wait)
        assert created.status == 200 and not created.terminated, created.data
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        auth = self.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        assert any(c.tag == f"{{{SASL}}}success" for c in auth.children()), auth.data
        restarted = self.send(to=self.domain, xmpp__restart="true")
        assert any(c.tag == f"{{{STREAMS}}}features" for c in restarted.children()), restarted.data

    def login(self, user: str, password: str, resource: str) -> str:
        """:meth:`authenticate`, then bind: the full JID."""
        self.authenticate(user, password)
        bound = self.send(
            f"<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='{BIND}'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        jid = bound.body.find(f".//{{{BIND}}}jid") if bound.body is not None else None
        assert jid is not None and jid.text, bound.data
        return jid.text
