"""Fault injection (issue 3): numbered messages flow continuously while (a) the receiver's TCP
connection is cut and (b) the node holding the receiver is killed with SIGKILL in a 3-node
cluster; the receiver resumes (XEP-0198) and gets every message exactly once, in order.

The figures (sent, delivered, lost, duplicated, kill-to-resumed-delivery time) are printed and
written to ``reliable-delivery.json`` under the test's directory.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from slixmpp.xmlstream import ET

from tests.integration.clients import Client
from tests.integration.cluster import running_cluster
from tests.integration.conftest import run
from tests.integration.cutproxy import CutProxy
from tests.integration.server import XesServer
from tests.integration.smclient import SmClient, body

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

COUNT = 300
INTERVAL = 0.01


def _seq(text: str | None) -> int | None:
    if text and text.startswith("seq "):
        return int(text[4:])
    return None


def _figures(name: str, sent: int, got: list[int], extra: dict[str, Any], where: Path) -> None:
    figures = {
        "scenario": name,
        "sent": sent,
        "delivered": len(set(got)),
        "lost": len(set(range(1, sent + 1)) - set(got)),
        "duplicated": len(got) - len(set(got)),
        **extra,
    }
    print(json.dumps(figures))
    (where / f"reliable-delivery-{name}.json").write_text(json.dumps(figures, indent=2))
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures
    assert got == list(range(1, sent + 1)), "out of order"


async def _send_numbered(sender: Client, to: str, start: threading.Event) -> int:
    errors: list[Any] = []
    sender.add_event_handler("message_error", errors.append)
    while not start.is_set():
        await asyncio.sleep(0.05)
    for i in range(1, COUNT + 1):
        msg = sender.make_message(mto=to, mbody=f"seq {i}", mtype="chat")
        msg["id"] = f"seq-{i}"
        # Receipt requests (XEP-0184) travel like any message, across nodes and resumptions.
        msg.append(ET.Element("{urn:xmpp:receipts}request"))
        msg.send()
        await asyncio.sleep(INTERVAL)
    await asyncio.sleep(1.0)
    assert not errors, [str(e) for e in errors]
    return COUNT


def test_tcp_cut_slixmpp_receiver_resumes(tmp_path: Path, shared_server: XesServer) -> None:
    """(a) slixmpp with its XEP-0198 plugin behind a proxy that cuts the connection half-open."""
    srv = shared_server
    srv.add_user("cut-rx", "pw-rx")
    srv.add_user("cut-tx", "pw-tx")
    proxy = CutProxy(srv.c2s)

    async def scenario() -> None:
        receiver = Client(f"cut-rx@{srv.domain}/phone", "pw-rx", plugins=("xep_0198",))
        sender = Client(f"cut-tx@{srv.domain}/desk", "pw-tx")
        resumed = asyncio.Event()
        receiver.add_event_handler("session_resumed", lambda _: resumed.set())
        await receiver.login(proxy.port)
        assert receiver.plugin["xep_0198"].sm_id, "stream management was not enabled"
        await sender.login(srv.c2s)
        start = threading.Event()
        got: list[int] = []
        cut_at = 100
        timing: dict[str, float] = {}

        async def receive() -> None:
            while len(set(got)) < COUNT:
                msg = await asyncio.wait_for(receiver.messages.get(), 30)
                seq = _seq(msg["body"])
                if seq is None:
                    continue
                got.append(seq)
                if "cut" in timing and "first_after" not in timing and resumed.is_set():
                    timing["first_after"] = time.monotonic()
                if len(got) == cut_at:
                    timing["cut"] = time.monotonic()
                    receiver.ended.clear()
                    proxy.cut()
                    await asyncio.wait_for(receiver.ended.wait(), 10)
                    # The client reconnects straight to the server and resumes; the server still
                    # holds the old, half-open connection and must close it.
                    receiver.connect("127.0.0.1", srv.c2s)

        start.set()
        sent, _ = await asyncio.gather(
            _send_numbered(sender, receiver.boundjid.full, start), receive()
        )
        await asyncio.sleep(1.0)
        while not receiver.messages.empty():
            seq = _seq(receiver.messages.get_nowait()["body"])
            if seq is not None:
                got.append(seq)
        assert resumed.is_set(), "the stream was not resumed"
        # The half-open connection the server still held was closed when the session resumed.
        rx_session = [
            line
            for line in srv.log_text().splitlines()
            if '"session_ended"' in line and '"cut-rx@' in line and '"conflict"' in line
        ]
        assert rx_session, "the stale connection was not closed with a conflict"
        gap = timing.get("first_after", 0) - timing["cut"]
        _figures(
            "tcp-cut-slixmpp", sent, got, {"cut_to_resumed_delivery_s": round(gap, 3)}, tmp_path
        )
        await sender.logout()
        await receiver.logout()

    try:
        run(scenario())
    finally:
        proxy.close()


def test_kill_node_raw_receiver_resumes_elsewhere(tmp_path: Path) -> None:
    """(b) kill -9 of the receiver's node in a 3-node cluster; it resumes on another node."""
    with running_cluster(tmp_path / "c") as cluster:
        leader = cluster.leader()
        followers = [n for n in cluster.nodes if n is not leader]
        home, refuge = followers
        leader.add_user("kill-rx", "pw-rx")
        leader.add_user("kill-tx", "pw-tx")
        start = threading.Event()
        got: list[int] = []
        timing: dict[str, float] = {}
        failure: list[BaseException] = []
        jid_box: list[str] = []
        kill_at = 100

        def receive() -> None:
            try:
                client = SmClient(home.c2s)
                jid, sm_id = client.login_sm(home, "kill-rx", "pw-rx", "phone")
                jid_box.append(jid)
                client.send("<presence/>")
                start.set()
                while len(got) < COUNT:
                    try:
                        elem = client.wait_for(lambda e: e.tag.endswith("}message"), 30)
                    except ConnectionError:
                        handled = client.handled
                        again = SmClient(refuge.c2s)
                        answer = again.resume_on(refuge, "kill-rx", "pw-rx", sm_id, handled)
                        assert answer.tag.endswith("}resumed"), answer.tag
                        timing["resumed"] = time.monotonic()
                        again.handled = handled
                        client = again
                        continue
                    seq = _seq(body(elem))
                    if seq is None:
                        continue
                    assert elem.find("{urn:xmpp:receipts}request") is not None
                    got.append(seq)
                    if "resumed" in timing and "first_after" not in timing:
                        timing["first_after"] = time.monotonic()
                    if len(got) == kill_at:
                        timing["kill"] = time.monotonic()
                        cluster.kill(home)  # returns once the process is reaped
                        timing["killed"] = time.monotonic()
                client.pump(1.0)
                got.extend(s for m in client.messages() if (s := _seq(body(m))) is not None)
                client.close()
            except BaseException as exc:
                failure.append(exc)
                start.set()

        thread = threading.Thread(target=receive, daemon=True)
        thread.start()

        async def scenario() -> int:
            sender = Client(f"kill-tx@{cluster.domain}/desk", "pw-tx")
            await sender.login(leader.c2s)
            while not jid_box and not failure:
                await asyncio.sleep(0.05)
            if failure:
                return 0
            sent = await _send_numbered(sender, jid_box[0], start)
            await sender.logout()
            return sent

        sent = run(scenario())
        thread.join(60)
        if failure:
            raise failure[0]
        extra = {
            "kill_to_resumed_s": round(timing["resumed"] - timing["kill"], 3),
            "kill_to_resumed_delivery_s": round(timing["first_after"] - timing["kill"], 3),
            "reaped_to_resumed_s": round(timing["resumed"] - timing["killed"], 3),
        }
        _figures("kill-9-raw", sent, got, extra, tmp_path)
