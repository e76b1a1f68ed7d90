"""Message archive projection (XEP-0313, ADR 0009): every user's history, queryable by page.

Fed by ``message.routed``: each bare JID the proposer listed in ``archived_by`` (its archiving
preferences applied) gets one row, keyed by owner and the event's log position (``seq``), so an
archive is in log order on every node. The row keeps the archive id the proposer chose
(``stanza_id``, XEP-0359), the peer, the stanza and its time. Times are made monotonic per owner
(a message is never stamped earlier than the one before it in the same archive), so a date range
is one contiguous run of rows, found through a time index; the same holds for the per-peer index.
Every query is a bounded cursor walk: its cost does not depend on the archive's size.

Indexes, all per owner: archive id → seq (RSM ``after``/``before``, ``after-id``, ``ids``), time,
peer, and the sender's ``origin-id`` (a message re-sent with the same origin-id after a reconnect
is not archived twice). ``archive.expired`` applies a domain's retention limit through a
domain-wide time index.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import lmdb

from xes.events import Committed
from xes.events.catalog import (
    AccountRemoved,
    ArchiveExpired,
    ArchivePrefsSet,
    HoldLifted,
    MessageRouted,
    MucMessageSent,
    MucRoomDestroyed,
)
from xes.jid import bare_of
from xes.projections import holds as holds_view
from xes.projections.base import Projection, delete_prefix, dump, iter_prefix, load
from xes.stanza import sid
from xes.stanza.archiving import Prefs
from xes.store.env import Store, from_u64, u64
from xes.xml import parse_fragment, serialize

MSGS = "archive.msgs"
IDS = "archive.ids"
TIME = "archive.time"
PEER = "archive.peer"
ORIGIN = "archive.origin"
META = "archive.meta"
EXPIRY = "archive.expiry"
HELD = "archive.held"
"""``hold target \\0 expiry key`` -> ``b""``: messages past retention that a legal hold keeps
(ADR 0024), out of the expiry index until the hold is lifted."""
PREFS = "archive.prefs"


class ItemNotFound(Exception):
    """A query named an archive id this archive does not hold (XEP-0313: item-not-found)."""


def _owner(owner: str) -> bytes:
    return owner.encode() + b"\x00"


def _peer(owner: str, peer_bare: str) -> bytes:
    return owner.encode() + b"\x00" + peer_bare.encode() + b"\x00"


def domain_of(jid: str) -> str:
    return bare_of(jid).rsplit("@", 1)[-1]


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    seq: int
    id: str
    at: int
    """Archive time in ms (monotonic within the archive): the XEP-0203 stamp in results."""
    peer: str
    """The other party's JID as addressed (XEP-0313 ``with``)."""
    outgoing: bool
    xml: str


@dataclass(frozen=True, slots=True)
class ArchiveQuery:
    """A XEP-0313 query, its form fields and RSM (XEP-0059) resolved."""

    with_: str | None = None
    start: int | None = None
    end: int | None = None
    after_id: str | None = None
    before_id: str | None = None
    ids: tuple[str, ...] | None = None
    max: int = 50
    after: str | None = None
    """RSM ``<after>``: the page following this id."""
    before: str | None = None
    """RSM ``<before>``: the page preceding this id; ``""`` for the last page."""
    min_seq: int = 0
    """Only rows logged after this position: a room's archive as the room of that name now
    sees it (an earlier room with the same JID kept its messages, this one does not show them)."""

    @property
    def filtered(self) -> bool:
        return any(
            x is not None
            for x in (self.with_, self.start, self.end, self.after_id, self.before_id, self.ids)
        )


@dataclass(frozen=True, slots=True)
class Page:
    items: list[ArchivedMessage] = field(default_factory=list)
    complete: bool = True
    """No further item in the paging direction (XEP-0313 ``<fin complete='true'/>``)."""
    count: int | None = None
    """Size of the whole result set, where it is known without counting (RSM ``<count/>``)."""


