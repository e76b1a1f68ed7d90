"""Push registrations (XEP-0357, ADR 0020) and what is due to each, folded in log order.

A registration is (owner, service JID, node), enabled by one device (resource) with the app
server's publish options. A message that warrants a push *triggers* it in apply: a one-to-one
message with a body for the owner while the enabling device has no attached session (offline,
or its XEP-0198 session detached, or, with ``[push] when_inactive``, its session recorded as
XEP-0352 inactive), or a room message with a body while that device's occupant session is
detached (or inactive); not while the conversation is muted in the inbox (at the event's time).
Triggering records the trigger's position (``due``), its sender and where the event is in the
journal, and puts the registration in the *due* index of its service. ``push.notified`` (the
service acknowledged a notification) raises ``done``; a registration with ``done >= due`` leaves
the index. Whichever node holds the service's component connection publishes what is due
(:mod:`xes.push_publisher`), so every trigger is pushed once, coalesced: triggers that come while
a push is in flight are covered by the next one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lmdb

from xes.events import Committed
from xes.events.catalog import (
    AccountRemoved,
    MessageRouted,
    MucMessageSent,
    PushDeviceState,
    PushDisabled,
    PushEnabled,
    PushNotified,
)
from xes.jid import bare_of
from xes.projections import inbox as inbox_view
from xes.projections import muc as muc_view
from xes.projections import sessions as sessions_view
from xes.projections.base import Projection, delete_prefix, dump, iter_prefix, key, load
from xes.store.env import Store

REGS = "push.regs"
DUE = "push.due"
INACTIVE = "push.inactive"
"""(owner, resource) -> the session that said it is inactive (``push.device_state``)."""

PUSHED_TYPES = ("chat", "normal")


@dataclass(frozen=True, slots=True)
class Registration:
    owner: str
    service: str
    node: str
    resource: str
    options: dict[str, list[str]]
    due: int = 0
    """Log position of the last trigger."""
    done: int = 0
    """Last position an acknowledged notification covered."""
    sender: str = ""
    """Who sent the last triggering message."""
    index: int = 0
    pos: int = 0
    """Journal position of the last triggering event (its body, if bodies are pushed)."""
    triggers: int = 0
    """Triggers since the last acknowledged notification."""

    @property
    def pending(self) -> bool:
        return self.due > self.done

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "options": self.options,
            "due": self.due,
            "done": self.done,
            "sender": self.sender,
            "index": self.index,
            "pos": self.pos,
            "triggers": self.triggers,
        }

    @classmethod
    def from_json(cls, owner: str, service: str, node: str, obj: dict[str, Any]) -> Registration:
        return cls(owner, service, node, **obj)


def _reg_key(owner: str, service: str, node: str) -> bytes:
    return key(owner, service, node)


def _due_key(service: str, owner: str, node: str) -> bytes:
    return key(service, owner, node)


class Push(Projection):
    name = "push"
    dbs = (REGS, DUE, INACTIVE)
    handles = (
        "push.enabled",
        "push.disabled",
        "push.notified",
        "push.device_state",
        "message.routed",
        "muc.message_sent",
        "account.removed",
    )

    def on_push_enabled(self, txn: lmdb.Transaction, c: Committed, ev: PushEnabled) -> None:
        options = {k: list(v) for k, v in sorted(ev.options.items())}
        reg = Registration(ev.owner, ev.service, ev.node, ev.resource, options)
        txn.delete(_due_key(ev.service, ev.owner, ev.node), db=self.db(DUE))
        self._put(txn, reg)

    def on_push_disabled(self, txn: lmdb.Transaction, c: Committed, ev: PushDisabled) -> None:
        for reg in registrations(self.store, txn, ev.owner):
            if reg.service == ev.service and ev.node in (None, reg.node):
                txn.delete(_reg_key(reg.owner, reg.service, reg.node), db=self.db(REGS))
                txn.delete(_due_key(reg.service, reg.owner, reg.node), db=self.db(DUE))

    def on_push_notified(self, txn: lmdb.Transaction, c: Committed, ev: PushNotified) -> None:
        reg = registration(self.store, txn, ev.owner, ev.service, ev.node)
        if reg is None or ev.upto <= reg.done:
            return
        done = min(ev.upto, reg.due)
        reg = Registration(
            reg.owner, reg.service, reg.node, reg.resource, reg.options, reg.due, done,
            reg.sender, reg.index, reg.pos, 0 if done >= reg.due else reg.triggers,
        )  # fmt: skip
        if not reg.pending:
            txn.delete(_due_key(reg.service, reg.owner, reg.node), db=self.db(DUE))
        self._put(txn, reg)

    def on_push_device_state(
        self, txn: lmdb.Transaction, c: Committed, ev: PushDeviceState
    ) -> None:
        if ev.inactive:
            txn.put(key(ev.owner, ev.resource), ev.session.encode(), db=self.db(INACTIVE))
        elif txn.get(key(ev.owner, ev.resource), db=self.db(INACTIVE)) == ev.session.encode():
            txn.delete(key(ev.owner, ev.resource), db=self.db(INACTIVE))

    def on_account_removed(self, txn: lmdb.Transaction, c: Committed, ev: AccountRemoved) -> None:
        for reg in registrations(self.store, txn, ev.jid):
            txn.delete(_due_key(reg.service, reg.owner, reg.node), db=self.db(DUE))
        delete_prefix(txn, self.db(REGS), key(ev.jid, ""))
        delete_prefix(txn, self.db(INACTIVE), key(ev.jid, ""))

    # -- triggers ------------------------------------------------------------------------------

    def on_message_routed(self, txn: lmdb.Transaction, c: Committed, ev: MessageRouted) -> None:
        if not ev.body or ev.type not in PUSHED_TYPES:
            return
        owner = bare_of(ev.to)
        if owner == bare_of(ev.sender):
            return
        regs = registrations(self.store, txn, owner)
        if not regs:
            return  # most accounts: one cursor step
        entry = inbox_view.entry(self.store, txn, owner, bare_of(ev.sender))
        if entry is not None and entry.muted_until > c.envelope.at:
            return
        attached = {
            v.jid.partition("/")[2]: v.session
            for v in sessions_view.of_user(self.store, txn, owner)
            if v.node
        }
        for reg in regs:
            session = attached.get(reg.resource)
            if session is None or self._inactive(txn, owner, reg.resource, session):
                self._trigger(txn, c, reg, ev.sender)

    def on_muc_message_sent(self, txn: lmdb.Transaction, c: Committed, ev: MucMessageSent) -> None:
        if not ev.body:
            return
        room = muc_view.get(self.store, txn, ev.room) if self._any(txn) else None
        if room is None:
            return
        for occupant in sorted(room.occupants.values(), key=lambda o: o.nick):
            if ev.session in occupant.sessions:
                continue  # the sender
            regs = registrations(self.store, txn, occupant.bare)
            if not regs:
                continue
            entry = inbox_view.entry(self.store, txn, occupant.bare, ev.room)
            if entry is not None and entry.muted_until > c.envelope.at:
                continue
            detached = set()
            for session in sorted(occupant.sessions):
                view = sessions_view.get(self.store, txn, session)
                if view is None:
                    continue
                resource = view.jid.partition("/")[2]
                if not view.node or self._inactive(txn, occupant.bare, resource, session):
                    detached.add(resource)
            for reg in regs:
                if reg.resource in detached:
                    self._trigger(txn, c, reg, f"{ev.room}/{ev.nick}")

    def _inactive(self, txn: lmdb.Transaction, owner: str, resource: str, session: str) -> bool:
        """The device's current session said it is inactive (with ``[push] when_inactive``)."""
        return txn.get(key(owner, resource), db=self.db(INACTIVE)) == session.encode()

    def _any(self, txn: lmdb.Transaction) -> bool:
        """Is any push registered at all (rooms are skipped without a look otherwise)?"""
        cur = txn.cursor(db=self.db(REGS))
        return cur.first()

    def _trigger(self, txn: lmdb.Transaction, c: Committed, reg: Registration, sender: str) -> None:
        reg = Registration(
            reg.owner, reg.service, reg.node, reg.resource, reg.options, c.seq, reg.done,
            sender, c.index, c.pos, reg.triggers + 1,
        )  # fmt: skip
        txn.put(_due_key(reg.service, reg.owner, reg.node), b"", db=self.db(DUE))
        self._put(txn, reg)

    def _put(self, txn: lmdb.Transaction, reg: Registration) -> None:
        txn.put(_reg_key(reg.owner, reg.service, reg.node), dump(reg.to_json()), db=self.db(REGS))


# -- reads -------------------------------------------------------------------------------------


def registrations(store: Store, txn: lmdb.Transaction, owner: str) -> list[Registration]:
    prefix = key(owner, "")
    out = []
    for k, v in iter_prefix(txn, store.db(REGS), prefix):
        service, _, node = k[len(prefix) :].decode().partition("\x00")
        out.append(Registration.from_json(owner, service, node, load(v)))
    return out


def registration(
    store: Store, txn: lmdb.Transaction, owner: str, service: str, node: str
) -> Registration | None:
    raw = txn.get(_reg_key(owner, service, node), db=store.db(REGS))
    return None if raw is None else Registration.from_json(owner, service, node, load(raw))


def due(store: Store, txn: lmdb.Transaction, service: str) -> Iterator[Registration]:
    """The registrations of ``service`` with triggers not yet acknowledged."""
    prefix = key(service, "")
    for k, _ in iter_prefix(txn, store.db(DUE), prefix):
        owner, _, node = k[len(prefix) :].decode().partition("\x00")
        reg = registration(store, txn, owner, service, node)
        if reg is not None and reg.pending:
            yield reg
