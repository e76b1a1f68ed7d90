"""Room nicknames (XEP-0045 §7.2.7): PRECIS Nickname profile (RFC 8266), as a resourcepart.

The nickname shown is enforced with NicknameCasePreserved; two nicknames are the same occupant
when their NicknameCaseMapped forms are equal (so "Alice" and "alice" cannot both be in a room).
A nickname is also the resourcepart of the occupant JID, so it must survive RFC 7622 resourcepart
preparation unchanged.
"""

from __future__ import annotations

import precis_i18n

from xes.jid import JID, InvalidJID

_PRESERVED = precis_i18n.get_profile("NicknameCasePreserved")
_MAPPED = precis_i18n.get_profile("NicknameCaseMapped")


class InvalidNick(ValueError):
    """Not a valid room nickname (the service answers ``jid-malformed``)."""


def enforce(raw: str, max_length: int) -> str:
    """The nickname as the room shows it; raises :class:`InvalidNick`."""
    try:
        nick = _PRESERVED.enforce(raw)
    except UnicodeError as exc:
        raise InvalidNick(f"not a valid nickname: {exc}") from exc
    if not nick or len(nick) > max_length:
        raise InvalidNick(f"a nickname has 1 to {max_length} characters")
    try:
        as_resource = JID.parse(f"r@d/{nick}").resource
    except InvalidJID as exc:
        raise InvalidNick("a nickname must be a valid JID resourcepart") from exc
    if as_resource != nick:
        raise InvalidNick("a nickname must be a valid JID resourcepart")
    return nick


def key(nick: str) -> str:
    """The comparison form: equal keys are the same occupant."""
    try:
        return str(_MAPPED.enforce(nick))
    except UnicodeError:
        return nick.casefold()
