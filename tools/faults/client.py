"""One campaign client: an XEP-0198 device that sends numbered messages and records everything.

Why a thread per client over the raw :class:`~tests.integration.smclient.SmClient`: the checker
needs the exact XEP-0198 facts (which outbound stanza number each message had, which ``<a h>``
acknowledged it, which inbound count a resumption stated), and slixmpp hides those. Each
client behaves like a careful mobile client: it connects to a random node through its own
:class:`CutProxy` (so the nemesis can leave the server a half-open socket), resumes on any node
after a broken connection and resends what the resumed count says was not handled, opens a new
session only when resumption fails (without resending: those messages' outcome is unknown and
the journal decides), and gives up on a connection that acknowledges nothing for
``dead_after`` seconds (a paused node).

Message bodies: ``c <sender> <n>`` one-to-one (``id`` ``c<sender>-<n>``), ``g <sender> <n>``
to the room (``id`` ``g<sender>-<n>``); ``n`` counts per sender and kind from 1.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.cluster import XesCluster
from tests.integration.cutproxy import CutProxy
from tests.integration.server import XesServer
from tests.integration.smclient import CLIENT, SM, SmClient

STREAMS = "http://etherx.jabber.org/streams"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = MUC + "#user"
DELAY = "urn:xmpp:delay"
RESOURCE = "dev"
"""Every user has one device, so "each device that should have it" is that resource."""


class SafeCutProxy(CutProxy):
    """:class:`CutProxy` for one connection to a node that may be dead.

    The test proxy lets its accept thread die with a traceback when the target refuses; here the
    client side is closed instead, so the client sees a refused node as a closed connection.
    """

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        with self._lock:
            self.pairs.append((client, upstream))
        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()
        # One connection per proxy: stop listening (the accept thread ends here).
        with contextlib.suppress(OSError):
            self.listener.close()


@dataclass
class Sent:
    """One message this client sent, with what it was told about it."""

    kind: str
    """chat | groupchat."""
    n: int
    to: str
    """Recipient user (chat) or the room's local part (groupchat)."""
    at: float
    session: int
    """Ordinal of the client's XEP-0198 session (0, 1, ...; a resumption keeps it)."""
    acked_at: float | None = None
    """When an ``<a h>`` (or ``<resumed h>``) first covered its stanza number."""
    error: str | None = None
    """``condition: text`` of an error reply naming its ``id``."""
    abandoned: bool = False
    """Unacknowledged when its session was lost without resumption (outcome unknown)."""


@dataclass
class Received:
    kind: str
    sender: int
    n: int
    at: float
    session: int
    delayed: bool
    """Carried a XEP-0203 delay (offline storage)."""


@dataclass
class SessionRecord:
    ordinal: int
    sm_id: str
    node: str
    started: float
    resumptions: list[tuple[float, str]] = field(default_factory=list)
    """(time, node) of every successful resumption."""
    ended: str = ""
    """Why the client stopped using it: failed-resume | logout | '' (still in use)."""


@dataclass
class _Out:
    k: int
    xml: str
    ref: Sent | None


