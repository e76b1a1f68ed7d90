"""XEP-0280 Message Carbons: a session turns copies of its user's other conversations on or off.

The choice is session state, so it is recorded (``carbons.toggled``) in the sessions projection:
the proposer of every ``message.routed`` reads it to list the resources that get copies, and a
session resumed on another node keeps it. The copies themselves are made by
:func:`xes.stanza.carbons.copies`.
"""

from __future__ import annotations

from xes.events.catalog import CarbonsToggled
from xes.hub import Hub, LocalSession
from xes.stanza.core import StanzaError, iq_result
from xes.xml import Element


async def toggle(hub: Hub, session: LocalSession, iq: Element, child: Element) -> Element:
    if iq.get("type") != "set":
        raise StanzaError("bad-request", "carbons are enabled or disabled with an iq set")
    if iq.get("to") not in (None, session.bare):
        raise StanzaError("bad-request")
    await hub.log.append(CarbonsToggled(session.session_id, child.name == "enable"))
    return iq_result(iq)
