"""A node's key store: its node keys and the data keys it unwrapped (ADR 0024).

A separate LMDB environment, by design outside the data directory: a Raft snapshot or a backup
of ``data_dir`` carries ciphertext and wrapped keys only, and destroying a data key here (every
node does so in apply, at the same log index) makes what it sealed unreadable for good. The
effects of a log entry on the key store are idempotent and written (synced) before the entry's
projection transaction commits, so a crash between the two re-applies the entry harmlessly.

Data key ids sort by category, domain, then period, so expiry deletes a range.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from xes.sealing.wrap import public_hex

NODE_KEYS = b"node_keys"
DATA_KEYS = b"data_keys"
MAP_SIZE = 1 << 30


@dataclass(frozen=True, slots=True)
class KeyId:
    """What a data key seals: a category's fields in one domain, for one scope (a conversation,
    a room, an account) and one period (days since the epoch, say)."""

    category: str
    domain: str
    period: int
    scope: str
    serial: str
    """Tells apart two keys made for the same scope and period (two nodes racing)."""

    def encode(self) -> bytes:
        head = f"{self.category}\x00{self.domain}\x00".encode()
        return head + struct.pack(">Q", self.period) + f"{self.scope}\x00{self.serial}".encode()

    @classmethod
    def decode(cls, raw: bytes) -> KeyId:
        category, domain, rest = raw.split(b"\x00", 2)
        (period,) = struct.unpack(">Q", rest[:8])
        scope, serial = rest[8:].decode().rsplit("\x00", 1)
        return cls(category.decode(), domain.decode(), period, scope, serial)


class KeyStore:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=4, sync=True, metasync=True)
        self._node = self.env.open_db(NODE_KEYS)
        self._data = self.env.open_db(DATA_KEYS)

    def close(self) -> None:
        self.env.close()

    # -- node keys -------------------------------------------------------------------------

    def node_key(self, epoch: int) -> X25519PrivateKey:
        """This node's key for ``epoch``, made on first use."""
        k = struct.pack(">Q", epoch)
        with self.env.begin(write=True, db=self._node) as txn:
            raw = txn.get(k)
            if raw is None:
                key = X25519PrivateKey.generate()
                raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
                txn.put(k, raw)
        return X25519PrivateKey.from_private_bytes(raw)

    def node_key_for(self, public: str) -> X25519PrivateKey | None:
        """The private node key whose public half is ``public`` (hex), if still held."""
        with self.env.begin(db=self._node) as txn:
            for _, raw in txn.cursor():
                key = X25519PrivateKey.from_private_bytes(raw)
                if public_hex(key) == public:
                    return key
        return None

    def destroy_node_keys_before(self, epoch: int) -> int:
        """Forget node keys older than ``epoch``: their wrapped copies become unreadable."""
        with self.env.begin(write=True, db=self._node) as txn:
            old = [k for k, _ in txn.cursor() if struct.unpack(">Q", k)[0] < epoch]
            for k in old:
                txn.delete(k)
        return len(old)

    # -- data keys -------------------------------------------------------------------------

    def put(self, key_id: KeyId, data_key: bytes) -> None:
        with self.env.begin(write=True, db=self._data) as txn:
            txn.put(key_id.encode(), data_key, overwrite=False)

    def get(self, key_id: KeyId) -> bytes | None:
        with self.env.begin(db=self._data) as txn:
            raw = txn.get(key_id.encode())
        return None if raw is None else bytes(raw)

    def destroy(self, key_ids: list[KeyId]) -> int:
        with self.env.begin(write=True, db=self._data) as txn:
            return sum(bool(txn.delete(k.encode())) for k in key_ids)

    def destroy_before(
        self, category: str, domain: str, period: int, keep: Callable[[KeyId], bool]
    ) -> int:
        """Destroy ``category``'s keys of ``domain`` for periods before ``period``, except those
        ``keep`` says a legal hold still needs. Returns how many were destroyed."""
        prefix = f"{category}\x00{domain}\x00".encode()
        with self.env.begin(write=True, db=self._data) as txn:
            doomed = [
                raw
                for raw in _keys_from(txn, prefix)
                if KeyId.decode(raw).period < period and not keep(KeyId.decode(raw))
            ]
            for raw in doomed:
                txn.delete(raw)
        return len(doomed)

    def ids(self, category: str, domain: str) -> list[KeyId]:
        prefix = f"{category}\x00{domain}\x00".encode()
        with self.env.begin(db=self._data) as txn:
            return [KeyId.decode(raw) for raw in _keys_from(txn, prefix)]


def _keys_from(txn: lmdb.Transaction, prefix: bytes) -> Iterator[bytes]:
    cur = txn.cursor()
    if not cur.set_range(prefix):
        return
    for k in cur.iternext(keys=True, values=False):
        if not k.startswith(prefix):
            return
        yield bytes(k)
