"""The fault campaign's short version (issue 20): a fixed seed and a random one, printed.

Each run is the real thing, only shorter: a 3-node cluster, XEP-0198 clients chatting one to
one and in a room, the seeded nemesis (kills, pauses, partitions, slow links, clock steps,
kills inside a snapshot, TCP cuts, slow consumers), then the checker over every client's
record and every node's journal (``tools/faults``). A failure prints the table and the command
that replays the run. The fixed seed forces one ``clock_step`` (a node's clock 595 s back) and
one ``snapshot_kill``; ``clock_step`` needs Debian's ``faketime`` (``tools/test.sh`` installs it).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from tools.faults.campaign import run_campaign

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

FIXED_SEED = 8
FIXED_REQUIRE = {"clock_step": 1, "snapshot_kill": 1}
DURATION = 40.0
CLIENTS = 8
SNAPSHOT_ENTRIES = 100
"""Fewer than the campaign's 300: 8 clients for 40 s write a few hundred entries."""


def _run(seed: int, out: Path, require: dict[str, int] | None = None) -> None:
    forced = ",".join(f"{k}={n}" for k, n in sorted((require or {}).items()))
    print(
        f"\nfault campaign seed {seed} (replay: python -m tools.faults.run --seed {seed} "
        f"--duration {DURATION:.0f} --clients {CLIENTS} --snapshot-entries {SNAPSHOT_ENTRIES}"
        + (f" --require {forced}" if forced else "")
        + ")"
    )
    result = run_campaign(
        seed, DURATION, CLIENTS, out=out, require=require, snapshot_entries=SNAPSHOT_ENTRIES
    )
    print(result.table())
    if not result.ok:
        # pytest keeps only its last few temporary directories, and other runs rotate them
        # away: the evidence goes where the campaign's own runs keep theirs.
        kept = Path("faults-out") / f"test-seed-{seed}"
        shutil.copytree(out, kept, dirs_exist_ok=True)
        out = kept.resolve()
    assert sum(result.faults.values()) > 0, "the nemesis applied nothing"
    assert result.report.figures["delivered"] > 0, "nothing was delivered"
    assert result.ok, f"seed {seed}:\n{result.table()}\n(records in {out})"


def test_fault_campaign_fixed_seed(tmp_path: Path) -> None:
    _run(FIXED_SEED, tmp_path / "out", FIXED_REQUIRE)


def test_fault_campaign_random_seed(tmp_path: Path) -> None:
    _run(random.randrange(1 << 31), tmp_path / "out")
