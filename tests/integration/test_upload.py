"""XEP-0363 HTTP File Upload against real servers: slixmpp clients ask for slots (the iq built
by hand, as slixmpp's plugin needs aiohttp) and http.client PUTs and GETs over HTTPS.

One node: disco, a slot, the PUT and the same bytes back with safe download headers and CORS;
the XEP's errors (file-too-large with max-file-size, quota, too many open slots, path tricks);
refused PUTs (no token, wrong token, wrong size or type, twice, after expiry); unknown files.
Three nodes: a file put on one node is served by the two others (fetched from the holder with
the nodes' proof), and once the account is removed it is gone (404) on every node and from
the holder's disk.
"""

from __future__ import annotations

import http.client
import secrets
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from tests.integration.clients import Client
from tests.integration.cluster import running_cluster, wait_until
from tests.integration.conftest import run, running_server
from tests.integration.server import XesServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NS = "urn:xmpp:http:upload:0"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
UPLOAD = """
[upload]
enabled = true
max_file_size = 4096
quota_per_user = 10000
max_open_slots = 3
"""
PNG = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(1000)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    with running_server(tmp_path_factory.mktemp("upload") / "node", UPLOAD) as server:
        yield server


def https(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request to a node's HTTPS listener (self-signed: not verified)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


class Slot:
    def __init__(self, result: ET.Element) -> None:
        slot = result.find(f"{{{NS}}}slot")
        assert slot is not None, ET.tostring(result)
        put = slot.find(f"{{{NS}}}put")
        header = put.find(f"{{{NS}}}header")
        assert header.get("name") == "Authorization"
        self.put_url = put.get("url")
        self.get_url = slot.find(f"{{{NS}}}get").get("url")
        self.auth = header.text
        self.path = urlsplit(self.put_url).path
        self.port = urlsplit(self.put_url).port

    def put(self, body: bytes, content_type: str = "image/png", auth: str | None = None) -> int:
        headers = {"Content-Type": content_type, "Authorization": auth or self.auth}
        status, _, _ = https(self.port, "PUT", self.path, body, headers)
        return status


async def ask(
    client: Client, filename: str, size: int, content_type: str = "image/png"
) -> ET.Element:
    """The iq result, or the error iq, of a slot request (XEP-0363 §4)."""
    iq = client.make_iq_get(ito=f"upload.{client.boundjid.domain}")
    request = ET.Element(f"{{{NS}}}request")
    request.set("filename", filename)
    request.set("size", str(size))
    request.set("content-type", content_type)
    iq.append(request)
    try:
        result = await iq.send(timeout=15)
    except IqError as exc:
        return exc.iq.xml
    return result.xml


def condition(error_iq: ET.Element) -> tuple[str, str, str]:
    """(type, condition, text) of an error reply."""
    error = error_iq.find("{jabber:client}error")
    assert error is not None, ET.tostring(error_iq)
    cond = next(c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{STANZAS}}}"))
    text = error.find(f"{{{STANZAS}}}text")
    return error.get("type"), cond, text.text if text is not None else ""


def user(srv: XesServer, name: str) -> Client:
    srv.add_user(name, f"pw-{name}")
    return Client(f"{name}@{srv.domain}/t", f"pw-{name}")


