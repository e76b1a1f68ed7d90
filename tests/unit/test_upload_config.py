"""``[upload]`` is validated when the configuration is read: bad values are named, not
discovered at the first slot request."""

from __future__ import annotations

from pathlib import Path

import pytest

from xes.config import ConfigError, parse_config


def test_defaults_and_relative_dir(tmp_path: Path) -> None:
    config = parse_config({"domain": "example.org", "upload": {"dir": "files"}}, base=tmp_path)
    assert config.upload_domain == "upload.example.org"
    assert config.upload_dir == tmp_path / "files"
    assert not config.upload.enabled
    assert parse_config({}).upload_dir == Path("./xes-data") / "uploads"


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        ({"domain": "localhost"}, "other than the server's"),
        ({"enabled": True, "domain": "conference.localhost"}, "group chat"),
        ({"max_file_size": 0}, "must be positive"),
        ({"quota_per_user": 10, "max_file_size": 100}, "at least max_file_size"),
        ({"allowed_content_types": ["image"]}, "type/subtype"),
        ({"internal_url": "ftp://x"}, "internal_url"),
        ({"internal_ca": "/nonexistent/ca.pem"}, "internal_ca"),
        ({"retention_days": -1}, "negative"),
        ({"size_limit": 1}, "unknown key"),
    ],
)
def test_bad_values_are_named(upload: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"upload": upload})


def test_enabled_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="public_url"):
        parse_config({"upload": {"enabled": True}, "listen": {"https": ""}})
    config = parse_config(
        {
            "upload": {"enabled": True},
            "listen": {"https": ""},
            "http": {"public_url": "https://chat.example.org"},
        }
    )
    assert config.upload.enabled
