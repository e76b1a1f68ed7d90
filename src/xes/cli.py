"""The ``xes`` command line: serve, user management, replay, audit and cluster status.

User commands act on the running server through its log socket when one is up (the change is a
replicated event like any other); otherwise they start the node's log in-process for the
duration of the command. Either way the same events are appended through the same Raft path.
"""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xes.config import Config, ConfigError, load_config, parse_config
from xes.events import canonical_json, encode_proposal, wrap
from xes.events.catalog import (
    AccountPasswordChanged,
    AccountRegistered,
    AccountRemoved,
    FastTokenRevoked,
)
from xes.jid import JID, InvalidJID

if TYPE_CHECKING:
    from xes.events.gate import Gate


def _config(args: argparse.Namespace) -> Config:
    if getattr(args, "config", None):
        return load_config(args.config)
    return parse_config({})


def _envelopes(
    events: list[Any], expected: dict[str, int] | None = None, gate: Gate | None = None
) -> bytes:
    """A command holding one proposal with ``events``, from the ``cli`` origin.

    The CLI may run without the server (and so without the membership), so by default it writes
    only what every release since the gate's baseline reads (ADR 0022). A command that has asked
    the running node for the cluster's ``gate`` (:func:`running_gate`) may pass it; it raises
    :class:`~xes.events.gate.Gated` then, for the command to say what it does instead."""
    from xes.events.gate import Gate, Gated

    tag = secrets.token_hex(6)
    baseline = Gate.unknown() if gate is None else gate
    try:
        envs = [
            baseline.shape(
                wrap(
                    ev,
                    id=f"cli.{tag}.{n}",
                    at=int(time.time() * 1000),
                    origin="cli",
                    expected_version=(expected or {}).get(ev.stream()),
                )
            )
            for n, ev in enumerate(events)
        ]
    except Gated as exc:
        if gate is not None:
            raise
        raise SystemExit(f"this command would write what older nodes cannot read: {exc}") from None
    return b"[" + encode_proposal(envs) + b"]"


def running_gate(config: Config, local: dict[str, Any]) -> Gate:
    """The feature gate over the running node's membership (``local``: its log status) and what
    the members announced, as the server's own gate sees it."""
    from xes.projections import cluster_features

    live = _open_live(config)
    try:
        with live.env.begin() as txn:
            known = cluster_features.announced(live, txn)
    finally:
        live.close()
    return cluster_features.gate(local.get("members", []), known)


def gated(
    config: Config, events: list[Any], expected: dict[str, int] | None = None
) -> Callable[[dict[str, Any]], bytes]:
    """A command for :func:`submit` holding ``events`` shaped by the cluster's feature gate
    (ADR 0022), for events newer than its baseline. What the members announced is read now
    (the in-process log, when the node is stopped, holds the store open afterwards); the
    membership comes from the log that takes the command. Exits, saying why, while a member
    cannot read them yet."""
    from xes.events.gate import Gated
    from xes.projections import cluster_features

    known: dict[str, Any] = {}
    if (config.data_dir / "db" / "data.mdb").exists():
        live = _open_live(config)
        try:
            with live.env.begin() as txn:
                known = cluster_features.announced(live, txn)
        finally:
            live.close()

    def build(status: dict[str, Any]) -> bytes:
        gate = cluster_features.gate(status.get("members", []), known)
        try:
            return _envelopes(events, expected, gate=gate)
        except Gated as exc:
            raise SystemExit(
                f"not every cluster member reads this yet ({exc}): upgrade them first"
            ) from None

    return build


