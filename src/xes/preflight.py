"""Checks ``xes serve`` makes before it starts anything, so a misconfiguration fails at once.

Without them a second server on the same machine started, could not bind the Raft port (which
pysyncobj retries silently), never opened its client port and logged ``not committed`` for
ever; a client port in use ended in a raw ``OSError`` traceback. Each check raises
:class:`~xes.config.ConfigError` with one line that names what is wrong and the key to change
(``xes`` prints it and exits with status 2). Binding a port here and releasing it leaves a
moment for another process to take it; the listeners report that case the same way.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path

from xes.config import Config, ConfigError


def check(config: Config) -> None:
    """Every check, in the order an operator would fix them."""
    check_data_dir(config.data_dir)
    check_secret(config)
    check_component_secrets(config)
    check_tls(config)
    check_admin(config)
    for key, addr in listen_addresses(config):
        check_port(addr, key)


def listen_addresses(config: Config) -> list[tuple[str, str]]:
    """``(config key, host:port)`` of every TCP port the node listens on."""
    out = []
    if config.listen.c2s:
        out.append(("[listen] c2s", config.listen.c2s))
    if config.listen.c2s_tls:
        out.append(("[listen] c2s_tls", config.listen.c2s_tls))
    if config.listen.http:
        out.append(("[listen] http", config.listen.http))
    if config.listen.https:
        out.append(("[listen] https", config.listen.https))
    if config.component_listen:
        out.append(("[listen] component", config.component_listen))
    raft_key = "[cluster] raft_bind" if config.cluster.raft_bind else "[cluster] raft"
    out.append((raft_key, config.cluster.raft_bind or config.cluster.raft))
    return out


def check_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".xes-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"data_dir {path} cannot be used ({exc.strerror or exc}): create it, make it "
            "writable for this user, or set data_dir to another directory"
        ) from None


def check_secret(config: Config) -> None:
    if not config.cluster.secret_file:
        return
    try:
        secret = Path(config.cluster.secret_file).read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"[cluster] secret_file {config.cluster.secret_file} cannot be read "
            f"({exc.strerror or exc}): fix the path or its permissions"
        ) from None
    if not secret:
        raise ConfigError(f"[cluster] secret_file {config.cluster.secret_file} is empty")


def check_component_secrets(config: Config) -> None:
    """Each component's ``secret_file`` can be read and is not empty (its content is never
    shown: a secret must not reach a log)."""
    for component in config.components:
        if component.secret_file and component.read_secret() is None:
            raise ConfigError(
                f'[components."{component.domain}"] secret_file {component.secret_file} cannot '
                "be read or is empty: fix the path, its permissions or its content"
            )


def check_tls(config: Config) -> None:
    for key, value in (("[tls] cert", config.tls.cert), ("[tls] key", config.tls.key)):
        if value and not os.access(value, os.R_OK):
            raise ConfigError(f"{key} {value} cannot be read: fix the path or its permissions")
    if bool(config.tls.cert) != bool(config.tls.key):
        raise ConfigError("[tls] needs both cert and key (or neither: a self-signed pair)")


def check_admin(config: Config) -> None:
    from xes.admin.auth import read_token

    read_token(config)


def split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def check_port(addr: str, key: str) -> None:
    """``addr`` can be listened on now; otherwise what holds it and which key to change."""
    host, port = split(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the listeners do: a port in TIME_WAIT after our own restart is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(port_error(addr, key, exc)) from None


def port_error(addr: str, key: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{addr} ({key}) is already in use, perhaps by another xes or XMPP server: stop "
            f"it or change {key}"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{addr} ({key}) is not an address of this machine: change {key}"
    if exc.errno == errno.EACCES:
        return (
            f"{addr} ({key}) needs privileges to listen on: use a port above 1023 or change {key}"
        )
    return f"cannot listen on {addr} ({key}): {exc.strerror or exc}; change {key}"
