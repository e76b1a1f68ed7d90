"""The pure parts of XEP-0363 upload: file names that could be paths or hide their extension
are refused, content types are normalised and matched, downloads that could run script are
attachments, and PUT tokens and peer proofs hold only for what they were made for."""

from __future__ import annotations

import pytest

from xes.features.upload import policy, tokens

KEY = b"k" * 32


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../etc/passwd", "a/b", "..\\boot.ini", "a\x00b", "a\nb", "x\u202egpj.exe"],
)
def test_path_tricks_and_hidden_extensions_are_refused(name: str) -> None:
    assert policy.filename_problem(name) is not None


@pytest.mark.parametrize("name", ["photo.jpg", "Röntgen 2024.png", "..hidden", "a" * 255, "😀.gif"])
def test_ordinary_names_pass(name: str) -> None:
    assert policy.filename_problem(name) is None


def test_long_names_are_counted_in_bytes() -> None:
    assert policy.filename_problem("é" * 128) is not None  # 256 bytes


def test_content_types() -> None:
    assert policy.normalise_content_type(None) == "application/octet-stream"
    assert policy.normalise_content_type("Image/JPEG") == "image/jpeg"
    assert policy.normalise_content_type("text/plain; charset=utf-8") == "text/plain; charset=utf-8"
    assert policy.normalise_content_type("text/html\r\nX-Evil: 1") is None
    assert policy.normalise_content_type("nonsense") is None
    assert policy.content_type_allowed("image/png", ("image/*",))
    assert policy.content_type_allowed("application/pdf", ("image/*", "application/pdf"))
    assert not policy.content_type_allowed("text/html", ("image/*",))
    assert policy.content_type_allowed("text/html", ())
    assert policy.same_content_type("IMAGE/PNG", "image/png")
    assert not policy.same_content_type("image/gif", "image/png")
    assert not policy.same_content_type("bad", "image/png")


def test_disposition() -> None:
    assert policy.disposition("image/png", "a b.png") == "inline; filename*=UTF-8''a%20b.png"
    assert policy.disposition("video/mp4", "v.mp4").startswith("inline")
    assert policy.disposition("image/svg+xml", "x.svg").startswith("attachment")
    assert policy.disposition("text/html", "x.html").startswith("attachment")


def test_put_token_binds_the_slot() -> None:
    token = tokens.put_token(KEY, "slot", 10, "image/png", 99)
    assert tokens.put_token_valid(KEY, token, "slot", 10, "image/png", 99)
    assert not tokens.put_token_valid(KEY, token, "slot", 11, "image/png", 99)
    assert not tokens.put_token_valid(KEY, token, "other", 10, "image/png", 99)
    assert not tokens.put_token_valid(b"x" * 32, token, "slot", 10, "image/png", 99)


def test_peer_proof() -> None:
    now = 1_700_000_000_000
    proof = tokens.peer_proof(KEY, "n2", "GET", "/upload/s/a.png", now)
    assert tokens.peer_of(KEY, proof, "GET", "/upload/s/a.png", now + 1000) == "n2"
    assert tokens.peer_of(KEY, proof, "GET", "/upload/t/a.png", now) is None
    assert tokens.peer_of(KEY, proof, "PUT", "/upload/s/a.png", now) is None
    assert tokens.peer_of(b"x" * 32, proof, "GET", "/upload/s/a.png", now) is None
    stale = now + tokens.PEER_PROOF_TTL_MS + 1
    assert tokens.peer_of(KEY, proof, "GET", "/upload/s/a.png", stale) is None
    forged = proof.replace("n2", "n3", 1)
    assert tokens.peer_of(KEY, forged, "GET", "/upload/s/a.png", now) is None
    assert tokens.peer_of(KEY, "garbage", "GET", "/", now) is None
