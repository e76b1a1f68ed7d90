"""A slixmpp client for the group chat tests that keeps every presence and message it receives,
in order, as XML, plus the few MUC steps the tests repeat (join, configure, query).

slixmpp's xep_0045 plugin turns room presences into its own events and keeps them out of the
generic ones, and its join helper hides the order in which the room sent things. The XEP is
about exactly that order and those elements, so :class:`Inbox` records the raw stanzas (an input
filter sees each one before any handler) and the tests take the ones they expect; anything not
taken stays, so a later expectation still finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from tests.integration.clients import Client
from tests.integration.server import XesServer

CLIENT = "jabber:client"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = MUC + "#user"
MUC_ADMIN = MUC + "#admin"
MUC_OWNER = MUC + "#owner"
ROOMCONFIG = MUC + "#roomconfig"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
OCCUPANT_ID = "urn:xmpp:occupant-id:0"
SID = "urn:xmpp:sid:0"
DELAY = "urn:xmpp:delay"
MAM = "urn:xmpp:mam:2"
DATA = "jabber:x:data"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
RSM = "http://jabber.org/protocol/rsm"
PING = "urn:xmpp:ping"
CONFERENCE = "jabber:x:conference"
PRESENCE = f"{{{CLIENT}}}presence"
MESSAGE = f"{{{CLIENT}}}message"

Pred = Callable[[ET.Element], bool]
_ids = itertools.count(1)


class Inbox:
    """Stanzas in arrival order; :meth:`take` removes the first one that matches."""

    def __init__(self) -> None:
        self.items: list[ET.Element] = []
        self._changed = asyncio.Event()

    def put(self, el: ET.Element) -> None:
        self.items.append(el)
        self._changed.set()

    async def take(self, pred: Pred, timeout: float = 10.0) -> ET.Element:
        async def scan() -> ET.Element:
            while True:
                for i, el in enumerate(self.items):
                    if pred(el):
                        return self.items.pop(i)
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except TimeoutError:
            kept = "\n".join(ET.tostring(el, encoding="unicode") for el in self.items[-10:])
            raise AssertionError(f"no matching stanza in {timeout}s; last kept:\n{kept}") from None

    def matching(self, pred: Pred) -> list[ET.Element]:
        """What has arrived so far and matches, without taking it."""
        return [el for el in self.items if pred(el)]


class MucClient(Client):
    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password, plugins=("xep_0045", "xep_0004", "xep_0313", "xep_0249"))
        self.inbox = Inbox()
        self.add_filter("in", self._record)

    def _record(self, stanza: Any) -> Any:
        if stanza.xml.tag in (PRESENCE, MESSAGE):
            self.inbox.put(stanza.xml)
        return stanza

    async def iq(self, type_: str, to: str, payload: str, timeout: float = 10.0) -> ET.Element:
        """An iq with ``payload`` (XML text); the result's XML, or :class:`IqError`."""
        iq = self.make_iq(ito=to, itype=type_)
        iq.xml.append(ET.fromstring(payload))
        result = await iq.send(timeout=timeout)
        return result.xml

    async def iq_error(self, type_: str, to: str, payload: str) -> tuple[str, str]:
        """The (condition, error type) the iq is refused with; fails if it succeeds."""
        try:
            await self.iq(type_, to, payload)
        except IqError as exc:
            return str(exc.iq["error"]["condition"]), str(exc.iq["error"]["type"])
        raise AssertionError(f"iq {type_} to {to} succeeded: {payload}")


# -- reading stanzas ---------------------------------------------------------------------------


def bare(jid: str | None) -> str:
    return (jid or "").split("/", 1)[0]


def status_codes(el: ET.Element) -> set[int]:
    return {int(s.get("code")) for s in el.iterfind(f"{{{MUC_USER}}}x/{{{MUC_USER}}}status")}


def item(el: ET.Element) -> dict[str, str]:
    found = el.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
    assert found is not None, ET.tostring(el)
    return dict(found.attrib)


def occupant_id(el: ET.Element) -> str | None:
    found = el.find(f"{{{OCCUPANT_ID}}}occupant-id")
    return None if found is None else found.get("id")


def stanza_id(el: ET.Element, by: str) -> str | None:
    ids = [s.get("id") for s in el.iterfind(f"{{{SID}}}stanza-id") if s.get("by") == by]
    assert len(ids) <= 1, ET.tostring(el)
    return ids[0] if ids else None


def body(el: ET.Element | None) -> str | None:
    if el is None:
        return None
    found = el.find(f"{{{CLIENT}}}body")
    return None if found is None else (found.text or "")


