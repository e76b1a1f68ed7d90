"""Sans-IO server-to-server streams (RFC 6120 §4-§6, XEP-0178, XEP-0220, XEP-0185).

Two classes, one per role, each turning the peer's bytes into actions like
:class:`~xes.session.c2s.C2SProtocol`; neither touches a socket, a clock, DNS or the log.

* :class:`S2SInbound` is the *receiving server*: a peer connected to us. It answers the header
  (``to`` must be a hosted domain: ``<host-unknown/>``), offers STARTTLS (required by default),
  then SASL EXTERNAL when the peer's certificate verified for the header's ``from`` (XEP-0178,
  checked by the transport per RFC 6125) and Server Dialback when the policy allows it. A
  ``<db:result/>`` becomes :class:`VerifyRequested`: the transport asks the peer's authoritative
  server and calls :meth:`S2SInbound.dialback_result`. A ``<db:verify/>`` is answered here, as
  the *authoritative server* for our own domains, from the dialback secret (XEP-0185 keys).
  Stanzas are accepted only from a domain authenticated on this stream to a domain of ours
  (RFC 6120 §8.1.2.1 ``<invalid-from/>``, §4.9.3.6 ``<host-unknown/>``), and handed on in
  ``jabber:client``, the namespace the rest of the server speaks.
* :class:`S2SOutbound` is the *initiating server*: we connected to a peer, for one pair
  (local domain, remote domain). It sends the header, STARTTLS, authenticates with EXTERNAL when
  offered (and our certificate is trusted by policy), else with a dialback key, and reports
  :class:`Authenticated`; then :meth:`S2SOutbound.stanza` serializes stanzas in
  ``jabber:server``. A stream opened only to verify dialback keys (``verify=True``) sends its
  ``<db:verify/>`` requests after TLS and reports each :class:`VerifyAnswered`.

States and the inputs each accepts are tables (``INBOUND`` and ``OUTBOUND``); an input missing
from a table is a stream error, never a silent ignore. Actions ``Send``, ``StartTls`` and
``Close`` are the client stream's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, auto

from xes.jid import JID, InvalidJID
from xes.session.c2s import Close, Send, StartTls
from xes.session.component import retag
from xes.xml import (
    STREAM_CLOSE,
    E,
    Element,
    ElementReceived,
    StreamClosed,
    StreamOpened,
    XmlLimits,
    XmlStream,
    XmlStreamError,
    ns,
    serialize,
    stream_error,
    stream_header,
)

DIALBACK = "jabber:server:dialback"
"""Namespace of ``<db:result/>`` and ``<db:verify/>`` (XEP-0220 §2)."""
DIALBACK_FEATURE = "urn:xmpp:features:dialback"
"""Stream feature announcing dialback support (XEP-0220 §2.1)."""
STANZAS = ("message", "presence", "iq")


def dialback_key(secret: bytes, receiving: str, originating: str, stream_id: str) -> str:
    """XEP-0185 §3: HMAC-SHA256, keyed with the hex SHA-256 of the secret, over
    ``receiving originating stream-id``; hex. Only the authoritative server (holder of the
    secret) can make or check it, and it binds the key to one stream of one domain pair."""
    key = hashlib.sha256(secret).hexdigest().encode("ascii")
    text = f"{receiving} {originating} {stream_id}".encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def to_client_ns(element: Element) -> Element:
    """A received ``jabber:server`` stanza in ``jabber:client``, as features match it."""
    return retag(element, ns.SERVER, ns.CLIENT)


def to_server_ns(element: Element) -> Element:
    """A stanza of ours (``jabber:client`` inside the server) as it goes out on s2s."""
    return retag(element, ns.CLIENT, ns.SERVER)


# -- actions the transport carries out (besides Send, StartTls, Close) ----------------------


@dataclass(frozen=True, slots=True)
class VerifyRequested:
    """Inbound ``<db:result/>``: ask ``originating``'s authoritative server whether ``key`` is
    valid for this stream, then call :meth:`S2SInbound.dialback_result`."""

    receiving: str
    """Our domain the peer wants to send to."""
    originating: str
    """The peer's claimed domain."""
    stream_id: str
    """Our stream id (the key is bound to it)."""
    key: str


