"""Every member's view of the cluster, as ``xes cluster status``, the admin API and the status
page show it: this node's Raft status, each peer's asked over the Raft port with the secret,
the node ids the log knows for each Raft address and whether the cluster declared that node
down, and how far each member is behind the highest commit index seen."""

from __future__ import annotations

from typing import Any

from xes.eventlog.raft import query_status
from xes.events.gate import Gate


def cluster_report(
    secret: str | None,
    local: dict[str, Any],
    nodes: dict[str, tuple[str, bool]],
    gate: Gate | None = None,
) -> dict[str, Any]:
    """``nodes``: Raft address -> (node id, declared down), from the sessions projection;
    ``gate``: the feature gate over these members (ADR 0022), shown as which event types wait
    for which node. Blocking (peers are asked over TCP with a short timeout): call it from a
    thread."""
    members = []
    for addr in local.get("members", []):
        if addr == local.get("self"):
            status: dict[str, Any] | None = local
        else:
            status = query_status(addr, secret)
        node, down = nodes.get(addr, (None, False))
        members.append(
            {
                "raft": addr,
                "node": node,
                "down": down,
                "reachable": status is not None,
                "state": status.get("state") if status else None,
                "term": status.get("term") if status else None,
                "commit_index": status.get("commit_index") if status else None,
                "applied_index": status.get("last_applied") if status else None,
                "match_index": local.get("match_index", {}).get(addr),
            }
        )
    top = max((m["commit_index"] or 0 for m in members), default=0)
    for member in members:
        applied = member["applied_index"]
        member["lag"] = None if applied is None else top - applied
        member["health"] = (
            "down"
            if member["down"] or not member["reachable"]
            else "lagging"
            if (member["lag"] or 0) > 1000
            else "ok"
        )
    report: dict[str, Any] = {"local": local, "leader": local.get("leader"), "members": members}
    if gate is not None:
        pending = gate.pending()
        written_as = {}
        for what in pending:
            name, v = what.rsplit(" v", 1)
            written_as[what] = gate.emit_version(name, int(v))
        # written_as: the older version that goes out meanwhile, or None (the feature waits).
        report["gate"] = {"open": not pending, "waiting": pending, "written_as": written_as}
    return report