def error_of(el: ET.Element) -> tuple[str, str] | None:
    """(condition, type) of an error stanza."""
    if el.get("type") != "error":
        return None
    error = el.find(f"{{{CLIENT}}}error")
    assert error is not None, ET.tostring(el)
    condition = next(
        c for c in error if c.tag.startswith(f"{{{STANZAS}}}") and c.tag[-5:] != "}text"
    )
    return condition.tag.split("}", 1)[1], error.get("type", "")


def presence_from(
    jid: str, *, unavailable: bool | None = None, codes: set[int] | frozenset[int] = frozenset()
) -> Pred:
    """Presence from ``jid``: of type unavailable (True), available (False) or any (None),
    carrying at least ``codes``."""

    def pred(el: ET.Element) -> bool:
        if el.tag != PRESENCE or el.get("from") != jid:
            return False
        type_ = el.get("type")
        if type_ == "error":
            return False
        if unavailable is not None and (type_ == "unavailable") != unavailable:
            return False
        return set(codes) <= status_codes(el)

    return pred


def message_from(jid: str, *, text: str | None = None) -> Pred:
    def pred(el: ET.Element) -> bool:
        return (
            el.tag == MESSAGE
            and el.get("from") == jid
            and el.get("type") != "error"
            and (text is None or body(el) == text)
        )

    return pred


def error_from(jid: str, tag: str = MESSAGE) -> Pred:
    return lambda el: el.tag == tag and el.get("from") == jid and el.get("type") == "error"


def subject_of(el: ET.Element) -> str | None:
    found = el.find(f"{{{CLIENT}}}subject")
    return None if found is None else (found.text or "")


# -- joining -----------------------------------------------------------------------------------


@dataclass
class Joined:
    """What the room sent a joining session, in the XEP-0045 §7.2 order."""

    occupants: list[ET.Element]
    """Presences of the occupants already there, before the self-presence."""
    self_presence: ET.Element
    history: list[ET.Element]
    subject: ET.Element

    @property
    def codes(self) -> set[int]:
        return status_codes(self.self_presence)

    @property
    def item(self) -> dict[str, str]:
        return item(self.self_presence)

    @property
    def nicks(self) -> list[str]:
        return [p.get("from", "").split("/", 1)[1] for p in self.occupants]


class JoinRefused(Exception):
    def __init__(self, condition: str, type_: str) -> None:
        super().__init__(f"{condition} ({type_})")
        self.condition = condition
        self.type = type_


def join_xml(
    room: str,
    nick: str,
    *,
    password: str | None = None,
    history: dict[str, str] | None = None,
    children: str = "",
    muc_x: bool = True,
) -> str:
    inner = ""
    if password is not None:
        inner += f"<password>{escape(password)}</password>"
    if history is not None:
        attrs = "".join(f" {k}={quoteattr(v)}" for k, v in history.items())
        inner += f"<history{attrs}/>"
    x = f"<x xmlns='{MUC}'>{inner}</x>" if muc_x else ""
    to = quoteattr(f"{room}/{nick}" if nick else room)
    return f"<presence id='j{next(_ids)}' to={to}>{children}{x}</presence>"


async def join(
    client: MucClient,
    room: str,
    nick: str,
    *,
    password: str | None = None,
    history: dict[str, str] | None = None,
    children: str = "",
    timeout: float = 10.0,
) -> Joined:
    """Enter ``room`` as ``nick``; the room's answer in order, or :class:`JoinRefused`."""
    # What the room sent the user before it asked to join (a status-101 notice of a changed
    # affiliation, XEP-0045 §9.3) is not part of the answer: it stays for the test to take.
    earlier = [e for e in client.inbox.items if bare(e.get("from")) == room]
    client.inbox.items = [e for e in client.inbox.items if e not in earlier]
    client.send_raw(join_xml(room, nick, password=password, history=history, children=children))
    occupants: list[ET.Element] = []
    own: ET.Element | None = None
    history_out: list[ET.Element] = []
    while True:
        el = await client.inbox.take(lambda e: bare(e.get("from")) == room, timeout)
        if el.tag == PRESENCE:
            error = error_of(el)
            if error is not None:
                assert own is None, ET.tostring(el)
                client.inbox.items[:0] = earlier
                raise JoinRefused(*error)
            assert own is None, f"presence after the self-presence: {ET.tostring(el)!r}"
            if 110 in status_codes(el):
                own = el
            else:
                occupants.append(el)
            continue
        if el.get("to", "").find("/") < 0 and 101 in status_codes(el):
            earlier.append(el)  # an affiliation notice to the bare JID, sent while we joined
            continue
        assert own is not None, f"message before the self-presence: {ET.tostring(el)!r}"
        if subject_of(el) is not None and body(el) is None:
            client.inbox.items[:0] = earlier
            return Joined(occupants, own, history_out, el)
        delay = el.find(f"{{{DELAY}}}delay")
        assert delay is not None, f"live message before the subject: {ET.tostring(el)!r}"
        history_out.append(el)


