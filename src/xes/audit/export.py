"""Export a stretch of the audit trail as JSON Lines, and verify such an export offline.

An export is one contiguous stretch of the hash chain (ADR 0021): from the first event the
filters select to the first checkpoint that covers the last one (and the vouches for it). Every
event in the stretch is a line: selected events, checkpoints, vouches and key announcements in
full (``row``, the exact journal bytes, with ``prev`` and ``hash``, so each event's hash can be
checked on its own), every other event as its row digest only (``link``), which reveals nothing
of it. A header names the filters and the nodes' announced keys; the last line signs the SHA-256
of everything before it with the exporting node's key, so any edit of the file shows.

What a filtered export proves: each exported event was committed at its place in the chain, and
the chain there was signed by the checkpoint's signers. What it cannot prove is completeness:
the events left out are digests, so the file cannot show that every event matching the filter
is in it (the ``audit.accessed`` record of the export says what was asked for).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import lmdb
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xes.audit import chain, keys
from xes.audit.verify import CHECKPOINT_TYPES, KEY_TYPE, Report, Trust, Walker, scan
from xes.store import journal
from xes.store.env import Store

FORMAT = "xes.audit.export.1"
ALWAYS = (*CHECKPOINT_TYPES, KEY_TYPE)
"""Rows exported in full whatever the filters: what the stretch is verified with."""


@dataclass(frozen=True)
class Filters:
    since: str | None = None
    """Log index, or ISO 8601 time (UTC unless it says otherwise): from there on."""
    until: str | None = None
    """Log index or ISO time: up to and including it."""
    stream: str | None = None
    """A stream name, or a prefix ending in ``*`` (``muc:*``)."""
    jid: str | None = None
    """Events that mention this bare JID anywhere in their row (stream, data, stanza XML)."""
    room: str | None = None
    """The same for a room's JID."""

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v}


def _bound(value: str | None) -> tuple[str, int] | None:
    """``("index", n)`` or ``("at", ms)`` for a ``--since``/``--until`` value."""
    if value is None:
        return None
    if value.isdigit():
        return "index", int(value)
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither a log index nor an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return "at", int(when.timestamp() * 1000)


def _mentions(jid: str) -> re.Pattern[bytes]:
    # A JID as a whole word: not the tail of a longer local part, nor a longer domain.
    return re.compile(rb"(?<![\w.+-])" + re.escape(jid.encode()) + rb"(?![\w.-])")


def selector(filters: Filters) -> Callable[[int, bytes], bool]:
    """A test of ``(index, row)`` for the filters (all of them must hold)."""
    since, until = _bound(filters.since), _bound(filters.until)
    patterns = [_mentions(j) for j in (filters.jid, filters.room) if j]
    stream = filters.stream

    def at_of(row: bytes) -> int:
        return int(json.loads(row)["event"]["at"])

    def selected(index: int, row: bytes) -> bool:
        for bound, after in ((since, True), (until, False)):
            if bound is None:
                continue
            value = index if bound[0] == "index" else at_of(row)
            if (value < bound[1]) if after else (value > bound[1]):
                return False
        if any(not p.search(row) for p in patterns):
            return False
        if stream:
            name = json.loads(row)["event"]["stream"]
            if not (name.startswith(stream[:-1]) if stream.endswith("*") else name == stream):
                return False
        return True

    return selected


def _rows(store: Store, txn: lmdb.Transaction) -> Iterator[tuple[bytes, bytes, chain.Link]]:
    """Journal rows with their chain links, in order (a row without a link ends the walk)."""
    chain_db = store.db(chain.CHAIN)
    for key, row in txn.cursor(db=store.db("journal.events")):
        raw = txn.get(key, db=chain_db)
        if raw is None:
            raise ValueError(f"index {journal.split_key(key)[0]} has no chain hash: run verify")
        yield bytes(key), bytes(row), chain.decode_link(raw)


def _stretch(
    store: Store, txn: lmdb.Transaction, selected: Callable[[int, bytes], bool]
) -> tuple[bytes, bytes, int] | None:
    """(first key, last key, selected events) of the stretch to export, None if empty.

    It runs from the first selected event to the first checkpoint covering the last one, and
    the vouches for that checkpoint before the next one."""
    first = last = b""
    last_seq = count = 0
    for key, row, link in _rows(store, txn):
        if not any(t in row for t in ALWAYS) and selected(journal.split_key(key)[0], row):
            first = first or key
            last, last_seq, count = key, link.seq, count + 1
    if not first:
        return None
    cur = txn.cursor(db=store.db("journal.events"))
    cur.set_key(last)
    covering = False
    for key, row in cur:
        row = bytes(row)
        if CHECKPOINT_TYPES[0] in row:
            if covering:
                break  # the next checkpoint: its vouches are not needed
            covering = json.loads(row)["event"]["data"]["seq"] >= last_seq
            last = bytes(key) if covering else last
        elif covering and CHECKPOINT_TYPES[1] in row:
            last = bytes(key)
    return first, last, count


