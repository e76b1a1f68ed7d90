"""Three real nodes on loopback serve one domain: every pair talks, and any node can die.

Each node is its own ``xes serve`` process with the ``[cluster]`` keys an operator writes
(``node_id``, ``raft``, ``peers``, ``secret``); the clients are slixmpp, spread over the nodes.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from pathlib import Path

import pytest

from tests.integration.clients import Client, drain, next_matching
from tests.integration.cluster import XesCluster, wait_until
from tests.integration.conftest import run
from tests.integration.server import XesServer
from tests.integration.test_chat import befriend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def replay(node: XesServer) -> tuple[str, int]:
    out = node.xes("replay").stdout
    assert "OK: digests are equal" in out, out
    index = int(out.split("applied index:", 1)[1].split()[0])
    return out.split("rebuilt digest:", 1)[1].split()[0], index


def applied(cluster: XesCluster, node: XesServer) -> int:
    local = cluster.status(node)["local"]
    return int(local["applied_index"])


def settle(cluster: XesCluster, timeout: float = 30.0) -> None:
    """Wait until every running node has applied the same index."""

    def same() -> bool:
        indexes = {applied(cluster, n) for n in cluster.nodes if n.running}
        return len(indexes) == 1

    wait_until(same, timeout, 0.3)


async def available(watcher: Client, other: Client) -> None:
    await next_matching(
        watcher.presences,
        lambda p: p["from"] == other.boundjid and p["type"] == "available",
        timeout=20,
    )


async def chat(sender: Client, receiver: Client, body: str) -> None:
    sender.send_message(mto=receiver.boundjid.bare, mbody=body, mtype="chat")
    msg = await next_matching(receiver.messages, lambda m: m["body"] == body, timeout=20)
    assert msg["from"] == sender.boundjid


async def ping(sender: Client, receiver: Client) -> None:
    """iq from one client to another's full JID, answered by the receiving client itself."""
    await sender.plugin["xep_0199"].ping(jid=receiver.boundjid, timeout=10)


def test_three_nodes_serve_one_domain_and_survive_a_leader_kill(tmp_path: Path) -> None:
    cluster = XesCluster(tmp_path, extra="node_down_after = 3.0\ncommit_timeout = 2.0\n")
    try:
        cluster.start()
        n1 = cluster.nodes[0]
        for i in range(3):
            n1.add_user(f"u{i + 1}", f"pw{i + 1}")
        leader = cluster.leader()
        survivors = [n for n in cluster.nodes if n is not leader]
        killed_at: list[float] = []
        new_leader: list[XesServer] = []

        async def scenario() -> None:
            clients = [Client(f"u{i + 1}@xes.test/n{i + 1}", f"pw{i + 1}") for i in range(3)]
            for client, node in zip(clients, cluster.nodes, strict=True):
                await client.login(node.c2s)
            for a, b in itertools.combinations(clients, 2):
                await befriend(a, b)
            for a, b in itertools.permutations(clients, 2):
                await available(a, b)
            # Messages and iq flow between every ordered pair of nodes.
            for a, b in itertools.permutations(clients, 2):
                await chat(a, b, f"{a.boundjid.resource} to {b.boundjid.resource}")
                await ping(a, b)

            # kill -9 the leader's whole process group.
            doomed = clients[cluster.nodes.index(leader)]
            alive = [c for c, n in zip(clients, cluster.nodes, strict=True) if n is not leader]
            killed_at.append(time.monotonic())
            await asyncio.to_thread(cluster.kill, leader)
            new_leader.append(await asyncio.to_thread(cluster.leader, survivors, 30.0))
            # Sent to the dead node's session before the cluster gives up on that node (or just
            # after): it is not lost, the user gets it at the next login.
            alive[1].send_message(mto=doomed.boundjid.bare, mbody="in the window", mtype="chat")
            # Clients on the surviving nodes keep chatting, across the two nodes.
            await chat(alive[0], alive[1], "after the kill")
            await chat(alive[1], alive[0], "still here")
            await ping(alive[0], alive[1])
            # After node_down_after the cluster ends the dead node's sessions: no ghost.
            for watcher in alive:
                await next_matching(
                    watcher.presences,
                    lambda p: p["from"] == doomed.boundjid and p["type"] == "unavailable",
                    timeout=30,
                )
            # A message to the dead node's user is now kept offline, not sent into the void.
            alive[0].send_message(mto=doomed.boundjid.bare, mbody="while you were out")
            await asyncio.sleep(0.5)
            for client in alive:
                client.disconnect()
            await asyncio.sleep(0.5)

        run(scenario())
        assert new_leader[0] in survivors
        log_text = new_leader[0].log_text()
        assert "node_declared_down" in log_text

        # The killed node restarts, catches up, and serves again.
        leader.start()
        settle(cluster)

        async def after_restart() -> None:
            index = cluster.nodes.index(leader)
            back = Client(f"u{index + 1}@xes.test/again", f"pw{index + 1}")
            await back.login(leader.c2s)
            kept = [await asyncio.wait_for(back.messages.get(), 10) for _ in range(2)]
            assert all(m["delay"]["stamp"] is not None for m in kept)  # offline: delayed
            await asyncio.sleep(1.0)
            bodies = [m["body"] for m in kept + drain(back.messages)]
            assert sorted(bodies) == ["in the window", "while you were out"], bodies
            other_index = (index + 1) % 3
            other = Client(f"u{other_index + 1}@xes.test/x", f"pw{other_index + 1}")
            await other.login(cluster.nodes[other_index].c2s)
            await available(back, other)
            await chat(back, other, "back online")
            await ping(other, back)
            back.disconnect()
            other.disconnect()
            await asyncio.sleep(0.5)

        run(after_restart())
        settle(cluster)
        results = [replay(node) for node in cluster.nodes]
        # Same applied index, same rebuilt projections on every node.
        assert len({index for _, index in results}) == 1, results
        assert len({digest for digest, _ in results}) == 1, results
    finally:
        cluster.stop()


