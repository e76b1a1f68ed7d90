"""What a server administrator can do, once: the admin HTTP API (``/api/``) and the XEP-0133
ad-hoc commands are two front ends over these functions.

Like every stream handler they read projections and propose events; nothing here keeps state.
Every change is an ordinary event (``account.registered`` with the stream's expected version,
so two admins adding the same user on two nodes make exactly one win; ``session.ended`` with
reason ``kicked``; ``muc.room_destroyed``; ``message.routed`` headlines for an announcement),
so it is replicated, audited and replayed like a client's own action.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from xes.cluster_report import cluster_report
from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events.catalog import (
    AccountPasswordChanged,
    AccountRegistered,
    AccountRemoved,
    MessageRouted,
    MucRoomDestroyed,
)
from xes.features import session_end
from xes.features.registration import MAX_PASSWORD
from xes.hub import Hub
from xes.jid import InvalidJID, bare_in_any, domain_part
from xes.projections import accounts as accounts_view
from xes.projections import muc as muc_view
from xes.projections import sessions as sessions_view
from xes.projections.projector import stream_version
from xes.session.sasl import derive_credentials
from xes.xml import E, serialize

ANNOUNCE_BATCH = 200
"""Headline events per proposal when announcing to every online session."""


class AdminError(Exception):
    """A refused admin action; ``status`` is the HTTP status, the XEP-0050 front end maps it."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def user_jid(hub: Hub, raw: str) -> str:
    """``raw`` (a bare JID of a hosted domain, or a local part of the primary one),
    normalised."""
    try:
        return bare_in_any(raw, hub.config.host_names)
    except InvalidJID as exc:
        raise AdminError(400, f"{raw!r} is not a user of a hosted domain: {exc}") from None


def room_jid(hub: Hub, raw: str) -> str:
    mucs = [hub.config.muc_domain_of(h) for h in hub.config.host_names]
    try:
        return bare_in_any(raw, mucs)
    except InvalidJID as exc:
        raise AdminError(400, f"{raw!r} is not a room of a group chat service: {exc}") from None


def _check_password(hub: Hub, password: object) -> str:
    low = hub.config.registration.min_password_length
    if not isinstance(password, str) or not low <= len(password) <= MAX_PASSWORD:
        raise AdminError(400, f"a password has {low} to {MAX_PASSWORD} characters")
    return password


async def _append(hub: Hub, *events: Any, expected: dict[str, int] | None = None) -> None:
    if hub.disk_low:
        raise AdminError(507, "the node's disk is nearly full: writes are refused")
    try:
        await hub.log.append(*events, expected=expected)
    except LogUnavailable as exc:
        raise AdminError(503, f"the cluster did not commit it: {exc}") from None


# -- users ----------------------------------------------------------------------------------


def list_users(hub: Hub) -> list[str]:
    with hub.read() as txn:
        return accounts_view.list_accounts(hub.store, txn)


def _require_user(hub: Hub, jid: str) -> None:
    with hub.read() as txn:
        if not accounts_view.exists(hub.store, txn, jid):
            raise AdminError(404, f"no such user {jid}")


async def add_user(hub: Hub, raw: str, password: object) -> str:
    jid = user_jid(hub, raw)
    password = _check_password(hub, password)
    stream = f"account:{jid}"
    with hub.read() as txn:
        if accounts_view.exists(hub.store, txn, jid):
            raise AdminError(409, f"user {jid} already exists")
        version = stream_version(hub.store, txn, stream)
    creds = await anyio.to_thread.run_sync(
        derive_credentials, password, hub.config.auth.scram_iterations
    )
    try:
        await _append(hub, AccountRegistered(jid, creds), expected={stream: version})
    except ProposalRejected:
        raise AdminError(409, f"user {jid} already exists") from None
    return jid


async def remove_user(hub: Hub, raw: str) -> str:
    jid = user_jid(hub, raw)
    _require_user(hub, jid)
    try:
        await _append(hub, AccountRemoved(jid))
    except ProposalRejected as exc:
        raise AdminError(409, f"user {jid} not removed: {exc.reason}") from None  # a legal hold
    return jid


async def change_password(hub: Hub, raw: str, password: object) -> str:
    jid = user_jid(hub, raw)
    password = _check_password(hub, password)
    _require_user(hub, jid)
    creds = await anyio.to_thread.run_sync(
        derive_credentials, password, hub.config.auth.scram_iterations
    )
    await _append(hub, AccountPasswordChanged(jid, creds))
    return jid


