"""``xes hold add|remove|list``: legal holds on a user, a room or a conversation (ADR 0024).

A hold is placed and lifted by events (``hold.placed``, ``hold.lifted``), so the hash chain
records when it was in force and who placed it. The commands go through the running node's log,
or an in-process one when the node is stopped, like ``xes user add``.
"""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

from xes.audit.access import operator
from xes.events.catalog import HoldLifted, HoldPlaced
from xes.projections import holds as holds_view


def add_parser(sub: Any, with_config: Any) -> None:
    """``xes hold ...`` on the CLI's sub-parsers."""
    hold = with_config(sub.add_parser("hold", help="legal holds: suspend retention (ADR 0024)"))
    hold_sub = hold.add_subparsers(dest="action", required=True)
    add = with_config(hold_sub.add_parser("add", help="place a hold"))
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument("--user", metavar="JID", help="a user: their archive and conversations")
    what.add_argument("--room", metavar="JID", help="a room: its archive")
    what.add_argument(
        "--conversation", nargs=2, metavar=("JID", "JID"), help="both sides of one conversation"
    )
    add.add_argument("--reason", required=True, help="why (a case number, say); recorded")
    remove = with_config(hold_sub.add_parser("remove", help="lift a hold"))
    remove.add_argument("hold", help="the hold's id, as xes hold list shows it")
    remove.add_argument("--reason", required=True, help="why it ends; recorded")
    listing = with_config(hold_sub.add_parser("list", help="the holds in force"))
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    hold.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xes.cli import _config

    config = _config(args)
    if args.action == "list":
        return _list(config, args.json)
    if args.action == "add":
        return _add(config, args)
    return _remove(config, args)


def _target(config: Any, args: argparse.Namespace) -> str:
    from xes.cli import _bare_jid, _room_jid, _user_jid

    if args.user:
        return holds_view.user_target(_user_jid(config, args.user))
    if args.room:
        return holds_view.room_target(_room_jid(config, args.room))
    a, b = (_bare_jid(raw) for raw in args.conversation)
    if a == b:
        raise SystemExit("a conversation needs two different JIDs")
    return holds_view.conversation_target(a, b)


def _add(config: Any, args: argparse.Namespace) -> int:
    from xes.cli import gated, submit

    target = _target(config, args)
    hold = "h-" + secrets.token_hex(4)
    user, uid, host = operator()
    event = HoldPlaced(hold, target, args.reason, user, uid, host)
    result = submit(config, gated(config, [event], {f"hold:{hold}": 0}))
    if not result["ok"]:
        raise SystemExit(f"the hold was not placed: {result.get('reason')}")
    print(f"hold {hold} placed on {target} (log index {result['events'][0][0]})")
    return 0


def _remove(config: Any, args: argparse.Namespace) -> int:
    from xes.cli import _open_live, gated, submit

    live = _open_live(config)
    try:
        with live.env.begin() as txn:
            found = holds_view.get(live, txn, args.hold)
    finally:
        live.close()
    if found is None:
        raise SystemExit(f"no hold {args.hold} in force (xes hold list shows them)")
    user, uid, host = operator()
    event = HoldLifted(found.hold, found.target, args.reason, user, uid, host)
    result = submit(config, gated(config, [event]))
    if not result["ok"]:
        raise SystemExit(f"the hold was not lifted: {result.get('reason')}")
    print(f"hold {found.hold} on {found.target} lifted (log index {result['events'][0][0]})")
    return 0


def _list(config: Any, as_json: bool) -> int:
    from xes.cli import _iso, _open_live

    live = _open_live(config)
    try:
        with live.env.begin() as txn:
            found = holds_view.in_force(live, txn)
    finally:
        live.close()
    if as_json:
        print(json.dumps([_as_json(h) for h in found], indent=2))
        return 0
    if not found:
        print("no holds in force")
    for h in found:
        print(f"{h.hold}  {h.target}  since {_iso(h.placed_at)} (index {h.placed_index})")
        print(f"    by {h.by}: {h.reason}")
    return 0


def _as_json(h: holds_view.Hold) -> dict[str, Any]:
    return {
        "hold": h.hold,
        "target": h.target,
        "reason": h.reason,
        "placed_at": h.placed_at,
        "placed_index": h.placed_index,
        "by": h.by,
    }
