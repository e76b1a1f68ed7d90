"""A running 3-node cluster upgraded one node at a time, with clients chatting throughout
(issue 20 item 3, ADR 0022).

The old release is :data:`xes.events.gate.BASELINE_COMMIT`, the last commit before the first
event version bump (``message.routed`` and ``muc.message_sent`` v2) and before the inbox, push and
component event types: the newest release it can meet in a cluster has all of those to hold
back. Its ``src/`` is exported from this repository's history (``git archive``) once into
``.cache/rolling-upgrade/<commit>/`` and run with this venv's interpreter and ``PYTHONPATH``
pointing at it: the release pins the same dependencies, so no second venv or network is needed.

Three old nodes start; then n3, n2 and n1 are stopped and started on the new code with the same
data directories, one at a time, while one user sends numbered chat messages to another and the
other sends numbered groupchat messages to a room, both connected to nodes that stay up. Checked:
every message accepted arrives exactly once, in order; no old node stopped on an event it cannot
read; the new features answer ``feature-not-implemented`` while an old member remains (and
``xes cluster status`` names it); the journal holds only v1 messages before the last node's
announcement and v2 once the gate is open; every node ends with the same replayed digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.cluster import XesCluster, wait_until
from tests.integration.mucclient import (
    MESSAGE,
    MucClient,
    body,
    create,
    error_of,
    join,
    send_message,
)
from tests.integration.server import XesServer
from tests.integration.test_cluster import replay, settle
from xes.events.gate import BASELINE_COMMIT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "rolling-upgrade"
PASSWORD = "pw-upgrade"
ROOM = "upgrade@conference.xes.test"
INBOX_QUERY = "<inbox xmlns='urn:xmpp:inbox:1'/>"
GATED = ("message.routed", "muc.message_sent")


def old_tree(commit: str = BASELINE_COMMIT) -> Path:
    """``src/`` of ``commit``, exported once and kept (``.cache/`` is not tracked)."""
    target = CACHE / commit / "src"
    if (target / "xes" / "__init__.py").exists():
        return target
    try:
        found = subprocess.run(
            ["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
        ).returncode
    except OSError:  # no git at all
        found = -1
    if found != 0:
        pytest.skip(f"commit {commit[:12]} is not in this clone's history (shallow clone?)")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "src"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        (tmp / "src").rename(target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def old_env(src: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(src))
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import xes, importlib.util as u; print(xes.__file__, "
            "u.find_spec('xes.events.gate') is None)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # The old release really is what runs: its tree, and no feature gate in it.
    assert probe[0].startswith(str(src)) and probe[1] == "True", probe
    return env


def replace(node: XesServer) -> None:
    """Stop ``node`` and start it on this tree's code with the same data directory."""
    node.stop()
    node.env = None
    node.launch()
    node.wait_ready(120)


def gate_report(cluster: XesCluster, node: XesServer) -> dict[str, object]:
    report = cluster.status(node).get("gate")
    assert report is not None, "the new build's cluster status reports the gate"
    return dict(report)


