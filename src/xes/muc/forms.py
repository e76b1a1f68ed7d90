"""The ``muc#roomconfig`` form (XEP-0045 §10.2, §15.5.3) and ``muc#roominfo`` (§15.5.4).

:func:`config_form` renders a room's configuration for its owner; :func:`parse_config_form`
reads a submitted form into a new :class:`~xes.muc.model.RoomConfig` (fields left out keep their
value, unknown fields are ignored as XEP-0004 allows) plus the owner and admin lists the form
may carry. The password never leaves the server: the form shows an empty secret, and a submitted
empty secret keeps the current one while the room stays password-protected.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace

from xes.jid import JID, InvalidJID
from xes.muc.model import ALLOW_PM, WHOIS, RoomConfig
from xes.stanza import forms
from xes.stanza.core import StanzaError
from xes.xml import E, Element, ns

ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
ROOMINFO = "http://jabber.org/protocol/muc#roominfo"
_X = "{%s}x" % ns.DATA_FORMS
_FIELD = "{%s}field" % ns.DATA_FORMS
_VALUE = "{%s}value" % ns.DATA_FORMS
_OPTION = "{%s}option" % ns.DATA_FORMS
PBKDF2_ROUNDS = 4096

MAX_USERS_OPTIONS = ("10", "20", "30", "50", "100", "200", "500", "1000")


def hash_password(password: str) -> str:
    salt = secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), PBKDF2_ROUNDS)
    return f"{salt}${digest.hex()}"


def check_password(stored: str, password: str) -> bool:
    salt, _, want = stored.partition("$")
    got = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), PBKDF2_ROUNDS)
    return hmac.compare_digest(got.hex(), want)


def _field(
    var: str, type_: str, label: str, values: list[str], options: tuple[str, ...] = ()
) -> Element:
    children = [E(_OPTION, {"label": o}, E(_VALUE, None, o)) for o in options]
    children += [E(_VALUE, None, v) for v in values]
    return E(_FIELD, {"var": var, "type": type_, "label": label}, *children)


def _bool(value: bool) -> list[str]:
    return ["1" if value else "0"]


def config_form(
    config: RoomConfig, owners: list[str], admins: list[str], max_occupants: int
) -> Element:
    """The configuration form an owner gets (XEP-0045 §10.2 example 163)."""
    max_users = str(config.max_users or max_occupants)
    fields = [
        E(_FIELD, {"var": "FORM_TYPE", "type": "hidden"}, E(_VALUE, None, ROOMCONFIG)),
        _field("muc#roomconfig_roomname", "text-single", "Name", [config.name]),
        _field("muc#roomconfig_roomdesc", "text-single", "Description", [config.description]),
        _field("muc#roomconfig_persistentroom", "boolean", "Persistent", _bool(config.persistent)),
        _field("muc#roomconfig_publicroom", "boolean", "Listed publicly", _bool(config.public)),
        _field("muc#roomconfig_membersonly", "boolean", "Members only", _bool(config.members_only)),
        _field("muc#roomconfig_moderatedroom", "boolean", "Moderated", _bool(config.moderated)),
        _field(
            "muc#roomconfig_passwordprotectedroom",
            "boolean",
            "Password protected",
            _bool(bool(config.password_hash)),
        ),
        _field("muc#roomconfig_roomsecret", "text-private", "Password (empty: unchanged)", []),
        _field("muc#roomconfig_whois", "list-single", "Who sees real JIDs", [config.whois], WHOIS),
        _field(
            "muc#roomconfig_maxusers",
            "list-single",
            "Maximum occupants",
            [max_users],
            tuple(o for o in MAX_USERS_OPTIONS if int(o) <= max_occupants),
        ),
        _field(
            "muc#maxhistoryfetch", "text-single", "History length", [str(config.history_length)]
        ),
        _field(
            "muc#roomconfig_allowpm",
            "list-single",
            "Who may send private messages",
            [config.allow_pm],
            ALLOW_PM,
        ),
        _field(
            "muc#roomconfig_allowinvites",
            "boolean",
            "Occupants may invite",
            _bool(config.allow_invites),
        ),
        _field(
            "muc#roomconfig_changesubject",
            "boolean",
            "Participants may change the subject",
            _bool(config.change_subject),
        ),
        _field(
            "muc#roomconfig_enablelogging", "boolean", "Archive messages", _bool(config.logging)
        ),
        _field("muc#roomconfig_roomowners", "jid-multi", "Owners", owners),
        _field("muc#roomconfig_roomadmins", "jid-multi", "Admins", admins),
    ]
    title = E("{%s}title" % ns.DATA_FORMS, None, "Room configuration")
    return E(_X, {"type": "form"}, title, *fields)


@dataclass(frozen=True, slots=True)
class SubmittedConfig:
    config: RoomConfig
    owners: list[str] | None
    """Bare JIDs the form lists as owners, when it has the field."""
    admins: list[str] | None


def _as_bool(values: list[str], name: str) -> bool:
    value = values[0].strip().lower() if values else ""
    if value in ("1", "true"):
        return True
    if value in ("0", "false", ""):
        return False
    raise StanzaError("bad-request", f"{name} must be a boolean")


def _jids(values: list[str], name: str) -> list[str]:
    out = set()
    for value in values:
        if not value.strip():
            continue
        try:
            out.add(str(JID.parse(value.strip()).bare))
        except InvalidJID as exc:
            raise StanzaError("jid-malformed", f"{name}: {value!r} is not a JID") from exc
    return sorted(out)


def parse_config_form(
    form: Element, current: RoomConfig, max_occupants: int, max_history: int
) -> SubmittedConfig:
    """The configuration an owner submitted; ``bad-request`` for a value that cannot be."""
    if form.get("type") != "submit":
        raise StanzaError("bad-request", "the configuration form must be of type submit")
    values = forms.values(form)
    form_type = values.pop("FORM_TYPE", [ROOMCONFIG])
    if form_type[:1] != [ROOMCONFIG]:
        raise StanzaError("bad-request", f"FORM_TYPE must be {ROOMCONFIG}")
    config = current
    text = {"muc#roomconfig_roomname": "name", "muc#roomconfig_roomdesc": "description"}
    for var, attr in text.items():
        if var in values:
            config = replace(config, **{attr: " ".join(values[var])[:1024]})
    flags = {
        "muc#roomconfig_persistentroom": "persistent",
        "muc#roomconfig_publicroom": "public",
        "muc#roomconfig_membersonly": "members_only",
        "muc#roomconfig_moderatedroom": "moderated",
        "muc#roomconfig_allowinvites": "allow_invites",
        "muc#roomconfig_changesubject": "change_subject",
        "muc#roomconfig_enablelogging": "logging",
    }
    for var, attr in flags.items():
        if var in values:
            config = replace(config, **{attr: _as_bool(values[var], var)})
    if "muc#roomconfig_whois" in values:
        whois = (values["muc#roomconfig_whois"] or [""])[0]
        if whois not in WHOIS:
            raise StanzaError("bad-request", "muc#roomconfig_whois must be moderators or anyone")
        config = replace(config, whois=whois)
    if "muc#roomconfig_allowpm" in values:
        allow = (values["muc#roomconfig_allowpm"] or [""])[0]
        if allow not in ALLOW_PM:
            raise StanzaError(
                "bad-request", "muc#roomconfig_allowpm: anyone|participants|moderators|none"
            )
        config = replace(config, allow_pm=allow)
    if "muc#roomconfig_maxusers" in values:
        raw = (values["muc#roomconfig_maxusers"] or [""])[0].strip()
        if raw in ("", "none", "0"):
            config = replace(config, max_users=max_occupants)
        else:
            try:
                wanted = int(raw)
            except ValueError as exc:
                raise StanzaError(
                    "bad-request", "muc#roomconfig_maxusers must be a number"
                ) from exc
            if wanted < 1:
                raise StanzaError("bad-request", "muc#roomconfig_maxusers must be positive")
            config = replace(config, max_users=min(wanted, max_occupants))
    for var in ("muc#maxhistoryfetch", "muc#roomconfig_historylength"):
        if var in values:
            try:
                length = int((values[var] or ["0"])[0].strip() or "0")
            except ValueError as exc:
                raise StanzaError("bad-request", f"{var} must be a number") from exc
            config = replace(config, history_length=max(0, min(length, max_history)))
    secret = " ".join(values.get("muc#roomconfig_roomsecret", [])).strip()
    # A secret given means a protected room unless the form says otherwise: an owner who set a
    # password and forgot the box must not get an open room believing it protected.
    protected = config.password_hash != "" or bool(secret)
    if "muc#roomconfig_passwordprotectedroom" in values:
        protected = _as_bool(values["muc#roomconfig_passwordprotectedroom"], "password")
    if not protected:
        config = replace(config, password_hash="")
    elif secret:
        config = replace(config, password_hash=hash_password(secret))
    elif not config.password_hash:
        raise StanzaError("not-acceptable", "a password-protected room needs a password")
    owners = values.get("muc#roomconfig_roomowners")
    admins = values.get("muc#roomconfig_roomadmins")
    return SubmittedConfig(
        config,
        None if owners is None else _jids(owners, "owners"),
        None if admins is None else _jids(admins, "admins"),
    )


def room_features(config: RoomConfig, locked: bool) -> list[str]:
    """The ``muc_*`` features of a room's disco#info (XEP-0045 §6.4, §15.6)."""
    out = [
        "muc_persistent" if config.persistent else "muc_temporary",
        "muc_public" if config.public else "muc_hidden",
        "muc_membersonly" if config.members_only else "muc_open",
        "muc_moderated" if config.moderated else "muc_unmoderated",
        "muc_passwordprotected" if config.password_hash else "muc_unsecured",
        "muc_nonanonymous" if config.whois == "anyone" else "muc_semianonymous",
    ]
    if locked:
        out.append("muc_unconfigured")
    return out


def room_info(config: RoomConfig, occupants: int, subject: str) -> Element:
    """The ``muc#roominfo`` extended disco form (XEP-0045 §6.4, XEP-0128)."""
    fields = [
        E(_FIELD, {"var": "FORM_TYPE", "type": "hidden"}, E(_VALUE, None, ROOMINFO)),
        E(_FIELD, {"var": "muc#roominfo_description"}, E(_VALUE, None, config.description)),
        E(_FIELD, {"var": "muc#roominfo_occupants"}, E(_VALUE, None, str(occupants))),
        E(_FIELD, {"var": "muc#roominfo_subject"}, E(_VALUE, None, subject)),
        E(_FIELD, {"var": "muc#roomconfig_roomname"}, E(_VALUE, None, config.name)),
        E(_FIELD, {"var": "muc#roominfo_logs"}, E(_VALUE, None, "1" if config.logging else "0")),
        E(
            _FIELD,
            {"var": "muc#roomconfig_allowinvites"},
            E(_VALUE, None, "1" if config.allow_invites else "0"),
        ),
        E(_FIELD, {"var": "muc#roomconfig_allowpm"}, E(_VALUE, None, config.allow_pm)),
    ]
    return E(_X, {"type": "result"}, *fields)
