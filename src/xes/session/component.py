"""Sans-IO external component stream, server side (XEP-0114 Jabber Component Protocol).

:class:`ComponentProtocol` turns the bytes a component sends into actions, like
:class:`~xes.session.c2s.C2SProtocol` does for clients: it never touches a socket, a clock or the
log. The stream opens in ``jabber:component:accept`` with ``to`` = the component's name
(unknown: ``<host-unknown/>``), the server answers with its header and a fresh stream id, the
component sends ``<handshake>`` = lowercase hex SHA-1 of stream id + secret (XEP-0114 §3). A
matching digest (compared in constant time) is :class:`HandshakeAccepted`: the transport then
records who holds the name in the cluster and calls :meth:`accepted` (``<handshake/>``) or
:meth:`refused` (``<conflict/>``). A wrong one is ``<not-authorized/>``.

Afterwards each stanza must come from the component's domain or a JID under it (RFC 6120
§8.1.2.1: ``<invalid-from/>``) and carry a ``to`` (``<improper-addressing/>``); stanzas are
handed on in ``jabber:client``, the namespace the rest of the server speaks. A state missing an
input in ``TRANSITIONS`` is a stream error, never a silent ignore.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from xes.jid import JID, InvalidJID
from xes.session.c2s import Close, Send  # the same actions as a client stream's
from xes.xml import (
    STREAM_CLOSE,
    Element,
    ElementReceived,
    StreamClosed,
    StreamOpened,
    XmlLimits,
    XmlStream,
    XmlStreamError,
    ns,
    stream_error,
    stream_header,
)

ACCEPT = "jabber:component:accept"
"""The content namespace of a component stream (XEP-0114 §3)."""
STANZAS = ("message", "presence", "iq")


class State(Enum):
    EXPECT_HEADER = auto()
    """Waiting for the component's stream header."""
    HANDSHAKE = auto()
    """Header answered; ``<handshake>`` expected."""
    CHECKING = auto()
    """The digest matched; waiting for the transport to record the connection."""
    READY = auto()
    """``<handshake/>`` sent; stanzas flow both ways."""
    CLOSED = auto()


@dataclass(frozen=True, slots=True)
class HandshakeAccepted:
    """The secret matched: record the connection, then call ``accepted`` or ``refused``."""

    domain: str


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """A wrong digest (count it against the name and the address: a login limiter)."""

    domain: str


@dataclass(frozen=True, slots=True)
class StanzaReceived:
    stanza: Element
    """In ``jabber:client``, with a ``from`` in the component's domain and a ``to``."""


Action = Send | HandshakeAccepted | HandshakeFailed | StanzaReceived | Close


@dataclass(frozen=True, slots=True)
class ComponentPolicy:
    secret_for: Callable[[str], str | None]
    """The shared secret of a configured component name, or None for an unknown name."""
    allowed: Callable[[str], bool] = lambda domain: True
    """False while failed handshakes for this name or address are locked out."""
    limits: XmlLimits | None = None


def digest(stream_id: str, secret: str) -> str:
    """The handshake value of XEP-0114 §3: hex SHA-1 of the stream id and the secret."""
    return hashlib.sha1((stream_id + secret).encode("utf-8")).hexdigest()


def in_domain(jid: JID, domain: str) -> bool:
    """Is ``jid`` the component's domain or an address under it (``user@domain/res``)?"""
    return jid.domain == domain


def to_client_ns(element: Element) -> Element:
    """``element`` with every tag in the component namespace moved to ``jabber:client``.

    XEP-0114 stanzas are the client's stanzas in another default namespace; features match
    ``{jabber:client}body`` and the like, and stored copies are written in ``jabber:client``."""
    return retag(element, ACCEPT, ns.CLIENT)


def retag(element: Element, old_ns: str, new_ns: str) -> Element:
    """``element`` with every tag in ``old_ns`` moved to ``new_ns`` (the stanza namespaces of
    components and servers are the client's under another name; s2s uses this too)."""
    return _retag(element, "{%s}" % old_ns, "{%s}" % new_ns)


def _retag(element: Element, old: str, new: str) -> Element:
    tag = new + element.tag[len(old) :] if element.tag.startswith(old) else element.tag
    children = tuple(
        _retag(child, old, new) if isinstance(child, Element) else child
        for child in element.children
    )
    return element.replace(tag=tag, children=children)