def submit(config: Config, command: bytes | Callable[[dict[str, Any]], bytes]) -> dict[str, Any]:
    """Append one proposal, through the running node if there is one, else in-process.

    ``command`` may be a function of the log's status (its ``members``), for events newer than
    the gate's baseline: it builds the envelopes with :func:`running_gate` over that status."""
    from xes.eventlog.client import SyncClient, socket_alive

    if socket_alive(config.socket_path):
        client = SyncClient(config.socket_path)
        try:
            if callable(command):
                command = command(client.status())
            outcome, body = client.submit(command)
        finally:
            client.close()
    else:
        from xes import telemetry
        from xes.eventlog.process import AlreadyRunning, LogNode

        telemetry.configure("warning", "console")
        try:
            node = LogNode(config)
        except AlreadyRunning:
            raise SystemExit("the server is starting or stopping; try again in a moment") from None
        try:
            if not node.raft.wait_ready(30.0):
                raise SystemExit("the event log did not become ready (no quorum?)")
            if callable(command):
                command = command(node.raft.status())
            result = node.submit_wait(command)
            outcome, body = result.outcome.name, result.result or b""
        finally:
            node.close()
    if outcome != "APPLIED":
        raise SystemExit(f"the event log did not accept the change ({outcome.lower()})")
    return json.loads(body)[0]  # type: ignore[no-any-return]


def _bare_jid(raw: str) -> str:
    """``raw`` as a normalised bare JID of any domain; else exit."""
    try:
        jid = JID.parse(raw)
    except InvalidJID as exc:
        raise SystemExit(f"invalid JID {raw!r}: {exc}") from None
    if jid.local is None or jid.resource is not None:
        raise SystemExit(f"{raw!r} is not a bare JID of a user")
    return str(jid)


def _hosted_jid(raw: str, domains: tuple[str, ...], what: str) -> str:
    """``raw`` as a bare JID of one of ``domains`` (a bare local part: of the first); else
    exit, naming the domains that are served (ADR 0023)."""
    try:
        jid = JID.parse(raw if "@" in raw else f"{raw}@{domains[0]}")
    except InvalidJID as exc:
        raise SystemExit(f"invalid JID {raw!r}: {exc}") from None
    if jid.local is None or jid.resource is not None:
        raise SystemExit(f"{raw!r} is not a bare JID ({what})")
    if jid.domain not in domains:
        raise SystemExit(
            f"{raw!r}: {jid.domain} is not {what} of this server "
            f"(served: {', '.join(domains)}; add it to hosts in the configuration first)"
        )
    return str(jid)


def _user_jid(config: Config, raw: str) -> str:
    return _hosted_jid(raw, config.host_names, "a hosted domain")


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        password = args.password
    elif not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != password:
            raise SystemExit("passwords do not match")
    if not password:
        raise SystemExit("empty password")
    return password


def cmd_user(args: argparse.Namespace) -> int:
    from xes.session.sasl import derive_credentials

    config = _config(args)
    if args.action == "list":
        for jid in _read_accounts(config):
            print(jid)
        return 0
    jid = _user_jid(config, args.jid)
    if args.action == "add":
        if jid in _read_accounts(config):
            raise SystemExit(f"user {jid} already exists")
        creds = derive_credentials(_password(args), config.auth.scram_iterations)
        # Checked against the account stream's version as read: a concurrent add of the same
        # JID (another node, another command) makes exactly one of them win.
        stream = f"account:{jid}"
        result = submit(
            config, _envelopes([AccountRegistered(jid, creds)], {stream: _version(config, stream)})
        )
        if not result["ok"]:
            raise SystemExit(f"user {jid} already exists")
        print(f"user {jid} added")
    elif args.action == "passwd":
        if jid not in _read_accounts(config):
            raise SystemExit(f"no such user {jid}")
        creds = derive_credentials(_password(args), config.auth.scram_iterations)
        submit(config, _envelopes([AccountPasswordChanged(jid, creds)]))
        print(f"password of {jid} changed")
    elif args.action == "revoke-tokens":
        if jid not in _read_accounts(config):
            raise SystemExit(f"no such user {jid}")
        submit(config, _envelopes([FastTokenRevoked(jid, args.device)]))
        print(f"FAST tokens of {jid} revoked" + (f" (device {args.device})" if args.device else ""))
    elif args.action == "remove":
        if jid not in _read_accounts(config):
            raise SystemExit(f"no such user {jid}")
        result = submit(config, _envelopes([AccountRemoved(jid)]))
        if not result["ok"]:
            # A legal hold (ADR 0024) refuses the erasure: xes hold list names it.
            raise SystemExit(f"user {jid} not removed: {result.get('reason')}")
        print(f"user {jid} removed")
    return 0


