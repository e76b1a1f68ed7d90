"""Recent cluster activity for the status page: node starts and node-down declarations, and the
message rate, read from this node's journal (so every node shows the same history).

The journal is scanned forward from where the last call stopped (at most ``MAX_SCAN`` events a
call, and the last ``BACKFILL`` events the first time), checking the raw canonical JSON for the
few event types of interest before decoding any: a poll every few seconds costs little even on
a busy node. What is kept is a view for display, bounded, and may be rebuilt at any time.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from xes.store.env import from_u64, u64
from xes.store.journal import applied_index

BACKFILL = 20_000
MAX_SCAN = 50_000
RATE_WINDOW_MS = 60_000
KEEP_NODE_EVENTS = 50
_NODE = (b'"type":"node.started"', b'"type":"node.down"')
_MESSAGES = (b'"type":"message.routed"', b'"type":"muc.message_sent"')


class RecentActivity:
    def __init__(self) -> None:
        self.upto = -1
        self.node_events: deque[dict[str, Any]] = deque(maxlen=KEEP_NODE_EVENTS)
        self.message_times: deque[int] = deque(maxlen=1_000_000)

    def update(self, store: Any, txn: Any) -> None:
        top = applied_index(store, txn)
        start = self.upto if self.upto >= 0 else max(0, top - BACKFILL)
        cur = txn.cursor(db=store.db("journal.events"))
        if not cur.set_range(u64(start + 1)):
            self.upto = top
            return
        for scanned, (key, raw) in enumerate(cur):
            index = from_u64(key[:8])
            if index > top or (scanned >= MAX_SCAN and index != self.upto):
                return  # the rest next time (never in the middle of one log entry)
            self.upto = index
            data = bytes(raw)
            if any(t in data for t in _MESSAGES):
                self.message_times.append(int(json.loads(data)["event"]["at"]))
            elif any(t in data for t in _NODE):
                event = json.loads(data)["event"]
                self.node_events.append(
                    {
                        "type": event["type"],
                        "at": event["at"],
                        "index": index,
                        **{k: event["data"].get(k) for k in ("node", "boot", "reason", "by")},
                    }
                )
        self.upto = max(self.upto, top)

    def message_rate(self, now_ms: int | None = None) -> float:
        """Messages (one-to-one and group) committed per second over the last minute."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        while self.message_times and self.message_times[0] < now_ms - RATE_WINDOW_MS:
            self.message_times.popleft()
        return len(self.message_times) * 1000 / RATE_WINDOW_MS
