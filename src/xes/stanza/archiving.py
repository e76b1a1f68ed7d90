"""Which messages a user's archive keeps (XEP-0313 §7 business rules, XEP-0334 hints).

Pure rules, applied by the proposer of ``message.routed``: the event then names the archives
(``archived_by``), so applying it never depends on configuration or on preferences read later.
"""

from __future__ import annotations

from dataclasses import dataclass

from xes.xml import Element, ns

KEPT_PAYLOADS = frozenset({ns.RECEIPTS, ns.MARKERS})
"""Bodyless messages still archived: delivery receipts and chat markers, so every device learns
what was received and read."""


PREF_DEFAULTS = ("always", "never", "roster")
"""XEP-0313 §6 archiving defaults."""


@dataclass(frozen=True, slots=True)
class Prefs:
    """Archiving preferences (XEP-0313 §6): the default and the JIDs it does not apply to."""

    default: str
    always: tuple[str, ...] = ()
    never: tuple[str, ...] = ()


def archivable(stanza: Element, type_: str) -> bool:
    """A ``chat`` or ``normal`` message with a body (or a receipt or marker), unless hinted
    otherwise; ``<store/>`` keeps any message, ``<no-store/>``/``<no-permanent-store/>`` none."""
    if type_ not in ("chat", "normal"):
        return False
    if stanza.find("{%s}no-store" % ns.HINTS) is not None:
        return False
    if stanza.find("{%s}no-permanent-store" % ns.HINTS) is not None:
        return False
    if stanza.find("{%s}store" % ns.HINTS) is not None:
        return True
    if stanza.find("{%s}body" % ns.CLIENT) is not None:
        return True
    return any(el.ns in KEPT_PAYLOADS for el in stanza.iter_elements())


def wanted(prefs: Prefs, peer_bare: str, in_roster: bool) -> bool:
    """The owner's preferences (XEP-0313 §6) say messages with ``peer_bare`` are archived."""
    if peer_bare in prefs.never:
        return False
    if peer_bare in prefs.always:
        return True
    if prefs.default == "roster":
        return in_roster
    return prefs.default == "always"
