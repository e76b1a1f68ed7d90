"""XEP-0297 Stanza Forwarding, as archive results (XEP-0313) and carbons (XEP-0280) use it.

Stored stanzas are serialized in the stream's content namespace (``jabber:client``, undeclared),
so a forwarded copy is built by string: the stored bytes are wrapped, not parsed and
re-serialized, which keeps a 50-message archive page cheap. The inner stanza gets its namespace
declared because ``<forwarded/>`` changes the default namespace.
"""

from __future__ import annotations

from xes.stanza.delay import stamp
from xes.xml import escape_attr, ns


def inner(xml: str) -> str:
    """A stored top-level stanza with its ``jabber:client`` namespace declared."""
    for name in ("message", "presence", "iq"):
        head = "<" + name
        if xml.startswith(head) and xml[len(head)] in " />":
            return f"{head} xmlns='{ns.CLIENT}'{xml[len(head) :]}"
    raise ValueError("not a stored stanza")


def forwarded(xml: str, at_ms: int | None = None) -> str:
    """``<forwarded>`` holding ``xml``, with a XEP-0203 ``<delay/>`` when ``at_ms`` is given."""
    delay = (
        f"<delay xmlns='{ns.DELAY}' stamp='{escape_attr(stamp(at_ms))}'/>"
        if at_ms is not None
        else ""
    )
    return f"<forwarded xmlns='{ns.FORWARD}'>{delay}{inner(xml)}</forwarded>"
