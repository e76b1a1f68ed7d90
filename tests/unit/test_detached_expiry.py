"""Detached XEP-0198 sessions expire by the leader's monotonic clock, not by wall clocks.

Fault campaign, ``clock_step``: the ``deadline`` of ``sm.detached`` is the detaching node's
wall clock plus the timeout, and the leader compared it with its own wall clock. A node whose
clock was stepped back by minutes recorded deadlines already past, so the leader ended its
clients' sessions the moment they were detached, while the clients were resuming; a leader
stepped forward did the same to every detached session.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.unit.projections.test_stream_mgmt import setup
from xes.cluster_watch import DetachedClock
from xes.events.catalog import SmDetached, SmResumed
from xes.projections import stream_mgmt as sm

TIMEOUT = 300  # setup() enables s1 with a 300 s resumption timeout


def test_a_deadline_from_a_clock_stepped_back_does_not_end_the_session_at_once(
    tmp_path: Path,
) -> None:
    store, apply = setup(tmp_path)
    real_now_ms = int(time.time() * 1000)
    behind_ms = 600 * 1000  # the detaching node's wall clock, ten minutes slow
    apply(SmDetached("s1", real_now_ms - behind_ms + TIMEOUT * 1000, "closed"))
    with store.env.begin() as txn:
        # The old rule: due at once on the leader's (right) wall clock.
        assert sm.detached_due(store, txn, real_now_ms) == ["s1"]
        detached = sm.detached(store, txn)
    assert detached == [("s1", 1, TIMEOUT)]
    clock = DetachedClock()
    t0 = 5000.0  # monotonic seconds
    assert clock.due(detached, t0) == []
    assert clock.due(detached, t0 + TIMEOUT - 1) == []
    assert clock.due(detached, t0 + TIMEOUT) == ["s1"]


def test_a_resumed_and_detached_again_session_counts_from_its_new_detach(tmp_path: Path) -> None:
    store, apply = setup(tmp_path)
    apply(SmDetached("s1", 1, "closed"))
    clock = DetachedClock()
    with store.env.begin() as txn:
        assert clock.due(sm.detached(store, txn), 0.0) == []
    apply(SmResumed("s1", "n2", "b2", 0, 2))
    with store.env.begin() as txn:
        assert sm.detached(store, txn) == []
        assert clock.due(sm.detached(store, txn), 100.0) == []
    apply(SmDetached("s1", 1, "closed"))
    with store.env.begin() as txn:
        again = sm.detached(store, txn)
    assert again == [("s1", 3, TIMEOUT)]
    assert clock.due(again, 200.0) == []
    assert clock.due(again, 200.0 + TIMEOUT - 1) == []  # not from the first detach at 0
    assert clock.due(again, 200.0 + TIMEOUT) == ["s1"]


def test_a_new_term_counts_from_its_own_start() -> None:
    clock = DetachedClock()
    assert clock.due([("s1", 1, 30)], 0.0) == []
    clock.reset()  # leadership lost, then won again later
    assert clock.due([("s1", 1, 30)], 100.0) == []
    assert clock.due([("s1", 1, 30)], 129.0) == []
    assert clock.due([("s1", 1, 30)], 130.0) == ["s1"]
