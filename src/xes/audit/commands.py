"""``xes audit verify | export | key | conversation | room | user``: the auditor's commands
(ADR 0021, issue 17; the three views are :mod:`xes.audit.views`).

They read the data directory directly (LMDB read transactions are safe beside a running node)
and record who ran them as ``audit.accessed`` (:mod:`xes.audit.access`): through the running
node's log socket, or queued for the node's next start when it is stopped. ``verify --export``
of a file alone reads nothing of the server and records nothing unless ``--config`` names one.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xes.audit import access, keys
from xes.audit.export import Filters, verify_export, write_export
from xes.audit.verify import Report, Trust, verify_store
from xes.config import Config

if TYPE_CHECKING:
    import lmdb

    from xes.store.env import Store

MAX_LISTED = 20
"""Problems printed after the first (the rest are counted)."""


def _record(config: Config, event: Any, *, required: bool) -> str:
    """Propose ``event`` through the running node, else queue it; a sentence saying which.

    ``required`` (export): when the running log does not take it, refuse rather than go on
    unrecorded. A verify's record is queued then, for the node to propose once it can."""
    from xes.cli import _envelopes, running_gate
    from xes.eventlog.client import SyncClient, socket_alive
    from xes.events.gate import Gated

    if socket_alive(config.socket_path):
        client = SyncClient(config.socket_path)
        try:
            # audit.accessed is newer than the gate's baseline: written once every member of
            # the running cluster reads it (ADR 0022), as the server's own events are.
            command = _envelopes([event], gate=running_gate(config, client.status()))
            outcome, body = client.submit(command)
        except Gated as exc:
            outcome, body = f"gated: {exc}", b""
        except OSError as exc:
            outcome, body = f"unreachable: {exc}", b""
        finally:
            client.close()
        result = json.loads(body)[0] if outcome == "APPLIED" else {}
        if result.get("ok"):
            return f"access recorded in the log at index {result['events'][0][0]}"
        why = result.get("reason") or outcome.lower()
        if required:
            raise SystemExit(f"this access could not be recorded in the log ({why}): refused")
        access.enqueue(config, event)
        return f"access queued: the log did not take it now ({why}); the node proposes it later"
    access.enqueue(config, event)
    return "access queued: the node records it in the log when it runs again"


def _pinned(config: Config, args: argparse.Namespace) -> dict[str, str | None] | None:
    try:
        return Trust.parse_pinned([*config.audit.trusted_keys, *(args.trust_key or [])])
    except ValueError as exc:
        raise SystemExit(f"--trust-key / [audit] trusted_keys: {exc}") from None


def _print_report(report: Report, what: str) -> int:
    print(f"events checked: {report.events}")
    if report.last_checkpoint is not None:
        seq, index, signers = report.last_checkpoint
        print(
            f"checkpoints verified: {report.checkpoints} (the last covers index {index}, "
            f"event {seq}, signed by {', '.join(signers)})"
        )
    else:
        print("checkpoints verified: 0")
    seq, index, head = report.head
    print(f"head: event {seq} at index {index}, hash {head}")
    for note in report.notes:
        print(f"note: {note}")
    first = report.first()
    if first is None:
        print(f"OK: {what} is intact")
        return 0
    print(f"FAILED at index {first.index} pos {first.pos}: {first.what}")
    rest = sorted(report.problems, key=lambda p: (p.index, p.pos))
    for problem in rest[:MAX_LISTED]:
        print(f"  index {problem.index} pos {problem.pos}: {problem.what}")
    if len(rest) > MAX_LISTED:
        print(f"  ... and {len(rest) - MAX_LISTED} more")
    return 1


def _open(config: Config, data_dir: str | None) -> Any:
    from xes.cli import _open_live

    if data_dir:
        from dataclasses import replace

        config = replace(config, data_dir=Path(data_dir))
    return _open_live(config)


def cmd_verify(config: Config, args: argparse.Namespace, have_config: bool) -> int:
    pinned = _pinned(config, args)
    if args.export:
        report = verify_export(Path(args.export), pinned)
        what = f"the export {args.export}"
    else:
        store = _open(config, args.data_dir)
        try:
            with store.env.begin(buffers=False) as txn:
                report = verify_store(store, txn, pinned)
        finally:
            store.close()
        what = "the audit trail"
    code = _print_report(report, what)
    if have_config:
        first = report.first()
        result = "intact" if first is None else f"problems from index {first.index}"
        options = {"export": args.export, "data_dir": args.data_dir}
        print(_record(config, access.accessed("verify", options, result), required=False))
    return code


