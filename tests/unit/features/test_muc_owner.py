"""The owner's configuration form turns its owner and admin lists into affiliation changes."""

from __future__ import annotations

import pytest

from xes.features.muc.owner import _list_changes
from xes.muc.forms import SubmittedConfig
from xes.muc.model import Room, RoomConfig
from xes.stanza.core import StanzaError


def room(**affiliations: str) -> Room:
    return Room(
        "r@muc.x", RoomConfig(), "k", affiliations={f"{k}@x": v for k, v in affiliations.items()}
    )


def changes(r: Room, owners: list[str] | None, admins: list[str] | None) -> dict[str, str]:
    submitted = SubmittedConfig(r.config, owners, admins)
    return {e.jid: e.affiliation for e in _list_changes(r, submitted, "a@x/1")}


def test_an_admin_promoted_to_owner_is_an_owner() -> None:
    r = room(a="owner", b="admin")
    assert changes(r, ["a@x", "b@x"], []) == {"b@x": "owner"}


def test_an_owner_moved_to_the_admin_list_is_an_admin() -> None:
    r = room(a="owner", b="owner")
    assert changes(r, ["a@x"], ["b@x"]) == {"b@x": "admin"}


def test_lists_left_out_change_nothing_and_removals_demote() -> None:
    r = room(a="owner", b="admin", c="member")
    assert changes(r, None, None) == {}
    assert changes(r, None, []) == {"b@x": "none"}
    assert changes(r, ["a@x", "d@x"], None) == {"d@x": "owner"}


def test_the_last_owner_stays() -> None:
    with pytest.raises(StanzaError) as info:
        changes(room(a="owner"), [], None)
    assert info.value.condition == "conflict"
