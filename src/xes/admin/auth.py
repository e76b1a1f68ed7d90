"""Who may use the admin API, the status page and the XEP-0133 commands.

Two credentials, both off unless configured: a bearer token read from ``[admin] token_file``
(for scripts; compared in constant time), and HTTP Basic with the XMPP password of one of
``[admin] admins`` (for people; checked like SASL PLAIN against the stored SCRAM keys, so no
password is kept anywhere else, and through the node's login limiter, so the API is no better
for guessing than the XMPP port). Credentials only travel encrypted: a request that is not
(HTTPS, or a trusted TLS-ending proxy) is refused before any is looked at.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from pathlib import Path

import anyio

from xes.config import Config, ConfigError
from xes.hub import Hub
from xes.jid import JID, InvalidJID, normalize_localpart
from xes.projections import accounts as accounts_view
from xes.session.sasl import LoginLimiter, SaslServer, Success

MIN_TOKEN_LENGTH = 16


def read_token(config: Config) -> str | None:
    """The bearer token, or None when none is configured; a bad file fails at start."""
    path = config.admin.token_file
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"[admin] token_file {path} cannot be read ({exc.strerror or exc}): "
            "fix the path or its permissions"
        ) from None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"[admin] token_file {path} holds fewer than {MIN_TOKEN_LENGTH} characters: "
            "put a long random token in it (e.g. openssl rand -hex 32)"
        )
    return token


class AdminAuth:
    def __init__(self, hub: Hub, token: str | None, limiter: LoginLimiter) -> None:
        self.hub = hub
        self.token = token
        self.admins = frozenset(hub.config.admin.admins)
        self.limiter = limiter

    @property
    def enabled(self) -> bool:
        return self.token is not None or bool(self.admins)

    def is_admin(self, bare: str) -> bool:
        return bare in self.admins

    async def identify(self, authorization: str, peer: str) -> str | None:
        """``token`` or the admin's bare JID for a valid ``Authorization`` header, else None."""
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token is not None:
            if hmac.compare_digest(value.strip().encode(), self.token.encode()):
                return "token"
            return None
        if scheme == "basic" and self.admins:
            return await self._basic(value.strip(), peer)
        return None

    async def _basic(self, value: str, peer: str) -> str | None:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            jid = JID.parse(user if "@" in user else f"{user}@{self.hub.domain}")
        except (binascii.Error, UnicodeDecodeError, InvalidJID, ValueError):
            return None
        bare = str(jid.bare)
        if jid.local is None or not self.hub.is_local(jid.domain) or bare not in self.admins:
            return None
        now = time.monotonic()
        if not self.limiter.check(bare, peer, now):
            return None
        ok = await anyio.to_thread.run_sync(self._password_ok, jid.local, password, jid.domain)
        if not ok:
            self.limiter.record_failure(bare, peer, time.monotonic())
            return None
        self.limiter.record_success(bare, peer, time.monotonic())
        return bare

    def _password_ok(self, local: str, password: str, domain: str) -> bool:
        def lookup(name: str) -> dict[str, object] | None:
            with self.hub.read() as txn:
                return accounts_view.credentials(self.hub.store, txn, f"{name}@{domain}")

        server = SaslServer(
            "PLAIN",
            lookup,
            channel_binding=None,
            tls=True,
            normalize_username=normalize_localpart,
            domain=domain,
        )
        return isinstance(server.step(f"\0{local}\0{password}".encode()), Success)
