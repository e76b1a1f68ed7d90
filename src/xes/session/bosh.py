"""BOSH (XEP-0124) carrying XMPP (XEP-0206), sans-IO: what a request says and what to answer.

A BOSH session is a byte stream for :class:`~xes.transport.c2s.ClientConnection` like a socket
(ADR 0016); this module holds the rules that make HTTP requests into that stream and the
session's output into responses, without any I/O, so each rule is tested on its own:

* :func:`parse_body` checks one request body (well-formed, ``<body/>`` in the httpbind
  namespace, a ``rid``) and cuts out its payload bytes as the client wrote them, for the
  session's own parser and limits to judge (nothing of the stanzas is interpreted here);
* :func:`negotiate` and :func:`creation_attrs`: the session creation request and response
  (§7, XEP-0206 §3): ``wait`` and ``hold`` capped by the configuration, ``requests = hold + 1``,
  ``ver`` the lower of both, ``ack`` when the client asked for acknowledgements (§9);
* :class:`RidWindow`: payloads in ``rid`` order even when requests arrive out of order within
  ``requests``; a repeated ``rid`` gets its cached response again (§14, lost responses); a
  ``rid`` outside the window is ``item-not-found`` (§14.1);
* :class:`BoshOutbound`: the session's output cut into elements (the WebSocket splitter of
  :mod:`xes.session.framing`), stanzas given ``xmlns='jabber:client'`` (XEP-0206 §4), the
  stream header dropped (its id becomes ``authid``), ``stream:features`` and ``stream:error``
  kept prefixed under a ``<body/>`` that declares ``xmlns:stream`` (as Prosody writes them;
  StanzaJS resolves prefixes through the body, Strophe.js looks up ``stream:features``);
* :func:`response_body` and :func:`terminate_body`: the ``<body/>`` responses.

Not supported (not advertised): ``pause``/``maxpause`` (§10), ``report``/``time`` (§9.3: a
client that lost a response re-sends its request and gets it from the cache instead),
``key``/``newkey`` (§15, superseded by TLS), multiple streams (§16, dropped from XEP-0124).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field

from defusedxml import ElementTree as SafeET

from xes.session.framing import TAG, ElementSplitter, stream_header, top_level
from xes.xml import ns
from xes.xml.element import escape_attr

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
VERSION = (1, 11)
"""XEP-0124 version implemented (``ver``)."""
MAX_RID = 2**53 - 1
"""§14: rids are below 2^53 (so JavaScript clients count them exactly)."""

_BODY = "{%s}body" % NS_HTTPBIND
_VER = re.compile(r"^(\d{1,4})\.(\d{1,4})$")
_ID = re.compile(rb"""\sid\s*=\s*(?:'([^']*)'|"([^"]*)")""")


