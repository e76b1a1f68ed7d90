"""A room with occupants at three WAN sites (the user-space WAN emulator): a site cut off from the
majority gives its occupant clear errors, never silence; the room goes on at the other sites;
after the heal the cut-off user rejoins, finds the room whole and gets what it missed from the
room archive, exactly once.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from tests.integration.clients import next_matching
from tests.integration.cluster import XesCluster
from tests.integration.conftest import run
from tests.integration.test_cluster import replay, settle
from tests.integration.test_muc_cluster import ROOM, Occupant
from tests.integration.test_wan import three_sites
from tests.integration.wanproxy import WanEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


async def wait_bodies(client: Occupant, want: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.room_bodies != want and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert client.room_bodies == want, (client.boundjid, client.room_bodies, want)


async def say(sender: Occupant, text: str) -> None:
    sender.send_message(mto=ROOM, mbody=text, mtype="groupchat")


def test_room_across_three_wan_sites_with_a_partition(tmp_path: Path) -> None:
    with three_sites(tmp_path, seed=11) as (cluster, wan):
        _scenario(cluster, wan)


def _scenario(cluster: XesCluster, wan: WanEmulator) -> None:
    cluster.start()
    for i in range(3):
        cluster.nodes[0].add_user(f"w{i + 1}", f"pw{i + 1}")
    leader = cluster.leader()
    cut_node = next(n for n in cluster.nodes if n is not leader)
    cut_index = cluster.nodes.index(cut_node)
    majority_index = [i for i in range(3) if i != cut_index]

    async def scenario() -> None:
        clients = [Occupant(f"w{i + 1}@xes.test/site", f"pw{i + 1}") for i in range(3)]
        for client, node in zip(clients, cluster.nodes, strict=True):
            await client.login(node.c2s, timeout=30)
        owner = clients[majority_index[0]]
        await owner.join(f"w{majority_index[0] + 1}")
        form = owner.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", value="http://jabber.org/protocol/muc#roomconfig")
        form.add_field(var="muc#roomconfig_persistentroom", value=True)
        await owner.plugin["xep_0045"].set_room_config(ROOM, form)
        owner.plugin["xep_0045"].set_subject(ROOM, "across the sites")
        for i, client in enumerate(clients):
            if client is not owner:
                await client.join(f"w{i + 1}")
        # Every site speaks; every occupant at every site hears it all, once, in order.
        want: list[str] = []
        for i, client in enumerate(clients):
            text = f"g site {i}"
            await say(client, text)
            want.append(text)
            for other in clients:
                await wait_bodies(other, want)

        isolated = clients[cut_index]
        last_id = isolated.room_ids[-1]
        wan.cut(cluster.site(cut_index))
        # The cut-off occupant is told, not ignored.
        isolated.send_message(mto=ROOM, mbody="g from the cut-off site", mtype="groupchat")
        error = await next_matching(isolated.messages, lambda m: m["type"] == "error", timeout=30)
        assert error["error"]["condition"] == "resource-constraint"
        assert error["error"]["type"] == "wait"
        # The room goes on at the majority; the cut-off occupant leaves there (333) once its
        # node is declared down, and its own node drops its stream so it can go elsewhere.
        speakers = [clients[i] for i in majority_index]
        during = []
        for n, speaker in enumerate(speakers * 2):
            # One at a time: two senders on two nodes have no order between them but the log's.
            text = f"g during the cut {n}"
            await say(speaker, text)
            during.append(text)
            for listener in speakers:
                await wait_bodies(listener, want + during)
        for speaker in speakers:
            pres = await asyncio.wait_for(speaker.left.get(), 40)
            assert pres["from"].resource == f"w{cut_index + 1}", pres
            assert "333" in re.findall(r"code=['\"](\d+)", str(pres)), pres
        await asyncio.wait_for(isolated.ended.wait(), 60)
        assert not [b for b in isolated.room_bodies if "during" in b]

        wan.heal_all()
        deadline = time.monotonic() + 60
        while True:  # the healed node rejoins with a new boot; binding works once it has
            again = Occupant(f"w{cut_index + 1}@xes.test/again", f"pw{cut_index + 1}")
            try:
                await again.login(cut_node.c2s, timeout=15)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        joined = await again.plugin["xep_0045"].join_muc_wait(
            ROOM, f"w{cut_index + 1}", maxstanzas=0, timeout=30
        )
        assert joined[1]["subject"] == "across the sites"  # the room is whole
        assert {str(p["from"].resource) for p in joined[2]} == {f"w{i + 1}" for i in range(3)}, (
            joined[2]
        )
        missed = await again.catch_up(last_id)
        assert [b for _, b in missed] == during, missed
        await say(again, "g healed")
        for speaker in speakers:
            await wait_bodies(speaker, [*want, *during, "g healed"])
        await wait_bodies(again, ["g healed"])
        for client in [*speakers, again]:
            client.disconnect()
        await asyncio.sleep(0.5)

    run(scenario())
    settle(cluster, timeout=60)
    results = [replay(node) for node in cluster.nodes]
    assert len({digest for digest, _ in results}) == 1, results
