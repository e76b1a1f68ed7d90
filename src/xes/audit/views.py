"""Human-readable audit views (issue 17, item 3): a conversation, a room, a user at a moment.

Auditors ask "what did A and B say to each other", "who was in this room at 14:02", "where was
this user logged in then, and who was on their roster". None of it needs a new interpreter of
events:

* **a room, a user** (``xes audit room|user --at``) are read from a point-in-time replay
  (:mod:`xes.projections.replay`, what ``xes replay --until`` runs) into a temporary store,
  through the projections' own read functions, so the answer is exactly the state the server
  held once that prefix of the log was applied (the same on every node for the same index);
* **a conversation** (``xes audit conversation``) is read from the journal rows the export
  reads, selected with the export's filters (:func:`xes.audit.export.selector`): every
  ``message.routed`` between the two bare JIDs, even those no archive kept (preferences, or
  retention since) and those of accounts removed since. Copies routed again (a session that
  ended without acknowledging a message, a node lost) carry the first one's ``received_at``
  and are counted, not listed: they are the same message. Corrections (XEP-0308) and
  retractions (XEP-0424) are listed as sent, marked with the id they replace: the journal
  keeps what was said first and what replaced it, which is what an audit wants.

This module builds plain documents (dicts of JSON values) and formats them as text; the
commands (:mod:`xes.audit.commands`) open stores, record the access and print.
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import lmdb

from xes.audit.export import Filters, selector
from xes.events import Committed, decode_event, to_data
from xes.jid import bare_of
from xes.projections import account_data, offline, pep, push, stream_mgmt
from xes.projections import accounts as accounts_view
from xes.projections import archive as archive_view
from xes.projections import muc as muc_view
from xes.projections import roster as roster_view
from xes.projections import sessions as sessions_view
from xes.projections.projector import all_db_names
from xes.projections.replay import Replayed, parse_until, replay_into
from xes.store import journal
from xes.store.env import Store, open_store
from xes.xml import Element, XmlStreamError, parse_fragment

SLOW_AFTER = 3.0
"""Seconds of replay after which progress is printed (replay folds about 2,000 events/s)."""
PROGRESS_EVERY_S = 2.0
"""Seconds between two progress lines."""
OMEMO_DEVICE_NODES = ("eu.siacs.conversations.axolotl.devicelist", "urn:xmpp:omemo:2:devices")
"""PEP nodes holding a user's OMEMO device ids (XEP-0384 legacy and version 2)."""
CORRECT_NS = "urn:xmpp:message-correct:0"
RETRACT_NS = ("urn:xmpp:message-retract:1", "urn:xmpp:message-retract:0")
FASTEN_NS = "urn:xmpp:fasten:0"


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC with milliseconds (``...Z``)."""
    if ms is None:
        return None
    when = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the state at a moment ---------------------------------------------------------------------


class Progress:
    """A replay's progress on stderr, once it has taken more than :data:`SLOW_AFTER` seconds:
    a short replay says nothing, a long one says how far it is every few seconds."""

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        after: float = SLOW_AFTER,
        every: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out, self.after, self.every, self.clock = out, after, every, clock
        self.start = clock()
        self.last: float | None = None

    def __call__(self, events: int, index: int, upto: int) -> None:
        now = self.clock()
        elapsed = now - self.start
        if elapsed < self.after or (self.last is not None and now - self.last < self.every):
            return
        self.last = now
        share = 100 * index // upto if upto else 100
        rate = int(events / elapsed) if elapsed > 0 else 0
        print(
            f"replaying the journal: index {index} of {upto} ({share}%), "
            f"{events} events, {rate} events/s",
            file=self.out or sys.stderr,
            flush=True,
        )

    def finish(self, index: int) -> None:
        """After a replay that said how far it was, that it is done (the state digest, computed
        after the last event, takes a moment more)."""
        if self.last is not None:
            took = self.clock() - self.start
            print(
                f"replayed to index {index} in {took:.0f} s",
                file=self.out or sys.stderr,
                flush=True,
            )


@contextmanager
def state_at(
    live: Store, at: str, progress: Progress | None = None
) -> Iterator[tuple[Store, Replayed]]:
    """The projections as they were at ``at`` (``--until`` of ``xes replay``: a log index, an
    ISO 8601 time or ms since the epoch), in a temporary store removed afterwards.

    Raises :class:`xes.projections.replay.ReplayError` for a point outside the journal."""
    with tempfile.TemporaryDirectory(prefix="xes-audit-") as tmp:
        done = replay_into(live, Path(tmp), at, progress)
        if progress is not None:
            progress.finish(done.index)
        store = open_store(Path(tmp), all_db_names(), writer=False)
        try:
            yield store, done
        finally:
            store.close()


def point(asked: str, done: Replayed) -> dict[str, Any]:
    """Where a view's state comes from: enough to reproduce it with ``xes replay --until``."""
    return {
        "asked": asked,
        "index": done.index,
        "events": done.events,
        "last_event_at": iso(done.last_at),
        "digest": done.digest,
    }