class Chat:
    """alice -> bob chat and bob -> room groupchat, numbered, until stopped."""

    def __init__(self, label: str, alice: MucClient, bob: MucClient) -> None:
        self.label, self.alice, self.bob = label, alice, bob
        self.chat_sent: list[str] = []
        self.room_sent: list[str] = []
        self.stopped = asyncio.Event()

    async def run(self, period: float = 0.1) -> None:
        i = 0
        while not self.stopped.is_set():
            text = f"{self.label}-c{i}"
            send_message(self.alice, self.bob.boundjid.bare, text, type_="chat", id_=text)
            self.chat_sent.append(text)
            text = f"{self.label}-g{i}"
            send_message(self.bob, ROOM, text, id_=text)
            self.room_sent.append(text)
            i += 1
            await asyncio.sleep(period)

    def _got(self, client: MucClient, kind: str) -> list[str]:
        return [
            b
            for el in client.inbox.items
            if el.tag == MESSAGE
            and el.get("type") == kind
            and (b := body(el)) is not None
            and b.startswith(f"{self.label}-")
        ]

    def _refused(self, client: MucClient) -> set[str]:
        return {
            el.get("id") or ""
            for el in client.inbox.items
            if el.tag == MESSAGE and el.get("type") == "error" and error_of(el) is not None
        }

    async def check(self, timeout: float = 30.0) -> tuple[int, int]:
        """Every accepted message arrived once, in order; returns (delivered, refused)."""
        chat_expected = [t for t in self.chat_sent if t not in self._refused(self.alice)]
        room_expected = [t for t in self.room_sent if t not in self._refused(self.bob)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if (
                len(self._got(self.bob, "chat")) >= len(chat_expected)
                and len(self._got(self.alice, "groupchat")) >= len(room_expected)
                # bob's own reflections too: the room sent him each of his messages once
                and len(self._got(self.bob, "groupchat")) >= len(room_expected)
            ):
                break
            await asyncio.sleep(0.2)
        assert self._got(self.bob, "chat") == chat_expected
        assert self._got(self.alice, "groupchat") == room_expected
        assert self._got(self.bob, "groupchat") == room_expected
        delivered = len(chat_expected) + len(room_expected)
        return delivered, len(self.chat_sent) + len(self.room_sent) - delivered


async def chat_through(
    label: str,
    alice_node: XesServer,
    bob_node: XesServer,
    during: XesServer | None,
    extra: object = None,
) -> tuple[int, int]:
    """Connect alice and bob to the given nodes, chat while ``during`` is replaced (or for a
    few seconds), then check what arrived."""
    alice = MucClient(f"alice@xes.test/{label}", PASSWORD)
    bob = MucClient(f"bob@xes.test/{label}", PASSWORD)
    try:
        await asyncio.gather(alice.login(alice_node.c2s), bob.login(bob_node.c2s))
        await join(alice, ROOM, f"alice-{label}", history={"maxstanzas": "0"})
        await join(bob, ROOM, f"bob-{label}", history={"maxstanzas": "0"})
        if callable(extra):
            await extra(alice, bob)
        chat = Chat(label, alice, bob)
        task = asyncio.ensure_future(chat.run())
        if during is not None:
            await asyncio.to_thread(replace, during)
        await asyncio.sleep(2.0)  # keep chatting with the replaced node back
        chat.stopped.set()
        await task
        return await chat.check()
    finally:
        for client in (alice, bob):
            if not client.ended.is_set():
                with contextlib.suppress(Exception):
                    await client.logout()


def journal(node: XesServer) -> list[dict[str, object]]:
    out = node.xes("events", "dump").stdout
    return [json.loads(line) for line in out.splitlines() if line]


def test_rolling_upgrade_from_the_release_before_the_first_version_bump(tmp_path: Path) -> None:
    env = old_env(old_tree())
    cluster = XesCluster(tmp_path, extra="node_down_after = 30\n")
    n1, n2, n3 = cluster.nodes
    for node in cluster.nodes:
        node.env = env
    cluster.start()
    try:
        n1.add_user("alice", PASSWORD)
        n1.add_user("bob", PASSWORD)

        async def scenario() -> dict[str, tuple[int, int]]:
            results: dict[str, tuple[int, int]] = {}
            owner = MucClient("alice@xes.test/owner", PASSWORD)
            await owner.login(n1.c2s)
            await create(owner, ROOM, "owner", {"muc#roomconfig_persistentroom": "1"})
            await owner.logout()

            async def refused_while_mixed(alice: MucClient, bob: MucClient) -> None:
                # bob is on the upgraded n3 while old members remain: the inbox answers
                # feature-not-implemented (its events would stop the old nodes).
                condition, _ = await bob.iq_error("get", bob.boundjid.bare, INBOX_QUERY)
                assert condition == "feature-not-implemented"

            # Old cluster; n3 replaced while alice (n1) and bob (n2) chat.
            results["n3"] = await chat_through("p1", n1, n2, during=n3)
            # Mixed: alice on old n1, bob on new n3; n2 replaced meanwhile.
            results["n2"] = await chat_through("p2", n1, n3, n2, refused_while_mixed)
            report = await asyncio.to_thread(gate_report, cluster, n3)
            assert not report["open"]
            assert report["waiting"]["message.routed v2"] == ["n1"], report
            text = await asyncio.to_thread(lambda: n3.xes("cluster", "status").stdout)
            assert "feature gate: closed for" in text and "waiting for n1: " in text, text
            assert "message.routed v2 (as v1)" in text and "push.enabled v1 (off)" in text
            # Both on new nodes, n1 (the last old one) replaced: down, it still holds the gate.
            results["n1"] = await chat_through("p3", n2, n3, n1)
            for node in cluster.nodes:
                await asyncio.to_thread(
                    wait_until, lambda node=node: gate_report(cluster, node)["open"], 30
                )

            async def inbox_works(alice: MucClient, bob: MucClient) -> None:
                result = await bob.iq("get", bob.boundjid.bare, INBOX_QUERY)
                assert result.get("type") == "result", ET.tostring(result)

            results["after"] = await chat_through("p4", n1, n3, None, inbox_works)
            return results

        results = asyncio.run(scenario())
        for phase, (delivered, refused) in results.items():
            assert delivered > 20, (phase, delivered)
            assert refused <= 2, (phase, refused)  # at most an election's worth of "wait"
        settle(cluster, timeout=60)
        digests = {node.root.name: replay(node) for node in cluster.nodes}
        assert len({d for d, _ in digests.values()}) == 1, digests

        events = journal(n1)
        # The announcement that opened the gate: n1's node.started on the new build.
        opened = max(
            e["index"]
            for e in events
            if e["event"]["type"] == "node.started"
            and e["event"]["data"].get("node") == "n1"
            and e["event"]["data"].get("reads")
        )
        messages = [e for e in events if e["event"]["type"] in GATED]
        early = [e for e in messages if e["index"] < opened]
        assert early and all(e["event"]["v"] == 1 for e in early)
        late = [e for e in messages if e["event"]["data"]["xml"].find(">p4-") > 0]
        assert late and all(e["event"]["v"] == 2 for e in late)
        assert {e["event"]["type"] for e in late} == set(GATED)
        print(
            f"rolling upgrade: delivered/refused per phase {results}; journal: "
            f"{len(early)} v1 before index {opened}, {len(late)} v2 after the gate opened"
        )
        for node in cluster.nodes:
            # An old node that met an event it cannot read exits 75 (NewerEvent): none did.
            assert "node_too_old_for_log" not in node.log_text()
    finally:
        cluster.stop()


def _entries() -> list[list[list[dict[str, object]]]]:
    """Log entries of a small history, in the form an old member reads (the gate closed)."""
    from xes.events import wrap
    from xes.events.catalog import (
        AccountRegistered,
        MessageRouted,
        NodeStarted,
        RosterItemUpdated,
        SessionBound,
    )
    from xes.events.gate import Gate, this_build_reads

    xml = (
        "<message xmlns='jabber:client' from='a@x/r' to='b@x' type='chat' id='m'>"
        "<body>hi</body></message>"
    )
    events = [
        NodeStarted("n1", "b1", "127.0.0.1:1", this_build_reads()),
        AccountRegistered("a@x", {}),
        AccountRegistered("b@x", {}),
        RosterItemUpdated(owner="a@x", contact="b@x", subscription="both"),
        SessionBound("s1", "a@x/r", "n1", "b1"),
        MessageRouted("a@x/r", "b@x", "chat", xml, [], "b@x", stanza_id="i1", archived_by=["a@x"]),
        MessageRouted("a@x/r", "b@x", "chat", xml, ["b@x/p"], stanza_id="i2", archived_by=["b@x"]),
    ]
    closed = Gate.unknown()
    return [
        [[closed.shape(wrap(ev, id=f"e{i}", at=1_700_000_000_000 + i, origin="n1")).to_json()]]
        for i, ev in enumerate(events)
    ]


def _probe(env: dict[str, str] | None, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "tests.integration.snapshot_probe", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.parametrize("direction", ["new-to-old", "old-to-new"])
def test_a_snapshot_from_the_other_release_installs_to_the_state_a_replay_gives(
    tmp_path: Path, direction: str
) -> None:
    """A lagging member is sent the leader's snapshot, whatever release either runs: the old
    build copies the sub-databases it knows, the new one rebuilds what the old snapshot lacks."""
    old = old_env(old_tree())
    maker, taker = (None, old) if direction == "new-to-old" else (old, None)
    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps(_entries()))
    _probe(maker, "make", str(tmp_path / "a"), str(entries))
    out = _probe(taker, "restore", str(tmp_path / "a" / "snap"), str(tmp_path / "b"))
    result = json.loads(out.splitlines()[-1])  # after the log lines (a rebuild's)
    assert result["applied"] == len(_entries())
    assert result["live"] == result["rebuilt"], result


def test_the_old_release_sample_configurations_are_valid_for_this_one(tmp_path: Path) -> None:
    """A node is upgraded with its configuration unchanged: every key the old release accepted
    (here: every sample it shipped) must still be accepted (older ones refuse new keys, so new
    sections are added only after the upgrade; docs/operations.md)."""
    import tomllib

    from xes.config import parse_config

    old_tree()  # skips without the history
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", BASELINE_COMMIT, "deploy"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    samples = [name for name in listing if name.endswith(".toml")]
    assert samples
    secret = tmp_path / "secret"
    secret.write_text("s" * 32)
    for name in samples:
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        raw = tomllib.loads(text)
        if "secret_file" in raw.get("cluster", {}):
            raw["cluster"]["secret_file"] = str(secret)  # the file is the operator's
        parse_config(raw, base=tmp_path)