def test_wrong_secret_is_refused_and_logged(tmp_path: Path) -> None:
    cluster = XesCluster(tmp_path / "c", size=3)
    # The intruder connects out to members with smaller addresses (pysyncobj's rule), so it
    # listens on a loopback address that sorts after every member's.
    intruder = XesServer(tmp_path / "intruder", raft_host="127.0.0.99")
    try:
        cluster.start()
        assert all(intruder.raft_addr > n.raft_addr for n in cluster.nodes)
        peers = [n.raft_addr for n in cluster.nodes]
        intruder.extra = f'node_id = "n9"\npeers = {peers!r}\nsecret = "not-the-secret"\n'.replace(
            "'", '"'
        )
        intruder.write_config()
        intruder.launch()
        wait_until(lambda: any("raft_peer_refused" in n.log_text() for n in cluster.nodes), 20, 0.3)
        refused = next(n.log_text() for n in cluster.nodes if "raft_peer_refused" in n.log_text())
        assert "wrong cluster secret" in refused
        status = cluster.status(cluster.nodes[0])
        assert sorted(m["raft"] for m in status["members"]) == sorted(peers)
        assert all(m["reachable"] for m in status["members"])
    finally:
        intruder.stop(signal.SIGKILL)
        cluster.stop()


def test_cluster_status_shows_every_member(tmp_path: Path) -> None:
    cluster = XesCluster(tmp_path, size=3)
    try:
        cluster.start()
        leader = cluster.leader()
        settle(cluster)
        report = cluster.status(cluster.nodes[1])
        members = {m["node"]: m for m in report["members"]}
        assert set(members) == {"n1", "n2", "n3"}
        assert report["leader"] == leader.raft_addr
        for member in members.values():
            assert member["reachable"] and member["lag"] == 0
            assert member["applied_index"] == member["commit_index"] > 0
        text = cluster.nodes[1].xes("cluster", "status").stdout
        assert "NODE" in text and "leader" in text
        for node in cluster.nodes:
            assert node.raft_addr in text
    finally:
        cluster.stop()
