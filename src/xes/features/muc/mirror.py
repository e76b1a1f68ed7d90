"""The rooms as this node's delivery sees them: the ``muc`` projection's rooms, folded in log
order by delivery itself (ADR 0011).

Delivery reads committed events some time after the projection applied them, so the projection
may already hold later state (an occupant who joined after a message must not get it live as
well as in its history; one who left after it must still get it). The mirror starts from the
projection and its applied index in one read transaction, then folds every committed room event
with the same pure :func:`xes.muc.transition.apply`, so at each event it holds exactly the room
the projection held when it applied that event. It is a cache of the log, not state of its own:
a restarted node builds it again from the projection.
"""

from __future__ import annotations

from typing import Any

import lmdb

from xes.events import Committed
from xes.muc import transition
from xes.muc.model import Room
from xes.muc.transition import Context, Out
from xes.projections import muc as muc_view
from xes.store.env import Store


class RoomMirror:
    def __init__(self, store: Store, txn: lmdb.Transaction) -> None:
        """The rooms as of the applied index visible in ``txn``."""
        self.store = store
        self.rooms: dict[str, Room] = {r.jid: r for r in muc_view.all_rooms(store, txn)}

    def apply(self, txn: lmdb.Transaction, committed: Committed, event: Any) -> list[Out]:
        """Fold one committed room event; the stanzas each occupant session gets for it."""
        room = self.rooms.get(event.room)
        ctx = Context(
            committed.seq,
            committed.envelope.at,
            lambda jid, before, most: muc_view.history(self.store, txn, jid, before, most),
        )
        try:
            after, outs = transition.apply(room, event, ctx)
        except Exception:
            # The fold changes the room in place: a failure would leave it half-changed. Take
            # the projection's copy instead (it may be ahead; better than inconsistent).
            fresh = muc_view.get(self.store, txn, event.room)
            if fresh is None:
                self.rooms.pop(event.room, None)
            else:
                self.rooms[event.room] = fresh
            raise
        if after is None:
            self.rooms.pop(event.room, None)
        else:
            self.rooms[event.room] = after
        return outs