class Archive(Projection):
    name = "archive"
    version = 2  # 2: archive.held (legal holds, ADR 0024)
    dbs = (MSGS, IDS, TIME, PEER, ORIGIN, META, EXPIRY, PREFS, HELD)
    handles = (
        "hold.lifted",
        "message.routed",
        "archive.prefs_set",
        "archive.expired",
        "account.removed",
        "muc.message_sent",
        "muc.room_destroyed",
    )

    def on_message_routed(self, txn: lmdb.Transaction, c: Committed, ev: MessageRouted) -> None:
        if not ev.archived_by or not ev.stanza_id:
            return
        sender = bare_of(ev.sender)
        origin = ev.origin_id.encode() if ev.origin_id else None
        if (
            origin
            and sender in ev.archived_by
            and txn.get(_owner(sender) + origin, db=self.db(ORIGIN))
        ):
            return  # the same message re-sent (XEP-0359 origin-id): archived once
        for owner in sorted(set(ev.archived_by)):
            outgoing = owner == sender
            peer = ev.to if outgoing else ev.sender
            at = ev.received_at or c.envelope.at
            origin_id = ev.origin_id if outgoing else None
            self._insert(txn, c, owner, peer, outgoing, ev.stanza_id, ev.xml, at, origin_id)

    def on_muc_message_sent(self, txn: lmdb.Transaction, c: Committed, ev: MucMessageSent) -> None:
        """A room's archive (XEP-0313 §5.1.? on the room JID): owner is the room, peer the
        sender's occupant JID as the message is ``from``."""
        if not ev.archived:
            return
        peer = f"{ev.room}/{ev.nick}"
        self._insert(txn, c, ev.room, peer, False, ev.stanza_id, ev.xml, c.envelope.at, None)

    def on_muc_room_destroyed(
        self, txn: lmdb.Transaction, c: Committed, ev: MucRoomDestroyed
    ) -> None:
        if holds_view.is_held(self.store, txn, holds_view.room_target(ev.room)):
            # Kept for the hold; a new room of that JID does not see it (ArchiveQuery.min_seq),
            # and the rows expire once the hold is lifted.
            return
        self._drop_owner(txn, ev.room)

    def _insert(
        self,
        txn: lmdb.Transaction,
        c: Committed,
        owner: str,
        peer: str,
        outgoing: bool,
        stanza_id: str,
        xml: str,
        received: int,
        origin_id: str | None,
    ) -> None:
        prefix = _owner(owner)
        if txn.get(prefix + stanza_id.encode(), db=self.db(IDS)) is not None:
            return  # this archive holds the message already (a copy routed again)
        meta = load(txn.get(owner.encode(), db=self.db(META))) or {"count": 0, "last_at": 0}
        at = max(received, meta["last_at"])
        seq = u64(c.seq)
        row: dict[str, Any] = {"id": stanza_id, "at": at, "peer": peer, "xml": xml}
        if outgoing:
            row["out"] = True
            if origin_id:
                row["origin"] = origin_id
                txn.put(prefix + origin_id.encode(), seq, db=self.db(ORIGIN))
        txn.put(prefix + seq, dump(row), db=self.db(MSGS))
        txn.put(prefix + stanza_id.encode(), seq, db=self.db(IDS))
        txn.put(prefix + u64(at) + seq, b"", db=self.db(TIME))
        txn.put(_peer(owner, bare_of(peer)) + seq, b"", db=self.db(PEER))
        txn.put(_expiry_key(owner, at, c.seq), b"", db=self.db(EXPIRY))
        meta = {"count": meta["count"] + 1, "last_at": at}
        txn.put(owner.encode(), dump(meta), db=self.db(META))

    def _delete(self, txn: lmdb.Transaction, owner: str, seq: int) -> bool:
        prefix = _owner(owner)
        raw = txn.get(prefix + u64(seq), db=self.db(MSGS))
        if raw is None:
            return False
        row = load(raw)
        txn.delete(prefix + u64(seq), db=self.db(MSGS))
        txn.delete(prefix + row["id"].encode(), db=self.db(IDS))
        txn.delete(prefix + u64(row["at"]) + u64(seq), db=self.db(TIME))
        txn.delete(_peer(owner, bare_of(row["peer"])) + u64(seq), db=self.db(PEER))
        txn.delete(_expiry_key(owner, row["at"], seq), db=self.db(EXPIRY))
        origin = row.get("origin")
        if origin and txn.get(prefix + origin.encode(), db=self.db(ORIGIN)) == u64(seq):
            txn.delete(prefix + origin.encode(), db=self.db(ORIGIN))
        meta = load(txn.get(owner.encode(), db=self.db(META)))
        if meta is not None:
            meta["count"] -= 1
            txn.put(owner.encode(), dump(meta), db=self.db(META))
        return True

    def on_archive_prefs_set(
        self, txn: lmdb.Transaction, c: Committed, ev: ArchivePrefsSet
    ) -> None:
        obj = {"default": ev.default, "always": sorted(ev.always), "never": sorted(ev.never)}
        txn.put(ev.owner.encode(), dump(obj), db=self.db(PREFS))

    def on_archive_expired(self, txn: lmdb.Transaction, c: Committed, ev: ArchiveExpired) -> None:
        prefix = ev.domain.encode() + b"\x00"
        doomed: list[bytes] = []
        for k, _ in iter_prefix(txn, self.db(EXPIRY), prefix):
            if len(doomed) >= ev.limit or from_u64(k[len(prefix) : len(prefix) + 8]) >= ev.before:
                break
            doomed.append(k)
        for k in doomed:
            owner = k[len(prefix) + 16 :].decode()
            seq = from_u64(k[len(prefix) + 8 : len(prefix) + 16])
            raw = txn.get(_owner(owner) + u64(seq), db=self.db(MSGS))
            if raw is None:
                txn.delete(k, db=self.db(EXPIRY))  # its row went with its account
                continue
            target = holds_view.covering(self.store, txn, owner, bare_of(load(raw)["peer"]))
            if target is not None:
                # A legal hold keeps it: set aside, so expiry does not meet it again.
                txn.delete(k, db=self.db(EXPIRY))
                txn.put(_held_key(target, k), b"", db=self.db(HELD))
                continue
            self._delete(txn, owner, seq)

    def on_hold_lifted(self, txn: lmdb.Transaction, c: Committed, ev: HoldLifted) -> None:
        """What the lifted hold kept goes back to expiry (the next check deletes what is past
        retention), unless another hold in force covers it too. ``holds`` applied the lift
        already (it comes first in the projector), so :func:`holds.covering` no longer sees it.
        One event moves every row the hold kept: holds are few and lifted rarely."""
        prefix = ev.target.encode() + b"\x00"
        kept = [k[len(prefix) :] for k, _ in iter_prefix(txn, self.db(HELD), prefix)]
        for expiry in kept:
            txn.delete(prefix + expiry, db=self.db(HELD))
            domain_end = expiry.index(b"\x00") + 1
            owner = expiry[domain_end + 16 :].decode()
            seq = from_u64(expiry[domain_end + 8 : domain_end + 16])
            raw = txn.get(_owner(owner) + u64(seq), db=self.db(MSGS))
            if raw is None:
                continue  # deleted meanwhile (a room's whole archive, say)
            target = holds_view.covering(self.store, txn, owner, bare_of(load(raw)["peer"]))
            if target is not None:
                txn.put(_held_key(target, expiry), b"", db=self.db(HELD))
            else:
                txn.put(expiry, b"", db=self.db(EXPIRY))

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        self._drop_owner(txn, ev.jid)

    def _drop_owner(self, txn: lmdb.Transaction, owner: str) -> None:
        drop_owner(self.store, txn, owner)


