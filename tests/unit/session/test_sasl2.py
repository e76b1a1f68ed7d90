"""SASL2 (XEP-0388), Bind2 (XEP-0386) and FAST (XEP-0484) in the sans-IO session."""

from __future__ import annotations

import base64
import hashlib
import hmac

from scramp import ScramClient

from tests.unit.session.test_c2s import (
    ACCOUNTS,
    DOMAIN,
    PASSWORD,
    Reader,
    credentials,
    elements,
    normalize_username,
    others,
    to_negotiating,
)
from xes.session import sasl2
from xes.session.c2s import (
    Authenticated,
    AuthFailed,
    BindRequested,
    C2SPolicy,
    C2SProtocol,
    FastCredential,
    State,
)
from xes.xml import ns

TOKEN = "a-fast-token"
AGENT = "d3b07384-agent"


def make(token: FastCredential | None = None) -> C2SProtocol:
    return C2SProtocol(
        C2SPolicy(domain=DOMAIN, sasl2=True, fast=True),
        credentials=credentials,
        normalize_username=normalize_username,
        fast_token=lambda user, agent: token if (user, agent) == ("juliet", AGENT) else None,
    )


def authenticate(mechanism: str, initial: bytes, inline: str = "") -> bytes:
    data = base64.b64encode(initial).decode()
    return (
        f"<authenticate xmlns='{sasl2.NS}' mechanism='{mechanism}'>"
        f"<initial-response>{data}</initial-response>"
        f"<user-agent id='{AGENT}'><software>t</software></user-agent>{inline}</authenticate>"
    ).encode()


def test_feature_is_offered_after_tls_with_bind2_and_fast() -> None:
    p = to_negotiating(make())
    features = p._features()
    auth = features.find("{%s}authentication" % sasl2.NS)
    assert auth is not None
    inline = auth.find("{%s}inline" % sasl2.NS)
    assert inline is not None
    assert inline.find("{%s}bind" % sasl2.BIND2) is not None
    assert inline.find("{%s}fast" % sasl2.FAST) is not None


def test_scram_with_bind2_and_token_request_is_one_round_trip_more() -> None:
    assert "juliet" in ACCOUNTS
    p = to_negotiating(make())
    client = ScramClient(["SCRAM-SHA-256"], "juliet", PASSWORD)
    inline = (
        f"<bind xmlns='{sasl2.BIND2}'><tag>phone</tag><enable xmlns='{ns.CARBONS}'/></bind>"
        f"<request-token xmlns='{sasl2.FAST}' mechanism='{sasl2.HT}'/>"
    )
    actions = p.receive_data(
        authenticate("SCRAM-SHA-256", client.get_client_first().encode(), inline)
    )
    [challenge] = elements(Reader().read(actions))
    assert challenge.tag == "{%s}challenge" % sasl2.NS
    assert p.state is State.SASL2
    client.set_server_first(base64.b64decode(challenge.text).decode())
    final = base64.b64encode(client.get_client_final().encode()).decode()
    actions = p.receive_data(f"<response xmlns='{sasl2.NS}'>{final}</response>".encode())
    auth, bind = others(actions)
    assert auth == Authenticated("juliet", "SCRAM-SHA-256")
    assert isinstance(bind, BindRequested) and bind.inline is not None
    assert bind.inline.carbons and bind.inline.token_request == sasl2.HT
    assert str(bind.jid).startswith(f"juliet@{DOMAIN}/phone.")
    assert p.state is State.BIND_PENDING
    [success] = elements(
        Reader().read(p.bind_succeeded("", bind.jid, ("tok", "2030-01-01T00:00:00Z")))
    )
    assert success.tag == "{%s}success" % sasl2.NS
    assert success.find("{%s}authorization-identifier" % sasl2.NS).text == str(bind.jid)
    assert success.find("{%s}bound" % sasl2.BIND2) is not None
    assert success.find("{%s}token" % sasl2.FAST).get("token") == "tok"
    client.set_server_final(
        base64.b64decode(success.find("{%s}additional-data" % sasl2.NS).text).decode()
    )
    assert p.state is State.BOUND  # no stream restart


