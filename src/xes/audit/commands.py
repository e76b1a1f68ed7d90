"""``xes audit verify | export | key``: the auditor's commands (ADR 0021, issue 17).

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
from pathlib import Path
from typing import Any

from xes.audit import access, keys
from xes.audit.export import Filters, verify_export, write_export
from xes.audit.verify import Report, Trust, verify_store
from xes.config import Config

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


def add_parser(sub: Any, with_config: Any) -> None:
    """``xes audit ...`` on the CLI's sub-parsers."""
    audit = with_config(sub.add_parser("audit", help="verify and export the audit trail"))
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
    audit.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xes.cli import _config

    config = _config(args)
    have_config = bool(getattr(args, "config", None))
    if args.action == "verify":
        return cmd_verify(config, args, have_config)
    if args.action == "export":
        return cmd_export(config, args)
    return cmd_key(config)