def test_disco_slot_put_get(srv: XesServer) -> None:
    async def scenario() -> None:
        ann = user(srv, "ann")
        await ann.login(srv.c2s)
        items = await ann.plugin["xep_0030"].get_items(jid=srv.domain, timeout=10)
        assert f"upload.{srv.domain}" in {i[0] for i in items["disco_items"]["items"]}
        info = await ann.plugin["xep_0030"].get_info(jid=f"upload.{srv.domain}", timeout=10)
        assert ("store", "file", None, "HTTP File Upload") in info["disco_info"]["identities"]
        assert NS in info["disco_info"]["features"]
        form = info.xml.find(".//{jabber:x:data}x")
        fields = {f.get("var"): f.findtext("{jabber:x:data}value") for f in form}
        assert fields == {"FORM_TYPE": NS, "max-file-size": "4096"}

        slot = Slot(await ask(ann, "scan 1.png", len(PNG)))
        assert slot.get_url == slot.put_url
        assert slot.path.endswith("/scan%201.png")
        assert slot.put(PNG) == 201
        status, headers, body = https(slot.port, "GET", slot.path)
        assert (status, body) == (200, PNG)
        assert headers["content-type"] == "image/png"
        assert headers["content-disposition"] == "inline; filename*=UTF-8''scan%201.png"
        assert "default-src 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["access-control-allow-origin"] == "*"
        status, headers, body = https(slot.port, "HEAD", slot.path)
        assert (status, headers["content-length"], body) == (200, str(len(PNG)), b"")
        status, headers, _ = https(
            slot.port, "OPTIONS", slot.path, headers={"Origin": "https://web.example"}
        )
        assert status == 204
        assert "PUT" in headers["access-control-allow-methods"]
        assert "Authorization" in headers["access-control-allow-headers"]
        assert slot.put(PNG) == 409  # once stored, never replaced

        # Anything that could run script is a download.
        html = Slot(await ask(ann, "page.html", 20, "text/html"))
        assert html.put(b"<script>1</script>\n\n", "text/html") == 201
        _, headers, _ = https(html.port, "GET", html.path)
        assert headers["content-disposition"].startswith("attachment")
        await ann.logout()

    run(scenario())


def test_errors_of_the_xep(srv: XesServer) -> None:
    async def scenario() -> None:
        bea = user(srv, "bea")
        await bea.login(srv.c2s)
        too_big = await ask(bea, "big.png", 5000)
        assert condition(too_big)[:2] == ("modify", "not-acceptable")
        assert too_big.findtext(f".//{{{NS}}}file-too-large/{{{NS}}}max-file-size") == "4096"
        for name in ("../../etc/passwd", "a/b.png", "..", "x\u202egnp.exe", "C:\\boot.ini"):
            assert condition(await ask(bea, name, 10))[1] == "bad-request", name
        assert condition(await ask(bea, "x.png", 0))[1] == "bad-request"
        assert condition(await ask(bea, "x.png", 10, "not a type"))[1] == "bad-request"
        # Quota: 10000 bytes, counting open slots.
        first = Slot(await ask(bea, "1.bin", 4000, "application/octet-stream"))
        assert first.put(b"a" * 4000, "application/octet-stream") == 201
        Slot(await ask(bea, "2.bin", 4000, "application/octet-stream"))
        over = await ask(bea, "3.bin", 4000, "application/octet-stream")
        kind, cond, text = condition(over)
        assert (kind, cond) == ("wait", "resource-constraint")
        assert "10000" in text and "8000" in text
        await bea.logout()

        cem = user(srv, "cem")
        await cem.login(srv.c2s)
        for i in range(3):
            Slot(await ask(cem, f"{i}.png", 10))
        busy = await ask(cem, "4.png", 10)
        assert condition(busy)[:2] == ("wait", "resource-constraint")
        assert busy.find(f".//{{{NS}}}retry").get("stamp").endswith("Z")
        await cem.logout()

    run(scenario())


def test_refused_puts_and_unknown_files(srv: XesServer) -> None:
    async def scenario() -> None:
        dan = user(srv, "dan")
        await dan.login(srv.c2s)
        slot = Slot(await ask(dan, "x.png", len(PNG)))
        status, _, _ = https(slot.port, "PUT", slot.path, PNG, {"Content-Type": "image/png"})
        assert status == 401
        other = Slot(await ask(dan, "y.png", len(PNG)))
        assert slot.put(PNG, auth=other.auth) == 403  # another slot's token
        assert slot.put(PNG + b"!") == 413
        assert slot.put(PNG[:-1]) == 400
        assert slot.put(PNG, "image/gif") == 415
        status, _, _ = https(slot.port, "GET", slot.path)
        assert status == 404  # nothing stored yet
        assert slot.put(PNG) == 201
        wrong_name = slot.path.rsplit("/", 1)[0] + "/other.png"
        assert https(slot.port, "GET", wrong_name)[0] == 404
        unknown = f"/upload/{secrets.token_urlsafe(16)}/x.png"
        assert https(slot.port, "GET", unknown)[0] == 404
        assert https(slot.port, "GET", "/upload/../../etc/passwd")[0] == 404
        assert https(slot.port, "GET", "/upload/%2e%2e/x")[0] == 404
        # A forged peer proof does not make a node serve or fetch anything.
        forged = {"X-Xes-Peer": f"n9 {int(time.time() * 1000) + 1000} AAAA"}
        assert https(slot.port, "GET", slot.path, headers=forged)[0] == 403
        await dan.logout()

    run(scenario())


