"""Writing a stanza to a client socket at once, from the caller, when nothing waits ahead of it.

A committed room message is written by delivery to every occupant session the node holds (ADR
0011): fifty occupants, fifty writes. Through a connection's writer task each costs a task
wake-up, a memory-stream hand-off and anyio's checkpoints around ``TLSStream.send`` (one of them
a full event-loop iteration); together they were most of the CPU of a room's fan-out
(docs/benchmarks.md). When the connection's queue is empty, its writer is not in the middle of a
write and the socket is not applying backpressure, the same bytes can be encrypted and handed to
the asyncio transport right away: same TLS records, same order, no task switch.

This reaches below anyio's public API (``TLSStream``'s SSL object and write BIO, the asyncio
transport and protocol of its socket stream), so :func:`direct_writer` checks that every piece
is where it expects and returns None otherwise: the connection then keeps using its writer task
for everything. Any doubt at write time (a pending TLS record, flow control, an SSL condition)
also falls back to the queue; nothing is ever written twice or out of order.
"""

from __future__ import annotations

import ssl
from typing import Any

from anyio.streams.tls import TLSStream

MAX_BUFFERED = 32 * 1024
"""Bytes the transport may already hold for a direct write to go ahead (asyncio pauses writers
at 64 KiB; below that the direct path never outruns backpressure)."""


class DirectWriter:
    """Synchronous writes to one connection's transport (TLS or plain)."""

    __slots__ = ("_protocol", "_ssl", "_transport", "_write_bio")

    def __init__(
        self, transport: Any, protocol: Any, ssl_object: ssl.SSLObject | None, write_bio: Any
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._ssl = ssl_object
        self._write_bio = write_bio

    def ready(self) -> bool:
        """Can a write go out now, in order, without outrunning backpressure?"""
        transport = self._transport
        if (
            transport.is_closing()
            or not self._protocol.write_event.is_set()
            or transport.get_write_buffer_size() > MAX_BUFFERED
        ):
            return False
        # A TLS record of the stream's own on its way out: keep the order.
        return self._ssl is None or not self._write_bio.pending

    def write(self, data: bytes) -> bool:
        """Write ``data`` now; False (nothing written) when it must go through the queue."""
        if not self.ready():
            return False
        transport = self._transport
        if self._ssl is None:
            transport.write(data)
            return True
        try:
            self._ssl.write(data)
        except ssl.SSLError:
            return False  # nothing was consumed (want-read/write, or broken): the queue decides
        transport.write(self._write_bio.read())
        return True


def direct_writer(stream: Any) -> Any:
    """A direct writer for ``stream`` (anyio's TLSStream over an asyncio socket stream, the
    socket stream itself, or a stream that offers its own, like a WebSocket's), or None when
    its internals are not the ones this module knows. It has ``write(data) -> bool``."""
    own = getattr(stream, "direct_writer", None)
    if callable(own):
        return own()
    ssl_object = write_bio = None
    socket_stream = stream
    if isinstance(stream, TLSStream):
        ssl_object = getattr(stream, "_ssl_object", None)
        write_bio = getattr(stream, "_write_bio", None)
        socket_stream = stream.transport_stream
        if not isinstance(ssl_object, ssl.SSLObject) or not isinstance(write_bio, ssl.MemoryBIO):
            return None
    transport = getattr(socket_stream, "_transport", None)
    protocol = getattr(socket_stream, "_protocol", None)
    if transport is None or protocol is None:
        return None
    event = getattr(protocol, "write_event", None)
    if not all(
        callable(getattr(obj, name, None))
        for obj, name in (
            (transport, "write"),
            (transport, "is_closing"),
            (transport, "get_write_buffer_size"),
            (event, "is_set"),
        )
    ):
        return None
    return DirectWriter(transport, protocol, ssl_object, write_bio)


def buffered_plaintext(stream: Any, limit: int) -> bytes:
    """Plaintext the TLS layer can give now without reading the socket: the records after the
    first of what the last socket read brought (``SSLObject.read`` returns one record a call).
    A client that sends ten stanzas at once is then read as ten stanzas at once, so they can be
    handled together. Empty for anything but anyio's ``TLSStream``."""
    ssl_object = getattr(stream, "_ssl_object", None)
    if not isinstance(stream, TLSStream) or not isinstance(ssl_object, ssl.SSLObject):
        return b""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        try:
            chunk = ssl_object.read(limit - size)
        except ssl.SSLError:
            break  # want-read (an incomplete record: the next receive waits for it), or EOF
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)
