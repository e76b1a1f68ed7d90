"""A node's wall clock, stepped at will: libfaketime preloaded into both of its processes.

Why libfaketime: it steps what ``time.time()``, ``datetime.now()`` and OpenSSL see (the
``CLOCK_REALTIME`` family) without root and without touching the machine's clock, and
``FAKETIME_DONT_FAKE_MONOTONIC=1`` leaves ``CLOCK_MONOTONIC`` alone, which is what NTP stepping
a badly set clock does. The offset lives in a file (``FAKETIME_TIMESTAMP_FILE``) read on every
call (``FAKETIME_NO_CACHE=1``), so the nemesis steps a running node by rewriting it. The log
process is started with ``multiprocessing``'s spawn, which inherits the environment, so both
processes of a node share one clock.

libfaketime 0.9.10 (Debian 12's) breaks ``time.sleep`` under ``FAKETIME_DONT_FAKE_MONOTONIC``
(``clock_nanosleep`` on the monotonic clock gets a mangled deadline and fails with EINVAL:
wolfcw/libfaketime issue 426), and xes and pysyncobj sleep; ``clock_shim.c``, compiled here
and preloaded first, sends monotonic sleeps straight to the kernel.

The multi-threaded build (``libfaketimeMT``) is preferred: xes runs threads (the Raft thread,
the snapshot thread, anyio workers) and the plain build caches its parsed offset in unguarded
statics (libfaketime's README, "pthreads").
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

LIBRARIES = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
)
"""Where Debian's ``libfaketime`` package puts the library (the first found is used)."""


def library() -> str:
    """The libfaketime to preload; a clear error when the package is missing."""
    for path in LIBRARIES:
        if Path(path).exists():
            return path
    raise RuntimeError(
        "clock_step needs libfaketime: apt-get install -y faketime (or leave clock_step out "
        "with --only)"
    )


SHIM_SOURCE = Path(__file__).with_name("clock_shim.c")


def build_shim(out_dir: Path) -> Path:
    """Compile ``clock_shim.c`` (needs a C compiler, as the Debian CI image has)."""
    out = out_dir / "clock_shim.so"
    cmd = ["cc", "-O2", "-shared", "-fPIC", "-o", str(out), str(SHIM_SOURCE), "-ldl"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"clock_step: cannot build {SHIM_SOURCE.name}: {done.stderr[-300:]}")
    return out


@dataclass(frozen=True)
class Clock:
    """One node's offset file; :meth:`env` is the environment its processes start with."""

    path: Path
    shim: Path

    def set(self, seconds: float) -> None:
        """Step the node's wall clock to ``seconds`` from the real one (0: the real clock).

        Written to a new file and renamed over the old one, so a process reading it at that
        moment sees the old offset or the new one, never an empty file."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{seconds:+.3f}s\n")
        os.replace(tmp, self.path)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        preload = env.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = f"{self.shim}:{library()}" + (f":{preload}" if preload else "")
        env["FAKETIME_TIMESTAMP_FILE"] = str(self.path)
        env["FAKETIME_NO_CACHE"] = "1"
        env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        # Processes the node starts (none today) would not inherit a fake clock by accident.
        env.pop("FAKETIME", None)
        return env


def install(root: Path, count: int) -> list[Clock]:
    """One clock per node under ``root``, each at offset 0 (the node starts on real time)."""
    root.mkdir(parents=True, exist_ok=True)
    library()  # fail before anything starts when libfaketime is missing
    shim = build_shim(root)
    clocks = [Clock(root / f"clock-n{i + 1}.rc", shim) for i in range(count)]
    for c in clocks:
        c.set(0)
    return clocks