def drop_owner(store: Store, txn: lmdb.Transaction, owner: str) -> None:
    """Delete ``owner``'s whole archive (an account removed, a room that ended)."""
    prefix = _owner(owner)
    for k, v in list(iter_prefix(txn, store.db(MSGS), prefix)):
        seq = from_u64(k[len(prefix) :])
        txn.delete(_expiry_key(owner, load(v)["at"], seq), db=store.db(EXPIRY))
    for name in (MSGS, IDS, TIME, PEER, ORIGIN):
        delete_prefix(txn, store.db(name), prefix)
    txn.delete(owner.encode(), db=store.db(META))
    txn.delete(owner.encode(), db=store.db(PREFS))


def _held_key(target: str, expiry_key: bytes) -> bytes:
    return target.encode() + b"\x00" + expiry_key


def _expiry_key(owner: str, at: int, seq: int) -> bytes:
    return domain_of(owner).encode() + b"\x00" + u64(at) + u64(seq) + owner.encode()


# -- reads -------------------------------------------------------------------------------------


def prefs(store: Store, txn: lmdb.Transaction, owner: str, default: str) -> Prefs:
    """The owner's preferences; ``default`` (configuration) until the owner set any."""
    obj = load(txn.get(owner.encode(), db=store.db(PREFS)))
    if obj is None:
        return Prefs(default)
    return Prefs(obj["default"], tuple(obj["always"]), tuple(obj["never"]))


