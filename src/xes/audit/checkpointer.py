"""Signed checkpoints of the hash chain, proposed through the log (ADR 0021).

Two duties, both reading views and proposing small events like the other periodic duties:

* on the **leader** alone (:func:`xes.hub.run_while_leader`, as archive retention does): when
  ``[audit] checkpoint_every`` events have been committed since the last checkpoint, or any
  event and ``checkpoint_interval`` seconds, sign the head of the chain as this node applied it
  and propose ``audit.checkpoint``. The head is read from the store, so it names an event below
  the checkpoint's own index; apply refuses a checkpoint whose head is not the chain's there.
* on **every node**: announce this node's public key once (``audit.key_announced``), vouch for
  the latest checkpoint it has not signed (``audit.vouched``: its own chain, computed by its own
  apply, has the same head), and propose the ``audit.accessed`` records that ``xes audit``
  queued while this node was stopped.

Audit events do not count towards ``checkpoint_every``, so an idle cluster stops checkpointing
instead of checkpointing its own vouches for ever.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xes.audit import access, chain, keys
from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events.catalog import AuditAccessed, AuditCheckpoint, AuditKeyAnnounced, AuditVouched
from xes.hub import Hub, run_while_leader
from xes.projections import audit as audit_view
from xes.store import journal

log = structlog.get_logger("xes.audit")

PERIOD = 1.0
"""Seconds between looks at the chain (a due checkpoint waits at most this long)."""


async def run(hub: Hub, period: float = PERIOD) -> None:
    """Load (or create) this node's key, then run the leader's and every node's duty."""
    key = keys.load_or_create(hub.config.audit_key_path)

    async def checkpoint_duty(hub: Hub, now_ms: int) -> None:
        await checkpoint_if_due(hub, key, now_ms)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_while_leader, hub, period, checkpoint_duty)
        tg.start_soon(_every_node, hub, key, period)


async def _every_node(hub: Hub, key: Ed25519PrivateKey, period: float) -> None:
    announced = False
    while True:
        await anyio.sleep(period)
        try:
            if not announced:
                announced = await announce(hub, key)
            await vouch(hub, key)
            await drain_access_queue(hub)
        except (LogUnavailable, ProposalRejected) as exc:
            log.warning("audit_not_recorded", error=str(exc))


async def announce(hub: Hub, key: Ed25519PrivateKey) -> bool:
    """Record this node's public key in the journal unless it is there already."""
    public = keys.public_hex(key)
    with hub.read() as txn:
        known = public in audit_view.node_keys(hub.store, txn, hub.node)
    if not known:
        await hub.log.append(AuditKeyAnnounced(hub.node, public))
        log.info("audit_key_announced", node=hub.node, public_key=public)
    return True


def due(
    head: chain.Head, last: audit_view.Checkpoint | None, every: int, interval_ms: int, now_ms: int
) -> bool:
    """Whether the leader should checkpoint ``head`` now (pure: tested on its own)."""
    work = head.work - (last.work if last else 0)
    if work <= 0:
        return False
    return work >= every or now_ms - (last.at if last else 0) >= interval_ms


def checkpoint_event(head: chain.Head, node: str, key: Ed25519PrivateKey) -> AuditCheckpoint:
    """``node``'s signed checkpoint of ``head``."""
    signature = keys.sign(key, keys.statement(head.seq, head.index, head.pos, head.hash))
    return AuditCheckpoint(
        head.seq,
        head.index,
        head.pos,
        head.hash.hex(),
        head.work,
        node,
        keys.public_hex(key),
        signature,
    )


def vouch_event(last: audit_view.Checkpoint, node: str, key: Ed25519PrivateKey) -> AuditVouched:
    """``node``'s signature of the same statement as checkpoint ``last``."""
    head = bytes.fromhex(last.head)
    signature = keys.sign(key, keys.statement(last.seq, last.index, last.pos, head))
    return AuditVouched(
        last.seq, last.index, last.pos, last.head, node, keys.public_hex(key), signature
    )


async def checkpoint_if_due(hub: Hub, key: Ed25519PrivateKey, now_ms: int) -> bool:
    cfg = hub.config.audit
    with hub.read() as txn:
        head = chain.head(hub.store, txn)
        last = audit_view.latest_checkpoint(hub.store, txn)
    if not due(head, last, cfg.checkpoint_every, int(cfg.checkpoint_interval * 1000), now_ms):
        return False
    event = checkpoint_event(head, hub.node, key)
    try:
        await hub.log.append(event)
    except (LogUnavailable, ProposalRejected) as exc:
        log.warning("audit_checkpoint_not_recorded", seq=head.seq, error=str(exc))
        return False
    log.info("audit_checkpoint", seq=head.seq, index=head.index, head=head.hash.hex())
    return True


async def vouch(hub: Hub, key: Ed25519PrivateKey) -> bool:
    """Sign the latest checkpoint too if this node's own chain has the same head there."""
    with hub.read() as txn:
        last = audit_view.latest_checkpoint(hub.store, txn)
        if last is None or hub.node in last.signers:
            return False
        mine = chain.get(hub.store, txn, journal.event_key(last.index, last.pos))
    if mine is None or mine.seq != last.seq or mine.hash.hex() != last.head:
        log.error("audit_checkpoint_disagrees", seq=last.seq, index=last.index)
        return False
    event = vouch_event(last, hub.node, key)
    try:
        await hub.log.append(event)
    except ProposalRejected as exc:  # a newer checkpoint, or a vouch already in flight
        log.info("audit_vouch_refused", seq=last.seq, reason=exc.reason)
        return False
    return True


async def drain_access_queue(hub: Hub) -> int:
    """Propose the access records ``xes audit`` queued while this node was down."""
    proposed = 0
    with access.locked_queue(hub.config, create=False) as fh:
        if fh is None:
            return 0
        lines = [line for line in fh.read().splitlines() if line.strip()]
        for n, line in enumerate(lines):
            try:
                record: dict[str, Any] = json.loads(line)
                event = AuditAccessed(**record)
            except (ValueError, TypeError) as exc:
                # Not written by `xes audit` (or cut short): kept in the log, not lost silently.
                log.error("audit_access_queue_line_unreadable", line=line[:200], error=str(exc))
                event = AuditAccessed("unreadable", "?", -1, "?", {"line": line[:4096]})
            try:
                await hub.log.append(event)
            except (LogUnavailable, ProposalRejected):
                # Keep what is left for the next round (the ones proposed are not repeated).
                fh.seek(0)
                fh.truncate()
                fh.write("".join(rest + "\n" for rest in lines[n:]))
                raise
            proposed += 1
        fh.seek(0)
        fh.truncate()
    return proposed
