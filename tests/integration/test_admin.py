"""The admin HTTP API, the XEP-0133 commands and the status page against the real server: every
call's effect seen by real clients (a kicked slixmpp client is disconnected, a changed password
is the one that logs in, an announcement arrives), refusals without credentials, and on a
3-node cluster the status page in headless Chromium showing the three members."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slixmpp.xmlstream import ET

from tests.integration.clients import Client, next_matching
from tests.integration.cluster import running_cluster, wait_until
from tests.integration.conftest import run, running_server
from tests.integration.mucclient import MucClient
from tests.integration.server import XesServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TOKEN = "t0ken-for-the-admin-api-0123456789"
BOSS = "boss"
CMD = "http://jabber.org/protocol/commands"
ADMIN = "http://jabber.org/protocol/admin"


def admin_extra(root: Path, domain: str = "xes.test") -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "admin.token").write_text(TOKEN + "\n")
    return (
        f'[admin]\ntoken_file = "{root / "admin.token"}"\nadmins = ["{BOSS}@{domain}"]\n'
        "[auth]\nmax_failures = 100\n"
    )


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    root = tmp_path_factory.mktemp("admin")
    with running_server(root / "node", extra=admin_extra(root)) as srv:
        srv.add_user(BOSS, "pw-boss")
        yield srv


def call(
    srv: XesServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    auth: str | None = f"Bearer {TOKEN}",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    """(status, JSON body, headers) of an HTTPS call to ``srv``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"https://127.0.0.1:{srv.https}{path}", data=data, method=method, headers=headers or {}
    )
    if auth:
        request.add_header("Authorization", auth)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=20) as resp:
            return resp.status, _decoded(resp.read(), resp.headers), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, _decoded(exc.read(), exc.headers), exc.headers


