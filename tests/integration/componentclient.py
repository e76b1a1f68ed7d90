"""A slixmpp ``ComponentXMPP`` for integration tests: an independent XEP-0114 implementation."""

from __future__ import annotations

import asyncio

import slixmpp
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath


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


PUBSUB = "http://jabber.org/protocol/pubsub"
PUSH_NS = "urn:xmpp:push:0"


class PushService(Component):
    """An XMPP Push Service (XEP-0357 §3) as an app server runs it: records every publish it
    gets and answers it with a result, or with the error ``answer_error`` names."""

    def __init__(self, jid: str, secret: str) -> None:
        super().__init__(jid, secret)
        self.echo = False
        self.publishes: asyncio.Queue = asyncio.Queue()  # type: ignore[type-arg]
        self.answer_error: tuple[str, str] | None = None
        """(condition, type) to refuse publishes with; None accepts them."""
        self.silent = False
        """Never answer (the server must time out and retry)."""
        self.register_handler(
            Callback(
                "push publish",
                MatchXPath(f"{{{self.default_ns}}}iq/{{{PUBSUB}}}pubsub"),
                self._on_publish,
            )
        )

    def _on_publish(self, iq: slixmpp.Iq) -> None:
        self.publishes.put_nowait(iq.xml)
        if self.silent:
            return
        if self.answer_error is not None:
            condition, type_ = self.answer_error
            reply = iq.reply(clear=True)
            reply["type"] = "error"
            reply["error"]["condition"] = condition
            reply["error"]["type"] = type_
            reply.send()
        else:
            iq.reply(clear=True).send()


def summary(publish: ET.Element) -> dict[str, list[str]]:
    """The fields of a publish's ``urn:xmpp:push:summary`` form, and its publish options
    (prefixed ``option:``)."""
    out: dict[str, list[str]] = {}
    data = "{jabber:x:data}"
    for form in publish.iter(f"{data}x"):
        values = {
            f.get("var", ""): [v.text or "" for v in f.iter(f"{data}value")]
            for f in form.iter(f"{data}field")
        }
        prefix = "" if values.get("FORM_TYPE") == ["urn:xmpp:push:summary"] else "option:"
        out.update({prefix + k: v for k, v in values.items() if k != "FORM_TYPE"})
    node = publish.find(f".//{{{PUBSUB}}}publish")
    out["node"] = [node.get("node", "")] if node is not None else []
    return out