# -- a room ------------------------------------------------------------------------------------


def room_doc(store: Store, txn: lmdb.Transaction, room_jid: str) -> dict[str, Any] | None:
    """The room as ``xes muc show`` shows it (:func:`xes.projections.muc.details`), with each
    occupant's real JID; None if no such room existed then."""
    room = muc_view.get(store, txn, room_jid)
    if room is None:
        return None
    history = len(muc_view.history(store, txn, room_jid, 1 << 62, 1 << 30))
    doc = muc_view.details(room, history, archive_view.count(store, txn, room_jid))
    for occupant, row in zip(
        (o for _, o in sorted(room.occupants.items())), doc["occupants"], strict=True
    ):
        row["real_jid"] = occupant.shown.jid if occupant.primary in occupant.sessions else ""
    return doc


def format_room(doc: dict[str, Any], at: dict[str, Any]) -> str:
    lines = [f"room {doc['room']}", *_point_lines(at), ""]
    subject = f"{doc['subject']!r} (set by {doc['subject_by'] or '?'})" if doc["subject"] else "-"
    lines += [f"name:    {doc['name'] or '-'}", f"subject: {subject}", ""]
    occupants = doc["occupants"]
    lines.append(f"occupants ({len(occupants)}):")
    lines += table(
        ("NICK", "REAL JID", "ROLE", "AFFILIATION", "SESSIONS"),
        [
            (o["nick"], o["real_jid"], o["role"], o["affiliation"], str(len(o["sessions"])))
            for o in occupants
        ],
    )
    lines += ["", f"affiliations ({len(doc['affiliations'])}):"]
    lines += table(("JID", "AFFILIATION"), sorted(doc["affiliations"].items()))
    if doc["reserved_nicks"]:
        lines += ["", f"reserved nicknames ({len(doc['reserved_nicks'])}):"]
        lines += table(("JID", "NICK"), sorted(doc["reserved_nicks"].items()))
    lines += ["", "configuration:"]
    config = {**doc["config"], "locked": doc["locked"]}
    lines += table(("SETTING", "VALUE"), [(k, _value(v)) for k, v in sorted(config.items())])
    lines += [
        "",
        f"discussion history: {doc['history_messages']} messages; "
        f"archive: {doc['archived_messages']} messages",
    ]
    return "\n".join(lines)


# -- a user ------------------------------------------------------------------------------------


def presence_facts(xml: str | None) -> tuple[str | None, str | None]:
    """``(show, status)`` of a stored presence stanza (None, None when absent or unreadable)."""
    if not xml:
        return None, None
    try:
        stanza = parse_fragment(xml.encode())
    except XmlStreamError:  # a view shows what it can; the stanza was accepted once
        return None, None
    found = {c.name: c.text for c in stanza.iter_elements() if c.name in ("show", "status")}
    return found.get("show"), found.get("status")


def omemo_devices(payload: str) -> list[str]:
    """Device ids listed in an OMEMO device list item (``<device id='...'/>`` children)."""
    try:
        root = parse_fragment(payload.encode())
    except XmlStreamError:  # a view shows what it can
        return []
    return [d.get("id") or "" for d in _descendants(root) if d.name == "device"]