def has_origin(store: Store, txn: lmdb.Transaction, owner: str, origin_id: str) -> bool:
    """``owner`` sent (and archived) a message with this ``origin-id`` already."""
    return txn.get(_owner(owner) + origin_id.encode(), db=store.db(ORIGIN)) is not None


def count(store: Store, txn: lmdb.Transaction, owner: str) -> int:
    meta = load(txn.get(owner.encode(), db=store.db(META)))
    return 0 if meta is None else int(meta["count"])


def _row(store: Store, txn: lmdb.Transaction, owner: str, seq: int) -> ArchivedMessage | None:
    raw = txn.get(_owner(owner) + u64(seq), db=store.db(MSGS))
    if raw is None:
        return None
    obj = load(raw)
    outgoing = bool(obj.get("out"))
    xml = _as_owner_sees(owner, obj["id"], obj["xml"]) if outgoing else obj["xml"]
    return ArchivedMessage(seq, obj["id"], obj["at"], obj["peer"], outgoing, xml)


def _as_owner_sees(owner: str, id_: str, xml: str) -> str:
    """An outgoing message as its sender's archive returns it: with the ``stanza-id`` of this
    archive (``by`` = the owner, XEP-0359 §4), not the recipient's.

    The event stores one copy of the stanza, stamped for the recipient; the sender's id is the
    same value, so it is put in place here, when read, rather than in every node's apply."""
    stanza = sid.with_stanza_id(parse_fragment(xml.encode()), owner, id_, owner.split("@")[-1])
    return serialize(stanza).decode()


def seq_of(store: Store, txn: lmdb.Transaction, owner: str, id_: str) -> int:
    raw = txn.get(_owner(owner) + id_.encode(), db=store.db(IDS))
    if raw is None:
        raise ItemNotFound(id_)
    return from_u64(raw)


def by_id(store: Store, txn: lmdb.Transaction, owner: str, id_: str) -> ArchivedMessage | None:
    """The message ``owner``'s archive keeps under ``id_`` (as :func:`query` returns it)."""
    raw = txn.get(_owner(owner) + id_.encode(), db=store.db(IDS))
    return None if raw is None else _row(store, txn, owner, from_u64(raw))


def edges(
    store: Store, txn: lmdb.Transaction, owner: str, min_seq: int = 0
) -> tuple[ArchivedMessage, ArchivedMessage] | None:
    """The first and the last message of the archive (XEP-0313 metadata), or None if empty
    (only rows after ``min_seq``: see :attr:`ArchiveQuery.min_seq`)."""
    prefix = _owner(owner)
    cur = txn.cursor(db=store.db(MSGS))
    if not cur.set_range(prefix + u64(min_seq + 1)) or not cur.key().startswith(prefix):
        return None
    first = from_u64(cur.key()[len(prefix) :])
    last = _last_below(txn, store.db(MSGS), prefix, None)
    assert last is not None
    a, b = _row(store, txn, owner, first), _row(store, txn, owner, last)
    assert a is not None and b is not None
    return a, b


def _last_below(
    txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes, bound: bytes | None
) -> int | None:
    """Sequence number of the last key under ``prefix`` that sorts below ``prefix + bound``."""
    cur = txn.cursor(db=db)
    upper = prefix + bound if bound is not None else _successor(prefix)
    found = cur.prev() if cur.set_range(upper) else cur.last()
    if not found or not cur.key().startswith(prefix):
        return None
    return from_u64(cur.key()[-8:])


