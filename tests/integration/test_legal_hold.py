"""Legal holds on a real server (issue 17, item 5; ADR 0024): ``xes hold`` suspends archive
retention for what it covers, refuses the held account's removal, and is itself in the audited
history; lifting it lets retention take what it kept."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from tests.integration.conftest import run
from tests.integration.server import XesServer
from tests.integration.test_archive import (
    accounts,
    body_of,
    chat,
    client,
    mam,
    received,
    started_with_short_retention,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def _bodies_when(c, done) -> list[str]:  # type: ignore[no-untyped-def]
    """``c``'s archive once ``done(bodies)`` holds (retention runs every 0.5 s), or as it is
    after 10 s."""
    bodies: list[str] = []
    for _ in range(40):
        _, results = await mam(c)
        bodies = [body_of(m) for m in results]
        if done(bodies):
            break
        await asyncio.sleep(0.25)
    return bodies


def test_a_held_conversation_outlives_retention_until_the_hold_is_lifted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = started_with_short_retention(tmp_path)
    try:
        d = accounts(srv, "ann", "bob", "cid")
        out = srv.xes(
            "hold", "add", "--conversation", f"bob@{d}", f"ann@{d}", "--reason", "case 4711"
        ).stdout
        found = re.search(r"hold (h-[0-9a-f]+) placed on conversation:ann@\S+ bob@\S+", out)
        assert found, out
        hold = found.group(1)

        async def while_held() -> None:
            ann, bob, cid = (client(srv, u, "pc") for u in ("ann", "bob", "cid"))
            for c in (ann, bob, cid):
                await c.login(srv.c2s)
            await chat(bob, f"ann@{d}", ["held 0", "held 1"])
            await chat(cid, f"ann@{d}", ["free 0"])
            await received(ann, 3)
            kept = await _bodies_when(ann, lambda b: "free 0" not in b)
            assert kept == ["held 0", "held 1"], "retention took the rest, not the held part"
            assert await _bodies_when(cid, lambda b: not b) == []
            assert await _bodies_when(bob, lambda b: False) == ["held 0", "held 1"]
            for c in (ann, bob, cid):
                await c.logout()

        run(while_held())
        refused = srv.xes("user", "remove", f"ann@{d}", check=False)
        assert refused.returncode != 0 and f"legal hold {hold}" in refused.stderr
        listed = json.loads(srv.xes("hold", "list", "--json").stdout)
        assert [(h["hold"], h["reason"]) for h in listed] == [(hold, "case 4711")]
        assert srv.xes("hold", "remove", hold, "--reason", "case closed").returncode == 0
        assert "no holds in force" in srv.xes("hold", "list").stdout

        async def after_lift() -> None:
            ann = client(srv, "ann", "pc")
            await ann.login(srv.c2s)
            assert await _bodies_when(ann, lambda b: not b) == []
            await ann.logout()

        run(after_lift())
        dump = [json.loads(line)["event"] for line in srv.xes("events", "dump").stdout.splitlines()]
        holds = [e for e in dump if e["type"].startswith("hold.")]
        assert [(e["type"], e["data"]["hold"]) for e in holds] == [
            ("hold.placed", hold),
            ("hold.lifted", hold),
        ]
        assert holds[0]["data"]["reason"] == "case 4711"
        assert srv.xes("audit", "verify").returncode == 0
        assert srv.xes("user", "remove", f"ann@{d}").returncode == 0
    finally:
        srv.stop()


def test_a_hold_placed_while_the_node_is_stopped(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = XesServer(tmp_path / "node")
    srv.start()
    d = accounts(srv, "dan")
    srv.stop()
    out = srv.xes("hold", "add", "--user", f"dan@{d}", "--reason", "subpoena").stdout
    assert "placed on user:dan@" in out
    bad = srv.xes("hold", "add", "--user", "dan@elsewhere.example", "--reason", "x", check=False)
    assert bad.returncode != 0 and "not" in bad.stderr
    srv.start()
    try:
        listed = json.loads(srv.xes("hold", "list", "--json").stdout)
        assert [h["target"] for h in listed] == [f"user:dan@{d}"]
        refused = srv.xes("user", "remove", f"dan@{d}", check=False)
        assert refused.returncode != 0 and "legal hold" in refused.stderr
    finally:
        srv.stop()
