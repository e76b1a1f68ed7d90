"""Core stanza helpers: error replies (RFC 6120 §8.3) and address handling.

Features never build error trees by hand; they raise :class:`StanzaError` or call
:func:`error_reply`, so every error carries the right type, condition and namespace.
"""

from __future__ import annotations

import re

from xes.xml import E, Element, escape_attr, ns

ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "remote-server-not-found": "cancel",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}
"""Default error type per condition (RFC 6120 §8.3.3)."""


class StanzaError(Exception):
    """Raised by a handler; the dispatcher turns it into an error reply to the sender."""

    def __init__(
        self,
        condition: str,
        text: str | None = None,
        type_: str | None = None,
        app: Element | None = None,
    ) -> None:
        super().__init__(condition)
        self.condition = condition
        self.text = text
        self.type = type_ or ERROR_TYPES.get(condition, "cancel")
        self.app = app
        """An application-specific condition (RFC 6120 §8.3.4), e.g. a pubsub error."""


def error_reply(
    stanza: Element,
    condition: str,
    text: str | None = None,
    type_: str | None = None,
    app: Element | None = None,
) -> Element:
    """The error response to ``stanza``: addresses swapped, id kept, payload dropped."""
    attrs = {"type": "error"}
    if stanza.get("id") is not None:
        attrs["id"] = stanza.get("id")  # type: ignore[assignment]
    if stanza.get("to"):
        attrs["from"] = stanza.get("to")  # type: ignore[assignment]
    if stanza.get("from"):
        attrs["to"] = stanza.get("from")  # type: ignore[assignment]
    children: list[Element] = [E("{%s}%s" % (ns.STANZAS, condition))]
    if text:
        children.append(E("{%s}text" % ns.STANZAS, {"{%s}lang" % ns.XML: "en"}, text))
    if app is not None:
        children.append(app)
    error = E(
        "{%s}error" % ns.CLIENT, {"type": type_ or ERROR_TYPES.get(condition, "cancel")}, *children
    )
    return E(stanza.tag, attrs, error)


def iq_result(iq: Element, *payload: Element) -> Element:
    attrs = {"type": "result", "id": iq.get("id", "")}
    if iq.get("to"):
        attrs["from"] = iq.get("to", "")
    if iq.get("from"):
        attrs["to"] = iq.get("from", "")
    return E("{%s}iq" % ns.CLIENT, attrs, *payload)


def payload(stanza: Element) -> Element | None:
    """The first child element (the iq payload that selects the handler)."""
    for child in stanza.children:
        if isinstance(child, Element):
            return child
    return None


def addressed(xml: str, to: str) -> bytes:
    """``xml`` (a serialized stanza with attributes but no ``to``) addressed to ``to``: one
    serialization shared by every recipient of a fan-out, the address spliced per copy."""
    cut = xml.index(" ")
    return f"{xml[:cut]} to='{escape_attr(to)}'{xml[cut:]}".encode()


_FROM = re.compile(r"""\sfrom=(?:'([^']*)'|"([^"]*)")""")


def sender_of(xml: str) -> str:
    """The ``from`` of a stanza the server serialized (no parse: stored rows are many)."""
    m = _FROM.search(xml[: xml.find(">") + 1])
    if m is None:
        return ""
    return m.group(1) if m.group(1) is not None else m.group(2)
