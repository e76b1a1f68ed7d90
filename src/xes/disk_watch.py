"""Disk space watch: a node whose data directory is nearly full stops taking client writes.

A full disk must not turn into a crash or a half-written log entry. The node checks the free
space of ``data_dir`` every few seconds; below ``[limits] min_free_disk_mb`` it sets
``hub.disk_low``: client stanzas that would be recorded are refused with
``resource-constraint`` and no new session is bound, while what keeps the cluster consistent
(session ends, acknowledgements, the log's own replication) goes on in the margin left. When
space returns, writes are taken again. Both transitions are logged with the numbers.
"""

from __future__ import annotations

import os

import anyio
import structlog

from xes.hub import Hub

log = structlog.get_logger("xes.disk")

INTERVAL = 2.0


def free_mb(path: os.PathLike[str] | str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // (1024 * 1024)


async def run(hub: Hub) -> None:
    need = hub.config.limits.min_free_disk_mb
    path = hub.config.data_dir
    while True:
        try:
            free = free_mb(path)
        except OSError as exc:
            log.error("disk_check_failed", path=str(path), error=str(exc))
            free = need  # unknown: do not refuse on a failed check alone
        low = free < need
        if low != hub.disk_low:
            hub.disk_low = low
            if low:
                log.error(
                    "disk_low",
                    path=str(path),
                    free_mb=free,
                    min_free_disk_mb=need,
                    action="refusing client writes; free space in data_dir",
                )
            else:
                log.warning("disk_ok", path=str(path), free_mb=free, action="writes taken again")
        await anyio.sleep(INTERVAL)
