import collections, threading, time
import pytest
from raftkit import Results, submit_wait, wait_until
from xes.eventlog import raft as raftmod
from xes.eventlog.raft import Fixes, Outcome

class Partition:
    def __init__(self, monkeypatch):
        self.isolated = set()
        send, recv = raftmod._Transport.send, raftmod._Transport._onMessageReceived
        part = self
        def psend(tr, node, message):
            if tr._selfNode.address in part.isolated or node.address in part.isolated:
                return False
            return send(tr, node, message)
        def precv(tr, node, message):
            if tr._selfNode.address in part.isolated or node.address in part.isolated:
                return None
            return recv(tr, node, message)
        monkeypatch.setattr(raftmod._Transport, "send", psend)
        monkeypatch.setattr(raftmod._Transport, "_onMessageReceived", precv)

@pytest.mark.parametrize("fixed", [True, False])
def test_depose(cluster, monkeypatch, fixed):
    part = Partition(monkeypatch)
    fixes = Fixes(reset_only_backwards=fixed)
    for a in cluster.allocate(3): cluster.start(a, fixes=fixes)
    old = cluster.wait_ready()
    for i in range(20): assert submit_wait(old.raft, b"a%d" % i).outcome is Outcome.APPLIED
    part.isolated.add(old.addr)
    res_old = Results()
    for i in range(5): old.raft.submit(b"lost%d" % i, res_old)
    others = [n for n in cluster.nodes.values() if n is not old]
    def new_leader():
        ls = [n for n in others if n.raft.is_leader()]
        return ls[0] if ls else None
    assert wait_until(lambda: new_leader() is not None, 10)
    new = new_leader()
    t0 = time.monotonic()
    stop = threading.Event()
    res_new = Results()
    def load():
        i = 0
        while not stop.is_set():
            for n in others:
                n.raft.submit(b"n%d" % i, res_new); i += 1
            time.sleep(0.002)
    th = threading.Thread(target=load); th.start()
    time.sleep(0.5)
    target = new.sm.last_applied()
    part.isolated.clear()
    t = time.monotonic()
    ok = wait_until(lambda: old.sm.last_applied() >= target, 8)
    print("fixed", fixed, "caught up", ok, time.monotonic() - t, "target", target, "old", old.sm.last_applied(), old.raft.status())
    stop.set(); th.join()
    print(collections.Counter(res_new.outcomes()), res_old.items)
    if ok:
        assert cluster.converged(10)
