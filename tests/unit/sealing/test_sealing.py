"""Crypto-shredding primitives (ADR 0024): sealed fields, keys wrapped to node keys, key store."""

from __future__ import annotations

from pathlib import Path

import pytest

from xes.sealing.keystore import KeyId, KeyStore
from xes.sealing.seal import Unreadable, new_key, open_sealed, seal
from xes.sealing.wrap import Wrapped, public_hex, unwrap, wrap

BODY = b"<body>BP 80/50, call Dr. Ruiz</body>"


def test_a_sealed_field_opens_only_with_its_key_and_context() -> None:
    key = new_key()
    sealed = seal(key, BODY, b"chat/a@x b@x")
    assert BODY not in sealed and open_sealed(key, sealed, b"chat/a@x b@x") == BODY
    assert seal(key, BODY, b"ctx") != seal(key, BODY, b"ctx")  # a fresh nonce each time
    with pytest.raises(Unreadable):
        open_sealed(new_key(), sealed, b"chat/a@x b@x")
    with pytest.raises(Unreadable):
        open_sealed(key, sealed, b"chat/a@x c@x")  # moved to another conversation
    with pytest.raises(Unreadable):
        open_sealed(None, sealed, b"chat/a@x b@x")  # destroyed
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(Unreadable):
        open_sealed(key, tampered, b"chat/a@x b@x")


def test_a_wrapped_key_opens_only_for_its_node_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    try:
        node = store.node_key(20_000)
        data_key = new_key()
        copy = wrap(data_key, public_hex(node), b"k1")
        assert Wrapped.from_json(copy.to_json()) == copy
        assert unwrap(copy, node, b"k1") == data_key
        with pytest.raises(Unreadable):
            unwrap(copy, node, b"k2")  # the copy names another key id
        with pytest.raises(Unreadable):
            unwrap(copy, store.node_key(20_001), b"k1")
        assert store.node_key(20_000) is not None
        assert public_hex(store.node_key(20_000)) == public_hex(node)  # made once, kept
        assert store.node_key_for(copy.node_key) is not None
        # Rotation: once the old node key is gone, the copy in the journal opens for no one.
        assert store.destroy_node_keys_before(20_001) == 1
        assert store.node_key_for(copy.node_key) is None
    finally:
        store.close()


def test_expiry_destroys_a_range_of_data_keys_but_what_a_hold_keeps(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    store = KeyStore(path)
    ids = [
        KeyId("chat", "x", period, scope, "s1")
        for period in (100, 101, 102)
        for scope in ("a@x b@x", "a@x c@x")
    ]
    other = KeyId("groupchat", "conf.x", 100, "ward@conf.x", "s1")
    for key_id in [*ids, other]:
        store.put(key_id, new_key())
    held = "a@x b@x"
    destroyed = store.destroy_before("chat", "x", 102, keep=lambda k: k.scope == held)
    assert destroyed == 2  # periods 100 and 101 of a@x c@x
    left = [(k.period, k.scope) for k in store.ids("chat", "x")]
    assert left == [(100, held), (101, held), (102, held), (102, "a@x c@x")]
    assert store.get(other) is not None  # another category, untouched
    store.close()
    reopened = KeyStore(path)  # durable
    try:
        assert reopened.get(KeyId("chat", "x", 101, "a@x c@x", "s1")) is None
        assert reopened.get(KeyId("chat", "x", 101, held, "s1")) is not None
        assert reopened.destroy([KeyId("chat", "x", 101, held, "s1")]) == 1
    finally:
        reopened.close()


def test_key_ids_round_trip_and_sort_by_period() -> None:
    key_id = KeyId("chat", "x", 2**40, "a@x b@x", "n1.7")
    assert KeyId.decode(key_id.encode()) == key_id
    early, late = KeyId("chat", "x", 9, "z", "1"), KeyId("chat", "x", 10, "a", "1")
    assert early.encode() < late.encode()
