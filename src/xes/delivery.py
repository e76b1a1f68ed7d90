"""Delivery: hands committed events to the sessions this node holds.

Delivery only reacts; it never proposes. It follows the applied index of the local log process,
reads the new journal rows and, for each event, writes the stanza it carries to the local
sessions among its targets. Each node does the same for its own sessions, so a message committed
once reaches a recipient on any node exactly once.
"""

from __future__ import annotations

from typing import Any

import structlog

from xes.events import Committed, decode_event
from xes.events.catalog import (
    AccountRemoved,
    BlockingChanged,
    ComponentConnected,
    ComponentRouted,
    InboxUpdated,
    IqRouted,
    MessageRouted,
    MucMessageSent,
    NodeDown,
    OfflineFlushed,
    PresenceRouted,
    PresenceUpdated,
    RosterItemRemoved,
    RosterItemUpdated,
    S2sRouted,
    SessionBound,
    SessionEnded,
    SmEnabled,
    SmResumed,
    SmStanzasQueued,
)
from xes.features import read_status
from xes.features.muc.mirror import RoomMirror
from xes.features.pep import interest as pep_interest
from xes.hub import Hub, LocalSession
from xes.jid import bare_of, domain_part
from xes.muc.transition import Out
from xes.projections import blocking as blocking_view
from xes.projections import inbox as inbox_view
from xes.projections import pep as pep_view
from xes.projections import sessions as sessions_view
from xes.stanza import carbons
from xes.stanza.core import addressed
from xes.stanza.inbox import entry_message
from xes.stanza.roster import item_element, push_bytes, removed_element
from xes.store.journal import applied_index, read_events

log = structlog.get_logger("xes.delivery")


async def run(hub: Hub) -> None:
    # The room mirror and the starting index come from one read: rooms as of that index.
    with hub.read() as txn:
        last = applied_index(hub.store, txn)
        rooms = RoomMirror(hub.store, txn)
    while True:
        applied = await hub.log.wait_applied_change(last)
        with hub.read() as txn:
            batch = list(read_events(hub.store, txn, last, applied))
            last = applied
            writes = RoomWrites()
            for committed in batch:
                try:
                    deliver(hub, committed, rooms, txn, writes)
                except Exception as exc:
                    log.error(
                        "delivery_failed",
                        index=committed.index,
                        pos=committed.pos,
                        error=repr(exc),
                    )
            writes.flush(hub)


def _send(session: LocalSession, data: bytes) -> None:
    """Direct delivery; a managed session instead writes its next outbox rows (ADR 0008)."""
    if session.sm_active:
        session.sm_pull()
    else:
        session.send_bytes(data)


def deliver(
    hub: Hub, committed: Committed, rooms: RoomMirror, txn: Any, writes: RoomWrites | None = None
) -> None:
    event: Any = decode_event(committed.envelope)
    if committed.envelope.type.startswith("muc."):
        writes = writes if writes is not None else RoomWrites()
        writes.add(hub, rooms.apply(txn, committed, event))
        if isinstance(event, MucMessageSent) and event.marker:
            writes.flush(hub)  # the marker's reflection goes before what it caused
            if event.marker in inbox_view.READING_MARKERS:
                view = sessions_view.get(hub.store, txn, event.session)
                if view is not None:
                    _inbox_push(hub, txn, committed, bare_of(view.jid), event.room)
            read_status.deliver(hub, txn, committed)
        return
    if writes is not None:
        writes.flush(hub)  # what rooms sent so far goes out before anything else does
    if isinstance(event, MessageRouted):
        data = event.xml.encode()
        for target in event.targets:
            session = hub.by_jid.get(target)
            if session is not None:
                _send(session, data)
        for target, copy in carbons.copies(event, hub.by_jid.__contains__):
            _send(hub.by_jid[target], copy)
        if event.marker:
            read_status.deliver(hub, txn, committed)
        if event.offline_for is not None:
            # Stored offline while a session of the user may have come online meanwhile.
            for session in hub.local_of_bare(event.offline_for):
                session.offline_stored()
        if event.marker in inbox_view.READING_MARKERS:
            _inbox_push(hub, txn, committed, bare_of(event.sender), bare_of(event.to))
    elif isinstance(event, InboxUpdated):
        _inbox_push(hub, txn, committed, event.owner, event.conversation)
    elif committed.envelope.type in pep_view.NOTIFYING:
        if event.notify:
            xml = pep_view.notification(committed, event)
            assert xml is not None
            for target in event.notify:
                session = hub.by_jid.get(target)
                if session is not None:
                    _send(session, addressed(xml, target))
    elif isinstance(event, BlockingChanged):
        for session in hub.local_of_bare(event.owner):
            if session.sm_active:
                session.sm_pull()
            elif session.interested:
                for data in blocking_view.push_bytes(session.full, committed, event):
                    session.send_bytes(data)
    elif isinstance(event, ComponentConnected):
        link = hub.components.get(event.domain)
        if link is not None and link.conn != event.conn:
            link.close("conflict", "the component connected again elsewhere")  # ADR 0018
    elif isinstance(event, ComponentRouted):
        link = hub.components.get(event.domain)
        if link is not None and link.conn == event.conn:  # the connection it was routed to
            link.send_bytes(event.xml.encode())
    elif isinstance(event, S2sRouted):
        if event.node == hub.node and hub.s2s is not None:  # this node holds the link
            hub.s2s.send(domain_part(event.sender), event.domain, event.xml.encode())
    elif isinstance(event, IqRouted):
        session = hub.sessions.get(event.session)
        if session is not None:
            _send(session, event.xml.encode())
    elif isinstance(event, SmEnabled):
        session = hub.sessions.get(event.session)
        if session is not None:
            session.sm_committed(event)
    elif isinstance(event, SmResumed):
        _resumed(hub, event)
    elif isinstance(event, SmStanzasQueued | OfflineFlushed):
        session = hub.sessions.get(event.session)
        if session is not None and session.sm_active:
            session.sm_pull()
    elif isinstance(event, PresenceUpdated | PresenceRouted):
        _deliver_presence(hub, event.xml.encode(), event.targets)
        if (
            isinstance(event, PresenceRouted)
            and hub.config.pep.enabled
            and ("type='subscribed'" in event.xml or 'type="subscribed"' in event.xml)
        ):
            # XEP-0163 §4.3.4: a new subscriber gets the last items it wants (on_sub).
            for target in event.targets:
                pep_interest.on_new_subscription(hub, txn, target.split("/")[0], event.sender)
    elif isinstance(event, RosterItemUpdated):
        if event.listed:
            _push(hub, event.owner, committed, item_element(event))
    elif isinstance(event, RosterItemRemoved):
        _push(hub, event.owner, committed, removed_element(event.contact))
    elif isinstance(event, SessionBound):
        # RFC 6120 §7.7.2.2: a new session with the same full JID replaces the old one.
        old = hub.by_jid.get(event.jid)
        if old is not None and old.session_id != event.session:
            old.close("conflict", "replaced by a new session")
    elif isinstance(event, NodeDown):
        if event.node == hub.node and event.boot == hub.boot and hub.on_self_down is not None:
            log.warning("declared_down", node=event.node, boot=event.boot, by=event.by)
            hub.on_self_down()
    elif isinstance(event, SessionEnded) and event.reason == "kicked":
        # An administrator ended it (admin API, XEP-0133) on whichever node: its stream here
        # closes; the end is recorded already, so the connection records nothing more.
        session = hub.sessions.get(event.session)
        if session is not None:
            session.close("policy-violation", "the session was ended by an administrator")
    elif isinstance(event, AccountRemoved):
        for session in hub.local_of_bare(event.jid):
            farewell = hub.farewells.pop(session.session_id, None)
            if farewell is not None:
                session.send_bytes(farewell)
            session.close("not-authorized", "account removed")


