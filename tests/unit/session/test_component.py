"""The XEP-0114 component stream, sans-IO: header, handshake, stream errors, stanza checks."""

from __future__ import annotations

import hashlib

import pytest

from xes.session.component import (
    ACCEPT,
    Close,
    ComponentPolicy,
    ComponentProtocol,
    HandshakeAccepted,
    HandshakeFailed,
    Send,
    StanzaReceived,
    State,
    digest,
)
from xes.xml import ns

SECRETS = {"push.example.org": "s3cret"}
HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='{ns}' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{to}'>"
)


def protocol(allowed: bool = True) -> ComponentProtocol:
    return ComponentProtocol(
        ComponentPolicy(secret_for=SECRETS.get, allowed=lambda _: allowed), stream_id="abc123"
    )


def sent(actions: list[object]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def closed_with(actions: list[object]) -> str | None:
    closes = [a for a in actions if isinstance(a, Close)]
    assert closes, actions
    return closes[-1].condition


def opened(to: str = "push.example.org", ns_: str = ACCEPT) -> tuple[ComponentProtocol, bytes]:
    proto = protocol()
    out = sent(proto.receive_data(HEADER.format(ns=ns_, to=to).encode()))
    return proto, out


def ready() -> ComponentProtocol:
    proto, _ = opened()
    good = hashlib.sha1(b"abc123s3cret").hexdigest()
    actions = proto.receive_data(f"<handshake>{good}</handshake>".encode())
    assert actions == [HandshakeAccepted("push.example.org")]
    assert sent(proto.accepted()) == b"<handshake/>"
    assert proto.state is State.READY
    return proto


def test_header_answered_with_stream_id_in_component_namespace() -> None:
    proto, out = opened()
    assert b"xmlns='jabber:component:accept'" in out
    assert b"id='abc123'" in out and b"from='push.example.org'" in out
    assert proto.state is State.HANDSHAKE


def test_good_handshake_digest_is_xep_0114_sha1() -> None:
    assert digest("3BF96D32", "Calli0pe") == hashlib.sha1(b"3BF96D32Calli0pe").hexdigest()
    ready()


def test_uppercase_digest_is_accepted() -> None:
    proto, _ = opened()
    good = digest("abc123", "s3cret").upper()
    assert proto.receive_data(f"<handshake>{good}</handshake>".encode()) == [
        HandshakeAccepted("push.example.org")
    ]


def test_bad_handshake_is_not_authorized_and_counted() -> None:
    proto, _ = opened()
    actions = proto.receive_data(b"<handshake>" + b"0" * 40 + b"</handshake>")
    assert HandshakeFailed("push.example.org") in actions
    assert b"<not-authorized" in sent(actions)
    assert closed_with(actions) == "not-authorized"
    assert proto.state is State.CLOSED


def test_locked_out_name_is_refused_even_with_the_right_digest() -> None:
    proto = protocol(allowed=False)
    proto.receive_data(HEADER.format(ns=ACCEPT, to="push.example.org").encode())
    good = digest("abc123", "s3cret")
    actions = proto.receive_data(f"<handshake>{good}</handshake>".encode())
    assert closed_with(actions) == "not-authorized"
    assert not any(isinstance(a, HandshakeAccepted) for a in actions)


def test_unknown_domain_is_host_unknown_after_our_header() -> None:
    proto = protocol()
    actions = proto.receive_data(HEADER.format(ns=ACCEPT, to="nope.example.org").encode())
    out = sent(actions)
    assert out.startswith(b"<?xml") and b"<host-unknown" in out
    assert out.endswith(b"</stream:stream>")
    assert closed_with(actions) == "host-unknown"


def test_client_namespace_is_invalid_namespace() -> None:
    _, out = opened(ns_=ns.CLIENT)
    assert b"<invalid-namespace" in out


def test_stanza_before_handshake_is_not_authorized() -> None:
    proto, _ = opened()
    actions = proto.receive_data(b"<message from='push.example.org' to='a@x'/>")
    assert closed_with(actions) == "not-authorized"


def test_refused_after_a_good_handshake_sends_conflict() -> None:
    proto, _ = opened()
    proto.receive_data(f"<handshake>{digest('abc123', 's3cret')}</handshake>".encode())
    actions = proto.refused("conflict", "held")
    assert b"<conflict" in sent(actions) and closed_with(actions) == "conflict"


def test_stanza_is_handed_on_in_jabber_client() -> None:
    proto = ready()
    actions = proto.receive_data(
        b"<message from='bot@push.example.org/x' to='alice@x'><body>hi</body></message>"
    )
    assert len(actions) == 1 and isinstance(actions[0], StanzaReceived)
    stanza = actions[0].stanza
    assert stanza.tag == "{jabber:client}message"
    assert stanza.find("{jabber:client}body") is not None
    assert stanza.find("{jabber:client}body").text == "hi"  # type: ignore[union-attr]


def test_other_namespaces_inside_a_stanza_are_kept() -> None:
    proto = ready()
    (action,) = proto.receive_data(
        b"<iq type='get' id='1' from='push.example.org' to='x'><ping xmlns='urn:xmpp:ping'/></iq>"
    )
    assert isinstance(action, StanzaReceived)
    assert action.stanza.find("{urn:xmpp:ping}ping") is not None


@pytest.mark.parametrize(
    "sender", ["alice@x", "push.example.org.evil", "other.example.org", "", "a@b@c"]
)
def test_from_outside_the_component_domain_is_invalid_from(sender: str) -> None:
    proto = ready()
    attr = f" from='{sender}'" if sender else ""
    actions = proto.receive_data(f"<message{attr} to='alice@x'><body/></message>".encode())
    assert closed_with(actions) == "invalid-from"
    assert b"<invalid-from" in sent(actions)


def test_stanza_without_to_is_improper_addressing() -> None:
    proto = ready()
    actions = proto.receive_data(b"<message from='push.example.org'/>")
    assert closed_with(actions) == "improper-addressing"


def test_unknown_element_when_ready_is_unsupported_stanza_type() -> None:
    proto = ready()
    actions = proto.receive_data(b"<foo from='push.example.org' to='x'/>")
    assert closed_with(actions) == "unsupported-stanza-type"


def test_component_close_is_answered() -> None:
    proto = ready()
    actions = proto.receive_data(b"</stream:stream>")
    assert sent(actions) == b"</stream:stream>" and closed_with(actions) is None


def test_oversized_stanza_is_policy_violation() -> None:
    from xes.xml import XmlLimits

    proto = ComponentProtocol(
        ComponentPolicy(secret_for=SECRETS.get, limits=XmlLimits(max_stanza_bytes=1000)), "id"
    )
    proto.receive_data(HEADER.format(ns=ACCEPT, to="push.example.org").encode())
    actions = proto.receive_data(b"<handshake>" + b"a" * 2000 + b"</handshake>")
    assert closed_with(actions) == "policy-violation"


def test_byte_at_a_time_reaches_the_same_state() -> None:
    proto = protocol()
    data = HEADER.format(ns=ACCEPT, to="push.example.org").encode()
    data += f"<handshake>{digest('abc123', 's3cret')}</handshake>".encode()
    actions = []
    for i in range(len(data)):
        actions += proto.receive_data(data[i : i + 1])
    assert HandshakeAccepted("push.example.org") in actions
