"""A client not written in Python reading PEP: Debian's xmppc (C, on libstrophe).

``xmppc -m bookmark list`` fetches the PEP node ``storage:bookmarks`` (XEP-0048 §3 over
XEP-0223; the node XEP-0411 keeps in step with private storage) and prints each
``<conference/>``; ``xmppc -m omemo list`` fetches the legacy OMEMO device list
(``eu.siacs.conversations.axolotl.devicelist``), then each device's bundle node, and prints
``xmpp:<jid>?omemo-sid-<device>=<fingerprint>`` from the bundle's identity key. slixmpp
publishes what it reads.

xmppc has no host or port option: libstrophe looks up ``_xmpp-client._tcp.<domain>`` and then
connects to ``<domain>:5222``. So the server here is for the domain ``localhost`` (which resolves
without DNS or /etc/hosts changes), and a forwarder in the test listens on port 5222 of each
address ``localhost`` resolves to and relays to the server's random port. It needs TLS and
verifies the certificate with OpenSSL's default paths (no flag to skip verification):
``SSL_CERT_FILE`` points at the server's self-signed certificate. xmppc 0.1.0 insists on a
readable ``~/.config/xmppc.conf``, so ``HOME`` is a temporary directory holding the account.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import os
import re
import shutil
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from slixmpp.xmlstream import ET

from tests.integration.clients import Client
from tests.integration.conftest import run
from tests.integration.server import XesServer

XMPPC = shutil.which("xmppc")
CAN_INSTALL = os.geteuid() == 0 and shutil.which("apt-get") is not None

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        XMPPC is None and not CAN_INSTALL,
        reason="xmppc is not installed (Debian package xmppc; tools/test.sh installs it when "
        "run as root)",
    ),
]

DOMAIN = "localhost"
XMPP_PORT = 5222  # libstrophe's default when there is no SRV record; xmppc cannot change it
XMPPC_TIMEOUT = 30.0
PLUGINS = ("xep_0004", "xep_0048", "xep_0049", "xep_0060", "xep_0402")
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
LEGACY = "storage:bookmarks"
BOOKMARKS = "urn:xmpp:bookmarks:1"
AXOLOTL = "eu.siacs.conversations.axolotl"
DEVICES = f"{AXOLOTL}.devicelist"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def xmppc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    if XMPPC is None:
        pytest.fail("xmppc is missing though apt-get is usable as root: tools/test.sh installs it")
    srv = XesServer(tmp_path_factory.mktemp("xmppc") / "node", domain=DOMAIN)
    srv.write_config()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def client(srv: XesServer, name: str) -> Client:
    return Client(f"{name}@{srv.domain}/py", f"pw-{name}", plugins=PLUGINS)


def options(c: Client, **values: str) -> object:
    form = c.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=PUBLISH_OPTIONS)
    for name, value in values.items():
        form.add_field(var=f"pubsub#{name}", value=value)
    return form


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def port_5222(srv: XesServer) -> AsyncIterator[None]:
    """Relay port 5222 of every address of ``localhost`` to the server's c2s port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", srv.c2s)
        await asyncio.gather(_relay(reader, up_writer), _relay(up_reader, writer))

    hosts = sorted(
        {
            str(info[4][0])
            for info in socket.getaddrinfo(
                DOMAIN, XMPP_PORT, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
            )
        }
    )
    listeners = []
    try:
        for host in hosts:
            try:
                listeners.append(await asyncio.start_server(handle, host, XMPP_PORT))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:  # e.g. ::1 listed but IPv6 disabled
                    continue
                raise AssertionError(
                    f"xmppc can only reach {DOMAIN}:{XMPP_PORT} and {host}:{XMPP_PORT} is not "
                    f"free ({exc}); stop whatever listens there"
                ) from exc
        assert listeners, f"{DOMAIN} resolves to no usable address: {hosts}"
        yield
    finally:
        for listener in listeners:
            listener.close()
            await listener.wait_closed()


