"""Typed, versioned events: envelope, codec and catalogue (ADR 0002)."""

from xes.events import catalog as catalog
from xes.events.envelope import Committed, Envelope, canonical_json, encode_proposal
from xes.events.registry import (
    EVENT_TYPES,
    NewerEvent,
    UnknownEvent,
    decode_event,
    to_data,
    wrap,
)

__all__ = [
    "EVENT_TYPES",
    "Committed",
    "Envelope",
    "NewerEvent",
    "UnknownEvent",
    "canonical_json",
    "catalog",
    "decode_event",
    "encode_proposal",
    "to_data",
    "wrap",
]