async def refused(client: MucClient, room: str, nick: str, **kwargs: Any) -> tuple[str, str]:
    """The (condition, type) a join is refused with; fails if the join succeeds."""
    try:
        await join(client, room, nick, **kwargs)
    except JoinRefused as exc:
        return exc.condition, exc.type
    raise AssertionError(f"{client.boundjid} could join {room} as {nick}")


async def leave(client: MucClient, room: str, nick: str, status: str = "") -> ET.Element:
    """Exit the room; the self-presence of type unavailable (status 110)."""
    inner = f"<status>{escape(status)}</status>" if status else ""
    client.send_raw(
        f"<presence to={quoteattr(f'{room}/{nick}')} type='unavailable'>{inner}</presence>"
    )
    return await client.inbox.take(presence_from(f"{room}/{nick}", unavailable=True, codes={110}))


def config_form(values: dict[str, str | list[str]]) -> str:
    fields = [f"<field var='FORM_TYPE'><value>{ROOMCONFIG}</value></field>"] if values else []
    for var, value in values.items():
        vals = value if isinstance(value, list) else [value]
        fields.append(
            f"<field var={quoteattr(var)}>"
            + "".join(f"<value>{escape(v)}</value>" for v in vals)
            + "</field>"
        )
    return (
        f"<query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'>{''.join(fields)}</x></query>"
    )


async def configure(client: MucClient, room: str, values: dict[str, str | list[str]]) -> None:
    """Submit the configuration form (an empty one: the instant room of XEP-0045 §10.1.2)."""
    await client.iq("set", room, config_form(values))


async def create(
    client: MucClient, room: str, nick: str, values: dict[str, str | list[str]] | None = None
) -> Joined:
    """A new room, unlocked by submitting ``values`` (none: an instant room)."""
    joined = await join(client, room, nick)
    assert {110, 201} <= joined.codes, ET.tostring(joined.self_presence)
    await configure(client, room, values or {})
    return joined


def send_message(
    client: MucClient,
    to: str,
    text: str | None = None,
    *,
    type_: str = "groupchat",
    id_: str | None = None,
    subject: str | None = None,
    extra: str = "",
) -> str:
    """A message from ``client`` (its ``id`` is returned)."""
    id_ = id_ or f"m{next(_ids)}"
    inner = "" if text is None else f"<body>{escape(text)}</body>"
    if subject is not None:
        inner += f"<subject>{escape(subject)}</subject>"
    client.send_raw(
        f"<message to={quoteattr(to)} type={quoteattr(type_)} id={quoteattr(id_)}>"
        f"{inner}{extra}</message>"
    )
    return id_


async def groupchat(client: MucClient, room: str, text: str, id_: str | None = None) -> str:
    return send_message(client, room, text, id_=id_)


async def mam_query(client: MucClient, archive: str, form: str = "") -> tuple[ET.Element, list]:
    """XEP-0313 query to ``archive``; (fin, result messages in order)."""
    qid = f"q{next(_ids)}"
    result = await client.iq("set", archive, f"<query xmlns='{MAM}' queryid='{qid}'>{form}</query>")
    fin = result.find(f"{{{MAM}}}fin")
    assert fin is not None, ET.tostring(result)

    def ours(el: ET.Element) -> bool:
        res = el.find(f"{{{MAM}}}result")
        return el.tag == MESSAGE and res is not None and res.get("queryid") == qid

    # The results come before the iq result on the same stream: they are all here already.
    results = client.inbox.matching(ours)
    for el in results:
        client.inbox.items.remove(el)
    return fin, results


def disco_features(info: ET.Element) -> set[str]:
    return {f.get("var") for f in info.iterfind(f"{{{DISCO_INFO}}}query/{{{DISCO_INFO}}}feature")}


def form_values(parent: ET.Element) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for field in parent.iterfind(f".//{{{DATA}}}field"):
        out[field.get("var", "")] = [v.text or "" for v in field.iterfind(f"{{{DATA}}}value")]
    return out


# -- sessions ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def online(srv: XesServer, password: str, *jids: str) -> AsyncIterator[list[MucClient]]:
    """Clients for ``user/resource`` JIDs, logged in; logged out (if still up) afterwards."""
    clients = [
        MucClient(f"{jid.split('/')[0]}@{srv.domain}/{jid.split('/')[1]}", password) for jid in jids
    ]
    try:
        await asyncio.gather(*(c.login(srv.c2s) for c in clients))
        yield clients
    finally:
        for c in clients:
            if not c.ended.is_set():
                with contextlib.suppress(Exception):
                    await c.logout()
