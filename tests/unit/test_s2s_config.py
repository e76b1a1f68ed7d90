"""``[s2s]`` and ``[listen] s2s`` (ADR 0025): defaults, validation, peer certificate names."""

from __future__ import annotations

import pytest

from xes.config import ConfigError, parse_config
from xes.tlsutil import peer_matches


def test_no_section_no_federation() -> None:
    config = parse_config({"domain": "a.example"})
    assert config.s2s is None
    assert config.listen.s2s is None


def test_section_with_static_hosts() -> None:
    config = parse_config(
        {
            "domain": "a.example",
            "listen": {"s2s": "127.0.0.1:5269"},
            "s2s": {"hosts": {"b.example": "127.0.0.1:5270"}},
        }
    )
    assert config.s2s is not None
    assert config.s2s.hosts == {"b.example": "127.0.0.1:5270"}
    assert config.s2s.authentication == "certificates"
    assert not config.s2s.dialback
    assert config.listen.s2s == "127.0.0.1:5269"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"authentication": "dialback"}, "authentication must be one of"),
        ({"hosts": {"b.example": "nowhere"}}, "must be host:port"),
        ({"hosts": {"a.example": "127.0.0.1:1"}}, "is hosted here"),
        ({"connect_timeout": 0}, "connect_timeout must be positive"),
        ({"bogus": 1}, "unknown key"),
    ],
)
def test_invalid_sections_name_the_key(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"domain": "a.example", "s2s": section})


def test_peer_names_per_rfc_6125() -> None:
    cert = {"subjectAltName": (("DNS", "b.example"), ("DNS", "*.c.example"))}
    assert peer_matches(cert, "b.example")
    assert peer_matches(cert, "x.c.example")
    assert not peer_matches(cert, "c.example")
    assert not peer_matches(cert, "y.x.c.example")
    assert not peer_matches(cert, "evil.example")
    assert not peer_matches({}, "b.example")  # not verified: getpeercert() is empty
    assert peer_matches({"subject": ((("commonName", "d.example"),),)}, "d.example")
