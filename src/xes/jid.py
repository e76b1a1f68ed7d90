"""XMPP addresses (RFC 7622): parsing, PRECIS enforcement and the canonical string form.

Every JID that enters the server goes through :meth:`JID.parse` (stanza ``to``/``from``, roster
items, configuration) or :func:`normalize_localpart` (SASL usernames), so two spellings of one
address always compare equal: ``Juliet@EXAMPLE.com`` and ``juliet@example.com`` are the same
account. Failures raise :class:`InvalidJID`, which maps to the ``jid-malformed`` stanza error
(RFC 6120 §8.3.3.8).

Parts are prepared as RFC 7622 §3 says:

* localpart: PRECIS ``UsernameCaseMapped`` (RFC 8265 §3.3), then the characters
  ``" & ' / : < > @`` are refused (RFC 7622 §3.3.1);
* domainpart: one trailing dot stripped, IP literals kept (canonical form), otherwise each
  label lowercased and nameprepped, A-labels turned into U-labels (§3.2.2). Python ships only
  IDNA2003 (``encodings.idna``), so this is IDNA2008-ish: ``ß`` maps to ``ss`` as in IDNA2003;
* resourcepart: PRECIS ``OpaqueString`` (RFC 8265 §4.2).

Each part is 1 to 1023 bytes of UTF-8 (RFC 7622 §3.1). Parsing is cached: the same addresses
recur on every stanza.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from encodings import idna
from functools import lru_cache
from typing import Final

import precis_i18n

__all__ = ["JID", "InvalidJID", "normalize_localpart"]

_USERNAME = precis_i18n.get_profile("UsernameCaseMapped")
_OPAQUE = precis_i18n.get_profile("OpaqueString")

_MAX_PART: Final = 1023
"""RFC 7622 §3.1: each part is at most 1023 octets once prepared."""
_MAX_INPUT: Final = 3 * 3 * _MAX_PART
"""Longest raw string considered at all: three parts that preparation may shrink (width and
normalization mappings), so a generous multiple; longer input is refused before PRECIS runs."""
_LOCAL_FORBIDDEN: Final = frozenset("\"&'/:<>@")
"""RFC 7622 §3.3.1: characters a localpart must not contain even though PRECIS allows them."""
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_NON_LDH_ASCII = re.compile(r"[\x00-\x2c\x2e\x2f\x3a-\x60\x7b-\x7f]")
_IPV4_SHAPE = re.compile(r"[0-9]+(?:\.[0-9]+){3}\Z")


class InvalidJID(ValueError):
    """A string that is not a valid XMPP address; reply with ``jid-malformed``."""

    condition: Final = "jid-malformed"
    """The RFC 6120 §8.3.3.8 stanza error condition this maps to."""


@dataclass(frozen=True, slots=True)
class JID:
    """A prepared XMPP address. Build it with :meth:`parse` or :meth:`from_parts`.

    The constructor does not validate; it is for parts that are already prepared (for instance
    read back from the event log).
    """

    local: str | None
    """Prepared localpart (``juliet``), or ``None`` for a domain or service JID."""
    domain: str
    """Prepared domainpart (``example.com``); U-labels, no trailing dot."""
    resource: str | None = None
    """Prepared resourcepart (``balcony``), or ``None`` for a bare JID."""

    @classmethod
    def parse(cls, text: str) -> JID:
        """Split ``text`` (RFC 7622 §3.1) and prepare each part; cached."""
        return _parse(text)

    @classmethod
    def from_parts(cls, local: str | None, domain: str, resource: str | None = None) -> JID:
        """Prepare and validate separate parts (e.g. a SASL username and the served domain)."""
        return JID(
            None if local is None else _prepare_local(local),
            _prepare_domain(domain),
            None if resource is None else _prepare_resource(resource),
        )

    @property
    def bare(self) -> JID:
        """This address without its resource (RFC 6120 §1.4 "bare JID")."""
        if self.resource is None:
            return self
        return JID(self.local, self.domain, None)

    @property
    def is_bare(self) -> bool:
        """Whether there is no resourcepart."""
        return self.resource is None

    def with_resource(self, resource: str) -> JID:
        """The full JID for ``resource`` (prepared with OpaqueString) on this bare address."""
        return JID(self.local, self.domain, _prepare_resource(resource))

    def __str__(self) -> str:
        text = self.domain if self.local is None else f"{self.local}@{self.domain}"
        return text if self.resource is None else f"{text}/{self.resource}"


def bare_of(jid: str) -> str:
    """The bare part of an already normalised JID string (no parsing: stored JIDs are valid)."""
    return jid.split("/", 1)[0]


def domain_part(to: str | None) -> str:
    """The domain of a ``to`` address as services are matched, without parsing (lowercased;
    empty without one): which service or component a stanza is for."""
    return to.split("/", 1)[0].rsplit("@", 1)[-1].lower() if to else ""


def bare_in(raw: str, domain: str) -> str:
    """``raw`` (a bare JID, or its local part) as a normalised bare JID of ``domain``; raises
    :class:`InvalidJID` for anything else (what the CLI and the admin API accept for a user
    or a room)."""
    jid = JID.parse(raw if "@" in raw else f"{raw}@{domain}")
    if jid.domain != domain or jid.local is None or jid.resource is not None:
        raise InvalidJID(f"{raw!r} is not a bare JID of {domain}")
    return str(jid)


def bare_in_any(raw: str, domains: Sequence[str]) -> str:
    """``raw`` as a normalised bare JID of one of ``domains`` (the hosted domains, ADR 0023);
    a bare local part is taken as one of the first. Raises :class:`InvalidJID` naming them."""
    jid = JID.parse(raw if "@" in raw else f"{raw}@{domains[0]}")
    if jid.local is None or jid.resource is not None:
        raise InvalidJID(f"{raw!r} is not a bare JID")
    if jid.domain not in domains:
        raise InvalidJID(f"{jid.domain} is not served here (hosted: {', '.join(domains)})")
    return str(jid)


def normalize_localpart(username: str) -> str:
    """A SASL username prepared as a localpart (RFC 6120 §6.3.8); raises :class:`InvalidJID`."""
    return _prepare_local(username)


@lru_cache(maxsize=16384)
def _parse(text: str) -> JID:
    if not text or len(text) > _MAX_INPUT:
        raise InvalidJID("empty or oversized JID")
    # RFC 7622 §3.1: the resource starts at the first "/", the localpart ends at the first "@"
    # before it; a resource may itself contain "@" and "/".
    rest, slash, resource = text.partition("/")
    local, at, domain = rest.partition("@")
    if not at:
        local, domain = "", rest
    elif not local:
        raise InvalidJID("empty localpart")
    if slash and not resource:
        raise InvalidJID("empty resourcepart")
    return JID(
        _prepare_local(local) if at else None,
        _prepare_domain(domain),
        _prepare_resource(resource) if slash else None,
    )


def _check_length(part: str, what: str) -> str:
    size = len(part.encode("utf-8"))
    if size == 0 or size > _MAX_PART:
        raise InvalidJID(f"{what} must be 1 to {_MAX_PART} bytes")
    return part


def _prepare_local(local: str) -> str:
    if not local or len(local) > _MAX_INPUT:
        raise InvalidJID("empty or oversized localpart")
    try:
        prepared: str = _USERNAME.enforce(local)
    except UnicodeError as exc:
        raise InvalidJID(f"invalid localpart: {exc.reason}") from None
    if not _LOCAL_FORBIDDEN.isdisjoint(prepared):
        raise InvalidJID("localpart contains one of \" & ' / : < > @")
    return _check_length(prepared, "localpart")


def _prepare_resource(resource: str) -> str:
    if not resource or len(resource) > _MAX_INPUT:
        raise InvalidJID("empty or oversized resourcepart")
    try:
        prepared: str = _OPAQUE.enforce(resource)
    except UnicodeError as exc:
        raise InvalidJID(f"invalid resourcepart: {exc.reason}") from None
    return _check_length(prepared, "resourcepart")


def _prepare_domain(domain: str) -> str:
    # RFC 7622 §3.2: a trailing label separator is stripped before anything else.
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain or len(domain) > _MAX_INPUT:
        raise InvalidJID("empty or oversized domainpart")
    if domain[0] == "[":
        return _prepare_ipv6(domain)
    if _IPV4_SHAPE.match(domain):
        try:
            return str(ipaddress.IPv4Address(domain))
        except ValueError:
            raise InvalidJID("invalid IPv4 address") from None
    # Label separators (IDNA2003 §3.1): full stop plus the ideographic and fullwidth ones.
    labels = re.split("[.\u3002\uff0e\uff61]", domain)
    return _check_length(".".join(_prepare_label(label) for label in labels), "domainpart")


def _prepare_ipv6(domain: str) -> str:
    # RFC 7622 §3.2.1: IPv6 literals are written in brackets (RFC 3986 IP-literal).
    if not domain.endswith("]"):
        raise InvalidJID("unterminated IPv6 literal")
    try:
        address = ipaddress.IPv6Address(domain[1:-1])
    except ValueError:
        raise InvalidJID("invalid IPv6 address") from None
    if address.scope_id is not None:
        raise InvalidJID("IPv6 zone identifiers are not allowed")
    return f"[{address.compressed}]"


def _prepare_label(label: str) -> str:
    if not label:
        raise InvalidJID("empty domain label")
    if label.isascii():
        label = label.lower()
        if label.startswith("xn--"):
            return _a_label_to_u_label(label)
        if not _LDH_LABEL.match(label):
            # LDH rule (RFC 5890 §2.3.1): letters, digits, inner hyphens, 1 to 63 octets.
            raise InvalidJID(f"invalid domain label {label!r}")
        return label
    try:
        prepared = idna.nameprep(label)  # case fold, NFKC, prohibited characters, bidi
        idna.ToASCII(prepared)  # length and punycode checks
    except UnicodeError as exc:
        raise InvalidJID(f"invalid domain label: {exc}") from None
    if prepared.isascii():
        # Width mapping turned it into ASCII (fullwidth letters): apply the LDH rule.
        return _prepare_label(prepared)
    return _check_u_label(prepared)


def _check_u_label(label: str) -> str:
    if _NON_LDH_ASCII.search(label) or label[0] == "-" or label[-1] == "-":
        # IDNA2003 without UseSTD3ASCIIRules lets mappings produce "@", "/" or "." (from
        # fullwidth forms); IDNA2008 allows only letters, digits and hyphens from ASCII.
        raise InvalidJID("invalid ASCII character in domain label")
    return label


def _a_label_to_u_label(label: str) -> str:
    # RFC 7622 §3.2.2: A-labels are converted to U-labels, so both spellings compare equal.
    try:
        ulabel = idna.ToUnicode(label)
        if ulabel.isascii() or idna.nameprep(ulabel) != ulabel:
            raise InvalidJID(f"invalid A-label {label!r}")
    except UnicodeError as exc:
        raise InvalidJID(f"invalid A-label: {exc}") from None
    return _check_u_label(ulabel)
