"""In-band registration (XEP-0077) with slixmpp: a new account over TLS, taken names and short
passwords refused, a per-address limit, password change and account removal; and off by default."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from tests.integration.clients import Client
from tests.integration.conftest import run, running_server
from tests.integration.rawclient import RawClient
from tests.integration.server import XesServer
from tests.integration.test_pep import error_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    with running_server(
        tmp_path_factory.mktemp("register") / "node",
        (
            "[registration]\nenabled = true\nper_address_per_hour = 4\n"
            "min_password_length = 8\nallow_remove = true\n"
        ),
    ) as srv:
        yield srv


class Registrant(slixmpp.ClientXMPP):
    """A slixmpp client that registers ``jid`` in band, then disconnects."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0066")
        self.register_plugin("xep_0077")
        self.plugin["xep_0077"].force_registration = False
        self.outcome: asyncio.Future[Any] = asyncio.get_event_loop().create_future()
        self.form: Any = None
        self.add_event_handler("register", self._register)

    async def _register(self, form: Any) -> None:
        self.form = form
        iq = self.make_iq_set()
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send(timeout=10)
        except IqError as exc:
            self.outcome.set_result(exc)
        else:
            self.outcome.set_result("ok")
        self.disconnect()

    async def attempt(self, port: int) -> Any:
        self.connect("127.0.0.1", port)
        return await asyncio.wait_for(self.outcome, 20)


def test_register_then_login_change_password_and_remove(open_server: XesServer) -> None:
    srv = open_server

    async def scenario() -> None:
        new = Registrant(f"newbie@{srv.domain}", "long-enough-1")
        assert await new.attempt(srv.c2s) == "ok"
        assert new.form is not None and new.form["register"]["fields"] >= {"username", "password"}
        user = Client(f"newbie@{srv.domain}/pc", "long-enough-1", plugins=("xep_0077",))
        await user.login(srv.c2s)
        # The name is taken now.
        again = Registrant(f"Newbie@{srv.domain}", "another-pass")
        refused = await again.attempt(srv.c2s)
        assert isinstance(refused, IqError) and error_of(refused)[0] == "conflict"
        # Password change: too short refused, a good one works for the next login.
        with pytest.raises(IqError) as short:
            await user.plugin["xep_0077"].change_password("short", timeout=10)
        assert error_of(short.value)[0] == "not-acceptable"
        await user.plugin["xep_0077"].change_password("changed-pass-2", timeout=10)
        await user.logout()
        old = Client(f"newbie@{srv.domain}/pc", "long-enough-1")
        with pytest.raises(AssertionError):
            await old.login(srv.c2s, timeout=8)
        old.disconnect()
        fresh = Client(f"newbie@{srv.domain}/pc", "changed-pass-2", plugins=("xep_0077",))
        await fresh.login(srv.c2s)
        # Removal (allowed here): the session ends and the account is gone.
        await fresh.plugin["xep_0077"].cancel_registration(timeout=10)
        await asyncio.wait_for(fresh.ended.wait(), 10)
        gone = Client(f"newbie@{srv.domain}/pc", "changed-pass-2")
        with pytest.raises(AssertionError):
            await gone.login(srv.c2s, timeout=8)
        gone.disconnect()

    run(scenario())
    assert "changed-pass-2" not in srv.log_path.read_text()
    assert "long-enough-1" not in srv.xes("events", "dump").stdout


def test_bad_names_short_passwords_and_the_address_limit(open_server: XesServer) -> None:
    srv = open_server

    async def scenario() -> None:
        bad = Registrant(f"bad@{srv.domain}", "short")
        refused = await bad.attempt(srv.c2s)
        assert isinstance(refused, IqError) and error_of(refused)[0] == "not-acceptable"
        outcomes = []
        for n in range(5):
            r = Registrant(f"bulk{n}@{srv.domain}", "bulk-password")
            outcomes.append(await r.attempt(srv.c2s))
        # 4 per hour per address, and the first test already used one.
        assert outcomes[:3] == ["ok", "ok", "ok"]
        for out in outcomes[3:]:
            assert isinstance(out, IqError) and error_of(out)[0] == "resource-constraint"

    run(scenario())


def test_registration_is_off_by_default(shared_server: XesServer) -> None:
    srv = shared_server

    async def scenario() -> None:
        raw = RawClient(srv.c2s)
        features = raw.starttls(srv.domain)
        assert b"iq-register" not in features  # not advertised
        raw.send(
            "<iq type='set' id='r1'><query xmlns='jabber:iq:register'>"
            "<username>nobody</username><password>a-fine-password</password></query></iq>"
        )
        reply = raw.recv_until(b"</iq>")
        assert b"service-unavailable" in reply
        raw.close()
        srv.add_user("regoff", "pw-regoff-long")
        user = Client(f"regoff@{srv.domain}/pc", "pw-regoff-long", plugins=("xep_0077",))
        await user.login(srv.c2s)
        with pytest.raises(IqError) as not_allowed:
            await user.plugin["xep_0077"].cancel_registration(timeout=10)
        assert error_of(not_allowed.value)[0] == "not-allowed"
        await user.logout()

    run(scenario())