@dataclass(frozen=True, slots=True)
class PeerAuthenticated:
    """Inbound: the peer may now send stanzas from ``domain`` (to ``local``)."""

    domain: str
    local: str
    method: str
    """``external`` or ``dialback``."""


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Outbound: we may send stanzas from ``local`` to ``remote`` on this stream."""

    local: str
    remote: str
    method: str


@dataclass(frozen=True, slots=True)
class AuthenticationFailed:
    """Outbound: the peer refused us (the transport closes and bounces what waits)."""

    reason: str


@dataclass(frozen=True, slots=True)
class VerifyAnswered:
    """Outbound verify stream: the authoritative server's answer for one stream id."""

    stream_id: str
    valid: bool


@dataclass(frozen=True, slots=True)
class StanzaReceived:
    stanza: Element
    """In ``jabber:client``, ``from`` in an authenticated peer domain, ``to`` in one of ours."""


Action = (
    Send
    | StartTls
    | Close
    | VerifyRequested
    | PeerAuthenticated
    | Authenticated
    | AuthenticationFailed
    | VerifyAnswered
    | StanzaReceived
)


@dataclass(frozen=True, slots=True)
class S2SPolicy:
    """What the node's configuration decides (``[s2s]``), injected into both roles."""

    hosts: Callable[[str], bool]
    """Is this domain hosted here (``hub.is_local``)?"""
    secret: bytes
    """The dialback secret (XEP-0185), the same on every node of the cluster."""
    tls_required: bool = True
    """Refuse to exchange anything but STARTTLS before TLS (RFC 7590)."""
    dialback: bool = False
    """``authentication = "certificates+dialback"``: accept and use XEP-0220."""
    limits: XmlLimits | None = None


def _header(attrs: dict[str, str | None]) -> bytes:
    return stream_header(
        {**attrs, "version": "1.0", "xmlns:db": DIALBACK, "{%s}lang" % ns.XML: "en"},
        ns.SERVER,
    )


def _domain(value: str | None) -> str:
    """The domain of a header or dialback address, or "" when it is not a valid JID."""
    try:
        jid = JID.parse(value or "")
    except InvalidJID:
        return ""
    return jid.domain if jid.local is None and jid.resource is None else ""


def _is_stream_error(element: Element) -> bool:
    return element.tag == "{%s}error" % ns.STREAMS


class _Stream:
    """What both roles share: the parser, the header bookkeeping, stream errors."""

    def __init__(self, policy: S2SPolicy) -> None:
        self.policy = policy
        self.secured = False
        self.header_sent = False
        self.closed = False
        self._xml = XmlStream(policy.limits)

    def receive_data(self, data: bytes) -> list[Action]:
        if self.closed:
            return []
        try:
            events = self._xml.receive_data(data)
        except XmlStreamError as exc:
            return self.stream_error(exc.condition, exc.text)
        actions: list[Action] = []
        for event in events:
            actions += self._on_event(event)
            if self.closed:
                break
        return actions

    def _on_event(self, event: StreamOpened | ElementReceived | StreamClosed) -> list[Action]:
        raise NotImplementedError

    def tls_started(self) -> list[Action]:
        """The transport wrapped the socket: the stream restarts (RFC 6120 §5.4.3.3)."""
        self.secured = True
        self._xml.reset()
        return []

    def _own_header(self) -> dict[str, str | None]:
        raise NotImplementedError

    def stream_error(self, condition: str, text: str | None = None) -> list[Action]:
        """Send a stream error (after our header if none was sent yet) and close."""
        if self.closed:
            return []
        out = b""
        if not self.header_sent:
            self.header_sent = True
            out = _header(self._own_header())
        self.closed = True
        return [Send(out + stream_error(condition, text) + STREAM_CLOSE), Close(condition)]

    def _peer_closed(self) -> list[Action]:
        self.closed = True
        return [Send(STREAM_CLOSE), Close()]


# -- the receiving server ------------------------------------------------------------------


class In(Enum):
    EXPECT_HEADER = auto()
    OPEN = auto()
    """Header answered, features sent; STARTTLS, SASL, dialback and stanzas as allowed."""
    TLS_STARTING = auto()
    CLOSED = auto()


