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
