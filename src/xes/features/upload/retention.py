"""Upload retention (ADR 0017): the leader deletes unused slots and files past retention.

Like archive retention (:mod:`xes.archive_retention`), the configuration becomes events, since
apply never reads it: ``upload.deleted`` with the slot ids, at most :data:`BATCH` per event.
Open slots go once their PUT can no longer be running (expiry plus
:data:`~xes.features.upload.policy.OPEN_SLOT_GRACE_MS`), which gives their quota back; files go
``[upload] retention_days`` after they were stored. Every node then deletes its copies on disk
(:func:`xes.features.upload.files.run_sweeper`). Only the leader proposes, so nodes do not race.
"""

from __future__ import annotations

import structlog

from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events.catalog import UploadDeleted
from xes.features.upload import policy
from xes.hub import Hub, run_while_leader
from xes.projections import uploads as uploads_view

log = structlog.get_logger("xes.upload")

BATCH = 500
"""Slots per ``upload.deleted`` event (a short log entry)."""
MAX_BATCHES = 100
"""Events per check and kind, so one check stays bounded (the next check continues)."""


async def run(hub: Hub) -> None:
    await run_while_leader(hub, hub.config.upload.retention_check_interval, expire)


async def expire(hub: Hub, now_ms: int) -> int:
    """Propose deletions of unused slots and of files past retention; returns events proposed."""
    days = hub.config.upload.retention_days
    kinds = [("slot_expired", uploads_view.expired_open, now_ms - policy.OPEN_SLOT_GRACE_MS)]
    if days > 0:
        kinds.append(("retention", uploads_view.stored_before, now_ms - int(days * 86_400_000)))
    proposed = 0
    for reason, older, before in kinds:
        for _ in range(MAX_BATCHES):
            with hub.read() as txn:
                slots = older(hub.store, txn, before, BATCH)
            if not slots:
                break
            try:
                await hub.log.append(UploadDeleted(sorted(slots), reason))
            except (LogUnavailable, ProposalRejected) as exc:
                log.warning("upload_expiry_not_recorded", reason=reason, error=str(exc))
                break
            proposed += 1
    if proposed:
        log.info("uploads_expired", events=proposed)
    return proposed