class FaultClient(threading.Thread):
    """One device; see the module docstring. ``records()`` is what the checker reads."""

    def __init__(
        self,
        index: int,
        cluster: XesCluster,
        peers: list[int],
        room: str | None,
        seed: int,
        *,
        interval: float = 1.0,
        groupchat_every: int = 5,
        dead_after: float = 8.0,
    ) -> None:
        super().__init__(name=f"fault-client-{index}", daemon=True)
        self.index = index
        self.user = f"f{index}"
        self.password = f"pw-f{index}"
        self.cluster = cluster
        self.peers = peers
        self.room = room
        self.rng = random.Random(seed)
        self.interval = interval
        self.groupchat_every = groupchat_every
        self.dead_after = dead_after
        self.sending = threading.Event()
        self.sending.set()
        self.stop_flag = threading.Event()
        self.done = threading.Event()
        self._lock = threading.Lock()
        self.sent: list[Sent] = []
        self.received: list[Received] = []
        self.sessions: list[SessionRecord] = []
        self.events: list[tuple[float, str]] = []
        """(time, what) of connection events, for the report."""
        self.errors: list[str] = []
        self._conn: SmClient | None = None
        self._proxy: SafeCutProxy | None = None
        self._proxies: list[SafeCutProxy] = []
        self._sm_id: str | None = None
        self._handled = 0
        self._out = 0
        self._unacked: deque[_Out] = deque()
        self._last_progress = time.monotonic()
        self._stall_until = 0.0
        self._cut_requested = False
        self._counters = {"chat": 0, "groupchat": 0}
        self._next_send = time.monotonic() + self.rng.uniform(0, interval)
        self._ids: dict[str, Sent] = {}
        self.joined = threading.Event()

    # ------------------------------------------------------------------ nemesis entry points

    def cut(self) -> bool:
        """Cut the current connection half-open (the server keeps its socket); False if none."""
        with self._lock:
            if self._proxy is None:
                return False
            self._cut_requested = True
            self._proxy.cut()
            return True

    def stall(self, seconds: float) -> None:
        """Stop reading (and sending) for ``seconds``: a slow consumer."""
        self._stall_until = time.monotonic() + seconds
        self.stalled_until = time.time() + seconds

    stalled_until = 0.0
    """Wall clock end of the latest stall (recovery times skip a client stalled meanwhile)."""

    # ------------------------------------------------------------------------------ the loop

    def run(self) -> None:
        try:
            while not self.stop_flag.is_set():
                if self._conn is None:
                    if not self._connect():
                        time.sleep(0.3)
                    continue
                now = time.monotonic()
                if now < self._stall_until:
                    time.sleep(0.05)
                    self._last_progress = time.monotonic()
                    continue
                if self.sending.is_set() and now >= self._next_send:
                    self._send_next()
                    self._next_send = now + self.interval * self.rng.uniform(0.5, 1.5)
                if self._unacked and now - self._last_progress > self.dead_after:
                    self._lost("no ack")
                    continue
                try:
                    alive = self._conn.pump(0.05)
                except (ET.ParseError, OSError):
                    alive = False  # OSError: the auto-ack inside the read hit a dead socket
                self._process()
                if not alive:
                    self._lost("closed")
            self._logout()
        except Exception as exc:  # recorded: a client bug must fail the run, not hang it
            tb = traceback.extract_tb(exc.__traceback__)
            where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb))
            self.errors.append(f"{type(exc).__name__}: {exc} at {where}")
        finally:
            for proxy in self._proxies:
                proxy.close()
            self.done.set()

    def _connect(self) -> bool:
        node = self.rng.choice(self.cluster.nodes)
        name = f"n{self.cluster.nodes.index(node) + 1}"
        proxy = SafeCutProxy(node.c2s)
        self._proxies.append(proxy)
        conn: SmClient | None = None
        try:
            conn = SmClient(proxy.port, timeout=10)
            if self._sm_id is not None and self._resume(conn, node, name, proxy):
                return True
            if self._sm_id is not None:
                conn.close()
                return False  # a fresh connection for the new session, next round
            jid, sm_id = conn.login_sm(node, self.user, self.password, RESOURCE)
            assert jid.endswith(f"/{RESOURCE}"), jid
        except (OSError, AssertionError, IndexError, TimeoutError, ConnectionError, ET.ParseError):
            if conn is not None:
                conn.close()
            return False
        with self._lock:
            self._conn, self._proxy = conn, proxy
            self._cut_requested = False
        self._sm_id = sm_id
        self._out = 0
        self._unacked.clear()
        self._last_progress = time.monotonic()
        self.sessions.append(SessionRecord(len(self.sessions), sm_id, name, time.time()))
        self.events.append((time.time(), f"session on {name}"))
        self._stanza("<presence/>")
        if self.room is not None:
            self._stanza(
                f"<presence to='{self.room}/{self.user}'>"
                f"<x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>"
            )
        return True

    def _resume(self, conn: SmClient, node: XesServer, name: str, proxy: SafeCutProxy) -> bool:
        assert self._sm_id is not None
        answer = conn.resume_on(node, self.user, self.password, self._sm_id, self._handled)
        if answer.tag != f"{{{SM}}}resumed":
            condition = next((c.tag.split("}")[-1] for c in answer), "?")
            self.events.append((time.time(), f"resume failed on {name}: {condition}"))
            self.sessions[-1].ended = f"failed-resume ({condition})"
            for item in self._unacked:
                if item.ref is not None and item.ref.acked_at is None:
                    item.ref.abandoned = True
            self._unacked.clear()
            self._sm_id = None
            self._handled = 0
            return False
        with self._lock:
            self._conn, self._proxy = conn, proxy
            self._cut_requested = False
        self._acked(int(answer.get("h", "0")))
        self.sessions[-1].resumptions.append((time.time(), name))
        self.events.append((time.time(), f"resumed on {name}"))
        # XEP-0198 §5: resend what the resumed count says the server did not handle.
        pending = list(self._unacked)
        self._unacked.clear()
        self._out = int(answer.get("h", "0"))
        for item in pending:
            self._stanza(item.xml, item.ref, request=False)
        conn.send(f"<r xmlns='{SM}'/>")
        self._last_progress = time.monotonic()
        return True

    def _send_next(self) -> None:
        kind = "chat"
        count = self._counters["chat"] + self._counters["groupchat"] + 1
        if self.room is not None and self.groupchat_every and count % self.groupchat_every == 0:
            kind = "groupchat"
        self._counters[kind] += 1
        n = self._counters[kind]
        session = len(self.sessions) - 1
        if kind == "chat":
            peer = self.rng.choice(self.peers)
            to = f"f{peer}"
            xml = (
                f"<message to='{to}@{self.cluster.domain}' type='chat' id='c{self.index}-{n}'>"
                f"<body>c {self.index} {n}</body></message>"
            )
        else:
            assert self.room is not None
            to = self.room.split("@", 1)[0]
            xml = (
                f"<message to='{self.room}' type='groupchat' id='g{self.index}-{n}'>"
                f"<body>g {self.index} {n}</body></message>"
            )
        ref = Sent(kind, n, to, time.time(), session)
        self.sent.append(ref)
        self._ids[f"{kind[0]}{self.index}-{n}"] = ref
        self._stanza(xml, ref)

    def _stanza(self, xml: str, ref: Sent | None = None, request: bool = True) -> None:
        """Send one counted stanza (XEP-0198 §4: our ``k``-th since enable or resume)."""
        assert self._conn is not None
        self._out += 1
        if not self._unacked:
            self._last_progress = time.monotonic()
        self._unacked.append(_Out(self._out, xml, ref))
        try:
            self._conn.send(xml)
            if request:
                self._conn.send(f"<r xmlns='{SM}'/>")
        except OSError:
            pass  # noticed by the next read

    def _acked(self, h: int) -> None:
        now = time.time()
        progressed = False
        while self._unacked and self._unacked[0].k <= h:
            item = self._unacked.popleft()
            progressed = True
            if item.ref is not None and item.ref.acked_at is None:
                item.ref.acked_at = now
        if progressed or not self._unacked:
            self._last_progress = time.monotonic()

    def _process(self) -> None:
        conn = self._conn
        assert conn is not None
        items, conn.received = conn.received, []
        self._handled = conn.handled
        session = len(self.sessions) - 1
        for elem in items:
            tag = elem.tag
            if tag == f"{{{SM}}}a":
                self._acked(int(elem.get("h", "0")))
            elif tag == f"{{{CLIENT}}}message":
                self._on_message(elem, session)
            elif tag == f"{{{CLIENT}}}presence":
                if elem.get("from", "").startswith(f"{self.room}/{self.user}"):
                    self.joined.set()
            elif tag == f"{{{CLIENT}}}iq" and elem.get("type") in ("get", "set"):
                self._stanza_reply(elem)
            elif tag == f"{{{STREAMS}}}error":
                condition = next((c.tag.split("}")[-1] for c in elem), "?")
                self.events.append((time.time(), f"stream error {condition}"))

    def _stanza_reply(self, iq: ET.Element) -> None:
        """Answer a server or peer iq (XEP-0199 pings) so nothing waits on us."""
        reply = f"<iq type='result' id='{iq.get('id', '')}' to='{iq.get('from', '')}'/>"
        self._stanza(reply, request=False)

    def _on_message(self, elem: ET.Element, session: int) -> None:
        if elem.get("type") == "error":
            ref = self._ids.get(elem.get("id", ""))
            err = elem.find(f"{{{CLIENT}}}error")
            text = ""
            condition = "?"
            if err is not None:
                for child in err:
                    name = child.tag.split("}")[-1]
                    if name == "text":
                        text = child.text or ""
                    else:
                        condition = name
            if ref is not None and ref.error is None:
                ref.error = f"{condition}: {text}"
            return
        body_el = elem.find(f"{{{CLIENT}}}body")
        if body_el is None or not body_el.text:
            return
        parts = body_el.text.split()
        if len(parts) != 3 or parts[0] not in ("c", "g"):
            return
        kind = "chat" if parts[0] == "c" else "groupchat"
        delayed = elem.find(f"{{{DELAY}}}delay") is not None
        self.received.append(
            Received(kind, int(parts[1]), int(parts[2]), time.time(), session, delayed)
        )

    def _lost(self, why: str) -> None:
        with self._lock:
            conn, self._conn, self._proxy = self._conn, None, None
            cut = self._cut_requested
        if conn is not None:
            self._process_safely(conn)
            conn.cut()
        self.events.append((time.time(), f"connection lost ({'cut' if cut else why})"))

    def _process_safely(self, conn: SmClient) -> None:
        with contextlib.suppress(Exception):
            self._conn = conn
            self._process()
        self._conn = None

    def _logout(self) -> None:
        """End the session cleanly: ack what arrived, then ``</stream:stream>``."""
        conn = self._conn
        if conn is None:
            if self.sessions and not self.sessions[-1].ended:
                self.sessions[-1].ended = "no connection at the end"
            return
        with contextlib.suppress(Exception):
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and conn.pump(0.2):
                self._process()
            conn.ack()
            conn.send("</stream:stream>")
            conn.recv_all_until_closed(5)
        self.sessions[-1].ended = "logout"
        conn.close()
        self._conn = None

    # ------------------------------------------------------------------------------ records

    def records(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "user": self.user,
            "sent": [asdict(s) for s in self.sent],
            "received": [asdict(r) for r in self.received],
            "sessions": [asdict(s) for s in self.sessions],
            "events": self.events,
            "errors": self.errors,
        }
