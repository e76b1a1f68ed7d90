"""Three WAN sites, one node each, Raft links through the user-space WAN emulator.

Sites a and b are 20 ms apart (one way), c is 80 ms from both, with a little loss on c's links.
Clients at every site exchange messages; the leader's node is killed and service goes on; a site
cut off from the majority gives its clients errors, never silence, drops them after
``node_down_after`` so they can go elsewhere, and serves again after healing: every message sent
to its user once the cluster had given up on the old session arrives exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.clients import Client, drain, next_matching
from tests.integration.cluster import XesCluster
from tests.integration.conftest import run
from tests.integration.test_chat import befriend
from tests.integration.test_cluster import available, chat, ping, replay, settle
from tests.integration.wanproxy import WanEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

WAN_SETTINGS = """\
node_down_after = 6.0
commit_timeout = 3.0
election_timeout_min = 1.0
election_timeout_max = 2.5
"""


@contextmanager
def three_sites(tmp_path: Path, seed: int) -> Iterator[tuple[XesCluster, WanEmulator]]:
    """Sites a and b 20 ms apart, c 80 ms from both with 1 % loss; one node at each."""
    with WanEmulator(seed=seed) as wan:
        cluster = XesCluster(tmp_path, wan=wan, extra=WAN_SETTINGS)
        wan.set_link("a", "b", delay=0.020)
        wan.set_link("a", "c", delay=0.080, loss=0.01)
        wan.set_link("b", "c", delay=0.080, loss=0.01)
        try:
            yield cluster, wan
        finally:
            cluster.stop()
        assert wan.errors == []


def test_three_wan_sites_failover_and_partition(tmp_path: Path) -> None:
    with three_sites(tmp_path, seed=7) as (cluster, wan):
        _scenario(cluster, wan)


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
    window = [f"before node down {i}" for i in range(3)]
    sent = [f"after node down {i}" for i in range(5)]

    async def partition() -> None:
        isolated = Client(f"s{cut_user}@xes.test/isolated", f"pw{cut_user}")
        peer = Client(f"s{peer_user}@xes.test/majority", f"pw{peer_user}")
        await isolated.login(cut_node.c2s, timeout=30)
        await peer.login(majority[0].c2s, timeout=30)
        await available(peer, isolated)
        await available(isolated, peer)
        cut_at = time.monotonic()
        wan.cut(cut_site)
        # The isolated site's client gets an error for what it sends: never silence.
        isolated.send_message(mto=peer.boundjid.bare, mbody="from the cut-off site", mtype="chat")
        error = await next_matching(isolated.messages, lambda m: m["type"] == "error", timeout=30)
        assert error["error"]["condition"] == "resource-constraint"
        assert error["error"]["type"] == "wait"
        # The majority goes on. Messages routed to the isolated session before the cluster
        # gives up on its node never reach it: the leader routes them again, offline.
        for body in window:
            peer.send_message(mto=isolated.boundjid.bare, mbody=body, mtype="chat")
        # After node_down_after the majority ends the cut-off node's sessions...
        await next_matching(
            peer.presences,
            lambda p: p["from"] == isolated.boundjid and p["type"] == "unavailable",
            timeout=30,
        )
        declared_down = time.monotonic() - cut_at
        # ...and from then on messages to that user are kept offline for it.
        for body in sent:
            peer.send_message(mto=isolated.boundjid.bare, mbody=body, mtype="chat")
        # Without a majority for node_down_after, the cut-off node drops its clients so they
        # can reconnect elsewhere: the stream ends while the partition lasts.
        await asyncio.wait_for(isolated.ended.wait(), 60)
        dropped = time.monotonic() - cut_at
        got = [m["body"] for m in drain(isolated.messages) if m["type"] != "error"]
        healed_at = time.monotonic()
        wan.heal_all()
        again = Client(f"s{cut_user}@xes.test/again", f"pw{cut_user}")
        deadline = time.monotonic() + 60
        while True:  # the healed node rejoins with a new boot; binding works once it has
            try:
                await again.login(cut_node.c2s, timeout=15)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                again = Client(f"s{cut_user}@xes.test/again", f"pw{cut_user}")
        catch_up = time.monotonic() - healed_at
        deadline = time.monotonic() + 15
        while set(sent + window) - set(got) and time.monotonic() < deadline:
            try:
                msg = await asyncio.wait_for(again.messages.get(), 1.0)
            except TimeoutError:
                continue
            if msg["type"] != "error":
                got.append(msg["body"])
        await asyncio.sleep(1.0)
        got.extend(m["body"] for m in drain(again.messages) if m["type"] != "error")
        # Every message sent to the isolated user arrives, exactly once: those of the window
        # re-routed offline by the leader, the later ones stored offline directly.
        wanted = window + sent
        assert sorted(b for b in got if b in wanted) == sorted(wanted), got
        await available(peer, again)
        await chat(again, peer, "healed")
        print(
            f"\nWAN failover {failover:.2f} s; declared down after {declared_down:.1f} s; "
            f"clients dropped after {dropped:.1f} s; back in service {catch_up:.2f} s after "
            f"the heal; window messages delivered {len([b for b in got if b in window])}/"
            f"{len(window)}"
        )
        again.disconnect()
        peer.disconnect()
        await asyncio.sleep(0.3)

    run(partition())
    settle(cluster, timeout=60)
    results = [replay(node) for node in cluster.nodes]
    assert len({digest for digest, _ in results}) == 1, results
