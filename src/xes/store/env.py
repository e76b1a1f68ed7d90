"""The LMDB environment shared by the projector (writer) and the XMPP process (readers).

One environment per node holds the permanent event store (``journal.*``) and every projection's
sub-databases. Only the projector in the log process writes; the XMPP process opens the same
environment and uses read transactions only (LMDB is multi-process safe). Sub-database names are
``<owner>.<table>``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import lmdb

DEFAULT_MAP_SIZE = 64 * 1024**3
"""Address space reserved for the database file (sparse; grows on disk as needed)."""
MAX_DBS = 128
"""Handles one process may open (not stored in the file: an older build opens its own)."""

U64 = struct.Struct(">Q")


class StorageFailed(Exception):
    """This node's disk refused a write of a committed entry (full, I/O error, map full).

    Unlike a bad entry, which every node refuses alike, this is local: skipping or rejecting the
    entry here would leave this node without it while the others have it, and a snapshot taken
    here would carry the hole to others. The node must stop before the entry instead, and apply
    it when it starts again with space.
    """

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(f"entry {index}: {error!r}")
        self.index = index


_ENTRY_ERRORS = (lmdb.BadValsizeError, lmdb.KeyExistsError, lmdb.NotFoundError)
"""LMDB errors the data itself causes: every node meets them alike, so they refuse the entry."""


def is_storage_error(exc: BaseException) -> bool:
    """Errors of this node's environment, not of the entry: LMDB failing a write or commit
    (disk full, I/O error, map full, a corrupted file) or the operating system."""
    if isinstance(exc, _ENTRY_ERRORS):
        return False
    return isinstance(exc, lmdb.Error | OSError | MemoryError)


def u64(n: int) -> bytes:
    """Fixed-width big-endian key, so LMDB's byte order is numeric order."""
    return U64.pack(n)


def from_u64(b: bytes) -> int:
    return int(U64.unpack(b)[0])


@dataclass
class Store:
    """An open environment plus handles to its named sub-databases."""

    env: lmdb.Environment
    path: Path
    dbs: dict[str, lmdb._Database]

    def db(self, name: str) -> lmdb._Database:
        handle = self.dbs.get(name)
        if handle is None:
            raise KeyError(f"sub-database {name!r} was not opened with this store")
        return handle

    def close(self) -> None:
        self.env.close()


def open_store(
    path: Path,
    names: list[str],
    *,
    writer: bool,
    map_size: int = DEFAULT_MAP_SIZE,
    durable: bool = True,
) -> Store:
    """Open (and as writer, create) the environment at ``path`` with sub-databases ``names``.

    The writer syncs every commit's data (``sync=True``) but not its meta page
    (``metasync=False``: LMDB stays consistent, and the meta page is synced by the next commit).
    A power loss can therefore undo the last transaction only; its Raft entry is still in the
    fsynced Raft journal, which drops entries only once a dump holding them is on disk, and is
    applied again at start (ADR 0003). That saves one of the two fsyncs per entry.
    """
    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(
        str(path),
        map_size=map_size,
        max_dbs=MAX_DBS,
        sync=durable,
        metasync=False,
        readahead=False,
        max_readers=1024,
        lock=True,
    )
    # A reader killed with -9 leaves a stale slot that pins old pages; clear them at start.
    env.reader_check()
    dbs: dict[str, lmdb._Database] = {}
    # Handles are opened up front, outside any transaction the caller will use: in LMDB a handle
    # opened inside one transaction is unusable in transactions that began before it, and one
    # opened in a read transaction does not outlive it.
    if writer:
        with env.begin(write=True) as txn:
            for name in names:
                dbs[name] = env.open_db(name.encode(), txn=txn, create=True)
    else:
        for name in names:
            dbs[name] = env.open_db(name.encode(), create=False)
    return Store(env=env, path=path, dbs=dbs)
