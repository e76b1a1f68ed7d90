"""Read status (``urn:xes:read-status:0``, ``docs/protocol/read-status.md``): its elements.

Pure builders shared by the ``read_status`` projection (notifications, written in apply) and the
feature answering queries, so a notification and a query result name a member the same way.
Who a member is depends on where the message was sent: in a room, a bare JID (only when the
asker may see real JIDs, XEP-0045 ``whois``), a nickname and the XEP-0421 occupant id; in a
one-to-one chat, the recipient's device (resource).
"""

from __future__ import annotations

from xes.stanza.delay import stamp
from xes.xml import E, Element, ns, serialize

NS = ns.READ_STATUS
KINDS = ("displayed", "received", "pending")
"""What a member has done with a message, strongest first (displayed implies received)."""


def who_in_room(bare: str, nick: str, occupant: str, show_jid: bool) -> dict[str, str | None]:
    """A room member as the asker may see it: the real JID only if the room shows it to them."""
    return {"jid": bare if show_jid else None, "nick": nick or None, "occupant-id": occupant}


def who_device(resource: str) -> dict[str, str | None]:
    return {"device": resource}


def entry(kind: str, who: dict[str, str | None], at: int | None) -> Element:
    """``<displayed/>``, ``<received/>`` or ``<pending/>`` for one member."""
    attrs = dict(who)
    attrs["at"] = stamp(at) if at is not None else None
    return E("{%s}%s" % (NS, kind), attrs)


def status(msg_id: str, attrs: dict[str, str | None], entries: list[Element]) -> Element:
    """The query result: one message's status, member by member."""
    return E("{%s}status" % NS, {"id": msg_id, **attrs}, *entries)


def notification(
    frm: str,
    seq: int,
    kind: str,
    who: dict[str, str | None],
    at: int,
    items: list[tuple[str, str | None]],
    context: dict[str, str | None] | None = None,
) -> str:
    """The message an originator gets when one marker newly covers some of its messages: one
    per marker event and originator, listing every message now covered (``items``: the id the
    query takes and the sender's own ``id``). Serialized without ``to`` (spliced per session)."""
    children = [E("{%s}item" % NS, {"id": i, "msg-id": m}) for i, m in items]
    attrs: dict[str, str | None] = {"kind": kind, **(context or {}), **who, "at": stamp(at)}
    marked = E("{%s}marked" % NS, attrs, *children)
    msg = E(
        "{%s}message" % ns.CLIENT,
        {"from": frm, "type": "headline", "id": f"rs-{seq}"},
        marked,
    )
    return serialize(msg).decode()
