"""xes.session.c2s: the sans-IO client stream negotiation (RFC 6120 §4-§7), without sockets.

Bytes go in through ``receive_data``; the actions that come out are checked, and every ``Send``
is parsed back with an independent client-side :class:`XmlStream`, so the assertions are on the
XML a client would see. SCRAM is driven by scramp's own client.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import scramp.core
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scramp import ScramClient

from xes.jid import JID
from xes.session import c2s
from xes.session.c2s import (
    TRANSITIONS,
    Action,
    Authenticated,
    AuthFailed,
    BindRequested,
    C2SPolicy,
    C2SProtocol,
    Close,
    Send,
    StanzaReceived,
    StartTls,
    State,
)
from xes.session.sasl import derive_credentials
from xes.xml import Element, ElementReceived, StreamClosed, StreamOpened, XmlStream, ns

try:
    from xes.jid import normalize_localpart as normalize_username
except ImportError:  # pragma: no cover - only while xes.jid is unfinished
    normalize_username = str.lower

DOMAIN = "example.org"
PASSWORD = "r0meo&juliet"
CB = ("tls-server-end-point", bytes(range(32)))
ALL_MECHANISMS = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
ACCOUNTS: dict[str, Any] = {
    "juliet": derive_credentials(PASSWORD),
    "romeo": derive_credentials("x" * 9),
}

STREAMS = "http://etherx.jabber.org/streams"


def q(namespace: str, name: str) -> str:
    """Clark notation: ``{namespace}name``."""
    return f"{{{namespace}}}{name}"


# --- building client input -------------------------------------------------------------------


def header(
    to: str | None = DOMAIN,
    version: str | None = "1.0",
    content_ns: str | None = ns.CLIENT,
    stream_ns: str = STREAMS,
) -> bytes:
    attrs = ""
    if content_ns is not None:
        attrs += f" xmlns='{content_ns}'"
    attrs += f" xmlns:stream='{stream_ns}'"
    if to is not None:
        attrs += f" to='{to}'"
    if version is not None:
        attrs += f" version='{version}'"
    return f"<?xml version='1.0'?><stream:stream{attrs} xml:lang='en'>".encode()


STARTTLS = f"<starttls xmlns='{ns.TLS}'/>".encode()
ABORT = f"<abort xmlns='{ns.SASL}'/>".encode()
CLOSE = b"</stream:stream>"


def auth(mechanism: str, payload: bytes | str | None) -> bytes:
    if payload is None:
        return f"<auth xmlns='{ns.SASL}' mechanism='{mechanism}'/>".encode()
    text = payload if isinstance(payload, str) else b64(payload)
    return f"<auth xmlns='{ns.SASL}' mechanism='{mechanism}'>{text}</auth>".encode()


def response(payload: bytes | str) -> bytes:
    text = payload if isinstance(payload, str) else b64(payload)
    return f"<response xmlns='{ns.SASL}'>{text}</response>".encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else "="


def plain(user: str = "juliet", password: str = PASSWORD) -> bytes:
    return auth("PLAIN", f"\x00{user}\x00{password}".encode())


def bind(resource: str | None, iq_id: str = "bind-1", type_: str = "set") -> bytes:
    inner = "" if resource is None else f"<resource>{resource}</resource>"
    return f"<iq type='{type_}' id='{iq_id}'><bind xmlns='{ns.BIND}'>{inner}</bind></iq>".encode()


SESSION_IQ = f"<iq type='set' id='sess-1'><session xmlns='{ns.SESSION}'/></iq>".encode()
MESSAGE = (
    b"<message to='romeo@example.org' type='chat' id='m1'><body>Wherefore art thou?</body>"
    b"</message>"
)


# --- reading server output like a client would -----------------------------------------------


@dataclass
class Reader:
    """The client's side: parses everything the server sends."""

    parser: XmlStream = field(default_factory=XmlStream)
    opened: bool = False

    def read(self, actions: list[Action]) -> list[StreamOpened | Element | StreamClosed]:
        """Parsed items; a test that starts reading mid-stream gets an implied header."""
        out: list[StreamOpened | Element | StreamClosed] = []
        for action in actions:
            if not isinstance(action, Send):
                continue
            if action.data.startswith(b"<?xml"):
                self.parser.reset()  # a (new) stream header from the server
                self.opened = True
            elif not self.opened:
                self.parser.receive_data(header())
                self.opened = True
            for event in self.parser.receive_data(action.data):
                out.append(event.element if isinstance(event, ElementReceived) else event)
        return out


def others(actions: list[Action]) -> list[Action]:
    """The actions other than Send."""
    return [a for a in actions if not isinstance(a, Send)]


def elements(items: list[StreamOpened | Element | StreamClosed]) -> list[Element]:
    return [i for i in items if isinstance(i, Element)]


