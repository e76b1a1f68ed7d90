"""The admin HTTP API under ``/api/`` (JSON) and the operators' status page at ``/status``.

Off unless ``[admin] token_file`` or ``admins`` is set (then nothing under ``/api/`` or
``/status`` exists: 404). Every request needs credentials (:mod:`xes.admin.auth`: 401 with a
``WWW-Authenticate`` challenge without them) over an encrypted connection (403 otherwise).
Calls, all JSON:

====================================  =======================================================
``GET  /api/users``                   ``{"users": [jid, ...]}``
``POST /api/users``                   ``{"jid", "password"}`` -> 201 ``{"jid"}``; 409 exists
``DELETE /api/users/JID``             remove the account (and its sessions)
``PUT  /api/users/JID/password``      ``{"password"}``
``POST /api/users/JID/kick``          end its sessions (bare JID: all; full JID: one)
``GET  /api/sessions``                every session in the cluster
``GET  /api/cluster``                 the ``xes cluster status`` report, with sessions per node
``GET  /api/status``                  the cluster report plus message rate and recent node
                                      events (what the status page shows)
``GET  /api/rooms``                   group chat rooms; ``DELETE /api/rooms/ROOM`` destroys one
``POST /api/announce``                ``{"body", "subject"?}``: a headline to every online user
====================================  =======================================================

Errors are ``{"error": text}`` with the status of :class:`~xes.admin.service.AdminError`.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import structlog

from xes.admin import service
from xes.admin.activity import RecentActivity
from xes.admin.auth import AdminAuth
from xes.eventlog.client import ProposalRejected
from xes.http.server import Request, Response, Route

if TYPE_CHECKING:
    from xes.node import Node

log = structlog.get_logger("xes.admin")

MAX_BODY = 65536
CHALLENGE = [("WWW-Authenticate", 'Basic realm="xes admin", charset="UTF-8"')]
NO_STORE = [("Cache-Control", "no-store")]


def _json_body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise service.AdminError(400, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise service.AdminError(400, "the body must be a JSON object")
    return data


class AdminApi:
    def __init__(self, node: Node, auth: AdminAuth) -> None:
        self.node = node
        self.auth = auth
        self.activity = RecentActivity()

    def routes(self) -> list[Route]:
        methods = ("GET", "POST", "PUT", "DELETE")
        return [
            Route("/api/", self.api, methods=methods, max_body=MAX_BODY),
            Route("/status", self.status_page),
        ]

    async def _identify(self, request: Request) -> str | Response:
        if not request.secure:
            return Response.json(403, {"error": "the admin API needs HTTPS"})
        who = await self.auth.identify(request.headers.get("authorization", ""), request.peer)
        if who is None:
            log.info("admin_refused", peer=request.peer, path=request.path)
            return Response.json(401, {"error": "credentials required"}, headers=CHALLENGE)
        return who

    async def status_page(self, request: Request) -> Response:
        who = await self._identify(request)
        if isinstance(who, Response):
            return who
        page = resources.files("xes.http").joinpath("static/status.html").read_bytes()
        return Response(
            200,
            page,
            "text/html; charset=utf-8",
            headers=[
                *NO_STORE,
                # The page runs its own script only and talks to this origin only.
                (
                    "Content-Security-Policy",
                    "default-src 'none'; script-src 'self' 'unsafe-inline'; "
                    "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
                ),
                ("X-Frame-Options", "DENY"),
            ],
        )

    async def api(self, request: Request) -> Response:
        who = await self._identify(request)
        if isinstance(who, Response):
            return who
        parts = [unquote(p) for p in request.path[len("/api/") :].split("/") if p]
        try:
            status, result = await self._dispatch(request.method, parts, request, who)
        except service.AdminError as exc:
            return Response.json(exc.status, {"error": exc.text}, headers=NO_STORE)
        except ProposalRejected as exc:
            return Response.json(409, {"error": exc.reason}, headers=NO_STORE)
        if request.method != "GET":
            log.info("admin_action", by=who, method=request.method, path=request.path)
        return Response.json(status, result, headers=NO_STORE)

    async def _dispatch(
        self, method: str, parts: list[str], request: Request, who: str
    ) -> tuple[int, Any]:
        hub = self.node.hub
        head = parts[0] if parts else ""
        if head == "users":
            if len(parts) == 1 and method == "GET":
                return 200, {"users": service.list_users(hub)}
            if len(parts) == 1 and method == "POST":
                body = _json_body(request)
                jid = await service.add_user(hub, str(body.get("jid", "")), body.get("password"))
                return 201, {"jid": jid}
            if len(parts) == 2 and method == "DELETE":
                return 200, {"removed": await service.remove_user(hub, parts[1])}
            if len(parts) == 3 and parts[2] == "password" and method == "PUT":
                body = _json_body(request)
                return 200, {
                    "jid": await service.change_password(hub, parts[1], body.get("password"))
                }
            if len(parts) == 3 and parts[2] == "kick" and method == "POST":
                return 200, {"ended": await service.end_sessions(hub, parts[1])}
        elif head == "sessions" and len(parts) == 1 and method == "GET":
            return 200, {"sessions": service.sessions(hub)}
        elif head == "cluster" and len(parts) == 1 and method == "GET":
            return 200, await service.cluster(hub)
        elif head == "status" and len(parts) == 1 and method == "GET":
            return 200, await self._status()
        elif head == "rooms":
            if len(parts) == 1 and method == "GET":
                return 200, {"rooms": service.rooms(hub)}
            if len(parts) == 2 and method == "DELETE":
                return 200, {"destroyed": await service.destroy_room(hub, parts[1])}
        elif head == "announce" and len(parts) == 1 and method == "POST":
            body = _json_body(request)
            return 200, {"sent": await service.announce(hub, body.get("body"), body.get("subject"))}
        raise service.AdminError(404, f"no such call: {method} {request.path}")

    async def _status(self) -> dict[str, Any]:
        hub = self.node.hub
        report = await service.cluster(hub)
        with hub.read() as txn:
            self.activity.update(hub.store, txn)
        report["message_rate"] = self.activity.message_rate()
        report["recent"] = list(reversed(self.activity.node_events))
        report["domain"] = hub.domain
        report["hosts"] = list(hub.config.host_names)
        return report