@dataclass
class S2SInbound(_Stream):
    """One stream a peer server opened to us; see the module docstring."""

    policy: S2SPolicy
    peer_cert_valid: Callable[[str], bool] = lambda domain: False
    """After TLS: did the peer's certificate verify (chain and RFC 6125 name) for ``domain``?"""
    stream_id: str = ""
    state: In = In.EXPECT_HEADER
    local: str = ""
    """The hosted domain of the header's ``to``."""
    peer: str = ""
    """The header's ``from`` (may be empty for dialback-only peers)."""
    authenticated: set[tuple[str, str]] = field(default_factory=set)
    """(remote domain, local domain) pairs that may send stanzas on this stream."""
    pending: set[tuple[str, str]] = field(default_factory=set)
    """Dialback results awaiting the authoritative server's answer."""

    def __post_init__(self) -> None:
        _Stream.__init__(self, self.policy)

    def _own_header(self) -> dict[str, str | None]:
        return {"from": self.local or None, "to": self.peer or None, "id": self.stream_id}

    def tls_started(self) -> list[Action]:
        super().tls_started()
        self.state = In.EXPECT_HEADER
        return []

    def _on_event(self, event: StreamOpened | ElementReceived | StreamClosed) -> list[Action]:
        if isinstance(event, StreamClosed):
            self.state = In.CLOSED
            return self._peer_closed()
        if isinstance(event, StreamOpened):
            return self._on_header(event)
        element = event.element
        if _is_stream_error(element):
            self.state = In.CLOSED
            self.closed = True
            return [Close("peer-error")]
        kind = element.tag if element.ns != ns.SERVER else element.name
        handler = INBOUND.get((self.state, kind))
        if handler is None:
            if element.name in STANZAS and element.ns == ns.SERVER:
                return self.stream_error("not-authorized", "authenticate first")
            return self.stream_error("unsupported-stanza-type", f"<{element.name}/>")
        return handler(self, element)

    def _on_header(self, event: StreamOpened) -> list[Action]:
        if self.state is not In.EXPECT_HEADER:
            return self.stream_error("invalid-xml", "a second stream header")
        self.stream_id = secrets.token_urlsafe(15)
        local = _domain(event.attrs.get("to"))
        if self.local and local != self.local:
            return self.stream_error("host-unknown", "a restart must keep the domain")
        self.local = local
        self.peer = _domain(event.attrs.get("from")) or self.peer
        if event.ns != ns.SERVER:
            return self.stream_error("invalid-namespace", f"an s2s stream is in {ns.SERVER}")
        if not local or not self.policy.hosts(local):
            # RFC 6120 §4.9.3.6: a domain this server does not serve.
            self.local = ""
            return self.stream_error("host-unknown", None)
        self.header_sent = True
        self.state = In.OPEN
        out = _header(self._own_header())
        return [Send(out + serialize(self._features(), ns.SERVER))]

    def _features(self) -> Element:
        children: list[Element] = []
        if not self.secured:
            starttls = E("{%s}starttls" % ns.TLS)
            if self.policy.tls_required:
                starttls = starttls.append(E("{%s}required" % ns.TLS))
            children.append(starttls)
        done_external = any(p == self.peer for p, _ in self.authenticated)
        if self.secured and self.peer and not done_external and self.peer_cert_valid(self.peer):
            children.append(
                E("{%s}mechanisms" % ns.SASL, None, E("{%s}mechanism" % ns.SASL, None, "EXTERNAL"))
            )
        if self.policy.dialback and (self.secured or not self.policy.tls_required):
            children.append(
                E("{%s}dialback" % DIALBACK_FEATURE, None, E("{%s}errors" % DIALBACK_FEATURE))
            )
        return E("{%s}features" % ns.STREAMS, None, *children)

    def _on_starttls(self, element: Element) -> list[Action]:
        if self.secured:
            return self.stream_error("policy-violation", "TLS is already on")
        self.state = In.TLS_STARTING
        return [Send(serialize(E("{%s}proceed" % ns.TLS), ns.SERVER)), StartTls()]

    def _must_be_secured(self) -> list[Action] | None:
        if self.policy.tls_required and not self.secured:
            return self.stream_error("policy-violation", "STARTTLS is required first")
        return None

    def _on_auth(self, element: Element) -> list[Action]:
        refused = self._must_be_secured()
        if refused is not None:
            return refused
        failure = E("{%s}failure" % ns.SASL, None, E("{%s}not-authorized" % ns.SASL))
        if element.get("mechanism") != "EXTERNAL":
            failure = E("{%s}failure" % ns.SASL, None, E("{%s}invalid-mechanism" % ns.SASL))
            return [Send(serialize(failure, ns.SERVER))]
        text = element.text.strip()
        try:
            authzid = (
                base64.b64decode(text, validate=True).decode() if text not in ("", "=") else ""
            )
        except (binascii.Error, UnicodeDecodeError):
            authzid = "\0"
        claimed = authzid or self.peer
        # XEP-0178 §3: the authorization identity, if any, is the header's from.
        if not claimed or claimed != self.peer or not self.peer_cert_valid(claimed):
            return [Send(serialize(failure, ns.SERVER)), *self.stream_error("not-authorized")]
        self.authenticated.add((claimed, self.local))
        self.state = In.EXPECT_HEADER
        self._xml.reset()  # RFC 6120 §6.4.6: the stream restarts after SASL success
        return [
            Send(serialize(E("{%s}success" % ns.SASL), ns.SERVER)),
            PeerAuthenticated(claimed, self.local, "external"),
        ]

    def _on_db_result(self, element: Element) -> list[Action]:
        refused = self._must_be_secured()
        if refused is not None:
            return refused
        if not self.policy.dialback:
            return self.stream_error("not-authorized", "dialback is not accepted here")
        originating, receiving = _domain(element.get("from")), _domain(element.get("to"))
        if not originating:
            return self.stream_error("invalid-from", "db:result needs a from domain")
        if not receiving or not self.policy.hosts(receiving):
            return self.stream_error("host-unknown", "db:result to a domain not served here")
        if self.policy.hosts(originating):
            return self.stream_error("invalid-from", "a peer cannot speak for our own domain")
        pair = (originating, receiving)
        if pair in self.authenticated:
            return [Send(self._db_result(receiving, originating, "valid"))]
        self.pending.add(pair)
        return [VerifyRequested(receiving, originating, self.stream_id, element.text.strip())]

    def dialback_result(self, receiving: str, originating: str, valid: bool) -> list[Action]:
        """The authoritative server's answer for a ``<db:result/>`` (XEP-0220 §2.1.4)."""
        pair = (originating, receiving)
        if self.closed or pair not in self.pending:
            return []
        self.pending.discard(pair)
        out = Send(self._db_result(receiving, originating, "valid" if valid else "invalid"))
        if not valid:
            return [out, *self.stream_error("not-authorized", "dialback key refused")]
        self.authenticated.add(pair)
        return [out, PeerAuthenticated(originating, receiving, "dialback")]

    @staticmethod
    def _db_result(receiving: str, originating: str, type_: str) -> bytes:
        attrs = {"from": receiving, "to": originating, "type": type_}
        return serialize(E("{%s}result" % DIALBACK, attrs), ns.SERVER)

    def _on_db_verify(self, element: Element) -> list[Action]:
        # We are the authoritative server for element's ``to`` (XEP-0220 §2.1.3): the peer
        # is a receiving server checking a key one of our nodes sent it. No authentication
        # is needed for this, only the secret.
        refused = self._must_be_secured()
        if refused is not None:
            return refused
        receiving, originating = _domain(element.get("from")), _domain(element.get("to"))
        stream_id = element.get("id") or ""
        if not originating or not self.policy.hosts(originating):
            return self.stream_error("host-unknown", "db:verify for a domain not served here")
        expected = dialback_key(self.policy.secret, receiving, originating, stream_id)
        valid = hmac.compare_digest(expected.encode(), element.text.strip().encode())
        attrs = {
            "from": originating,
            "to": receiving,
            "id": stream_id,
            "type": "valid" if valid else "invalid",
        }
        return [Send(serialize(E("{%s}verify" % DIALBACK, attrs), ns.SERVER))]

    def _on_stanza(self, element: Element) -> list[Action]:
        refused = self._must_be_secured()
        if refused is not None:
            return refused
        if not self.authenticated:
            return self.stream_error("not-authorized", "authenticate first")
        try:
            sender = JID.parse(element.get("from") or "")
        except InvalidJID:
            return self.stream_error("invalid-from", "every stanza needs a valid from")
        try:
            to = JID.parse(element.get("to") or "")
        except InvalidJID:
            return self.stream_error("improper-addressing", "every stanza needs a valid to")
        if not self.policy.hosts(to.domain):
            return self.stream_error("host-unknown", f"{to.domain} is not served here")
        if (sender.domain, to.domain) not in self.authenticated:
            # RFC 6120 §8.1.2.1: a from the stream has not authenticated.
            return self.stream_error("invalid-from", f"{sender.domain} is not authenticated")
        return [StanzaReceived(to_client_ns(element))]


