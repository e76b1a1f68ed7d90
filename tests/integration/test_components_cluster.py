"""An external component in a 3-node cluster (ADR 0018): connected to one node, reached from
another, refused on a third while held, and taken over by a survivor when its node is killed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.clients import Client, next_matching
from tests.integration.componentclient import Component
from tests.integration.conftest import run
from tests.integration.server import free_port
from tests.integration.test_cluster import XesCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

PUSH, SECRET = "push.xes.test", "cluster-component-secret"


async def echo_round(client: Client, body: str, tries: int = 1) -> None:
    """The component echoes ``body``. ``tries``: a node that has not yet applied a takeover
    answers service-unavailable for that moment (the component is held by no node it knows
    of), and the client sends again, as a real one would."""
    for _ in range(tries):
        client.send_message(mto=f"app@{PUSH}", mbody=body, mtype="chat")
        reply = await next_matching(
            client.messages,
            lambda m: (
                m["body"] == f"echo: {body}"
                or (m["type"] == "error" and m["from"].bare == f"app@{PUSH}")
            ),
            20,
        )
        assert reply["from"].bare == f"app@{PUSH}"
        if reply["type"] != "error":
            return
        assert reply["error"]["condition"] == "service-unavailable", reply
        await asyncio.sleep(0.5)
    raise AssertionError(f"no echo of {body!r} in {tries} tries")


async def attach_until_accepted(
    port: int, deadline: float, make: Callable[[], Component] = lambda: Component(PUSH, SECRET)
) -> tuple[Component, int]:
    """Reconnect as a real component does until a node takes it; also how many were refused."""
    refused = 0
    while time.monotonic() < deadline:
        comp = make()
        if await comp.attach(port, timeout=10):
            return comp, refused
        refused += 1
        await asyncio.sleep(0.5)
    raise AssertionError(f"no node took the component ({refused} refusals)")


def test_component_reached_across_nodes_and_taken_over_after_a_kill(tmp_path: Path) -> None:
    cluster = XesCluster(
        tmp_path,
        extra=(
            "node_down_after = 3.0\ncommit_timeout = 2.0\n"
            f'[components."{PUSH}"]\nsecret = "{SECRET}"\n'
        ),
    )
    for node in cluster.nodes:
        node.component = free_port()
        node.write_config()
    n1, n2, n3 = cluster.nodes
    try:
        cluster.start()
        n2.add_user("u2", "pw2")

        async def scenario() -> None:
            comp = Component(PUSH, SECRET)
            assert await comp.attach(n1.component)  # type: ignore[arg-type]
            user = Client("u2@xes.test/n2", "pw2")
            await user.login(n2.c2s)
            try:
                await echo_round(user, "via the log")
                # iq: client on n2 -> component on n1 -> result back to n2.
                await user.plugin["xep_0199"].ping(jid=PUSH, timeout=10)
                # Held on n1: a second connection on n3 is refused.
                second = Component(PUSH, SECRET)
                assert not await second.attach(n3.component)  # type: ignore[arg-type]
                assert second.error == "conflict"

                killed = time.monotonic()
                cluster.kill(n1)
                taken, refused = await attach_until_accepted(
                    n3.component,  # type: ignore[arg-type]
                    killed + 60,
                )
                took = time.monotonic() - killed
                assert refused >= 1  # held by the dead node until it was declared down
                print(f"component taken over by n3 {took:.1f} s after the kill ({refused} refused)")
                await echo_round(user, "after the failover", tries=20)
                await user.plugin["xep_0199"].ping(jid=PUSH, timeout=10)
                await taken.detach()
            finally:
                await user.logout()

        run(scenario())
    finally:
        cluster.stop()
