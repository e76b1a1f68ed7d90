"""XEP-0430 inbox queries and conversation properties from slixmpp (raw stanzas: slixmpp has no
inbox plugin), shared by the inbox tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from slixmpp.xmlstream import ET

from tests.integration.mucclient import MAM, MESSAGE, RSM, MucClient, body

INBOX = "urn:xmpp:inbox:1"
PROPS = "urn:xes:inbox:0"
MARKERS = "urn:xmpp:chat-markers:0"
FORWARDED = f"{{{MAM}}}result/{{urn:xmpp:forward:0}}forwarded/{MESSAGE}"
_ids = itertools.count()


@dataclass(frozen=True)
class Row:
    jid: str
    unread: int
    id: str | None
    last_body: str | None
    pinned: bool
    archived: bool


def row_of(message: ET.Element) -> Row:
    entry = message.find(f"{{{INBOX}}}entry")
    props = message.find(f"{{{PROPS}}}conversation")
    assert entry is not None and props is not None, ET.tostring(message)
    return Row(
        entry.get("jid", ""),
        int(entry.get("unread", "-1")),
        entry.get("id"),
        body(message.find(FORWARDED)),
        props.get("pinned") == "true",
        props.get("archive") == "true",
    )


async def query(
    client: MucClient, attrs: str = "", max_: int | None = None, after: str | None = None
) -> tuple[ET.Element, list[Row]]:
    """The inbox as ``client`` gets it: (fin, rows in order)."""
    rsm = ""
    if max_ is not None or after is not None:
        inner = f"<max>{max_}</max>" if max_ is not None else ""
        inner += f"<after>{after}</after>" if after is not None else ""
        rsm = f"<set xmlns='{RSM}'>{inner}</set>"
    iq = client.make_iq(ito=client.boundjid.bare, itype="get")
    iq["id"] = qid = f"inbox{next(_ids)}"
    iq.xml.append(ET.fromstring(f"<inbox xmlns='{INBOX}' {attrs}>{rsm}</inbox>"))
    before = list(client.inbox.items)
    result = (await iq.send(timeout=10)).xml
    fin = result.find(f"{{{INBOX}}}fin")
    assert fin is not None, ET.tostring(result)

    def ours(el: ET.Element) -> bool:
        res = el.find(f"{{{MAM}}}result")
        return (
            el.tag == MESSAGE
            and el.find(f"{{{INBOX}}}entry") is not None
            and all(el is not old for old in before)
            and (res is None or res.get("queryid") == qid)
        )

    # The entries come before the iq result on the same stream: they are all here already
    # (the tests send no marker while they query, so no push is among them).
    found = client.inbox.matching(ours)
    for el in found:
        client.inbox.items.remove(el)
    return fin, [row_of(el) for el in found]


async def set_properties(client: MucClient, jid: str, **values: str) -> ET.Element:
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in values.items())
    payload = f"<query xmlns='{PROPS}' jid='{jid}'>{inner}</query>"
    return await client.iq("set", client.boundjid.bare, payload)


def displayed(client: MucClient, to: str, marked: str, type_: str = "chat") -> None:
    client.send_raw(
        f"<message to='{to}' type='{type_}' id='d{next(_ids)}'>"
        f"<displayed xmlns='{MARKERS}' id='{marked}'/></message>"
    )


def is_push(conversation: str, unread: int | None = None):  # type: ignore[no-untyped-def]
    """A push of a changed entry (no MAM result in it)."""

    def pred(el: ET.Element) -> bool:
        entry = el.find(f"{{{INBOX}}}entry")
        return (
            el.tag == MESSAGE
            and entry is not None
            and el.find(f"{{{MAM}}}result") is None
            and entry.get("jid") == conversation
            and (unread is None or entry.get("unread") == str(unread))
        )

    return pred
