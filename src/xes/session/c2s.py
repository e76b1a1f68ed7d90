"""Sans-IO client-to-server stream negotiation (RFC 6120 §4-§7): STARTTLS, SASL, resource binding.

:class:`C2SProtocol` turns parser events into actions; it never touches a socket, a clock or the
event log. The transport feeds it bytes (``receive_data``) and carries out the actions it returns:
send bytes, start TLS, bind a resource (which needs the event log), hand a stanza to the router,
close. States and the inputs each state accepts are one table, ``TRANSITIONS``; an input missing
from the table is a stream error, never a silent ignore.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

from xes.jid import JID, InvalidJID
from xes.session import sasl2
from xes.session import stream_management as sm
from xes.session.sasl import Challenge, Failure, SaslServer, Success, offered_mechanisms
from xes.session.stream_management import SmAck, SmEnable, SmRequest, SmResume
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
    parse_fragment,
    serialize,
    stream_error,
    stream_header,
)

XML_LANG = "{%s}lang" % ns.XML
REGISTER = "jabber:iq:register"
CSI = "urn:xmpp:csi:0"
REGISTER_FEATURE = "http://jabber.org/features/iq-register"


class State(Enum):
    EXPECT_HEADER = auto()
    """Waiting for the client's stream header (initial or after a restart)."""
    NEGOTIATING = auto()
    """Features sent; STARTTLS or SASL expected."""
    TLS_STARTING = auto()
    """``<proceed/>`` sent; the transport is wrapping the socket."""
    SASL = auto()
    """A SASL exchange is in progress."""
    SASL2 = auto()
    """A SASL2 exchange (XEP-0388) is in progress."""
    BINDING = auto()
    """Authenticated, stream restarted; a resource bind is expected."""
    BIND_PENDING = auto()
    """Bind handed to the transport; waiting for the log to record the session."""
    BOUND = auto()
    """Session established; stanzas flow."""
    CLOSED = auto()


# --- actions the transport carries out -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class StartTls:
    """Wrap the connection in TLS now, then call :meth:`C2SProtocol.tls_started`."""


@dataclass(frozen=True, slots=True)
class Authenticated:
    username: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    username: str | None
    condition: str


@dataclass(frozen=True, slots=True)
class BindRequested:
    """Record a session for ``jid``; then call ``bind_succeeded`` or ``bind_failed``."""

    iq_id: str
    jid: JID
    chosen: bool = True
    """The client chose the resource (a device that comes back), rather than the server."""
    inline: sasl2.Authenticate | None = None
    """Bind2 inside SASL2: what else the client asked for (carbons, a FAST token)."""


@dataclass(frozen=True, slots=True)
class RegistrationRequested:
    """XEP-0077 §3.1 before authentication: create the account, then call
    ``registration_done``."""

    iq_id: str
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class StanzaReceived:
    stanza: Element
    sm_n: int = 0
    """With stream management enabled: this stanza's number since ``<enable/>`` (XEP-0198)."""


@dataclass(frozen=True, slots=True)
class ClientState:
    """XEP-0352: the client said it is ``active`` (True) or ``inactive`` (False)."""

    active: bool


@dataclass(frozen=True, slots=True)
class Close:
    condition: str | None = None
    """Stream error condition sent before closing, or None for a clean close."""


Action = (
    Send
    | StartTls
    | Authenticated
    | AuthFailed
    | BindRequested
    | RegistrationRequested
    | StanzaReceived
    | ClientState
    | Close
    | SmEnable
    | SmResume
    | SmAck
    | SmRequest
)


@dataclass(frozen=True)
class C2SPolicy:
    """What the server requires and offers; injected so tests can vary it."""

    domain: str
    """The default host: the ``from`` of a stream whose ``to`` names no host of ours."""
    tls_required: bool = True
    tls_available: bool = True
    mechanisms: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
    max_auth_attempts: int = 3
    limits: XmlLimits = field(default_factory=XmlLimits)
    extra_features: tuple[Element, ...] = ()
    """Features advertised after binding-stage restart besides bind (e.g. XEP-0198 ``sm``)."""
    registration: bool = False
    """In-band registration (XEP-0077) is offered before authentication."""
    sasl2: bool = False
    """SASL2 with Bind2 (XEP-0388, XEP-0386) is offered beside RFC 6120 SASL."""
    fast: bool = False
    """FAST tokens (XEP-0484) are offered through SASL2."""
    bind2_inline: tuple[str, ...] = (ns.CARBONS,)
    """Features Bind2 lists as inline (XEP-0386 §2.2)."""
    hosts: frozenset[str] = frozenset()
    """Every domain served (ADR 0023; empty: ``domain`` alone); the stream's ``to`` picks one."""
    registration_hosts: frozenset[str] | None = None
    """The hosts that offer registration when ``registration`` is on (None: all of them)."""

    def serves(self, domain: str) -> bool:
        return domain in self.hosts if self.hosts else domain == self.domain

    def registration_on(self, domain: str) -> bool:
        hosts = self.registration_hosts
        return self.registration and (hosts is None or domain in hosts)


