"""Accounts projection: bare JID -> salted SCRAM credentials. Fed by ``account.*`` events."""

from __future__ import annotations

from typing import Any

import lmdb

from xes.events import Committed
from xes.events.catalog import AccountPasswordChanged, AccountRegistered, AccountRemoved
from xes.projections import holds as holds_view
from xes.projections.base import Projection, Rejected, dump, load
from xes.store.env import Store

CREDS = "accounts.creds"


class Accounts(Projection):
    name = "accounts"
    dbs = (CREDS,)
    handles = ("account.registered", "account.password_changed", "account.removed")

    def on_account_registered(
        self, txn: lmdb.Transaction, c: Committed, ev: AccountRegistered
    ) -> None:
        txn.put(ev.jid.encode(), dump(ev.credentials), db=self.db(CREDS))

    def on_account_password_changed(
        self, txn: lmdb.Transaction, c: Committed, ev: AccountPasswordChanged
    ) -> None:
        txn.put(ev.jid.encode(), dump(ev.credentials), db=self.db(CREDS))

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        hold = holds_view.holding_account(self.store, txn, ev.jid)
        if hold is not None:
            # Erasure would defeat a legal hold (ADR 0024): the hold is lifted first.
            raise Rejected(f"held: {ev.jid} is under legal hold {hold}")
        txn.delete(ev.jid.encode(), db=self.db(CREDS))


def credentials(store: Store, txn: lmdb.Transaction, bare: str) -> dict[str, Any] | None:
    return load(txn.get(bare.encode(), db=store.db(CREDS)))  # type: ignore[no-any-return]


def exists(store: Store, txn: lmdb.Transaction, bare: str) -> bool:
    return txn.get(bare.encode(), db=store.db(CREDS)) is not None


def list_accounts(store: Store, txn: lmdb.Transaction) -> list[str]:
    return [k.decode() for k, _ in txn.cursor(db=store.db(CREDS))]
