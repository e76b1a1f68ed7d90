"""The audit trail on a real 3-node cluster (issue 17, ADR 0021).

Three ``xes serve`` processes with ``[audit]`` set to checkpoint every 20 events or 2 s; slixmpp
clients chat across nodes; then ``xes audit verify`` passes on every running node, an export
verifies offline and fails after an edit, and every kind of tampering with a copy of a stopped
node's data directory is reported at the index it was done at.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import audit_tamper as tamper
from tests.integration.clients import Client, next_matching
from tests.integration.cluster import XesCluster, wait_until
from tests.integration.conftest import run
from tests.integration.server import XesServer
from tests.integration.test_cluster import replay, settle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

AUDIT = "[audit]\ncheckpoint_every = 20\ncheckpoint_interval = 2.0\n"
MESSAGES = 40


def verify(node: XesServer, *args: str) -> subprocess.CompletedProcess[str]:
    return node.xes("audit", "verify", *args, check=False)


def journal(node: XesServer) -> list[dict]:  # type: ignore[type-arg]
    out = node.xes("events", "dump").stdout
    return [json.loads(line) for line in out.splitlines()]


def vouched_by_all(node: XesServer) -> bool:
    out = verify(node).stdout
    return "signed by n1, n2, n3" in out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesCluster]:
    cluster = XesCluster(tmp_path_factory.mktemp("audit"), extra=AUDIT)
    try:
        cluster.start()
        n1 = cluster.nodes[0]
        n1.add_user("alice", "alice-pw")
        n1.add_user("bob", "bob-pw")

        async def chat() -> None:
            alice = Client("alice@xes.test/a", "alice-pw")
            bob = Client("bob@xes.test/b", "bob-pw")
            await alice.login(cluster.nodes[0].c2s)
            await bob.login(cluster.nodes[2].c2s)
            for i in range(MESSAGES):
                alice.send_message(mto="bob@xes.test", mbody=f"audit {i}", mtype="chat")
                await next_matching(bob.messages, lambda m, i=i: m["body"] == f"audit {i}", 20)
            await alice.logout()
            await bob.logout()

        run(chat())
        # Checkpoints come within 2 s of the last event; each node vouches within a second.
        wait_until(lambda: vouched_by_all(n1), 60, 0.5)
        settle(cluster)
        yield cluster
    finally:
        cluster.stop()


def test_verify_passes_on_every_node_and_replay_reproduces_the_chain(
    cluster: XesCluster, tmp_path: Path
) -> None:
    heads = set()
    for node in cluster.nodes:
        result = verify(node)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "OK: the audit trail is intact" in result.stdout
        assert "signed by n1, n2, n3" in result.stdout
        assert "access recorded in the log at index" in result.stdout
    settle(cluster)
    for node in cluster.nodes:
        out = verify(node).stdout
        heads.add(out.split("checkpoints verified:", 1)[1].split("\n", 1)[0])
    assert len(heads) == 1  # every node has the same last checkpoint, signed by all three
    # The chain is in the state digest: the same on every node, and reproduced by replay.
    settle(cluster)
    digests = {replay(node) for node in cluster.nodes}
    assert len(digests) == 1, digests
    accessed = [e for e in journal(cluster.nodes[0]) if e["event"]["type"] == "audit.accessed"]
    assert len(accessed) >= 6
    assert accessed[0]["event"]["data"]["command"] == "verify"
    assert accessed[0]["event"]["data"]["user"]
    keys = {
        e["event"]["data"]["node"]
        for e in journal(cluster.nodes[1])
        if e["event"]["type"] == "audit.key_announced"
    }
    assert keys == {"n1", "n2", "n3"}


def test_an_export_verifies_offline_and_fails_after_any_edit(
    cluster: XesCluster, tmp_path: Path
) -> None:
    n2 = cluster.nodes[1]
    out = tmp_path / "bob.jsonl"
    result = n2.xes("audit", "export", "--out", str(out), "--jid", "bob@xes.test")
    assert "exported" in result.stdout
    # Offline: no configuration, only the file (and the keys it names, pinned here).
    pins = [n.xes("audit", "key").stdout.strip() for n in cluster.nodes]

    def offline(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "xes", "audit", "verify", "--export", str(path), *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )

    good = offline(out, *[a for p in pins for a in ("--trust-key", p)])
    assert good.returncode == 0, good.stdout + good.stderr
    lines = out.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    bodies = [r for r in rows if r["kind"] == "event" and "audit 7<" in r["row"]]
    assert len(bodies) == 1
    assert not any(r["kind"] == "event" and "alice-pw" in r["row"] for r in rows)
    bad = tmp_path / "edited.jsonl"
    bad.write_text(out.read_text().replace("audit 7<", "audit 8<", 1))
    failed = offline(bad)
    assert failed.returncode == 1 and f"FAILED at index {bodies[0]['index']}" in failed.stdout
    del lines[len(lines) // 2]
    bad.write_text("\n".join(lines) + "\n")
    assert offline(bad).returncode == 1
    # A key that is not trusted fails an untouched export too.
    assert offline(out, "--trust-key", pins[0]).returncode == 1
    exports = [e for e in journal(n2) if e["event"]["type"] == "audit.accessed"]
    assert any(
        e["event"]["data"]["command"] == "export"
        and e["event"]["data"]["args"].get("jid") == "bob@xes.test"
        for e in exports
    )


def _copy(node: XesServer, root: Path, name: str) -> Path:
    target = root / name
    shutil.copytree(node.data_dir / "db", target / "db")
    return target


def test_tampering_with_a_stopped_nodes_journal_is_found_at_its_index(
    cluster: XesCluster, tmp_path: Path
) -> None:
    n3 = cluster.nodes[2]
    cluster.stop()
    original = _copy(n3, tmp_path, "original")
    db = original / "db"
    result = verify(n3, "--data-dir", str(original))
    assert result.returncode == 0, result.stdout
    assert "access queued" in result.stdout
    messages = tamper.event_keys(db, "message.routed")
    checkpoints = tamper.event_keys(db, "audit.checkpoint")
    covered = [k for k in messages if k < checkpoints[-1]]
    assert len(covered) >= 10

    def found(name: str, change, expect: str) -> None:  # type: ignore[no-untyped-def]
        copy = _copy(n3, tmp_path, name)
        index, pos = change(copy / "db")
        out = verify(n3, "--data-dir", str(copy))
        assert out.returncode == 1, f"{name} not detected:\n{out.stdout}"
        assert f"FAILED at index {index} pos {pos}: {expect}" in out.stdout, out.stdout

    found("edited", lambda d: tamper.edit_byte(d, covered[3]), "edited event")
    found("deleted", lambda d: tamper.delete(d, covered[4]), "deleted event")
    found("swapped", lambda d: tamper.swap(d, covered[5], covered[8]), "reordered")
    found("truncated", lambda d: tamper.truncate(d, 5), "truncated")

    def forge(d: Path) -> tuple[int, int]:
        where = tamper.replace_signature(d, checkpoints[0], "ab" * 64)
        tamper.reseal(d)  # an attacker who rewrites the chain rows to match
        return where

    found("forged", forge, "forged checkpoint")

    def resealed_edit(d: Path) -> tuple[int, int]:
        tamper.edit_byte(d, covered[-1])
        tamper.reseal(d)
        # Named: the first event after the last checkpoint that still matches.
        return tamper.split_key(_after_good_checkpoint(d, covered[-1]))

    found("resealed", resealed_edit, "the events from index")
    # The stopped node recorded none of this yet; it does when it runs again.
    cluster.start()
    wait_until(
        lambda: any(
            e["event"]["type"] == "audit.accessed"
            and "resealed" in e["event"]["data"]["args"].get("data_dir", "")
            for e in journal(n3)
        ),
        60,
        1.0,
    )


def _after_good_checkpoint(db: Path, edited: bytes) -> bytes:
    """The first journal key after the event the last checkpoint before ``edited`` covers."""
    covers = []
    with tamper.opened(db) as (txn, dbs):
        for row in txn.cursor(db=dbs["journal.events"]).iternext(keys=False):
            obj = json.loads(row)
            if obj["event"]["type"] == "audit.checkpoint":
                data = obj["event"]["data"]
                covers.append(tamper.event_key(data["index"], data["pos"]))
        keys = [bytes(k) for k in txn.cursor(db=dbs["journal.events"]).iternext(values=False)]
    good = max(c for c in covers if c < edited) if any(c < edited for c in covers) else b""
    return next(k for k in keys if k > good)
