"""The fuzz targets of tools/fuzz under atheris for a short, fixed budget (issue 20): a crash,
a hang or an unexpected exception in the parser, the client session, SASL or the event codec
fails the suite. The long recorded runs are in docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "tools" / "fuzz" / "run.py"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["xml_stream", "c2s", "sasl", "events"])
def test_short_fuzz_run(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    result = subprocess.run(
        [sys.executable, str(RUN), target, "-runs=3000", "-max_len=2048", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=tmp_path,  # crash-* artefacts land here
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 3000 runs" in result.stderr, result.stderr[-3000:]
