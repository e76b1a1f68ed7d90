"""Modern login (XEP-0388 SASL2, XEP-0386 Bind2, XEP-0484 FAST) with xmpp.js, an independent
JavaScript implementation, on one node and across a cluster; refusals checked on the wire."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import running_cluster
from tests.integration.jsdriver import JS, node_binary
from tests.integration.rawclient import RawClient
from tests.integration.server import XesServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def fast_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    """A server of its own: the refusal tests fail on purpose, and the per-address lockout
    (all clients here come from 127.0.0.1) must not catch the other tests."""
    srv = XesServer(tmp_path_factory.mktemp("fast") / "node", extra="[auth]\nmax_failures = 1000\n")
    srv.write_config()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


SASL2 = "urn:xmpp:sasl:2"
AGENT = "5c6f5e46-3b0c-4a6e-9d4a-1d6a0c3f2b10"
"""The user-agent id tests/js/sasl2_fast.mjs presents."""


_node = node_binary


def xmppjs(
    port: int, domain: str, user: str, password: str, second: int | None = None
) -> list[dict[str, Any]]:
    args = [_node(), str(JS / "sasl2_fast.mjs"), str(port), domain, user, password]
    if second is not None:
        args.append(str(second))
    env = dict(os.environ, NODE_TLS_REJECT_UNAUTHORIZED="0")  # the test server's own certificate
    result = subprocess.run(args, capture_output=True, text=True, timeout=90, env=env, cwd=JS)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stdout + result.stderr
    return lines


def attempt(srv: XesServer, user: str, proof_token: str, agent_id: str) -> bytes:
    """One HT-SHA-256-NONE authentication on a raw stream; the server's answer."""
    raw = RawClient(srv.c2s)
    features = raw.starttls(srv.domain)
    assert b"urn:xmpp:sasl:2" in features and b"urn:xmpp:fast:0" in features
    proof = hmac.new(proof_token.encode(), b"Initiator", hashlib.sha256).digest()
    initial = base64.b64encode(user.encode() + b"\x00" + proof).decode()
    raw.send(
        f"<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-NONE'>"
        f"<initial-response>{initial}</initial-response>"
        f"<user-agent id='{agent_id}'/><fast xmlns='urn:xmpp:fast:0'/></authenticate>"
    )
    answer = b""
    while b"</success>" not in answer and b"</failure>" not in answer:
        answer += raw.recv_until(b">", timeout=10)
    raw.close()
    return answer


def test_password_login_with_bind2_then_fast_with_a_wrong_password(
    fast_server: XesServer,
) -> None:
    srv = fast_server
    srv.add_user("fasty", "fasty-password")
    first, second = xmppjs(srv.c2s, srv.domain, "fasty", "fasty-password")
    assert first["step"] == "password" and first["sasl2"] and first["ping"] == "result"
    # Bind2: the resource is the client's tag and a part stable per device.
    assert first["jid"].startswith(f"fasty@{srv.domain}/phone.")
    token = first["token"]
    assert token["mechanism"] == "HT-SHA-256-NONE" and token["expiry"]
    # Stream management enabled inline with Bind2 (its <enabled/> inside <bound/>), and the
    # ping that followed was a counted, answered stanza.
    assert first["sm"] is True and first["smId"], first
    # The second login has a wrong password: only the token can have let it in.
    assert second["step"] == "fast" and second["ping"] == "result", second
    assert second["jid"] == first["jid"]  # the same device gets the same resource
    log = srv.log_path.read_text()
    assert "HT-SHA-256-NONE" in log and "fasty-password" not in log
    journal = srv.xes("events", "dump").stdout
    assert "fast.token_issued" in journal
    assert token["token"] not in journal and token["token"] not in log  # only its hash is kept


def test_fast_refusals_on_the_wire(fast_server: XesServer) -> None:
    srv = fast_server
    srv.add_user("fastr", "fastr-password")
    first, second = xmppjs(srv.c2s, srv.domain, "fastr", "fastr-password")
    # The FAST login got a new token that replaces the first: the first one is spent, so a
    # captured exchange cannot be replayed.
    token = second["token"]["token"]
    assert token != first["token"]["token"]
    assert b"not-authorized" in attempt(srv, "fastr", first["token"]["token"], AGENT)
    agent = AGENT

    assert b"<success" in attempt(srv, "fastr", token, agent)
    assert b"not-authorized" in attempt(srv, "fastr", token + "x", agent)  # a forged token
    assert b"not-authorized" in attempt(
        srv, "fastr", token, "another-device"
    )  # bound to its device
    # The operator revokes the device's tokens; then the old token is refused.
    out = srv.xes("user", "revoke-tokens", f"fastr@{srv.domain}", "--device", agent).stdout
    assert "revoked" in out
    assert b"not-authorized" in attempt(srv, "fastr", token, agent)


def test_a_new_password_ends_every_token(fast_server: XesServer) -> None:
    srv = fast_server
    srv.add_user("fastp", "fastp-password")
    _, last = xmppjs(srv.c2s, srv.domain, "fastp", "fastp-password")
    token = last["token"]["token"]
    assert b"<success" in attempt(srv, "fastp", token, AGENT)
    srv.xes("user", "passwd", f"fastp@{srv.domain}", "--password", "new-fastp-password")
    assert b"not-authorized" in attempt(srv, "fastp", token, AGENT)


def test_a_token_from_one_node_works_on_another(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        n1, n2, _ = cluster.nodes
        n1.add_user("fastc", "fastc-password")
        first, second = xmppjs(n1.c2s, n1.domain, "fastc", "fastc-password", second=n2.c2s)
        assert first["token"] and second["step"] == "fast" and second["ping"] == "result", second
        assert "HT-SHA-256-NONE" in n2.log_path.read_text()


def test_resumption_inside_sasl2_delivers_what_was_missed_once(fast_server: XesServer) -> None:
    """XEP-0198 inline in SASL2: xmpp.js loses its connection, reconnects with its FAST token
    and resumes in the same <authenticate/>; a message sent meanwhile arrives once."""
    import asyncio

    from tests.integration.clients import Client

    srv = fast_server
    srv.add_user("resy", "resy-password")
    srv.add_user("resx", "resx-password")
    env = dict(os.environ, NODE_TLS_REJECT_UNAUTHORIZED="0")
    proc = subprocess.Popen(
        [_node(), str(JS / "sasl2_resume.mjs"), str(srv.c2s), srv.domain, "resy", "resy-password"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=JS,
    )
    assert proc.stdout is not None and proc.stdin is not None
    online = json.loads(proc.stdout.readline())
    assert online["step"] == "online" and online["sm"] and online["id"], online
    assert json.loads(proc.stdout.readline())["step"] == "cut"

    async def send() -> None:
        sender = Client(f"resx@{srv.domain}/pc", "resx-password")
        await sender.login(srv.c2s)
        sender.send_message(mto=online["jid"], mbody="while you were away", mtype="chat")
        await asyncio.sleep(0.5)
        await sender.logout()

    asyncio.run(send())
    proc.stdin.write("go\n")
    proc.stdin.flush()
    after = json.loads(proc.stdout.readline())
    proc.wait(timeout=30)
    assert after["step"] == "after", after
    assert after["resumed"] == 1, after
    assert after["bodies"] == ["while you were away"], after
    assert after["jid"] == online["jid"]
    log = srv.log_path.read_text()
    assert "session_resumed" in log
