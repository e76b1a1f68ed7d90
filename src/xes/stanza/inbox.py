"""XEP-0430 Inbox elements, and the conversation properties xes adds (pure builders).

An entry is ``<entry xmlns='urn:xmpp:inbox:1' jid unread id/>`` (XEP-0430 §3), followed in a
query result by the last message as a MAM ``<result/>``. The properties the XEP does not define
(archive box, mute, pin) are a sibling ``<conversation xmlns='urn:xes:inbox:0'/>``, modelled on
MongooseIM's ``erlang-solutions.com:xmpp:inbox:0#conversation`` (``docs/protocol/inbox.md``).
"""

from __future__ import annotations

from typing import Protocol

from xes.stanza.delay import stamp
from xes.xml import E, Element, ns, serialize

NS = "urn:xmpp:inbox:1"
PROPERTIES = "urn:xes:inbox:0"
"""xes's conversation properties: the ``<conversation/>`` element and its iq."""


class InboxEntry(Protocol):
    conversation: str
    last: str | None
    archived: bool
    muted_until: int
    pinned: bool

    @property
    def unread(self) -> int: ...


def entry_element(entry: InboxEntry) -> Element:
    attrs = {"jid": entry.conversation, "unread": str(entry.unread)}
    if entry.last:
        attrs["id"] = entry.last
    return E("{%s}entry" % NS, attrs)


def properties_element(entry: InboxEntry) -> Element:
    attrs = {
        "jid": entry.conversation,
        "archive": "true" if entry.archived else "false",
        "pinned": "true" if entry.pinned else "false",
    }
    if entry.muted_until:
        attrs["muted-until"] = stamp(entry.muted_until)
    return E("{%s}conversation" % PROPERTIES, attrs)


def entry_message(owner: str, to: str, entry: InboxEntry) -> str:
    """What a watching session gets when an entry changed elsewhere: from the owner's bare
    JID (as the owner's account says it), the entry and its properties."""
    message = E(
        "{%s}message" % ns.CLIENT,
        {"from": owner, "to": to},
        entry_element(entry),
        properties_element(entry),
    )
    return serialize(message).decode()