class BoshError(Exception):
    """A request that ends (or never starts) a session: the terminal condition of §17.1."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


# -- requests ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BodyRequest:
    """One client request: its ``<body/>`` attributes and its payload bytes."""

    rid: int
    """The request id (§14)."""
    sid: str | None
    """The session id; None in a session creation request."""
    attrs: dict[str, str]
    """All attributes, namespaced ones in Clark notation (``{urn:xmpp:xbosh}restart``)."""
    payload: bytes
    """The children of ``<body/>``, byte for byte as the client sent them."""

    @property
    def terminate(self) -> bool:
        """``type='terminate'``: the client ends the session (§13)."""
        return self.attrs.get("type") == "terminate"

    @property
    def restart(self) -> bool:
        """``xmpp:restart='true'``: a new stream after SASL (XEP-0206 §5)."""
        return self.attrs.get("{%s}restart" % NS_XBOSH) in ("true", "1")

    @property
    def empty(self) -> bool:
        """Nothing for the session: a poll (what §12's polling interval counts)."""
        return not self.payload.strip() and not self.terminate and not self.restart


def parse_body(data: bytes) -> BodyRequest:
    """Check one request body and cut out its payload; :class:`BoshError` (``bad-request``)
    when it is not a BOSH body (§17.1: malformed, wrong namespace, missing ``rid``)."""
    try:
        root = SafeET.fromstring(data)
    except Exception:
        # defusedxml refuses DTDs and entities too; all of it is a malformed request.
        raise BoshError("bad-request", "the body is not well-formed XML") from None
    if root.tag != _BODY:
        raise BoshError("bad-request", f"not a <body xmlns='{NS_HTTPBIND}'/>")
    rid_text = root.get("rid", "")
    if not rid_text.isdigit() or not 0 < int(rid_text) <= MAX_RID:
        raise BoshError("bad-request", "rid missing or not a positive integer below 2^53")
    return BodyRequest(
        rid=int(rid_text), sid=root.get("sid"), attrs=dict(root.attrib), payload=_payload(data)
    )


def _payload(data: bytes) -> bytes:
    """The bytes between ``<body ...>`` and ``</body>`` of a body already known well-formed."""
    pos = 0
    while True:
        lt = data.index(b"<", pos)
        if data.startswith((b"<?", b"<!--"), lt):
            pos = data.index(b"?>" if data[lt + 1] == ord("?") else b"-->", lt) + 2
            continue
        match = TAG.match(data, lt)
        assert match is not None  # the parser accepted it: the root start tag is here
        if match.group("empty"):
            return b""
        end = data.rindex(b"</" + match.group("name"))
        return data[match.end() : end]


# -- session creation (§7, XEP-0206 §3) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What this node allows (``[bosh]``)."""

    max_wait: int
    max_hold: int
    inactivity: int
    polling: int


@dataclass(frozen=True, slots=True)
class SessionTerms:
    """What a session runs under, as the creation response tells the client."""

    wait: int
    """Longest time (s) a request is held."""
    hold: int
    """Most requests held at once."""
    requests: int
    """Most requests the client may have open: ``hold + 1`` (§7.1)."""
    inactivity: int
    polling: int
    ver: str
    """The lower of the client's and our XEP-0124 version."""
    ack: bool
    """The client asked for acknowledgements (``ack='1'``, §9.1)."""
    lang: str | None
    to: str


def negotiate(
    request: BodyRequest, limits: SessionLimits, domain: str | Collection[str]
) -> SessionTerms:
    """The terms of a new session; :class:`BoshError` for a creation request we refuse.
    ``domain``: the hosted domain, or all of them (ADR 0023); ``to`` must name one."""
    attrs = request.attrs
    to = attrs.get("to", "").lower()
    hosts = (domain,) if isinstance(domain, str) else tuple(domain)
    if to not in hosts:
        raise BoshError("host-unknown", f"this server serves {', '.join(hosts)}")
    domain = to
    wait_text, hold_text = attrs.get("wait", ""), attrs.get("hold", "1")
    if not wait_text.isdigit() or not hold_text.isdigit():
        raise BoshError("bad-request", "wait and hold must be non-negative integers")
    hold = min(int(hold_text), limits.max_hold)
    return SessionTerms(
        wait=min(int(wait_text), limits.max_wait),
        hold=hold,
        requests=hold + 1,
        inactivity=limits.inactivity,
        polling=limits.polling,
        ver=_lower_version(attrs.get("ver")),
        ack=attrs.get("ack") == "1",
        lang=attrs.get("{%s}lang" % ns.XML),
        to=domain,
    )


def _lower_version(theirs: str | None) -> str:
    ours = VERSION
    match = _VER.match(theirs or "")
    if match is not None:
        ours = min(ours, (int(match.group(1)), int(match.group(2))))
    return f"{ours[0]}.{ours[1]}"


def creation_attrs(terms: SessionTerms, sid: str, rid: int, stream_id: str | None) -> str:
    """The session creation response's attributes (§7.1, XEP-0206 §3): no ``maxpause``
    (pause is not supported), ``ack`` only when the client asked for it (§9.1)."""
    attrs = {
        "sid": sid,
        "wait": str(terms.wait),
        "hold": str(terms.hold),
        "requests": str(terms.requests),
        "inactivity": str(terms.inactivity),
        "polling": str(terms.polling),
        "ver": terms.ver,
        "from": terms.to,
        "xmpp:version": "1.0",
        "xmpp:restartlogic": "true",
    }
    if stream_id:
        attrs["authid"] = stream_id
    if terms.ack:
        attrs["ack"] = str(rid)
    return "".join(f" {k}='{escape_attr(v)}'" for k, v in attrs.items())


def session_header(terms: SessionTerms) -> bytes:
    """The stream header a creation or restart request stands for (XEP-0206 §3, §5)."""
    attrs = {"to": terms.to, "version": "1.0"}
    if terms.lang:
        attrs["{%s}lang" % ns.XML] = terms.lang
    return stream_header(attrs)


# -- request ids (§14) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replay:
    """A rid already answered: the same response again (§14.3)."""

    body: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    """A new rid inside the window; ``ready`` are the requests whose payloads are now due, in
    rid order (empty when this one came early and waits for the gap before it)."""

    ready: list[BodyRequest]


@dataclass(frozen=True, slots=True)
class InFlight:
    """A rid received and not answered yet (the client gave up on its first copy): it takes
    over the wait, its payload is not passed on twice."""


Verdict = Replay | Accepted | InFlight


@dataclass
class RidWindow:
    """Which rids a session has received, processed and answered (§14)."""

    next_rid: int
    """The lowest rid not received yet in order (every lower one was)."""
    requests: int
    """The client may be ``requests`` ahead of what it got answers for (§7.1)."""
    _early: dict[int, BodyRequest] = field(default_factory=dict)
    _open: set[int] = field(default_factory=set)
    _answers: OrderedDict[int, bytes] = field(default_factory=OrderedDict)

    @property
    def acked(self) -> int:
        """The highest rid received with every rid before it (§9.2's ``ack``)."""
        return self.next_rid - 1

    def receive(self, request: BodyRequest) -> Verdict:
        """Judge a request's rid; :class:`BoshError` ``item-not-found`` outside the window."""
        rid = request.rid
        cached = self._answers.get(rid)
        if cached is not None:
            return Replay(cached)
        if rid in self._open:
            return InFlight()
        if not self.next_rid <= rid < self.next_rid + self.requests:
            raise BoshError("item-not-found", f"rid {rid} outside the window")
        self._open.add(rid)
        self._early[rid] = request
        ready = []
        while self.next_rid in self._early:
            ready.append(self._early.pop(self.next_rid))
            self.next_rid += 1
        return Accepted(ready)

    def answered(self, rid: int, body: bytes) -> None:
        """Remember the response to ``rid`` for a retransmission; the last ``requests`` are
        kept, which covers every request a client may still be waiting for."""
        self._open.discard(rid)
        self._answers[rid] = body
        while len(self._answers) > self.requests:
            self._answers.popitem(last=False)

    def ack_for(self, rid: int) -> int | None:
        """§9.2: a response reports ``ack`` only when it answers something else than the highest
        rid received in order (the client then learns that later ones arrived)."""
        return None if rid == self.acked else self.acked


def too_frequent(terms: SessionTerms, request: BodyRequest, held: int, since_answer: float) -> bool:
    """§12 (overactivity) for polling sessions (``hold = 0``): an empty request when nothing is
    held, sooner than ``polling`` seconds after our last response, is a ``policy-violation``.
    Sessions that hold requests are not judged so: a long-polling client legitimately sends a
    new empty request the moment a response with data comes back."""
    return terms.hold == 0 and held == 0 and request.empty and since_answer < terms.polling


# -- responses -----------------------------------------------------------------------------


@dataclass
class BoshOutbound(ElementSplitter):
    """The session's output as ``<body/>`` children (XEP-0206 §4)."""

    stream_id: str | None = None
    """The id of the session's latest stream header (``authid``)."""
    stream_error: bool = False
    """A ``<stream:error>`` went out (the terminate condition is then ``remote-stream-error``)."""

    def on_header(self, attrs: bytes) -> None:
        match = _ID.search(attrs)
        if match is not None:
            self.stream_id = (match.group(1) or match.group(2) or b"").decode()
        return None

    def on_end(self) -> None:
        return None

    def on_element(self, element: bytes) -> str:
        if element.startswith(b"<stream:error"):
            self.stream_error = True
        return top_level(element, keep_stream_prefix=True)


def _open_tag(attrs: str) -> str:
    return f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' xmlns:stream='{ns.STREAMS}'{attrs}"


def response_body(elements: list[str], attrs: str = "") -> bytes:
    """A response carrying ``elements``; ``attrs`` (with a leading space) such as ``ack``."""
    if not elements:
        return (_open_tag(attrs) + "/>").encode()
    return (_open_tag(attrs) + ">" + "".join(elements) + "</body>").encode()


def terminate_body(condition: str | None = None, elements: list[str] | None = None) -> bytes:
    """``type='terminate'`` (§13, §17.1), with the condition when it is an error."""
    attrs = " type='terminate'"
    if condition:
        attrs += f" condition='{escape_attr(condition)}'"
    return response_body(elements or [], attrs)
