"""Uploaded files on this node's disk (ADR 0017): writing a PUT, reading for a GET, fetching a
file another node holds, and deleting what the ``uploads`` view no longer has.

A file is stored under its slot id (never under the name the client gave), first as a
temporary file in the same directory, fsynced, then renamed: a crash leaves either the whole
file or a temporary one the sweeper removes. A fetched file is checked against the size and
SHA-256 of its ``upload.stored`` event before it is renamed into place, so a node never serves
a body other than the one uploaded.

Deleting follows the view: the sweeper runs when the view counts a new deletion (and now and
then anyway) and removes every file whose slot the view no longer has. Reads the ``uploads``
view; emits nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import structlog

from xes.features.upload import tokens
from xes.hub import Hub
from xes.projections import uploads as uploads_view

log = structlog.get_logger("xes.upload")

CHUNK = 65536
SLOT_ID = re.compile(r"[A-Za-z0-9_-]{22}")
"""What :func:`secrets.token_urlsafe` (16 bytes) gives: anything else is not a slot."""
TMP_PREFIX = ".part-"
STALE_TMP_S = 3600
"""A temporary file this old belongs to no running upload or fetch."""
SWEEP_EVERY_S = 600.0


class Incomplete(Exception):
    """A body or a fetched file that is not the one expected (size or SHA-256)."""


class FileStore:
    """The upload directory of this node."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def path(self, slot: str) -> Path:
        if not SLOT_ID.fullmatch(slot):
            raise ValueError("not a slot id")
        return self.directory / slot

    def has(self, slot: str, size: int) -> bool:
        try:
            return self.path(slot).stat().st_size == size
        except OSError:
            return False

    def _tmp(self, slot: str) -> Path:
        return self.directory / f"{TMP_PREFIX}{slot}-{secrets.token_hex(4)}"

    async def write(self, slot: str, chunks: AsyncIterator[bytes], size: int) -> str:
        """Store a PUT body of exactly ``size`` bytes; returns its SHA-256 (hex)."""
        final, tmp = self.path(slot), self._tmp(slot)
        digest = hashlib.sha256()
        written = 0
        try:
            async with await anyio.open_file(tmp, "xb") as out:
                async for chunk in chunks:
                    written += len(chunk)
                    if written > size:
                        raise Incomplete(f"more than {size} bytes")
                    digest.update(chunk)
                    await out.write(chunk)
                await out.flush()
                await anyio.to_thread.run_sync(os.fsync, out.wrapped.fileno())
            if written != size:
                raise Incomplete(f"{written} of {size} bytes")
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return digest.hexdigest()

    async def read(self, slot: str) -> AsyncIterator[bytes]:
        async with await anyio.open_file(self.path(slot), "rb") as src:
            while chunk := await src.read(CHUNK):
                yield chunk

    def remove(self, slot: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.path(slot).unlink()

    async def fetch(self, hub: Hub, row: uploads_view.Slot, path: str) -> None:
        """Copy ``row``'s file from the node that holds it (raises when that fails)."""
        assert row.url and row.sha256
        proof = tokens.peer_proof(hub.upload_key, hub.node, "GET", path, int(time.time() * 1000))
        tmp = self._tmp(row.slot)
        cfg = hub.config.upload
        try:
            await anyio.to_thread.run_sync(
                _fetch_blocking,
                row.url + path,
                proof,
                tmp,
                row.size,
                row.sha256,
                cfg.fetch_timeout,
                cfg.internal_ca,
            )
            os.replace(tmp, self.path(row.slot))
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def sweep(self, hub: Hub) -> int:
        """Delete files whose slot the view no longer has, and stale temporary files."""
        removed = 0
        now = time.time()
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        with hub.read() as txn:
            for entry in entries:
                name = entry.name
                if name.startswith(TMP_PREFIX):
                    with contextlib.suppress(OSError):
                        if now - entry.stat().st_mtime > STALE_TMP_S:
                            os.unlink(entry.path)
                            removed += 1
                    continue
                if not SLOT_ID.fullmatch(name):
                    continue  # not ours: leave it alone
                if uploads_view.slot(hub.store, txn, name) is None:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        removed += 1
        return removed


def _fetch_blocking(
    url: str, proof: str, dest: Path, size: int, sha256: str, timeout: float, ca: str | None
) -> None:
    """GET ``url`` from another node into ``dest``, checked (in a worker thread)."""
    parts = urlsplit(url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        if ca:
            context = ssl.create_default_context(cafile=ca)
        else:
            # The HMAC proves us to the peer and the SHA-256 proves the body to us; set
            # [upload] internal_ca where the link between nodes must also be confidential.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path, headers={tokens.PEER_HEADER: proof})
        response = conn.getresponse()
        if response.status != 200:
            raise Incomplete(f"the holder answered {response.status}")
        digest = hashlib.sha256()
        got = 0
        with open(dest, "xb") as out:
            while chunk := response.read(min(CHUNK, size + 1 - got)):
                got += len(chunk)
                if got > size:
                    raise Incomplete("the holder sent more than the file")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if got != size or digest.hexdigest() != sha256:
            raise Incomplete("the holder's file does not match its upload.stored event")
    finally:
        conn.close()


async def run_sweeper(hub: Hub, files: FileStore) -> None:
    """Delete files after the view drops them: on each new deletion, and every few minutes."""
    with hub.read() as txn:
        seen = uploads_view.deletions(hub.store, txn)
    last = hub.log.applied
    await anyio.to_thread.run_sync(files.sweep, hub)
    while True:
        with anyio.move_on_after(SWEEP_EVERY_S) as scope:
            last = await hub.log.wait_applied_change(last)
        with hub.read() as txn:
            count = uploads_view.deletions(hub.store, txn)
        if count != seen or scope.cancelled_caught:
            seen = count
            removed = await anyio.to_thread.run_sync(files.sweep, hub)
            if removed:
                log.info("upload_files_deleted", count=removed, node=hub.node)
