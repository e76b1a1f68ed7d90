"""Client State Indication (XEP-0352): which stanzas may wait while a client is inactive.

A phone in a pocket says ``<inactive/>``; from then on the server holds back what the user would
not want to be woken for, and folds what only the latest copy of matters: a contact's presence
(the last one wins), chat states, PEP notifications of a node. What the user must see at once
goes out at once, and takes everything held with it, in order: messages with a body (or an
encrypted payload), calls (XEP-0353 propose), receipt requests, iq (answers the client waits
for), errors. Classification works on the serialized bytes the server itself produced, with
cheap substring tests, because it sits on every write.
"""

from __future__ import annotations

import re

_FROM = re.compile(rb"""\sfrom=(?:'([^']*)'|"([^"]*)")""")
_ITEM = re.compile(rb"""<item\s[^>]*id=(?:'([^']*)'|"([^"]*)")""")
_NODE = re.compile(rb"""<items\s[^>]*node=(?:'([^']*)'|"([^"]*)")""")

URGENT_MARKERS = (
    b"<body",
    b"urn:xmpp:jingle-message:0",
    b"eu.siacs.conversations.axolotl",
    b"urn:xmpp:omemo:2",
    b"jabber:x:conference",
    b"<invite",
)
"""Substrings that make a message urgent: a body, an encrypted payload, a call, an invitation
(direct, XEP-0249, or mediated, XEP-0045 §7.8). Receipt requests are tested apart."""


def _attr(pattern: re.Pattern[bytes], data: bytes) -> bytes:
    m = pattern.search(data)
    if m is None:
        return b""
    return m.group(1) if m.group(1) is not None else m.group(2)


def classify(data: bytes) -> tuple[bool, bytes | None]:
    """``(urgent, fold_key)`` of one serialized stanza.

    ``fold_key`` names what a later stanza with the same key replaces while held (None: kept).
    """
    head = data[:10]
    if head.startswith(b"<presence"):
        if b"type='subscribe'" in data or b'type="subscribe"' in data:
            return True, None  # a subscription request waits for an answer: not foldable
        return False, b"p\x00" + _attr(_FROM, data)
    if not head.startswith(b"<message"):
        return True, None  # iq (answers), stream management, anything else
    if b"type='error'" in data or b'type="error"' in data:
        return True, None
    if b"http://jabber.org/protocol/pubsub#event" in data:
        # Before the markers: an OMEMO device list notification names its namespace too.
        # Only a publication folds, with a later one of the same item (multi-item nodes such
        # as bookmarks keep each item); retractions, purges and deletions are each kept.
        if b"<retract" in data or b"<purge" in data or b"<delete" in data:
            return False, None
        item = _attr(_ITEM, data)
        return False, b"e\x00" + _attr(_FROM, data) + b"\x00" + _attr(_NODE, data) + b"\x00" + item
    if b"urn:xmpp:receipts" in data and b"<request" in data:
        return True, None
    if any(marker in data for marker in URGENT_MARKERS):
        return True, None
    if b"http://jabber.org/protocol/chatstates" in data:
        return False, b"c\x00" + _attr(_FROM, data)
    return False, None  # receipts, markers and the like: wait, but each one counts
