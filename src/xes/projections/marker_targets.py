"""The recent messages a chat marker or receipt can name, per conversation (ADR 0019).

XEP-0333 markers and XEP-0184 receipts name a message by an id: the sender's ``id``, its
``origin-id`` or the archive's stanza-id. The inbox (which message does a ``displayed`` read up
to?) and read status (whose watermark moves where?) both need that id turned into the message's
log position. They share this one index, written once per message, instead of each writing its
own rows per id (and the inbox per owner and room member).

A *scope* is a room, or the messages one user sends another (the recipient's devices mark them).
Each body message of a scope is one row, keyed by the scope and the message's log position, with
its time, its ordinal in the scope and its ids. Rows are appended at the scope's tail and trimmed
at its head, so a message touches the scope's last and first pages only: no per-id row lands on a
random page. A marker is resolved by walking the scope's rows from the newest back (markers
nearly always name a recent message); the walk is bounded by what is kept: the last
:data:`KEEP_PER_SCOPE` body messages, none older than :data:`KEEP_MS` before the scope's newest.
An id not among them (unknown, or older) resolves to nothing, and the marker changes nothing.

The bounds are constants, part of the replicated fold: changing one changes every node's
projection, so it bumps :attr:`MarkerTargets.version` (a rebuild from the journal, ADR 0022).

Applied after the inbox and read status, so a marker resolves against the messages before the
event that carries it.
"""

from __future__ import annotations

import struct

import lmdb

from xes.events import Committed
from xes.events.catalog import MessageRouted, MucMessageSent, MucRoomDestroyed
from xes.jid import bare_of
from xes.projections.base import Projection, delete_prefix
from xes.store.env import Store, from_u64, u64

TARGETS = "marker.targets"

KEEP_PER_SCOPE = 1000
"""Body messages of one room or conversation whose ids a marker can name."""
KEEP_MS = 7 * 24 * 3600 * 1000
"""…and none older than this (relative to the scope's newest message)."""
MAX_ID = 256
"""Longer ids are not kept (a marker naming one resolves to nothing)."""

_HEAD = struct.Struct(">QQ")
"""Row value: time (ms) and ordinal in the scope, then ``\\x00``-framed ids."""


def room_scope(room: str) -> bytes:
    return b"g\x00" + room.encode()


def chat_scope(sender: str, recipient: str) -> bytes:
    """Messages ``sender`` (bare) sent ``recipient`` (bare); the recipient's devices mark them."""
    return b"c\x00" + sender.encode() + b"\x00" + recipient.encode()


def _row_key(scope: bytes, seq: int) -> bytes:
    return scope + b"\x00" + u64(seq)


class MarkerTargets(Projection):
    name = "marker_targets"
    dbs = (TARGETS,)
    handles = ("message.routed", "muc.message_sent", "muc.room_destroyed")

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._db: lmdb._Database | None = None

    def _targets(self) -> lmdb._Database:
        if self._db is None:
            self._db = self.db(TARGETS)
        return self._db

    def on_message_routed(self, txn: lmdb.Transaction, c: Committed, ev: MessageRouted) -> None:
        if not ev.body or ev.type in ("groupchat", "error", "headline"):
            return
        if ev.received_at is not None:
            return  # a re-routed copy (received_at) is the same message, already kept
        sender, recipient = bare_of(ev.sender), bare_of(ev.to)
        if sender != recipient:
            self._keep(txn, c, chat_scope(sender, recipient), ev.msg_id, ev.origin_id, ev.stanza_id)

    def on_muc_message_sent(self, txn: lmdb.Transaction, c: Committed, ev: MucMessageSent) -> None:
        if ev.body:
            self._keep(txn, c, room_scope(ev.room), ev.stanza_id, ev.origin_id, ev.msg_id)

    def on_muc_room_destroyed(
        self, txn: lmdb.Transaction, c: Committed, ev: MucRoomDestroyed
    ) -> None:
        delete_prefix(txn, self._targets(), room_scope(ev.room) + b"\x00")

    def _keep(
        self, txn: lmdb.Transaction, c: Committed, scope: bytes, *candidates: str | None
    ) -> None:
        """Append the message's row at the scope's tail; drop rows past the bounds at its head."""
        ids = []
        for id_ in candidates:
            if id_ and len(id_) <= MAX_ID and id_ not in ids:
                ids.append(id_)
        if not ids:
            return
        db = self._targets()
        prefix = scope + b"\x00"
        cur = txn.cursor(db=db)
        found = cur.set_range(scope + b"\x01")
        found = cur.prev() if found else cur.last()
        newest = _HEAD.unpack_from(cur.value())[1] if found and cur.key().startswith(prefix) else 0
        at = c.envelope.at
        framed = "".join(f"\x00{id_}" for id_ in ids) + "\x00"
        txn.put(_row_key(scope, c.seq), _HEAD.pack(at, newest + 1) + framed.encode(), db=db)
        oldest_at = at - KEEP_MS
        if not cur.set_range(prefix):
            return
        while cur.key().startswith(prefix):
            row_at, ordinal = _HEAD.unpack_from(cur.value())
            if newest + 1 - ordinal < KEEP_PER_SCOPE and row_at >= oldest_at:
                break
            if not cur.delete():
                break


# -- reads -------------------------------------------------------------------------------------


def resolve(store: Store, txn: lmdb.Transaction, scope: bytes, marked: str) -> int | None:
    """The log position of the newest kept message of ``scope`` with the id ``marked``."""
    if not marked or len(marked) > MAX_ID or "\x00" in marked:
        return None
    needle = b"\x00" + marked.encode() + b"\x00"
    prefix = scope + b"\x00"
    cur = txn.cursor(db=store.db(TARGETS))
    found = cur.set_range(scope + b"\x01")
    found = cur.prev() if found else cur.last()
    while found:
        k = cur.key()
        if not k.startswith(prefix):
            return None
        if needle in cur.value()[_HEAD.size :]:
            return from_u64(k[len(prefix) :])
        found = cur.prev()
    return None


def oldest(store: Store, txn: lmdb.Transaction, scope: bytes) -> int | None:
    """The log position of the oldest message of ``scope`` still kept (``None``: none kept)."""
    prefix = scope + b"\x00"
    cur = txn.cursor(db=store.db(TARGETS))
    if not cur.set_range(prefix) or not cur.key().startswith(prefix):
        return None
    return from_u64(cur.key()[len(prefix) :])