def stream_error_condition(actions: list[Action]) -> str:
    """Check that ``actions`` end the stream with one stream error and Close; return its
    condition."""
    assert actions, "no actions"
    last = actions[-1]
    assert isinstance(last, Close), actions
    prefix: list[Action] = [] if _has_header(actions) else [Send(header())]
    items = Reader().read(prefix + actions)
    errors = [e for e in elements(items) if e.tag == q(STREAMS, "error")]
    assert len(errors) == 1, items
    assert isinstance(items[-1], StreamClosed), items
    conditions = [c.name for c in errors[0].elements() if c.ns == ns.STREAM_ERRORS]
    conditions = [c for c in conditions if c != "text"]
    assert len(conditions) == 1, errors[0]
    assert last.condition == conditions[0]
    return conditions[0]


def _has_header(actions: list[Action]) -> bool:
    return any(isinstance(a, Send) and a.data.startswith(b"<?xml") for a in actions)


def sasl_failure_condition(items: list[StreamOpened | Element | StreamClosed]) -> str:
    failures = [e for e in elements(items) if e.tag == q(ns.SASL, "failure")]
    assert len(failures) == 1, items
    names = [c.name for c in failures[0].elements() if c.name != "text"]
    assert len(names) == 1, failures[0]
    return names[0]


def failure_of(actions: list[Action]) -> str:
    return sasl_failure_condition(Reader().read(actions))


def mechanisms_offered(features: Element) -> list[str] | None:
    mechs = features.find(q(ns.SASL, "mechanisms"))
    if mechs is None:
        return None
    return [m.text for m in mechs.find_all(q(ns.SASL, "mechanism"))]


# --- driving the protocol -----------------------------------------------------------------------


def credentials(localpart: str) -> dict[str, Any] | None:
    return ACCOUNTS.get(localpart)


def make(
    *,
    mechanisms: tuple[str, ...] = ALL_MECHANISMS,
    auth_allowed: Callable[[str], bool] = lambda _user: True,
    **policy: Any,
) -> C2SProtocol:
    return C2SProtocol(
        C2SPolicy(domain=DOMAIN, mechanisms=mechanisms, **policy),
        credentials=credentials,
        normalize_username=normalize_username,
        auth_allowed=auth_allowed,
    )


Feed = Callable[[C2SProtocol, bytes], list[Action]]


def whole(p: C2SProtocol, data: bytes) -> list[Action]:
    return p.receive_data(data)


def to_negotiating(
    p: C2SProtocol, *, tls: bool = True, cb: tuple[str, bytes] | None = CB
) -> C2SProtocol:
    p.receive_data(header())
    if tls:
        assert others(p.receive_data(STARTTLS)) == [StartTls()]
        p.tls_started(cb)
        p.receive_data(header())
    assert p.state is State.NEGOTIATING
    return p


def to_binding(p: C2SProtocol, user: str = "juliet") -> C2SProtocol:
    to_negotiating(p)
    assert others(p.receive_data(plain(user))) == [Authenticated(user, "PLAIN")]
    p.receive_data(header())
    assert p.state is State.BINDING
    return p


def to_bound(p: C2SProtocol, resource: str = "balcony") -> C2SProtocol:
    to_binding(p)
    [requested] = p.receive_data(bind(resource))
    assert isinstance(requested, BindRequested)
    p.bind_succeeded(requested.iq_id, requested.jid)
    assert p.state is State.BOUND
    return p