async def end_sessions(hub: Hub, raw: str) -> int:
    """End the sessions of a bare JID (all of them) or a full JID, wherever they are; the
    node holding each closes its stream (delivery sees ``session.ended``, reason kicked)."""
    bare, _, resource = raw.partition("/")
    jid = user_jid(hub, bare)
    for _ in range(10):  # a refusal means the sessions changed meanwhile: read them again
        with hub.read() as txn:
            views = sessions_view.of_user(hub.store, txn, jid)
            if resource:
                views = [v for v in views if v.jid == f"{jid}/{resource}"]
            if not views:
                return 0
            events = session_end.end_events(hub, txn, views, "kicked")
        try:
            await _append(hub, *events)
            return len(views)
        except ProposalRejected:
            await anyio.sleep(0.05)
    raise AdminError(503, "the sessions kept changing; try again")


# -- sessions, cluster, rooms ---------------------------------------------------------------


def sessions(hub: Hub) -> list[dict[str, Any]]:
    with hub.read() as txn:
        views = sessions_view.all_sessions(hub.store, txn)
    return [
        {
            "session": v.session,
            "jid": v.jid,
            "node": v.node,
            "available": v.available,
            "priority": v.priority,
        }
        for v in sorted(views, key=lambda v: v.jid)
    ]


async def cluster(hub: Hub) -> dict[str, Any]:
    with anyio.fail_after(5.0):
        local = await hub.log.status()
    with hub.read() as txn:
        nodes = {n.raft: (n.node, n.down) for n in sessions_view.nodes(hub.store, txn)}
        counts = {n: 0 for _, (n, _) in nodes.items()}
        for view in sessions_view.all_sessions(hub.store, txn):
            counts[view.node] = counts.get(view.node, 0) + 1
    report = await anyio.to_thread.run_sync(
        cluster_report, hub.config.cluster_secret, local, nodes, hub.gate
    )
    for member in report["members"]:
        member["sessions"] = counts.get(member["node"], 0)
    report["node"] = hub.node
    report["time"] = int(time.time() * 1000)
    return report


def rooms(hub: Hub) -> list[dict[str, Any]]:
    with hub.read() as txn:
        all_rooms = muc_view.all_rooms(hub.store, txn)
    return [muc_view.summary(room) for room in sorted(all_rooms, key=lambda r: r.jid)]


async def destroy_room(hub: Hub, raw: str, reason: str = "") -> str:
    """Destroy a room as the operator (like ``xes muc destroy``): the room projection accepts
    ``by = "operator"`` whatever the room's owners are."""
    jid = room_jid(hub, raw)
    with hub.read() as txn:
        if muc_view.get(hub.store, txn, jid) is None:
            raise AdminError(404, f"no such room {jid}")
    try:
        await _append(hub, MucRoomDestroyed(jid, reason, "", "operator"))
    except ProposalRejected as exc:
        raise AdminError(409, f"the room was not destroyed: {exc.reason}") from None
    return jid


# -- announcements (XEP-0133 §4.23) ---------------------------------------------------------


async def announce(hub: Hub, body: object, subject: object = None) -> int:
    """A headline from the server to every available session in the cluster; returns how
    many sessions it went to."""
    if not isinstance(body, str) or not body.strip():
        raise AdminError(400, "an announcement needs a body")
    if subject is not None and not isinstance(subject, str):
        raise AdminError(400, "subject must be text")
    with hub.read() as txn:
        targets = [v.jid for v in sessions_view.all_sessions(hub.store, txn) if v.available]
    events = []
    for target in targets:
        children = []
        if subject:
            children.append(E("{jabber:client}subject", None, subject))
        children.append(E("{jabber:client}body", None, body))
        server = domain_part(target)  # each user hears it from its own host (ADR 0023)
        stanza = E(
            "{jabber:client}message",
            {"from": server, "to": target, "type": "headline"},
            *children,
        )
        events.append(
            MessageRouted(
                sender=server,
                to=target,
                type="headline",
                xml=serialize(stanza).decode(),
                targets=[target],
            )
        )
    for start in range(0, len(events), ANNOUNCE_BATCH):
        await _append(hub, *events[start : start + ANNOUNCE_BATCH])
    return len(targets)
