"""Servers under test for ``tools/bench/run.py``: xes (1 and 3 nodes), Prosody, ejabberd.

Each server gets its own temporary directory, generated configuration, data and logs, and runs as
a foreground process that the runner starts and stops itself (never as a system service), pinned
to the server CPU with ``taskset``. Every server listens for clients with STARTTLS on loopback,
uses the same self-signed certificate (EC P-256) and the same SCRAM iteration count (4096), has
its per-session rate limits raised out of the way, and keeps the modules that like-for-like needs
on: roster, offline storage, stream management, archive (XEP-0313), MUC (XEP-0045) and in-band
registration (used only to create the many accounts of the idle-connection workload).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
XES = ROOT / ".venv" / "bin" / "xes"
DOMAIN = "bench.test"
PASSWORD = "bench-pw"
SCRAM_ITERATIONS = 4096
CLK_TCK = os.sysconf("SC_CLK_TCK")

sys.path.insert(0, str(ROOT))
from tests.integration.server import free_port  # noqa: E402 - ports below the ephemeral range

# ------------------------------------------------------------------------------------ helpers


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def process_tree(roots: list[int]) -> list[int]:
    """``roots`` and all their descendants, from /proc."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = set(), [r for r in roots if r in parent]
    while frontier:
        pid = frontier.pop()
        if pid in tree:
            continue
        tree.add(pid)
        frontier += [c for c, p in parent.items() if p == pid]
    return sorted(tree)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (all their threads), from /proc/<pid>/stat."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def memory_kib(pids: list[int]) -> dict[str, int]:
    """Summed ``Rss`` and ``Pss`` (KiB) of ``pids`` from /proc/<pid>/smaps_rollup."""
    total = {"rss": 0, "pss": 0}
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                total[key.lower()] += int(rest.split()[0])
    return total