async def run_xmppc(srv: XesServer, user: str, *args: str) -> str:
    """Run ``xmppc -vvv -m <args>`` as ``user`` to completion; its transcript (libstrophe's
    debug log and xmppc's output)."""
    assert XMPPC is not None
    home = srv.root.parent / f"home-{user}"
    (home / ".config").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "xmppc.conf").write_text(
        f"[default]\njid={user}@{srv.domain}\npwd=pw-{user}\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LC_ALL": "C",
        "SSL_CERT_FILE": str(srv.data_dir / "tls" / f"{srv.domain}.crt"),
        "RES_OPTIONS": "timeout:1 attempts:1",  # the SRV query finds nothing; do not wait long
    }
    async with port_5222(srv):
        proc = await asyncio.create_subprocess_exec(
            XMPPC,
            "-vvv",
            "-m",
            *args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), XMPPC_TIMEOUT)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
            raise AssertionError(
                f"xmppc {' '.join(args)} did not finish:\n{out.decode(errors='replace')}"
            ) from None
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"xmppc {' '.join(args)} exited with {proc.returncode}:\n{text}"
    # It negotiated STARTTLS and verified our certificate (it cannot be told not to).
    assert "Certificate verification passed" in text, text
    assert "Secure connection!" in text, text
    return text


def listed_bookmarks(transcript: str) -> dict[str, tuple[str, str]]:
    """``{room: (autojoin, name)}`` from ``xmppc -m bookmark list`` (``jid - autojoin - name``)."""
    out = {}
    for line in transcript.splitlines():
        parts = [p.strip() for p in ANSI.sub("", line).split(" - ")]
        if len(parts) == 3 and "@" in parts[0] and " " not in parts[0]:
            out[parts[0]] = (parts[1], parts[2])
    return out


def server_errors(srv: XesServer, user: str) -> list[str]:
    return [
        line
        for line in srv.log_text().splitlines()
        if '"level": "error"' in line and f"{user}@" in line
    ]


def test_xmppc_lists_bookmarks_published_in_pep(xmppc_server: XesServer) -> None:
    """XEP-0048 bookmarks in the PEP node ``storage:bookmarks`` (XEP-0223 publish-options)."""
    srv = xmppc_server
    srv.add_user("pepbook", "pw-pepbook")
    rooms = {
        f"team@conference.{srv.domain}": ("true", "Team"),
        f"night@conference.{srv.domain}": ("false", "Night Owls"),
    }

    async def scenario() -> str:
        c = client(srv, "pepbook")
        await c.login(srv.c2s)
        storage = ET.Element(f"{{{LEGACY}}}storage")
        for room, (autojoin, name) in rooms.items():
            conf = ET.SubElement(
                storage, f"{{{LEGACY}}}conference", jid=room, name=name, autojoin=autojoin
            )
            ET.SubElement(conf, f"{{{LEGACY}}}nick").text = "pepbook"
        await c.plugin["xep_0060"].publish(
            c.boundjid.bare,
            LEGACY,
            id="current",
            payload=storage,
            options=options(c, persist_items="true", access_model="whitelist"),
            timeout=10,
        )
        transcript = await run_xmppc(srv, "pepbook", "bookmark", "list")
        await c.logout()
        return transcript

    transcript = run(scenario())
    assert '<items node="storage:bookmarks"/>' in transcript, transcript
    assert listed_bookmarks(transcript) == rooms, transcript
    assert not server_errors(srv, "pepbook")


