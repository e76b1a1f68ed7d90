"""PEP across three real nodes: a publish on one node notifies contacts on the others (one with
XEP-0198, whose notification is an outbox row), the caps one node learned serve every node, a
login on a third node gets the last item, and all nodes replay to the same digest."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.clients import next_matching
from tests.integration.cluster import running_cluster
from tests.integration.conftest import run
from tests.integration.test_chat import befriend
from tests.integration.test_cluster import replay, settle
from tests.integration.test_pep import TUNE, PepClient, titles, tune

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class ManagedPepClient(PepClient):
    def __init__(self, jid: str, password: str, interests: tuple[str, ...] = ()) -> None:
        super().__init__(jid, password, interests)
        self.register_plugin("xep_0198")


def test_publish_on_one_node_notifies_on_the_others(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        n1, n2, n3 = cluster.nodes
        domain = n1.domain
        for name in ("ann", "ben", "cara"):
            n1.add_user(name, f"pw-{name}")

        async def scenario() -> None:
            ann = PepClient(f"ann@{domain}/pc", "pw-ann", (TUNE,))
            ben = ManagedPepClient(f"ben@{domain}/phone", "pw-ben", (TUNE,))
            cara = PepClient(f"cara@{domain}/pc", "pw-cara", (TUNE,))
            await ann.login(n1.c2s)
            await ben.login(n2.c2s)
            await cara.login(n3.c2s)
            await befriend(ann, ben)
            await befriend(ann, cara)
            await asyncio.sleep(1.5)  # every client's caps learned
            await ann.plugin["xep_0060"].publish(
                ann.boundjid.bare, TUNE, id="t1", payload=tune("Across"), timeout=20
            )
            for client in (ben, cara, ann):
                got = await next_matching(client.events, lambda e: titles(e) == ["Across"], 20)
                assert got["from"] == ann.boundjid.bare
            # Exactly one notification each, even with stream management on the way.
            await asyncio.sleep(1.0)
            for client in (ben, cara):
                extra = [e for e in _all(client.events) if titles(e) == ["Across"]]
                assert not extra, f"{client.boundjid} got the notification twice"
            await ben.logout()
            # A new device of ben's, on yet another node, gets the last item at login.
            ben2 = PepClient(f"ben@{domain}/tablet", "pw-ben", (TUNE,))
            await ben2.login(n3.c2s)
            last = await next_matching(ben2.events, lambda e: titles(e) == ["Across"], 20)
            assert last.xml.find("{urn:xmpp:delay}delay") is not None
            # Items read through a third node.
            items = await cara.plugin["xep_0060"].get_items(ann.boundjid.bare, TUNE, timeout=20)
            assert [i["id"] for i in items["pubsub"]["items"]] == ["t1"]
            for client in (ann, cara, ben2):
                await client.logout()

        run(scenario())
        settle(cluster)
        results = {replay(node) for node in cluster.nodes}
        assert len(results) == 1, results  # same digest at the same index on every node


def _all(queue: asyncio.Queue) -> list:  # type: ignore[type-arg]
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out