def write_export(
    store: Store,
    txn: lmdb.Transaction,
    out: IO[bytes],
    filters: Filters,
    *,
    node: str,
    domain: str,
    key: Ed25519PrivateKey,
    now_ms: int,
) -> int:
    """Write the export of ``filters`` to ``out``; returns the number of selected events."""
    selected = selector(filters)
    _, announced = scan(store, txn)
    stretch = _stretch(store, txn, selected)
    total = hashlib.sha256()

    def line(obj: dict[str, Any]) -> None:
        data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        raw = data.encode() + b"\n"
        total.update(raw)
        out.write(raw)

    first, last, count = stretch if stretch else (b"", b"", 0)
    line(
        {
            "kind": "header",
            "format": FORMAT,
            "domain": domain,
            "node": node,
            "created_at": now_ms,
            "filters": filters.to_json(),
            "selected": count,
            "keys": [
                {"node": n, "public_key": k}
                for n in sorted(announced)
                for k in sorted(announced[n])
            ],
        }
    )
    if stretch:
        prev = _prev_hash(store, txn, first)
        cur_rows = _rows(store, txn)
        for k, row, link in cur_rows:
            if k < first:
                continue
            index, pos = journal.split_key(k)
            digest = chain.leaf(row)
            item: dict[str, Any] = {"seq": link.seq, "index": index, "pos": pos}
            if any(t in row for t in ALWAYS) or selected(index, row):
                item.update(kind="event", prev=prev.hex(), hash=link.hash.hex(), row=row.decode())
            else:
                item.update(kind="link", digest=digest.hex(), hash=link.hash.hex())
            line(item)
            prev = link.hash
            if k == last:
                break
    digest = total.digest()
    line(
        {
            "kind": "end",
            "sha256": digest.hex(),
            "node": node,
            "public_key": keys.public_hex(key),
            "signature": keys.sign(key, keys.EXPORT + digest),
        }
    )
    return count


def _prev_hash(store: Store, txn: lmdb.Transaction, key: bytes) -> bytes:
    cur = txn.cursor(db=store.db(chain.CHAIN))
    if not cur.set_key(key) or not cur.prev():
        return chain.GENESIS
    return chain.decode_link(cur.value()).hash


def verify_export(path: Path, pinned: dict[str, str | None] | None = None) -> Report:
    """Check an export file on its own: chain, checkpoints, signatures, the file's signature."""
    report = Report()
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    try:
        objs = [json.loads(line) for line in lines]
    except ValueError as exc:
        report.add(0, 0, f"not an export: a line is not JSON ({exc})")
        return report
    if len(objs) < 2 or objs[0].get("kind") != "header" or objs[-1].get("kind") != "end":
        report.add(0, 0, "not an export: the header or the signed last line is missing")
        return report
    header, end = objs[0], objs[-1]
    announced: dict[str, set[str]] = {}
    for entry in header.get("keys", []):
        announced.setdefault(entry["node"], set()).add(entry["public_key"])
    trust = Trust(announced, pinned)
    items = objs[1:-1]
    rows = {i: json.loads(item["row"]) for i, item in enumerate(items) if item["kind"] == "event"}
    covered = {
        int(obj["event"]["data"]["seq"])
        for obj in rows.values()
        if obj["event"]["type"] in ("audit.checkpoint", "audit.vouched")
    }
    walker = Walker(trust, covered, report)
    prev: bytes | None = None
    expected_seq = None
    last_selected = 0
    for i, item in enumerate(items):
        index, pos, seq = item["index"], item["pos"], item["seq"]
        if prev is None:
            prev = bytes.fromhex(item.get("prev", "")) if item["kind"] == "event" else None
            if prev is None or len(prev) != 32:
                report.add(index, pos, "the first line of the stretch has no previous hash")
                return report
            walker.true_prev = prev
        elif seq != expected_seq:
            report.add(index, pos, f"events missing from the export before event {seq}")
        if item["kind"] == "event":
            row = item["row"].encode()
            digest = chain.leaf(row)
            obj = rows[i]
            if (obj.get("index"), obj.get("pos")) != (index, pos):
                report.add(index, pos, "reordered: the row is not the event at this position")
            if item["prev"] != prev.hex():
                report.add(index, pos, "the previous hash is not the previous line's hash")
            if not obj["event"]["type"].startswith("audit."):
                last_selected = seq
        else:
            digest = bytes.fromhex(item["digest"])
        walker.step(seq, digest, index, pos)  # the recomputed chain, for the checkpoints
        if chain.link(prev, seq, digest) != bytes.fromhex(item["hash"]):
            report.add(index, pos, f"edited {item['kind']}: it does not hash to its chain hash")
        if item["kind"] == "event":
            report.events += 1
            walker.audit_row(index, pos, rows[i])
        prev, expected_seq = bytes.fromhex(item["hash"]), seq + 1
        report.head = (seq, index, item["hash"])
    body = raw[: raw.rfind(b"\n", 0, len(raw) - 1) + 1]
    digest = hashlib.sha256(body).digest()
    if end.get("sha256") != digest.hex() or not keys.verify(
        end.get("public_key", ""), end.get("signature", ""), keys.EXPORT + digest
    ):
        report.add(0, 0, "the file was changed after export: its signature does not verify")
    else:
        distrust = trust.why_not(end.get("node", "?"), end["public_key"])
        if distrust:
            report.add(0, 0, f"the export is signed with an untrusted key: {distrust}")
    if last_selected and (
        report.last_checkpoint is None or report.last_checkpoint[0] < last_selected
    ):
        report.notes.append(
            "the last exported events are not covered by a checkpoint yet (export again after "
            "the next one): only the export's own signature vouches for them"
        )
    return report