def _descendants(el: Element) -> Iterator[Element]:
    for child in el.iter_elements():
        yield child
        yield from _descendants(child)


def user_doc(store: Store, txn: lmdb.Transaction, jid: str) -> dict[str, Any]:
    """Sessions, devices, presence and roster of bare ``jid`` in ``store``."""
    sessions = []
    for view in sessions_view.of_user(store, txn, jid):
        show, status = presence_facts(view.presence)
        sm = stream_mgmt.state(store, txn, view.session)
        sessions.append(
            {
                "jid": view.jid,
                "session": view.session,
                "node": view.node or None,
                "available": view.available,
                "priority": view.priority,
                "show": show,
                "status": status,
                "carbons": view.carbons,
                "stream_management": None
                if sm is None
                else {
                    "resumable": sm.resume,
                    "handled": sm.handled,
                    "acked": sm.acked,
                    "unacked": sm.next - sm.acked,
                    "detached_until": iso(sm.deadline) if sm.deadline else None,
                },
            }
        )
    last = account_data.last_activity(store, txn, jid)
    omemo = []
    for name in OMEMO_DEVICE_NODES:
        item = pep.last_item(store, txn, jid, name)
        if item is not None:
            omemo.append({"node": name, "devices": omemo_devices(item.payload)})
    return {
        "jid": jid,
        "account": accounts_view.exists(store, txn, jid),
        "sessions": sessions,
        "presence": {
            "available": [s["jid"] for s in sessions if s["available"]],
            "last_unavailable": None if last is None else {"at": iso(last[0]), "status": last[1]},
        },
        "devices": {
            "offline": [
                {"resource": r, "last_seen": iso(seen), "offline_received": upto}
                for r, seen, upto in offline.devices(store, txn, jid)
            ],
            "fast_tokens": [
                {"agent": agent, "mechanism": row.get("mechanism"), "expires": iso(row["expires"])}
                for agent, row in sorted(account_data.fast_tokens(store, txn, jid).items())
            ],
            "push": [
                {"service": r.service, "node": r.node, "resource": r.resource}
                for r in push.registrations(store, txn, jid)
            ],
            "omemo": omemo,
        },
        "offline_messages": offline.count(store, txn, jid),
        "roster": {
            "version": roster_view.version(store, txn, jid),
            "items": [
                {
                    "contact": i.contact,
                    "name": i.name,
                    "groups": list(i.groups),
                    "subscription": i.subscription,
                    "ask": i.ask,
                    "pending_in": bool(i.pending_in),
                    "approved": i.approved,
                }
                for i in sorted(roster_view.items(store, txn, jid), key=lambda i: i.contact)
            ],
        },
    }


def format_user(doc: dict[str, Any], at: dict[str, Any]) -> str:
    lines = [f"user {doc['jid']}", *_point_lines(at)]
    if not doc["account"]:
        lines.append("no such account at this point")
    sessions = doc["sessions"]
    lines += ["", f"sessions ({len(sessions)}):"]
    lines += table(
        ("JID", "NODE", "PRESENCE", "PRIORITY", "STREAM MANAGEMENT"),
        [
            (
                s["jid"],
                s["node"] or "(detached)",
                _presence_text(s),
                str(s["priority"]),
                _sm_text(s["stream_management"]),
            )
            for s in sessions
        ],
    )
    last = doc["presence"]["last_unavailable"]
    lines += ["", "presence:"]
    lines.append(f"  available resources: {', '.join(doc['presence']['available']) or '-'}")
    if last is not None:
        status = f" ({last['status']})" if last["status"] else ""
        lines.append(f"  last went offline:   {last['at']}{status}")
    devices = doc["devices"]
    lines += ["", f"devices (offline store, {doc['offline_messages']} messages waiting):"]
    lines += table(
        ("RESOURCE", "LAST SEEN", "OFFLINE RECEIVED"),
        [
            (d["resource"], d["last_seen"] or "-", str(d["offline_received"]))
            for d in devices["offline"]
        ],
    )
    if devices["fast_tokens"]:
        lines += ["", "FAST tokens (XEP-0484):"]
        lines += table(
            ("DEVICE", "MECHANISM", "EXPIRES"),
            [
                (t["agent"], t["mechanism"] or "-", t["expires"] or "-")
                for t in devices["fast_tokens"]
            ],
        )
    if devices["push"]:
        lines += ["", "push registrations (XEP-0357):"]
        lines += table(
            ("SERVICE", "NODE", "RESOURCE"),
            [(p["service"], p["node"], p["resource"]) for p in devices["push"]],
        )
    for entry in devices["omemo"]:
        lines.append(f"OMEMO devices ({entry['node']}): {', '.join(entry['devices']) or '-'}")
    roster = doc["roster"]
    lines += ["", f"roster (version {roster['version']}, {len(roster['items'])} items):"]
    lines += table(
        ("CONTACT", "SUBSCRIPTION", "PENDING", "NAME", "GROUPS"),
        [
            (
                i["contact"],
                i["subscription"],
                _pending_text(i),
                i["name"] or "",
                ", ".join(i["groups"]),
            )
            for i in roster["items"]
        ],
    )
    return "\n".join(lines)


