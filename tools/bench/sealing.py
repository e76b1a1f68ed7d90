"""What crypto-shredding (ADR 0024) would cost per message: sealing a stanza at proposal,
opening it at each read, and wrapping a new data key to every member.

    .venv/bin/python tools/bench/sealing.py [--n 20000] [--size 300] [--members 3]

Prints microseconds per operation (the median of five rounds); compare with the per-message
cost of the hot path in docs/benchmarks.md. No server is involved.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from xes.sealing.seal import new_key, open_sealed, seal
from xes.sealing.wrap import public_hex, unwrap, wrap


def per_op_us(fn: Callable[[], object], n: int) -> float:
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--size", type=int, default=300, help="stanza bytes")
    parser.add_argument("--members", type=int, default=3)
    args = parser.parse_args()
    key = new_key()
    stanza = b"x" * args.size
    context = b"chat\x00example.org\x00alice@example.org bob@example.org"
    sealed = seal(key, stanza, context)
    nodes = [X25519PrivateKey.generate() for _ in range(args.members)]
    publics = [public_hex(n) for n in nodes]
    copy = wrap(key, publics[0], b"key-id")
    rows = [
        (f"seal a {args.size}-byte stanza", per_op_us(lambda: seal(key, stanza, context), args.n)),
        ("open it", per_op_us(lambda: open_sealed(key, sealed, context), args.n)),
        (
            f"wrap a new data key to {args.members} members",
            per_op_us(lambda: [wrap(key, p, b"key-id") for p in publics], args.n // 20),
        ),
        (
            "unwrap one copy (apply, per node)",
            per_op_us(lambda: unwrap(copy, nodes[0], b"key-id"), args.n // 20),
        ),
    ]
    print("| operation | µs |\n|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:.1f} |")


if __name__ == "__main__":
    main()
