"""Uploaded files (XEP-0363, ADR 0017): slots, where each file is held, and each account's usage.

Folds ``upload.slot_granted``, ``upload.stored``, ``upload.deleted`` and ``account.removed``.
The bytes themselves are files on the nodes' disks, never in LMDB; this view says which slots
exist, which node received each file (so another node can fetch it) and what every account
uses. Apply re-checks what the proposer checked against its own read (the quota, the number of
open slots, a slot not stored twice, a PUT that began before the slot expired), so two nodes
granting slots to one account at the same moment cannot take it past its quota: the later
proposal is refused. No file is touched here (apply must be deterministic and cheap); each node
deletes files the view no longer holds in :mod:`xes.features.upload.files`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lmdb

from xes.events import Committed
from xes.events.catalog import AccountRemoved, UploadDeleted, UploadSlotGranted, UploadStored
from xes.projections.base import Projection, Rejected, dump, iter_prefix, key, load
from xes.store.env import Store, from_u64, u64

SLOTS = "uploads.slots"
"""slot id -> the slot's row (owner, name, size, type, expiry; ``stored`` once it arrived)."""
BY_OWNER = "uploads.by_owner"
"""owner NUL slot id -> empty: an account's slots, for its removal."""
OPEN = "uploads.open"
"""u64 expiry + slot id -> owner: slots granted and not yet stored, oldest expiry first."""
BY_TIME = "uploads.by_time"
"""u64 stored time + slot id -> owner: stored files, oldest first (retention)."""
USAGE = "uploads.usage"
"""owner -> {bytes, files, open}: what the quota is checked against."""
META = "uploads.meta"
"""``deletions`` -> u64: counts deleting applies, so each node knows when to sweep its disk."""

DELETIONS = b"deletions"


@dataclass(frozen=True, slots=True)
class Slot:
    slot: str
    owner: str
    filename: str
    size: int
    content_type: str
    expires: int
    sha256: str | None
    """Set once the file arrived (``upload.stored``)."""
    node: str | None
    """The node that received the file."""
    url: str | None
    """That node's base URL for the other nodes."""

    @property
    def stored(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True, slots=True)
class Usage:
    bytes: int = 0
    """Bytes of stored files plus open slots."""
    files: int = 0
    open: int = 0
    """Slots granted and not yet stored (nor expired by the leader)."""


