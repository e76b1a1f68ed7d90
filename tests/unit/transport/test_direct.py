"""The direct write path: same bytes, same order as the writer task's path, over real TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

import anyio
import pytest
from anyio.streams.tls import TLSStream

from xes import tlsutil
from xes.transport.direct import MAX_BUFFERED, buffered_plaintext, direct_writer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = tmp_path / "c.crt", tmp_path / "c.key"
    tlsutil.ensure_self_signed(cert, key, "direct.test")
    server = tlsutil.server_context(cert, key)
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client


async def _pair(contexts: tuple[ssl.SSLContext, ssl.SSLContext], tls: bool):  # type: ignore[no-untyped-def]
    server_ctx, client_ctx = contexts
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    accepted: list = []

    async def accept(tg) -> None:  # type: ignore[no-untyped-def]
        async with listener:
            raw = await listener.listeners[0].accept()
            accepted.append(
                await TLSStream.wrap(
                    raw, server_side=True, ssl_context=server_ctx, standard_compatible=False
                )
                if tls
                else raw
            )

    async with anyio.create_task_group() as tg:
        tg.start_soon(accept, tg)
        client = await anyio.connect_tcp("127.0.0.1", port)
        if tls:
            client = await TLSStream.wrap(
                client, hostname="direct.test", ssl_context=client_ctx, standard_compatible=False
            )
    return accepted[0], client


async def _read(client, n: int) -> bytes:  # type: ignore[no-untyped-def]
    got = b""
    with anyio.fail_after(10):
        while len(got) < n:
            got += await client.receive()
    return got


@pytest.mark.parametrize("tls", [True, False])
async def test_direct_and_stream_writes_keep_their_order(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], tls: bool
) -> None:
    server, client = await _pair(contexts, tls)
    writer = direct_writer(server)
    assert writer is not None
    expected = b""
    for i in range(50):
        chunk = f"<message id='{i}'/>".encode()
        if i % 3:
            assert writer.write(chunk)
        else:
            await server.send(chunk)
        expected += chunk
    assert await _read(client, len(expected)) == expected
    await server.aclose()
    await client.aclose()


async def test_backpressure_sends_writes_to_the_queue(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = await _pair(contexts, True)
    writer = direct_writer(server)
    assert writer is not None
    # The client reads nothing: the kernel buffers fill, then the transport's own buffer.
    refused = 0
    written = 0
    big = b"x" * 16384
    for _ in range(2000):
        if writer.write(big):
            written += len(big)
        else:
            refused += 1
            break
    assert refused == 1
    # It never let the transport's buffer grow much past the limit.
    transport = server.transport_stream._transport
    assert transport.get_write_buffer_size() <= MAX_BUFFERED + 2 * len(big)
    got = await _read(client, written)
    assert got == b"x" * written
    await server.aclose()
    await client.aclose()


def test_unknown_streams_get_no_direct_writer() -> None:
    class Other:
        pass

    assert direct_writer(Other()) is None


async def test_buffered_plaintext_gives_the_records_already_read(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = await _pair(contexts, True)
    chunks = [f"<message id='{i}'/>".encode() for i in range(10)]
    for chunk in chunks:  # one TLS record each, as a client writing stanza by stanza does
        await client.send(chunk)
    await anyio.sleep(0.2)  # all ten records are in the server's socket buffer
    first = await server.receive()
    assert first == chunks[0]  # SSLObject.read gives one record per call
    rest = buffered_plaintext(server, 65536)
    assert first + rest == b"".join(chunks)
    assert buffered_plaintext(server, 65536) == b""  # nothing more without reading the socket
    await client.send(b"<late/>")
    assert await server.receive() == b"<late/>"
    await server.aclose()
    await client.aclose()


async def test_buffered_plaintext_of_a_plain_stream_is_empty(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = await _pair(contexts, False)
    await client.send(b"<a/><b/>")
    assert await server.receive() == b"<a/><b/>"
    assert buffered_plaintext(server, 65536) == b""
    await server.aclose()
    await client.aclose()