def _open_live(config: Config, store: str | None = None) -> Any:
    """The node's store, read-only; or ``store``, one written by ``xes replay --out``."""
    from xes.eventlog.process import db_path
    from xes.projections.projector import all_db_names
    from xes.store.env import open_store

    path = Path(store) if store else db_path(config)
    if not (path / "data.mdb").exists():
        where = store or f"{config.data_dir} (start the server or add a user first)"
        raise SystemExit(f"no data in {where}")
    return open_store(path, all_db_names(), writer=False)


def _version(config: Config, stream: str) -> int:
    from xes.projections.projector import stream_version

    if not (config.data_dir / "db" / "data.mdb").exists():
        return 0
    store = _open_live(config)
    try:
        with store.env.begin() as txn:
            return stream_version(store, txn, stream)
    finally:
        store.close()


def _read_accounts(config: Config) -> list[str]:
    from xes.projections.accounts import list_accounts

    if not (config.data_dir / "db" / "data.mdb").exists():
        return []
    store = _open_live(config)
    try:
        with store.env.begin() as txn:
            return list_accounts(store, txn)
    finally:
        store.close()


def cmd_replay(args: argparse.Namespace) -> int:
    """Rebuild every projection from the journal; with ``--until``, as it was at that point
    (:mod:`xes.projections.replay`). A full replay compares its digest with the live one."""
    from xes.projections.replay import ReplayError, replay_into

    config = _config(args)
    live = _open_live(config)
    try:
        if args.into:
            target = Path(args.into)
            if target.exists() and any(target.iterdir()):
                raise SystemExit(f"{target} is not empty")
            done = replay_into(live, target, args.until)
        else:
            with tempfile.TemporaryDirectory(prefix="xes-replay-") as tmp:
                done = replay_into(live, Path(tmp), args.until)
    except ReplayError as exc:
        raise SystemExit(f"cannot replay: {exc}") from None
    finally:
        live.close()
    print(f"applied index: {done.index}")
    print(f"events replayed: {done.events}")
    if done.last_at is not None:
        print(f"last event at: {_iso(done.last_at)}")
    print(f"rebuilt digest: {done.digest}")
    if args.into:
        print(f"store: {args.into}")
    if done.live_digest is None:
        return 0
    print(f"live digest:    {done.live_digest}")
    if done.digest != done.live_digest:
        print("MISMATCH: the rebuilt projections differ from the live ones")
        return 1
    print("OK: digests are equal")
    return 0


def _iso(ms: int) -> str:
    import datetime

    when = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cmd_events(args: argparse.Namespace) -> int:
    from xes.store import journal

    config = _config(args)
    live = _open_live(config)
    try:
        with live.env.begin() as txn:
            for committed in journal.read_events(live, txn, args.after):
                sys.stdout.write(canonical_json(committed.to_json()).decode() + "\n")
    finally:
        live.close()
    return 0


def _room_jid(config: Config, raw: str) -> str:
    mucs = tuple(config.muc_domain_of(h) for h in config.host_names)
    return _hosted_jid(raw, mucs, "a group chat service")