@dataclass(frozen=True, slots=True)
class FastCredential:
    """A device's FAST token as the server can check it."""

    token: str
    mechanism: str
    expired: bool


class C2SProtocol:
    """One client stream's negotiation state machine."""

    def __init__(
        self,
        policy: C2SPolicy,
        credentials: Callable[[str], dict[str, Any] | None],
        normalize_username: Callable[[str], str],
        auth_allowed: Callable[[str], bool] = lambda _user: True,
        fast_token: Callable[[str, str], FastCredential | None] = lambda _user, _agent: None,
    ) -> None:
        self.policy = policy
        self.fast_token = fast_token
        self.sasl2_request: sasl2.Authenticate | None = None
        self.sasl2_additional = b""
        self.sasl2_extra: list[Element] = []
        self.credentials = credentials
        self.normalize_username = normalize_username
        self.auth_allowed = auth_allowed
        self.state = State.EXPECT_HEADER
        self.domain = policy.domain
        """The host this stream is for: its first header's ``to`` (ADR 0023), kept across
        the restarts after STARTTLS and SASL (the certificate and the account are that host's)."""
        self.host_chosen = False
        self.parser = XmlStream(policy.limits)
        self.tls = False
        self.channel_binding: tuple[str, bytes] | None = None
        self.username: str | None = None
        self.jid: JID | None = None
        self.stream_id = ""
        self.header_sent = False
        self.sasl: SaslServer | None = None
        self.sasl_mechanism = ""
        self.auth_attempts = 0
        self.lang = "en"
        self.declared_lang: str | None = None
        """The ``xml:lang`` of the client's stream header, if it gave one (RFC 6120 §4.7.4)."""
        self.sm_enabled = False
        self.sm_in = 0
        """Client stanzas received since ``<enable/>`` (XEP-0198 inbound count, not wrapped)."""

    # -- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Action]:
        if self.state is State.CLOSED:
            return []
        try:
            events = self.parser.receive_data(data)
        except XmlStreamError as exc:
            return self._stream_error(exc.condition, exc.text)
        actions: list[Action] = []
        for event in events:
            actions.extend(self._on_event(event))
            if self.state in (State.CLOSED, State.TLS_STARTING):
                # Bytes after <starttls/> belong to the TLS handshake, never to this parser
                # (RFC 6120 §5.4.3.3); after close nothing more is read.
                break
        return actions

    def _on_event(self, event: StreamOpened | ElementReceived | StreamClosed) -> list[Action]:
        if isinstance(event, StreamOpened):
            return self._on_header(event)
        if isinstance(event, StreamClosed):
            self.state = State.CLOSED
            return [Send(STREAM_CLOSE), Close()]
        element = event.element
        kind = _classify(element)
        handler = TRANSITIONS.get((self.state, kind))
        if handler is None:
            return self._unexpected(element)
        return handler(self, element)

    # -- stream header -----------------------------------------------------------------------

    def _on_header(self, event: StreamOpened) -> list[Action]:
        if self.state is not State.EXPECT_HEADER:
            return self._stream_error("not-well-formed", "unexpected stream restart")
        attrs = event.attrs
        self.stream_id = secrets.token_urlsafe(12)
        self.declared_lang = attrs.get(XML_LANG) or None
        self.lang = self.declared_lang or "en"
        to = attrs.get("to", "")
        try:
            domain = JID.parse(to).domain if to else ""
        except InvalidJID:
            domain = ""
        known = self.policy.serves(domain) and (not self.host_chosen or domain == self.domain)
        if known and not self.host_chosen:
            self.domain, self.host_chosen = domain, True
        out = stream_header(
            {
                "from": self.domain,
                "id": self.stream_id,
                "version": "1.0",
                "{%s}lang" % ns.XML: "en",
            }
        )
        self.header_sent = True
        actions: list[Action] = [Send(out)]
        if event.ns != ns.CLIENT:
            return actions + self._stream_error("invalid-namespace", None, header=False)
        if not known:
            # RFC 6120 §4.9.3.6: not a host of ours, or (after a restart) another host than
            # the one this stream negotiated TLS or authenticated for.
            return actions + self._stream_error("host-unknown", None, header=False)
        version = attrs.get("version", "0.9")
        if _major(version) < 1:
            return actions + self._stream_error("unsupported-version", None, header=False)
        actions.append(Send(serialize(self._features(), default_ns=ns.CLIENT)))
        self.state = State.BINDING if self.username else State.NEGOTIATING
        return actions

    def _features(self) -> Element:
        children: list[Element] = []
        if self.username is not None:
            children.append(E("{%s}bind" % ns.BIND))
            children.append(E("{%s}session" % ns.SESSION, None, E("{%s}optional" % ns.SESSION)))
            children.extend(self.policy.extra_features)
        elif not self.tls and self.policy.tls_available:
            starttls = E("{%s}starttls" % ns.TLS)
            if self.policy.tls_required:
                starttls = starttls.append(E("{%s}required" % ns.TLS))
            children.append(starttls)
            if not self.policy.tls_required:
                children.append(self._mechanisms())
        else:
            children.append(self._mechanisms())
            if self.policy.registration_on(self.domain):
                children.append(E("{%s}register" % REGISTER_FEATURE))
            if self.policy.sasl2 and (self.tls or not self.policy.tls_required):
                children.append(
                    sasl2.feature(
                        self._offered(),
                        self.policy.fast and self.tls,
                        self.policy.bind2_inline,
                        sm=ns.SM in self.policy.bind2_inline,
                    )
                )
            if self.channel_binding is not None:
                children.append(
                    E(
                        "{%s}sasl-channel-binding" % ns.SASL_CB,
                        None,
                        E("{%s}channel-binding" % ns.SASL_CB, {"type": self.channel_binding[0]}),
                    )
                )
        return E("{%s}features" % ns.STREAMS, None, *children)

    def _offered(self) -> list[str]:
        possible = offered_mechanisms(
            tls=self.tls, channel_binding=self.channel_binding is not None
        )
        return [m for m in self.policy.mechanisms if m in possible]

    def _mechanisms(self) -> Element:
        return E(
            "{%s}mechanisms" % ns.SASL,
            None,
            *[E("{%s}mechanism" % ns.SASL, None, m) for m in self._offered()],
        )

    # -- STARTTLS (RFC 6120 §5) --------------------------------------------------------------

    def _on_starttls(self, element: Element) -> list[Action]:
        if self.tls or not self.policy.tls_available:
            # RFC 6120 §5.4.2.2: failure, then the stream is closed; nothing more is read.
            self.state = State.CLOSED
            return [
                Send(serialize(E("{%s}failure" % ns.TLS), ns.CLIENT)),
                Send(STREAM_CLOSE),
                Close(),
            ]
        self.state = State.TLS_STARTING
        return [Send(serialize(E("{%s}proceed" % ns.TLS), ns.CLIENT)), StartTls()]

    def idle(self) -> None:
        """The transport has read nothing for a while: a bound stream's parser may let go of
        its state and make it again when data comes (``XmlStream.release``)."""
        if self.state is State.BOUND:
            self.parser.release()

    def tls_started(self, channel_binding: tuple[str, bytes] | None) -> None:
        """The transport finished the TLS handshake: restart the stream (RFC 6120 §5.4.3.3)."""
        self.tls = True
        self.channel_binding = channel_binding
        self.header_sent = False
        self.parser.reset()
        self.state = State.EXPECT_HEADER

    # -- in-band registration (XEP-0077) -----------------------------------------------------

    def _on_register(self, element: Element) -> list[Action]:
        if self.policy.tls_required and not self.tls:
            return self._stream_error("policy-violation", "STARTTLS is required")
        iq_id = element.get("id", "")
        if not self.policy.registration_on(self.domain):
            return [Send(serialize(_iq_error(element, "cancel", "service-unavailable"), ns.CLIENT))]
        query = element.find("{%s}query" % REGISTER)
        assert query is not None
        if element.get("type") == "get":
            fields = E(
                "{%s}query" % REGISTER,
                None,
                E("{%s}instructions" % REGISTER, None, "Choose a username and a password."),
                E("{%s}username" % REGISTER),
                E("{%s}password" % REGISTER),
            )
            reply = E("{%s}iq" % ns.CLIENT, {"type": "result", "id": iq_id}, fields)
            return [Send(serialize(reply, ns.CLIENT))]
        username = query.find("{%s}username" % REGISTER)
        password = query.find("{%s}password" % REGISTER)
        if element.get("type") != "set" or username is None or password is None:
            return [Send(serialize(_iq_error(element, "modify", "bad-request"), ns.CLIENT))]
        return [RegistrationRequested(iq_id, username.text.strip(), password.text)]

    def registration_done(self, iq_id: str, condition: str | None, text: str = "") -> list[Action]:
        """The answer to a :class:`RegistrationRequested`: success, or the stanza error."""
        iq = E("{%s}iq" % ns.CLIENT, {"type": "result", "id": iq_id})
        if condition is not None:
            type_ = "wait" if condition == "resource-constraint" else "modify"
            if condition in ("conflict", "not-allowed", "service-unavailable"):
                type_ = "cancel"
            iq = _iq_error(iq, type_, condition, text)
        return [Send(serialize(iq, ns.CLIENT))]

    # -- SASL2 with Bind2 and FAST (XEP-0388, XEP-0386, XEP-0484) -----------------------------

    def _on_sasl2_auth(self, element: Element) -> list[Action]:
        if self.policy.tls_required and not self.tls:
            return self._stream_error("policy-violation", "STARTTLS is required")
        if not self.policy.sasl2:
            return self._unexpected(element)
        try:
            req = sasl2.parse(element)
        except sasl2.Malformed as exc:
            return self._sasl2_failure("malformed-request", str(exc))
        self.sasl2_request = req
        if req.mechanism in sasl2.FAST_MECHANISMS:
            return self._fast_auth(req)
        if req.mechanism not in self._offered():
            return self._sasl2_failure("invalid-mechanism", None)
        self.sasl_mechanism = req.mechanism
        self.sasl = SaslServer(
            req.mechanism,
            self.credentials,
            channel_binding=self.channel_binding,
            tls=self.tls,
            normalize_username=self.normalize_username,
            domain=self.domain,
        )
        self.state = State.SASL2
        return self._advance(req.initial_response or b"", v2=True)

    def _on_sasl2_response(self, element: Element) -> list[Action]:
        try:
            payload = sasl2.parse_payload(element.text)
        except ValueError:
            self.sasl = None
            return self._sasl2_failure("incorrect-encoding", None)
        return self._advance(payload, v2=True)

    def _on_sasl2_abort(self, element: Element) -> list[Action]:
        if self.sasl is not None:
            self.sasl.abort()
        self.sasl = None
        return self._sasl2_failure("aborted", None)

    def _fast_auth(self, req: sasl2.Authenticate) -> list[Action]:
        """HT-SHA-256-NONE with the device's FAST token (XEP-0484 §3.3)."""
        self.sasl_mechanism = req.mechanism
        parts = sasl2.split_ht(req.initial_response or b"")
        if parts is None or not self.policy.fast or not req.agent_id or not self.tls:
            return self._sasl2_failure("not-authorized", None)
        try:
            username = self.normalize_username(parts[0])
        except InvalidJID:
            return self._sasl2_failure("not-authorized", None)
        if not self.auth_allowed(username):
            return [
                AuthFailed(username, "temporary-auth-failure"),
                *self._sasl2_failure("temporary-auth-failure", "too many failed attempts"),
            ]
        cred = self.fast_token(username, req.agent_id)
        if (
            cred is None
            or cred.mechanism != req.mechanism
            or not hmac.compare_digest(sasl2.ht_initiator(cred.token), parts[1])
        ):
            return [
                AuthFailed(username, "not-authorized"),
                *self._sasl2_failure("not-authorized", None),
            ]
        if cred.expired:
            return [
                AuthFailed(username, "credentials-expired"),
                *self._sasl2_failure("credentials-expired", "the token has expired"),
            ]
        return self._sasl2_success(username, sasl2.ht_responder(cred.token))

    def _sasl2_success(self, username: str, additional: bytes) -> list[Action]:
        self.sasl = None
        self.username = username
        req = self.sasl2_request
        assert req is not None
        actions: list[Action] = [Authenticated(username, self.sasl_mechanism)]
        self.sasl2_additional = additional
        if req.resume is not None:
            # XEP-0198 inline: resume first; Bind2 only if that fails (see resume_failed).
            self.state = State.BIND_PENDING
            return [*actions, SmResume(req.resume[0], req.resume[1])]
        return actions + self._sasl2_bind(username, req, [])

    def _sasl2_bind(
        self, username: str, req: sasl2.Authenticate, extra: list[Element]
    ) -> list[Action]:
        additional = self.sasl2_additional
        if req.bind_tag is not None:
            # XEP-0386 §3: the server picks the resource: the client's tag, then a part stable
            # per user-agent id, so a device that comes back gets its resource (and its offline
            # messages, which are kept per device) again.
            if req.agent_id:
                stable = hashlib.sha256(req.agent_id.encode()).hexdigest()[:12]
            else:
                stable = secrets.token_hex(6)
            resource = f"{req.bind_tag or 'xes'}.{stable}"
            try:
                jid = JID.parse(f"{username}@{self.domain}/{resource}")
            except InvalidJID:
                jid = JID.parse(f"{username}@{self.domain}/xes.{stable}")
            self.sasl2_extra = extra
            self.state = State.BIND_PENDING
            return [BindRequested("", jid, bool(req.agent_id), inline=req)]
        # Authenticated without Bind2: no stream restart (XEP-0388 §2.4); a bind iq follows.
        self.sasl2_request = None
        self.state = State.BINDING
        success = self._sasl2_success_element(additional, f"{username}@{self.domain}", extra)
        return [Send(serialize(success, ns.CLIENT))]

    def _sasl2_success_element(self, additional: bytes, aid: str, extra: list[Element]) -> Element:
        children: list[Element] = []
        if additional:
            children.append(E("{%s}additional-data" % sasl2.NS, None, sasl2.b64(additional)))
        children.append(E("{%s}authorization-identifier" % sasl2.NS, None, aid))
        return E("{%s}success" % sasl2.NS, None, *children, *extra)

    def _sasl2_failure(self, condition: str, text: str | None) -> list[Action]:
        self.auth_attempts += 1
        self.sasl = None
        self.sasl2_request = None
        children: list[Element] = [E("{%s}%s" % (ns.SASL, condition))]
        if text:
            children.append(E("{%s}text" % sasl2.NS, None, text))
        actions: list[Action] = [
            Send(serialize(E("{%s}failure" % sasl2.NS, None, *children), ns.CLIENT))
        ]
        self.state = State.NEGOTIATING
        if self.auth_attempts >= self.policy.max_auth_attempts:
            actions += self._stream_error("policy-violation", "too many authentication attempts")
        return actions

    # -- SASL (RFC 6120 §6) ------------------------------------------------------------------

    def _on_auth(self, element: Element) -> list[Action]:
        if self.policy.tls_required and not self.tls:
            return self._stream_error("policy-violation", "STARTTLS is required")
        mechanism = element.get("mechanism", "")
        if mechanism not in self._offered():
            return self._sasl_failure("invalid-mechanism", None)
        self.sasl_mechanism = mechanism
        self.sasl = SaslServer(
            mechanism,
            self.credentials,
            channel_binding=self.channel_binding,
            tls=self.tls,
            normalize_username=self.normalize_username,
            domain=self.domain,
        )
        self.state = State.SASL
        return self._sasl_step(element.text)

    def _on_response(self, element: Element) -> list[Action]:
        return self._sasl_step(element.text)

    def _on_abort(self, element: Element) -> list[Action]:
        if self.sasl is not None:
            self.sasl.abort()
        self.sasl = None
        return self._sasl_failure("aborted", None)

    def _sasl_step(self, text: str) -> list[Action]:
        try:
            payload = sasl2.parse_payload(text)
        except ValueError:
            self.sasl = None
            return self._sasl_failure("incorrect-encoding", None)
        return self._advance(payload, v2=False)

    def _advance(self, payload: bytes, v2: bool) -> list[Action]:
        """One step of a password mechanism, for RFC 6120 SASL or SASL2 (``v2``)."""
        assert self.sasl is not None
        fail = self._sasl2_failure if v2 else self._sasl_failure
        result = self.sasl.step(payload)
        attempted = self.sasl.attempted_username
        if attempted is not None and not self.auth_allowed(attempted):
            # Locked out: the same answer whatever the password, decided before any proof is
            # checked, so a lockout never tells a guesser that a guess was right.
            self.sasl = None
            return [
                AuthFailed(attempted, "temporary-auth-failure"),
                *fail("temporary-auth-failure", "too many failed attempts; try later"),
            ]
        if isinstance(result, Challenge):
            challenge_ns = sasl2.NS if v2 else ns.SASL
            challenge = E("{%s}challenge" % challenge_ns, None, _b64(result.data))
            return [Send(serialize(challenge, ns.CLIENT))]
        if isinstance(result, Failure):
            attempted = self.sasl.attempted_username
            self.sasl = None
            return [
                AuthFailed(attempted, str(result.condition)),
                *fail(str(result.condition), result.text),
            ]
        assert isinstance(result, Success)
        if v2:
            return self._sasl2_success(result.username, result.data)
        self.sasl = None
        self.username = result.username
        self.header_sent = False
        self.parser.reset()
        self.state = State.EXPECT_HEADER
        success = E("{%s}success" % ns.SASL, None, *([_b64(result.data)] if result.data else []))
        return [
            Send(serialize(success, ns.CLIENT)),
            Authenticated(result.username, self.sasl_mechanism),
        ]

    def _sasl_failure(self, condition: str, text: str | None) -> list[Action]:
        self.auth_attempts += 1
        children: list[Element] = [E("{%s}%s" % (ns.SASL, condition))]
        if text:
            children.append(E("{%s}text" % ns.SASL, {"{%s}lang" % ns.XML: "en"}, text))
        actions: list[Action] = [
            Send(serialize(E("{%s}failure" % ns.SASL, None, *children), ns.CLIENT))
        ]
        self.state = State.NEGOTIATING
        if self.auth_attempts >= self.policy.max_auth_attempts:
            # RFC 6120 §6.4.5: a reasonable number of retries, then the stream is closed.
            actions += self._stream_error("policy-violation", "too many authentication attempts")
        return actions

    # -- resource binding (RFC 6120 §7) ------------------------------------------------------

    def _on_bind(self, element: Element) -> list[Action]:
        iq_id = element.get("id", "")
        if element.get("type") != "set":
            return [Send(serialize(_iq_error(element, "modify", "bad-request"), ns.CLIENT))]
        bind = element.find("{%s}bind" % ns.BIND)
        assert bind is not None
        requested = bind.find("{%s}resource" % ns.BIND)
        resource = requested.text.strip() if requested is not None else ""
        chosen = bool(resource)
        if not resource:
            resource = "xes-" + secrets.token_hex(6)
        assert self.username is not None
        try:
            jid = JID.parse(f"{self.username}@{self.domain}/{resource}")
        except InvalidJID:
            return [Send(serialize(_iq_error(element, "modify", "bad-request"), ns.CLIENT))]
        self.state = State.BIND_PENDING
        return [BindRequested(iq_id, jid, chosen)]

    def bind_succeeded(
        self,
        iq_id: str,
        jid: JID,
        token: tuple[str, str] | None = None,
        sm_enabled: Element | None = None,
    ) -> list[Action]:
        """The session is recorded. ``token``: a new FAST token and its expiry stamp;
        ``sm_enabled``: the ``<enabled/>`` of stream management enabled inline (Bind2)."""
        self.jid = jid
        self.state = State.BOUND
        if self.sasl2_request is not None and self.sasl2_request.bind_tag is not None:
            if sm_enabled is not None:
                self.sm_enabled = True
                self.sm_in = 0  # XEP-0198 §4: counting starts with the enable
            extra = [*self.sasl2_extra, E("{%s}bound" % sasl2.BIND2, None, sm_enabled)]
            if token is not None:
                extra.append(E("{%s}token" % sasl2.FAST, {"token": token[0], "expiry": token[1]}))
            success = self._sasl2_success_element(self.sasl2_additional, str(jid), extra)
            self.sasl2_request = None
            self.sasl2_extra = []
            return [Send(serialize(success, ns.CLIENT))]
        reply = E(
            "{%s}iq" % ns.CLIENT,
            {"type": "result", "id": iq_id},
            E("{%s}bind" % ns.BIND, None, E("{%s}jid" % ns.BIND, None, str(jid))),
        )
        return [Send(serialize(reply, ns.CLIENT))]

    def bind_failed(self, iq_id: str, condition: str = "internal-server-error") -> list[Action]:
        if self.sasl2_request is not None:
            # Bind2 failed: the whole authentication fails, the client may try again.
            self.username = None
            return self._sasl2_failure("temporary-auth-failure", "the session could not start")
        self.state = State.BINDING
        iq = E("{%s}iq" % ns.CLIENT, {"type": "set", "id": iq_id})
        return [Send(serialize(_iq_error(iq, "wait", condition), ns.CLIENT))]

    def _on_session_iq(self, element: Element) -> list[Action]:
        if self.sm_enabled:
            return self._on_stanza(element)  # counted, so answered through the outbox
        # RFC 3921 session establishment is a no-op kept for old clients (RFC 6121 Appendix E).
        reply = E("{%s}iq" % ns.CLIENT, {"type": "result", "id": element.get("id", "")})
        return [Send(serialize(reply, ns.CLIENT))]

    def _on_stanza(self, element: Element) -> list[Action]:
        if (
            self.declared_lang is not None
            and element.get(XML_LANG) is None
            and element.name != "iq"
        ):
            # RFC 6120 §4.7.4: the stream's default language travels with the stanza, so a
            # copy read later from storage (offline, archive, room history) keeps it.
            element = element.with_attrs(**{XML_LANG: self.declared_lang})
        if self.sm_enabled:
            self.sm_in += 1
            return [StanzaReceived(element, self.sm_in)]
        return [StanzaReceived(element)]

    # -- stream management (XEP-0198) ----------------------------------------------------------

    def _on_sm_enable(self, element: Element) -> list[Action]:
        if self.sm_enabled:
            return [Send(sm.failed("unexpected-request"))]  # §3: at most one enable
        self.sm_enabled = True
        self.sm_in = 0
        resume = element.get("resume") in ("true", "1")
        return [SmEnable(resume, sm.parse_max(element))]

    def _on_sm_enable_early(self, element: Element) -> list[Action]:
        # §3: a client enables stream management after binding a resource (or resumes instead).
        return [Send(sm.failed("unexpected-request"))]

    def _on_sm_resume(self, element: Element) -> list[Action]:
        h = sm.parse_h(element)
        previd = element.get("previd", "")
        if h is None or not previd:
            return [Send(sm.failed("bad-request"))]
        self.state = State.BIND_PENDING
        return [SmResume(previd, h)]

    def _on_sm_resume_bound(self, element: Element) -> list[Action]:
        # §5: <resume/> takes the place of resource binding; this stream has a resource (bound
        # or resumed already), so there is nothing to resume into. §6: an error about <resume/>
        # is a <failed/>, and SM errors are recoverable: the stream and its session go on
        # (Prosody's mod_smacks answers the same). It used to be a stream error,
        # unsupported-stanza-type, which also ended the live session's stream.
        return [Send(sm.failed("unexpected-request"))]

    def resume_succeeded(self, jid: JID, handled: int) -> None:
        """The transport resumed session ``jid``; ``handled`` client stanzas were committed."""
        self.jid = jid
        self.state = State.BOUND
        self.sm_enabled = True
        self.sm_in = handled

    def resume_failed(self, condition: str, handled: int | None) -> list[Action]:
        req = self.sasl2_request
        if req is not None and req.resume is not None and self.username is not None:
            # Inline in SASL2: <failed/> goes inside <success/>, then Bind2 if it was asked.
            failed = parse_fragment(sm.failed(condition, handled))
            return self._sasl2_bind(self.username, req, [failed])
        self.state = State.BINDING
        return [Send(sm.failed(condition, handled))]

    def sasl2_resumed(self, resumed: bytes) -> bytes | None:
        """With SASL2 inline resumption: the ``<success/>`` that carries ``resumed``."""
        req = self.sasl2_request
        if req is None or req.resume is None:
            return None
        self.sasl2_request = None
        aid = str(self.jid) if self.jid is not None else ""
        success = self._sasl2_success_element(self.sasl2_additional, aid, [parse_fragment(resumed)])
        return serialize(success, ns.CLIENT)

    def _on_csi(self, element: Element) -> list[Action]:
        # Not a stanza: not counted by stream management (XEP-0352 §5), never answered.
        return [ClientState(element.name == "active")]

    def _on_sm_r(self, element: Element) -> list[Action]:
        if not self.sm_enabled:
            return self._stream_error("unsupported-stanza-type", "stream management not enabled")
        return [SmRequest()]

    def _on_sm_a(self, element: Element) -> list[Action]:
        h = sm.parse_h(element)
        if not self.sm_enabled or h is None:
            return self._stream_error("undefined-condition", "invalid stream management ack")
        return [SmAck(h)]

    # -- errors ------------------------------------------------------------------------------

    def _unexpected(self, element: Element) -> list[Action]:
        if self.state in (State.NEGOTIATING, State.SASL) and element.ns == ns.CLIENT:
            return self._stream_error("not-authorized", None)
        if self.state is State.BIND_PENDING and element.ns == ns.CLIENT:
            return self._stream_error("not-authorized", "stanza before resource binding finished")
        if self.state is State.BINDING and element.ns == ns.CLIENT:
            return self._stream_error("not-authorized", "resource binding required")
        if element.ns in (ns.CLIENT, ns.TLS, ns.SASL, ns.BIND, ns.STREAMS):
            return self._stream_error("policy-violation", f"unexpected {element.name}")
        return self._stream_error("unsupported-stanza-type", None)

    def _stream_error(self, condition: str, text: str | None, header: bool = True) -> list[Action]:
        actions: list[Action] = []
        if header and not self.header_sent:
            # RFC 6120 §4.9.1.3: an error before the response header still opens the stream.
            actions.append(Send(stream_header({"from": self.domain, "version": "1.0"})))
            self.header_sent = True
        self.state = State.CLOSED
        actions += [Send(stream_error(condition, text) + STREAM_CLOSE), Close(condition)]
        return actions

    def stream_error(self, condition: str, text: str | None = None) -> list[Action]:
        """Close the stream with ``condition`` on the transport's initiative (timeouts, floods)."""
        if self.state is State.CLOSED:
            return []
        return self._stream_error(condition, text)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else "="


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return 0


