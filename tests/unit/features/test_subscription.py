"""RFC 6121 subscription state machine (Appendix A), both sides."""

from __future__ import annotations

import pytest

from xes.features import subscription as sub
from xes.projections.roster import RosterItem


def item(subscription: str = "none", **kw) -> RosterItem:  # type: ignore[no-untyped-def]
    return RosterItem(contact="c@x", subscription=subscription, **kw)


def test_full_handshake_ends_in_both() -> None:
    user = sub.outbound_subscribe(None, "c@x")
    assert user is not None and user.ask and user.subscription == "none"
    contact, outcome = sub.inbound_subscribe(None, "u@x", "<presence type='subscribe'/>")
    assert (
        outcome == "pending" and contact is not None and contact.pending_in and not contact.listed
    )
    contact, route = sub.outbound_subscribed(contact, "u@x")
    assert route and contact is not None and contact.subscription == "from" and contact.listed
    user = sub.inbound_subscribed(user)
    assert user is not None and user.subscription == "to" and not user.ask
    # And the other direction.
    contact = sub.outbound_subscribe(contact, "u@x")
    assert contact is not None and contact.ask
    user2, outcome = sub.inbound_subscribe(user, "c@x", "<presence/>")
    assert outcome == "pending"
    user3, route = sub.outbound_subscribed(user2, "c@x")
    assert route and user3 is not None and user3.subscription == "both"
    contact2 = sub.inbound_subscribed(contact)
    assert contact2 is not None and contact2.subscription == "both"


def test_subscribe_when_already_subscribed_is_auto_approved() -> None:
    new, outcome = sub.inbound_subscribe(item("from"), "u@x", "<presence/>")
    assert (new, outcome) == (None, "already")


def test_preapproval() -> None:
    approved, route = sub.outbound_subscribed(None, "c@x")
    assert not route and approved is not None and approved.approved
    new, outcome = sub.inbound_subscribe(approved, "c@x", "<presence/>")
    assert (
        outcome == "preapproved"
        and new is not None
        and new.subscription == "from"
        and not new.approved
    )


def test_subscribed_without_request_does_not_route() -> None:
    assert sub.inbound_subscribed(item("none")) is None
    assert sub.inbound_subscribed(None) is None


@pytest.mark.parametrize(("before", "after"), [("to", "none"), ("both", "from")])
def test_unsubscribe(before: str, after: str) -> None:
    new = sub.outbound_unsubscribe(item(before))
    assert new is not None and new.subscription == after


@pytest.mark.parametrize(("before", "after"), [("from", "none"), ("both", "to")])
def test_unsubscribed_cancels_and_clears_preapproval(before: str, after: str) -> None:
    new = sub.outbound_unsubscribed(item(before, approved=True))
    assert new is not None and new.subscription == after and not new.approved


def test_unsubscribed_denies_pending_request() -> None:
    new = sub.outbound_unsubscribed(item("none", pending_in="<presence/>"))
    assert new is not None and new.pending_in is None


def test_no_change_means_none() -> None:
    assert sub.outbound_unsubscribe(item("none")) is None
    assert sub.inbound_unsubscribe(item("to")) is None
    assert sub.outbound_unsubscribed(item("to")) is None
    assert sub.inbound_unsubscribed(item("from")) is None
