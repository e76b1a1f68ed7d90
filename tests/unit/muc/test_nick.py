"""Room nicknames: PRECIS Nickname profile (RFC 8266), compared case-insensitively."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xes.muc.nick import InvalidNick, enforce, key


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("Alice", "Alice"),
        ("  Alice  ", "Alice"),  # leading and trailing spaces go
        ("Al   ice", "Al ice"),  # runs of spaces become one
        ("a\u00a0b", "a b"),  # a non-ASCII space is a space
        ("\u212b", "\u00c5"),  # compatibility forms are normalised (NFKC)
        ("a/b", "a/b"),  # any resourcepart character
        ("a@b", "a@b"),
        ("x" * 10, "x" * 10),
    ],
)
def test_enforce_keeps_case_and_normalises(raw: str, shown: str) -> None:
    assert enforce(raw, 10) == shown


@pytest.mark.parametrize(
    "raw",
    ["", " ", "   ", "\x07bell", "tab\there", "\u200d", "x" * 11, "new\nline"],
    ids=["empty", "space", "spaces", "control", "tab", "zwj", "too-long", "newline"],
)
def test_enforce_refuses(raw: str) -> None:
    with pytest.raises(InvalidNick):
        enforce(raw, 10)


def test_length_counts_characters_after_enforcement() -> None:
    assert enforce("  " + "é" * 5 + "  ", 5) == "é" * 5
    with pytest.raises(InvalidNick):
        enforce("é" * 6, 5)


@pytest.mark.parametrize(
    ("a", "b"),
    [("Alice", "alice"), ("ALICE", "aLiCe"), ("\u212b", "\u00e5"), ("  Bob ", "bob")],
)
def test_same_occupant_whatever_the_case(a: str, b: str) -> None:
    assert key(a) == key(b)


@pytest.mark.parametrize(("a", "b"), [("Alice", "Alicia"), ("al ice", "alice"), ("a", "á")])
def test_different_nicks_have_different_keys(a: str, b: str) -> None:
    assert key(a) != key(b)


def test_key_of_an_invalid_nick_does_not_raise() -> None:
    assert key("\x07Bell") == "\x07bell"


@given(st.text(max_size=12))
def test_enforce_is_idempotent_and_keeps_the_key(raw: str) -> None:
    try:
        nick = enforce(raw, 64)
    except InvalidNick:
        return
    assert enforce(nick, 64) == nick
    assert key(nick) == key(raw) == key(key(nick))


@given(st.text(alphabet="abcxyzABCXYZ019 _-", min_size=1, max_size=12))
def test_ascii_case_never_separates_occupants(raw: str) -> None:
    assert key(raw.upper()) == key(raw.lower())
