"""Fixtures that run the real server process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.server import XesServer

pytestmark = pytest.mark.integration


@contextmanager
def running_server(root: Path, extra: str = "") -> Iterator[XesServer]:
    """A started server at ``root`` with ``extra`` configuration lines; stopped afterwards."""
    srv = XesServer(root, extra=extra)
    srv.write_config()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[XesServer]:
    srv = XesServer(tmp_path / "node")
    srv.write_config()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XesServer]:
    """One server for a whole module (tests use distinct users)."""
    srv = XesServer(tmp_path_factory.mktemp("shared") / "node")
    srv.write_config()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def run(coro):  # type: ignore[no-untyped-def]
    """Run a slixmpp scenario on a fresh event loop."""
    return asyncio.run(coro)
