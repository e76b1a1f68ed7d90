#!/usr/bin/env python3
"""Check the event catalogue: versions with complete upcaster chains, and a consumer for each type.

Every event type must be folded by at least one projection or be listed in ``DELIVERY_ONLY``
(handled by ``xes.delivery`` only). Exit status 1 with one line per problem.
"""

from __future__ import annotations

import sys

from xes.events import EVENT_TYPES
from xes.events.registry import check_registry
from xes.projections.projector import PROJECTIONS

DELIVERY_ONLY: set[str] = {"iq.routed", "component.routed"}
"""Event types no projection folds: iq between clients on different nodes (ADR 0006) is carried
by the log for ordering and delivery, and kept in the journal for audit, but changes no view;
the same for stanzas to a component held by another node (ADR 0018)."""


def problems() -> list[str]:
    found = check_registry()
    handled = {t for proj in PROJECTIONS for t in proj.handles}
    for name in sorted(EVENT_TYPES):
        if name not in handled and name not in DELIVERY_ONLY:
            found.append(f"{name}: no projection folds it")
    for proj in PROJECTIONS:
        for name in proj.handles:
            if name not in EVENT_TYPES:
                found.append(f"{proj.__name__} handles unknown type {name}")
            elif not hasattr(proj, "on_" + name.replace(".", "_")):
                found.append(f"{proj.__name__} declares {name} but has no on_ method")
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