def _ht(token: str) -> bytes:
    return b"juliet\x00" + hmac.new(token.encode(), b"Initiator", hashlib.sha256).digest()


def test_fast_token_success_failure_and_expiry() -> None:
    good = FastCredential(TOKEN, sasl2.HT, expired=False)
    p = to_negotiating(make(good))
    fast = f"<fast xmlns='{sasl2.FAST}'/>"
    [ok] = others(p.receive_data(authenticate(sasl2.HT, _ht(TOKEN), fast)))
    assert ok == Authenticated("juliet", sasl2.HT)
    p = to_negotiating(make(good))
    actions = p.receive_data(authenticate(sasl2.HT, _ht("forged"), fast))
    assert isinstance(others(actions)[0], AuthFailed)
    [failure] = elements(Reader().read(actions))
    assert failure.tag == "{%s}failure" % sasl2.NS
    assert failure.find("{%s}not-authorized" % ns.SASL) is not None
    expired = FastCredential(TOKEN, sasl2.HT, expired=True)
    p = to_negotiating(make(expired))
    actions = p.receive_data(authenticate(sasl2.HT, _ht(TOKEN), fast))
    [failure] = elements(Reader().read(actions))
    assert failure.find("{%s}credentials-expired" % ns.SASL) is not None


def test_token_derivation_is_keyed() -> None:
    a = sasl2.token_value(b"k" * 32, "id1")
    assert a == sasl2.token_value(b"k" * 32, "id1")
    assert a != sasl2.token_value(b"j" * 32, "id1") and a != sasl2.token_value(b"k" * 32, "id2")
    assert sasl2.token_hash(a) != a and len(sasl2.token_hash(a)) == 64


def test_inline_resume_then_bind2_when_it_fails() -> None:
    from xes.session.stream_management import SmResume

    good = FastCredential(TOKEN, sasl2.HT, expired=False)
    p = to_negotiating(make(good))
    inline = (
        f"<fast xmlns='{sasl2.FAST}'/><resume xmlns='{ns.SM}' previd='old' h='3'/>"
        f"<bind xmlns='{sasl2.BIND2}'><tag>phone</tag></bind>"
    )
    auth, resume = others(p.receive_data(authenticate(sasl2.HT, _ht(TOKEN), inline)))
    assert auth == Authenticated("juliet", sasl2.HT)
    assert resume == SmResume("old", 3)
    # The session is gone: <failed/> inside <success/>, and Bind2 goes ahead.
    [bind] = others(p.resume_failed("item-not-found", None))
    assert isinstance(bind, BindRequested) and bind.inline is not None
    [success] = elements(Reader().read(p.bind_succeeded("", bind.jid)))
    assert success.find("{%s}failed" % ns.SM) is not None
    assert success.find("{%s}bound" % sasl2.BIND2) is not None
    assert p.state is State.BOUND


def test_resume_inside_sasl2_wraps_resumed_in_success() -> None:
    good = FastCredential(TOKEN, sasl2.HT, expired=False)
    p = to_negotiating(make(good))
    inline = f"<fast xmlns='{sasl2.FAST}'/><resume xmlns='{ns.SM}' previd='s1' h='0'/>"
    p.receive_data(authenticate(sasl2.HT, _ht(TOKEN), inline))
    from xes.jid import JID

    p.resume_succeeded(JID.parse(f"juliet@{DOMAIN}/phone"), 0)
    wrapped = p.sasl2_resumed(b"<resumed xmlns='urn:xmpp:sm:3' previd='s1' h='0'/>")
    assert wrapped is not None and b"<success xmlns" in wrapped and b"<resumed" in wrapped
    assert f"juliet@{DOMAIN}/phone".encode() in wrapped
