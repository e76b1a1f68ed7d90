"""Prometheus metrics at ``/metrics`` (``prometheus-client`` exposition), for ``[metrics] allow``.

Each node reports itself; Prometheus scrapes every node and the dashboard
(``deploy/grafana/xes.json``) compares them. What a scrape reads:

* counters the node keeps in plain integers on its hot paths (:mod:`xes.stats`): stanzas in and
  out by kind, logins by transport, login failures by SASL condition, connections accepted;
* the proposal latency histogram (propose to applied here) and failed proposals from the log
  client;
* this node's Raft view, asked from the log process at scrape time: role, term, commit index,
  applied index and lag, quorum, peers connected and (on the leader) each peer's match index;
* sizes read from LMDB at scrape time (entry counts are O(1) in LMDB): journal events, offline
  and archived messages, accounts, rooms, cluster-wide sessions; the map's size and use; the
  Raft journal's bytes on disk;
* process CPU, memory and file descriptors of the node and of its log process.

The allow-list is checked against the client address as the HTTP layer sees it (behind a
trusted reverse proxy: its ``X-Forwarded-For``), so a proxy that forwards ``/metrics`` from the
internet does not make every scraper look local.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector

from xes import __version__
from xes.http.server import Request, Response, Route, in_networks

if TYPE_CHECKING:
    from xes.node import Node

log = structlog.get_logger("xes.metrics")

PATH = "/metrics"
STATUS_TIMEOUT = 2.0
COUNTED_DBS = {
    "journal.events": ("xes_journal_events", "Events in this node's journal (the whole history)."),
    "offline.msgs": ("xes_offline_messages", "Messages in offline storage, all users."),
    "archive.msgs": ("xes_archive_messages", "Messages in the archive (MAM), all owners."),
    "accounts.creds": ("xes_accounts", "Registered accounts."),
    "muc.rooms": ("xes_rooms", "Group chat rooms."),
    "sessions.by_id": ("xes_sessions_cluster", "Sessions in the whole cluster (projection)."),
    "sm.detached": ("xes_sessions_detached", "XEP-0198 sessions waiting to be resumed."),
}
ROLES = ("leader", "follower", "candidate")


class NodeCollector:
    """Builds the metric families of one scrape from what :func:`scrape` gathered."""

    def __init__(self, node: Node, raft: dict[str, Any] | None) -> None:
        self.node = node
        self.raft = raft

    def collect(self) -> Iterator[Metric]:
        yield from self._connections()
        yield from self._traffic()
        yield from self._log()
        yield from self._store()
        info = InfoMetricFamily("xes_build", "Version and node identity.")
        info.add_metric([], {"version": __version__, "node": self.node.node_id})
        yield info

    def _connections(self) -> Iterator[Metric]:
        node = self.node
        by_transport: dict[str, int] = {"tcp": 0, "websocket": 0, "bosh": 0}
        for conn in node.connections:
            by_transport[conn.transport] = by_transport.get(conn.transport, 0) + 1
        g = GaugeMetricFamily(
            "xes_client_connections", "Open client streams by transport.", labels=["transport"]
        )
        for transport, n in sorted(by_transport.items()):
            g.add_metric([transport], n)
        yield g
        yield _counter(
            "xes_client_connections_opened",
            "Client streams accepted, by transport.",
            "transport",
            node.hub.stats.connections_opened,
            ("tcp", "websocket", "bosh"),
        )
        http = getattr(node, "http", None)
        yield GaugeMetricFamily(
            "xes_http_connections",
            "Open HTTP connections (WebSockets included).",
            value=http.connections if http is not None else 0,
        )
        yield GaugeMetricFamily(
            "xes_sessions_local", "Bound sessions on this node.", value=len(node.hub.sessions)
        )

    def _traffic(self) -> Iterator[Metric]:
        stats = self.node.hub.stats
        kinds = ("message", "presence", "iq")
        yield _counter("xes_stanzas_in", "Stanzas from clients.", "kind", stats.stanzas_in, kinds)
        yield _counter("xes_stanzas_out", "Stanzas to clients.", "kind", stats.stanzas_out, kinds)
        yield _counter("xes_logins", "Successful authentications.", "transport", stats.logins)
        yield _counter(
            "xes_login_failures", "Failed authentications.", "condition", stats.login_failures
        )
        yield _counter(
            "xes_push_notifications",
            "XEP-0357 notifications this node published, by outcome.",
            "outcome",
            stats.pushes,
            ("sent", "ok", "retry", "disabled"),
        )

    def _log(self) -> Iterator[Metric]:
        client = self.node.hub.log
        hist = client.proposal_latency
        h = HistogramMetricFamily(
            "xes_proposal_seconds", "Time from proposing events to their being applied here."
        )
        h.add_metric([], hist.cumulative(), sum_value=hist.total)
        yield h
        yield CounterMetricFamily(
            "xes_proposals_failed",
            "Proposals refused by the log or not committed in time.",
            value=client.rejected,
        )
        yield CounterMetricFamily(
            "xes_log_applied", "Log entries applied here (rate = apply rate).", value=client.applied
        )
        raft = self.raft
        yield GaugeMetricFamily(
            "xes_raft_up", "The log process answered the status request.", value=int(bool(raft))
        )
        if not raft:
            return
        role = GaugeMetricFamily("xes_raft_role", "This node's Raft role.", labels=["role"])
        for name in ROLES:
            role.add_metric([name], int(raft.get("state") == name))
        yield role
        commit = raft.get("commit_index") or 0
        applied = raft.get("applied_index") or 0
        gauges = [
            ("xes_raft_term", "Current Raft term.", raft.get("term")),
            ("xes_raft_commit_index", "Highest log index known committed.", commit),
            ("xes_raft_applied_index", "Highest log index applied to the projections.", applied),
            ("xes_raft_lag", "Committed entries not applied here yet.", max(0, commit - applied)),
            ("xes_raft_has_quorum", "This node sees a majority.", int(bool(raft["has_quorum"]))),
            ("xes_raft_log_entries", "Entries in the Raft log since compaction.", raft["log_len"]),
            ("xes_raft_pending_submits", "Proposals waiting for Raft.", raft.get("pending")),
            ("xes_raft_members", "Cluster members.", len(raft.get("members") or [])),
        ]
        for name, help_text, value in gauges:
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value=value)
        connected = GaugeMetricFamily(
            "xes_raft_peer_connected", "Raft connection to a peer is up.", labels=["peer"]
        )
        for peer, up in sorted((raft.get("connected") or {}).items()):
            connected.add_metric([peer], int(bool(up)))
        yield connected
        match = GaugeMetricFamily(
            "xes_raft_peer_match_index",
            "Leader only: each peer's replicated index.",
            labels=["peer"],
        )
        for peer, index in sorted((raft.get("match_index") or {}).items()):
            match.add_metric([peer], index)
        yield match

    def _store(self) -> Iterator[Metric]:
        hub = self.node.hub
        with hub.read() as txn:
            for db, (name, help_text) in COUNTED_DBS.items():
                try:
                    entries = txn.stat(hub.store.db(db))["entries"]
                except KeyError:
                    continue
                yield GaugeMetricFamily(name, help_text, value=entries)
        env = hub.store.env
        info, stat = env.info(), env.stat()
        yield GaugeMetricFamily("xes_lmdb_map_bytes", "LMDB map size.", value=info["map_size"])
        yield GaugeMetricFamily(
            "xes_lmdb_used_bytes",
            "LMDB pages in use (the map fills up to its size).",
            value=(info["last_pgno"] + 1) * stat["psize"],
        )
        yield GaugeMetricFamily(
            "xes_raft_journal_bytes",
            "Bytes of the Raft journal and snapshot on disk.",
            value=_dir_bytes(self.node.config.data_dir / "raft"),
        )


def _counter(
    name: str, help_text: str, label: str, values: dict[str, int], always: tuple[str, ...] = ()
) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, n in sorted({**dict.fromkeys(always, 0), **values}.items()):
        family.add_metric([key], n)
    return family


def _dir_bytes(path: Path) -> int:
    try:
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    except OSError:
        return 0


def route(node: Node, log_pid: Callable[[], int | None]) -> Route:
    networks = [ipaddress.ip_network(n, strict=False) for n in node.config.metrics.allow]
    process_registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=process_registry)
    # The log process (Raft and apply) is a process of its own: its CPU and memory too.
    ProcessCollector(
        namespace="xes_log", pid=lambda: str(log_pid() or 0), registry=process_registry
    )

    async def handle(request: Request) -> Response:
        if not in_networks(networks, request.peer):
            log.info("metrics_refused", peer=request.peer)
            return Response.text(403, "not in [metrics] allow")
        raft = None
        with anyio.move_on_after(STATUS_TIMEOUT):
            raft = await node.hub.log.status()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(NodeCollector(node, raft))
        body = generate_latest(registry) + generate_latest(process_registry)
        return Response(200, body, CONTENT_TYPE_LATEST)

    return Route(PATH, handle)
