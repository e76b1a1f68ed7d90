"""Counters a node keeps for its metrics (ADR 0016): plain integers bumped on the hot paths.

A ``prometheus_client`` ``Counter.labels(...).inc()`` takes a lock and a label lookup on every
stanza; the hot paths here (every stanza in and out, every proposal) would pay that on the
event loop for a number read once per scrape. So the node counts in plain ints and dicts (one
event loop thread: no lock needed), and :mod:`xes.http.metrics` turns them into Prometheus
families when scraped. Nothing here is authoritative state: it starts at zero with the process,
as Prometheus counters do.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

PROPOSAL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds. A local commit takes one to a few ms; a WAN quorum tens to hundreds."""


class LatencyHistogram:
    """Cumulative-on-read histogram with fixed buckets (Prometheus semantics)."""

    __slots__ = ("buckets", "count", "counts", "total")

    def __init__(self, buckets: tuple[float, ...] = PROPOSAL_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.count += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs, ``+Inf`` last, as a Prometheus histogram exposes them."""
        out, running = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


def stanza_kind(data: bytes) -> str:
    """``message``, ``presence``, ``iq`` or ``other`` from the first bytes of a serialized
    top-level element (no parse: this runs for every stanza written)."""
    first = data[1:2]
    if first == b"m":
        return "message"
    if first == b"p":
        return "presence"
    if first == b"i":
        return "iq"
    return "other"


@dataclass
class NodeStats:
    stanzas_in: Counter[str] = field(default_factory=Counter)
    stanzas_out: Counter[str] = field(default_factory=Counter)
    logins: Counter[str] = field(default_factory=Counter)
    """Successful authentications by transport."""
    login_failures: Counter[str] = field(default_factory=Counter)
    """Failed authentications by SASL condition."""
    connections_opened: Counter[str] = field(default_factory=Counter)
    """Client connections accepted, by transport (tcp, websocket, bosh)."""
    pushes: Counter[str] = field(default_factory=Counter)
    """XEP-0357 notifications published from this node, by outcome (sent, ok, retry, disabled)."""