def cmd_muc(args: argparse.Namespace) -> int:
    """Operators' view of the group chat service: list rooms, inspect one, destroy one."""
    from xes.events.catalog import MucRoomDestroyed
    from xes.projections import archive as archive_view
    from xes.projections import muc as muc_view

    config = _config(args)
    if args.action == "destroy":
        room_jid = _room_jid(config, args.room)
        event = MucRoomDestroyed(room_jid, args.reason or "", args.alternate or "", "operator")
        result = submit(config, _envelopes([event]))
        if not result["ok"]:
            raise SystemExit(f"no such room {room_jid} ({result.get('reason')})")
        print(f"room {room_jid} destroyed")
        return 0
    live = _open_live(config, args.store)
    try:
        with live.env.begin() as txn:
            if args.action == "list":
                rows = [muc_view.summary(r) for r in muc_view.all_rooms(live, txn)]
                if args.json:
                    print(json.dumps(rows, indent=2, sort_keys=True))
                for row in [] if args.json else rows:
                    flags = [
                        k for k in ("persistent", "public", "members_only", "locked") if row[k]
                    ]
                    name = f" ({row['name']})" if row["name"] else ""
                    print(f"{row['room']}{name}: {row['occupants']} occupants; {', '.join(flags)}")
                return 0
            room_jid = _room_jid(config, args.room)
            room = muc_view.get(live, txn, room_jid)
            if room is None:
                raise SystemExit(f"no such room {room_jid}")
            history = len(muc_view.history(live, txn, room_jid, 1 << 62, 1 << 30))
            details = muc_view.details(room, history, archive_view.count(live, txn, room_jid))
    finally:
        live.close()
    print(json.dumps(details, indent=2, sort_keys=True, ensure_ascii=False))
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from xes.eventlog.client import SyncClient, socket_alive

    config = _config(args)
    if not socket_alive(config.socket_path):
        raise SystemExit("the server is not running on this node")
    client = SyncClient(config.socket_path)
    try:
        if args.action == "status":
            report = cluster_report(config, client.status())
            if args.json:
                print(json.dumps(report, indent=2, sort_keys=True))
            else:
                print(format_cluster_report(report))
        else:
            outcome = client.membership("add" if args.action == "add" else "remove", args.addr)
            print(outcome.lower())
            return 0 if outcome == "APPLIED" else 1
    finally:
        client.close()
    return 0


def cluster_report(config: Config, local: dict[str, Any]) -> dict[str, Any]:
    """This node's Raft status plus each member's, asked over the Raft port with the secret."""
    from xes.cluster_report import cluster_report as report
    from xes.projections import cluster_features
    from xes.projections import sessions as sessions_view

    live = _open_live(config)
    try:
        with live.env.begin() as txn:
            nodes = {n.raft: (n.node, n.down) for n in sessions_view.nodes(live, txn)}
            known = cluster_features.announced(live, txn)
    finally:
        live.close()
    gate = cluster_features.gate(local.get("members", []), known)
    return report(config.cluster_secret, local, nodes, gate)


