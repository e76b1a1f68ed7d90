"""``/metrics`` on the real server, parsed with ``prometheus_client.parser``: the numbers follow
what clients did (connections by transport, stanzas, logins and failures, proposals, archive),
the Raft view is there, and the endpoint refuses addresses outside ``[metrics] allow`` (also
when a trusted proxy forwards a client from outside)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.clients import Client
from tests.integration.conftest import run, running_server
from tests.integration.jsdriver import JsClient
from tests.integration.server import XesServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def scrape_text(srv: XesServer, **headers: str) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{srv.http}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return str(resp.read().decode())


def scrape(srv: XesServer, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` as ``{(name, sorted labels): value}``."""
    samples = {}
    for family in text_string_to_metric_families(scrape_text(srv, **headers)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def exposed_names(text: str) -> set[str]:
    """Every family name and sample name (``x``, ``x_total``, ``x_bucket``...) exposed."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_follow_what_clients_do(tmp_path: Path) -> None:
    with running_server(tmp_path / "node", extra="[auth]\nmax_failures = 100\n") as srv:
        srv.add_user("ma", "pw-ma")
        srv.add_user("mb", "pw-mb")
        before = scrape(srv)
        assert value(before, "xes_raft_role", role="leader") == 1
        assert value(before, "xes_raft_up") == 1
        assert value(before, "xes_accounts") == 2
        assert value(before, "xes_client_connections", transport="tcp") == 0
        js = JsClient(f"wss://127.0.0.1:{srv.https}/xmpp-websocket", srv.domain, "mb", "pw-mb", "w")
        try:
            js.expect("online")

            async def scenario() -> dict[Any, float]:
                a = Client(f"ma@{srv.domain}/pc", "pw-ma")
                await a.login(srv.c2s)
                bad = Client(f"ma@{srv.domain}/bad", "wrong")
                with contextlib.suppress(AssertionError):
                    await bad.login(srv.c2s, timeout=5)
                for i in range(5):
                    a.send_message(mto=f"mb@{srv.domain}", mbody=f"m{i}", mtype="chat")
                for _ in range(5):
                    await asyncio.to_thread(js.expect, "message")
                during = scrape(srv)
                await a.logout()
                return during

            during = run(scenario())
        finally:
            js.close()
    assert value(during, "xes_client_connections", transport="tcp") == 1
    assert value(during, "xes_client_connections", transport="websocket") == 1
    assert value(during, "xes_sessions_local") == 2
    assert value(during, "xes_logins_total", transport="tcp") >= 1
    assert value(during, "xes_logins_total", transport="websocket") == 1
    assert value(during, "xes_login_failures_total", condition="not-authorized") >= 1
    assert value(during, "xes_stanzas_in_total", kind="message") >= 5
    assert value(during, "xes_stanzas_out_total", kind="message") >= 5
    assert value(during, "xes_archive_messages") >= 10  # both owners' copies
    sent = value(during, "xes_proposal_seconds_count")
    assert sent > value(before, "xes_proposal_seconds_count")
    assert value(during, "xes_proposal_seconds_bucket", le="+Inf") == sent
    assert value(during, "xes_log_applied_total") > value(before, "xes_log_applied_total")
    assert value(during, "xes_raft_lag") >= 0
    assert value(during, "xes_lmdb_used_bytes") > 0
    assert value(during, "xes_raft_journal_bytes") > 0
    assert value(during, "process_resident_memory_bytes") > 0
    assert value(during, "xes_log_process_resident_memory_bytes") > 0


def test_metrics_refused_outside_the_allow_list(tmp_path: Path) -> None:
    with running_server(tmp_path / "node", extra='[metrics]\nallow = ["10.0.0.0/8"]\n') as srv:
        with pytest.raises(urllib.error.HTTPError) as err:
            scrape(srv)
        assert err.value.code == 403


def test_metrics_refused_for_a_client_forwarded_from_outside(tmp_path: Path) -> None:
    """A reverse proxy on loopback forwarding an internet client: the client's address
    counts, not the proxy's."""
    with running_server(tmp_path / "node") as srv:
        assert scrape(srv)  # loopback itself is allowed
        with pytest.raises(urllib.error.HTTPError) as err:
            scrape(srv, **{"X-Forwarded-For": "203.0.113.9"})
        assert err.value.code == 403


def test_the_grafana_dashboard_uses_only_metrics_the_server_exposes(tmp_path: Path) -> None:
    dashboard = json.loads((Path(__file__).parents[2] / "deploy/grafana/xes.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\b(?:xes|process)_[a-z_]+", expr)}
    assert len(used) > 20
    with running_server(tmp_path / "node") as srv:
        exposed = exposed_names(scrape_text(srv))
    assert used <= exposed, used - exposed
