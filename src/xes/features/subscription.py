"""The presence subscription state machine (RFC 6121 §3 and Appendix A), as pure functions.

Each function takes the current roster item (or None) of one side and returns the new item, or
None when nothing changes. Both sides of a local subscription are decided together and proposed
as one all-or-nothing proposal, so a crash can never leave one side updated and the other not.
"""

from __future__ import annotations

from dataclasses import replace

from xes.projections.roster import RosterItem

_ADD_TO = {"none": "to", "from": "both", "to": "to", "both": "both"}
_ADD_FROM = {"none": "from", "to": "both", "from": "from", "both": "both"}
_DROP_TO = {"to": "none", "both": "from", "none": "none", "from": "from"}
_DROP_FROM = {"from": "none", "both": "to", "none": "none", "to": "to"}


def _item(current: RosterItem | None, contact: str) -> RosterItem:
    return current if current is not None else RosterItem(contact=contact)


def outbound_subscribe(current: RosterItem | None, contact: str) -> RosterItem | None:
    """User sends subscribe: mark ``ask`` unless already subscribed (A.2.1)."""
    item = _item(current, contact)
    if item.subscription in ("to", "both") or item.ask:
        return None if current is not None else item
    return replace(item, ask=True)


def inbound_subscribe(
    current: RosterItem | None, contact: str, stanza_xml: str
) -> tuple[RosterItem | None, str]:
    """Contact asks the user. Returns (new item, outcome) with outcome one of
    ``already`` (auto-reply subscribed, A.3.1), ``preapproved`` (auto-approve, §3.4) or
    ``pending`` (deliver to the user and remember the request, §3.1.3)."""
    if current is not None and current.subscription in ("from", "both"):
        return None, "already"
    if current is not None and current.approved:
        return replace(
            current, subscription=_ADD_FROM[current.subscription], approved=False
        ), "preapproved"
    item = current if current is not None else RosterItem(contact=contact, listed=False)
    return replace(item, pending_in=stanza_xml), "pending"


def outbound_subscribed(current: RosterItem | None, contact: str) -> tuple[RosterItem | None, bool]:
    """User approves. Returns (new item, route?) where route says whether the contact is told."""
    if current is not None and current.pending_in is not None:
        new = replace(
            current, subscription=_ADD_FROM[current.subscription], pending_in=None, listed=True
        )
        return new, True
    if current is not None and current.subscription in ("from", "both"):
        return None, False
    item = _item(current, contact)
    if item.approved:
        return None, False
    # Pre-approval (RFC 6121 §3.4): remembered, not routed.
    return replace(item, approved=True), False


def inbound_subscribed(current: RosterItem | None) -> RosterItem | None:
    """Contact approved the user's request: only meaningful while ``ask`` is set (A.3.2)."""
    if current is None or not current.ask:
        return None
    return replace(current, subscription=_ADD_TO[current.subscription], ask=False)


def outbound_unsubscribe(current: RosterItem | None) -> RosterItem | None:
    if current is None or (current.subscription in ("none", "from") and not current.ask):
        return None
    return replace(current, subscription=_DROP_TO[current.subscription], ask=False)


def inbound_unsubscribe(current: RosterItem | None) -> RosterItem | None:
    if current is None or (current.subscription in ("none", "to") and current.pending_in is None):
        return None
    return replace(current, subscription=_DROP_FROM[current.subscription], pending_in=None)


def outbound_unsubscribed(current: RosterItem | None) -> RosterItem | None:
    """User cancels or denies the contact's subscription to the user's presence."""
    if current is None:
        return None
    if (
        current.subscription in ("none", "to")
        and current.pending_in is None
        and not current.approved
    ):
        return None
    return replace(
        current, subscription=_DROP_FROM[current.subscription], pending_in=None, approved=False
    )


def inbound_unsubscribed(current: RosterItem | None) -> RosterItem | None:
    if current is None or (current.subscription in ("none", "from") and not current.ask):
        return None
    return replace(current, subscription=_DROP_TO[current.subscription], ask=False)
