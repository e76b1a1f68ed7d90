"""XEP-0198 resumption on a node without a majority (fault campaign finding, seed 3).

A client acknowledged a message to a node that had just been cut off; the node could not record
the acknowledgement. The client then tried to resume there and was told
``<failed><item-not-found/></failed>``, although the session was alive: so it bound a new
session, the old one stayed detached with the unrecorded acknowledgement, and at its end the
message was re-routed to the device's offline storage and arrived twice. The node now drops the
connection instead, and the client resumes on a node of the majority with nothing resent.
"""

from __future__ import annotations

import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import XesCluster, wait_until
from tests.integration.rawclient import RawClient
from tests.integration.server import XesServer
from tests.integration.smclient import SM, SmClient, body
from tests.integration.wanproxy import WanEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@contextmanager
def _cluster_and_follower(
    tmp_path: Path, seed: int, extra: str
) -> Iterator[tuple[XesCluster, WanEmulator, XesServer, XesServer]]:
    """A running 3-node cluster behind the WAN emulator: (cluster, wan, leader, a follower)."""
    with WanEmulator(seed=seed) as wan:
        cluster = XesCluster(tmp_path, wan=wan, extra=extra)
        try:
            cluster.start()
            leader = cluster.leader()
            yield cluster, wan, leader, next(n for n in cluster.nodes if n is not leader)
        finally:
            cluster.stop()


def test_resume_on_a_cut_off_node_is_deferred_not_refused(tmp_path: Path) -> None:
    settings = "node_down_after = 30.0\ncommit_timeout = 2.0\n"
    with _cluster_and_follower(tmp_path, 3, settings) as (cluster, wan, leader, cut_off):
        leader.add_user("rpa", "pw-a")
        leader.add_user("rpb", "pw-b")
        rx = SmClient(cut_off.c2s)
        rx.auto_ack = False
        _, sm_id = rx.login_sm(cut_off, "rpa", "pw-a", "phone")
        rx.send("<presence/>")
        tx = SmClient(leader.c2s)
        tx.login_parsed(leader, "rpb", "pw-b", "desk")
        tx.send("<message to='rpa@xes.test' type='chat'><body>once</body></message>")
        rx.wait_for(lambda e: body(e) == "once", 15)
        # Cut off, then acknowledge: the node hears the ack but cannot record it.
        wan.cut(cluster.site(cluster.nodes.index(cut_off)))
        rx.ack()
        time.sleep(0.5)
        handled = rx.handled
        rx.cut()
        again = SmClient(cut_off.c2s, timeout=15)
        try:
            answer = again.resume_on(cut_off, "rpa", "pw-a", sm_id, handled)
        except ConnectionError:
            answer = None  # dropped: the client keeps its state and tries elsewhere
        assert answer is None or answer.tag != f"{{{SM}}}failed", "told the session is gone"
        again.close()
        # On the majority side the session resumes, and what was acknowledged stays so.
        moved = SmClient(leader.c2s)
        answer = moved.resume_on(leader, "rpa", "pw-a", sm_id, handled)
        assert answer.tag == f"{{{SM}}}resumed", answer
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and moved.pump(0.3):
            pass
        assert [body(m) for m in moved.messages()].count("once") == 0
        wan.heal_all()
        moved.close()
        tx.close()


def test_resume_from_a_view_behind_the_log_takes_over_the_detached_session(
    tmp_path: Path,
) -> None:
    """Fault campaign seed 2026: the node a client resumed on had not yet applied the detach
    the majority recorded while it was cut off; its resume (epoch 1) met the detach (epoch 1)
    and was refused as a concurrent resume, answered ``item-not-found``: the client started a
    new session and messages of the stranded one came twice. The node now re-reads and takes
    the detached session over."""
    settings = "node_down_after = 3.0\ncommit_timeout = 2.5\n"
    with _cluster_and_follower(tmp_path, 4, settings) as (cluster, wan, leader, cut_off):
        site = cluster.site(cluster.nodes.index(cut_off))
        leader.add_user("rpc", "pw-c")
        rx = SmClient(cut_off.c2s)
        _, sm_id = rx.login_sm(cut_off, "rpc", "pw-c", "phone")
        rx.send("<presence/>")
        rx.pump(1.0)
        wan.cut(site)
        # The majority declares the node down and detaches the session (a new epoch); the
        # cut-off node drops its client (reset) and cannot record anything.
        time.sleep(7.0)
        handled = rx.handled
        rx.cut()
        again = SmClient(cut_off.c2s, timeout=20)
        answer: list[object] = []

        def resume() -> None:
            try:
                answer.append(again.resume_on(cut_off, "rpc", "pw-c", sm_id, handled))
            except (ConnectionError, OSError) as exc:
                answer.append(exc)

        worker = threading.Thread(target=resume)
        worker.start()
        time.sleep(1.0)  # the resume is proposed from the stale view, then the node heals
        wan.heal_all()
        worker.join(30)
        got = answer[0] if answer else None
        assert not (isinstance(got, ET.Element) and got.tag == f"{{{SM}}}failed"), (
            "told the session is gone"
        )
        again.close()
        # Whatever that connection became, the session is still there to resume.
        moved = SmClient(leader.c2s)
        final = moved.resume_on(leader, "rpc", "pw-c", sm_id, handled)
        assert final.tag == f"{{{SM}}}resumed", ET.tostring(final)
        moved.close()


