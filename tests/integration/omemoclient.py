"""A slixmpp client with OMEMO (XEP-0384) from slixmpp-omemo: a real, independent implementation.

The plugin publishes the device's device list and bundle for both OMEMO versions when the
session is bound (``omemo_initialized`` fires once it is done) and learns contacts' device lists
from PEP notifications. Keys live in memory and every device is trusted blindly (BTBV).

slixmpp-omemo 2.x encrypts messages with the legacy version (``eu.siacs.conversations.axolotl``,
the body only) and has no SCE yet for OMEMO 2 (``urn:xmpp:omemo:2``); :meth:`OmemoClient.
send_twomemo` and :meth:`OmemoClient.open_twomemo` use its session manager directly for that
one, with a minimal XEP-0420 envelope as the plaintext.
"""

from __future__ import annotations

import asyncio
import sys
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

import oldmemo
import oldmemo.etree
import twomemo
import twomemo.etree
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType
from slixmpp import JID, Message
from slixmpp.plugins import register_plugin
from slixmpp_omemo import XEP_0384

from tests.integration.clients import Client

TWOMEMO = twomemo.twomemo.NAMESPACE
OLDMEMO = oldmemo.oldmemo.NAMESPACE
SCE = "urn:xmpp:sce:1"
PLUGINS = (
    "xep_0004",
    "xep_0060",
    "xep_0115",
    "xep_0128",
    "xep_0163",
    "xep_0280",
    "xep_0334",
    "xep_0380",
)


class MemoryStorage(Storage):
    """Everything OMEMO keeps, in a dict (one per client)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


class XEP_0384Impl(XEP_0384):
    """The plugin with in-memory storage and blind trust before verification."""

    def plugin_init(self) -> None:
        self._memory = MemoryStorage()
        super().plugin_init()

    @property
    def storage(self) -> Storage:
        return self._memory

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _prompt_manual_trust(
        self, manually_trusted: frozenset[DeviceInformation], identifier: str | None
    ) -> None:
        raise AssertionError(f"BTBV asked for a manual decision on {manually_trusted}")


register_plugin(XEP_0384Impl)


class OmemoClient(Client):
    """A :class:`Client` with OMEMO; ``encrypted`` queues every OMEMO message it receives."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password, plugins=PLUGINS)
        self.register_plugin("xep_0384", module=sys.modules[__name__])
        self.omemo_ready = asyncio.Event()
        self.encrypted: asyncio.Queue[Message] = asyncio.Queue()
        self.add_event_handler("omemo_initialized", lambda _: self.omemo_ready.set())
        self.add_event_handler("message", self._on_message)

    @property
    def omemo(self) -> XEP_0384:
        plugin: XEP_0384 = self.plugin["xep_0384"]
        return plugin

    def _on_message(self, msg: Message) -> None:
        if self.omemo.is_encrypted(msg):
            self.encrypted.put_nowait(msg)

    async def login(self, port: int, timeout: float = 20.0) -> None:
        await super().login(port, timeout)
        # Key generation and the four publishes (two device lists, two bundles).
        await asyncio.wait_for(self.omemo_ready.wait(), 60)

    async def device_ids(self, bare: str) -> set[int]:
        """The devices of ``bare`` this client knows (from notifications or downloads)."""
        manager = await self.omemo.get_session_manager()
        return {d.device_id for d in await manager.get_device_information(bare)}

    async def own_device_id(self) -> int:
        manager = await self.omemo.get_session_manager()
        return (await manager.get_own_device_information())[0].device_id

    async def known_device(self, bare: str, device_id: int, timeout: float = 20.0) -> None:
        """Wait until this client has learned ``device_id`` of ``bare`` (a PEP notification)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while device_id not in await self.device_ids(bare):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"{self.boundjid.bare} never learned device {device_id} of {bare}: "
                    f"knows {await self.device_ids(bare)}"
                )
            await asyncio.sleep(0.1)

    async def send_oldmemo(self, to: str, text: str) -> Message:
        """Encrypt ``text`` with the plugin (legacy OMEMO) and send it; the sent stanza."""
        msg = self.make_message(mto=JID(to), mtype="chat")
        msg["body"] = text
        encrypted, errors = await asyncio.wait_for(self.omemo.encrypt_message(msg, JID(to)), 60)
        assert not errors, errors
        assert encrypted is not None
        assert self.omemo.is_encrypted(encrypted) == {OLDMEMO}
        encrypted.send()
        return encrypted

    async def open_oldmemo(self, msg: Message) -> str:
        decrypted, _device = await asyncio.wait_for(self.omemo.decrypt_message(msg), 60)
        body: str = decrypted["body"]
        return body

    async def send_twomemo(self, to: str, text: str) -> Message:
        """Encrypt an SCE envelope holding ``text`` with OMEMO 2 and send it."""
        await self.omemo.refresh_device_lists({JID(to)})
        manager = await self.omemo.get_session_manager()
        envelope = (
            f"<envelope xmlns='{SCE}'><content><body xmlns='jabber:client'>{escape(text)}"
            f"</body></content><rpad>xes</rpad><from jid='{self.boundjid.bare}'/></envelope>"
        )
        messages, errors = await asyncio.wait_for(
            manager.encrypt(
                frozenset({JID(to).bare}),
                {TWOMEMO: envelope.encode()},
                backend_priority_order=[TWOMEMO],
            ),
            60,
        )
        assert not errors, errors
        [omemo_message] = list(messages)
        assert omemo_message.namespace == TWOMEMO
        msg = self.make_message(mto=JID(to), mtype="chat")
        msg["body"] = self.omemo.fallback_message
        msg.append(twomemo.etree.serialize_message(omemo_message))
        msg.enable("store")
        msg.send()
        return msg

    async def open_twomemo(self, msg: Message) -> str:
        """The body inside the OMEMO 2 envelope of ``msg``."""
        element = msg.xml.find(f"{{{TWOMEMO}}}encrypted")
        assert element is not None
        manager = await self.omemo.get_session_manager()
        parsed = twomemo.etree.parse_message(element, msg["from"].bare)
        plaintext, _device, _key = await asyncio.wait_for(manager.decrypt(parsed), 60)
        assert plaintext is not None
        envelope = ET.fromstring(plaintext)
        body = envelope.find(f"{{{SCE}}}content/{{jabber:client}}body")
        assert body is not None and body.text is not None
        return body.text
