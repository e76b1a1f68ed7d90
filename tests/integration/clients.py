"""slixmpp clients for integration tests (an independent XMPP implementation)."""

from __future__ import annotations

import asyncio
import ssl

import slixmpp


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records what it receives, over STARTTLS with SCRAM-SHA-256."""

    def __init__(
        self,
        jid: str,
        password: str,
        *,
        mech: str | None = "SCRAM-SHA-256",
        plugins: tuple[str, ...] = (),
    ) -> None:
        super().__init__(jid, password, sasl_mech=mech)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.enable_plaintext = False
        self.messages: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
        self.presences: asyncio.Queue[slixmpp.Presence] = asyncio.Queue()
        self.subscriptions: asyncio.Queue[slixmpp.Presence] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.failed = asyncio.Event()
        self.ended = asyncio.Event()
        for plugin in ("xep_0030", "xep_0199", "xep_0092", "xep_0203", *plugins):
            self.register_plugin(plugin)
        self.auto_authorize = None  # the test decides
        self.auto_subscribe = False
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", lambda _: self.failed.set())
        self.add_event_handler("disconnected", lambda _: self.ended.set())
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("message_error", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("presence_available", self._own_presence)
        self.add_event_handler("presence_available", lambda p: self.presences.put_nowait(p))
        self.add_event_handler("presence_unavailable", lambda p: self.presences.put_nowait(p))
        self.add_event_handler("presence_subscribe", lambda p: self.subscriptions.put_nowait(p))
        self.add_event_handler("presence_subscribed", lambda p: self.subscriptions.put_nowait(p))

    async def _on_start(self, _: object) -> None:
        await self.get_roster()
        self.send_presence()

    def _own_presence(self, presence: slixmpp.Presence) -> None:
        # Ready once the server reflects our own initial presence (RFC 6121 §4.2.2): from then
        # on the session is available and messages to the bare JID reach it.
        if presence["from"] == self.boundjid:
            self.ready.set()

    async def login(self, port: int, timeout: float = 20.0) -> None:
        self.connect("127.0.0.1", port)
        await asyncio.wait(
            [asyncio.ensure_future(self.ready.wait()), asyncio.ensure_future(self.failed.wait())],
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not self.ready.is_set():
            raise AssertionError(
                f"{self.boundjid} could not log in (failed={self.failed.is_set()})"
            )

    async def logout(self) -> None:
        self.disconnect()
        await asyncio.wait_for(self.ended.wait(), 10)


async def next_matching(queue: asyncio.Queue, predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """The first item of ``queue`` that satisfies ``predicate`` (others are dropped)."""

    async def scan():  # type: ignore[no-untyped-def]
        while True:
            item = await queue.get()
            if predicate(item):
                return item

    return await asyncio.wait_for(scan(), timeout)


def drain(queue: asyncio.Queue) -> list:  # type: ignore[type-arg]
    """Everything queued so far, without waiting."""
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
