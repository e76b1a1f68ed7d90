"""XEP-0198 Stream Management wire format: elements, counters and their 32-bit wrapping.

Sans-IO helpers shared by the client protocol and the transport. Counters are kept unwrapped
(Python ints) everywhere inside xes; only the wire carries them modulo 2^32 (XEP-0198 §4), and
:func:`unwrap` maps a wire value back relative to a known lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from xes.xml import E, Element, ns, serialize

WRAP = 2**32


@dataclass(frozen=True, slots=True)
class SmEnable:
    """The client sent ``<enable/>``: record it, then answer with :func:`enabled`."""

    resume: bool
    max: int | None


@dataclass(frozen=True, slots=True)
class SmResume:
    """The client sent ``<resume/>`` instead of binding a resource."""

    previd: str
    h: int
    """The wire value (mod 2^32) of the server stanzas the client received."""


@dataclass(frozen=True, slots=True)
class SmAck:
    h: int
    """Wire value of ``<a h=.../>``."""


@dataclass(frozen=True, slots=True)
class SmRequest:
    """The client sent ``<r/>``: answer ``<a/>`` with the handled count."""


def parse_h(element: Element) -> int | None:
    """The ``h`` attribute as an unsigned 32-bit integer, or None if missing or invalid."""
    try:
        value = int(element.get("h", ""))
    except ValueError:
        return None
    return value if 0 <= value < WRAP else None


def parse_max(element: Element) -> int | None:
    try:
        value = int(element.get("max", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def unwrap(wire: int, base: int) -> int:
    """The smallest count >= ``base`` whose value mod 2^32 is ``wire``."""
    return base + ((wire - base) % WRAP)


def _e(name: str, attrs: dict[str, str] | None = None, *children: Element) -> bytes:
    return serialize(E("{%s}%s" % (ns.SM, name), attrs, *children), ns.CLIENT)


def feature() -> Element:
    return E("{%s}sm" % ns.SM)


def enabled(sm_id: str | None, max_seconds: int | None) -> bytes:
    attrs: dict[str, str] = {}
    if sm_id is not None:
        attrs = {"id": sm_id, "resume": "true"}
        if max_seconds is not None:
            attrs["max"] = str(max_seconds)
    return _e("enabled", attrs)


def resumed(previd: str, handled: int) -> bytes:
    return _e("resumed", {"previd": previd, "h": str(handled % WRAP)})


def failed(condition: str, handled: int | None = None) -> bytes:
    attrs = {} if handled is None else {"h": str(handled % WRAP)}
    return _e("failed", attrs, E("{%s}%s" % (ns.STANZAS, condition)))


def ack(handled: int) -> bytes:
    return _e("a", {"h": str(handled % WRAP)})


def request() -> bytes:
    return _e("r")


def too_high(h: int, sent: int) -> Element:
    """The application condition of the stream error for an ``h`` above what was sent."""
    return E(
        "{%s}handled-count-too-high" % ns.SM, {"h": str(h % WRAP), "send-count": str(sent % WRAP)}
    )
