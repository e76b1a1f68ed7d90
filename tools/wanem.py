#!/usr/bin/env python3
"""Run the Raft-link WAN emulator standalone, for manual experiments with a hand-started cluster.

The implementation lives in ``tests/integration/wanproxy.py`` (one emulator for tests and for
people); this is only argument parsing plus a tiny stdin console. Example, three sites with
20 ms one-way between a and b and 60 ms plus 1 % loss towards c::

    tools/wanem.py --site a=127.0.0.11 --site b=127.0.0.12 --site c=127.0.0.13 \\
        --expose a=127.0.0.11:7001=127.0.0.11:7101 --expose b=127.0.0.12:7001=127.0.0.12:7101 \\
        --expose c=127.0.0.13:7001=127.0.0.13:7101 \\
        --link a-b=20 --link a-c=60,0.01 --link b-c=60,0.01

While it runs, stdin accepts ``cut SITE``, ``cut A-B``, ``heal SITE``, ``heal A-B``,
``heal``, ``link A-B=MS[,LOSS]`` and ``stats``. Ctrl-C stops it. Site names must not contain
``-`` or ``=``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.wanproxy import WanEmulator


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _link(wan: WanEmulator, spec: str) -> None:
    """Apply ``A-B=DELAY_MS[,LOSS]``."""
    pair, _, shape = spec.partition("=")
    a, _, b = pair.partition("-")
    delay_ms, _, loss = shape.partition(",")
    wan.set_link(a, b, delay=float(delay_ms) / 1000, loss=float(loss or 0))


def _console(wan: WanEmulator) -> None:
    """Read commands from stdin so cuts can be toggled without restarting the proxy."""
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd in ("cut", "heal") and "-" in arg:
                a, _, b = arg.partition("-")
                (wan.cut_link if cmd == "cut" else wan.heal_link)(a, b)
            elif cmd == "cut":
                wan.cut(arg)
            elif cmd == "heal":
                wan.heal(arg) if arg else wan.heal_all()
            elif cmd == "link":
                _link(wan, arg)
            elif cmd == "stats":
                print(json.dumps(wan.stats(), indent=2), flush=True)
            elif cmd:
                print(f"unknown command {cmd!r}", flush=True)
        except (ValueError, RuntimeError) as exc:
            print(f"error: {exc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--site", action="append", default=[], metavar="NAME=IP")
    p.add_argument("--expose", action="append", default=[], metavar="NAME=HOST:PORT=HOST:PORT")
    p.add_argument("--link", action="append", default=[], metavar="A-B=DELAY_MS[,LOSS]")
    p.add_argument("--rto-ms", type=float, default=200.0, help="delay of a 'lost' chunk")
    args = p.parse_args(argv)
    with WanEmulator(rto=args.rto_ms / 1000) as wan:
        for spec in args.site:
            name, _, ip = spec.partition("=")
            wan.add_site(name, ip)
        for spec in args.expose:
            name, listen, target = spec.split("=")
            bound = wan.expose(name, _addr(listen), _addr(target))
            print(f"{name}: {bound[0]}:{bound[1]} -> {target}", flush=True)
        for spec in args.link:
            _link(wan, spec)
        threading.Thread(target=_console, args=(wan,), daemon=True).start()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print(json.dumps(wan.stats(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
