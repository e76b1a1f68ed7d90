"""Start real multi-node xes clusters (one ``xes serve`` process per node) for integration tests.

Each node is an :class:`XesServer` with a ``[cluster]`` table written exactly as an operator
would: ``node_id``, ``raft``, ``peers`` and ``secret``. With ``wan`` the nodes listen for Raft on
their own loopback address (``raft_bind``) behind the WAN emulator's proxies, and advertise the
proxy addresses, so every Raft byte between two sites crosses an emulated link.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.server import XesServer, free_port
from tests.integration.wanproxy import WanEmulator


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


@dataclass
class XesCluster:
    root: Path
    size: int = 3
    domain: str = "xes.test"
    extra: str = ""
    """Extra lines for every node's ``[cluster]`` table (e.g. ``node_down_after = 3``)."""
    wan: WanEmulator | None = None
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    nodes: list[XesServer] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i in range(self.size):
            node = XesServer(self.root / f"n{i + 1}", domain=self.domain)
            if self.wan is not None:
                node.raft_host = f"127.0.0.{11 + i}"
            self.nodes.append(node)
        for i, node in enumerate(self.nodes):
            self._configure(i, node)

    def site(self, i: int) -> str:
        return "abcdefghi"[i]

    def _configure(self, i: int, node: XesServer) -> None:
        peers = [other.raft_addr for other in self.nodes if other is not node]
        lines = [
            f'node_id = "n{i + 1}"',
            f"peers = {json.dumps(peers)}",
            f'secret = "{self.secret}"',
        ]
        if self.wan is not None:
            # Advertised address: the emulator's proxy; the node listens behind it.
            real = free_port()
            lines.append(f'raft_bind = "{node.raft_host}:{real}"')
            self.wan.add_site(self.site(i), node.raft_host)
            self.wan.expose(
                self.site(i), listen=(node.raft_host, node.raft), target=(node.raft_host, real)
            )
        node.extra = "\n".join(lines) + "\n" + self.extra
        node.write_config()

    def start(self, timeout: float = 90.0) -> None:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def status(self, node: XesServer) -> dict[str, Any]:
        result = node.xes("cluster", "status", "--json")
        return dict(json.loads(result.stdout))

    def leader(self, among: list[XesServer] | None = None, timeout: float = 30.0) -> XesServer:
        """The running node that every running node (of ``among``) names as leader."""
        among = among or [n for n in self.nodes if n.running]

        def agreed() -> XesServer | None:
            leaders = set()
            for node in among:
                try:
                    leaders.add(self.status(node)["local"]["leader"])
                except (AssertionError, ValueError, KeyError):
                    return None
            if len(leaders) != 1 or None in leaders:
                return None
            addr = leaders.pop()
            # Right after a kill the survivors still name the dead leader: not an answer.
            return next((n for n in self.nodes if n.raft_addr == addr and n.running), None)

        leader: XesServer = wait_until(agreed, timeout, 0.3)
        return leader

    def kill(self, node: XesServer) -> None:
        node.stop(signal.SIGKILL)

    def replay_digests(self) -> list[str]:
        digests = []
        for node in self.nodes:
            out = node.xes("replay").stdout
            digests.append(out)
        return digests


@contextmanager
def running_cluster(root: Path, **kwargs: Any) -> Iterator[XesCluster]:
    cluster = XesCluster(root, **kwargs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
