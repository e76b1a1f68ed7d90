"""Per-session rate limits that slow a client down instead of refusing it.

Node-local on purpose: a limit, not state. A session's own stanzas wait (its stream is read
later); nothing is dropped, nobody else waits.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any

import anyio

from xes.hub import LocalSession


@dataclass(slots=True)
class Bucket:
    tokens: float
    at: float


_buckets: weakref.WeakKeyDictionary[Any, dict[str, Bucket]] = weakref.WeakKeyDictionary()


async def throttle(session: LocalSession, what: str, rate: float, burst: int) -> None:
    """Slow ``session`` down to ``rate`` per second for ``what`` (a room's messages, joins,
    PEP publishes)."""
    per = _buckets.setdefault(session, {})
    now = time.monotonic()
    bucket = per.get(what)
    if bucket is None:
        bucket = per[what] = Bucket(float(burst), now)
    bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) * rate)
    bucket.at = now
    bucket.tokens -= 1
    if bucket.tokens < 0:
        await anyio.sleep(-bucket.tokens / rate)
