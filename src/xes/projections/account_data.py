"""Account data kept as XML documents: private XML storage (XEP-0049) and vcard-temp
(XEP-0054, with the XEP-0153 photo hash presence carries).

Both are small per-account documents a client replaces whole; the projection stores the last
one and forgets everything with the account.
"""

from __future__ import annotations

from typing import Any

import lmdb

from xes.events import Committed
from xes.events.catalog import AccountRemoved, PrivateStored, VcardStored
from xes.projections.base import Projection, delete_prefix, dump, key, load
from xes.store.env import Store

PRIVATE = "private.xml"
VCARDS = "vcard.xml"


class AccountData(Projection):
    name = "account_data"
    dbs = (PRIVATE, VCARDS)
    handles = ("private.stored", "vcard.stored", "account.removed")

    def on_private_stored(self, txn: lmdb.Transaction, c: Committed, ev: PrivateStored) -> None:
        txn.put(key(ev.owner, ev.key), ev.xml.encode(), db=self.db(PRIVATE))

    def on_vcard_stored(self, txn: lmdb.Transaction, c: Committed, ev: VcardStored) -> None:
        row: dict[str, Any] = {"xml": ev.xml, "photo": ev.photo_hash}
        txn.put(ev.owner.encode(), dump(row), db=self.db(VCARDS))

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        delete_prefix(txn, self.db(PRIVATE), key(ev.jid, ""))
        txn.delete(ev.jid.encode(), db=self.db(VCARDS))


def private(store: Store, txn: lmdb.Transaction, owner: str, clark: str) -> str | None:
    raw = txn.get(key(owner, clark), db=store.db(PRIVATE))
    return None if raw is None else raw.decode()


def vcard(store: Store, txn: lmdb.Transaction, owner: str) -> tuple[str, str | None] | None:
    """(vCard XML, photo hash) of ``owner``, or None if it never stored one."""
    obj = load(txn.get(owner.encode(), db=store.db(VCARDS)))
    return None if obj is None else (obj["xml"], obj["photo"])
