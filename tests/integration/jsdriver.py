"""Drive an independent JavaScript client (tests/js/driver.mjs, xmpp.js) from a test: commands
as JSON lines on its stdin, its events read back with a deadline."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

JS = Path(__file__).resolve().parents[1] / "js"


def node_binary() -> str:
    """``node`` with xmpp.js installed, or a skip (a failure on CI, where it must be there)."""
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "@xmpp" / "client").exists():
        if os.environ.get("CI") or os.geteuid() == 0:
            raise AssertionError("node and tests/js/node_modules are needed: run tools/test.sh")
        pytest.skip("node or xmpp.js missing (tools/test.sh installs them)")
    return node


class JsClient:
    """One ``driver.mjs`` process: an xmpp.js client logged in through ``service``."""

    def __init__(self, service: str, domain: str, user: str, password: str, resource: str):
        env = dict(os.environ, NODE_TLS_REJECT_UNAUTHORIZED="0", NODE_NO_WARNINGS="1")
        self.proc = subprocess.Popen(
            [
                node_binary(),
                "--experimental-websocket",
                str(JS / "driver.mjs"),
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
                raise AssertionError(f"no {ev!r} from xmpp.js; seen {self.seen} {stderr}") from None
            self.seen.append(event)
            if event["ev"] == ev:
                return event
            if event["ev"] == "error" and ev != "error":
                raise AssertionError(f"xmpp.js failed: {event}; seen {self.seen}")

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
