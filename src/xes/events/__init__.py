"""Typed, versioned events: envelope, codec and catalogue (ADR 0002)."""

from xes.events import catalog as catalog
from xes.events.envelope import Committed, Envelope, canonical_json
from xes.events.registry import EVENT_TYPES, UnknownEvent, decode_event, to_data

__all__ = [
    "EVENT_TYPES",
    "Committed",
    "Envelope",
    "UnknownEvent",
    "canonical_json",
    "catalog",
    "decode_event",
    "to_data",
]