INBOUND: dict[tuple[In, str], Callable[[S2SInbound, Element], list[Action]]] = {
    (In.OPEN, "{%s}starttls" % ns.TLS): S2SInbound._on_starttls,
    (In.OPEN, "{%s}auth" % ns.SASL): S2SInbound._on_auth,
    (In.OPEN, "{%s}result" % DIALBACK): S2SInbound._on_db_result,
    (In.OPEN, "{%s}verify" % DIALBACK): S2SInbound._on_db_verify,
    (In.OPEN, "message"): S2SInbound._on_stanza,
    (In.OPEN, "presence"): S2SInbound._on_stanza,
    (In.OPEN, "iq"): S2SInbound._on_stanza,
}
"""(state, element) -> handler for the receiving server; anything else is a stream error."""


# -- the initiating server -----------------------------------------------------------------


class Out(Enum):
    EXPECT_HEADER = auto()
    EXPECT_FEATURES = auto()
    TLS_REQUESTED = auto()
    """``<starttls/>`` sent, ``<proceed/>`` expected."""
    SASL = auto()
    """``<auth mechanism='EXTERNAL'/>`` sent."""
    DIALBACK = auto()
    """``<db:result/>`` sent, its answer expected."""
    VERIFYING = auto()
    """A verify stream: ``<db:verify/>`` requests sent, answers expected."""
    READY = auto()
    CLOSED = auto()


