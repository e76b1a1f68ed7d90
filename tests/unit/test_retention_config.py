"""``[retention]`` ages per category and domain (ADR 0024) and how they meet ``[archive]``'s."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from xes.archive_retention import retention_days
from xes.config import ConfigError, parse_config


def days(raw: dict[str, Any]) -> dict[str, float]:
    return retention_days(SimpleNamespace(config=parse_config(raw)))  # type: ignore[arg-type]


TWO_HOSTS = {"hosts": ["a.test", "b.test"]}


def test_archive_keys_keep_their_meaning() -> None:
    assert days({}) == {}
    assert days({**TWO_HOSTS, "archive": {"retention_days": 30}}) == {"a.test": 30, "b.test": 30}
    raw = {**TWO_HOSTS, "archive": {"retention_by_domain": {"conference.a.test": 90}}}
    assert days(raw) == {"conference.a.test": 90}


def test_categories_and_domains_override_in_order() -> None:
    raw = {
        **TWO_HOSTS,
        "archive": {"retention_days": 365, "retention_by_domain": {"conference.b.test": 5}},
        "retention": {
            "chat_days": 30,
            "groupchat_days": 90,
            "domain": {"b.test": {"chat_days": 7}, "a.test": {"groupchat_days": 0}},
        },
    }
    # a.test's rooms are kept for ever (0), b.test's follow the category's 90 days.
    assert days(raw) == {"a.test": 30, "b.test": 7, "conference.b.test": 90}


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({"chat_days": -1}, "chat_days must be a number of days"),
        ({"groupchat_days": "a week"}, "groupchat_days must be a number of days"),
        ({"domain": {"c.test": {"chat_days": 1}}}, "c.test is not a hosted domain"),
        ({"domain": {"a.test": {"presence": 1}}}, 'unknown key(s) in [retention.domain."a.test"]'),
        ({"bodies_days": 1}, "unknown key(s) in [retention]"),
    ],
)
def test_bad_retention_settings_say_what_to_change(retention: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**TWO_HOSTS, "retention": retention})
    assert message in str(caught.value)