def format_cluster_report(report: dict[str, Any]) -> str:
    local = report["local"]
    lines = [
        f"node {local.get('node_id')} ({local.get('self')}): {local.get('state')}, "
        f"leader {report['leader'] or 'none'}, term {local.get('term')}, "
        f"quorum {'yes' if local.get('has_quorum') else 'NO'}",
        f"{'NODE':<8} {'RAFT':<22} {'STATE':<10} {'COMMIT':>8} {'APPLIED':>8} {'LAG':>6}",
    ]
    for m in report["members"]:
        state = m["state"] if m["reachable"] else "UNREACHABLE"
        lines.append(
            f"{m['node'] or '?':<8} {m['raft']:<22} {state:<10} "
            f"{_num(m['commit_index']):>8} {_num(m['applied_index']):>8} {_num(m['lag']):>6}"
        )
    gate = report.get("gate")
    if gate is not None:
        # ADR 0022: what the cluster does not write yet, and which members it waits for.
        lines.append("feature gate: " + ("open" if gate["open"] else "closed for"))
        by_nodes: dict[str, list[str]] = {}
        for what, nodes in sorted(gate["waiting"].items()):
            older = gate.get("written_as", {}).get(what)
            shown = f"{what} (as v{older})" if older else f"{what} (off)"
            by_nodes.setdefault(", ".join(nodes), []).append(shown)
        for nodes, whats in by_nodes.items():
            lines.append(f"  waiting for {nodes}: {', '.join(whats)}")
    return "\n".join(lines)


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def cmd_serve(args: argparse.Namespace) -> int:
    from xes import preflight
    from xes.node import serve

    config = _config(args)
    preflight.check(config)  # a misconfiguration fails here, with the key to change
    try:
        serve(config)
    except* ConfigError as group:
        # The same kind of problem met while starting (a port taken after the check, say).
        raise group.exceptions[0] from None
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
    hosts = ",".join(config.host_names)
    print(f"configuration OK: domain={config.domain} data_dir={config.data_dir} hosts={hosts}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xes", description="xes XMPP server")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            "-c",
            default=argparse.SUPPRESS,
            help="TOML configuration file (default: built-in defaults)",
        )
        return p

    with_config(sub.add_parser("serve", help="run the server")).set_defaults(func=cmd_serve)
    with_config(sub.add_parser("check-config", help="validate the configuration")).set_defaults(
        func=cmd_check
    )
    user = with_config(sub.add_parser("user", help="manage accounts"))
    user_sub = user.add_subparsers(dest="action", required=True)
    for action in ("add", "passwd"):
        p = with_config(user_sub.add_parser(action))
        p.add_argument("jid")
        p.add_argument("--password", help="password (else read from stdin or prompted)")
    with_config(user_sub.add_parser("remove")).add_argument("jid")
    revoke = with_config(
        user_sub.add_parser("revoke-tokens", help="end the account's FAST tokens (XEP-0484)")
    )
    revoke.add_argument("jid")
    revoke.add_argument("--device", default="", help="only this user-agent id (default: all)")
    with_config(user_sub.add_parser("list"))
    user.set_defaults(func=cmd_user)
    replay = with_config(sub.add_parser("replay", help="rebuild projections from the event store"))
    replay.add_argument(
        "--into",
        "--out",
        dest="into",
        help="new directory for the rebuilt store, kept (default: a temporary one)",
    )
    replay.add_argument(
        "--until",
        metavar="TIME|INDEX",
        help="only up to this point: a log index, or a time (ISO 8601, UTC unless it says; or "
        "ms since the epoch) meaning the last index before the first event stamped after it",
    )
    replay.set_defaults(func=cmd_replay)
    events = with_config(sub.add_parser("events", help="audit the event store"))
    events_sub = events.add_subparsers(dest="action", required=True)
    dump = with_config(events_sub.add_parser("dump", help="print committed events as JSON lines"))
    dump.add_argument("--after", type=int, default=0, help="only events after this log index")
    events.set_defaults(func=cmd_events)
    cluster = with_config(sub.add_parser("cluster", help="cluster status and membership"))
    cluster_sub = cluster.add_subparsers(dest="action", required=True)
    with_config(cluster_sub.add_parser("status")).add_argument(
        "--json", action="store_true", help="machine-readable output"
    )
    for action in ("add", "remove"):
        with_config(cluster_sub.add_parser(action)).add_argument(
            "addr", help="host:port of the Raft endpoint"
        )
    cluster.set_defaults(func=cmd_cluster)
    muc = with_config(sub.add_parser("muc", help="inspect and destroy group chat rooms"))
    muc_sub = muc.add_subparsers(dest="action", required=True)
    muc_list = with_config(muc_sub.add_parser("list", help="every room, one line each"))
    muc_list.add_argument("--json", action="store_true", help="machine-readable output")
    muc_show = with_config(muc_sub.add_parser("show", help="one room in full, as JSON"))
    muc_show.add_argument("room", help="room JID (or its local part)")
    for p in (muc_list, muc_show):
        p.add_argument(
            "--store", help="read a store written by xes replay --out (a past state) instead"
        )
    destroy = with_config(muc_sub.add_parser("destroy", help="destroy a room"))
    destroy.add_argument("room", help="room JID (or its local part)")
    destroy.add_argument("--reason", help="reason told to the occupants")
    destroy.add_argument("--alternate", help="JID of a room the occupants may move to")
    muc.set_defaults(func=cmd_muc)
    from xes.audit.commands import add_parser as add_audit_parser
    from xes.audit.hold_commands import add_parser as add_hold_parser

    add_audit_parser(sub, with_config)
    add_hold_parser(sub, with_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