def raise_nofile(limit: int = 200_000) -> None:
    """Let this process and its children (servers, generator) open ``limit`` files."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= limit:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """One self-signed certificate for ``DOMAIN`` (xes's own generator: EC P-256)."""
    sys.path.insert(0, str(ROOT / "src"))
    from xes.tlsutil import ensure_self_signed

    cert, key = directory / "cert.pem", directory / "key.pem"
    ensure_self_signed(cert, key, DOMAIN)
    return cert, key


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


# ------------------------------------------------------------------------------------ servers


@dataclass
class Server:
    """Base: one server under test, started in ``root`` and pinned to ``cpu``."""

    root: Path
    cert: Path
    key: Path
    cpu: int | None = 0
    name: str = "server"
    label: str = "server"
    supports: frozenset[str] = frozenset({"logins", "messages", "muc", "idle", "archive"})
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    ws_ports: list[int] = field(default_factory=list)
    """HTTPS ports serving XMPP over WebSocket at /xmpp-websocket (``websocket`` workload)."""
    version: str = ""

    def start(self) -> None:
        raise NotImplementedError

    def add_users(self, users: list[str]) -> None:
        raise NotImplementedError

    def add_many(self, users: list[str]) -> None:
        """Accounts for the idle workload; default: like ``add_users``."""
        self.add_users(users)

    def pids(self) -> list[int]:
        return process_tree([p.pid for p in self.procs if p.poll() is None])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def memory(self) -> dict[str, int]:
        return memory_kib(self.pids())

    def spawn(self, argv: list[str], log: Path, **kwargs: object) -> subprocess.Popen[bytes]:
        out = open(log, "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            pinned(self.cpu, argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kwargs,  # type: ignore[arg-type]
        )
        self.procs.append(proc)
        return proc

    def wait_ports(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(accepts(p) for p in [*self.ports, *self.ws_ports]):
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.label} exited ({proc.returncode}); see {self.root}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.label}: ports {self.ports} not accepting; see {self.root}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the processes started; SIGKILL what is left of their tree after ``timeout``."""
        pids = self.pids()
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive(pids):
            for proc in self.procs:
                proc.poll()  # reap
            time.sleep(0.1)
        for pid in alive(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.procs.clear()


def alive(pids: list[int]) -> list[int]:
    """The ``pids`` still running (zombies count as gone)."""
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.append(pid)
    return left


@dataclass
class Xes(Server):
    """xes, ``nodes`` nodes on loopback (1: single node; 3: a Raft cluster)."""

    nodes: int = 1
    configs: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = "xes" if self.nodes == 1 else f"xes{self.nodes}"
        self.label = "xes" if self.nodes == 1 else f"xes {self.nodes} nodes"
        self.supports = frozenset({"logins", "messages", "muc", "idle", "archive", "websocket"})

    def write_configs(self) -> None:
        secret = secrets.token_urlsafe(24)
        raft = [free_port() for _ in range(self.nodes)]
        self.ports = [free_port() for _ in range(self.nodes)]
        self.ws_ports = [free_port() for _ in range(self.nodes)]
        for i in range(self.nodes):
            node = self.root / f"n{i + 1}"
            node.mkdir(parents=True, exist_ok=True)
            peers = ", ".join(f'"127.0.0.1:{p}"' for j, p in enumerate(raft) if j != i)
            cluster = f'raft = "127.0.0.1:{raft[i]}"\nnode_id = "n{i + 1}"\n'
            if self.nodes > 1:
                cluster += f'peers = [{peers}]\nsecret = "{secret}"\n'
            config = node / "xes.toml"
            config.write_text(
                f'domain = "{DOMAIN}"\ndata_dir = "{node / "data"}"\n'
                f'[listen]\nc2s = "127.0.0.1:{self.ports[i]}"\nc2s_tls = ""\n'
                f'http = ""\nhttps = "127.0.0.1:{self.ws_ports[i]}"\n'
                "[http]\nrequests_per_second = 1000000.0\nrequest_burst = 2000000\n"
                "max_connections_per_address = 200000\nmax_connections = 200000\n"
                f'[tls]\ncert = "{self.cert}"\nkey = "{self.key}"\n'
                f"[auth]\nscram_iterations = {SCRAM_ITERATIONS}\n"
                "[limits]\nstanzas_per_second = 1000000.0\nstanza_burst = 2000000\n"
                "max_connections = 200000\nidle_timeout = 7200.0\n"
                f"[cluster]\n{cluster}"
                # As for the peers: no per-occupant rate limit, no history on join.
                "[muc]\nmessages_per_second = 1000000.0\nmessage_burst = 2000000\n"
                "joins_per_second = 100000.0\njoin_burst = 200000\ndefault_history_length = 0\n"
                '[log]\nlevel = "warning"\nformat = "json"\n'
            )
            self.configs.append(config)

    def start(self) -> None:
        self.write_configs()
        for i, config in enumerate(self.configs):
            self.spawn([str(XES), "serve", "--config", str(config)], self.root / f"n{i + 1}.log")
        self.wait_ports()
        out = subprocess.run(
            [sys.executable, "-c", "import importlib.metadata as m; print(m.version('xes'))"],
            capture_output=True,
            text=True,
            check=False,
        )
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
        self.version = f"{out.stdout.strip()} ({commit.stdout.strip()})"

    def add_users(self, users: list[str]) -> None:
        """``xes user add`` for each, in a few worker processes (through node 1's log)."""
        workers = min(4, max(1, len(users) // 50))
        procs = []
        for w in range(workers):
            chunk = users[w::workers]
            proc = subprocess.Popen(
                [sys.executable, __file__, "--xes-add-users", str(self.configs[0])],
                stdin=subprocess.PIPE,
                text=True,
            )
            assert proc.stdin is not None
            proc.stdin.write("\n".join(chunk) + "\n")
            proc.stdin.close()
            procs.append(proc)
        for proc in procs:
            if proc.wait(1800) != 0:
                raise RuntimeError("xes user add failed")


def xes_add_users_main(config: str) -> int:
    """Worker: ``xes user add NAME@DOMAIN --password PASSWORD`` for every name on stdin.

    The same code path as the command line, run in one process so that 5,000 accounts do not
    cost 5,000 interpreter start-ups; one LMDB environment per process, hence processes, not
    threads.
    """
    import io

    from xes.cli import main

    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            main(["user", "add", f"{name}@{DOMAIN}", "--password", PASSWORD, "--config", config])
    return 0


@dataclass
class Prosody(Server):
    """Prosody from Debian (``prosody -F`` with a generated config), internal storage."""

    def __post_init__(self) -> None:
        self.name = self.label = "prosody"
        self.supports = frozenset({"logins", "messages", "muc", "idle", "archive", "websocket"})

    @property
    def config(self) -> Path:
        return self.root / "prosody.cfg.lua"

    def write_config(self) -> None:
        self.ports = [free_port()]
        self.ws_ports = [free_port()]
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"""-- generated by tools/bench/servers.py
run_as_root = true
prosody_user = "root"
pidfile = "{self.root}/prosody.pid"
certificates = "{self.root}"
data_path = "{data}"
log = {{ warn = "{self.root}/prosody.log" }}
network_backend = "epoll"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.ports[0]} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ {self.ws_ports[0]} }}
https_interfaces = {{ "127.0.0.1" }}
https_ssl = {{ certificate = "{self.cert}"; key = "{self.key}"; }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "register"; "offline";
    "mam"; "smacks"; "websocket";
}}
modules_disabled = {{ "s2s" }}
c2s_require_encryption = true
allow_registration = true
authentication = "internal_hashed"
default_iteration_count = {SCRAM_ITERATIONS}
storage = "internal"
archive_expires_after = "never"
default_archive_policy = true
max_archive_query_results = 100
storage_archive_item_limit = 10000000
c2s_timeout = 7200
ssl = {{ certificate = "{self.cert}"; key = "{self.key}"; }}

VirtualHost "{DOMAIN}"

Component "conference.{DOMAIN}" "muc"
    muc_room_locking = false
    restrict_room_creation = false
    muc_room_default_history_length = 0
"""
        )

    def start(self) -> None:
        self.write_config()
        self.spawn(["prosody", "-F", "--config", str(self.config)], self.root / "console.log")
        self.wait_ports()
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "prosody"], capture_output=True, text=True
        )
        self.version = out.stdout.strip()

    def add_users(self, users: list[str]) -> None:
        for user in users:
            subprocess.run(
                ["prosodyctl", "--config", str(self.config), "register", user, DOMAIN, PASSWORD],
                check=True,
                capture_output=True,
                timeout=60,
            )


