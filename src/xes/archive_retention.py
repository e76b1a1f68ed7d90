"""Archive retention (ADR 0009): the leader deletes archived messages older than configured.

Retention is configuration, which apply must never read (ADR 0003), so the leader turns it into
an event: ``archive.expired(domain, before, limit)``, applied the same way on every node. Each
event deletes a bounded number of messages, so a large backlog (retention just lowered) is worked
off in short log entries; the leader repeats while older messages remain. Any node may run this;
only the leader proposes, so two nodes do not race.
"""

from __future__ import annotations

import structlog

from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events.catalog import ArchiveExpired
from xes.hub import Hub, run_while_leader
from xes.projections import archive as archive_view

log = structlog.get_logger("xes.archive_retention")

BATCH = 2000
"""Messages deleted per ``archive.expired`` event."""
MAX_BATCHES = 500
"""Events per check and domain, so one check stays bounded (the next check continues)."""


def retention_days(hub: Hub) -> dict[str, float]:
    """Retention per domain, in days (domains with none configured keep messages for ever).

    A hosted domain's archives hold its users' one-to-one messages (category ``chat``); its
    group chat service's domain holds the room archives (``groupchat``). ``[retention]`` ages
    (per domain first) win over ``[archive]``'s, which keep their meaning (ADR 0024)."""
    config = hub.config
    archive, ret = config.archive, config.retention
    days = {
        **dict.fromkeys(config.host_names, archive.retention_days),
        **archive.retention_by_domain,
    }
    for host in config.host_names:
        per_domain = ret.domain.get(host, {})
        chat = per_domain.get("chat_days", ret.chat_days)
        if chat is not None:
            days[host] = chat
        group = per_domain.get("groupchat_days", ret.groupchat_days)
        if group is not None:
            days[config.muc_domain_of(host)] = group
    return {domain: d for domain, d in sorted(days.items()) if d > 0}


async def run(hub: Hub) -> None:
    period = hub.config.archive.retention_check_interval
    await run_while_leader(hub, period, expire, lambda: bool(retention_days(hub)))


async def expire(hub: Hub, now_ms: int) -> int:
    """Propose deletions until no archived message is past retention; returns events proposed."""
    proposed = 0
    for domain, days in retention_days(hub).items():
        before = now_ms - int(days * 86400 * 1000)
        for _ in range(MAX_BATCHES):
            with hub.read() as txn:
                if not archive_view.expiry_pending(hub.store, txn, domain, before):
                    break
            try:
                await hub.log.append(ArchiveExpired(domain, before, BATCH))
            except (LogUnavailable, ProposalRejected) as exc:
                log.warning("archive_expiry_not_recorded", domain=domain, error=str(exc))
                break
            proposed += 1
    if proposed:
        log.info("archive_expired", events=proposed)
    return proposed
