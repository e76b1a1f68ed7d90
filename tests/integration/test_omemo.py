"""OMEMO (XEP-0384) end to end on a three-node cluster, with slixmpp-omemo as both clients.

Each client publishes its device lists and bundles (both OMEMO versions) at login with
publish-options ``access_model=open``; contacts learn device lists from PEP notifications (last
items); senders download bundles by item id (OMEMO 2) or from per-device nodes (legacy); a user
with no subscription at all downloads everything through the open access model. The server
only ever sees the fallback body."""

from __future__ import annotations

from pathlib import Path

import pytest
from slixmpp import Message

from tests.integration.clients import Client, next_matching
from tests.integration.cluster import running_cluster
from tests.integration.conftest import run
from tests.integration.omemoclient import OLDMEMO, TWOMEMO, OmemoClient
from tests.integration.test_chat import befriend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def assert_opaque(msg: Message, client: OmemoClient, *secrets: str) -> None:
    """Only the fallback body in the clear; none of ``secrets`` anywhere in the stanza."""
    assert msg["body"] == client.omemo.fallback_message
    wire = str(msg)
    for secret in secrets:
        assert secret not in wire, wire


async def received(client: OmemoClient, sender: OmemoClient, namespace: str) -> Message:
    """The next OMEMO message with a body from ``sender`` (empty ratchet messages skipped)."""
    msg: Message = await next_matching(
        client.encrypted,
        lambda m: (
            m["from"].bare == sender.boundjid.bare
            and client.omemo.is_encrypted(m) == {namespace}
            and m["body"]
        ),
        30,
    )
    return msg


def test_omemo_session_between_two_nodes(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        n1, n2, n3 = cluster.nodes
        domain = n1.domain
        for name in ("alice", "bob", "carol"):
            n1.add_user(name, f"pw-{name}")

        async def scenario() -> None:
            # Contacts of old (their roster made on other devices), now both on OMEMO clients.
            old_alice = Client(f"alice@{domain}/old", "pw-alice")
            old_bob = Client(f"bob@{domain}/old", "pw-bob")
            await old_alice.login(n1.c2s)
            await old_bob.login(n2.c2s)
            await befriend(old_alice, old_bob)
            await next_matching(old_bob.presences, lambda p: p["from"] == old_alice.boundjid)
            await old_alice.logout()
            await old_bob.logout()

            alice = OmemoClient(f"alice@{domain}/laptop", "pw-alice")
            bob = OmemoClient(f"bob@{domain}/phone", "pw-bob")
            await alice.login(n1.c2s)
            await bob.login(n2.c2s)
            alice_dev, bob_dev = await alice.own_device_id(), await bob.own_device_id()
            # Bob learns alice's device list from the last item at his login, alice learns
            # bob's from the notification of his publish (across nodes, filtered by caps).
            await bob.known_device(alice.boundjid.bare, alice_dev)
            await alice.known_device(bob.boundjid.bare, bob_dev)

            # Legacy OMEMO, the plugin's own encryption: alice -> bob -> alice.
            secret = "the eagle lands at midnight"
            await alice.send_oldmemo(bob.boundjid.bare, secret)
            msg = await received(bob, alice, OLDMEMO)
            assert_opaque(msg, bob, secret)
            assert await bob.open_oldmemo(msg) == secret
            reply = "understood, midnight it is"
            await bob.send_oldmemo(alice.boundjid.bare, reply)
            msg = await received(alice, bob, OLDMEMO)
            assert_opaque(msg, alice, reply)
            assert await alice.open_oldmemo(msg) == reply

            # OMEMO 2 (bundles fetched by item id from urn:xmpp:omemo:2:bundles).
            secret2 = "omemo two across nodes"
            await alice.send_twomemo(bob.boundjid.bare, secret2)
            msg = await received(bob, alice, TWOMEMO)
            assert_opaque(msg, bob, secret2)
            assert await bob.open_twomemo(msg) == secret2
            reply2 = "omemo two right back"
            await bob.send_twomemo(alice.boundjid.bare, reply2)
            msg = await received(alice, bob, TWOMEMO)
            assert_opaque(msg, alice, reply2)
            assert await alice.open_twomemo(msg) == reply2

            # Carol, on the third node, is nobody's contact: alice's device list and bundles
            # are open, so she fetches them and writes; alice fetches carol's and answers.
            carol = OmemoClient(f"carol@{domain}/tablet", "pw-carol")
            await carol.login(n3.c2s)
            roster = await carol.get_roster()
            assert alice.boundjid.bare not in roster["roster"]["items"]
            hello = "hello from a stranger"
            await carol.send_oldmemo(alice.boundjid.bare, hello)
            assert alice_dev in await carol.device_ids(alice.boundjid.bare)
            msg = await received(alice, carol, OLDMEMO)
            assert_opaque(msg, alice, hello)
            assert await alice.open_oldmemo(msg) == hello
            answer = "hello stranger"
            await alice.send_twomemo(carol.boundjid.bare, answer)
            msg = await received(carol, alice, TWOMEMO)
            assert_opaque(msg, carol, answer)
            assert await carol.open_twomemo(msg) == answer

            for client in (alice, bob, carol):
                await client.logout()

        run(scenario())


def test_new_contact_learns_the_device_list(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        n1, n2, _ = cluster.nodes
        domain = n1.domain
        for name in ("dora", "emil"):
            n1.add_user(name, f"pw-{name}")

        async def scenario() -> None:
            dora = OmemoClient(f"dora@{domain}/laptop", "pw-dora")
            emil = OmemoClient(f"emil@{domain}/phone", "pw-emil")
            await dora.login(n1.c2s)
            await emil.login(n2.c2s)
            await befriend(dora, emil)
            try:
                # Each is now a new subscriber of the other's PEP service: the last item of
                # each device list node is due (slixmpp-omemo counts on it, and downloads
                # nothing itself for a contact with subscription both).
                await emil.known_device(dora.boundjid.bare, await dora.own_device_id(), 10)
                await dora.known_device(emil.boundjid.bare, await emil.own_device_id(), 10)
            finally:
                await dora.logout()
                await emil.logout()

        run(scenario())