def test_xmppc_lists_private_storage_and_pep_native_bookmarks(xmppc_server: XesServer) -> None:
    """XEP-0411: bookmarks a legacy client keeps in private storage (XEP-0049), and the XEP-0402
    ones the server merges into it, are what a XEP-0048 PEP client reads."""
    srv = xmppc_server
    srv.add_user("privbook", "pw-privbook")
    legacy_room = f"old@conference.{srv.domain}"
    native_room = f"new@conference.{srv.domain}"

    async def scenario() -> str:
        c = client(srv, "privbook")
        await c.login(srv.c2s)
        bookmarks = c.plugin["xep_0048"].stanza.Bookmarks()
        bookmarks.add_conference(legacy_room, "privbook", name="Old Room", autojoin=True)
        await c.plugin["xep_0048"].set_bookmarks(bookmarks, method="xep_0049", timeout=10)
        payload = ET.Element(f"{{{BOOKMARKS}}}conference", name="New Room")
        await c.plugin["xep_0060"].publish(
            c.boundjid.bare,
            BOOKMARKS,
            id=native_room,
            payload=payload,
            options=options(
                c,
                persist_items="true",
                max_items="max",
                access_model="whitelist",
                send_last_published_item="never",
            ),
            timeout=10,
        )
        transcript = await run_xmppc(srv, "privbook", "bookmark", "list")
        await c.logout()
        return transcript

    transcript = run(scenario())
    listed = listed_bookmarks(transcript)
    assert set(listed) == {legacy_room, native_room}, transcript
    assert listed[legacy_room] == ("true", "Old Room"), transcript
    assert listed[native_room][1] == "New Room", transcript


def identity_key() -> tuple[str, str]:
    """(base64 of a Signal identity key: 0x05 and a Curve25519 public key, its hex fingerprint)."""
    raw = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(b"\x05" + raw).decode(), raw.hex()


def bundle(identity: str) -> ET.Element:
    """A legacy OMEMO bundle (XEP-0384 0.3); only the identity key matters to xmppc."""
    el = ET.Element(f"{{{AXOLOTL}}}bundle")
    spk = ET.SubElement(el, f"{{{AXOLOTL}}}signedPreKeyPublic", signedPreKeyId="1")
    spk.text = base64.b64encode(b"\x05" + os.urandom(32)).decode()
    ET.SubElement(el, f"{{{AXOLOTL}}}signedPreKeySignature").text = base64.b64encode(
        os.urandom(64)
    ).decode()
    ET.SubElement(el, f"{{{AXOLOTL}}}identityKey").text = identity
    prekeys = ET.SubElement(el, f"{{{AXOLOTL}}}prekeys")
    for pid in (1, 2):
        pk = ET.SubElement(prekeys, f"{{{AXOLOTL}}}preKeyPublic", preKeyId=str(pid))
        pk.text = base64.b64encode(b"\x05" + os.urandom(32)).decode()
    return el


def test_xmppc_lists_omemo_devices_and_fingerprints(xmppc_server: XesServer) -> None:
    """The legacy OMEMO device list and bundles, published open (XEP-0384 0.3 §4.2/§4.3)."""
    srv = xmppc_server
    srv.add_user("omemouser", "pw-omemouser")
    devices = {device: identity_key() for device in ("1111", "2147483647")}

    async def scenario() -> str:
        c = client(srv, "omemouser")
        await c.login(srv.c2s)
        pubsub = c.plugin["xep_0060"]
        for device, (identity, _) in devices.items():
            await pubsub.publish(
                c.boundjid.bare,
                f"{AXOLOTL}.bundles:{device}",
                id="current",
                payload=bundle(identity),
                options=options(c, access_model="open"),
                timeout=10,
            )
        device_list = ET.Element(f"{{{AXOLOTL}}}list")
        for device in devices:
            ET.SubElement(device_list, f"{{{AXOLOTL}}}device", id=device)
        await pubsub.publish(
            c.boundjid.bare,
            DEVICES,
            id="current",
            payload=device_list,
            options=options(c, access_model="open"),
            timeout=10,
        )
        transcript = await run_xmppc(srv, "omemouser", "omemo", "list")
        await c.logout()
        return transcript

    transcript = run(scenario())
    assert f'<items node="{DEVICES}"/>' in transcript, transcript
    printed = set(re.findall(r"^xmpp:\S+$", transcript, re.MULTILINE))
    assert printed == {
        f"xmpp:omemouser@{srv.domain}?omemo-sid-{device}={fingerprint}"
        for device, (_, fingerprint) in devices.items()
    }, transcript
    for device in devices:
        assert re.search(rf"^\t {device}$", transcript, re.MULTILINE), transcript
    assert not server_errors(srv, "omemouser")
