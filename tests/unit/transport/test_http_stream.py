"""The HTTP server's streamed responses (``Response.chunks``): the whole body with its length,
HEAD without it, and a source that ends short cuts the connection instead of completing a
wrong body; an ordinary route on the same connection is untouched."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from xes.config import HttpConfig
from xes.http.server import HttpServer, Request, Response, Route

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def exchange(server: HttpServer, raw: bytes) -> bytes:
    """Send ``raw`` to ``server`` over loopback and read until the server closes."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    out = b""
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, lambda stream: server.serve(stream, None))
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            await client.send(raw)
            with anyio.fail_after(10):
                try:
                    while True:
                        out += await client.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
        tg.cancel_scope.cancel()
    return out


def make_server(parts: list[bytes], length: int) -> HttpServer:
    server = HttpServer(HttpConfig())

    async def file(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for part in parts:
                yield part

        return Response(200, content_type="image/png", chunks=chunks, length=length)

    async def plain(request: Request) -> Response:
        return Response.text(200, "plain")

    server.add(Route("/file", file))
    server.add(Route("/plain", plain))
    return server


async def test_streamed_body_then_keep_alive() -> None:
    server = make_server([b"abc", b"", b"defg"], 7)
    raw = (
        b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    out = await exchange(server, raw)
    first, _, rest = out.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"content-length: 7" in first.lower()
    assert rest.startswith(b"abcdefgHTTP/1.1 200")
    assert rest.endswith(b"plain\n")


async def test_head_sends_no_body() -> None:
    server = make_server([b"abcdefg"], 7)
    out = await exchange(server, b"HEAD /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"content-length: 7" in head.lower() and body == b""


async def test_short_source_cuts_the_connection() -> None:
    server = make_server([b"abc"], 7)
    raw = b"GET /file HTTP/1.1\r\nHost: x\r\n\r\nGET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
    out = await exchange(server, raw)
    _, _, body = out.partition(b"\r\n\r\n")
    assert body == b"abc"  # no second response: the client knows the first was cut