class ComponentProtocol:
    """One inbound component stream; see the module docstring."""

    def __init__(self, policy: ComponentPolicy, stream_id: str) -> None:
        self.policy = policy
        self.stream_id = stream_id
        self.state = State.EXPECT_HEADER
        self.domain = ""
        self._xml = XmlStream(policy.limits)
        self._header_sent = False

    def receive_data(self, data: bytes) -> list[Action]:
        if self.state is State.CLOSED:
            return []
        try:
            events = self._xml.receive_data(data)
        except XmlStreamError as exc:
            return self.stream_error(exc.condition, exc.text)
        actions: list[Action] = []
        for event in events:
            actions += self._on_event(event)
            if self.state is State.CLOSED:
                break
        return actions

    def _on_event(self, event: StreamOpened | ElementReceived | StreamClosed) -> list[Action]:
        if isinstance(event, StreamClosed):
            self.state = State.CLOSED
            return [Send(STREAM_CLOSE), Close()]
        if isinstance(event, StreamOpened):
            if self.state is not State.EXPECT_HEADER:
                return self.stream_error("invalid-xml", "a second stream header")
            return self._on_header(event)
        handler = TRANSITIONS.get((self.state, event.element.name))
        if handler is None:
            return self._unexpected(event.element)
        return handler(self, event.element)

    def _on_header(self, event: StreamOpened) -> list[Action]:
        self.domain = event.attrs.get("to", "")
        if event.ns != ACCEPT:
            return self.stream_error("invalid-namespace", f"a component stream is in {ACCEPT}")
        if not self.domain or self.policy.secret_for(self.domain) is None:
            # XEP-0114 §3: a name the server does not know.
            return self.stream_error("host-unknown", "no such component is configured")
        self._header_sent = True
        self.state = State.HANDSHAKE
        header = stream_header({"from": self.domain, "id": self.stream_id}, ACCEPT)
        return [Send(header)]

    def _on_handshake(self, element: Element) -> list[Action]:
        if element.ns != ACCEPT:
            return self._unexpected(element)
        if not self.policy.allowed(self.domain):
            return self.stream_error("not-authorized", "too many failed handshakes: wait")
        secret = self.policy.secret_for(self.domain)
        given = element.text.strip().lower().encode("ascii", "replace")
        if secret is None or not hmac.compare_digest(
            digest(self.stream_id, secret).encode(), given
        ):
            return [HandshakeFailed(self.domain), *self.stream_error("not-authorized", None)]
        self.state = State.CHECKING
        return [HandshakeAccepted(self.domain)]

    def accepted(self) -> list[Action]:
        """The connection is recorded: the component may send stanzas (XEP-0114 §3)."""
        if self.state is not State.CHECKING:
            return []
        self.state = State.READY
        return [Send(b"<handshake/>")]

    def refused(self, condition: str, text: str | None) -> list[Action]:
        """The cluster did not let this connection hold the name (``conflict``: it is held)."""
        return self.stream_error(condition, text)

    def _on_stanza(self, element: Element) -> list[Action]:
        if element.ns not in (ACCEPT, ns.CLIENT):
            return self._unexpected(element)
        try:
            sender = JID.parse(element.get("from") or "")
        except InvalidJID:
            return self.stream_error("invalid-from", "every stanza needs a valid from")
        if not in_domain(sender, self.domain):
            # RFC 6120 §8.1.2.1, XEP-0114 §3: a component speaks for its own domain only.
            return self.stream_error("invalid-from", f"from must be in {self.domain}")
        if not element.get("to"):
            return self.stream_error("improper-addressing", "every stanza needs a to")
        return [StanzaReceived(to_client_ns(element))]

    def _unexpected(self, element: Element) -> list[Action]:
        if self.state is State.READY:
            return self.stream_error("unsupported-stanza-type", f"<{element.name}/>")
        if element.name in STANZAS:
            return self.stream_error("not-authorized", "complete the handshake first")
        return self.stream_error("not-authorized", f"expected <handshake/>, not <{element.name}/>")

    def stream_error(self, condition: str, text: str | None = None) -> list[Action]:
        """Send a stream error (after our header if none was sent yet) and close."""
        if self.state is State.CLOSED:
            return []
        out = b""
        if not self._header_sent:
            self._header_sent = True
            attrs = {"from": self.domain or None, "id": self.stream_id}
            out = stream_header(attrs, ACCEPT)
        self.state = State.CLOSED
        return [Send(out + stream_error(condition, text) + STREAM_CLOSE), Close(condition)]


TRANSITIONS: dict[tuple[State, str], Callable[[ComponentProtocol, Element], list[Action]]] = {
    (State.HANDSHAKE, "handshake"): ComponentProtocol._on_handshake,
    (State.READY, "message"): ComponentProtocol._on_stanza,
    (State.READY, "presence"): ComponentProtocol._on_stanza,
    (State.READY, "iq"): ComponentProtocol._on_stanza,
}
"""(state, element name) -> handler; anything else is a stream error."""
