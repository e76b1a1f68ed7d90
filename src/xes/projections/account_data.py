"""Account data: private XML storage (XEP-0049), vcard-temp (XEP-0054, with the XEP-0153
photo hash presence carries), and when the account was last seen (XEP-0012).

The documents are small and replaced whole; the projection stores the last one and forgets
everything with the account. Last activity is the time and status of the latest unavailable
broadcast presence of any of the account's resources.
"""

from __future__ import annotations

from typing import Any

import lmdb

from xes.events import Committed
from xes.events.catalog import (
    AccountPasswordChanged,
    AccountRemoved,
    FastTokenIssued,
    FastTokenRevoked,
    PresenceUpdated,
    PrivateStored,
    VcardStored,
)
from xes.jid import bare_of
from xes.projections.base import Projection, delete_prefix, dump, iter_prefix, key, load
from xes.store.env import Store
from xes.xml import ns, parse_fragment

PRIVATE = "private.xml"
VCARDS = "vcard.xml"
LAST = "last.activity"
FAST = "fast.tokens"


class AccountData(Projection):
    name = "account_data"
    dbs = (PRIVATE, VCARDS, LAST, FAST)
    handles = (
        "private.stored",
        "vcard.stored",
        "presence.updated",
        "fast.token_issued",
        "fast.token_revoked",
        "account.password_changed",
        "account.removed",
    )

    def on_fast_token_issued(
        self, txn: lmdb.Transaction, c: Committed, ev: FastTokenIssued
    ) -> None:
        row = {
            "id": ev.token_id,
            "hash": ev.token_hash,
            "mechanism": ev.mechanism,
            "expires": ev.expires,
        }
        txn.put(key(ev.jid, ev.agent), dump(row), db=self.db(FAST))

    def on_fast_token_revoked(
        self, txn: lmdb.Transaction, c: Committed, ev: FastTokenRevoked
    ) -> None:
        if ev.agent:
            txn.delete(key(ev.jid, ev.agent), db=self.db(FAST))
        else:
            delete_prefix(txn, self.db(FAST), key(ev.jid, ""))

    def on_account_password_changed(
        self, txn: lmdb.Transaction, c: Committed, ev: AccountPasswordChanged
    ) -> None:
        delete_prefix(txn, self.db(FAST), key(ev.jid, ""))  # a new password ends every token

    def on_presence_updated(self, txn: lmdb.Transaction, c: Committed, ev: PresenceUpdated) -> None:
        if ev.available:
            return
        status = None
        if "<status" in ev.xml:
            el = parse_fragment(ev.xml.encode()).find("{%s}status" % ns.CLIENT)
            status = el.text[:1024] if el is not None else None
        row = dump({"at": c.envelope.at, "status": status})
        txn.put(bare_of(ev.jid).encode(), row, db=self.db(LAST))

    def on_private_stored(self, txn: lmdb.Transaction, c: Committed, ev: PrivateStored) -> None:
        txn.put(key(ev.owner, ev.key), ev.xml.encode(), db=self.db(PRIVATE))

    def on_vcard_stored(self, txn: lmdb.Transaction, c: Committed, ev: VcardStored) -> None:
        row: dict[str, Any] = {"xml": ev.xml, "photo": ev.photo_hash}
        txn.put(ev.owner.encode(), dump(row), db=self.db(VCARDS))

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        delete_prefix(txn, self.db(PRIVATE), key(ev.jid, ""))
        txn.delete(ev.jid.encode(), db=self.db(VCARDS))
        txn.delete(ev.jid.encode(), db=self.db(LAST))
        delete_prefix(txn, self.db(FAST), key(ev.jid, ""))


def private(store: Store, txn: lmdb.Transaction, owner: str, clark: str) -> str | None:
    raw = txn.get(key(owner, clark), db=store.db(PRIVATE))
    return None if raw is None else raw.decode()


def vcard(store: Store, txn: lmdb.Transaction, owner: str) -> tuple[str, str | None] | None:
    """(vCard XML, photo hash) of ``owner``, or None if it never stored one."""
    obj = load(txn.get(owner.encode(), db=store.db(VCARDS)))
    return None if obj is None else (obj["xml"], obj["photo"])


def last_activity(store: Store, txn: lmdb.Transaction, bare: str) -> tuple[int, str | None] | None:
    """(ms time, status) of the account's last unavailable presence, or None if never seen."""
    obj = load(txn.get(bare.encode(), db=store.db(LAST)))
    return None if obj is None else (obj["at"], obj["status"])


def fast_token(store: Store, txn: lmdb.Transaction, jid: str, agent: str) -> dict[str, Any] | None:
    """The FAST token row (id, hash, mechanism, expires) of one device of ``jid``."""
    return load(txn.get(key(jid, agent), db=store.db(FAST)))


def fast_tokens(store: Store, txn: lmdb.Transaction, jid: str) -> dict[str, dict[str, Any]]:
    """Every FAST token row of ``jid`` by device (user-agent id), for ``xes audit user``."""
    prefix = key(jid, "")
    return {k[len(prefix) :].decode(): load(v) for k, v in iter_prefix(txn, store.db(FAST), prefix)}
