"""A nearly full disk while running (issue 20): the node refuses client writes with a clear
stanza error instead of failing, binds no new session, and takes writes again when space
returns; nothing committed is lost (the replayed projections equal the live ones).

The data directory is a small tmpfs this test mounts (root; CI runs as root) and unmounts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.clients import Client, next_matching
from tests.integration.conftest import run
from tests.integration.server import XesServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SIZE_MB = 96
MIN_FREE_MB = 24


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free_mb(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // (1024 * 1024)


def test_full_disk_refuses_writes_and_recovers(small_disk: Path, tmp_path: Path) -> None:
    srv = XesServer(tmp_path / "node", extra=f"[limits]\nmin_free_disk_mb = {MIN_FREE_MB}\n")
    srv.write_config()
    # data_dir on the small disk; the config, log and certificate stay outside.
    text = srv.config.read_text().replace(str(srv.data_dir), str(small_disk / "data"))
    srv.config.write_text(text)
    srv.start()
    filler = small_disk / "filler"
    try:
        srv.add_user("dfa", "pw-dfa")
        srv.add_user("dfb", "pw-dfb")

        async def scenario() -> None:
            a = Client(f"dfa@{srv.domain}/pc", "pw-dfa")
            b = Client(f"dfb@{srv.domain}/pc", "pw-dfb")
            await a.login(srv.c2s)
            await b.login(srv.c2s)
            a.send_message(mto=b.boundjid.bare, mbody="before", mtype="chat")
            await next_matching(b.messages, lambda m: m["body"] == "before")
            # Fill the disk to below the margin.
            spare = free_mb(small_disk) - MIN_FREE_MB + 4
            with open(filler, "wb") as f:
                f.write(b"\0" * (spare * 1024 * 1024))
            assert free_mb(small_disk) < MIN_FREE_MB
            await asyncio.sleep(3.0)  # the watch runs every 2 s
            a.send_message(mto=b.boundjid.bare, mbody="during", mtype="chat")
            err = await next_matching(a.messages, lambda m: m["type"] == "error")
            assert err["error"]["condition"] == "resource-constraint"
            assert "disk" in err["error"]["text"]
            # A new session is not bound either.
            c = Client(f"dfb@{srv.domain}/tablet", "pw-dfb")
            with pytest.raises(AssertionError):
                await c.login(srv.c2s, timeout=6)
            c.disconnect()
            # Space comes back: writes are taken again.
            filler.unlink()
            await asyncio.sleep(3.0)
            a.send_message(mto=b.boundjid.bare, mbody="after", mtype="chat")
            await next_matching(b.messages, lambda m: m["body"] == "after")
            await a.logout()
            await b.logout()

        run(scenario())
        assert srv.running, "the node died on a full disk"
        log = srv.log_path.read_text()
        assert '"disk_low"' in log and "min_free_disk_mb" in log and '"disk_ok"' in log
        time.sleep(0.5)
        out = srv.xes("replay").stdout
        assert "OK: digests are equal" in out, out
        journal = srv.xes("events", "dump").stdout
        assert "before" in journal and "after" in journal and "during" not in journal
    finally:
        if filler.exists():
            filler.unlink()
        srv.stop()
