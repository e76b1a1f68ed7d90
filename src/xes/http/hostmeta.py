"""XEP-0156 discovery: ``/.well-known/host-meta`` (XRD) and ``host-meta.json`` list the web
transports this node serves, so a web client given only a JID finds its WebSocket (and BOSH)
URL. The base URL is ``[http] public_url`` when set, else the scheme and ``Host`` of the
request (a client asking through a reverse proxy gets the proxy's address). Both documents
carry ``Access-Control-Allow-Origin: *`` (XEP-0156 §3.2): a page on another origin must read
them.
"""

from __future__ import annotations

import json
import re

from xes.http.server import HttpServer, Request, Response, Route
from xes.xml.element import escape_attr

WEBSOCKET_REL = "urn:xmpp:alt-connections:websocket"
BOSH_REL = "urn:xmpp:alt-connections:xbosh"
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
CORS = [("Access-Control-Allow-Origin", "*")]


def base_url(request: Request, public_url: str | None, domain: str) -> str:
    """``https://host[:port]`` the client reached us at (or the configured public URL)."""
    if public_url:
        return public_url.rstrip("/")
    host = request.host if _HOST.match(request.host) else domain
    return f"{request.scheme}://{host}"


def links(base: str, websocket_path: str | None, bosh_path: str | None) -> list[tuple[str, str]]:
    out = []
    if websocket_path:
        ws_base = (
            "wss://" + base.split("://", 1)[1]
            if base.startswith("https")
            else ("ws://" + base.split("://", 1)[1])
        )
        out.append((WEBSOCKET_REL, ws_base + websocket_path))
    if bosh_path:
        out.append((BOSH_REL, base + bosh_path))
    return out


def add_routes(
    server: HttpServer,
    *,
    domain: str,
    public_url: str | None,
    websocket_path: str | None,
    bosh_path: str | None,
) -> None:
    async def xrd(request: Request) -> Response:
        found = links(base_url(request, public_url, domain), websocket_path, bosh_path)
        body = "".join(
            f"<Link rel='{escape_attr(rel)}' href='{escape_attr(href)}'/>" for rel, href in found
        )
        doc = (
            "<?xml version='1.0' encoding='utf-8'?>"
            f"<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>{body}</XRD>"
        )
        return Response(200, doc.encode(), "application/xrd+xml; charset=utf-8", headers=CORS)

    async def jrd(request: Request) -> Response:
        found = links(base_url(request, public_url, domain), websocket_path, bosh_path)
        doc = {"links": [{"rel": rel, "href": href} for rel, href in found]}
        return Response(200, json.dumps(doc).encode(), "application/json", headers=CORS)

    server.add(Route("/.well-known/host-meta", xrd))
    server.add(Route("/.well-known/host-meta.json", jrd))
