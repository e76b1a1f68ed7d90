"""A slixmpp ``ComponentXMPP`` for integration tests: an independent XEP-0114 implementation."""

from __future__ import annotations

import asyncio

import slixmpp


class Component(slixmpp.ComponentXMPP):
    """Echoes messages (``echo: <body>``), answers ping and disco (slixmpp's plugins), and
    records what it receives and the stream error it was closed with."""

    def __init__(self, jid: str, secret: str) -> None:
        super().__init__(jid, secret)
        self.messages: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.ended = asyncio.Event()
        self.error: str | None = None
        self.echo = True
        for plugin in ("xep_0030", "xep_0199"):
            self.register_plugin(plugin)
        self.plugin["xep_0030"].add_identity(category="pubsub", itype="push", name="test push")
        self.add_event_handler("session_start", lambda _: self.ready.set())
        self.add_event_handler("disconnected", lambda _: self.ended.set())
        self.add_event_handler("stream_error", self._on_error)
        self.add_event_handler("message", self._on_message)

    def _on_error(self, error: slixmpp.xmlstream.StanzaBase) -> None:
        self.error = error["condition"]

    def _on_message(self, msg: slixmpp.Message) -> None:
        self.messages.put_nowait(msg)
        if self.echo and msg["type"] != "error" and msg["body"]:
            msg.reply(f"echo: {msg['body']}").send()

    async def attach(self, port: int, timeout: float = 15.0) -> bool:
        """Connect and handshake; True once accepted, False when the server closed it."""
        self.connect("127.0.0.1", port)
        done = [asyncio.ensure_future(e.wait()) for e in (self.ready, self.ended)]
        await asyncio.wait(done, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.cancel()
        return self.ready.is_set() and not self.ended.is_set()

    async def detach(self) -> None:
        if not self.ended.is_set():
            self.disconnect()
            await asyncio.wait_for(self.ended.wait(), 10)