def _presence_text(session: dict[str, Any]) -> str:
    if not session["available"]:
        return "unavailable"
    text = session["show"] or "available"
    return f"{text}: {session['status']}" if session["status"] else text


def _sm_text(sm: dict[str, Any] | None) -> str:
    if sm is None:
        return "-"
    text = f"{'resumable' if sm['resumable'] else 'on'}, h={sm['handled']}, {sm['unacked']} unacked"
    return text + (f", detached until {sm['detached_until']}" if sm["detached_until"] else "")


def _pending_text(item: dict[str, Any]) -> str:
    flags = [
        name
        for name, on in (
            ("out", item["ask"]),
            ("in", item["pending_in"]),
            ("pre-approved", item["approved"]),
        )
        if on
    ]
    return ", ".join(flags) or "-"


# -- a conversation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Said:
    """One message of a conversation as the journal holds it."""

    index: int
    pos: int
    at: int
    """The proposer's time of the event (ms): when the server took the message."""
    sender: str
    """Full JID."""
    to: str
    type: str
    body: str | None
    msg_id: str | None
    """The sender's ``id`` attribute (what corrections and markers name)."""
    stanza_id: str | None
    """Archive id (XEP-0359), None when no archive kept it."""
    kind: str
    """message | correction | retraction | marker | other (chat states, receipts)."""
    refers: str | None = None
    """The id a correction, retraction or marker names."""

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pos": self.pos,
            "at": iso(self.at),
            "from": self.sender,
            "to": self.to,
            "type": self.type,
            "body": self.body,
            "id": self.msg_id,
            "stanza_id": self.stanza_id,
            "kind": self.kind,
            "refers": self.refers,
        }


def classify(xml: str) -> tuple[str | None, str, str | None]:
    """``(body, kind, refers)`` of a one-to-one message stanza (see :class:`Said`)."""
    try:
        stanza = parse_fragment(xml.encode())
    except XmlStreamError:  # the journal holds it as routed: shown as other
        return None, "other", None
    body = None
    kind, refers = "other", None
    for child in stanza.iter_elements():
        if child.name == "body" and body is None:
            body = child.text
        elif child.ns == CORRECT_NS and child.name == "replace":
            kind, refers = "correction", child.get("id")
        elif (child.ns in RETRACT_NS and child.name == "retract") or (
            child.ns == FASTEN_NS
            and child.name == "apply-to"
            and any(c.ns in RETRACT_NS and c.name == "retract" for c in child.iter_elements())
        ):
            kind, refers = "retraction", child.get("id")
    if kind == "other" and body is not None:
        kind = "message"
    return body, kind, refers


def bound_filter(value: str | None) -> str | None:
    """A ``--since``/``--until`` value (parsed as ``xes replay --until`` parses it) as the
    export's filters take it: a log index, or an ISO 8601 time."""
    if value is None:
        return None
    kind, n = parse_until(value)
    return str(n) if kind == "index" else iso(n)