def _iq_error(iq: Element, type_: str, condition: str, text: str = "") -> Element:
    children = [E("{%s}%s" % (ns.STANZAS, condition))]
    if text:
        children.append(E("{%s}text" % ns.STANZAS, None, text))
    return E(
        "{%s}iq" % ns.CLIENT,
        {"type": "error", "id": iq.get("id", "")},
        E("{%s}error" % ns.CLIENT, {"type": type_}, *children),
    )


def _classify(element: Element) -> str:
    tag = element.tag
    if tag == "{%s}starttls" % ns.TLS:
        return "starttls"
    if element.ns == ns.SASL:
        return {"auth": "auth", "response": "response", "abort": "abort"}.get(element.name, "other")
    if element.ns == sasl2.NS:
        names = {"authenticate": "sasl2_auth", "response": "sasl2_response", "abort": "sasl2_abort"}
        return names.get(element.name, "other")
    if tag == "{%s}iq" % ns.CLIENT:
        if element.find("{%s}bind" % ns.BIND) is not None:
            return "bind"
        if element.find("{%s}session" % ns.SESSION) is not None:
            return "session"
        if element.find("{%s}query" % REGISTER) is not None:
            return "register"
    if element.ns == ns.CLIENT and element.name in ("message", "presence", "iq"):
        return "stanza"
    if element.ns == ns.SM and element.name in ("enable", "resume", "r", "a"):
        return "sm_" + element.name
    if element.ns == CSI and element.name in ("active", "inactive"):
        return "csi"
    return "other"


