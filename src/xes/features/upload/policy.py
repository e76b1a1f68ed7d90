"""What a slot request may name (XEP-0363 §4, §7): file names, content types, and how a
download is presented to a browser. Pure functions; the service and the HTTP side share them.

A file name never becomes a path (files are stored under their slot id), yet it travels in the
GET URL and in ``Content-Disposition``; a name that could mean a path or hide its extension is
refused with ``bad-request`` instead of being silently rewritten, so what the sender sees is
what the recipient gets.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

MAX_FILENAME_BYTES = 255
"""Longest file name (UTF-8), the common file-system limit the recipient will save it under."""

BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Direction overrides that make ``invoice\u202egpj.exe`` look like ``invoice.jpg``."""

DEFAULT_CONTENT_TYPE = "application/octet-stream"

OPEN_SLOT_GRACE_MS = 600_000
"""How long after its expiry an unused slot is kept: a PUT that began just in time may still be
sending. Only then does the leader delete the slot (and the quota it held)."""

_TOKEN = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
_CONTENT_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(\s*;\s*[a-z0-9_.+-]+=[a-z0-9_.+\"-]+)*")

INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/heic",
        "image/bmp",
        "text/plain",
    }
)
"""Types a browser may show in the page: no scripts inside (SVG and HTML are downloads)."""
INLINE_FAMILIES = ("audio/", "video/")


def filename_problem(name: str) -> str | None:
    """Why ``name`` is refused as a file name (None: it is fine)."""
    if not name or name in (".", ".."):
        return "a file name is needed"
    if len(name.encode()) > MAX_FILENAME_BYTES:
        return f"file names are at most {MAX_FILENAME_BYTES} bytes"
    if "/" in name or "\\" in name:
        return "a file name cannot contain / or \\"
    for char in name:
        if unicodedata.category(char) == "Cc" or char in BIDI_CONTROLS:
            return "a file name cannot contain control characters"
    return None


def normalise_content_type(value: str | None) -> str | None:
    """The content type as stored (lower case, the default when absent); None if malformed."""
    if value is None or not value.strip():
        return DEFAULT_CONTENT_TYPE
    text = value.strip().lower()
    if len(text) > 255 or not _CONTENT_TYPE.fullmatch(text):
        return None
    return text


def base_type(content_type: str) -> str:
    """``type/subtype`` without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def content_type_allowed(content_type: str, allowed: tuple[str, ...]) -> bool:
    """``[upload] allowed_content_types``: exact types or ``family/*``; empty allows any."""
    if not allowed:
        return True
    base = base_type(content_type)
    family = base.split("/", 1)[0] + "/*"
    return any(pattern.lower() in (base, family) for pattern in allowed)


def same_content_type(declared: str | None, slot_type: str) -> bool:
    """Does a PUT's ``Content-Type`` match the slot's (parameters aside)?"""
    given = normalise_content_type(declared)
    return given is not None and base_type(given) == base_type(slot_type)


def disposition(content_type: str, filename: str) -> str:
    """``Content-Disposition`` for a download (XEP-0363 §7): pictures, sound, video and plain
    text may be shown inline; everything else is saved, so a hostile HTML or SVG file never
    runs as a page of this origin."""
    base = base_type(content_type)
    inline = base in INLINE_TYPES or base.startswith(INLINE_FAMILIES)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename*=UTF-8''{quote(filename, safe='')}"
