"""Registry of event types: one schema per ``(type, v)`` and a chain of upcasters.

An event class is registered once with :func:`event`. Stored envelopes are never rewritten: when a
schema changes, its ``V`` is bumped and a pure ``upcast(data) -> data`` from the previous version is
registered with :func:`upcaster`, so the oldest log stays readable (ADR 0002).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

from xes.events.envelope import Envelope


class EventSchema(Protocol):
    TYPE: ClassVar[str]
    V: ClassVar[int]

    def stream(self) -> str: ...


E = TypeVar("E")

EVENT_TYPES: dict[str, type[Any]] = {}
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


class UnknownEvent(Exception):
    """An envelope whose type or version this build cannot read."""


class NewerEvent(UnknownEvent):
    """An event type or version from a newer xes than this node runs.

    Every node must apply every committed entry the same way, so a node that meets one must stop
    (and be upgraded) rather than skip or reject it: that would make its projections diverge
    from the nodes that can read it.
    """


def event(type_name: str, v: int = 1) -> Callable[[type[E]], type[E]]:
    """Class decorator: register a frozen dataclass as the schema of ``type_name`` ``v``."""

    def register(cls: type[E]) -> type[E]:
        if type_name in EVENT_TYPES:
            raise ValueError(f"event type {type_name!r} registered twice")
        cls.TYPE = type_name  # type: ignore[attr-defined]
        cls.V = v  # type: ignore[attr-defined]
        EVENT_TYPES[type_name] = cls
        return cls

    return register


def upcaster(type_name: str, from_v: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as the pure upcast of ``type_name`` data from ``from_v`` to the next."""

    def register(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[..., Any]:
        UPCASTERS[(type_name, from_v)] = fn
        return fn

    return register


def to_data(ev: Any) -> dict[str, Any]:
    return {f.name: getattr(ev, f.name) for f in dataclasses.fields(ev)}


def wrap(
    ev: Any,
    *,
    id: str,  # noqa: A002 - the envelope field is called id
    at: int,
    origin: str,
    expected_version: int | None = None,
) -> Envelope:
    """The envelope proposing catalogue event ``ev`` (the proposer supplies id and clock)."""
    return Envelope(
        type=ev.TYPE,
        v=ev.V,
        stream=ev.stream(),
        id=id,
        at=at,
        origin=origin,
        data=to_data(ev),
        expected_version=expected_version,
    )


def decode_event(env: Envelope) -> Any:
    """Turn an envelope into its typed event, upcasting old versions step by step."""
    cls = EVENT_TYPES.get(env.type)
    if cls is None:
        raise NewerEvent(f"unknown event type {env.type!r}")
    data, v = env.data, env.v
    while v < cls.V:
        step = UPCASTERS.get((env.type, v))
        if step is None:
            raise UnknownEvent(f"no upcaster for {env.type!r} v{v}")
        data, v = step(dict(data)), v + 1
    if v != cls.V:
        raise NewerEvent(f"{env.type!r} v{v} is newer than this build (v{cls.V})")
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: val for k, val in data.items() if k in names})
    except TypeError as exc:
        raise UnknownEvent(f"bad data for {env.type!r}: {exc}") from exc


def check_registry() -> list[str]:
    """Problems with the catalogue: missing upcaster links (used by tools/check_events.py)."""
    problems = []
    for name, cls in EVENT_TYPES.items():
        for v in range(1, cls.V):
            if (name, v) not in UPCASTERS:
                problems.append(f"{name}: no upcaster from v{v}")
        if not dataclasses.is_dataclass(cls):
            problems.append(f"{name}: not a dataclass")
    return problems
