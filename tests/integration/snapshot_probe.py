"""Run under either release (``PYTHONPATH`` picks the tree): build a store from log entries and
snapshot it, or install a snapshot into a fresh store and compare it with a replay of its journal.

``python -m tests.integration.snapshot_probe make DIR ENTRIES.json`` writes ``DIR/snap``;
``python -m tests.integration.snapshot_probe restore SNAP DIR`` prints JSON
``{"live": digest, "rebuilt": digest, "applied": index}``. Only APIs both releases have are used
(``Projector.apply/snapshot/restore``, ``rebuild``), so a snapshot from one release can be
installed by the other (``test_rolling_upgrade``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from xes.projections.projector import Projector, all_db_names, rebuild
from xes.store.env import open_store


def make(root: Path, entries: Path) -> None:
    store = open_store(root / "db", all_db_names(), writer=True)
    projector = Projector(store)
    for index, command in enumerate(json.loads(entries.read_text()), start=1):
        projector.apply(index, json.dumps(command).encode())
    projector.snapshot(root / "snap")
    store.close()


def restore(snap: Path, root: Path) -> None:
    store = open_store(root / "db", all_db_names(), writer=True)
    Projector(store).restore(snap)
    rebuilt, live, applied, _ = rebuild(store, root / "fresh")
    store.close()
    print(json.dumps({"live": live, "rebuilt": rebuilt, "applied": applied}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        restore(Path(sys.argv[2]), Path(sys.argv[3]))