TRANSITIONS: dict[tuple[State, str], Callable[[C2SProtocol, Element], list[Action]]] = {
    (State.NEGOTIATING, "starttls"): C2SProtocol._on_starttls,
    (State.NEGOTIATING, "auth"): C2SProtocol._on_auth,
    (State.NEGOTIATING, "register"): C2SProtocol._on_register,
    (State.NEGOTIATING, "sasl2_auth"): C2SProtocol._on_sasl2_auth,
    (State.SASL2, "sasl2_response"): C2SProtocol._on_sasl2_response,
    (State.SASL2, "sasl2_abort"): C2SProtocol._on_sasl2_abort,
    (State.BOUND, "register"): C2SProtocol._on_stanza,
    (State.SASL, "response"): C2SProtocol._on_response,
    (State.SASL, "abort"): C2SProtocol._on_abort,
    (State.BINDING, "bind"): C2SProtocol._on_bind,
    (State.BINDING, "session"): C2SProtocol._on_session_iq,
    (State.BOUND, "session"): C2SProtocol._on_session_iq,
    (State.BOUND, "stanza"): C2SProtocol._on_stanza,
    (State.BOUND, "bind"): C2SProtocol._on_stanza,
    (State.BOUND, "sm_enable"): C2SProtocol._on_sm_enable,
    (State.BOUND, "sm_r"): C2SProtocol._on_sm_r,
    (State.BOUND, "csi"): C2SProtocol._on_csi,
    (State.BOUND, "sm_a"): C2SProtocol._on_sm_a,
    (State.BINDING, "sm_enable"): C2SProtocol._on_sm_enable_early,
    (State.BINDING, "sm_resume"): C2SProtocol._on_sm_resume,
    (State.BOUND, "sm_resume"): C2SProtocol._on_sm_resume_bound,
}
"""Every (state, input) pair that is allowed; anything else is a stream error."""