def _decoded(raw: bytes, headers: Any) -> Any:
    if headers.get("Content-Type", "").startswith("application/json"):
        return json.loads(raw)
    return raw.decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_nothing_is_reachable_without_credentials(admin_server: XesServer) -> None:
    srv = admin_server
    for method, path in (("GET", "/api/users"), ("GET", "/api/cluster"), ("GET", "/status")):
        status, body, headers = call(srv, method, path, auth=None)
        assert status == 401, (path, status)
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
    assert call(srv, "GET", "/api/users", auth="Bearer wrong-token-wrong-token")[0] == 401
    assert call(srv, "GET", "/api/users", auth=basic(f"{BOSS}@{srv.domain}", "nope"))[0] == 401
    srv.add_user("plain", "pw-plain")  # a user, not an admin: valid password, still refused
    assert call(srv, "GET", "/api/users", auth=basic(f"plain@{srv.domain}", "pw-plain"))[0] == 401
    # Plain HTTP from the trusted local proxy that says its client came over plain HTTP:
    # the credentials must not be used.
    request = urllib.request.Request(
        f"http://127.0.0.1:{srv.http}/api/users",
        headers={"Authorization": f"Bearer {TOKEN}", "X-Forwarded-Proto": "http"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 403
    ok, body, _ = call(srv, "GET", "/api/users", auth=basic(f"{BOSS}@{srv.domain}", "pw-boss"))
    assert ok == 200 and f"{BOSS}@{srv.domain}" in body["users"]


def test_admin_api_is_off_unless_configured(tmp_path: Path) -> None:
    with running_server(tmp_path / "node") as srv:
        assert call(srv, "GET", "/api/users")[0] == 404
        assert call(srv, "GET", "/status")[0] == 404


def test_users_passwords_kick_and_announce(admin_server: XesServer) -> None:
    srv = admin_server
    d = srv.domain
    status, body, _ = call(srv, "POST", "/api/users", {"jid": "carol", "password": "pw-carol-1"})
    assert (status, body) == (201, {"jid": f"carol@{d}"})
    assert call(srv, "POST", "/api/users", {"jid": "carol", "password": "pw-carol-1"})[0] == 409
    assert (
        call(srv, "POST", "/api/users", {"jid": "x@other.example", "password": "pw-x-1"})[0] == 400
    )
    assert call(srv, "POST", "/api/users", {"jid": "dave", "password": ""})[0] == 400
    assert f"carol@{d}" in call(srv, "GET", "/api/users")[1]["users"]
    status, body, _ = call(srv, "PUT", f"/api/users/carol@{d}/password", {"password": "pw-carol-2"})
    assert status == 200
    assert call(srv, "PUT", "/api/users/nobody/password", {"password": "pw-nobody"})[0] == 404
    call(srv, "POST", "/api/users", {"jid": "erin", "password": "pw-erin-1"})

    async def scenario() -> None:
        old = Client(f"carol@{d}/old", "pw-carol-1")
        with pytest.raises(AssertionError):
            await old.login(srv.c2s, timeout=5)
        carol = Client(f"carol@{d}/phone", "pw-carol-2")
        await carol.login(srv.c2s)
        erin = Client(f"erin@{d}/pc", "pw-erin-1")
        await erin.login(srv.c2s)
        sessions = call(srv, "GET", "/api/sessions")[1]["sessions"]
        assert {s["jid"] for s in sessions} >= {f"carol@{d}/phone", f"erin@{d}/pc"}
        status, body, _ = call(srv, "POST", "/api/announce", {"body": "maintenance at 22:00"})
        assert status == 200 and body["sent"] >= 2
        for c in (carol, erin):
            msg = await next_matching(c.messages, lambda m: m["type"] == "headline")
            assert str(msg["body"]) == "maintenance at 22:00" and str(msg["from"]) == d
        status, body, _ = call(srv, "POST", f"/api/users/carol@{d}/kick")
        assert (status, body) == (200, {"ended": 1})
        await asyncio.wait_for(carol.ended.wait(), 10)  # the server closed its stream
        left = {s["jid"] for s in call(srv, "GET", "/api/sessions")[1]["sessions"]}
        assert f"carol@{d}/phone" not in left and f"erin@{d}/pc" in left
        assert call(srv, "DELETE", f"/api/users/erin@{d}")[0] == 200
        await asyncio.wait_for(erin.ended.wait(), 10)  # account removed: stream closed
        assert f"erin@{d}" not in call(srv, "GET", "/api/users")[1]["users"]

    run(scenario())
    assert "session_ended" in srv.log_path.read_text()


def test_rooms_listed_and_destroyed(admin_server: XesServer) -> None:
    srv = admin_server
    srv.add_user("roomy", "pw-roomy")
    room = f"ops@conference.{srv.domain}"

    async def scenario() -> None:
        owner = MucClient(f"roomy@{srv.domain}/pc", "pw-roomy")
        await owner.login(srv.c2s)
        owner.send_presence(pto=f"{room}/roomy")
        await owner.inbox.take(lambda el: el.get("from") == f"{room}/roomy")
        rooms = call(srv, "GET", "/api/rooms")[1]["rooms"]
        assert [r["room"] for r in rooms if r["room"] == room] == [room]
        assert call(srv, "DELETE", f"/api/rooms/{room}")[0] == 200
        gone = await owner.inbox.take(
            lambda el: el.get("type") == "unavailable" and "destroy" in ET.tostring(el).decode()
        )
        assert gone is not None
        assert call(srv, "DELETE", f"/api/rooms/{room}")[0] == 404
        await owner.logout()

    run(scenario())


def test_xep0133_commands_for_admins_only(admin_server: XesServer) -> None:
    srv = admin_server
    d = srv.domain
    srv.add_user("pleb", "pw-pleb")

    async def scenario() -> None:
        boss = MucClient(f"{BOSS}@{d}/gajim", "pw-boss")
        pleb = MucClient(f"pleb@{d}/pc", "pw-pleb")
        await boss.login(srv.c2s)
        await pleb.login(srv.c2s)
        items = await boss.iq(
            "get", d, f"<query xmlns='http://jabber.org/protocol/disco#items' node='{CMD}'/>"
        )
        nodes = {i.get("node") for i in items.iter("{http://jabber.org/protocol/disco#items}item")}
        assert f"{ADMIN}#add-user" in nodes and f"{ADMIN}#announce" in nodes
        hidden = await pleb.iq(
            "get", d, f"<query xmlns='http://jabber.org/protocol/disco#items' node='{CMD}'/>"
        )
        assert not list(hidden.iter("{http://jabber.org/protocol/disco#items}item"))
        # Two steps: the form, then the submitted form.
        first = await boss.iq(
            "set", d, f"<command xmlns='{CMD}' node='{ADMIN}#add-user' action='execute'/>"
        )
        command = first.find(f"{{{CMD}}}command")
        assert command is not None and command.get("status") == "executing"
        form = command.find("{jabber:x:data}x")
        assert form is not None and form.get("type") == "form"
        sessionid = command.get("sessionid")
        submit = (
            f"<command xmlns='{CMD}' node='{ADMIN}#add-user' sessionid='{sessionid}'>"
            "<x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{ADMIN}</value></field>"
            f"<field var='accountjid'><value>frank@{d}</value></field>"
            "<field var='password'><value>pw-frank-1</value></field>"
            "<field var='password-verify'><value>pw-frank-1</value></field></x></command>"
        )
        done = (await boss.iq("set", d, submit)).find(f"{{{CMD}}}command")
        assert done is not None and done.get("status") == "completed"
        assert f"frank@{d}" in call(srv, "GET", "/api/users")[1]["users"]
        again = await boss.iq_error("set", d, submit)
        assert again[0] == "conflict"
        num = await boss.iq(
            "set",
            d,
            f"<command xmlns='{CMD}' node='{ADMIN}#get-online-users-num' action='execute'/>",
        )
        value = num.find(".//{jabber:x:data}field[@var='onlineusersnum']/{jabber:x:data}value")
        assert value is not None and int(value.text or 0) >= 2
        refused = await pleb.iq_error(
            "set", d, f"<command xmlns='{CMD}' node='{ADMIN}#add-user' action='execute'/>"
        )
        assert refused == ("forbidden", "auth")
        await boss.logout()
        await pleb.logout()

    run(scenario())


def test_a_missing_token_file_fails_fast(tmp_path: Path) -> None:
    srv = XesServer(tmp_path / "node", extra=f'[admin]\ntoken_file = "{tmp_path}/absent"\n')
    srv.write_config()
    result = srv.xes("serve", check=False)
    assert result.returncode == 2
    assert "[admin] token_file" in result.stderr and "cannot be read" in result.stderr


def test_status_page_in_chromium_shows_the_three_members(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.geteuid() == 0:
            raise AssertionError("chromium is needed: run tools/test.sh (it installs it)")
        pytest.skip("chromium missing (tools/test.sh installs it)")
    extra = "node_down_after = 30\n" + admin_extra(tmp_path / "secrets")
    with running_cluster(tmp_path / "cluster", extra=extra) as cluster:
        n1, n2, n3 = cluster.nodes
        n1.add_user(BOSS, "pw-boss")
        n1.add_user("nina", "pw-nina")

        def all_up() -> dict[str, Any] | None:
            status, report, _ = call(n1, "GET", "/api/cluster")
            if status != 200 or len(report["members"]) != 3:
                return None
            ok = all(m["health"] == "ok" and m["node"] for m in report["members"])
            return report if ok else None

        report = wait_until(all_up, 60, 0.5)
        assert sorted(m["node"] for m in report["members"]) == ["n1", "n2", "n3"]
        assert sum(m["state"] == "leader" for m in report["members"]) == 1

        page = tmp_path / "status.png"
        url = f"https://{BOSS}%40{n1.domain}:pw-boss@127.0.0.1:{n1.https}/status"
        args = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--ignore-certificate-errors",
            "--virtual-time-budget=8000",
            "--window-size=1200,800",
        ]

        def browse(*extra: str) -> str:
            done = subprocess.run([*args, *extra, url], capture_output=True, text=True, timeout=90)
            return done.stdout

        async def scenario() -> None:
            nina = Client(f"nina@{n1.domain}/tablet", "pw-nina")
            await nina.login(n2.c2s)
            dom = await asyncio.to_thread(browse, "--dump-dom")
            await asyncio.to_thread(browse, f"--screenshot={page}")
            for node in ("n1", "n2", "n3"):
                assert f'data-node="{node}"' in dom, dom[-2000:]
            assert '<span id="error"></span>' in dom, "the page read /api/status"
            assert page.stat().st_size > 10_000, "a screenshot of the rendered page"
            assert page.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            # The API of n1 ends a session that n2 holds; n2 closes its stream.
            status, body, _ = call(n1, "POST", f"/api/users/nina@{n1.domain}/kick")
            assert (status, body) == (200, {"ended": 1})
            await asyncio.wait_for(nina.ended.wait(), 15)

        run(scenario())
        # Each node's metrics agree on one leader.
        from tests.integration.test_metrics import scrape, value

        leaders = sum(value(scrape(n), "xes_raft_role", role="leader") for n in cluster.nodes)
        assert leaders == 1
        assert all(value(scrape(n), "xes_raft_members") == 3 for n in (n1, n2, n3))