class Uploads(Projection):
    name = "uploads"
    dbs = (SLOTS, BY_OWNER, OPEN, BY_TIME, USAGE, META)
    handles = ("upload.slot_granted", "upload.stored", "upload.deleted", "account.removed")

    def _usage(self, txn: lmdb.Transaction, owner: str) -> Usage:
        obj = load(txn.get(owner.encode(), db=self.db(USAGE)))
        return Usage(**obj) if obj else Usage()

    def _put_usage(self, txn: lmdb.Transaction, owner: str, usage: Usage) -> None:
        if usage == Usage():
            txn.delete(owner.encode(), db=self.db(USAGE))
        else:
            row = {"bytes": usage.bytes, "files": usage.files, "open": usage.open}
            txn.put(owner.encode(), dump(row), db=self.db(USAGE))

    def on_upload_slot_granted(
        self, txn: lmdb.Transaction, c: Committed, ev: UploadSlotGranted
    ) -> None:
        if txn.get(ev.slot.encode(), db=self.db(SLOTS)) is not None:
            raise Rejected("upload-duplicate-slot")
        usage = self._usage(txn, ev.owner)
        if usage.open >= ev.max_open:
            raise Rejected(f"upload-retry: {usage.open} slots are open already")
        if ev.quota and usage.bytes + ev.size > ev.quota:
            raise Rejected(f"upload-quota: {usage.bytes} of {ev.quota} bytes are used")
        row: dict[str, Any] = {
            "owner": ev.owner,
            "filename": ev.filename,
            "size": ev.size,
            "content_type": ev.content_type,
            "expires": ev.expires,
            "stored": None,
        }
        txn.put(ev.slot.encode(), dump(row), db=self.db(SLOTS))
        txn.put(key(ev.owner, ev.slot), b"", db=self.db(BY_OWNER))
        txn.put(u64(ev.expires) + ev.slot.encode(), ev.owner.encode(), db=self.db(OPEN))
        self._put_usage(
            txn,
            ev.owner,
            Usage(usage.bytes + ev.size, usage.files, usage.open + 1),
        )

    def on_upload_stored(self, txn: lmdb.Transaction, c: Committed, ev: UploadStored) -> None:
        row = load(txn.get(ev.slot.encode(), db=self.db(SLOTS)))
        if row is None:
            raise Rejected("upload-no-slot")
        if row["stored"] is not None:
            raise Rejected("upload-conflict: the file was uploaded already")
        if ev.put_started > row["expires"]:
            raise Rejected("upload-expired")
        row["stored"] = {"sha256": ev.sha256, "node": ev.node, "url": ev.url, "at": c.envelope.at}
        txn.put(ev.slot.encode(), dump(row), db=self.db(SLOTS))
        txn.delete(u64(row["expires"]) + ev.slot.encode(), db=self.db(OPEN))
        txn.put(u64(c.envelope.at) + ev.slot.encode(), row["owner"].encode(), db=self.db(BY_TIME))
        usage = self._usage(txn, row["owner"])
        self._put_usage(txn, row["owner"], Usage(usage.bytes, usage.files + 1, usage.open - 1))

    def on_upload_deleted(self, txn: lmdb.Transaction, c: Committed, ev: UploadDeleted) -> None:
        for slot in ev.slots:
            self._delete(txn, slot)
        self._count_deletion(txn)

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        prefix = key(ev.jid, "")
        slots = [k[len(prefix) :].decode() for k, _ in iter_prefix(txn, self.db(BY_OWNER), prefix)]
        if not slots:
            return
        for slot in slots:
            self._delete(txn, slot)
        txn.delete(ev.jid.encode(), db=self.db(USAGE))
        self._count_deletion(txn)

    def _delete(self, txn: lmdb.Transaction, slot: str) -> None:
        row = load(txn.get(slot.encode(), db=self.db(SLOTS)))
        if row is None:
            return
        owner = row["owner"]
        txn.delete(slot.encode(), db=self.db(SLOTS))
        txn.delete(key(owner, slot), db=self.db(BY_OWNER))
        usage = self._usage(txn, owner)
        if row["stored"] is not None:
            txn.delete(u64(row["stored"]["at"]) + slot.encode(), db=self.db(BY_TIME))
            usage = Usage(usage.bytes - row["size"], usage.files - 1, usage.open)
        else:
            txn.delete(u64(row["expires"]) + slot.encode(), db=self.db(OPEN))
            usage = Usage(usage.bytes - row["size"], usage.files, usage.open - 1)
        self._put_usage(txn, owner, usage)

    def _count_deletion(self, txn: lmdb.Transaction) -> None:
        raw = txn.get(DELETIONS, db=self.db(META))
        txn.put(DELETIONS, u64((from_u64(raw) if raw else 0) + 1), db=self.db(META))


def slot(store: Store, txn: lmdb.Transaction, slot_id: str) -> Slot | None:
    row = load(txn.get(slot_id.encode(), db=store.db(SLOTS)))
    if row is None:
        return None
    stored = row["stored"] or {}
    return Slot(
        slot=slot_id,
        owner=row["owner"],
        filename=row["filename"],
        size=row["size"],
        content_type=row["content_type"],
        expires=row["expires"],
        sha256=stored.get("sha256"),
        node=stored.get("node"),
        url=stored.get("url"),
    )


def usage(store: Store, txn: lmdb.Transaction, owner: str) -> Usage:
    obj = load(txn.get(owner.encode(), db=store.db(USAGE)))
    return Usage(**obj) if obj else Usage()


def _older(store: Store, txn: lmdb.Transaction, name: str, before: int, limit: int) -> list[str]:
    out = []
    for k, _ in txn.cursor(db=store.db(name)):
        if from_u64(k[:8]) >= before or len(out) >= limit:
            break
        out.append(k[8:].decode())
    return out


def expired_open(store: Store, txn: lmdb.Transaction, before: int, limit: int) -> list[str]:
    """Up to ``limit`` slots never stored whose PUT had to start before ``before`` (ms)."""
    return _older(store, txn, OPEN, before, limit)


def stored_before(store: Store, txn: lmdb.Transaction, before: int, limit: int) -> list[str]:
    """Up to ``limit`` files stored before ``before`` (ms), oldest first."""
    return _older(store, txn, BY_TIME, before, limit)


def deletions(store: Store, txn: lmdb.Transaction) -> int:
    """How many deleting applies there were: a change means files may have to go from disk."""
    raw = txn.get(DELETIONS, db=store.db(META))
    return from_u64(raw) if raw else 0
