"""Block lists (XEP-0191): the JIDs each account refuses to hear from and talk to.

Entries are domain, bare or full JIDs; :func:`blocks` matches a peer against all three, as the
XEP's JID matching does. Every node holds every list, so whichever node a stanza passes through
refuses it the same way.
"""

from __future__ import annotations

import lmdb

from xes.events import Committed
from xes.events.catalog import AccountRemoved, BlockingChanged
from xes.projections.base import Projection, delete_prefix, iter_prefix, key
from xes.store.env import Store
from xes.xml import E, serialize
from xes.xml.ns import CLIENT

NS = "urn:xmpp:blocking"

ITEMS = "blocking.items"


class Blocking(Projection):
    name = "blocking"
    dbs = (ITEMS,)
    handles = ("blocking.changed", "account.removed")

    def on_blocking_changed(self, txn: lmdb.Transaction, c: Committed, ev: BlockingChanged) -> None:
        db = self.db(ITEMS)
        if ev.unblock_all:
            delete_prefix(txn, db, key(ev.owner, ""))
        for jid in ev.unblock:
            txn.delete(key(ev.owner, jid), db=db)
        for jid in ev.block:
            txn.put(key(ev.owner, jid), b"", db=db)

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        delete_prefix(txn, self.db(ITEMS), key(ev.jid, ""))


def blocklist(store: Store, txn: lmdb.Transaction, owner: str) -> list[str]:
    prefix = key(owner, "")
    return [k[len(prefix) :].decode() for k, _ in iter_prefix(txn, store.db(ITEMS), prefix)]


def blocks(store: Store, txn: lmdb.Transaction, owner: str, peer: str) -> bool:
    """Does ``owner`` block ``peer`` (a full, bare or domain JID) by any of its forms?"""
    db = store.db(ITEMS)
    prefix = key(owner, "")
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix) or not cur.key().startswith(prefix):
        return False  # most accounts block no one: one cursor step on the message path
    bare, _, resource = peer.partition("/")
    domain = bare.rsplit("@", 1)[-1]
    candidates = [domain]
    if bare != domain:
        candidates.append(bare)
    if resource:
        candidates.append(peer)
    return any(txn.get(key(owner, c), db=db) is not None for c in candidates)


def push_bytes(to: str, c: Committed, ev: BlockingChanged) -> list[bytes]:
    """The pushes a change sends each of the owner's resources (XEP-0191 §3.3, §3.4): one
    ``<block/>`` and one ``<unblock/>`` iq, as the change has them."""
    out = []
    attrs = {"type": "set", "to": to}
    if ev.unblock_all or ev.unblock:
        items = [E("{%s}item" % NS, {"jid": j}) for j in ev.unblock]
        iq = E(
            "{%s}iq" % CLIENT,
            {**attrs, "id": f"unblock-{c.index}-{c.pos}"},
            E("{%s}unblock" % NS, None, *items),
        )
        out.append(serialize(iq))
    if ev.block:
        items = [E("{%s}item" % NS, {"jid": j}) for j in ev.block]
        iq = E(
            "{%s}iq" % CLIENT,
            {**attrs, "id": f"block-{c.index}-{c.pos}"},
            E("{%s}block" % NS, None, *items),
        )
        out.append(serialize(iq))
    return out
