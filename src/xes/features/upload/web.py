"""The HTTP side of HTTP File Upload (XEP-0363 §6, ADR 0017): ``PUT``, ``GET``/``HEAD`` and the
CORS preflight under ``/upload/<slot>/<file name>``.

* **PUT** proves its slot with the token of the slot's ``Authorization`` header, carries exactly
  the slot's size and content type, starts before the slot expires, and is streamed to disk;
  then ``upload.stored`` names this node as the holder. A second PUT of a stored slot is 409.
* **GET** answers from this node's disk. A node without the file fetches it from the holder
  (a request with the peer proof of :mod:`xes.features.upload.tokens`), checks it against the
  event's SHA-256, and only then answers; if the holder cannot be reached the answer is 503
  with ``Retry-After``, never a partial or wrong body. A request carrying a peer proof is
  answered from the disk alone (no chains, no loops).
* Downloads are presented safely (XEP-0363 §7): ``Content-Disposition`` attachment for anything
  that could run script, a ``Content-Security-Policy`` that allows nothing, ``nosniff``.
* CORS: every answer allows any origin, so web clients can upload and show files; the token,
  not a cookie, is what authorises.

Emits ``upload.stored``; reads the ``uploads`` view.
"""

from __future__ import annotations

import time
from urllib.parse import unquote

import anyio
import structlog

from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events.catalog import UploadStored
from xes.features.upload import policy, tokens
from xes.features.upload.files import SLOT_ID, FileStore, Incomplete
from xes.features.upload.service import PATH, slot_path
from xes.http.server import HttpServer, Request, Response, Route
from xes.hub import Hub
from xes.projections import uploads as uploads_view

log = structlog.get_logger("xes.upload")

CORS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, HEAD, PUT, OPTIONS"),
    ("Access-Control-Allow-Headers", "Authorization, Content-Type"),
    ("Access-Control-Max-Age", "86400"),
]
DOWNLOAD_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),  # COMPAT: browsers without CSP frame-ancestors
    ("Cache-Control", "private, max-age=31536000, immutable"),
]
RETRY_AFTER_S = "30"


def internal_url(hub: Hub) -> str:
    """This node's base URL for the other nodes (``[upload] internal_url``, else a listener)."""
    cfg = hub.config
    if cfg.upload.internal_url:
        return cfg.upload.internal_url.rstrip("/")
    if cfg.listen.https:
        return f"https://{cfg.listen.https}"
    if cfg.listen.http:
        return f"http://{cfg.listen.http}"
    return (cfg.http.public_url or "").rstrip("/")


def _answer(status: int, text: str, **kw: object) -> Response:
    response = Response.text(status, text, **kw)  # type: ignore[arg-type]
    response.headers.extend(CORS)
    return response


