#!/usr/bin/env python3
"""Check the event catalogue: versions with complete upcaster chains, and a consumer for each type.

Every event type must be folded by at least one projection or be listed in ``DELIVERY_ONLY``
(handled by ``xes.delivery`` only). The feature gate's tables (ADR 0022) must fit the catalogue:
each downcaster undoes a version this build has an upcaster for, and every baseline type is
still read. Exit status 1 with one line per problem.
"""

from __future__ import annotations

import sys

from xes.events import EVENT_TYPES
from xes.events.gate import BASELINE, DOWNCASTERS
from xes.events.registry import UPCASTERS, check_registry
from xes.projections.projector import PROJECTIONS

DELIVERY_ONLY: set[str] = {"iq.routed", "component.routed", "s2s.routed"}
"""Event types no projection folds: iq between clients on different nodes (ADR 0006) is carried
by the log for ordering and delivery, and kept in the journal for audit, but changes no view;
the same for stanzas to a component held by another node (ADR 0018) and for stanzas to a
remote domain, written by the node that holds the link (ADR 0025; the s2s outbox will fold it)."""


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
    for name, v in sorted(DOWNCASTERS):
        if name not in EVENT_TYPES or not 1 < v <= EVENT_TYPES[name].V:
            found.append(f"{name}: downcaster from v{v}, which this build does not write")
        elif (name, v - 1) not in UPCASTERS:
            found.append(f"{name}: downcaster from v{v} without the upcaster from v{v - 1}")
    for name in sorted(BASELINE):
        if name not in EVENT_TYPES:
            found.append(f"{name}: in the gate's baseline but no longer read (ADR 0022)")
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