def conversation(
    store: Store,
    txn: lmdb.Transaction,
    a: str,
    b: str,
    *,
    since: str | None = None,
    until: str | None = None,
    everything: bool = False,
) -> tuple[list[Said], int]:
    """The one-to-one messages between bare ``a`` and ``b`` in the journal, in log order (which
    is the order the server took them in), and how many re-routed copies were left out.

    Without ``everything``, only messages with a body, corrections and retractions; with it,
    chat markers, receipts and chat states too. ``since``/``until``: :func:`bound_filter`."""
    window = selector(Filters(since=bound_filter(since), until=bound_filter(until), jid=a))
    other = selector(Filters(jid=b))
    pair = {a, b}
    out: list[Said] = []
    copies = 0
    for key, value in txn.cursor(db=store.db("journal.events")):
        row = bytes(value)
        if b'"message.routed"' not in row:
            continue
        index, pos = journal.split_key(bytes(key))
        if not (window(index, row) and other(index, row)):
            continue
        committed = Committed.decode(row)
        if committed.envelope.type != "message.routed":
            continue
        ev = to_data(decode_event(committed.envelope))
        if ev["type"] == "groupchat" or {bare_of(ev["sender"]), bare_of(ev["to"])} != pair:
            continue
        if ev.get("received_at") is not None:
            copies += 1  # the same message delivered again: it is listed where it was first
            continue
        body, kind, refers = classify(ev["xml"])
        if not everything and kind not in ("message", "correction", "retraction"):
            continue
        if kind == "other" and ev.get("marker"):
            kind, refers = "marker", ev.get("marker_id")
        out.append(
            Said(
                index,
                pos,
                committed.envelope.at,
                ev["sender"],
                ev["to"],
                ev["type"],
                body,
                ev.get("msg_id"),
                ev.get("stanza_id"),
                kind,
                refers,
            )
        )
    return out, copies


def format_conversation(doc: dict[str, Any]) -> str:
    window = (
        ", ".join(f"{k} {doc[k]}" for k in ("since", "until") if doc.get(k) is not None)
        or "the whole journal"
    )
    lines = [
        f"conversation between {doc['a']} and {doc['b']}",
        f"journal up to index {doc['journal_index']}; {window}",
        f"{len(doc['messages'])} messages"
        + (
            f" ({doc['rerouted_copies']} re-routed copies not listed)"
            if doc["rerouted_copies"]
            else ""
        ),
        "",
    ]
    lines += table(
        ("TIME", "INDEX", "FROM", "TO", "ID", "ARCHIVE ID", "BODY"),
        [
            (
                m["at"],
                f"{m['index']}:{m['pos']}" if m["pos"] else str(m["index"]),
                m["from"],
                m["to"],
                m["id"] or "-",
                m["stanza_id"] or "-",
                _said_text(m),
            )
            for m in doc["messages"]
        ],
    )
    return "\n".join(lines)


def _said_text(m: dict[str, Any]) -> str:
    body = (m["body"] or "").replace("\\", "\\\\").replace("\n", "\\n")
    if m["kind"] == "correction":
        return f"[correction of {m['refers']}] {body}"
    if m["kind"] == "retraction":
        return f"[retraction of {m['refers']}]" + (f" {body}" if body else "")
    if m["kind"] == "marker":
        return f"[marker for {m['refers']}]"
    if m["kind"] == "other":
        return "[no body]"
    return body


# -- text --------------------------------------------------------------------------------------


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]] | Any) -> list[str]:
    """Rows as aligned columns under ``headers``, indented; ``(none)`` for no rows. The last
    column is not padded (it may be long: a body, groups)."""
    rows = [tuple(r) for r in rows]
    if not rows:
        return ["  (none)"]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        head = "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False))
        return ("  " + head + "  " + str(cells[-1])).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _point_lines(at: dict[str, Any]) -> list[str]:
    return [
        f"as of log index {at['index']} (asked: {at['asked']}; last event "
        f"{at['last_event_at'] or '-'}; {at['events']} events replayed)",
        f"state digest: {at['digest']}",
    ]


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, str):
        return v or "-"
    return json.dumps(v) if isinstance(v, list | dict) else str(v)
