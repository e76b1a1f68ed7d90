"""The event envelope and its canonical JSON encoding (ADR 0002).

Every state change in xes is an :class:`Envelope` appended to the replicated log. The envelope is
encoded as canonical JSON (sorted keys, no whitespace, UTF-8) so that the bytes, and therefore the
digests auditors compute over the journal, are the same on every node and every Python version.
Apply assigns the log position (``index``, ``pos``) and the per-stream ``version``; the proposer
never chooses them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` deterministically: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event as proposed: what happened (``type``/``v``/``data``) and to which stream."""

    type: str
    """Stable type string, ``domain.snake_case_past_tense`` (never a Python path)."""
    v: int
    """Schema version of ``data``; older versions are upcast when read (ADR 0002)."""
    stream: str
    """The aggregate this event belongs to, e.g. ``roster:alice@example.org``."""
    id: str
    """Proposer-chosen unique id (origin node + counter); a retried proposal is deduplicated."""
    at: int
    """Proposer's wall clock in milliseconds since the epoch; apply never reads a clock itself."""
    origin: str
    """Node id of the proposer."""
    data: dict[str, Any] = field(default_factory=dict)
    """Event payload; JSON types only."""
    expected_version: int | None = None
    """If set, apply rejects the event unless the stream is at exactly this version."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "v": self.v,
            "stream": self.stream,
            "id": self.id,
            "at": self.at,
            "origin": self.origin,
            "data": self.data,
        }
        if self.expected_version is not None:
            out["expected_version"] = self.expected_version
        return out

    def encode(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Envelope:
        return cls(
            type=obj["type"],
            v=int(obj["v"]),
            stream=obj["stream"],
            id=obj["id"],
            at=int(obj["at"]),
            origin=obj["origin"],
            data=obj.get("data") or {},
            expected_version=obj.get("expected_version"),
        )

    @classmethod
    def decode(cls, raw: bytes) -> Envelope:
        return cls.from_json(json.loads(raw))


def encode_proposal(envelopes: list[Envelope]) -> bytes:
    """One proposal (events that stand or fall together) as a JSON array of envelopes."""
    return b"[" + b",".join(env.encode() for env in envelopes) + b"]"


@dataclass(frozen=True, slots=True)
class Committed:
    """An envelope as applied: its log position and the stream version it produced."""

    index: int
    """Raft log index of the entry (batch) that carried the event."""
    pos: int
    """Position of the event inside that batch."""
    version: int
    """Version of ``envelope.stream`` after this event (1 for a stream's first event)."""
    envelope: Envelope

    @property
    def seq(self) -> int:
        """Total order of events as one integer: ``index << 16 | pos`` (used for ids and keys)."""
        return (self.index << 16) | self.pos

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pos": self.pos,
            "version": self.version,
            "event": self.envelope.to_json(),
        }

    def encode(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def decode(cls, raw: bytes) -> Committed:
        obj = json.loads(raw)
        return cls(
            index=obj["index"],
            pos=obj["pos"],
            version=obj["version"],
            envelope=Envelope.from_json(obj["event"]),
        )