def scram_exchange(
    p: C2SProtocol,
    feed: Feed,
    mechanism: str,
    reader: Reader,
    user: str = "juliet",
    password: str = PASSWORD,
) -> list[Action]:
    """Run a SCRAM exchange with scramp's client; return the actions of the final step."""
    client = ScramClient(
        [mechanism],
        user,
        password,
        channel_binding=CB if mechanism.endswith("-PLUS") else None,
        c_nonce="fyko+d2lbbFgONRv9qkxdawL",
    )
    actions = feed(p, auth(mechanism, client.get_client_first().encode()))
    [challenge] = elements(reader.read(actions))
    assert challenge.tag == q(ns.SASL, "challenge")
    assert others(actions) == []
    assert p.state is State.SASL
    client.set_server_first(base64.b64decode(challenge.text).decode())
    final = feed(p, response(client.get_client_final().encode()))
    items = reader.read(final)
    [success] = elements(items)
    assert success.tag == q(ns.SASL, "success"), success
    client.set_server_final(base64.b64decode(success.text).decode())  # verifies the server
    return final


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Fix the stream ids, generated resources and SCRAM server nonces, so that two runs of the
    same exchange produce identical bytes."""
    counter = itertools.count()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(c2s.secrets, "token_urlsafe", lambda n=16: f"id{next(counter)}")
        mp.setattr(c2s.secrets, "token_hex", lambda n=16: f"{next(counter):0{2 * n}x}")
        # scramp imports token_hex by name for its nonces (scramp is pinned to 1.5 in pyproject).
        mp.setattr(scramp.core, "token_hex", lambda n=None: "3rfcNHYJY1ZVvWVs7j")
        yield


def happy_path(feed: Feed) -> list[list[Action]]:
    """Header, STARTTLS, SCRAM-SHA-256, restart, bind, stanzas, close: the actions of each flight
    the client sends. ``feed`` hands one flight to the protocol (whole or in pieces)."""
    p = make()
    reader = Reader()
    flights: list[list[Action]] = []
    flights.append(feed(p, header()))
    flights.append(feed(p, STARTTLS))
    p.tls_started(CB)
    flights.append(feed(p, header()))
    reader.read(flights[-1])
    flights.append(scram_exchange(p, feed, "SCRAM-SHA-256", reader))
    flights.append(feed(p, header()))
    flights.append(feed(p, bind("balcony")))
    [requested] = flights[-1]
    assert isinstance(requested, BindRequested)
    flights.append(p.bind_succeeded(requested.iq_id, requested.jid))
    flights.append(feed(p, SESSION_IQ + b"\n " + MESSAGE + b"<presence/>"))
    flights.append(feed(p, CLOSE))
    return flights


# --- the happy path -----------------------------------------------------------------------------


def test_happy_path_step_by_step() -> None:
    p = make()
    reader = Reader()

    # Initial header: our header, then features that require STARTTLS and offer no SASL yet.
    actions = p.receive_data(header())
    assert others(actions) == []
    [opened, features] = reader.read(actions)
    assert isinstance(opened, StreamOpened)
    assert opened.ns == ns.CLIENT
    assert opened.attrs["from"] == DOMAIN
    assert opened.attrs["version"] == "1.0"
    assert opened.attrs["id"] == p.stream_id != ""
    assert isinstance(features, Element)
    assert features.tag == q(STREAMS, "features")
    starttls = features.find(q(ns.TLS, "starttls"))
    assert starttls is not None
    assert starttls.find(q(ns.TLS, "required")) is not None
    assert mechanisms_offered(features) is None
    assert features.find(q(ns.BIND, "bind")) is None
    assert p.state is State.NEGOTIATING

    # STARTTLS: <proceed/>, then the transport wraps the socket.
    actions = p.receive_data(STARTTLS)
    [proceed] = elements(reader.read(actions))
    assert proceed.tag == q(ns.TLS, "proceed")
    assert others(actions) == [StartTls()]
    assert p.state is State.TLS_STARTING
    p.tls_started(CB)
    assert p.state is State.EXPECT_HEADER
    first_id = p.stream_id

    # Restart over TLS: every mechanism, -PLUS ones because channel binding data exists.
    actions = p.receive_data(header())
    [opened, features] = reader.read(actions)
    assert isinstance(opened, StreamOpened)
    assert opened.attrs["id"] == p.stream_id != first_id
    assert isinstance(features, Element)
    assert features.find(q(ns.TLS, "starttls")) is None
    assert mechanisms_offered(features) == list(ALL_MECHANISMS)
    cb = features.find(q(ns.SASL_CB, "sasl-channel-binding"))
    assert cb is not None
    assert [c.get("type") for c in cb.elements()] == ["tls-server-end-point"]

    # SCRAM-SHA-256 with scramp's client.
    final = scram_exchange(p, whole, "SCRAM-SHA-256", reader)
    assert others(final) == [Authenticated("juliet", "SCRAM-SHA-256")]
    assert p.state is State.EXPECT_HEADER
    assert p.username == "juliet"

    # Restart: bind and the optional legacy session.
    actions = p.receive_data(header())
    [opened, features] = reader.read(actions)
    assert isinstance(features, Element)
    assert features.find(q(ns.BIND, "bind")) is not None
    session = features.find(q(ns.SESSION, "session"))
    assert session is not None and session.find(q(ns.SESSION, "optional")) is not None
    assert mechanisms_offered(features) is None
    assert features.find(q(ns.TLS, "starttls")) is None
    assert p.state is State.BINDING

    # Bind a requested resource: the transport records the session, then confirms.
    actions = p.receive_data(bind("balcony", iq_id="b1"))
    assert actions == [BindRequested("b1", JID.parse("juliet@example.org/balcony"))]
    assert p.state is State.BIND_PENDING
    actions = p.bind_succeeded("b1", JID.parse("juliet@example.org/balcony"))
    [result] = elements(reader.read(actions))
    assert result.tag == q(ns.CLIENT, "iq")
    assert result.get("type") == "result"
    assert result.get("id") == "b1"
    bound = result.find(q(ns.BIND, "bind"))
    assert bound is not None
    assert bound.find(q(ns.BIND, "jid")).text == "juliet@example.org/balcony"  # type: ignore[union-attr]
    assert p.state is State.BOUND
    assert p.jid == JID.parse("juliet@example.org/balcony")

    # Stanzas flow to the router unchanged.
    actions = p.receive_data(MESSAGE)
    [received] = actions
    assert isinstance(received, StanzaReceived)
    assert received.stanza.tag == q(ns.CLIENT, "message")
    assert received.stanza.get("to") == "romeo@example.org"
    assert received.stanza.find(q(ns.CLIENT, "body")).text == "Wherefore art thou?"  # type: ignore[union-attr]

    # The legacy session iq is answered locally (RFC 6121 Appendix E).
    [reply] = elements(reader.read(p.receive_data(SESSION_IQ)))
    assert (reply.get("type"), reply.get("id")) == ("result", "sess-1")

    # A clean close is answered with our close tag.
    actions = p.receive_data(CLOSE)
    assert actions == [Send(CLOSE), Close()]
    assert p.state is State.CLOSED
    assert p.receive_data(MESSAGE) == []


def test_bind_without_resource_generates_one() -> None:
    p = to_binding(make())
    for requested in (None, "", "   "):
        other = to_binding(make())
        [action] = other.receive_data(bind(requested, iq_id="b2"))
        assert isinstance(action, BindRequested)
        assert action.iq_id == "b2"
        assert action.jid.bare == JID.parse("juliet@example.org")
        assert action.jid.resource
    # Two generated resources differ.
    [a] = p.receive_data(bind(None))
    [b] = to_binding(make()).receive_data(bind(None))
    assert isinstance(a, BindRequested) and isinstance(b, BindRequested)
    assert a.jid != b.jid


def test_bind_get_and_invalid_resource_are_bad_request() -> None:
    for data in (bind("r", type_="get"), bind("x" * 1100)):
        p = to_binding(make())
        actions = p.receive_data(data)
        assert others(actions) == []
        [error] = elements(Reader().read([Send(header()), *actions]))
        assert error.get("type") == "error"
        assert error.get("id") == "bind-1"
        err = error.find(q(ns.CLIENT, "error"))
        assert err is not None and err.find(q(ns.STANZAS, "bad-request")) is not None
        assert p.state is State.BINDING  # the client may try again


def test_bind_failed_lets_the_client_retry() -> None:
    p = to_binding(make())
    [requested] = p.receive_data(bind("balcony", iq_id="b1"))
    assert isinstance(requested, BindRequested)
    [error] = elements(Reader().read([Send(header()), *p.bind_failed("b1", "conflict")]))
    assert error.get("type") == "error" and error.get("id") == "b1"
    assert error.find(q(ns.CLIENT, "error")).find(q(ns.STANZAS, "conflict")) is not None  # type: ignore[union-attr]
    assert p.state is State.BINDING
    [again] = p.receive_data(bind("garden", iq_id="b2"))
    assert again == BindRequested("b2", JID.parse("juliet@example.org/garden"))


@pytest.mark.parametrize(
    "mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]
)
def test_scram_mechanisms(mechanism: str) -> None:
    p = to_negotiating(make())
    final = scram_exchange(p, whole, mechanism, Reader())
    assert others(final) == [Authenticated("juliet", mechanism)]


def test_scram_username_is_normalized() -> None:
    p = to_negotiating(make())
    final = scram_exchange(p, whole, "SCRAM-SHA-256", Reader(), user="Juliet")
    assert others(final) == [Authenticated("juliet", "SCRAM-SHA-256")]
    p.receive_data(header())
    [action] = p.receive_data(bind("r"))
    assert isinstance(action, BindRequested)
    assert action.jid == JID.parse("juliet@example.org/r")


def test_scram_without_initial_response() -> None:
    """RFC 6120 §6.4.2: no initial response, so the server sends an empty challenge first."""
    p = to_negotiating(make())
    reader = Reader()
    reader.read([Send(header())])
    [challenge] = elements(reader.read(p.receive_data(auth("SCRAM-SHA-256", None))))
    assert challenge.tag == q(ns.SASL, "challenge")
    assert challenge.text in ("", "=")
    client = ScramClient(["SCRAM-SHA-256"], "juliet", PASSWORD)
    first = response(client.get_client_first().encode())
    [challenge] = elements(reader.read(p.receive_data(first)))
    client.set_server_first(base64.b64decode(challenge.text).decode())
    actions = p.receive_data(response(client.get_client_final().encode()))
    assert others(actions) == [Authenticated("juliet", "SCRAM-SHA-256")]


def test_plain_success() -> None:
    p = to_negotiating(make())
    actions = p.receive_data(plain())
    [success] = elements(Reader().read([Send(header()), *actions]))
    assert success.tag == q(ns.SASL, "success")
    assert others(actions) == [Authenticated("juliet", "PLAIN")]


def test_mechanisms_offered() -> None:
    # Over TLS without channel binding data: no -PLUS; PLAIN over TLS.
    p = make()
    p.receive_data(header())
    p.receive_data(STARTTLS)
    p.tls_started(None)
    [_, features] = Reader().read(p.receive_data(header()))
    assert isinstance(features, Element)
    assert mechanisms_offered(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert features.find(q(ns.SASL_CB, "sasl-channel-binding")) is None
    # A -PLUS mechanism that was not offered is refused.
    actions = p.receive_data(auth("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=juliet,r=a"))
    assert failure_of(actions) == "invalid-mechanism"

    # TLS optional, not yet started: STARTTLS offered without <required/>, and no PLAIN and no
    # -PLUS on a plaintext stream.
    p = make(tls_required=False)
    [_, features] = Reader().read(p.receive_data(header()))
    assert isinstance(features, Element)
    starttls = features.find(q(ns.TLS, "starttls"))
    assert starttls is not None and starttls.find(q(ns.TLS, "required")) is None
    assert mechanisms_offered(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    # ... and PLAIN is refused there even though the policy lists it.
    actions = p.receive_data(plain())
    assert failure_of(actions) == "invalid-mechanism"

    # The policy's list restricts and orders what is offered.
    p = make(mechanisms=("SCRAM-SHA-1", "SCRAM-SHA-256-PLUS"))
    to_negotiating(p, tls=False)
    p.receive_data(STARTTLS)
    p.tls_started(CB)
    [_, features] = Reader().read(p.receive_data(header()))
    assert isinstance(features, Element)
    assert mechanisms_offered(features) == ["SCRAM-SHA-1", "SCRAM-SHA-256-PLUS"]


def test_tls_optional_scram_over_plaintext() -> None:
    p = make(tls_required=False)
    to_negotiating(p, tls=False)
    final = scram_exchange(p, whole, "SCRAM-SHA-256", Reader())
    assert others(final) == [Authenticated("juliet", "SCRAM-SHA-256")]


def test_plaintext_after_starttls_is_discarded() -> None:
    """RFC 6120 §5.4.3.3: what follows <starttls/> belongs to the TLS layer. Plaintext injected
    behind it (the STARTTLS command injection of CVE-2011-0411) must not be acted upon after
    the handshake."""
    p = make()
    p.receive_data(header())
    actions = p.receive_data(STARTTLS + plain() + MESSAGE)
    assert others(actions) == [StartTls()]
    p.tls_started(CB)
    assert p.state is State.EXPECT_HEADER
    [_, features] = Reader().read(p.receive_data(header()))
    assert isinstance(features, Element)
    assert mechanisms_offered(features) == list(ALL_MECHANISMS)
    assert p.username is None


# --- the same bytes, split anywhere, give the same actions ------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_happy_path_split_at_random_points(data: st.DataObject) -> None:
    def split_feed(p: C2SProtocol, payload: bytes) -> list[Action]:
        cuts = data.draw(
            st.lists(st.integers(0, len(payload)), max_size=min(8, len(payload))).map(sorted)
        )
        bounds = [0, *cuts, len(payload)]
        actions: list[Action] = []
        for start, end in itertools.pairwise(bounds):
            actions += p.receive_data(payload[start:end])
        return actions

    def byte_feed(p: C2SProtocol, payload: bytes) -> list[Action]:
        return [a for i in range(len(payload)) for a in p.receive_data(payload[i : i + 1])]

    with deterministic():
        expected = happy_path(whole)
    with deterministic():
        assert happy_path(split_feed) == expected
    if data.draw(st.booleans()):
        with deterministic():
            assert happy_path(byte_feed) == expected
    # Sanity: the reference run really went all the way.
    kinds = [type(a).__name__ for flight in expected for a in flight if not isinstance(a, Send)]
    assert kinds == [
        "StartTls",
        "Authenticated",
        "BindRequested",
        "StanzaReceived",
        "StanzaReceived",
        "Close",
    ]


# --- every (state, input kind) pair --------------------------------------------------------------

SAMPLES: dict[str, list[bytes]] = {
    "starttls": [STARTTLS],
    "auth": [plain()],
    "response": [response(b"n,,n=juliet,r=abc")],
    "abort": [ABORT],
    "bind": [bind("balcony", iq_id="bx")],
    "session": [SESSION_IQ],
    "sasl2_auth": [
        b"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256'>"
        b"<initial-response>biwsbj1qdWxpZXQscj1hYmNkZWZnaA==</initial-response></authenticate>"
    ],
    "sasl2_response": [b"<response xmlns='urn:xmpp:sasl:2'>AAAA</response>"],
    "sasl2_abort": [b"<abort xmlns='urn:xmpp:sasl:2'/>"],
    "csi": [b"<inactive xmlns='urn:xmpp:csi:0'/>", b"<active xmlns='urn:xmpp:csi:0'/>"],
    "register": [b"<iq type='get' id='rg'><query xmlns='jabber:iq:register'/></iq>"],
    "stanza": [
        MESSAGE,
        b"<presence/>",
        b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
    ],
    "sm_enable": [b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>"],
    "sm_resume": [b"<resume xmlns='urn:xmpp:sm:3' previd='abc' h='0'/>"],
    "sm_r": [b"<r xmlns='urn:xmpp:sm:3'/>"],
    "sm_a": [b"<a xmlns='urn:xmpp:sm:3' h='0'/>"],
    "other": [
        b"<foo xmlns='urn:example:unknown'/>",
        b"<enabled xmlns='urn:xmpp:sm:3'/>",
        f"<success xmlns='{ns.SASL}'/>".encode(),
        f"<proceed xmlns='{ns.TLS}'/>".encode(),
        b"<message xmlns='jabber:server'/>",
        f"<iq type='set' id='x'><bind xmlns='{ns.BIND}'/></iq>".replace("iq", "notiq").encode(),
    ],
}

XMPP_NAMESPACES = {ns.CLIENT, ns.TLS, ns.SASL, ns.BIND, STREAMS}


def _in_state(state: State) -> C2SProtocol:
    p = make(sasl2=True)
    if state is State.NEGOTIATING:
        return to_negotiating(p)
    if state is State.TLS_STARTING:
        p.receive_data(header())
        p.receive_data(STARTTLS)
    elif state is State.SASL:
        to_negotiating(p)
        p.receive_data(auth("SCRAM-SHA-256", b"n,,n=juliet,r=abcdefgh"))
    elif state is State.SASL2:
        to_negotiating(p)
        p.receive_data(SAMPLES["sasl2_auth"][0])
    elif state is State.BINDING:
        to_binding(p)
    elif state is State.BIND_PENDING:
        to_binding(p)
        p.receive_data(bind("balcony"))
    elif state is State.BOUND:
        to_bound(p)
    assert p.state is state
    return p


def _element_ns(sample: bytes) -> str:
    reader = XmlStream()
    events = reader.receive_data(header() + sample)
    element = events[-1]
    assert isinstance(element, ElementReceived)
    return element.element.ns


STATES_WITH_INPUT = [
    State.NEGOTIATING,
    State.TLS_STARTING,
    State.SASL,
    State.SASL2,
    State.BINDING,
    State.BIND_PENDING,
    State.BOUND,
]

PAIRS = [
    pytest.param(
        state,
        kind,
        sample,
        id=f"{state.name}-{kind}-{i}",
    )
    for state in STATES_WITH_INPUT
    for kind, samples in SAMPLES.items()
    for i, sample in enumerate(samples)
]


@pytest.mark.parametrize(("state", "kind", "sample"), PAIRS)
def test_every_state_input_pair(state: State, kind: str, sample: bytes) -> None:
    p = _in_state(state)
    actions = p.receive_data(sample)
    if (state, kind) in TRANSITIONS:
        # Allowed: handled by its own rule (tested above). If that rule closes the stream (a
        # second STARTTLS), the protocol must be closed too.
        if any(isinstance(a, Close) for a in actions):
            assert isinstance(actions[-1], Close)
            assert p.state is State.CLOSED
            assert p.receive_data(MESSAGE) == []
        else:
            assert p.state is not State.CLOSED
        return
    condition = stream_error_condition(actions)
    assert p.state is State.CLOSED
    element_ns = _element_ns(sample)
    if element_ns == ns.CLIENT and state in (
        State.NEGOTIATING,
        State.SASL,
        State.BINDING,
        State.BIND_PENDING,
    ):
        # RFC 6120 §6.4 / §7.1: no stanzas before authentication and binding.
        assert condition == "not-authorized"
    elif element_ns in XMPP_NAMESPACES:
        assert condition == "policy-violation"
    else:
        assert condition == "unsupported-stanza-type"
    # Nothing is read after the stream error.
    assert p.receive_data(MESSAGE) == []


def test_samples_cover_every_input_kind_of_the_table() -> None:
    kinds = {kind for (_state, kind) in TRANSITIONS}
    assert kinds <= set(SAMPLES)
    states = {state for (state, _kind) in TRANSITIONS}
    assert states <= set(STATES_WITH_INPUT)


def test_transitions_table_mentions_every_state() -> None:
    """Each State is either in TRANSITIONS or one of the states that accept no element at all:
    waiting for a header, for the TLS handshake, for the log to record the bind, or closed."""
    in_table = {state for (state, _kind) in TRANSITIONS}
    no_elements = {State.EXPECT_HEADER, State.TLS_STARTING, State.BIND_PENDING, State.CLOSED}
    assert in_table | no_elements == set(State)
    assert in_table.isdisjoint(no_elements)
    for handler in TRANSITIONS.values():
        assert getattr(C2SProtocol, handler.__name__) is handler


def test_element_instead_of_header() -> None:
    """EXPECT_HEADER accepts only a stream header; the stream error still opens our stream."""
    p = make()
    actions = p.receive_data(MESSAGE)
    assert _has_header(actions)
    assert stream_error_condition(actions) == "invalid-namespace"
    assert p.state is State.CLOSED


# --- specific errors ------------------------------------------------------------------------------


def test_stanza_before_auth_is_not_authorized() -> None:
    p = make()
    p.receive_data(header())
    assert stream_error_condition(p.receive_data(MESSAGE)) == "not-authorized"


def test_auth_without_tls_when_required_is_policy_violation() -> None:
    p = make()
    p.receive_data(header())
    assert stream_error_condition(p.receive_data(plain())) == "policy-violation"
    p = make()
    p.receive_data(header())
    assert stream_error_condition(p.receive_data(auth("SCRAM-SHA-256", b"n,,n=juliet,r=a"))) == (
        "policy-violation"
    )


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (header(to="example.net"), "host-unknown"),
        (header(to=None), "host-unknown"),
        (header(to="not a domain@@"), "host-unknown"),
        (header(content_ns="jabber:server"), "invalid-namespace"),
        (header(content_ns=None), "invalid-namespace"),
        (header(stream_ns="urn:example:not-streams"), "invalid-namespace"),
        (header(version=None), "unsupported-version"),
        (header(version="0.9"), "unsupported-version"),
        (header(version="x"), "unsupported-version"),
    ],
)
def test_bad_stream_header(data: bytes, condition: str) -> None:
    p = make()
    actions = p.receive_data(data)
    assert _has_header(actions), "a stream error always follows our own stream header"
    assert stream_error_condition(actions) == condition
    assert p.state is State.CLOSED


def test_header_accepted_variants() -> None:
    # Newer minor versions and a case-different domain are accepted.
    for data in (header(version="1.5"), header(to="EXAMPLE.org")):
        p = make()
        p.receive_data(data)
        assert p.state is State.NEGOTIATING


@pytest.mark.parametrize("bad", ["!!notbase64!!", "AGp1bGll=dA", "\u00e9t\u00e9"])
def test_bad_base64_in_auth_is_incorrect_encoding(bad: str) -> None:
    p = to_negotiating(make())
    actions = p.receive_data(auth("PLAIN", bad))
    assert not any(isinstance(a, Close) for a in actions)
    assert failure_of(actions) == "incorrect-encoding"
    assert p.state is State.NEGOTIATING
    # The client may try again.
    assert others(p.receive_data(plain())) == [Authenticated("juliet", "PLAIN")]


def test_bad_base64_in_response_is_incorrect_encoding() -> None:
    p = to_negotiating(make())
    p.receive_data(auth("SCRAM-SHA-256", None))
    actions = p.receive_data(response("***"))
    assert failure_of(actions) == "incorrect-encoding"
    assert p.state is State.NEGOTIATING


def test_unknown_mechanism_is_invalid_mechanism() -> None:
    p = to_negotiating(make())
    for mechanism in ("DIGEST-MD5", "X-OAUTH2", ""):
        other = to_negotiating(make())
        actions = other.receive_data(auth(mechanism, b"whatever"))
        assert failure_of(actions) == "invalid-mechanism"
        assert other.state is State.NEGOTIATING
    assert p.state is State.NEGOTIATING


def test_wrong_password_reports_auth_failed() -> None:
    p = to_negotiating(make())
    actions = p.receive_data(plain(password="wrong"))
    assert others(actions) == [AuthFailed("juliet", "not-authorized")]
    assert failure_of(actions) == "not-authorized"
    # Unknown users look the same, with the attempted name for the limiter.
    p = to_negotiating(make())
    actions = p.receive_data(plain(user="nobody", password="wrong"))
    assert others(actions) == [AuthFailed("nobody", "not-authorized")]
    # A wrong SCRAM password, too.
    p = to_negotiating(make())
    client = ScramClient(["SCRAM-SHA-256"], "juliet", "wrong")
    actions = p.receive_data(auth("SCRAM-SHA-256", client.get_client_first().encode()))
    [challenge] = elements(Reader().read(actions))
    client.set_server_first(base64.b64decode(challenge.text).decode())
    actions = p.receive_data(response(client.get_client_final().encode()))
    assert others(actions) == [AuthFailed("juliet", "not-authorized")]
    assert p.state is State.NEGOTIATING


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 5])
def test_too_many_auth_failures_is_policy_violation(max_attempts: int) -> None:
    p = to_negotiating(make(max_auth_attempts=max_attempts))
    for _ in range(max_attempts - 1):
        actions = p.receive_data(plain(password="wrong"))
        assert not any(isinstance(a, Close) for a in actions)
        assert p.state is State.NEGOTIATING
    actions = p.receive_data(plain(password="wrong"))
    # The last <failure/> still goes out, then the stream error.
    items = Reader().read([Send(header()), *actions])
    assert sasl_failure_condition(items) == "not-authorized"
    assert stream_error_condition(actions) == "policy-violation"
    assert p.state is State.CLOSED
    assert p.receive_data(plain()) == []


def test_failures_of_any_kind_count_towards_the_limit() -> None:
    p = to_negotiating(make(max_auth_attempts=3))
    p.receive_data(auth("PLAIN", "!!"))
    p.receive_data(auth("NOPE", b"x"))
    actions = p.receive_data(plain(password="wrong"))
    assert stream_error_condition(actions) == "policy-violation"


def test_abort_is_aborted() -> None:
    p = to_negotiating(make())
    p.receive_data(auth("SCRAM-SHA-256", b"n,,n=juliet,r=abcdefgh"))
    assert p.state is State.SASL
    actions = p.receive_data(ABORT)
    assert not any(isinstance(a, Close) for a in actions)
    assert failure_of(actions) == "aborted"
    assert p.state is State.NEGOTIATING
    # A fresh exchange may follow.
    final = scram_exchange(p, whole, "SCRAM-SHA-256", Reader())
    assert others(final) == [Authenticated("juliet", "SCRAM-SHA-256")]


def test_auth_not_allowed_is_temporary_auth_failure() -> None:
    asked: list[str] = []

    def allowed(user: str) -> bool:
        asked.append(user)
        return False

    p = to_negotiating(make(auth_allowed=allowed))
    actions = p.receive_data(plain())
    assert others(actions) == [AuthFailed("juliet", "temporary-auth-failure")]
    assert failure_of(actions) == "temporary-auth-failure"
    assert asked == ["juliet"]
    assert p.state is State.NEGOTIATING
    assert p.username is None
    # Still no way in with SCRAM either: refused at the first message, before any proof.
    client = ScramClient(["SCRAM-SHA-256"], "juliet", PASSWORD)
    reader = Reader()
    reader.read([Send(header())])
    actions = p.receive_data(auth("SCRAM-SHA-256", client.get_client_first().encode()))
    assert not any(isinstance(a, Authenticated) for a in actions)
    assert sasl_failure_condition(reader.read(actions)) == "temporary-auth-failure"


def test_stream_error_on_the_transports_initiative() -> None:
    p = make()
    p.receive_data(header())
    assert stream_error_condition(p.stream_error("connection-timeout")) == "connection-timeout"
    assert p.state is State.CLOSED
    assert p.stream_error("connection-timeout") == []
    # Before any header: our header is sent first.
    p = make()
    actions = p.stream_error("connection-timeout")
    assert _has_header(actions)
    assert stream_error_condition(actions) == "connection-timeout"


def test_xml_errors_become_stream_errors() -> None:
    p = make()
    p.receive_data(header())
    assert stream_error_condition(p.receive_data(b"<message><body></message>")) == "not-well-formed"
    p = make()
    p.receive_data(header())
    assert stream_error_condition(p.receive_data(b"<!-- hi -->")) == "restricted-xml"
    p = make()
    p.receive_data(header())
    assert stream_error_condition(p.receive_data(b"hello")) == "bad-format"


# --- regressions: defects found by these tests, now fixed -----------------------------------------


def test_second_starttls_closes_the_protocol() -> None:
    """STARTTLS over TLS answers <failure/> and closes (RFC 6120 §5.4.2.2); after that Close the
    protocol must not process more input."""
    p = to_negotiating(make())
    actions = p.receive_data(STARTTLS)
    [failure] = elements(Reader().read(actions))
    assert failure.tag == q(ns.TLS, "failure")
    assert actions[-1] == Close()
    assert p.state is State.CLOSED
    assert p.receive_data(plain()) == []


@pytest.mark.parametrize("restart", ["tls", "sasl"])
def test_stream_error_after_restart_opens_the_new_stream_first(restart: str) -> None:
    """RFC 6120 §4.9.1.3: after a restart (§5.4.3.3, §6.4.6) the old stream is gone; an error
    before the client's new header must still be preceded by our new stream header."""
    p = make()
    p.receive_data(header())
    p.receive_data(STARTTLS)
    p.tls_started(CB)
    if restart == "sasl":
        p.receive_data(header())
        p.receive_data(plain())
        assert p.state is State.EXPECT_HEADER
    actions = p.receive_data(MESSAGE)
    assert _has_header(actions)
    assert stream_error_condition(actions) == "invalid-namespace"
    # The same on the transport's initiative (a timeout waiting for the new header).
    other = make()
    other.receive_data(header())
    other.receive_data(STARTTLS)
    other.tls_started(CB)
    assert _has_header(other.stream_error("connection-timeout"))


