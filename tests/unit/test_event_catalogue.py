"""The event catalogue is consistent (tools/check_events.py) and upcasting works."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

from xes.events import Envelope, UnknownEvent, decode_event
from xes.events.registry import EVENT_TYPES, UPCASTERS, event, upcaster


def test_catalogue_has_no_problems() -> None:
    path = Path(__file__).parents[2] / "tools" / "check_events.py"
    spec = importlib.util.spec_from_file_location("check_events", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.problems() == []


def test_upcasting_reads_old_versions_and_refuses_newer() -> None:
    @event("test.renamed_field", v=2)
    @dataclass(frozen=True, slots=True)
    class Renamed:
        new_name: str

        def stream(self) -> str:
            return "test"

    @upcaster("test.renamed_field", 1)
    def v1_to_v2(data: dict[str, str]) -> dict[str, str]:
        return {"new_name": data["old_name"]}

    try:
        old = Envelope("test.renamed_field", 1, "test", "i", 0, "o", {"old_name": "x"})
        assert decode_event(old) == Renamed("x")
        future = Envelope("test.renamed_field", 3, "test", "i", 0, "o", {"new_name": "x"})
        with pytest.raises(UnknownEvent):
            decode_event(future)
    finally:
        del EVENT_TYPES["test.renamed_field"]
        del UPCASTERS[("test.renamed_field", 1)]