def cmd_export(config: Config, args: argparse.Namespace) -> int:
    from xes.cli import _room_jid

    filters = Filters(
        since=args.since,
        until=args.until,
        stream=args.stream,
        jid=args.jid,
        room=_room_jid(config, args.room) if args.room else None,
    )
    path = config.audit_key_path
    if not path.exists():
        raise SystemExit(f"no audit key at {path}: start the node once (or set [audit] key_file)")
    try:
        key = keys.load_or_create(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"the audit key {path} cannot be read ({exc})") from None
    out = Path(args.out)
    # Recorded before anything is read: an export that fails half-way was still an access.
    options = {**filters.to_json(), "out": str(out.resolve())}
    print(_record(config, access.accessed("export", options), required=True))
    store = _open(config, None)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with store.env.begin(buffers=False) as txn, open(tmp, "wb") as fh:
            count = write_export(
                store,
                txn,
                fh,
                filters,
                node=config.cluster.node_id,
                domain=config.domain,
                key=key,
                now_ms=int(time.time() * 1000),
            )
            fh.flush()
            os.fsync(fh.fileno())
    except ValueError as exc:
        tmp.unlink(missing_ok=True)
        raise SystemExit(f"export failed: {exc}") from None
    finally:
        store.close()
    tmp.rename(out)
    print(f"exported {count} events to {out}")
    return 0


def cmd_key(config: Config) -> int:
    """Print this node's public key as ``[audit] trusted_keys`` and ``--trust-key`` take it."""
    path = config.audit_key_path
    if not path.exists():
        raise SystemExit(f"no audit key at {path}: start the node once (or set [audit] key_file)")
    print(f"{config.cluster.node_id}:{keys.public_hex(keys.load_or_create(path))}")
    return 0


def _view_jid(config: Config, raw: str) -> str:
    """A bare JID for a view: ``raw`` as given (any domain: a contact may be remote), or a
    local part of this server's domain."""
    from xes.jid import JID, InvalidJID

    try:
        return str(JID.parse(raw if "@" in raw else f"{raw}@{config.domain}").bare)
    except InvalidJID as exc:
        raise SystemExit(f"invalid JID {raw!r}: {exc}") from None