@dataclass
class Ejabberd(Server):
    """ejabberd from Debian (``ejabberdctl foreground`` with a generated config), Mnesia."""

    node: str = ""
    mam_db: str = "sqlite"
    """Archive backend: ``sqlite`` (what ejabberd's start-up warning recommends for small
    servers) or ``mnesia`` (the default, limited to 2 GB; slows down as the archive grows)."""

    def __post_init__(self) -> None:
        self.name = self.label = "ejabberd"

    def argv(self, *args: str) -> list[str]:
        """ejabberdctl with this server's directories, run as the ``ejabberd`` user.

        Run as that user directly (``setpriv``), ejabberdctl skips its ``su``, whose PAM limits
        would cut the open-file limit back to 1024 and stop the idle workload near 1,000
        connections.
        """
        d = self.root
        return [
            "setpriv", "--reuid", "ejabberd", "--regid", "ejabberd", "--init-groups",
            "env", "HOME=/var/lib/ejabberd",
            "ejabberdctl",
            "--config-dir", str(d), "--config", str(d / "ejabberd.yml"),
            "--ctl-config", str(d / "ejabberdctl.cfg"), "--spool", str(d / "spool"),
            "--logs", str(d / "logs"), "--node", self.node, *args,
        ]  # fmt: skip

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
        )

    def write_config(self) -> None:
        d = self.root
        self.ports = [free_port()]
        self.node = f"ejbench{os.getpid()}@localhost"
        for sub in ("spool", "logs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        pem = d / "ejabberd.pem"
        pem.write_bytes(self.cert.read_bytes() + self.key.read_bytes())
        (d / "inetrc").write_text(
            '{file, resolv, "/etc/resolv.conf"}.\n{lookup, [file, native]}.\n'
        )
        (d / "ejabberdctl.cfg").write_text(
            f'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"\nERL_DIST_PORT={free_port()}\n'
            f"EJABBERD_PID_PATH={d}/ejabberd.pid\nERL_MAX_PORTS=250000\n"
        )
        sql = ""
        if self.mam_db == "sqlite":
            import sqlite3

            db = d / "ejabberd.db"
            schema = Path("/usr/share/ejabberd/sql/lite.sql").read_text()
            with contextlib.closing(sqlite3.connect(db)) as conn:
                conn.executescript(schema)
            sql = f'sql_type: sqlite\nsql_database: "{db}"\n'
        (d / "ejabberd.yml").write_text(
            sql
            + f"""# generated by tools/bench/servers.py
hosts:
  - "{DOMAIN}"
loglevel: warning
log_rotate_count: 0
certfiles:
  - "{pem}"
listen:
  -
    port: {self.ports[0]}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    backlog: 4096
    shaper: none
    access: c2s
    starttls_required: true
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha
registration_timeout: infinity
acl:
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  c2s:
    allow: all
  register:
    allow: all
  muc_create:
    allow: all
shaper_rules:
  c2s_shaper: none
  max_user_offline_messages: 100000
shaper: {{}}
max_fsm_queue: 100000
modules:
  mod_disco: {{}}
  mod_mam:
    db_type: {"sql" if self.mam_db == "sqlite" else "mnesia"}
    default: always
    assume_mam_usage: true
  mod_muc:
    access: all
    access_create: muc_create
    access_persistent: all
    access_admin: none
    max_users: 10000
    max_user_conferences: 1000
    min_message_interval: 0
    min_presence_interval: 0
    history_size: 0
    default_room_options:
      mam: false
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {{}}
  mod_register:
    ip_access: all
    access: register
    welcome_message:
      subject: ""
      body: ""
  mod_roster: {{}}
  mod_stream_mgmt: {{}}
"""
        )
        shutil.chown(d, "ejabberd", "ejabberd")
        for path in d.rglob("*"):
            shutil.chown(path, "ejabberd", "ejabberd")
        os.chmod(d, 0o755)
        os.chmod(d.parent, 0o755)

    def start(self) -> None:
        self.write_config()
        d = self.root
        self.spawn(self.argv("foreground"), d / "console.log", cwd=d)
        self.wait_ports(180)
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "ejabberd"], capture_output=True, text=True
        )
        self.version = f"{out.stdout.strip()} (archive: {self.mam_db})"

    def add_users(self, users: list[str]) -> None:
        for user in users:
            result = self.ctl("register", user, DOMAIN, PASSWORD)
            if result.returncode != 0 and "already" not in result.stdout + result.stderr:
                raise RuntimeError(f"ejabberdctl register {user}: {result.stdout}{result.stderr}")

    def stop(self, timeout: float = 30.0) -> None:
        if any(p.poll() is None for p in self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.ctl("stop", timeout=timeout)
        super().stop(timeout)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--xes-add-users":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(xes_add_users_main(sys.argv[2]))
