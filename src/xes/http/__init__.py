"""The HTTP side of a node: one :class:`~xes.http.server.HttpServer` per node, served on the
``[listen] http`` and ``https`` ports, with a route per feature (ADR 0016)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xes.http import admin_api, bosh, hostmeta, metrics, websocket
from xes.http.server import HttpServer, Route

if TYPE_CHECKING:
    from xes.node import Node


def build(node: Node) -> HttpServer:
    """The routes of ``node``'s HTTP side, as its configuration enables them."""
    config = node.config
    server = HttpServer(config.http)
    ws_path = websocket.PATH if config.http.websocket else None
    if ws_path:

        async def run_websocket(stream, request):  # type: ignore[no-untyped-def]
            await node.run_web_client(stream, request, "websocket")

        server.add(
            Route(
                ws_path,
                websocket.make_handler(
                    config.http.allowed_origins, config.tls.required, run_websocket
                ),
            )
        )
    bosh_path = bosh.PATH if config.bosh.enabled else None
    if bosh_path:

        async def run_bosh(stream, request):  # type: ignore[no-untyped-def]
            await node.run_web_client(stream, request, "bosh")

        manager = bosh.BoshManager(
            config.bosh,
            domain=config.domain,
            allowed_origins=config.http.allowed_origins,
            tls_required=config.tls.required,
            run_client=run_bosh,
            hosts=lambda: node.config.host_names,
        )
        server.tasks.append(manager.run)
        server.add(Route(bosh_path, manager.handle, methods=("GET", "HEAD", "POST", "OPTIONS")))
    if node.admin_auth.enabled:
        for route in admin_api.AdminApi(node, node.admin_auth).routes():
            server.add(route)
    if config.metrics.enabled:
        server.add(metrics.route(node, lambda: node.log_pid))
    hostmeta.add_routes(
        server,
        domain=config.domain,
        public_url=config.http.public_url,
        websocket_path=ws_path,
        bosh_path=bosh_path,
    )
    if config.upload.enabled:
        node.upload_site.add_routes(server)
    return server
