import collections, time
import pytest
from raftkit import Results, submit_wait
from xes.eventlog import raft as raftmod
from xes.eventlog.raft import Fixes, Outcome

@pytest.mark.parametrize("fixed", [True, False])
def test_dups(cluster, monkeypatch, fixed):
    sent = collections.Counter()
    orig = raftmod._Transport.send
    def send(self, node, message):
        if isinstance(message, dict) and message.get("type") == "append_entries":
            for e in message.get("entries", []):
                sent[(self._selfNode.address, node.address, e[1])] += 1
        return orig(self, node, message)
    monkeypatch.setattr(raftmod._Transport, "send", send)
    fixes = Fixes(monotonic_next_index=fixed)
    for a in cluster.allocate(3): cluster.start(a, fixes=fixes)
    leader = cluster.wait_ready()
    res = Results()
    t = time.monotonic()
    for i in range(300):
        leader.raft.submit(b"c%d" % i, res)
    assert res.wait(300, 20)
    print("burst", time.monotonic() - t, collections.Counter(res.outcomes()))
    assert cluster.converged(10)
    dups = sum(c - 1 for c in sent.values())
    trunc = {n.addr: n.raft.status()["truncated_entries"] for n in cluster.nodes.values()}
    print("fixed", fixed, "dups", dups, "total", sum(sent.values()), "trunc", trunc)