def _events(node: XesServer) -> list[dict[str, Any]]:
    return [json.loads(line)["event"] for line in node.xes("events", "dump").stdout.splitlines()]


def _count(node: XesServer, kind: str, session: str) -> int:
    """How many events of ``kind`` for ``session`` ``node`` has applied."""
    return sum(
        1 for e in _events(node) if e["type"] == kind and e["data"].get("session") == session
    )


def _session_of(node: XesServer, jid: str) -> str | None:
    for event in _events(node):
        if event["type"] == "session.bound" and event["data"]["jid"] == jid:
            return str(event["data"]["session"])
    return None


def test_a_session_end_the_log_could_not_take_is_recorded_once_it_can(tmp_path: Path) -> None:
    """Finding 9 (fault campaign seed 7): a connection that closed while its node had no
    majority gave up recording its end after its close timeout; unless that proposal happened
    to commit later, the session stayed held by the live node with no connection: a ghost,
    available to its contacts, with an outbox nobody read. The same for a bind that committed
    after its connection had given up on it. The node's sweep now records the end (for a
    resumable session, the detach) once the log takes writes again, exactly once."""
    settings = "node_down_after = 40.0\ncommit_timeout = 2.0\n"
    with _cluster_and_follower(tmp_path, 5, settings) as (cluster, wan, leader, cut_off):
        site = cluster.site(cluster.nodes.index(cut_off))
        for user in ("swa", "swb", "swc"):
            leader.add_user(user, f"pw-{user}")
        plain = SmClient(cut_off.c2s)
        plain_jid = plain.login_parsed(cut_off, "swa", "pw-swa", "desk", presence=True)
        managed = SmClient(cut_off.c2s)
        managed_jid, sm_id = managed.login_sm(cut_off, "swb", "pw-swb", "phone")
        managed.send("<presence/>")
        plain_session = wait_until(lambda: _session_of(leader, plain_jid), 20)
        managed_session = _session_of(leader, managed_jid)
        assert managed_session is not None
        wan.cut(site)
        # A bind the log cannot take in time is refused; the proposal may commit later.
        late = RawClient(cut_off.c2s, timeout=15)
        late.starttls(cut_off.domain)
        assert b"<success" in late.scram_login(cut_off.domain, "swc", "pw-swc")
        late.buffer = b""
        late.open_stream(cut_off.domain)
        late.send(
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            "<resource>late</resource></bind></iq>"
        )
        assert b"resource-constraint" in late.recv_until(b"</iq>", timeout=15)
        late.close()
        plain.send("</stream:stream>")  # a goodbye: the session ends
        plain.close()
        handled = managed.handled
        managed.cut()  # a lost connection: the resumable session waits for its client
        wait_until(lambda: cut_off.log_text().count("session_end_deferred") >= 2, 30)
        wan.heal_all()
        # Within a sweep (10 s) of the log taking writes, and past the grace of a bind for the
        # session nobody holds: each recorded once, however many attempts were made.
        late_session = wait_until(lambda: _session_of(leader, "swc@xes.test/late"), 30, 1.0)
        wait_until(lambda: _count(leader, "session.ended", late_session), 60, interval=1.0)
        assert _count(leader, "session.ended", plain_session) == 1
        assert _count(leader, "sm.detached", managed_session) == 1
        assert _count(leader, "session.ended", managed_session) == 0
        assert "unheld_session_ended" in cut_off.log_text()
        # The detached session is the client's to resume, on any node.
        again = SmClient(leader.c2s)
        answer = again.resume_on(leader, "swb", "pw-swb", sm_id, handled)
        assert answer.tag == f"{{{SM}}}resumed", ET.tostring(answer)
        again.close()