def test_lockout_does_not_reveal_the_password() -> None:
    """While ``auth_allowed`` refuses an account, a wrong and a right password must get the same
    answer; otherwise the lockout is an oracle and online guessing goes on at full speed."""
    answers = []
    for password in (PASSWORD, "wrong"):
        p = to_negotiating(make(auth_allowed=lambda _user: False))
        actions = p.receive_data(plain(password=password))
        answers.append(sasl_failure_condition(Reader().read(actions)))
    assert answers[0] == answers[1]


# --- XEP-0198 resumption on a stream that has a resource -----------------------------------------


@pytest.mark.parametrize("enabled", [False, True], ids=["sm-off", "sm-on"])
def test_resume_on_a_bound_stream_fails_and_keeps_the_stream(enabled: bool) -> None:
    """XEP-0198 §5, §6: ``<resume/>`` replaces binding, so after a bind it is an unexpected
    request, answered ``<failed/>`` (recoverable), not a stream error; the session goes on."""
    p = to_bound(make())
    if enabled:
        p.receive_data(SAMPLES["sm_enable"][0])
    actions = p.receive_data(SAMPLES["sm_resume"][0])
    assert len(actions) == 1 and isinstance(actions[0], Send)
    failed = _element(actions[0].data)
    assert (failed.ns, failed.name) == ("urn:xmpp:sm:3", "failed")
    assert [(c.ns, c.name) for c in failed.children if isinstance(c, Element)] == [
        (ns.STANZAS, "unexpected-request")
    ]
    assert p.state is State.BOUND
    assert not any(isinstance(a, Close) for a in actions)
    # Stanzas still flow, and counted if stream management is on.
    [received] = p.receive_data(MESSAGE)
    assert isinstance(received, StanzaReceived)
    assert received.sm_n == (1 if enabled else 0)


def _element(data: bytes) -> Element:
    reader = XmlStream()
    events = reader.receive_data(header() + data)
    element = events[-1]
    assert isinstance(element, ElementReceived)
    return element.element
