"""XEP-0198 resumption on a node without a majority (fault campaign finding, seed 3).

A client acknowledged a message to a node that had just been cut off; the node could not record
the acknowledgement. The client then tried to resume there and was told
``<failed><item-not-found/></failed>``, although the session was alive: so it bound a new
session, the old one stayed detached with the unrecorded acknowledgement, and at its end the
message was re-routed to the device's offline storage and arrived twice. The node now drops the
connection instead, and the client resumes on a node of the majority with nothing resent.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.cluster import XesCluster
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