def _successor(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (it ends with NUL)."""
    return prefix[:-1] + b"\x01"


def query(store: Store, txn: lmdb.Transaction, owner: str, q: ArchiveQuery) -> Page:
    """One page of ``owner``'s archive. Raises :class:`ItemNotFound` for an unknown id."""
    if q.ids is not None:
        seqs = sorted({seq_of(store, txn, owner, id_) for id_ in q.ids})
        if any(seq <= q.min_seq for seq in seqs):
            raise ItemNotFound("an earlier room's message")
        items = [m for s in seqs if (m := _row(store, txn, owner, s)) is not None]
        return Page(items[: q.max], complete=len(items) <= q.max)
    lo, hi = q.min_seq + 1 if q.min_seq else 0, (1 << 64) - 1  # inclusive sequence bounds
    if q.after_id is not None:
        lo = max(lo, seq_of(store, txn, owner, q.after_id) + 1)
    if q.before_id is not None:
        hi = min(hi, seq_of(store, txn, owner, q.before_id) - 1)
    if q.start is not None:
        first = _first_at_or_after(store, txn, owner, q.start)
        if first is None:
            return Page([], True, None)
        lo = max(lo, first)
    if q.end is not None:
        last = _last_below(txn, store.db(TIME), _owner(owner), u64(q.end + 1))
        if last is None:
            return Page([], True, None)
        hi = min(hi, last)
    backwards = q.before is not None
    if q.after:
        lo = max(lo, seq_of(store, txn, owner, q.after) + 1)
    if q.before:
        hi = min(hi, seq_of(store, txn, owner, q.before) - 1)
    full_jid = q.with_ if q.with_ is not None and "/" in q.with_ else None
    if q.with_ is not None:
        db, prefix = store.db(PEER), _peer(owner, bare_of(q.with_))
    else:
        db, prefix = store.db(MSGS), _owner(owner)
    items: list[ArchivedMessage] = []
    more = False
    for seq in _walk(txn, db, prefix, lo, hi, backwards):
        row = _row(store, txn, owner, seq)
        if row is None or (full_jid is not None and row.peer != full_jid):
            continue
        if len(items) == q.max:
            more = True
            break
        items.append(row)
    if backwards:
        items.reverse()
    total = None if q.filtered or q.min_seq else count(store, txn, owner)
    return Page(items, complete=not more, count=total)


def _first_at_or_after(store: Store, txn: lmdb.Transaction, owner: str, at: int) -> int | None:
    prefix = _owner(owner)
    cur = txn.cursor(db=store.db(TIME))
    if not cur.set_range(prefix + u64(at)) or not cur.key().startswith(prefix):
        return None
    return from_u64(cur.key()[-8:])


def _walk(
    txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes, lo: int, hi: int, backwards: bool
) -> Iterator[int]:
    """Sequence numbers in ``[lo, hi]`` under ``prefix`` (keys end with ``u64(seq)``)."""
    if lo > hi:
        return
    cur = txn.cursor(db=db)
    if backwards:
        upper = prefix + u64(hi)
        ok = (cur.key() == upper or cur.prev()) if cur.set_range(upper) else cur.last()
        while ok and cur.key().startswith(prefix):
            seq = from_u64(cur.key()[len(prefix) :])
            if seq < lo:
                return
            if seq <= hi:
                yield seq
            ok = cur.prev()
    else:
        ok = cur.set_range(prefix + u64(lo))
        while ok and cur.key().startswith(prefix):
            seq = from_u64(cur.key()[len(prefix) :])
            if seq > hi:
                return
            yield seq
            ok = cur.next()


def expiry_pending(store: Store, txn: lmdb.Transaction, domain: str, before: int) -> bool:
    """Some archived message of ``domain`` is stamped before ``before`` (retention is due)."""
    prefix = domain.encode() + b"\x00"
    cur = txn.cursor(db=store.db(EXPIRY))
    if not cur.set_range(prefix) or not cur.key().startswith(prefix):
        return False
    return from_u64(cur.key()[len(prefix) : len(prefix) + 8]) < before
