"""Archive ids (XEP-0359 stanza-id): unique, URL-safe, and in time order."""

from __future__ import annotations

import re

from xes.stanza import sid


def test_ids_are_url_safe_unique_and_sort_by_time() -> None:
    t0 = 1_750_000_000_000
    ids = [sid.new_id(t0 + i // 10) for i in range(5000)]  # ten per millisecond
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", i) for i in ids)
    by_ms = [ids[i * 10] for i in range(500)]
    assert by_ms == sorted(by_ms)  # a later millisecond always sorts after
    assert sid.new_id(t0 + 1) > max(ids[:10])


def test_the_alphabet_sorts_as_its_values() -> None:
    assert list(sid.SORTABLE) == sorted(sid.SORTABLE) and len(set(sid.SORTABLE)) == 64
    assert sid.new_id() > sid.new_id(1_000_000_000_000)  # now is after 2001