def _emit(doc: dict[str, Any], text: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        print(text)
        print(f"\n{doc['access']}")


def cmd_conversation(config: Config, args: argparse.Namespace) -> int:
    """The one-to-one messages between two users, from the journal (:mod:`xes.audit.views`)."""
    from xes.audit import views
    from xes.projections.replay import ReplayError
    from xes.store import journal

    a, b = _view_jid(config, args.a), _view_jid(config, args.b)
    try:
        bounds = {k: views.bound_filter(getattr(args, k)) for k in ("since", "until")}
    except ReplayError as exc:
        raise SystemExit(f"--since/--until: {exc}") from None
    options = {"a": a, "b": b, **bounds, "all": args.all or None}
    recorded = _record(config, access.accessed("conversation", options), required=True)
    store = _open(config, None)
    try:
        with store.env.begin(buffers=True) as txn:
            said, copies = views.conversation(
                store, txn, a, b, since=args.since, until=args.until, everything=args.all
            )
            upto = journal.applied_index(store, txn)
    finally:
        store.close()
    doc = {
        "a": a,
        "b": b,
        **bounds,
        "journal_index": upto,
        "messages": [m.to_json() for m in said],
        "rerouted_copies": copies,
        "access": recorded,
    }
    _emit(doc, views.format_conversation(doc), args.json)
    return 0


def _at(
    config: Config,
    command: str,
    asked: str,
    options: dict[str, Any],
    read: Callable[[Store, lmdb.Transaction], dict[str, Any] | None],
) -> tuple[dict[str, Any] | None, dict[str, Any], str]:
    """Record the access, replay to ``asked`` and ``read(store, txn)`` there: (what it read,
    the point, the access sentence)."""
    from xes.audit import views
    from xes.projections.replay import ReplayError, parse_until

    try:
        parse_until(asked)
    except ReplayError as exc:
        raise SystemExit(f"--at: {exc}") from None
    recorded = _record(config, access.accessed(command, {**options, "at": asked}), required=True)
    live = _open(config, None)
    try:
        with (
            views.state_at(live, asked, views.Progress()) as (store, done),
            store.env.begin() as txn,
        ):
            found = read(store, txn)
    except ReplayError as exc:
        raise SystemExit(f"cannot replay to {asked}: {exc}") from None
    finally:
        live.close()
    return found, views.point(asked, done), recorded


def cmd_room(config: Config, args: argparse.Namespace) -> int:
    """A room as it was at ``--at``: occupants, affiliations, subject, configuration."""
    from xes.audit import views
    from xes.cli import _room_jid

    room = _room_jid(config, args.room)
    doc, at, recorded = _at(
        config, "room", args.at, {"room": room}, lambda s, t: views.room_doc(s, t, room)
    )
    if doc is None:
        if args.json:
            print(
                json.dumps(
                    {"room": room, "exists": False, "at": at, "access": recorded},
                    indent=2,
                    sort_keys=True,
                )
            )
        else:
            print(f"no room {room} at log index {at['index']} (asked: {args.at})\n\n{recorded}")
        return 1
    doc = {**doc, "exists": True, "at": at, "access": recorded}
    _emit(doc, views.format_room(doc, at), args.json)
    return 0


def cmd_user(config: Config, args: argparse.Namespace) -> int:
    """A user as they were at ``--at``: sessions, devices, presence, roster."""
    from xes.audit import views

    jid = _view_jid(config, args.jid)
    doc, at, recorded = _at(
        config, "user", args.at, {"jid": jid}, lambda s, t: views.user_doc(s, t, jid)
    )
    assert doc is not None
    doc = {**doc, "at": at, "access": recorded}
    _emit(doc, views.format_user(doc, at), args.json)
    return 0


def add_parser(sub: Any, with_config: Any) -> None:
    """``xes audit ...`` on the CLI's sub-parsers."""
    audit = with_config(sub.add_parser("audit", help="verify, export and view the audit trail"))
    audit_sub = audit.add_subparsers(dest="action", required=True)
    verify = with_config(
        audit_sub.add_parser("verify", help="check the hash chain and its signed checkpoints")
    )
    verify.add_argument("--export", help="verify this export file instead of a data directory")
    verify.add_argument("--data-dir", help="verify this data directory (a copy) instead")
    verify.add_argument(
        "--trust-key",
        action="append",
        help="a trusted public key, [node:]hex (repeatable; else the journal's announced keys)",
    )
    export = with_config(audit_sub.add_parser("export", help="write events with their proofs"))
    export.add_argument("--out", required=True, help="the JSON Lines file to write")
    export.add_argument("--since", help="log index or ISO 8601 time (UTC unless stated)")
    export.add_argument("--until", help="log index or ISO 8601 time, inclusive")
    export.add_argument("--stream", help="a stream, or a prefix ending in * (muc:*)")
    export.add_argument("--jid", help="events that mention this bare JID")
    export.add_argument("--room", help="events that mention this room (JID or local part)")
    with_config(audit_sub.add_parser("key", help="print this node's public key"))
    conversation = with_config(
        audit_sub.add_parser("conversation", help="the one-to-one messages between two users")
    )
    conversation.add_argument("a", help="a bare JID (or a local part of this domain)")
    conversation.add_argument("b", help="the other bare JID")
    conversation.add_argument("--since", metavar="TIME|INDEX", help="from this log index or time")
    conversation.add_argument("--until", metavar="TIME|INDEX", help="up to this index or time")
    conversation.add_argument(
        "--all", action="store_true", help="chat markers, receipts and chat states too"
    )
    room = with_config(audit_sub.add_parser("room", help="a room as it was at a moment"))
    room.add_argument("room", help="room JID (or its local part)")
    user = with_config(audit_sub.add_parser("user", help="a user as they were at a moment"))
    user.add_argument("jid", help="bare JID (or its local part)")
    for p in (room, user):
        p.add_argument(
            "--at",
            required=True,
            metavar="TIME|INDEX",
            help="a log index, or a time (ISO 8601, UTC unless it says; or ms since the epoch), "
            "as xes replay --until takes it",
        )
    for p in (conversation, room, user):
        p.add_argument("--json", action="store_true", help="one JSON document")
    audit.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xes.cli import _config

    config = _config(args)
    have_config = bool(getattr(args, "config", None))
    if args.action == "verify":
        return cmd_verify(config, args, have_config)
    if args.action == "export":
        return cmd_export(config, args)
    if args.action == "conversation":
        return cmd_conversation(config, args)
    if args.action == "room":
        return cmd_room(config, args)
    if args.action == "user":
        return cmd_user(config, args)
    return cmd_key(config)