def test_expiry_and_retention(tmp_path: Path) -> None:
    """A PUT after its slot expired is refused; a file past retention is deleted (about 2 s)."""
    extra = UPLOAD + "slot_ttl = 1\nretention_days = 0.00002\nretention_check_interval = 0.5\n"
    with running_server(tmp_path / "node", extra) as server:

        async def scenario() -> tuple[Slot, Slot]:
            eva = user(server, "eva")
            await eva.login(server.c2s)
            late = Slot(await ask(eva, "late.png", len(PNG)))
            kept = Slot(await ask(eva, "kept.png", len(PNG)))
            assert kept.put(PNG) == 201
            await eva.logout()
            return late, kept

        late, kept = run(scenario())
        time.sleep(1.5)
        assert late.put(PNG) == 410
        on_disk = server.data_dir / "uploads" / kept.path.split("/")[2]
        wait_until(lambda: https(kept.port, "GET", kept.path)[0] == 404, 20)
        wait_until(lambda: not on_disk.exists(), 20)


def test_file_served_by_every_node_and_gone_with_the_account(tmp_path: Path) -> None:
    with running_cluster(tmp_path, extra=UPLOAD) as cluster:
        n1, n2, n3 = cluster.nodes
        n1.add_user("fay", "pw-fay")
        n1.add_user("gus", "pw-gus")
        data = secrets.token_bytes(3000)

        async def scenario() -> Slot:
            fay = Client(f"fay@{n1.domain}/pc", "pw-fay")
            await fay.login(n1.c2s)
            slot = Slot(await ask(fay, "ward 7.pdf", len(data), "application/pdf"))
            assert slot.port == n1.https  # the slot points at the node that granted it
            assert slot.put(data, "application/pdf") == 201
            await fay.logout()
            gus = Client(f"gus@{n1.domain}/phone", "pw-gus")
            await gus.login(n2.c2s)  # the recipient, on another node
            await gus.logout()
            return slot

        slot = run(scenario())
        for node in (n2, n3, n2):  # n2 twice: the second answer is its own copy
            status, headers, body = https(node.https, "GET", slot.path)
            assert (status, body) == (200, data), node.root
            assert headers["content-disposition"].startswith("attachment")
        slot_id = slot.path.split("/")[2]
        held = n1.data_dir / "uploads" / slot_id
        assert held.exists() and (n2.data_dir / "uploads" / slot_id).exists()

        n1.xes("user", "remove", f"fay@{n1.domain}")
        for node in (n1, n2, n3):
            wait_until(lambda node=node: https(node.https, "GET", slot.path)[0] == 404, 20)
        wait_until(lambda: not held.exists(), 20)
        wait_until(lambda: not (n2.data_dir / "uploads" / slot_id).exists(), 20)

        # A file whose only holder is down: 503 with Retry-After, not a partial body.
        async def second() -> Slot:
            gus = Client(f"gus@{n1.domain}/phone", "pw-gus")
            await gus.login(n2.c2s)
            slot = Slot(await ask(gus, "x-ray.png", len(PNG)))
            assert slot.port == n2.https and slot.put(PNG) == 201
            await gus.logout()
            return slot

        slot = run(second())
        n2.stop()
        status, headers, body = https(n3.https, "GET", slot.path)
        assert status == 503 and headers["retry-after"].isdigit() and PNG not in body
