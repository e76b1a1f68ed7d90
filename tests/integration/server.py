"""Start and stop the real ``xes serve`` process for integration tests."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK_HOSTS = ("127.0.0.1", "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.99")
"""Every loopback address a test binds: the default, the WAN sites of `XesCluster`, an outsider."""


def free_port() -> int:
    """A port that is free now, below the kernel's ephemeral range, never handed out before.

    Port 0 hands out ports from the ephemeral range, which any outgoing connection (clients,
    Raft, the WAN proxy) may take before the server binds it; below that range only listeners
    compete, and each candidate is checked on every loopback address a test uses. Candidates
    are walked in a shuffled order over the whole range, so the search only fails when every
    port has really been used.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = [p for p in range(max(1024, low - 12000), low) if p not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        try:
            for host in LOOPBACK_HOSTS:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port found: {len(_handed_out)} handed out in this run")


_handed_out: set[int] = set()


def wait_port(
    port: int, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} not ready")


@dataclass
class XesServer:
    root: Path
    domain: str = "xes.test"
    extra: str = ""
    c2s: int = field(default_factory=free_port)
    c2s_tls: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    https: int = field(default_factory=free_port)
    raft: int = field(default_factory=free_port)
    raft_host: str = "127.0.0.1"
    component: int | None = None
    """Port of the XEP-0114 component listener (``[listen] component``), when set."""
    s2s: int | None = None
    """Port of the server-to-server listener (``[listen] s2s``), when set."""
    s2s_tls: int | None = None
    """Port of the direct-TLS server-to-server listener (``[listen] s2s_tls``), when set."""
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None
    """Environment of the server and its CLI (None: ours); ``test_rolling_upgrade`` points
    ``PYTHONPATH`` at an older release's tree."""

    @property
    def config(self) -> Path:
        return self.root / "xes.toml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'domain = "{self.domain}"\n'
            f'data_dir = "{self.data_dir}"\n'
            "[listen]\n"
            f'c2s = "127.0.0.1:{self.c2s}"\n'
            f'c2s_tls = "127.0.0.1:{self.c2s_tls}"\n'
            f'http = "127.0.0.1:{self.http}"\n'
            f'https = "127.0.0.1:{self.https}"\n'
            + (f'component = "127.0.0.1:{self.component}"\n' if self.component else "")
            + (f's2s = "127.0.0.1:{self.s2s}"\n' if self.s2s else "")
            + (f's2s_tls = "127.0.0.1:{self.s2s_tls}"\n' if self.s2s_tls else "")
            + "[cluster]\n"
            f'raft = "{self.raft_host}:{self.raft}"\n' + self.extra
        )

    @property
    def raft_addr(self) -> str:
        return f"{self.raft_host}:{self.raft}"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting (cluster nodes wait for each other's quorum)."""
        if not self.config.exists():
            self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xes", "serve", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.env,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        wait_port(self.c2s, timeout=timeout, proc=self.proc)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def xes(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "xes", *args, "--config", str(self.config)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"xes {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result

    def add_user(self, user: str, password: str) -> None:
        self.xes("user", "add", f"{user}@{self.domain}", "--password", password)

    def stop(
        self, sig: int = signal.SIGTERM, timeout: float = 30.0, *, group: bool = False
    ) -> int | None:
        """Signal the server (``group``: every process of it at once, as systemd does)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if sig == signal.SIGKILL or group:
                # kill -9 of the whole server: both of its processes die at once.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        code = self.proc.returncode
        # Wait until the log process (same process group) is gone too.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.proc = None
        return code

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
