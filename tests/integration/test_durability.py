"""kill -9 and restart: nothing committed is lost, projections equal a replay, no ghosts."""

from __future__ import annotations

import signal

import pytest

from tests.integration.clients import Client, next_matching
from tests.integration.clients import drain as _drain
from tests.integration.conftest import run
from tests.integration.server import XesServer
from tests.integration.test_chat import befriend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def digests(srv: XesServer) -> tuple[str, str]:
    out = srv.xes("replay").stdout
    assert "OK: digests are equal" in out, out
    rebuilt = out.split("rebuilt digest:", 1)[1].split()[0]
    live = out.split("live digest:", 1)[1].split()[0]
    return rebuilt, live


def test_kill_9_and_restart_keeps_accounts_rosters_and_ends_ghosts(server: XesServer) -> None:
    srv = server
    srv.add_user("alice", "pw-a")
    srv.add_user("bob", "pw-b")
    srv.add_user("carol", "pw-c")

    async def before_crash() -> None:
        alice = Client(f"alice@{srv.domain}/one", "pw-a")
        bob = Client(f"bob@{srv.domain}/two", "pw-b")
        await alice.login(srv.c2s)
        await bob.login(srv.c2s)
        await befriend(alice, bob)
        await next_matching(
            alice.presences, lambda p: p["from"] == bob.boundjid and p["type"] == "available"
        )
        # Leave both connected: the crash takes their sessions with it.

    run(before_crash())
    _, before_live = digests(srv)
    assert srv.stop(signal.SIGKILL) == -signal.SIGKILL

    srv.start()
    accounts = srv.xes("user", "list").stdout.split()
    assert accounts == [f"alice@{srv.domain}", f"bob@{srv.domain}", f"carol@{srv.domain}"]

    async def after_restart() -> None:
        alice = Client(f"alice@{srv.domain}/one", "pw-a")
        await alice.login(srv.c2s)
        roster = await alice.get_roster()
        item = roster["roster"]["items"][f"bob@{srv.domain}"]
        assert item["subscription"] == "both"
        # Bob's session died with the old process: it must not look online (no ghost).
        await __import__("asyncio").sleep(1.0)
        online = [
            p
            for p in _drain(alice.presences)
            if p["from"].bare == f"bob@{srv.domain}" and p["type"] == "available"
        ]
        assert online == []
        bob = Client(f"bob@{srv.domain}/two", "pw-b")
        await bob.login(srv.c2s)
        await next_matching(
            alice.presences, lambda p: p["from"] == bob.boundjid and p["type"] == "available"
        )
        bob.send_message(mto=alice.boundjid.bare, mbody="after the crash", mtype="chat")
        await next_matching(alice.messages, lambda m: m["body"] == "after the crash")
        await alice.logout()
        await bob.logout()

    run(after_restart())
    rebuilt, live = digests(srv)
    assert rebuilt == live
    assert live != before_live  # the restart and the new sessions were recorded as events


@pytest.mark.parametrize("whole_group", [False, True], ids=["main-process", "process-group"])
def test_sigterm_is_graceful_and_contacts_see_unavailable(
    server: XesServer, whole_group: bool
) -> None:
    """SIGTERM to the main process, or to the whole group at once (systemd's default)."""
    srv = server
    srv.add_user("gina", "pw-g")
    srv.add_user("hank", "pw-h")

    async def scenario() -> None:
        gina = Client(f"gina@{srv.domain}/g", "pw-g")
        hank = Client(f"hank@{srv.domain}/h", "pw-h")
        await gina.login(srv.c2s)
        await hank.login(srv.c2s)
        await befriend(gina, hank)
        await next_matching(
            gina.presences, lambda p: p["from"] == hank.boundjid and p["type"] == "available"
        )

    run(scenario())
    assert srv.stop(signal.SIGTERM, group=whole_group) == 0
    log = srv.log_text()
    assert log.count('"reason": "system-shutdown"') == 2, log[-2000:]
    # After a clean stop, no session remains recorded for this node.
    out = srv.xes("events", "dump").stdout
    bound = out.count('"type":"session.bound"')
    ended = out.count('"type":"session.ended"')
    assert bound == ended == 2, out[-2000:]
    rebuilt, live = digests(srv)
    assert rebuilt == live
