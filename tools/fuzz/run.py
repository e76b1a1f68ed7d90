"""Coverage-guided fuzzing of one target with atheris (libFuzzer), issue 20.

    .venv/bin/python tools/fuzz/run.py xml_stream -runs=10000000 -max_len=4096

Arguments after the target name go to libFuzzer (``-runs``, ``-max_total_time``, ``-max_len``,
a corpus directory). Seeds from :mod:`targets` are written to a corpus directory first. A
crash prints the input and leaves ``crash-*`` files; a clean run ends with libFuzzer's
``Done N runs`` line, which docs/benchmarks.md records for the long runs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

import targets

# Instrument everything loaded (xes is an editable install, whose loader the import hook does
# not see): coverage guidance reaches the parser, the session, SASL and the event codec.
atheris.instrument_all()


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        raise SystemExit(f"usage: run.py {{{','.join(targets.TARGETS)}}} [libFuzzer args]")
    name = sys.argv[1]
    corpus = Path(tempfile.mkdtemp(prefix=f"xes-fuzz-{name}-"))
    for i, seed in enumerate(targets.SEEDS.get(name, [])):
        (corpus / f"seed{i}").write_bytes(seed)
    args = [sys.argv[0], *sys.argv[2:], str(corpus)]
    atheris.Setup(args, targets.TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
