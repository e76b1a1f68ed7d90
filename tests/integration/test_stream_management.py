"""XEP-0198 on one node: acks, resumption with exact retransmission, failures, session end."""

from __future__ import annotations

import time

import pytest

from tests.integration.server import XesServer
from tests.integration.smclient import SM, SmClient, body

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _msg(to: str, text: str) -> str:
    return f"<message to='{to}' type='chat'><body>{text}</body></message>"


def _bodies(client: SmClient) -> list[str]:
    return [b for m in client.messages() if (b := body(m)) is not None]


def _collect(client: SmClient, count: int, timeout: float = 10.0) -> list[str]:
    got: list[str] = []
    while len(got) < count:
        elem = client.wait_for(lambda e: e.tag.endswith("}message"), timeout)
        got.append(body(elem) or "")
    return got


def test_acks_resume_and_exact_retransmission(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("sma", "pw-a")
    srv.add_user("smb", "pw-b")
    alice = SmClient(srv.c2s)
    jid, sm_id = alice.login_sm(srv, "sma", "pw-a", "phone")
    assert sm_id
    bob = SmClient(srv.c2s)
    bob.login(srv, "smb", "pw-b", "desk")
    # Server counts what it handled from us: two stanzas, then <r/> -> <a h='2'/>.
    alice.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    alice.send("<presence/>")
    alice.send(f"<r xmlns='{SM}'/>")
    a = alice.wait_for(lambda e: e.tag == f"{{{SM}}}a")
    assert a.get("h") == "2"
    alice.wait_for(lambda e: e.get("id") == "p1")

    alice.auto_ack = False
    for i in range(1, 6):
        bob.send(_msg(jid, f"m{i}"))
    assert _collect(alice, 5) == [f"m{i}" for i in range(1, 6)]
    # After ack_request_every (5) unacknowledged stanzas the server asks for an ack.
    alice.wait_for(lambda e: e.tag == f"{{{SM}}}r")
    received = alice.handled
    alice.cut()
    for i in range(6, 9):
        bob.send(_msg(jid, f"m{i}"))

    # Resume claiming two stanzas fewer than received: exactly those two come again, marked
    # as resent (XEP-0203), then what arrived while away, in order, and nothing else.
    again = SmClient(srv.c2s)
    answer = again.resume_on(srv, "sma", "pw-a", sm_id, received - 2)
    assert answer.tag == f"{{{SM}}}resumed", answer
    assert answer.get("previd") == sm_id
    assert answer.get("h") == "2"  # the ping and the presence, both committed
    got = _collect(again, 5)
    assert got == ["m4", "m5", "m6", "m7", "m8"]
    # The old session is the same: messages keep flowing, and the stream still counts.
    bob.send(_msg(jid, "m9"))
    assert _collect(again, 1) == ["m9"]
    again.pump(0.5)
    assert _bodies(again) == []
    again.close()
    bob.close()


def test_resume_failures(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("smc", "pw-c")
    client = SmClient(srv.c2s)
    answer = client.resume_on(srv, "smc", "pw-c", "no-such-session", 0)
    assert answer.tag == f"{{{SM}}}failed"
    assert answer.find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None
    client.close()

    # A clean close ends the session: resuming it fails, telling how many stanzas were handled.
    first = SmClient(srv.c2s)
    _, sm_id = first.login_sm(srv, "smc", "pw-c", "laptop")
    first.send("<presence/>")
    first.send("<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>")
    first.wait_for(lambda e: e.get("id") == "x")
    first.send("</stream:stream>")
    first.recv_all_until_closed()
    second = SmClient(srv.c2s)
    answer = second.resume_on(srv, "smc", "pw-c", sm_id, 0)
    assert answer.tag == f"{{{SM}}}failed"
    assert answer.get("h") == "2"
    second.close()
    # Another user cannot resume someone else's live session, nor learn its count.
    srv.add_user("smc2", "pw-c2")
    live = SmClient(srv.c2s)
    _, live_id = live.login_sm(srv, "smc", "pw-c", "desk")
    thief = SmClient(srv.c2s)
    answer = thief.resume_on(srv, "smc2", "pw-c2", live_id, 0)
    assert answer.tag == f"{{{SM}}}failed" and answer.get("h") is None
    thief.close()
    live.close()


def test_resume_on_a_bound_stream_is_failed_and_the_stream_goes_on(
    shared_server: XesServer,
) -> None:
    """XEP-0198 §5/§6: a ``<resume/>`` after binding is ``<failed><unexpected-request/>``, a
    recoverable error; the stream (and its session) stays up. It was a stream error."""
    srv = shared_server
    srv.add_user("smr", "pw-r")
    client = SmClient(srv.c2s)
    _, sm_id = client.login_sm(srv, "smr", "pw-r", "tablet")
    client.send(f"<resume xmlns='{SM}' previd='{sm_id}' h='0'/>")
    failed = client.wait_for(lambda e: e.tag == f"{{{SM}}}failed")
    assert failed.find("{urn:ietf:params:xml:ns:xmpp-stanzas}unexpected-request") is not None
    client.send("<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>")
    client.wait_for(lambda e: e.get("id") == "after")
    client.send(f"<r xmlns='{SM}'/>")
    a = client.wait_for(lambda e: e.tag == f"{{{SM}}}a")
    assert a.get("h") == "1"  # the <resume/> is not a stanza; the ping is
    client.close()


def test_h_too_high_is_a_stream_error(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("smd", "pw-d")
    client = SmClient(srv.c2s)
    client.login_sm(srv, "smd", "pw-d", "x")
    client.send(f"<a xmlns='{SM}' h='50'/>")
    rest = client.recv_all_until_closed()
    assert b"undefined-condition" in rest


def test_unacknowledged_messages_survive_a_clean_logout(shared_server: XesServer) -> None:
    """RFC 6121 / XEP-0198: what a session leaves unacknowledged goes offline, not away."""
    srv = shared_server
    srv.add_user("sme", "pw-e")
    srv.add_user("smf", "pw-f")
    eve = SmClient(srv.c2s)
    jid, _ = eve.login_sm(srv, "sme", "pw-e", "tablet")
    eve.send("<presence/>")
    eve.auto_ack = False
    frank = SmClient(srv.c2s)
    frank.login(srv, "smf", "pw-f", "pc")
    frank.send(_msg(jid, "unseen-1"))
    frank.send(_msg(jid, "unseen-2"))
    assert _collect(eve, 2) == ["unseen-1", "unseen-2"]
    # Eve's device crashed before acking and the app logs out: the messages must come back.
    eve.send("</stream:stream>")
    eve.recv_all_until_closed()
    later = SmClient(srv.c2s)
    later.login_parsed(srv, "sme", "pw-e", "tablet", presence=True)
    got = []
    while len(got) < 2:
        elem = later.wait_for(lambda e: e.tag.endswith("}message"))
        assert elem.find("{urn:xmpp:delay}delay") is not None
        got.append(body(elem))
    assert got == ["unseen-1", "unseen-2"]
    later.close()
    frank.close()


def test_detached_session_expires_and_its_messages_go_offline(shared_server: XesServer) -> None:
    """A broken connection leaves the session waiting ``max`` seconds; then it ends, contacts
    see it unavailable, and what it held unacknowledged is stored offline."""
    srv = shared_server
    srv.add_user("smg", "pw-g")
    srv.add_user("smh", "pw-h")
    gina = SmClient(srv.c2s)
    jid = gina.login_parsed(srv, "smg", "pw-g", "watch")
    gina.send(f"<enable xmlns='{SM}' resume='true' max='2'/>")
    enabled = gina.wait_for(lambda e: e.tag == f"{{{SM}}}enabled")
    assert enabled.get("max") == "2"
    gina.send("<presence/>")
    gina.auto_ack = False
    hugo = SmClient(srv.c2s)
    hugo.login(srv, "smh", "pw-h", "pc")
    hugo.send(_msg(jid, "held-1"))
    assert _collect(gina, 1) == ["held-1"]
    gina.cut()
    hugo.send(_msg(jid, "held-2"))  # committed to the detached session's outbox
    time.sleep(5.0)  # resume timeout (2 s) plus the leader's once-a-second check
    again = SmClient(srv.c2s)
    answer = again.resume_on(srv, "smg", "pw-g", enabled.get("id"), gina.handled)
    assert answer.tag == f"{{{SM}}}failed"
    again.close()
    later = SmClient(srv.c2s)
    later.login_parsed(srv, "smg", "pw-g", "watch", presence=True)
    assert _collect(later, 2) == ["held-1", "held-2"]
    later.close()
    hugo.close()


def test_unanswered_iq_gets_an_error_when_the_session_ends(shared_server: XesServer) -> None:
    srv = shared_server
    srv.add_user("smi", "pw-i")
    srv.add_user("smj", "pw-j")
    ida = SmClient(srv.c2s)
    jid, _ = ida.login_sm(srv, "smi", "pw-i", "pad")
    ida.auto_ack = False
    jon = SmClient(srv.c2s)
    jon.login_parsed(srv, "smj", "pw-j", "pc")
    jon.send(f"<iq type='get' id='q1' to='{jid}'><query xmlns='jabber:iq:version'/></iq>")
    ida.wait_for(lambda e: e.get("id") == "q1")
    ida.send("</stream:stream>")  # leaves without answering or acknowledging it
    ida.recv_all_until_closed()
    reply = jon.wait_for(lambda e: e.get("id") == "q1")
    assert reply.get("type") == "error"
    assert reply.get("from") == jid
    error = reply.find("{jabber:client}error")
    assert error is not None
    assert error.find("{urn:ietf:params:xml:ns:xmpp-stanzas}recipient-unavailable") is not None
    jon.close()


def test_a_login_replacing_a_session_that_is_closing_still_binds(
    shared_server: XesServer,
) -> None:
    """A phone logs out and at once logs in again with the same resource (xmpp.js does this
    when it moves to another node with its FAST token): the new bind ends the managed session
    it replaces while that session's own close is being committed. Whichever commits first,
    the login succeeds and what the old session left unacknowledged reaches the new one."""
    srv = shared_server
    srv.add_user("smrb", "pw-rb")
    srv.add_user("smsb", "pw-sb")
    sender = SmClient(srv.c2s)
    sender.login(srv, "smsb", "pw-sb", "pc")
    for round_ in range(20):
        old = SmClient(srv.c2s)
        jid, _ = old.login_sm(srv, "smrb", "pw-rb", "phone")
        old.send("<presence/>")
        old.auto_ack = False
        sender.send(_msg(jid.split("/")[0], f"round-{round_}"))
        assert _collect(old, 1) == [f"round-{round_}"]
        new = SmClient(srv.c2s)
        new.starttls(srv.domain)
        assert b"<success" in new.scram_login(srv.domain, "smrb", "pw-rb")
        new.buffer = b""
        new.open_stream(srv.domain)
        # The close and the replacing bind arrive together.
        old.send("</stream:stream>")
        new.send(
            "<iq type='set' id='bind-r'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            "<resource>phone</resource></bind></iq>"
        )
        reply = new.recv_until(b"</iq>")
        assert b"type='result'" in reply or b'type="result"' in reply, (round_, reply)
        new._start(new.buffer)
        new.send("<presence/>")
        elem = new.wait_for(lambda e: e.tag.endswith("}message") and body(e) is not None)
        assert body(elem) == f"round-{round_}"
        old.close()
        new.send("</stream:stream>")
        new.close()
    sender.close()


def test_offline_messages_come_before_one_routed_live_just_after_initial_presence(
    shared_server: XesServer,
) -> None:
    """A phone binds and enables stream management, but has not sent its presence: messages
    to its bare JID wait offline. Its initial presence and the sender's next message arrive
    together; the waiting ones must still come first (per-sender order, fault campaign finding
    11: the flush used to be placed in the outbox behind the live message)."""
    srv = shared_server
    srv.add_user("smo", "pw-o")
    srv.add_user("smp", "pw-p")
    sender = SmClient(srv.c2s)
    sender.login(srv, "smp", "pw-p", "pc")
    bare = f"smo@{srv.domain}"
    for round_ in range(14):
        phone = SmClient(srv.c2s)
        phone.login_sm(srv, "smo", "pw-o", "phone")
        sender.send(_msg(bare, f"r{round_}-1") + _msg(bare, f"r{round_}-2"))
        time.sleep(0.3)  # stored offline: the phone is not available
        phone.send("<presence/>")
        sender.send(_msg(bare, f"r{round_}-3"))
        assert _collect(phone, 3) == [f"r{round_}-{n}" for n in (1, 2, 3)], round_
        phone.ack()  # else what it got goes back offline at the logout (XEP-0198 §4)
        phone.send("</stream:stream>")
        phone.recv_all_until_closed()
        phone.close()
    sender.close()