class RoomWrites:
    """What rooms send to the sessions held here, gathered over consecutive room events and
    written once per session: a run of messages costs each occupant one write, not one each.
    Flushed before any other kind of event is delivered, so nothing overtakes anything."""

    __slots__ = ("pending", "pull")

    def __init__(self) -> None:
        self.pending: dict[str, list[bytes]] = {}
        self.pull: set[str] = set()

    def add(self, hub: Hub, outs: list[Out]) -> None:
        for out in outs:
            session = hub.sessions.get(out.session)
            if session is None:
                continue
            if session.sm_active:
                self.pull.add(out.session)  # its outbox rows are the stream (ADR 0008)
            else:
                self.pending.setdefault(out.session, []).append(addressed(out.xml, out.jid))

    def flush(self, hub: Hub) -> None:
        pending, pull = self.pending, self.pull
        if not pending and not pull:
            return
        self.pending, self.pull = {}, set()
        for session_id, parts in pending.items():
            session = hub.sessions.get(session_id)
            if session is None:
                continue
            if session.inactive:
                for part in parts:  # each one classified on its own (XEP-0352)
                    session.send_bytes(part)
            else:
                session.send_bytes(parts[0] if len(parts) == 1 else b"".join(parts))
        for session_id in pull:
            session = hub.sessions.get(session_id)
            if session is not None and session.sm_active:
                session.sm_pull()


def _resumed(hub: Hub, event: SmResumed) -> None:
    """The connection that resumed takes over; any other holding the session is closed."""
    resumer = hub.resuming.get(event.session)
    if resumer is not None and resumer.epoch == event.epoch:
        resumer.sm_committed(event)  # registers it, closing a local predecessor (conflict)
        return
    old = hub.sessions.get(event.session)
    if old is not None and old.epoch != event.epoch:
        old.close("conflict", "the session was resumed on another connection")


def _deliver_presence(hub: Hub, data: bytes, targets: list[str]) -> None:
    for target in targets:
        if "/" in target:
            session = hub.by_jid.get(target)
            if session is not None:
                _send(session, data)
        else:
            for session in hub.local_of_bare(target):
                if session.available or session.sm_active:  # the outbox decides for the latter
                    _send(session, data)


def _inbox_push(hub: Hub, txn: Any, committed: Committed, owner: str, conversation: str) -> None:
    """A changed inbox entry, to the owner's sessions here that watch the inbox (managed ones
    read it from their outbox, where apply put it), if this event is what changed it."""
    local = hub.local_of_bare(owner)
    if not local:
        return
    entry = inbox_view.entry(hub.store, txn, owner, conversation)
    if entry is None or entry.changed != committed.seq:
        return
    for session in local:
        if not inbox_view.watching(hub.store, txn, owner, session.session_id):
            continue
        if session.sm_active:
            session.sm_pull()
        else:
            session.send_bytes(entry_message(owner, session.full, entry).encode())


def _push(hub: Hub, owner: str, committed: Committed, item: Any) -> None:
    for session in hub.local_of_bare(owner):
        if session.sm_active:
            session.sm_pull()
        elif session.interested:
            session.send_bytes(push_bytes(session.full, committed, item))
