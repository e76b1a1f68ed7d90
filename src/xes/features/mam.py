"""XEP-0313 Message Archive Management (``urn:xmpp:mam:2``) for a user's own archive.

A query is read from the ``archive`` projection on whichever node the client is connected to
(every node holds the whole archive): results are sent as ``<result/>`` messages, then the iq
result with ``<fin/>`` and the XEP-0059 result-set edges. Supported: the form fields ``with``,
``start``, ``end`` and the extended ``after-id``, ``before-id``, ``ids``; RSM ``max``, ``after``,
``before`` (empty: the last page), ``count`` for an unfiltered archive; ``flip-page``;
preferences (``always``/``never``/``roster``, recorded as ``archive.prefs_set``); archive
metadata (first and last message). An id the archive does not hold is ``item-not-found``.

Parsing and rendering are pure functions (:func:`parse_query`, :func:`render_page`), shared with
the archive benchmark.
"""

from __future__ import annotations

from datetime import UTC, datetime

from xes.events.catalog import ArchivePrefsSet
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.projections import archive as archive_view
from xes.projections.archive import ArchiveQuery, ItemNotFound, Page
from xes.stanza.archiving import PREF_DEFAULTS, Prefs
from xes.stanza.core import StanzaError, iq_result
from xes.stanza.delay import stamp
from xes.stanza.forward import forwarded
from xes.xml import E, Element, escape_attr, ns

PAGE_BYTES = 128 * 1024
"""Most result bytes in one page: a page for a stream-management session is one log proposal
(ADR 0008), which must stay well under the log's command size; the page ends early
(``complete`` not set) and the client continues from its ``<last/>`` or ``<first/>``."""
MAM_FIELDS = ("with", "start", "end", "after-id", "before-id", "ids")
_X = "{%s}x" % ns.DATA_FORMS
_FIELD = "{%s}field" % ns.DATA_FORMS
_VALUE = "{%s}value" % ns.DATA_FORMS


