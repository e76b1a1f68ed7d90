"""XEP-0198 resumption on a node without a majority (fault campaign finding, seed 3).

A client acknowledged a message to a node that had just been cut off; the node could not record
the acknowledgement. The client then tried to resume there and was told
``<failed><item-not-found/></failed>``, although the session was alive: so it bound a new
session, the old one stayed detached with the unrecorded acknowledgement, and at its end the
message was re-routed to the device's offline storage and arrived twice. The node now drops the
connection instead, and the client resumes on a node of the majority with nothing resent.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.cluster import XesCluster
from tests.integration.smclient import SM, SmClient, body
from tests.integration.wanproxy import WanEmulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_resume_on_a_cut_off_node_is_deferred_not_refused(tmp_path: Path) -> None:
    with WanEmulator(seed=3) as wan:
        cluster = XesCluster(
            tmp_path, wan=wan, extra="node_down_after = 30.0\ncommit_timeout = 2.0\n"
        )
        try:
            cluster.start()
            leader = cluster.leader()
            cut_off = next(n for n in cluster.nodes if n is not leader)
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
        finally:
            cluster.stop()
