"""A client not written in Python: Debian's go-sendxmpp (go-xmpp) against the real server.

go-sendxmpp negotiates STARTTLS (with ``-n``/``--no-tls-verify`` for our self-signed certificate),
authenticates with whatever SASL mechanism its go-xmpp picks from our offer (it has no flag to
force one; the server log tells which), binds a resource and sends one message. A slixmpp client
is on the other end. ``go-sendxmpp -l`` listens, which covers the other direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from typing import Any

import pytest

from tests.integration.clients import Client, next_matching
from tests.integration.conftest import run
from tests.integration.server import XesServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        shutil.which("go-sendxmpp") is None,
        reason="go-sendxmpp is not installed (Debian package go-sendxmpp; tools/test.sh installs "
        "it when run as root)",
    ),
]

GO_TIMEOUT = 60.0
SASL_MECHANISMS = {
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "PLAIN",
}


def go_sendxmpp_args(srv: XesServer, user: str, password: str, *args: str) -> list[str]:
    return [
        "go-sendxmpp",
        "--debug",  # prints what the server sent: proves STARTTLS and shows the offer
        "--no-tls-verify",  # the test server's certificate is self-signed
        "--jserver",
        f"127.0.0.1:{srv.c2s}",
        "--username",
        f"{user}@{srv.domain}",
        "--password",
        password,
        "--timeout",
        "20",
        *args,
    ]


def server_events(srv: XesServer, event: str) -> list[dict[str, Any]]:
    """The server's structured log lines (JSON) for ``event``."""
    out = []
    for line in srv.log_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == event:
                out.append(record)
    return out


async def wait_for_event(srv: XesServer, event: str, predicate, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in server_events(srv, event):
            if predicate(record):
                return record
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {event} in the server log:\n{srv.log_text()[-4000:]}")


async def run_go_sendxmpp(args: list[str], stdin: bytes, timeout: float = GO_TIMEOUT) -> str:
    """Run go-sendxmpp to completion without blocking the event loop (slixmpp keeps reading)."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"go-sendxmpp exited with {proc.returncode}:\n{text}"
    return text


def test_go_sendxmpp_sends_to_slixmpp(server: XesServer) -> None:
    srv = server
    srv.add_user("gosender", "go-sender-pw")
    srv.add_user("pyreceiver", "py-receiver-pw")
    body = "hello from go-sendxmpp \u00e9\u00e8 <&>"

    async def scenario() -> None:
        receiver = Client(f"pyreceiver@{srv.domain}/desk", "py-receiver-pw")
        await receiver.login(srv.c2s)
        transcript = await run_go_sendxmpp(
            go_sendxmpp_args(srv, "gosender", "go-sender-pw", f"pyreceiver@{srv.domain}"),
            body.encode(),
        )
        msg = await next_matching(receiver.messages, lambda m: m["body"] == body, timeout=20)
        assert msg["from"].bare == f"gosender@{srv.domain}"
        assert msg["from"].resource, "a message from a client carries its full JID"
        assert msg["to"].bare == f"pyreceiver@{srv.domain}"
        # go-sendxmpp has exited: the server notices and records the end of its session.
        await wait_for_event(
            srv, "session_ended", lambda r: str(r.get("jid", "")).startswith("gosender@")
        )
        await receiver.logout()

        # go-sendxmpp really went through STARTTLS and saw our SASL offer.
        assert "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" in transcript, transcript
        assert "<mechanism>SCRAM-SHA-256</mechanism>" in transcript, transcript
        assert f"<jid>gosender@{srv.domain}/" in transcript, transcript

    run(scenario())

    # Which mechanism go-xmpp chose (it has no option to force SCRAM): recorded by the server.
    auths = [r for r in server_events(srv, "authenticated") if r.get("user") == "gosender"]
    assert len(auths) == 1, auths
    mechanism = auths[0].get("mechanism")
    assert mechanism in SASL_MECHANISMS
    print(f"go-sendxmpp authenticated with {mechanism}")
    assert not server_events(srv, "auth_failed")


def test_go_sendxmpp_disconnect_is_not_a_server_error(server: XesServer) -> None:
    """go-sendxmpp closes its connection without ``</stream:stream>``: routine for a server (mobile
    clients do it all the time), so the session ends without an error in the log."""
    srv = server
    srv.add_user("goquit", "go-quit-pw")

    async def scenario() -> None:
        await run_go_sendxmpp(
            go_sendxmpp_args(srv, "goquit", "go-quit-pw", f"goquit@{srv.domain}"), b"to myself"
        )
        await wait_for_event(
            srv, "session_ended", lambda r: str(r.get("jid", "")).startswith("goquit@")
        )

    run(scenario())
    errors = [
        line
        for line in srv.log_text().splitlines()
        if '"level": "error"' in line and "goquit@" in line
    ]
    assert not errors, "\n".join(errors)


def test_go_sendxmpp_wrong_password_fails(server: XesServer) -> None:
    srv = server
    srv.add_user("gowrong", "right-pw")

    async def scenario() -> None:
        proc = await asyncio.create_subprocess_exec(
            *go_sendxmpp_args(srv, "gowrong", "wrong-pw", f"gowrong@{srv.domain}"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(b"nope"), GO_TIMEOUT)
        assert proc.returncode != 0, out.decode(errors="replace")

    run(scenario())
    assert not [r for r in server_events(srv, "authenticated") if r.get("user") == "gowrong"]


def test_go_sendxmpp_listens_for_slixmpp(server: XesServer) -> None:
    srv = server
    srv.add_user("golistener", "go-listener-pw")
    srv.add_user("pysender", "py-sender-pw")
    body = "hello go, from slixmpp"

    async def scenario() -> None:
        listener = await asyncio.create_subprocess_exec(
            *go_sendxmpp_args(srv, "golistener", "go-listener-pw", "--listen"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await wait_for_event(
                srv, "session_bound", lambda r: str(r.get("jid", "")).startswith("golistener@")
            )
            sender = Client(f"pysender@{srv.domain}/laptop", "py-sender-pw")
            await sender.login(srv.c2s)
            sender.send_message(mto=f"golistener@{srv.domain}", mbody=body, mtype="chat")
            seen: list[str] = []

            async def read_until_body() -> None:
                assert listener.stdout is not None
                while True:
                    line = await listener.stdout.readline()
                    if not line:
                        raise AssertionError("go-sendxmpp -l ended:\n" + "".join(seen))
                    seen.append(line.decode(errors="replace"))
                    if body in seen[-1]:
                        return

            try:
                await asyncio.wait_for(read_until_body(), 20)
            except TimeoutError:
                raise AssertionError("go-sendxmpp -l printed:\n" + "".join(seen)) from None
            assert f"pysender@{srv.domain}" in seen[-1], seen[-1]
            await sender.logout()
        finally:
            if listener.returncode is None:
                listener.terminate()
                try:
                    await asyncio.wait_for(listener.wait(), 10)
                except TimeoutError:
                    listener.kill()
                    await listener.wait()

    run(scenario())