def parse_time(value: str) -> int:
    """XEP-0082 DateTime to milliseconds since the epoch; ``bad-request`` if it is not one."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise StanzaError("bad-request", f"not a XEP-0082 date-time: {value!r}") from exc
    if moment.tzinfo is None:
        raise StanzaError("bad-request", "a date-time needs a time zone (XEP-0082)")
    return int(moment.astimezone(UTC).timestamp() * 1000)


def _form_values(query: Element) -> dict[str, list[str]]:
    form = query.find(_X)
    if form is None:
        return {}
    if form.get("type") not in (None, "submit"):
        raise StanzaError("bad-request", "the query form must be of type submit")
    values: dict[str, list[str]] = {}
    for field in form.find_all(_FIELD):
        var = field.get("var") or ""
        values[var] = [v.text for v in field.find_all(_VALUE)]
    form_type = values.pop("FORM_TYPE", [ns.MAM])
    if form_type[:1] != [ns.MAM]:
        raise StanzaError("bad-request", "FORM_TYPE must be urn:xmpp:mam:2")
    unknown = sorted(set(values) - set(MAM_FIELDS))
    if unknown:
        raise StanzaError("bad-request", f"unsupported field(s): {', '.join(unknown)}")
    return values


def _one(values: dict[str, list[str]], name: str) -> str | None:
    got = values.get(name)
    if not got:
        return None
    if len(got) != 1 or not got[0].strip():
        raise StanzaError("bad-request", f"field {name} takes one value")
    return got[0].strip()


def parse_query(query: Element, page_size: int, max_page_size: int) -> ArchiveQuery:
    """The archive query in ``<query xmlns='urn:xmpp:mam:2'/>``; ``bad-request`` if invalid."""
    values = _form_values(query)
    with_ = _one(values, "with")
    if with_ is not None:
        try:
            with_ = str(JID.parse(with_))
        except InvalidJID as exc:
            raise StanzaError("jid-malformed", "with is not a valid JID") from exc
    start = _one(values, "start")
    end = _one(values, "end")
    ids = values.get("ids")
    rsm = query.find("{%s}set" % ns.RSM)
    size, after, before = page_size, None, None
    if rsm is not None:
        if rsm.find("{%s}index" % ns.RSM) is not None:
            raise StanzaError("feature-not-implemented", "RSM index is not supported; use ids")
        max_el = rsm.find("{%s}max" % ns.RSM)
        if max_el is not None:
            try:
                size = int(max_el.text)
            except ValueError as exc:
                raise StanzaError("bad-request", "RSM max must be a number") from exc
            if size < 0:
                raise StanzaError("bad-request", "RSM max must not be negative")
        after_el = rsm.find("{%s}after" % ns.RSM)
        before_el = rsm.find("{%s}before" % ns.RSM)
        if after_el is not None and before_el is not None:
            raise StanzaError("bad-request", "RSM after and before together")
        if after_el is not None:
            after = after_el.text.strip()
            if not after:
                raise StanzaError("bad-request", "RSM after needs an id")
        if before_el is not None:
            before = before_el.text.strip()
    return ArchiveQuery(
        with_=with_,
        start=parse_time(start) if start is not None else None,
        end=parse_time(end) if end is not None else None,
        after_id=_one(values, "after-id"),
        before_id=_one(values, "before-id"),
        ids=tuple(v.strip() for v in ids) if ids else None,
        max=min(size, max_page_size),
        after=after,
        before=before,
    )


def fit_page(page: Page, backwards: bool, budget: int = PAGE_BYTES) -> Page:
    """``page`` cut to ``budget`` bytes of stored stanzas, keeping the end the client pages from
    (the newest items of a backwards page, the oldest of a forwards one); at least one item."""
    total, kept = 0, 0
    ordered = list(reversed(page.items)) if backwards else page.items
    for item in ordered:
        total += len(item.xml) + 256  # the result wrapper
        if kept and total > budget:
            break
        kept += 1
    if kept == len(page.items):
        return page
    items = ordered[:kept]
    if backwards:
        items.reverse()
    return Page(items, complete=False, count=page.count)


def render_page(
    page: Page, owner: str, to: str, queryid: str | None, flip: bool
) -> tuple[list[bytes], Element]:
    """The ``<result/>`` messages of ``page`` and the ``<fin/>`` that closes the query."""
    items = list(reversed(page.items)) if flip else page.items
    qid = f" queryid='{escape_attr(queryid)}'" if queryid is not None else ""
    head = f"<message to='{escape_attr(to)}' from='{escape_attr(owner)}'>"
    messages = [
        (
            f"{head}<result xmlns='{ns.MAM}'{qid} id='{escape_attr(item.id)}'>"
            f"{forwarded(item.xml, item.at)}</result></message>"
        ).encode()
        for item in items
    ]
    rsm: list[Element] = []
    if items:
        rsm.append(E("{%s}first" % ns.RSM, None, items[0].id))
        rsm.append(E("{%s}last" % ns.RSM, None, items[-1].id))
    if page.count is not None:
        rsm.append(E("{%s}count" % ns.RSM, None, str(page.count)))
    attrs = {"complete": "true"} if page.complete else None
    return messages, E("{%s}fin" % ns.MAM, attrs, E("{%s}set" % ns.RSM, None, *rsm))


def _own_archive(session: LocalSession, iq: Element) -> str:
    to = iq.get("to")
    if to is not None:
        try:
            target = JID.parse(to)
        except InvalidJID as exc:
            raise StanzaError("jid-malformed") from exc
        if str(target) != session.bare:
            raise StanzaError("forbidden", "only your own archive can be queried here")
    return session.bare


async def query(hub: Hub, session: LocalSession, iq: Element, child: Element) -> Element:
    owner = _own_archive(session, iq)
    if not hub.config.archive.enabled:
        raise StanzaError("service-unavailable")
    if iq.get("type") == "get":
        return iq_result(iq, E("{%s}query" % ns.MAM, None, query_form()))
    cfg = hub.config.archive
    q = parse_query(child, cfg.page_size, cfg.max_page_size)
    try:
        with hub.read() as txn:
            page = fit_page(archive_view.query(hub.store, txn, owner, q), q.before is not None)
    except ItemNotFound as exc:
        raise StanzaError("item-not-found", f"no message with id {exc} in the archive") from exc
    flip = child.find("{%s}flip-page" % ns.MAM) is not None
    messages, fin = render_page(page, owner, session.full, child.get("queryid"), flip)
    for data in messages:
        session.send_bytes(data)
    return iq_result(iq, fin)


def query_form() -> Element:
    fields = [
        E(_FIELD, {"type": "hidden", "var": "FORM_TYPE"}, E(_VALUE, None, ns.MAM)),
        E(_FIELD, {"type": "jid-single", "var": "with"}),
        E(_FIELD, {"type": "text-single", "var": "start"}),
        E(_FIELD, {"type": "text-single", "var": "end"}),
        E(_FIELD, {"type": "text-single", "var": "after-id"}),
        E(_FIELD, {"type": "text-single", "var": "before-id"}),
        E(_FIELD, {"type": "text-multi", "var": "ids"}),
    ]
    return E(_X, {"type": "form"}, *fields)


def _prefs_element(prefs: Prefs) -> Element:
    def jids(tag: str, values: tuple[str, ...]) -> Element:
        return E("{%s}%s" % (ns.MAM, tag), None, *(E("{%s}jid" % ns.MAM, None, j) for j in values))

    return E(
        "{%s}prefs" % ns.MAM,
        {"default": prefs.default},
        jids("always", prefs.always),
        jids("never", prefs.never),
    )


def _jid_list(prefs: Element, tag: str) -> list[str]:
    holder = prefs.find("{%s}%s" % (ns.MAM, tag))
    out: set[str] = set()
    for el in holder.find_all("{%s}jid" % ns.MAM) if holder is not None else []:
        try:
            out.add(str(JID.parse(el.text.strip()).bare))
        except InvalidJID as exc:
            raise StanzaError("jid-malformed", f"not a JID: {el.text!r}") from exc
    return sorted(out)


async def prefs(hub: Hub, session: LocalSession, iq: Element, child: Element) -> Element:
    owner = _own_archive(session, iq)
    default = hub.config.archive.default
    if iq.get("type") == "set":
        wanted = child.get("default")
        if wanted not in PREF_DEFAULTS:
            raise StanzaError("bad-request", "default must be always, never or roster")
        always, never = _jid_list(child, "always"), _jid_list(child, "never")
        if set(always) & set(never):
            raise StanzaError("bad-request", "a JID cannot be in both always and never")
        await hub.log.append(ArchivePrefsSet(owner, wanted, always, never))
    with hub.read() as txn:
        current = archive_view.prefs(hub.store, txn, owner, default)
    return iq_result(iq, _prefs_element(current))


async def metadata(hub: Hub, session: LocalSession, iq: Element, child: Element) -> Element:
    """The first and last message of the archive (XEP-0313 §5.4), the start of a catch-up."""
    owner = _own_archive(session, iq)
    if iq.get("type") != "get":
        raise StanzaError("bad-request")
    with hub.read() as txn:
        edges = archive_view.edges(hub.store, txn, owner)
    children = []
    if edges is not None:
        for tag, item in zip(("start", "end"), edges, strict=True):
            attrs = {"id": item.id, "timestamp": stamp(item.at)}
            children.append(E("{%s}%s" % (ns.MAM, tag), attrs))
    return iq_result(iq, E("{%s}metadata" % ns.MAM, None, *children))
