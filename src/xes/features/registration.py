"""In-band registration and account management (XEP-0077).

Before authentication (only when ``[registration] enabled``, over TLS): a new account, limited
per IP address. After authentication: the account's own password change and, if allowed,
its removal. Accounts are the same events ``xes user add`` writes; a new account is proposed
against the account stream's version, so two nodes registering the same name at once make
exactly one of them win (the other gets ``conflict``). Passwords become SCRAM keys at once and
never enter an event or a log line.
"""

from __future__ import annotations

import time
from collections import deque

import anyio

from xes.eventlog.client import ProposalRejected
from xes.events.catalog import AccountPasswordChanged, AccountRegistered, AccountRemoved
from xes.hub import Hub, LocalSession
from xes.jid import InvalidJID, normalize_localpart
from xes.projections import accounts as accounts_view
from xes.projections.projector import stream_version
from xes.session.sasl import derive_credentials
from xes.stanza.core import StanzaError, iq_result
from xes.xml import E, Element, serialize

NS = "jabber:iq:register"
XEPS = ((77, "complete"),)
MAX_PASSWORD = 1024
_recent: dict[str, deque[float]] = {}
"""Registration times per IP address on this node (a limit, not state)."""


class RegistrationRefused(Exception):
    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition)
        self.condition = condition
        self.text = text


def _check_password(hub: Hub, password: str) -> None:
    cfg = hub.config.registration
    if not cfg.min_password_length <= len(password) <= MAX_PASSWORD:
        raise RegistrationRefused(
            "not-acceptable",
            f"passwords have {cfg.min_password_length} to {MAX_PASSWORD} characters",
        )


def _rate_limit(hub: Hub, address: str, now: float) -> None:
    limit = hub.config.registration.per_address_per_hour
    times = _recent.setdefault(address, deque())
    while times and times[0] < now - 3600:
        times.popleft()
    if len(times) >= limit:
        raise RegistrationRefused("resource-constraint", "too many registrations from this address")
    times.append(now)
    if len(_recent) > 10000:  # forget idle addresses, so the table stays bounded
        for key in [k for k, v in _recent.items() if not v or v[-1] < now - 3600]:
            del _recent[key]


async def register(
    hub: Hub, username: str, password: str, address: str, domain: str | None = None
) -> str:
    """Create ``username`` on hosted ``domain`` (default: the primary one); returns the bare
    JID. Raises :class:`RegistrationRefused`."""
    try:
        local = normalize_localpart(username)
    except InvalidJID as exc:
        raise RegistrationRefused(
            "not-acceptable", "that username is not a valid JID localpart"
        ) from exc
    _check_password(hub, password)
    jid = f"{local}@{domain or hub.domain}"
    stream = f"account:{jid}"
    with hub.read() as txn:
        if accounts_view.exists(hub.store, txn, jid):
            raise RegistrationRefused("conflict", "that username is taken")
        version = stream_version(hub.store, txn, stream)
    _rate_limit(hub, address, time.monotonic())
    creds = await anyio.to_thread.run_sync(
        derive_credentials, password, hub.config.auth.scram_iterations
    )
    try:
        await hub.log.append(AccountRegistered(jid, creds), expected={stream: version})
    except ProposalRejected as exc:
        if exc.reason.startswith("conflict"):
            raise RegistrationRefused("conflict", "that username is taken") from exc
        raise
    return jid


async def handle(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element | None:
    """XEP-0077 after authentication: what is registered, password change, removal."""
    to = iq.get("to")
    if to and to not in (session.jid.domain, session.bare):
        raise StanzaError("service-unavailable")
    cfg = hub.config.registration
    local = session.bare.split("@", 1)[0]
    if iq.get("type") == "get":
        return iq_result(
            iq,
            E(
                "{%s}query" % NS,
                None,
                E("{%s}registered" % NS),
                E("{%s}username" % NS, None, local),
                E("{%s}password" % NS),
            ),
        )
    if query.find("{%s}remove" % NS) is not None:
        if not cfg.allow_remove:
            raise StanzaError("not-allowed", "accounts are removed by the operator here")
        # The result must reach the client before delivery closes the stream (§3.2): delivery
        # sends it, when it applies the removal, just before the close.
        hub.farewells[session.session_id] = serialize(iq_result(iq))
        try:
            await hub.log.append(AccountRemoved(session.bare))
        except ProposalRejected as exc:
            hub.farewells.pop(session.session_id, None)
            # A legal hold keeps the account's data (ADR 0024): the operator lifts it first.
            raise StanzaError("not-allowed", "this account cannot be removed now") from exc
        except BaseException:
            hub.farewells.pop(session.session_id, None)
            raise
        return None
    username = query.find("{%s}username" % NS)
    password = query.find("{%s}password" % NS)
    if password is None:
        raise StanzaError("bad-request", "a password change carries username and password")
    if not cfg.password_change:
        raise StanzaError("not-allowed", "passwords are changed by the operator here")
    if username is not None and username.text.strip() and username.text.strip() != local:
        raise StanzaError("not-acceptable", "you can only change your own password")
    try:
        _check_password(hub, password.text)
    except RegistrationRefused as exc:
        raise StanzaError(exc.condition, exc.text) from exc
    creds = await anyio.to_thread.run_sync(
        derive_credentials, password.text, hub.config.auth.scram_iterations
    )
    await hub.log.append(AccountPasswordChanged(session.bare, creds))
    return iq_result(iq)
