"""XEP-0203 Delayed Delivery: stamp a stored stanza with the server's receive time."""

from __future__ import annotations

from datetime import UTC, datetime

from xes.xml import E, ns, parse_fragment, serialize


def stamp(at_ms: int) -> str:
    """XEP-0082 DateTime in UTC with millisecond precision."""
    moment = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def with_delay(xml: str, at_ms: int, by: str, reason: str = "Offline Storage") -> bytes:
    """``xml`` with a ``<delay/>`` child (XEP-0203 §3) saying when the server received it.

    A stanza that has one already (stored, then re-routed) keeps its first, earliest stamp.
    """
    stanza = parse_fragment(xml.encode())
    if stanza.find("{%s}delay" % ns.DELAY) is not None:
        return xml.encode()
    delay = E("{%s}delay" % ns.DELAY, {"from": by, "stamp": stamp(at_ms)}, reason)
    return serialize(stanza.append(delay))
