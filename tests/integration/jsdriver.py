"""Drive an independent JavaScript client (tests/js/driver.mjs, xmpp.js) from a test: commands
as JSON lines on its stdin, its events read back with a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.clients import Client, next_matching
from tests.integration.conftest import run
from tests.integration.server import XesServer

JS = Path(__file__).resolve().parents[1] / "js"


def node_binary(package: str = "@xmpp/client") -> str:
    """``node`` with ``package`` installed, or a skip (a failure on CI, where it must be)."""
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / package).exists():
        if os.environ.get("CI") or os.geteuid() == 0:
            raise AssertionError("node and tests/js/node_modules are needed: run tools/test.sh")
        pytest.skip("node or xmpp.js missing (tools/test.sh installs them)")
    return node


class JsClient:
    """One ``driver.mjs`` process: an xmpp.js client logged in through ``service`` (or another
    driver with the same commands and events: ``stanza_driver.mjs`` for StanzaJS)."""

    def __init__(
        self,
        service: str,
        domain: str,
        user: str,
        password: str,
        resource: str,
        *,
        script: str = "driver.mjs",
        package: str = "@xmpp/client",
    ):
        env = dict(os.environ, NODE_TLS_REJECT_UNAUTHORIZED="0", NODE_NO_WARNINGS="1")
        self.proc = subprocess.Popen(
            [
                node_binary(package),
                "--experimental-websocket",
                str(JS / script),
                service,
                domain,
                user,
                password,
                resource,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=JS,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.put(json.loads(line))

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def expect(self, ev: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next event named ``ev`` (earlier others are kept in ``seen``)."""
        while True:
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                stderr = ""
                if self.proc.poll() is not None and self.proc.stderr is not None:
                    stderr = self.proc.stderr.read()
                raise AssertionError(
                    f"no {ev!r} from the JS client; seen {self.seen} {stderr}"
                ) from None
            self.seen.append(event)
            if event["ev"] == ev:
                return event
            if event["ev"] == "error" and ev != "error":
                raise AssertionError(f"the JS client failed: {event}; seen {self.seen}")

    def messages(self) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["ev"] == "message"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send(op="stop")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def chat_with_tcp_peer_and_read_mam(
    js: JsClient, srv: XesServer, online: dict[str, Any], peer_user: str, transport: str
) -> None:
    """The web client and a slixmpp client on TCP exchange a message each way (the web one
    archived with a stanza-id), then the web client finds both in MAM: the scenario every web
    transport must pass."""
    user = online["jid"].split("@", 1)[0]

    async def scenario() -> None:
        peer = Client(f"{peer_user}@{srv.domain}/pc", f"pw-{peer_user}")
        await peer.login(srv.c2s)
        peer.send_message(mto=f"{user}@{srv.domain}", mbody="hello over tcp", mtype="chat")
        got = await asyncio.to_thread(js.expect, "message")
        assert got["body"] == "hello over tcp"
        assert got["from"] == f"{peer_user}@{srv.domain}/pc"
        assert got["stanza_id"], "archived with a stanza-id (XEP-0359)"
        js.send(op="send", to=f"{peer_user}@{srv.domain}", body=f"hello over {transport}", id="w1")
        reply = await next_matching(peer.messages, lambda m: m["body"], timeout=15)
        assert str(reply["body"]) == f"hello over {transport}"
        assert str(reply["from"]) == online["jid"]
        await peer.logout()

    run(scenario())
    js.send(op="mam", **{"with": f"{peer_user}@{srv.domain}"})
    items = js.expect("mam")["items"]
    assert [i["body"] for i in items] == ["hello over tcp", f"hello over {transport}"]


def missed_message_arrives_once(
    js: JsClient, srv: XesServer, online: dict[str, Any], peer_user: str
) -> dict[str, Any]:
    """After the web client's ``cut``, a TCP client sends it a message; the web client resumes
    (XEP-0198) and gets it exactly once. Returns the ``resumed`` event."""

    async def send() -> None:
        peer = Client(f"{peer_user}@{srv.domain}/pc", f"pw-{peer_user}")
        await peer.login(srv.c2s)
        peer.send_message(mto=online["jid"], mbody="while you were away", mtype="chat")
        await asyncio.sleep(0.5)
        await peer.logout()

    run(send())
    resumed = js.expect("resumed", timeout=40)
    if not js.messages():
        js.expect("message")
    time.sleep(1.5)  # a duplicate would arrive meanwhile
    while not js.events.empty():
        js.seen.append(js.events.get())
    bodies = [m["body"] for m in js.messages()]
    assert bodies == ["while you were away"], js.seen
    return resumed
