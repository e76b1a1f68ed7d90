"""Where a remote domain's server is (ADR 0025): static routes first, then SRV (direct TLS and
STARTTLS, by priority), then the domain on 5269; asked of a DNS server on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import dns.asyncresolver
import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from xes.transport.s2s_resolve import Target, resolve, static_target

pytestmark = pytest.mark.anyio

RECORDS = {
    "_xmpps-server._tcp.both.example": ["10 0 5270 tls.both.example."],
    "_xmpp-server._tcp.both.example": ["5 0 5269 first.both.example.", "20 0 5269 last.example."],
    "_xmpp-server._tcp.none.example": ["0 0 0 ."],
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def resolver() -> Iterator[dns.asyncresolver.Resolver]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                data, peer = sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".")
            if question.rdtype == dns.rdatatype.SRV and name in RECORDS:
                reply.answer.append(
                    dns.rrset.from_text(question.name, 60, "IN", "SRV", *RECORDS[name])
                )
            sock.sendto(reply.to_wire(), peer)

    threading.Thread(target=serve, daemon=True).start()
    res = dns.asyncresolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = sock.getsockname()[1]
    yield res
    sock.close()


def test_static_target() -> None:
    assert static_target("127.0.0.1:5270") == Target("127.0.0.1", 5270)
    assert static_target("tls:[::1]:5271") == Target("::1", 5271, True)


async def test_static_route_comes_first(resolver: dns.asyncresolver.Resolver) -> None:
    routes = {"both.example": "127.0.0.1:9999"}
    assert await resolve("both.example", routes, resolver) == [Target("127.0.0.1", 9999)]


async def test_srv_records_merge_by_priority(resolver: dns.asyncresolver.Resolver) -> None:
    assert await resolve("both.example", {}, resolver) == [
        Target("first.both.example", 5269),
        Target("tls.both.example", 5270, True),
        Target("last.example", 5269),
    ]


async def test_no_srv_falls_back_to_the_domain(resolver: dns.asyncresolver.Resolver) -> None:
    assert await resolve("plain.example", {}, resolver) == [Target("plain.example", 5269)]


async def test_dot_target_means_no_service(resolver: dns.asyncresolver.Resolver) -> None:
    assert await resolve("none.example", {}, resolver) == []
