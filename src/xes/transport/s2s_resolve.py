"""Where a remote XMPP domain's server listens (RFC 6120 §3.2, XEP-0368; ADR 0025).

Order: the static ``[s2s] hosts`` route (tests, closed networks), else DNS SRV records
``_xmpps-server._tcp`` (direct TLS, XEP-0368) and ``_xmpp-server._tcp`` (STARTTLS), merged
by priority and weighted at random within one priority (RFC 2782), else the domain itself on
port 5269 (RFC 6120 §3.2.2 fallback). A ``.`` target means "no service here" (RFC 2782). DNS
goes through dnspython's asynchronous resolver, which runs on anyio's asyncio loop (ADR 0025
says why dnspython).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
import structlog

log = structlog.get_logger("xes.s2s")

DEFAULT_PORT = 5269
DNS_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    direct_tls: bool = False
    """XEP-0368: TLS from the first byte (ALPN ``xmpp-server``), no STARTTLS."""


def static_target(value: str) -> Target:
    """``host:port`` or ``tls:host:port`` (validated by the configuration)."""
    direct = value.startswith("tls:")
    host, _, port = value.removeprefix("tls:").rpartition(":")
    return Target(host.strip("[]"), int(port), direct)


async def resolve(
    domain: str, static: Mapping[str, str], resolver: dns.asyncresolver.Resolver | None = None
) -> list[Target]:
    """The targets to try for ``domain``, in order (``resolver``: the system's by default)."""
    if domain in static:
        return [static_target(static[domain])]
    records: list[tuple[int, float, Target]] = []
    refused = False
    for service, direct in (("_xmpps-server._tcp.", True), ("_xmpp-server._tcp.", False)):
        try:
            answer = await (resolver or dns.asyncresolver.get_default_resolver()).resolve(
                service + domain, "SRV", lifetime=DNS_TIMEOUT, search=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            continue
        except dns.exception.DNSException as exc:
            log.info("s2s_srv_failed", domain=domain, service=service, error=repr(exc))
            continue
        for rr in answer:
            target = str(rr.target).rstrip(".")
            if not target:
                refused = True  # RFC 2782: "." says the service is not offered there
                continue
            # RFC 2782: lower priority first; within one, a weighted random order.
            order = random.random() ** (1.0 / (rr.weight + 1))
            records.append((rr.priority, -order, Target(target, rr.port, direct)))
    if records:
        return [t for *_, t in sorted(records, key=lambda r: (r[0], r[1]))]
    return [] if refused else [Target(domain, DEFAULT_PORT)]
