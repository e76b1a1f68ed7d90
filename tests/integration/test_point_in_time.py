"""Point-in-time replay (issue 17) on data written by real ``xes serve`` processes.

A room as its occupants saw it at three instants (who was in it, its subject) is what
``xes replay --until TIME --out DIR`` rebuilds and ``xes muc show --store DIR`` reads back; on
three nodes, ``xes replay --until INDEX`` (and ``--until TIME``) gives the same index and digest
on every node.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import time
from pathlib import Path

import pytest

from tests.integration.clients import Client
from tests.integration.cluster import XesCluster
from tests.integration.conftest import run, running_server
from tests.integration.mucclient import (
    MucClient,
    create,
    join,
    leave,
    message_from,
    online,
    presence_from,
    send_message,
    subject_of,
)
from tests.integration.server import XesServer
from tests.integration.test_cluster import chat, settle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

PASSWORD = "pit-secret"


def replay_until(node: XesServer, until: str, out: Path | None = None) -> dict[str, str]:
    """``xes replay --until`` on ``node``: its printed ``key: value`` lines."""
    args = ["replay", "--until", until] + (["--out", str(out)] if out else [])
    lines = node.xes(*args).stdout.splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, tz=datetime.UTC).isoformat(timespec="milliseconds")


async def set_subject(alice: MucClient, room: str, subject: str) -> None:
    send_message(alice, room, subject=subject)
    got = await alice.inbox.take(message_from(f"{room}/Alice"))
    assert subject_of(got) == subject


def test_a_room_at_three_instants(tmp_path: Path) -> None:
    seen: list[tuple[float, list[str], str]] = []
    """(instant, occupants' nicks, subject) as a client saw the room then."""

    with running_server(tmp_path / "node") as srv:
        for user in ("alice", "bob", "carol", "dave"):
            srv.add_user(user, PASSWORD)
        room = f"audit@conference.{srv.domain}"

        def instant(nicks: list[str], subject: str) -> None:
            # Everything committed so far was proposed before now by the server's clock; what
            # comes next is proposed after a pause, so the instant falls between the two.
            seen.append((time.time(), sorted(nicks), subject))
            time.sleep(0.05)

        async def scenario() -> None:
            async with online(srv, PASSWORD, "alice/a", "bob/b", "carol/c", "dave/d") as (
                alice,
                bob,
                carol,
                dave,
            ):
                a = await create(alice, room, "Alice")  # an instant room
                await set_subject(alice, room, "Monday")
                instant([*a.nicks, "Alice"], "Monday")

                await join(bob, room, "Bob")
                await set_subject(alice, room, "Tuesday")
                c = await join(carol, room, "Carol")
                instant([*c.nicks, "Carol"], subject_of(c.subject) or "")

                await leave(bob, room, "Bob")
                await alice.inbox.take(presence_from(f"{room}/Bob", unavailable=True))
                await set_subject(alice, room, "Wednesday")
                d = await join(dave, room, "Dave")
                instant([*d.nicks, "Dave"], subject_of(d.subject) or "")

                await leave(carol, room, "Carol")  # after the last instant: left out
                await set_subject(alice, room, "Thursday")

        run(scenario())
        assert [s[1:] for s in seen] == [
            (["Alice"], "Monday"),
            (["Alice", "Bob", "Carol"], "Tuesday"),
            (["Alice", "Carol", "Dave"], "Wednesday"),
        ]
        for n, (when, nicks, subject) in enumerate(seen):
            out = tmp_path / f"at{n}"
            # The time as ISO 8601 and as milliseconds since the epoch: the same point.
            printed = replay_until(srv, iso(when), out)
            assert (
                replay_until(srv, str(int(when * 1000)))["applied index"]
                == printed["applied index"]
            )
            shown = json.loads(srv.xes("muc", "show", room, "--store", str(out)).stdout)
            assert sorted(o["nick"] for o in shown["occupants"]) == nicks, (n, shown)
            assert shown["subject"] == subject, (n, shown)
        # The room was temporary: it ended when its last occupant logged out. The live store
        # no longer knows it; only the past states do.
        now = srv.xes("muc", "show", room, check=False)
        assert now.returncode != 0 and "no such room" in now.stderr, now


@pytest.mark.slow
def test_replay_until_gives_equal_digests_on_every_node(tmp_path: Path) -> None:
    cluster = XesCluster(tmp_path)
    try:
        cluster.start()
        n1 = cluster.nodes[0]
        for i in range(3):
            n1.add_user(f"u{i + 1}", f"pw{i + 1}")
        marks: list[float] = []

        async def scenario() -> None:
            clients = [Client(f"u{i + 1}@xes.test/n{i + 1}", f"pw{i + 1}") for i in range(3)]
            nodes = cluster.nodes
            await asyncio.gather(*(c.login(n.c2s) for c, n in zip(clients, nodes, strict=True)))
            for round_ in range(3):
                for a, b in itertools.permutations(clients, 2):
                    await chat(a, b, f"{round_}: {a.boundjid.resource} to {b.boundjid.resource}")
                marks.append(time.time())
                await asyncio.sleep(0.05)
            for client in clients:
                client.disconnect()
            await asyncio.sleep(0.5)

        run(scenario())
        settle(cluster)
        full = [replay_until(node, "1") for node in cluster.nodes]  # the smallest point
        assert len({f["rebuilt digest"] for f in full}) == 1, full
        status = cluster.status(n1)["local"]
        applied = int(status["applied_index"])
        for index in (applied // 3, 2 * applied // 3, applied):
            results = [replay_until(node, str(index)) for node in cluster.nodes]
            assert {r["applied index"] for r in results} == {str(index)}
            assert len({r["rebuilt digest"] for r in results}) == 1, (index, results)
        for when in marks:
            results = [replay_until(node, iso(when)) for node in cluster.nodes]
            assert len({(r["applied index"], r["rebuilt digest"]) for r in results}) == 1, results
        # Up to the last index, the replay is the live state (unless something was committed
        # since: then the full replay is past it).
        last = replay_until(n1, str(applied))
        whole = n1.xes("replay").stdout
        if f"applied index: {applied}\n" in whole:
            assert f"rebuilt digest: {last['rebuilt digest']}" in whole, whole
    finally:
        cluster.stop()
