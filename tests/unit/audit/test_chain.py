"""The hash chain, checkpoints, verify and export, on stores fed through the real projector."""

from __future__ import annotations

import io
import json
from pathlib import Path

import lmdb
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests import audit_tamper as tamper
from xes.audit import chain, keys
from xes.audit.checkpointer import checkpoint_event, due, vouch_event
from xes.audit.export import Filters, verify_export, write_export
from xes.audit.verify import Report, verify_store
from xes.config import ConfigError, parse_config
from xes.events import canonical_json, wrap
from xes.events.catalog import (
    AuditCheckpoint,
    AuditKeyAnnounced,
    RosterItemUpdated,
)
from xes.projections import audit as audit_view
from xes.projections.audit import Audit
from xes.projections.projector import Projector, all_db_names, rebuild
from xes.store.env import open_store

_ids = iter(range(1, 10**9))


def env(event: object, at: int = 1_700_000_000_000) -> dict[str, object]:
    return wrap(event, id=f"t.{next(_ids)}", at=at, origin="t").to_json()


class Cluster:
    """One store fed entries through the projector, with the nodes' keys at hand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = open_store(path, all_db_names(), writer=True)
        self.proj = Projector(self.store)
        self.index = 0
        self.keys = {n: Ed25519PrivateKey.generate() for n in ("n1", "n2")}

    def apply(self, *events: object, at: int = 1_700_000_000_000) -> list[dict[str, object]]:
        self.index += 1
        command = canonical_json([[env(e, at) for e in events]])
        return json.loads(self.proj.apply(self.index, command))  # type: ignore[no-any-return]

    def chat(self, n: int, owner: str = "a@x") -> None:
        for i in range(n):
            self.apply(RosterItemUpdated(owner=owner, contact=f"c{self.index}.{i}@x"))

    def announce(self) -> None:
        for node, key in self.keys.items():
            assert self.apply(AuditKeyAnnounced(node, keys.public_hex(key)))[0]["ok"]

    def head(self) -> chain.Head:
        with self.store.env.begin() as txn:
            return chain.head(self.store, txn)

    def checkpoint(self, node: str = "n1", head: chain.Head | None = None) -> dict[str, object]:
        return self.apply(checkpoint_event(head or self.head(), node, self.keys[node]))[0]

    def vouch(self, node: str = "n2") -> dict[str, object]:
        with self.store.env.begin() as txn:
            last = audit_view.latest_checkpoint(self.store, txn)
        assert last is not None
        return self.apply(vouch_event(last, node, self.keys[node]))[0]

    def verify(self, db: Path | None = None, pinned: dict[str, str | None] | None = None) -> Report:
        store = self.store if db is None else open_store(db, all_db_names(), writer=False)
        try:
            with store.env.begin() as txn:
                return verify_store(store, txn, pinned)
        finally:
            if db is not None:
                store.close()

    def copy(self, tmp: Path) -> Path:
        """A copy of the store as a stopped node would leave it on disk."""
        target = tmp / f"copy{next(_ids)}"
        target.mkdir()
        self.store.env.copy(str(target))
        return target


@pytest.fixture
def history(tmp_path: Path) -> Cluster:
    """30 events, a checkpoint signed by n1 and n2, 10 more events, another checkpoint, 5 more."""
    c = Cluster(tmp_path / "live")
    c.announce()
    c.chat(30)
    assert c.checkpoint()["ok"] and c.vouch()["ok"]
    c.chat(10)
    assert c.checkpoint()["ok"] and c.vouch()["ok"]
    c.chat(5)
    return c


def test_every_event_is_chained_and_replay_reproduces_the_chain(history: Cluster) -> None:
    head = history.head()
    assert head.seq == 2 + 30 + 2 + 10 + 2 + 5
    assert head.work == 45  # audit events do not count
    out = history.path.parent / "replayed"
    rebuilt, live, _, count = rebuild(history.store, out)
    assert rebuilt == live and count == head.seq
    again = open_store(out, all_db_names(), writer=False)
    with again.env.begin() as txn:
        assert chain.head(again, txn) == head
    again.close()


def test_the_digest_covers_the_chain(history: Cluster, tmp_path: Path) -> None:
    """A journal edited under a chain computed before shows in `xes replay` as a mismatch."""
    db = history.copy(tmp_path)
    tamper.edit_byte(db, tamper.event_keys(db)[5])
    store = open_store(db, all_db_names(), writer=False)
    rebuilt, live, _, _ = rebuild(store, tmp_path / "r")
    store.close()
    assert rebuilt != live


def test_rejected_proposals_are_not_chained(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "s")
    c.chat(2)
    before = c.head()
    assert c.apply(AuditKeyAnnounced("n1", "zz"))[0]["ok"] is False
    assert c.head() == before


def test_a_journal_from_before_the_chain_is_caught_up(history: Cluster, tmp_path: Path) -> None:
    head = history.head()
    db = history.copy(tmp_path)
    with tamper.opened(db) as (txn, dbs):
        txn.drop(dbs[chain.CHAIN], delete=False)
        txn.delete(chain.HEAD_KEY, db=dbs[chain.STATE])
    store = open_store(db, all_db_names(), writer=True)
    Projector(store)
    with store.env.begin() as txn:
        assert chain.head(store, txn) == head
    store.close()


def test_apply_refuses_wrong_heads_unknown_keys_and_bad_signatures(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "s")
    c.chat(3)
    assert c.checkpoint()["reason"] == "unknown-key"  # not announced yet
    c.announce()
    head = c.head()
    wrong = chain.Head(head.seq, head.key, bytes(32), head.work)
    assert c.checkpoint(head=wrong)["reason"] == "checkpoint-mismatch"
    sig = keys.sign(c.keys["n2"], keys.statement(head.seq, head.index, head.pos, head.hash))
    pub1 = keys.public_hex(c.keys["n1"])
    forged = AuditCheckpoint(
        head.seq, head.index, head.pos, head.hash.hex(), head.work, "n1", pub1, sig
    )
    assert c.apply(forged)[0]["reason"] == "bad-signature"
    assert c.checkpoint()["ok"]
    assert c.vouch("n2")["ok"]
    assert c.vouch("n2")["reason"] == "already-vouched"
    with c.store.env.begin() as txn:
        last = audit_view.latest_checkpoint(c.store, txn)
    assert last is not None and sorted(last.signers) == ["n1", "n2"]


def test_due_counts_work_and_time() -> None:
    head = chain.Head(100, b"", bytes(32), 50)
    last = audit_view.Checkpoint(90, 1, 0, "", 40, 1_000, {})
    assert not due(head, last, every=20, interval_ms=60_000, now_ms=2_000)
    assert due(head, last, every=10, interval_ms=60_000, now_ms=2_000)
    assert due(head, last, every=20, interval_ms=60_000, now_ms=61_000)
    idle = chain.Head(100, b"", bytes(32), 40)  # only audit events since
    assert not due(idle, last, every=1, interval_ms=0, now_ms=10**12)
    assert due(head, None, every=10**6, interval_ms=60_000, now_ms=61_000)


def test_an_intact_history_verifies(history: Cluster) -> None:
    report = history.verify()
    assert report.ok, report.problems
    assert report.checkpoints == 2
    assert report.last_checkpoint is not None and report.last_checkpoint[2] == ["n1", "n2"]
    assert any("7 event(s) after" in n for n in report.notes)  # checkpoint, vouch, 5


def _first(report: Report) -> tuple[int, int, str]:
    first = report.first()
    assert first is not None, "tampering not detected"
    return first.index, first.pos, first.what


def test_an_edited_byte_is_found_at_its_index(history: Cluster, tmp_path: Path) -> None:
    db = history.copy(tmp_path)
    where = tamper.edit_byte(db, tamper.event_keys(db)[10])
    index, pos, what = _first(history.verify(db))
    assert (index, pos) == where and what.startswith("edited event")


def test_a_resealed_edit_is_found_by_the_checkpoint(history: Cluster, tmp_path: Path) -> None:
    db = history.copy(tmp_path)
    keys_ = tamper.event_keys(db)
    first_cp = tamper.event_keys(db, "audit.checkpoint")[0]
    edited = tamper.edit_byte(db, keys_[keys_.index(first_cp) + 4])  # between the checkpoints
    tamper.reseal(db)
    report = history.verify(db)
    index, _, what = _first(report)
    assert "no longer hash to the head" in what
    # The stretch named starts after the first checkpoint's event and holds the edit.
    assert history.verify().last_checkpoint is not None
    assert index <= edited[0]
    assert (
        f"to index {edited[0]}" in what or int(what.split("to index ")[1].split()[0]) >= (edited[0])
    )


def test_a_deleted_event_is_found(history: Cluster, tmp_path: Path) -> None:
    db = history.copy(tmp_path)
    where = tamper.delete(db, tamper.event_keys(db)[7])
    index, pos, what = _first(history.verify(db))
    assert (index, pos) == where and what.startswith("deleted event")
    db = history.copy(tmp_path)
    keys_ = tamper.event_keys(db)
    tamper.delete(db, keys_[7], with_chain=True)
    index, pos, what = _first(history.verify(db))
    assert (index, pos) == tamper.split_key(keys_[8]) and "missing before" in what


def test_swapped_events_are_found(history: Cluster, tmp_path: Path) -> None:
    db = history.copy(tmp_path)
    keys_ = tamper.event_keys(db)
    where = tamper.swap(db, keys_[12], keys_[20])
    index, pos, what = _first(history.verify(db))
    assert (index, pos) == where and what.startswith("reordered")


def test_a_truncated_tail_is_found(history: Cluster, tmp_path: Path) -> None:
    db = history.copy(tmp_path)
    head_at = tamper.truncate(db, 3)
    index, pos, what = _first(history.verify(db))
    assert (index, pos) == head_at and what.startswith("truncated")


def test_a_replaced_checkpoint_signature_is_found(history: Cluster, tmp_path: Path) -> None:
    for kind in ("audit.checkpoint", "audit.vouched"):
        db = history.copy(tmp_path)
        key = tamper.event_keys(db, kind)[0]
        other = Ed25519PrivateKey.generate()
        where = tamper.replace_signature(db, key, keys.sign(other, b"something else"))
        tamper.reseal(db)  # even with the chain rewritten to match
        index, pos, what = _first(history.verify(db))
        assert (index, pos) == where and what.startswith("forged checkpoint"), what


def test_pinned_keys_refuse_others(history: Cluster) -> None:
    only_n1 = {keys.public_hex(history.keys["n1"]): "n1"}
    report = history.verify(pinned=only_n1)
    assert not report.ok and "not a trusted key" in report.problems[0].what
    both = {keys.public_hex(k): n for n, k in history.keys.items()}
    assert history.verify(pinned=both).ok


def _export(c: Cluster, filters: Filters) -> bytes:
    out = io.BytesIO()
    with c.store.env.begin() as txn:
        write_export(c.store, txn, out, filters, node="n1", domain="x", key=c.keys["n1"], now_ms=1)
    return out.getvalue()


def test_an_export_verifies_and_any_edit_fails(history: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "all.jsonl"
    path.write_bytes(_export(history, Filters()))
    report = verify_export(path)
    assert report.ok, report.problems
    assert report.checkpoints == 2
    lines = path.read_bytes().splitlines(keepends=True)
    for n in range(len(lines)):
        for mutate in ("byte", "drop"):
            changed = list(lines)
            if mutate == "drop":
                del changed[n]
            else:
                line = bytearray(changed[n])
                at = line.index(b'"seq":') + 6 if b'"seq":' in line else 2
                line[at] = ord("9") if line[at] != ord("9") else ord("8")
                changed[n] = bytes(line)
            bad = tmp_path / "bad.jsonl"
            bad.write_bytes(b"".join(changed))
            assert not verify_export(bad).ok, (n, mutate)


def test_a_filtered_export_hides_other_events_and_still_verifies(
    history: Cluster, tmp_path: Path
) -> None:
    history.chat(1, owner="bob@x")
    history.chat(2)
    history.chat(2, owner="bob@x")
    history.chat(1)
    assert history.checkpoint()["ok"]
    data = _export(history, Filters(jid="bob@x"))
    assert b"a@x" not in data.replace(b'"stream":"audit', b"")  # nothing of a@x in full
    path = tmp_path / "bob.jsonl"
    path.write_bytes(data)
    report = verify_export(path)
    assert report.ok, report.problems
    rows = [json.loads(line) for line in data.splitlines()]
    full = [r for r in rows if r["kind"] == "event" and "bob@x" in r["row"]]
    assert len(full) == 3 and all(r["prev"] and r["hash"] for r in full)
    # An edit of a hidden event's digest is found too.
    link = next(i for i, r in enumerate(rows) if r["kind"] == "link")
    rows[link]["digest"] = "00" * 32
    lines = [json.dumps(r, sort_keys=True, separators=(",", ":")) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    assert not verify_export(path).ok


def test_an_export_past_the_last_checkpoint_says_so(history: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "tail.jsonl"
    path.write_bytes(_export(history, Filters(since=str(history.index - 1))))
    report = verify_export(path)
    assert report.ok and any("not covered by a checkpoint" in n for n in report.notes)


def test_since_until_by_time_and_index(history: Cluster, tmp_path: Path) -> None:
    history.apply(RosterItemUpdated(owner="t@x", contact="late@x"), at=1_800_000_000_000)
    data = _export(history, Filters(since="2027-01-01T00:00:00"))
    selected = json.loads(data.splitlines()[0])["selected"]
    assert selected == 1
    data = _export(history, Filters(until="5"))  # 1 and 2 are the key announcements
    assert json.loads(data.splitlines()[0])["selected"] == 3


def test_a_snapshot_from_before_the_chain_is_restored_and_chained(
    history: Cluster, tmp_path: Path
) -> None:
    """A Raft snapshot taken by a node of an earlier release has no audit sub-databases."""
    head = history.head()
    snap = history.copy(tmp_path)
    env = lmdb.open(str(snap), max_dbs=64)
    with env.begin(write=True) as txn:
        for name in Audit.dbs:
            txn.drop(env.open_db(name.encode(), txn=txn), delete=True)
    env.close()
    store = open_store(tmp_path / "empty", all_db_names(), writer=True)
    Projector(store).restore(snap)
    with store.env.begin() as txn:
        assert chain.head(store, txn) == head
    store.close()


def test_audit_configuration(tmp_path: Path) -> None:
    config = parse_config({"audit": {"key_file": "keys/n1.pem"}}, base=tmp_path)
    assert config.audit_key_path == tmp_path / "keys/n1.pem"
    assert parse_config({}).audit_key_path == Path("xes-data/audit/node.key")
    with pytest.raises(ConfigError, match="checkpoint_every"):
        parse_config({"audit": {"checkpoint_every": 0}})
