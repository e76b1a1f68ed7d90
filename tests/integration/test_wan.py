"""Three WAN sites, one node each, Raft links through the user-space WAN emulator.

Sites a and b are 20 ms apart (one way), c is 80 ms from both, with a little loss on c's links.
Clients at every site exchange messages; the leader's node is killed and service goes on; a site
cut off from the majority gives its clients errors, never silence, and catches up after healing:
every message sent to its user during the partition arrives exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from tests.integration.clients import Client, next_matching
from tests.integration.cluster import XesCluster
from tests.integration.conftest import run
from tests.integration.test_chat import befriend
from tests.integration.test_cluster import available, chat, ping, replay, settle
from tests.integration.wanproxy import WanEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

WAN_SETTINGS = """\
node_down_after = 4.0
commit_timeout = 4.0
election_timeout_min = 1.0
election_timeout_max = 2.5
"""


def test_three_wan_sites_failover_and_partition(tmp_path: Path) -> None:
    with WanEmulator(seed=7) as wan:
        cluster = XesCluster(tmp_path, wan=wan, extra=WAN_SETTINGS)
        wan.set_link("a", "b", delay=0.020)
        wan.set_link("a", "c", delay=0.080, loss=0.01)
        wan.set_link("b", "c", delay=0.080, loss=0.01)
        try:
            _scenario(cluster, wan)
        finally:
            cluster.stop()
        assert wan.errors == []


def _scenario(cluster: XesCluster, wan: WanEmulator) -> None:
    cluster.start()
    for i in range(3):
        cluster.nodes[0].add_user(f"s{i + 1}", f"pw{i + 1}")
    clients: list[Client] = []

    async def across_sites() -> None:
        clients.extend(Client(f"s{i + 1}@xes.test/site", f"pw{i + 1}") for i in range(3))
        for client, node in zip(clients, cluster.nodes, strict=True):
            await client.login(node.c2s, timeout=30)
        for a, b in itertools.combinations(clients, 2):
            await befriend(a, b)
        for a, b in itertools.permutations(clients, 2):
            await available(a, b)
            await chat(a, b, f"{a.boundjid.bare} -> {b.boundjid.bare}")
            await ping(a, b)
        for client in clients:
            client.disconnect()
        await asyncio.sleep(0.3)

    run(across_sites())
    links = wan.stats()["links"]
    # Every Raft connection was recognised as coming from a site (source-bound), none bypassed.
    assert links and set(links) <= {f"{x}->{y}" for x in "abc" for y in "abc" if x != y}, links
    assert links["a->c"]["bytes"] > 0 and links["c->b"]["bytes"] + links["b->c"]["bytes"] > 0

    # The leader's site dies: a new leader is elected and the other two sites keep chatting.
    leader = cluster.leader()
    survivors = [n for n in cluster.nodes if n is not leader]
    cluster.kill(leader)
    started = time.monotonic()
    new_leader = cluster.leader(survivors, timeout=30)
    failover = time.monotonic() - started
    assert new_leader in survivors

    async def after_leader_loss() -> None:
        a, b = (
            Client(
                f"s{cluster.nodes.index(n) + 1}@xes.test/after", f"pw{cluster.nodes.index(n) + 1}"
            )
            for n in survivors
        )
        await a.login(survivors[0].c2s, timeout=30)
        await b.login(survivors[1].c2s, timeout=30)
        await available(a, b)
        await chat(a, b, "the leader's site is gone")
        await chat(b, a, "we carry on")
        a.disconnect()
        b.disconnect()
        await asyncio.sleep(0.3)

    run(after_leader_loss())
    leader.start()
    settle(cluster, timeout=60)

    # Partition: cut one follower site off from the majority.
    leader = cluster.leader()
    cut_node = next(n for n in cluster.nodes if n is not leader)
    cut_site = cluster.site(cluster.nodes.index(cut_node))
    majority = [n for n in cluster.nodes if n is not cut_node]
    cut_user = cluster.nodes.index(cut_node) + 1
    peer_user = cluster.nodes.index(majority[0]) + 1
    sent = [f"during partition {i}" for i in range(5)]

    async def partition() -> None:
        isolated = Client(f"s{cut_user}@xes.test/isolated", f"pw{cut_user}")
        peer = Client(f"s{peer_user}@xes.test/majority", f"pw{peer_user}")
        await isolated.login(cut_node.c2s, timeout=30)
        await peer.login(majority[0].c2s, timeout=30)
        await available(peer, isolated)
        await available(isolated, peer)
        wan.cut(cut_site)
        # The isolated site's client gets an error for what it sends: never silence.
        isolated.send_message(mto=peer.boundjid.bare, mbody="from the cut-off site", mtype="chat")
        error = await next_matching(isolated.messages, lambda m: m["type"] == "error", timeout=30)
        assert error["error"]["condition"] == "resource-constraint"
        # The majority goes on; messages to the isolated user are committed meanwhile.
        for body in sent:
            peer.send_message(mto=isolated.boundjid.bare, mbody=body, mtype="chat")
            await asyncio.sleep(0.2)
        # After node_down_after the majority ends the cut-off node's sessions.
        await next_matching(
            peer.presences,
            lambda p: p["from"] == isolated.boundjid and p["type"] == "unavailable",
            timeout=30,
        )
        peer.send_message(mto=isolated.boundjid.bare, mbody="after node down", mtype="chat")
        await asyncio.sleep(0.5)
        healed_at = time.monotonic()
        wan.heal_all()
        # The healed node applies what it missed, learns it was declared down and closes the
        # stale stream; the client reconnects and gets what was kept offline for it.
        await asyncio.wait_for(isolated.ended.wait(), 60)
        catch_up = time.monotonic() - healed_at
        got = []
        while not isolated.messages.empty():
            msg = isolated.messages.get_nowait()
            if msg["type"] != "error":
                got.append(msg["body"])
        again = Client(f"s{cut_user}@xes.test/again", f"pw{cut_user}")
        await again.login(cut_node.c2s, timeout=30)
        deadline = time.monotonic() + 10
        wanted = [*sent, "after node down"]
        while set(wanted) - set(got) and time.monotonic() < deadline:
            try:
                msg = await asyncio.wait_for(again.messages.get(), 1.0)
            except TimeoutError:
                continue
            if msg["type"] != "error":
                got.append(msg["body"])
        await asyncio.sleep(1.0)
        while not again.messages.empty():
            got.append(again.messages.get_nowait()["body"])
        received = [body for body in got if body in wanted]
        assert sorted(received) == sorted(wanted), got  # every one, none twice
        await available(peer, again)
        await chat(again, peer, "healed")
        print(f"\nWAN failover {failover:.2f} s; partition catch-up {catch_up:.2f} s")
        again.disconnect()
        peer.disconnect()
        await asyncio.sleep(0.3)

    run(partition())
    settle(cluster, timeout=60)
    results = [replay(node) for node in cluster.nodes]
    assert len({digest for digest, _ in results}) == 1, results
