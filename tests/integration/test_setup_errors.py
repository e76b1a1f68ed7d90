"""A misconfigured ``xes serve`` fails at once, with one line naming the problem and the key to
change (issue 20): ports in use (client and the internal Raft port of a lone node), an unusable
data directory, an unreadable cluster secret, a certificate that does not load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.server import XesServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xes", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def write(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def listen(c2s: int, raft: int) -> str:
    return (
        f'[listen]\nc2s = "127.0.0.1:{c2s}"\nc2s_tls = ""\nhttp = ""\nhttps = ""\n'
        f'[cluster]\nraft = "127.0.0.1:{raft}"\n'
    )


def test_ports_in_use_are_named(server: XesServer, tmp_path: Path) -> None:
    data = tmp_path / "second"
    # A second lone node on the same machine: its Raft port is taken (it used to start, never
    # open its client port and log "not committed" for ever).
    same_raft = write(
        tmp_path / "a.toml", f'data_dir = "{data}"\n' + listen(free_port(), server.raft)
    )
    result = serve(same_raft)
    assert result.returncode == 2, result
    assert f"127.0.0.1:{server.raft} ([cluster] raft) is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    same_c2s = write(
        tmp_path / "b.toml", f'data_dir = "{data}"\n' + listen(server.c2s, free_port())
    )
    result = serve(same_c2s)
    assert result.returncode == 2, result
    assert f"127.0.0.1:{server.c2s} ([listen] c2s) is already in use" in result.stderr
    assert server.running  # the first server is untouched


def test_bad_paths_and_secrets_are_named(tmp_path: Path) -> None:
    ports = listen(free_port(), free_port())
    not_a_dir = write(tmp_path / "file", "x")
    result = serve(write(tmp_path / "a.toml", f'data_dir = "{not_a_dir}/data"\n' + ports))
    assert result.returncode == 2 and "data_dir" in result.stderr, result
    assert "set data_dir" in result.stderr

    secret = (
        f'data_dir = "{tmp_path / "d"}"\n' + ports + 'peers = ["127.0.0.1:1"]\n'
        f'secret_file = "{tmp_path / "missing.secret"}"\n'
    )
    result = serve(write(tmp_path / "b.toml", secret))
    assert result.returncode == 2, result
    assert "[cluster] secret_file" in result.stderr and "cannot be read" in result.stderr

    cert, key = write(tmp_path / "bad.crt", "not a certificate"), write(tmp_path / "k", "no")
    tls = f'data_dir = "{tmp_path / "t"}"\n[tls]\ncert = "{cert}"\nkey = "{key}"\n' + ports
    result = serve(write(tmp_path / "c.toml", tls))
    assert result.returncode == 2, result
    assert "cannot be loaded" in result.stderr and "[tls] cert" in result.stderr


def test_component_listener_errors_are_named(server: XesServer, tmp_path: Path) -> None:
    """XEP-0114 (ADR 0018): a port in use, plain TCP off loopback, a domain of the server's
    own, an unreadable secret file, each in one line naming the key."""

    def body(listen_extra: str, components: str) -> str:
        return (
            f'data_dir = "{tmp_path / "d"}"\n[listen]\nc2s = "127.0.0.1:{free_port()}"\n'
            f'c2s_tls = ""\nhttp = ""\nhttps = ""\n{listen_extra}'
            f'[cluster]\nraft = "127.0.0.1:{free_port()}"\n{components}'
        )

    push = '[components."push.localhost"]\nsecret = "s"\n'
    in_use = serve(
        write(tmp_path / "a.toml", body(f'component = "127.0.0.1:{server.c2s}"\n', push))
    )
    assert in_use.returncode == 2, in_use
    assert f"127.0.0.1:{server.c2s} ([listen] component) is already in use" in in_use.stderr
    assert "Traceback" not in in_use.stderr

    open_addr = serve(write(tmp_path / "b.toml", body('component = "0.0.0.0:5347"\n', push)))
    assert open_addr.returncode == 2, open_addr
    assert "[listen] component_tls" in open_addr.stderr
    assert "[components_policy] allow_plaintext" in open_addr.stderr

    own = serve(write(tmp_path / "c.toml", body("", '[components."localhost"]\nsecret = "s"\n')))
    assert own.returncode == 2 and '[components."localhost"]' in own.stderr, own

    missing = tmp_path / "missing.secret"
    unreadable = f'[components."push.localhost"]\nsecret_file = "{missing}"\n'
    result = serve(
        write(tmp_path / "d.toml", body(f'component = "127.0.0.1:{free_port()}"\n', unreadable))
    )
    assert result.returncode == 2, result
    assert '[components."push.localhost"] secret_file' in result.stderr


def test_a_dead_log_process_ends_the_node_with_one_line(server: XesServer) -> None:
    """The log process killed (the OOM killer, say): the node exits with status 3 and says why
    in one log line, not with the traceback of the task group that carried the exit."""
    import os
    import signal
    import time

    assert server.proc is not None
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
    log_pids = [int(p) for p in children.split()]
    assert log_pids, "the node has no log process"
    for pid in log_pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while server.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.proc.returncode == 3
    text = server.log_text()
    assert text.count("log_process_exited") == 1
    assert "Traceback" not in text and "ExceptionGroup" not in text, text[-2000:]
