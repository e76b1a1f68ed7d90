"""Inbox projection (XEP-0430, ADR 0019): every user's conversations with exact unread counts.

One entry per (owner, conversation): the peer's bare JID for one-to-one chats, the room's JID for
group chats. Entries follow the archive: a one-to-one message counts for an owner whose archive
keeps it (``archived_by``), under its archive id, so the entry's ``id`` is always a MAM id the
client can page from; a room message counts for the room's members (affiliated users and current
occupants with an account here) under the room's archive id.

Counting is by ordinal, so it cannot drift. Each conversation numbers the instant messages the
owner received (``n``); ``read`` is how many of them are read. ``unread = n - read`` is never
negative and only apply changes either. An unread message keeps a row, keyed by its log position,
until it is read. A XEP-0333 ``displayed``/``acknowledged`` marker from any of the owner's devices
names a message by an id (the sender's ``id``, ``origin-id`` or the archive id) that the shared
:mod:`~xes.projections.marker_targets` index turns into a log position; the marker reads every
unread message up to exactly that one, never beyond, never backwards. An unknown or already read
message, or one no longer among the conversation's recent ones that index keeps, changes
nothing. The owner's own message reads the whole conversation (XEP-0430 §4: a message is read if
a later one is). ``inbox.updated`` resets (or marks unread) explicitly and sets the
entry's properties (archive box, mute, pin: modelled on MongooseIM's conversation properties).

An index by last activity (pinned entries first) serves the query in order; a per-owner summary
keeps the ``<fin/>`` totals. Sessions that asked for the inbox (``inbox.watched``) get the changed
entry when a marker or an explicit change moves it: managed sessions as outbox rows placed here
(ADR 0008), the others from delivery.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import lmdb

from xes.events import Committed
from xes.events.catalog import (
    AccountRemoved,
    InboxUpdated,
    InboxWatched,
    MessageRouted,
    MucMessageSent,
    MucRoomDestroyed,
)
from xes.jid import bare_of
from xes.muc.model import Room
from xes.projections import accounts as accounts_view
from xes.projections import marker_targets, stream_mgmt
from xes.projections import muc as muc_view
from xes.projections import sessions as sessions_view
from xes.projections.base import Projection, delete_prefix, iter_prefix, key
from xes.projections.marker_targets import chat_scope, room_scope
from xes.stanza.inbox import entry_message
from xes.store.env import Store, from_u64, u64

ROWS = "inbox.rows"
"""Every row of an owner's inbox in one sub-database, keyed by owner first, so the rows one
message changes share pages: one B-tree, not five, is dirtied per commit. Under the owner:
``a`` activity, ``s`` totals, ``w`` watchers, and ``c`` then the conversation, under which the
entry (``e``) and its unread rows (``u``, by log position) sit side by side: a received message
writes its entry and unread row on one page, not two."""
MEMBERS = "inbox.members"
"""Conversation -> owners with an entry (a destroyed room leaves every inbox)."""

READING_MARKERS = ("displayed", "acknowledged")
"""XEP-0430 §4: these markers read a message (and every earlier one); receipts do not."""
AFFILIATED = ("owner", "admin", "member")


@dataclass(frozen=True, slots=True)
class Entry:
    conversation: str
    n: int
    """Instant messages the owner received in this conversation."""
    read: int
    """How many of them are read."""
    last: str | None
    """Archive id of the last instant message (either direction)."""
    last_seq: int
    """Log position of the last activity (the sort key)."""
    at: int
    """Time of the last instant message (ms)."""
    room: bool
    archived: bool = False
    """In the archive box: hidden by the default view until a new message brings it back."""
    muted_until: int = 0
    """ms since the epoch; 0 when not muted."""
    pinned: bool = False
    changed: int = 0
    """Log position of the last marker or explicit change (delivery pushes that one)."""

    @property
    def unread(self) -> int:
        return self.n - self.read

    @property
    def cursor(self) -> str:
        """RSM id of the entry: its place in the activity order."""
        return f"{int(self.pinned)}-{self.last_seq}"

    def encode(self) -> bytes:
        """A fixed binary row (apply writes one per message and owner: JSON costs more)."""
        flags = self.room | self.archived << 1 | self.pinned << 2
        head = _ROW.pack(
            self.n, self.read, self.last_seq, self.at, self.muted_until, self.changed, flags
        )
        return head + (self.last or "").encode()

    @classmethod
    def decode(cls, conversation: str, raw: bytes) -> Entry:
        n, read, seq, at, muted, changed, flags = _ROW.unpack_from(raw)
        last = bytes(raw[_ROW.size :]).decode() or None
        return cls(
            conversation, n, read, last, seq, at, bool(flags & 1), bool(flags & 2),
            muted, bool(flags & 4), changed,
        )  # fmt: skip


_ROW = struct.Struct(">QQQQQQB")
_SUMMARY = struct.Struct(">QQQ")


def _conversation_prefix(owner: str, conversation: str) -> bytes:
    return key(owner, "c", conversation, "")


def _entry_key(owner: str, conversation: str) -> bytes:
    return _conversation_prefix(owner, conversation) + b"e"


def _activity_prefix(owner: str) -> bytes:
    return key(owner, "a", "")


def _activity_key(owner: str, pinned: bool, seq: int) -> bytes:
    return _activity_prefix(owner) + (b"\x01" if pinned else b"\x00") + u64(seq)


def _unread_prefix(owner: str, conversation: str) -> bytes:
    return _conversation_prefix(owner, conversation) + b"u"


def _clear_unread(txn: lmdb.Transaction, rows: lmdb._Database, prefix: bytes) -> None:
    """Delete a conversation's unread rows (everything under ``prefix`` but the entry, ``e``,
    which sorts before ``u``): one cursor pass."""
    cur = txn.cursor(db=rows)
    if not cur.set_range(prefix + b"f"):
        return
    while cur.key().startswith(prefix):
        if not cur.delete():
            break


def _summary_key(owner: str) -> bytes:
    return key(owner, "s")


def _watcher_key(owner: str, session: str) -> bytes:
    return key(owner, "w", session)


class Inbox(Projection):
    name = "inbox"
    version = 2
    """2: unread rows keyed by log position, no id rows (markers resolve via marker_targets)."""
    dbs = (ROWS, MEMBERS)
    handles = (
        "message.routed",
        "muc.message_sent",
        "muc.room_destroyed",
        "inbox.updated",
        "inbox.watched",
        "account.removed",
    )

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._rooms: dict[str, tuple[bytes, Room]] = {}
        self._handles: tuple[lmdb._Database, lmdb._Database] | None = None

    def _dbs(self) -> tuple[lmdb._Database, lmdb._Database]:
        """``(ROWS, MEMBERS)``, looked up once (the store's handles live as long as it does)."""
        if self._handles is None:
            self._handles = (self.db(ROWS), self.db(MEMBERS))
        return self._handles

    # -- one-to-one ----------------------------------------------------------------------------

    def on_message_routed(self, txn: lmdb.Transaction, c: Committed, ev: MessageRouted) -> None:
        sender = bare_of(ev.sender)
        peer = bare_of(ev.to)
        if ev.marker in READING_MARKERS and ev.marker_id and sender != peer:
            scope = chat_scope(peer, sender)
            self._read_upto(txn, c, sender, peer, scope, ev.marker_id)
        if not ev.body or not ev.stanza_id or not ev.archived_by:
            return
        at = ev.received_at or c.envelope.at
        for owner in sorted(set(ev.archived_by)):
            if owner == sender:
                self._activity(txn, c, owner, peer, ev.stanza_id, at, room=False, own=True)
            else:
                self._activity(txn, c, owner, sender, ev.stanza_id, at, room=False)

    # -- rooms ---------------------------------------------------------------------------------

    def on_muc_message_sent(self, txn: lmdb.Transaction, c: Committed, ev: MucMessageSent) -> None:
        room = self._room(txn, ev.room)
        if room is None:
            return
        speaker = room.by_session(ev.session)
        sender = speaker.bare if speaker is not None else None
        if ev.marker in READING_MARKERS and ev.marker_id and sender is not None:
            self._read_upto(txn, c, sender, ev.room, room_scope(ev.room), ev.marker_id)
        if not ev.body:
            return
        for member in self._members(txn, room):
            own = member == sender
            self._activity(txn, c, member, ev.room, ev.stanza_id, c.envelope.at, room=True, own=own)

    def on_muc_room_destroyed(
        self, txn: lmdb.Transaction, c: Committed, ev: MucRoomDestroyed
    ) -> None:
        prefix = key(ev.room, "")
        owners = [k[len(prefix) :].decode() for k, _ in iter_prefix(txn, self.db(MEMBERS), prefix)]
        for owner in owners:
            self._drop(txn, owner, ev.room)

    def _room(self, txn: lmdb.Transaction, jid: str) -> Room | None:
        raw = muc_view.raw(self.store, txn, jid)
        if raw is None:
            return None
        cached = self._rooms.get(jid)
        if cached is not None and cached[0] == raw:
            return cached[1]
        room = muc_view.parse(raw)
        if len(self._rooms) >= 1024:
            self._rooms.clear()
        self._rooms[jid] = (raw, room)
        return room

    def _members(self, txn: lmdb.Transaction, room: Room) -> list[str]:
        """Whose inbox a room message reaches: affiliated users and the users present, if
        they have an account here (a remote occupant's inbox is its own server's)."""
        found = {b for b, a in room.affiliations.items() if a in AFFILIATED}
        found.update(o.bare for o in room.occupants.values())
        return [
            b
            for b in sorted(found)
            if room.affiliation(b) != "outcast" and accounts_view.exists(self.store, txn, b)
        ]

    # -- explicit changes ----------------------------------------------------------------------

    def on_inbox_updated(self, txn: lmdb.Transaction, c: Committed, ev: InboxUpdated) -> None:
        entry = self._entry(txn, ev.owner, ev.conversation)
        if entry is None:
            return  # gone meanwhile (the account or room was removed)
        n, read = entry.n, entry.read
        if ev.read is True:
            read = n
            _clear_unread(txn, self.db(ROWS), _conversation_prefix(ev.owner, ev.conversation))
        elif ev.read is False and entry.unread == 0 and n > 0:
            read = n - 1  # "mark as unread" (MongooseIM): one message shows as new
        new = Entry(
            entry.conversation,
            n,
            read,
            entry.last,
            entry.last_seq,
            entry.at,
            entry.room,
            entry.archived if ev.archived is None else ev.archived,
            entry.muted_until if ev.muted_until is None else ev.muted_until,
            entry.pinned if ev.pinned is None else ev.pinned,
            c.seq,
        )
        self._save(txn, ev.owner, entry, new)
        self._push(txn, c, ev.owner, new)

    def on_inbox_watched(self, txn: lmdb.Transaction, c: Committed, ev: InboxWatched) -> None:
        txn.put(_watcher_key(ev.owner, ev.session), b"", db=self.db(ROWS))

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        activity = iter_prefix(txn, self.db(ROWS), _activity_prefix(ev.jid))
        for conv in [bytes(v).decode() for _, v in activity]:
            txn.delete(key(conv, ev.jid), db=self.db(MEMBERS))
        delete_prefix(txn, self.db(ROWS), key(ev.jid, ""))

    # -- the fold ------------------------------------------------------------------------------

    def _entry(self, txn: lmdb.Transaction, owner: str, conversation: str) -> Entry | None:
        raw = txn.get(_entry_key(owner, conversation), db=self.db(ROWS))
        return None if raw is None else Entry.decode(conversation, raw)

    def _activity(
        self,
        txn: lmdb.Transaction,
        c: Committed,
        owner: str,
        conversation: str,
        stanza_id: str,
        at: int,
        *,
        room: bool,
        own: bool = False,
    ) -> None:
        """An instant message in the conversation: the owner's own (reads all) or received.

        The hot path of apply (once per archived message and owner): rows are read and written
        as bytes, no :class:`Entry` is built, and the totals are touched only when the unread
        count or the number of entries changes."""
        rows, members = self._dbs()
        prefix = _conversation_prefix(owner, conversation)
        entry_key = prefix + b"e"
        raw = txn.get(entry_key, db=rows)
        if raw is None:
            n = read = seq = muted = changed = pinned = 0
        else:
            n, read, seq, old_at, muted, changed, flags = _ROW.unpack_from(raw)
            at = max(at, old_at)
            pinned = flags & 4
        was_unread = n - read
        if own:
            if was_unread:
                _clear_unread(txn, rows, prefix)
            read = n
        else:
            n += 1
            txn.put(prefix + b"u" + u64(c.seq), b"", db=rows)
        activity = _activity_prefix(owner) + (b"\x01" if pinned else b"\x00")
        if raw is None:
            txn.put(key(conversation, owner), b"", db=members)
        elif seq != c.seq:
            txn.delete(activity + u64(seq), db=rows)
        if raw is None or seq != c.seq:
            txn.put(activity + u64(c.seq), conversation.encode(), db=rows)
        # A new message brings an archived conversation back (MongooseIM): flag 2 cleared.
        flags = room | pinned
        row = _ROW.pack(n, read, c.seq, at, muted, changed, flags) + stanza_id.encode()
        txn.put(entry_key, row, db=rows)
        unread = n - read
        if raw is None or unread != was_unread:
            summary_key = _summary_key(owner)
            counts = txn.get(summary_key, db=rows)
            entries, conversations, total = _SUMMARY.unpack(counts) if counts else (0, 0, 0)
            entries += raw is None
            conversations += (unread > 0) - (was_unread > 0)
            total += unread - was_unread
            txn.put(summary_key, _SUMMARY.pack(entries, conversations, total), db=rows)

    def _read_upto(
        self,
        txn: lmdb.Transaction,
        c: Committed,
        owner: str,
        conversation: str,
        scope: bytes,
        marked: str,
    ) -> None:
        """Read every unread message of the conversation up to the one ``marked`` names.

        The message must still be unread (its row exists): a marker for a read, unknown or
        forgotten message changes nothing. Every message after it is unread too (a later
        marker would have read it), so the rows left after it say how many stay unread."""
        target = marker_targets.resolve(self.store, txn, scope, marked)
        if target is None:
            return
        rows = self._dbs()[0]
        prefix = _unread_prefix(owner, conversation)
        if txn.get(prefix + u64(target), db=rows) is None:
            return
        entry = self._entry(txn, owner, conversation)
        if entry is None:
            return
        cur = txn.cursor(db=rows)
        cur.set_range(prefix)
        while cur.key().startswith(prefix) and from_u64(cur.key()[len(prefix) :]) <= target:
            if not cur.delete():
                break
        left = 0
        while cur.key().startswith(prefix):
            left += 1
            if not cur.next():
                break
        new = Entry(
            conversation,
            entry.n,
            max(entry.read, entry.n - left),
            entry.last,
            entry.last_seq,
            entry.at,
            entry.room,
            entry.archived,
            entry.muted_until,
            entry.pinned,
            c.seq,
        )
        self._save(txn, owner, entry, new)
        self._push(txn, c, owner, new)

    def _save(self, txn: lmdb.Transaction, owner: str, old: Entry | None, new: Entry) -> None:
        activity = rows = self.db(ROWS)
        if old is not None and (old.last_seq, old.pinned) != (new.last_seq, new.pinned):
            txn.delete(_activity_key(owner, old.pinned, old.last_seq), db=activity)
        if old is None or (old.last_seq, old.pinned) != (new.last_seq, new.pinned):
            txn.put(
                _activity_key(owner, new.pinned, new.last_seq),
                new.conversation.encode(),
                db=activity,
            )
        txn.put(_entry_key(owner, new.conversation), new.encode(), db=rows)
        was_unread = old.unread if old else 0
        if old is None or was_unread != new.unread:
            entries, conversations, unread = _counts(self.store, txn, owner)
            entries += 0 if old else 1
            conversations += int(new.unread > 0) - int(was_unread > 0)
            unread += new.unread - was_unread
            txn.put(_summary_key(owner), _SUMMARY.pack(entries, conversations, unread), db=rows)

    def _drop(self, txn: lmdb.Transaction, owner: str, conversation: str) -> None:
        entry = self._entry(txn, owner, conversation)
        if entry is None:
            return
        rows = self.db(ROWS)
        txn.delete(_activity_key(owner, entry.pinned, entry.last_seq), db=rows)
        txn.delete(_entry_key(owner, conversation), db=rows)
        txn.delete(key(conversation, owner), db=self.db(MEMBERS))
        _clear_unread(txn, rows, _conversation_prefix(owner, conversation))
        entries, conversations, unread = _counts(self.store, txn, owner)
        summary_row = _SUMMARY.pack(
            entries - 1, conversations - int(entry.unread > 0), unread - entry.unread
        )
        txn.put(_summary_key(owner), summary_row, db=rows)

    def _push(self, txn: lmdb.Transaction, c: Committed, owner: str, entry: Entry) -> None:
        """The changed entry, as outbox rows of the owner's managed sessions that watch the
        inbox (the others get it from delivery); watchers whose session ended are forgotten."""
        for session in watchers(self.store, txn, owner):
            view = sessions_view.get(self.store, txn, session)
            if view is None:
                txn.delete(_watcher_key(owner, session), db=self.db(ROWS))
                continue
            if stream_mgmt.managed(self.store, txn, session):
                xml = entry_message(owner, view.jid, entry)
                stream_mgmt.queue(self.store, txn, session, [xml], c.envelope.at)


def _counts(store: Store, txn: lmdb.Transaction, owner: str) -> tuple[int, int, int]:
    raw = txn.get(_summary_key(owner), db=store.db(ROWS))
    return (0, 0, 0) if raw is None else _SUMMARY.unpack(raw)


# -- reads -------------------------------------------------------------------------------------


def entry(store: Store, txn: lmdb.Transaction, owner: str, conversation: str) -> Entry | None:
    raw = txn.get(_entry_key(owner, conversation), db=store.db(ROWS))
    return None if raw is None else Entry.decode(conversation, raw)


def summary(store: Store, txn: lmdb.Transaction, owner: str) -> dict[str, int]:
    """``entries``, ``unread_conversations`` and ``unread`` (all messages) of the owner."""
    entries, conversations, unread = _counts(store, txn, owner)
    return {"entries": entries, "unread_conversations": conversations, "unread": unread}


def watchers(store: Store, txn: lmdb.Transaction, owner: str) -> list[str]:
    prefix = _watcher_key(owner, "")
    return [k[len(prefix) :].decode() for k, _ in iter_prefix(txn, store.db(ROWS), prefix)]


def watching(store: Store, txn: lmdb.Transaction, owner: str, session: str) -> bool:
    return txn.get(_watcher_key(owner, session), db=store.db(ROWS)) is not None


def _cursor_key(owner: str, cursor: str) -> bytes:
    """The activity key an RSM cursor (``Entry.cursor``) names; ``ValueError`` if not ours."""
    pinned, _, seq = cursor.partition("-")
    if pinned not in ("0", "1") or not seq.isdigit():
        raise ValueError(cursor)
    return _activity_key(owner, pinned == "1", int(seq))


def by_activity(
    store: Store, txn: lmdb.Transaction, owner: str, before: str | None = None
) -> Iterator[Entry]:
    """The owner's entries, pinned first, then most recent activity first; from just below
    the RSM cursor ``before`` when given (``ValueError`` if it is not one of ours)."""
    prefix = _activity_prefix(owner)
    cur = txn.cursor(db=store.db(ROWS))
    start = prefix + b"\x02" if before is None else _cursor_key(owner, before)
    found = cur.set_range(start)
    found = cur.prev() if found else cur.last()
    yield from _entries(store, txn, owner, cur, found, cur.prev)


def by_activity_upwards(
    store: Store, txn: lmdb.Transaction, owner: str, after: str | None = None
) -> Iterator[Entry]:
    """The same order walked the other way (least recent first): from just above the RSM
    cursor ``after``, or from the least recent entry. RSM ``<before/>`` pages with it."""
    prefix = _activity_prefix(owner)
    cur = txn.cursor(db=store.db(ROWS))
    if after is None:
        found = cur.set_range(prefix)
    else:
        key = _cursor_key(owner, after)
        found = cur.set_range(key)
        if found and cur.key() == key:
            found = cur.next()
    yield from _entries(store, txn, owner, cur, found, cur.next)


def _entries(
    store: Store,
    txn: lmdb.Transaction,
    owner: str,
    cur: lmdb.Cursor,
    found: bool,
    step: Callable[[], bool],
) -> Iterator[Entry]:
    prefix = _activity_prefix(owner)
    rows = store.db(ROWS)
    while found and cur.key().startswith(prefix):
        conversation = bytes(cur.value()).decode()
        raw = txn.get(_entry_key(owner, conversation), db=rows)
        if raw is not None:
            yield Entry.decode(conversation, raw)
        found = step()
