"""Fixtures for the Raft adapter tests (helpers live in raftkit.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.eventlog.raftkit import Cluster, Network
from xes.eventlog.raft import _Transport


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    """Partitions and delays between the nodes of `cluster` (see raftkit.Network)."""
    net = Network(_Transport)
    net.patch(monkeypatch, _Transport)
    return net