@dataclass
class S2SOutbound(_Stream):
    """One stream we open to ``remote`` for ``local``; see the module docstring."""

    policy: S2SPolicy
    local: str
    remote: str
    verify: list[VerifyRequested] = field(default_factory=list)
    """Dialback keys to check with ``remote`` (then this stream carries nothing else)."""
    external: bool = True
    """Try SASL EXTERNAL when offered (off after the peer refused it once)."""
    state: Out = Out.EXPECT_HEADER
    peer_stream_id: str = ""
    method: str = ""

    def __post_init__(self) -> None:
        _Stream.__init__(self, self.policy)

    def _own_header(self) -> dict[str, str | None]:
        return {"from": self.local, "to": self.remote}

    def start(self) -> list[Action]:
        """Our stream header: the first bytes on a new connection (and after a restart)."""
        self.header_sent = True
        self.state = Out.EXPECT_HEADER
        return [Send(_header(self._own_header()))]

    def tls_started(self) -> list[Action]:
        super().tls_started()
        return self.start()

    def _on_event(self, event: StreamOpened | ElementReceived | StreamClosed) -> list[Action]:
        if isinstance(event, StreamClosed):
            self.state = Out.CLOSED
            return self._peer_closed()
        if isinstance(event, StreamOpened):
            if self.state is not Out.EXPECT_HEADER:
                return self.stream_error("invalid-xml", "a second stream header")
            if event.ns != ns.SERVER:
                return self.stream_error("invalid-namespace", f"an s2s stream is in {ns.SERVER}")
            self.peer_stream_id = event.attrs.get("id", "")
            self.state = Out.EXPECT_FEATURES
            return []
        element = event.element
        if _is_stream_error(element):
            self.state = Out.CLOSED
            self.closed = True
            return [
                AuthenticationFailed(f"stream error {_condition(element)}"),
                Close("peer-error"),
            ]
        handler = OUTBOUND.get(
            (self.state, element.tag if element.ns != ns.SERVER else element.name)
        )
        if handler is None:
            return self.stream_error("unsupported-stanza-type", f"<{element.name}/>")
        return handler(self, element)

    def _on_features(self, element: Element) -> list[Action]:
        if not self.secured:
            if element.find("{%s}starttls" % ns.TLS) is not None:
                self.state = Out.TLS_REQUESTED
                return [Send(serialize(E("{%s}starttls" % ns.TLS), ns.SERVER))]
            if self.policy.tls_required:
                return [
                    AuthenticationFailed("the peer offers no STARTTLS"),
                    *self.stream_error("policy-violation", "STARTTLS is required"),
                ]
        if self.method:  # restarted after SASL success
            self.state = Out.READY
            return [Authenticated(self.local, self.remote, self.method)]
        if self.verify:
            self.state = Out.VERIFYING
            return [Send(b"".join(self._db_verify(v) for v in self.verify))]
        mechanisms = element.find("{%s}mechanisms" % ns.SASL)
        offered = [m.text for m in mechanisms.elements()] if mechanisms is not None else []
        if self.external and self.secured and "EXTERNAL" in offered:
            self.state = Out.SASL
            # XEP-0178 §3: the authorization identity is our domain (base64).
            auth = E(
                "{%s}auth" % ns.SASL,
                {"mechanism": "EXTERNAL"},
                base64.b64encode(self.local.encode()).decode(),
            )
            return [Send(serialize(auth, ns.SERVER))]
        return self._dialback(element)

    def _dialback(self, features: Element | None) -> list[Action]:
        offered = features is None or features.find("{%s}dialback" % DIALBACK_FEATURE) is not None
        if not self.policy.dialback or not offered:
            return [
                AuthenticationFailed("no authentication method in common"),
                *self.stream_error("not-authorized", "no authentication method in common"),
            ]
        key = dialback_key(self.policy.secret, self.remote, self.local, self.peer_stream_id)
        self.state = Out.DIALBACK
        attrs = {"from": self.local, "to": self.remote}
        return [Send(serialize(E("{%s}result" % DIALBACK, attrs, key), ns.SERVER))]

    def _db_verify(self, request: VerifyRequested) -> bytes:
        attrs = {"from": request.receiving, "to": request.originating, "id": request.stream_id}
        return serialize(E("{%s}verify" % DIALBACK, attrs, request.key), ns.SERVER)

    def _on_tls_proceed(self, element: Element) -> list[Action]:
        return [StartTls()]

    def _on_sasl_success(self, element: Element) -> list[Action]:
        self.method = "external"
        self._xml.reset()
        return self.start()

    def _on_sasl_failure(self, element: Element) -> list[Action]:
        # The peer does not trust our certificate: dialback, if both allow it (XEP-0178 §4).
        self.external = False
        return self._dialback(None)

    def _on_db_result(self, element: Element) -> list[Action]:
        if element.get("type") != "valid":
            return [
                AuthenticationFailed("dialback key refused"),
                *self.stream_error("not-authorized", "dialback refused"),
            ]
        self.method = "dialback"
        self.state = Out.READY
        return [Authenticated(self.local, self.remote, self.method)]

    def _on_db_verify(self, element: Element) -> list[Action]:
        stream_id = element.get("id") or ""
        self.verify = [v for v in self.verify if v.stream_id != stream_id]
        actions: list[Action] = [VerifyAnswered(stream_id, element.get("type") == "valid")]
        if not self.verify:
            self.closed = True
            self.state = Out.CLOSED
            actions += [Send(STREAM_CLOSE), Close()]
        return actions

    def stanza(self, element: Element) -> bytes:
        """A stanza of ours as bytes on this stream (READY only)."""
        return serialize(to_server_ns(element), ns.SERVER)

    def close(self) -> list[Action]:
        """End the stream cleanly (idle link, shutdown)."""
        if self.closed:
            return []
        self.closed = True
        self.state = Out.CLOSED
        return [Send(STREAM_CLOSE), Close()]


def _condition(error: Element) -> str:
    for child in error.elements():
        if child.ns == ns.STREAM_ERRORS and child.name != "text":
            return child.name
    return "undefined-condition"


OUTBOUND: dict[tuple[Out, str], Callable[[S2SOutbound, Element], list[Action]]] = {
    (Out.EXPECT_FEATURES, "{%s}features" % ns.STREAMS): S2SOutbound._on_features,
    (Out.TLS_REQUESTED, "{%s}proceed" % ns.TLS): S2SOutbound._on_tls_proceed,
    (Out.SASL, "{%s}success" % ns.SASL): S2SOutbound._on_sasl_success,
    (Out.SASL, "{%s}failure" % ns.SASL): S2SOutbound._on_sasl_failure,
    (Out.DIALBACK, "{%s}result" % DIALBACK): S2SOutbound._on_db_result,
    (Out.VERIFYING, "{%s}verify" % DIALBACK): S2SOutbound._on_db_verify,
    (Out.READY, "{%s}verify" % DIALBACK): S2SOutbound._on_db_verify,
}
"""(state, element) -> handler for the initiating server; anything else is a stream error.
Stanzas never arrive on an outbound stream: s2s streams are one-way (RFC 6120 §4.2.1)."""
