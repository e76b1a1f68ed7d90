"""The sans-IO s2s streams in both roles, talking to each other (XEP-0220, XEP-0178)."""

from __future__ import annotations

from xes.session.c2s import Close, Send, StartTls
from xes.session.s2s import (
    Authenticated,
    AuthenticationFailed,
    PeerAuthenticated,
    S2SInbound,
    S2SOutbound,
    S2SPolicy,
    StanzaReceived,
    VerifyAnswered,
    VerifyRequested,
    dialback_key,
)
from xes.xml import E, ns

A, B = "a.example", "b.example"
SECRET_A, SECRET_B = b"secret of a", b"secret of b"


def policy(host: str, secret: bytes, *, dialback: bool = True) -> S2SPolicy:
    return S2SPolicy(hosts=lambda d: d == host, secret=secret, dialback=dialback)


def sent(actions: list[object]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def others(actions: list[object]) -> list[object]:
    return [a for a in actions if not isinstance(a, Send)]


def pump(
    out: S2SOutbound, inb: S2SInbound, actions: list[object], *, from_in: bool = False
) -> list[object]:
    """Carry bytes between the two ends until both are quiet; every non-Send action back.
    ``actions`` are the outbound end's (or with ``from_in`` the inbound end's)."""
    seen: list[object] = []
    to_in, to_out = (b"", sent(actions)) if from_in else (sent(actions), b"")
    seen += others(actions)
    while to_in or to_out:
        if to_in:
            acts = inb.receive_data(to_in)
            to_in = b""
            seen += others(acts)
            to_out += sent(acts)
            if any(isinstance(a, StartTls) for a in acts):
                inb.tls_started()
        if to_out:
            acts = out.receive_data(to_out)
            to_out = b""
            seen += others(acts)
            if any(isinstance(a, StartTls) for a in acts):
                acts += out.tls_started()
            to_in += sent(acts)
    return seen


def test_dialback_key_is_xep_0185() -> None:
    # The XEP-0185 example: receiving xmpp.example.com, originating example.org.
    key = dialback_key(b"s3cr3tf0rd14lb4ck", "xmpp.example.com", "example.org", "D60000229F")
    assert key == "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"


def test_dialback_both_roles() -> None:
    # a.example connects to b.example; b.example asks a.example's authoritative server.
    out = S2SOutbound(policy(A, SECRET_A), local=A, remote=B)
    inb = S2SInbound(policy(B, SECRET_B))
    seen = pump(out, inb, out.start())
    request = next(a for a in seen if isinstance(a, VerifyRequested))
    assert (request.receiving, request.originating) == (B, A)
    # The verify stream from b.example to a.example's listener.
    vout = S2SOutbound(policy(B, SECRET_B), local=B, remote=A, verify=[request])
    vin = S2SInbound(policy(A, SECRET_A))
    answers = pump(vout, vin, vout.start())
    answer = next(a for a in answers if isinstance(a, VerifyAnswered))
    assert answer.valid and answer.stream_id == request.stream_id
    assert Close() in answers  # the verify stream ends once answered
    seen = pump(out, inb, inb.dialback_result(B, A, answer.valid), from_in=True)
    assert PeerAuthenticated(A, B, "dialback") in seen
    assert Authenticated(A, B, "dialback") in seen
    message = E("{%s}message" % ns.CLIENT, {"from": f"alice@{A}/x", "to": f"bob@{B}"})
    message = message.append(E("{%s}body" % ns.CLIENT, None, "hi"))
    wire = out.stanza(message)
    assert b"jabber:client" not in wire
    got = inb.receive_data(wire)
    assert got == [StanzaReceived(message)]


def test_wrong_key_is_invalid() -> None:
    request = VerifyRequested(B, A, "sid", "0" * 64)
    vout = S2SOutbound(policy(B, SECRET_B), local=B, remote=A, verify=[request])
    vin = S2SInbound(policy(A, SECRET_A))
    answers = pump(vout, vin, vout.start())
    assert VerifyAnswered("sid", False) in answers


def _authenticated_pair() -> tuple[S2SOutbound, S2SInbound]:
    out = S2SOutbound(policy(A, SECRET_A), local=A, remote=B)
    inb = S2SInbound(policy(B, SECRET_B))
    seen = pump(out, inb, out.start())
    request = next(a for a in seen if isinstance(a, VerifyRequested))
    result = inb.dialback_result(request.receiving, request.originating, True)
    pump(out, inb, result, from_in=True)
    return out, inb


def test_invalid_from_closes_the_stream() -> None:
    out, inb = _authenticated_pair()
    forged = E("{%s}message" % ns.CLIENT, {"from": "mallory@c.example", "to": f"bob@{B}"})
    actions = inb.receive_data(out.stanza(forged))
    assert b"invalid-from" in sent(actions)
    assert Close("invalid-from") in actions


def test_stanza_to_a_domain_not_served_is_host_unknown() -> None:
    out, inb = _authenticated_pair()
    stray = E("{%s}message" % ns.CLIENT, {"from": f"alice@{A}", "to": "bob@elsewhere.example"})
    assert Close("host-unknown") in inb.receive_data(out.stanza(stray))


def test_header_for_a_domain_not_served_is_host_unknown() -> None:
    out = S2SOutbound(policy(A, SECRET_A), local=A, remote="nobody.example")
    inb = S2SInbound(policy(B, SECRET_B))
    actions = inb.receive_data(sent(out.start()))
    assert b"host-unknown" in sent(actions)


def test_starttls_is_required_before_dialback() -> None:
    inb = S2SInbound(policy(B, SECRET_B))
    out = S2SOutbound(policy(A, SECRET_A), local=A, remote=B)
    inb.receive_data(sent(out.start()))
    early = E("{jabber:server:dialback}result", {"from": A, "to": B}, "key")
    actions = inb.receive_data(out.stanza(early))
    assert Close("policy-violation") in actions


def test_stanzas_before_authentication_are_refused() -> None:
    out = S2SOutbound(policy(A, SECRET_A), local=A, remote=B)
    inb = S2SInbound(policy(B, SECRET_B))
    inb.receive_data(sent(out.start()))
    inb.tls_started()
    inb.receive_data(sent(out.start()))
    message = E("{%s}message" % ns.CLIENT, {"from": f"alice@{A}", "to": f"bob@{B}"})
    assert Close("not-authorized") in inb.receive_data(out.stanza(message))


def test_without_dialback_an_unverified_certificate_fails() -> None:
    out = S2SOutbound(policy(A, SECRET_A, dialback=False), local=A, remote=B)
    inb = S2SInbound(policy(B, SECRET_B, dialback=False))
    seen = pump(out, inb, out.start())
    assert any(isinstance(a, AuthenticationFailed) for a in seen)


def test_sasl_external_both_roles() -> None:
    out = S2SOutbound(policy(A, SECRET_A, dialback=False), local=A, remote=B)
    inb = S2SInbound(policy(B, SECRET_B, dialback=False), peer_cert_valid=lambda d: d == A)
    seen = pump(out, inb, out.start())
    assert PeerAuthenticated(A, B, "external") in seen
    assert Authenticated(A, B, "external") in seen
    message = E("{%s}message" % ns.CLIENT, {"from": f"alice@{A}/x", "to": f"bob@{B}"})
    assert inb.receive_data(out.stanza(message)) == [StanzaReceived(message)]


def test_external_refused_falls_back_to_dialback() -> None:
    out = S2SOutbound(policy(A, SECRET_A), local=A, remote=B)
    # The certificate "verified" for the features, but not for the auth (a changed mind is
    # enough to exercise the failure path).
    answers = iter([True, False, False])
    inb = S2SInbound(policy(B, SECRET_B), peer_cert_valid=lambda d: next(answers, False))
    seen = pump(out, inb, out.start())
    assert Close("not-authorized") in seen
