"""xes.session.c2s with several hosted domains (ADR 0023): the stream's ``to`` picks the host,
the host sticks across the restarts, and authentication and binding are for that host."""

from __future__ import annotations

from typing import Any

from xes.jid import JID, normalize_localpart
from xes.session.c2s import (
    Authenticated,
    BindRequested,
    C2SPolicy,
    C2SProtocol,
    Close,
    Send,
    StartTls,
    State,
)
from xes.session.sasl import derive_credentials
from xes.xml import ns

from .test_c2s import bind, header, plain

A, B = "a.example", "b.example"
ACCOUNTS = {f"juliet@{A}": derive_credentials("pw-of-a"), f"romeo@{B}": derive_credentials("pw-b")}


def make(**policy: Any) -> tuple[C2SProtocol, list[str]]:
    """A protocol serving A and B whose credential lookups are recorded as ``user@host``."""
    asked: list[str] = []
    proto: C2SProtocol

    def credentials(local: str) -> dict[str, Any] | None:
        asked.append(f"{local}@{proto.domain}")
        return ACCOUNTS.get(f"{local}@{proto.domain}")

    proto = C2SProtocol(
        C2SPolicy(domain=A, hosts=frozenset({A, B}), **policy),
        credentials=credentials,
        normalize_username=normalize_localpart,
    )
    return proto, asked


def sent(actions: list[Any]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def closed_with(actions: list[Any]) -> str | None:
    closes = [a for a in actions if isinstance(a, Close)]
    return closes[0].condition if closes else None


def negotiate(p: C2SProtocol, host: str) -> None:
    p.receive_data(header(to=host))
    assert p.receive_data(b"<starttls xmlns='%s'/>" % ns.TLS.encode())[-1] == StartTls()
    p.tls_started(None)
    p.receive_data(header(to=host))
    assert p.state is State.NEGOTIATING


def test_the_stream_to_selects_the_host_and_the_reply_comes_from_it() -> None:
    for host in (A, B):
        p, _ = make()
        out = sent(p.receive_data(header(to=host)))
        assert f"from='{host}'".encode() in out or f'from="{host}"'.encode() in out
        assert p.domain == host
        assert p.state is State.NEGOTIATING


def test_an_unknown_host_is_host_unknown() -> None:
    p, _ = make()
    actions = p.receive_data(header(to="c.example"))
    assert closed_with(actions) == "host-unknown"
    assert b"host-unknown" in sent(actions)
    assert p.state is State.CLOSED


def test_a_restart_for_another_host_is_refused() -> None:
    """The certificate was chosen for A; the restart after STARTTLS must not switch to B."""
    p, _ = make()
    p.receive_data(header(to=A))
    p.receive_data(b"<starttls xmlns='%s'/>" % ns.TLS.encode())
    p.tls_started(None)
    actions = p.receive_data(header(to=B))
    assert closed_with(actions) == "host-unknown"


def test_sasl_looks_up_the_account_of_the_selected_host_and_binds_there() -> None:
    p, asked = make()
    negotiate(p, B)
    actions = p.receive_data(plain("romeo", "pw-b"))
    assert [a for a in actions if isinstance(a, Authenticated)] == [Authenticated("romeo", "PLAIN")]
    assert asked == [f"romeo@{B}"]
    p.receive_data(header(to=B))
    [requested] = p.receive_data(bind("phone"))
    assert isinstance(requested, BindRequested)
    assert requested.jid == JID.parse(f"romeo@{B}/phone")


def test_a_user_of_one_host_cannot_log_in_on_the_other() -> None:
    p, asked = make()
    negotiate(p, B)
    actions = p.receive_data(plain("juliet", "pw-of-a"))
    assert not [a for a in actions if isinstance(a, Authenticated)]
    assert b"not-authorized" in sent(actions)
    assert asked == [f"juliet@{B}"]


def test_registration_is_offered_per_host() -> None:
    p, _ = make(registration=True, registration_hosts=frozenset({B}))
    negotiate(p, B)
    assert p.policy.registration_on(B) and not p.policy.registration_on(A)
    q, _ = make(registration=True, registration_hosts=frozenset({B}))
    out = sent(q.receive_data(header(to=A)))
    assert b"iq-register" not in out
    q.receive_data(b"<starttls xmlns='%s'/>" % ns.TLS.encode())
    q.tls_started(None)
    assert b"iq-register" not in sent(q.receive_data(header(to=A)))
    r, _ = make(registration=True, registration_hosts=frozenset({B}))
    r.receive_data(header(to=B))
    r.receive_data(b"<starttls xmlns='%s'/>" % ns.TLS.encode())
    r.tls_started(None)
    assert b"iq-register" in sent(r.receive_data(header(to=B)))


def test_one_host_alone_behaves_as_before() -> None:
    p = C2SProtocol(
        C2SPolicy(domain=A),
        credentials=lambda _u: None,
        normalize_username=normalize_localpart,
    )
    assert closed_with(p.receive_data(header(to=B))) == "host-unknown"
    p = C2SProtocol(
        C2SPolicy(domain=A), credentials=lambda _u: None, normalize_username=normalize_localpart
    )
    p.receive_data(header(to=A))
    assert p.state is State.NEGOTIATING and p.domain == A
