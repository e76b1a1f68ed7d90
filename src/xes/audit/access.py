"""Who read the audit trail (issue 17, item 6): ``audit.accessed`` records and their queue.

``xes audit verify``, ``export`` and the views (``conversation``, ``room``, ``user``) record who
ran them, through the running node's log like any other CLI change. With the node stopped they
do not start a Raft member of their own (that would write to the very data directory being
examined, maybe a seized copy): the record is appended to ``data_dir/audit/access-queue.jsonl``
under a lock, and the node proposes it when it next runs
(:func:`xes.audit.checkpointer.drain_access_queue`). Anyone able to read the LMDB files can read
the history without any command; the record is about the audit commands, not a barrier.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from xes.config import Config
from xes.events.catalog import AuditAccessed


def queue_path(config: Config) -> Path:
    return config.data_dir / "audit" / "access-queue.jsonl"


def operator() -> tuple[str, int, str]:
    """Who runs this command: OS user name, numeric user id, host name (recorded in audited
    operator events: accesses, legal holds)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return user, os.getuid(), socket.gethostname()


def accessed(command: str, args: dict[str, Any], result: str = "") -> AuditAccessed:
    """The record of one run of ``xes audit <command>`` by the current OS user."""
    user, uid, host = operator()
    return AuditAccessed(
        command=command,
        user=user,
        uid=uid,
        host=host,
        args={k: v for k, v in sorted(args.items()) if v not in (None, "", [], ())},
        result=result,
        ran_at=int(time.time() * 1000),
    )


@contextmanager
def locked_queue(config: Config, *, create: bool) -> Iterator[IO[str] | None]:
    """The queue file, opened for reading and writing under an exclusive lock (None if absent
    and not ``create``)."""
    path = queue_path(config)
    if not path.exists():
        if not create:
            yield None
            return
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield fh


def enqueue(config: Config, event: AuditAccessed) -> None:
    """Keep ``event`` for the node to propose when it runs again."""
    with locked_queue(config, create=True) as fh:
        assert fh is not None
        fh.seek(0, os.SEEK_END)
        fh.write(json.dumps(asdict(event), sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