class UploadSite:
    """The routes of one node; holds only which uploads and fetches are running here."""

    def __init__(self, hub: Hub, files: FileStore) -> None:
        self.hub = hub
        self.files = files
        self.receiving: set[str] = set()
        """Slots whose PUT is being received on this node (a second one is refused)."""
        self.fetching: dict[str, anyio.Lock] = {}
        """Slots being fetched from another node: concurrent GETs wait for one fetch."""

    def add_routes(self, server: HttpServer) -> None:
        server.add(
            Route(
                PATH,
                self.handle,
                methods=("GET", "HEAD", "PUT", "OPTIONS"),
                max_body=self.hub.config.upload.max_file_size,
                streaming=True,
            )
        )

    async def handle(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(204, content_type="text/plain", headers=list(CORS))
        found = self._slot(request.path)
        if found is None:
            return _answer(404, "no such file")
        if request.method == "PUT":
            return await self.put(request, found)
        return await self.get(request, found)

    def _slot(self, path: str) -> uploads_view.Slot | None:
        slot, _, name = path[len(PATH) :].partition("/")
        if not SLOT_ID.fullmatch(slot):
            return None
        with self.hub.read() as txn:
            row = uploads_view.slot(self.hub.store, txn, slot)
        if row is None or unquote(name) != row.filename:
            return None
        return row

    # -- PUT -----------------------------------------------------------------------------------

    async def put(self, request: Request, row: uploads_view.Slot) -> Response:
        started = int(time.time() * 1000)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _answer(401, "the slot's Authorization header is missing")
        key = self.hub.upload_key
        if not tokens.put_token_valid(
            key, token.strip(), row.slot, row.size, row.content_type, row.expires
        ):
            return _answer(403, "this token is not the slot's")
        if row.stored:
            return _answer(409, "this slot's file was uploaded already")
        if started > row.expires:
            return _answer(410, "this slot has expired: ask for a new one")
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            return _answer(411, "Content-Length is required")
        if int(declared) != row.size:
            status = 413 if int(declared) > row.size else 400
            return _answer(status, f"this slot is for exactly {row.size} bytes")
        if not policy.same_content_type(request.headers.get("content-type"), row.content_type):
            return _answer(415, f"this slot is for {row.content_type}")
        if self.hub.disk_low:
            return _answer(507, "the server's disk is almost full: try again later")
        if row.slot in self.receiving:
            return _answer(409, "this slot's file is being uploaded")
        assert request.body_chunks is not None
        self.receiving.add(row.slot)
        try:
            try:
                sha256 = await self.files.write(row.slot, request.body_chunks(), row.size)
            except Incomplete as exc:
                return _answer(400, f"the body is not the slot's file: {exc}", close=True)
            stored = UploadStored(
                row.slot, row.owner, sha256, self.hub.node, internal_url(self.hub), started
            )
            try:
                await self.hub.log.append(stored)
            except ProposalRejected as exc:
                self.files.remove(row.slot)
                if exc.reason.startswith("upload-conflict"):
                    return _answer(409, "this slot's file was uploaded already")
                if exc.reason == "upload-expired":
                    return _answer(410, "this slot has expired: ask for a new one")
                return _answer(404, "this slot is gone")
            except LogUnavailable:
                # Outcome unknown: the file stays while its slot is open; the client retries.
                return _answer(
                    503, "the cluster cannot record this now", headers=[("Retry-After", "5")]
                )
        finally:
            self.receiving.discard(row.slot)
        log.info("upload_stored", slot=row.slot, owner=row.owner, size=row.size, node=self.hub.node)
        return _answer(201, "stored")

    # -- GET / HEAD ----------------------------------------------------------------------------

    async def get(self, request: Request, row: uploads_view.Slot) -> Response:
        if not row.stored:
            return _answer(404, "no such file")
        proof = request.headers.get(tokens.PEER_HEADER)
        if proof is not None:
            now = int(time.time() * 1000)
            if tokens.peer_of(self.hub.upload_key, proof, "GET", request.path, now) is None:
                return _answer(403, "not a valid request from another node")
            if not self.files.has(row.slot, row.size):
                return _answer(404, "this node does not hold the file")
        elif not self.files.has(row.slot, row.size) and not await self._fetch(row):
            return _answer(
                503,
                "the file is on a node that cannot be reached now",
                headers=[("Retry-After", RETRY_AFTER_S)],
            )
        headers = [
            ("Content-Disposition", policy.disposition(row.content_type, row.filename)),
            ("ETag", f'"{row.sha256}"'),
            *DOWNLOAD_HEADERS,
            *CORS,
        ]

        def chunks():  # type: ignore[no-untyped-def]
            return self.files.read(row.slot)

        return Response(
            200, content_type=row.content_type, headers=headers, chunks=chunks, length=row.size
        )

    async def _fetch(self, row: uploads_view.Slot) -> bool:
        if row.node == self.hub.node:
            log.error("upload_file_missing", slot=row.slot, node=self.hub.node)
            return False
        lock = self.fetching.setdefault(row.slot, anyio.Lock())
        try:
            async with lock:
                if self.files.has(row.slot, row.size):
                    return True  # another GET fetched it meanwhile
                try:
                    await self.files.fetch(self.hub, row, slot_path(row.slot, row.filename))
                except (OSError, Incomplete, ValueError) as exc:
                    log.warning(
                        "upload_fetch_failed", slot=row.slot, holder=row.node, error=str(exc)
                    )
                    return False
                log.info("upload_fetched", slot=row.slot, holder=row.node, size=row.size)
                return True
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self.fetching.pop(row.slot, None)
