"""XEP-0133 service administration as XEP-0050 ad-hoc commands on the server's JID.

The same operations as the admin HTTP API (:mod:`xes.admin.service`), for the XMPP clients of
``[admin] admins`` (Gajim, Psi, Converse have a commands menu). Only admins see the command
list (XEP-0050 §2.2 lets a server filter it) and anyone else is ``forbidden``. Each command is
two steps: ``execute`` returns the form (status ``executing``, with a session id), the submitted
form runs it (``completed``, with a note, or a result form for the queries). The session id is
not remembered: the submitted form carries everything, so a command may be completed on any
node and nothing is held between the steps; a submit without a prior execute works too.

Commands: add-user, delete-user, change-user-password, end-user-session, announce,
get-registered-users-num, get-online-users-num, get-online-users-list.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from xes.admin import service
from xes.hub import Hub, LocalSession
from xes.stanza import forms
from xes.stanza.core import StanzaError, iq_result
from xes.xml import E, Element, ns

COMMANDS = "http://jabber.org/protocol/commands"
ADMIN = "http://jabber.org/protocol/admin"
COMMAND = "{%s}command" % COMMANDS

Runner = Callable[[Hub, LocalSession, dict[str, list[str]]], Awaitable[Element]]


@dataclass(frozen=True)
class Command:
    node: str
    name: str
    fields: tuple[Element, ...]
    """The form's fields; none: the command runs at once (a query)."""
    run: Runner


def _note(text: str) -> Element:
    return E("{%s}note" % COMMANDS, {"type": "info"}, text)


def _one(values: dict[str, list[str]], var: str) -> str:
    found = [v for v in values.get(var, []) if v.strip()]
    if not found:
        raise StanzaError("bad-request", f"the form needs {var}")
    return found[0].strip()


def _many(values: dict[str, list[str]], var: str) -> list[str]:
    found = [v.strip() for v in values.get(var, []) if v.strip()]
    if not found:
        raise StanzaError("bad-request", f"the form needs {var}")
    return found


def _result(*fields: Element) -> Element:
    return forms.form("result", ADMIN, *fields)


async def _add_user(hub: Hub, session: LocalSession, values: dict[str, list[str]]) -> Element:
    password = _one(values, "password")
    if values.get("password-verify") and _one(values, "password-verify") != password:
        raise StanzaError("bad-request", "the passwords differ")
    jid = await service.add_user(hub, _one(values, "accountjid"), password)
    return _note(f"user {jid} added")


async def _delete_user(hub: Hub, session: LocalSession, values: dict[str, list[str]]) -> Element:
    removed = [await service.remove_user(hub, jid) for jid in _many(values, "accountjids")]
    return _note("removed " + ", ".join(removed))


async def _change_password(
    hub: Hub, session: LocalSession, values: dict[str, list[str]]
) -> Element:
    jid = await service.change_password(hub, _one(values, "accountjid"), _one(values, "password"))
    return _note(f"password of {jid} changed")


async def _end_sessions(hub: Hub, session: LocalSession, values: dict[str, list[str]]) -> Element:
    ended = sum([await service.end_sessions(hub, jid) for jid in _many(values, "accountjids")])
    return _note(f"{ended} session(s) ended")


async def _announce(hub: Hub, session: LocalSession, values: dict[str, list[str]]) -> Element:
    body = "\n".join(values.get("announcement", [])).strip()
    subject = (values.get("subject") or [""])[0].strip() or None
    sent = await service.announce(hub, body, subject)
    return _note(f"sent to {sent} online session(s)")


async def _registered(hub: Hub, session: LocalSession, values: dict[str, list[str]]) -> Element:
    count = len(service.list_users(hub))
    return _result(forms.field("registeredusersnum", None, [str(count)]))


async def _online_num(hub: Hub, session: LocalSession, values: dict[str, list[str]]) -> Element:
    users = {s["jid"].split("/")[0] for s in service.sessions(hub)}
    return _result(forms.field("onlineusersnum", None, [str(len(users))]))


async def _online_list(hub: Hub, session: LocalSession, values: dict[str, list[str]]) -> Element:
    users = sorted({s["jid"].split("/")[0] for s in service.sessions(hub)})
    return _result(forms.field("onlineuserjids", "jid-multi", users))


def _f(var: str, type_: str, label: str) -> Element:
    return E(
        forms.FIELD,
        {"var": var, "type": type_, "label": label},
        E("{%s}required" % ns.DATA_FORMS),
    )


ALL = (
    Command(
        f"{ADMIN}#add-user",
        "Add a user",
        (
            _f("accountjid", "jid-single", "The Jabber ID for the account to be added"),
            _f("password", "text-private", "The password for this account"),
            _f("password-verify", "text-private", "Retype password"),
        ),
        _add_user,
    ),
    Command(
        f"{ADMIN}#delete-user",
        "Delete a user",
        (_f("accountjids", "jid-multi", "The Jabber ID(s) to delete"),),
        _delete_user,
    ),
    Command(
        f"{ADMIN}#change-user-password",
        "Change a user's password",
        (
            _f("accountjid", "jid-single", "The Jabber ID for this account"),
            _f("password", "text-private", "The password for this account"),
        ),
        _change_password,
    ),
    Command(
        f"{ADMIN}#end-user-session",
        "End user sessions",
        (_f("accountjids", "jid-multi", "The Jabber ID(s) whose sessions end"),),
        _end_sessions,
    ),
    Command(
        f"{ADMIN}#announce",
        "Send an announcement to online users",
        (
            E(forms.FIELD, {"var": "subject", "type": "text-single", "label": "Subject"}),
            _f("announcement", "text-multi", "Announcement"),
        ),
        _announce,
    ),
    Command(f"{ADMIN}#get-registered-users-num", "Number of registered users", (), _registered),
    Command(f"{ADMIN}#get-online-users-num", "Number of online users", (), _online_num),
    Command(f"{ADMIN}#get-online-users-list", "List of online users", (), _online_list),
)
BY_NODE = {command.node: command for command in ALL}


def enabled(hub: Hub) -> bool:
    return bool(hub.config.admin.admins)


def is_admin(hub: Hub, session: LocalSession) -> bool:
    return session.bare in hub.config.admin.admins


def items(hub: Hub, session: LocalSession) -> list[Element]:
    """The disco#items of the commands node: the commands, for admins only."""
    if not is_admin(hub, session):
        return []
    return [
        E("{%s}item" % ns.DISCO_ITEMS, {"jid": session.jid.domain, "node": c.node, "name": c.name})
        for c in ALL
    ]


def node_info(node: str) -> list[Element] | None:
    """disco#info of a command node (XEP-0050 §2.3), or None for an unknown node."""
    command = BY_NODE.get(node)
    if command is None:
        return None
    return [
        E(
            "{%s}identity" % ns.DISCO_INFO,
            {"category": "automation", "type": "command-node", "name": command.name},
        ),
        E("{%s}feature" % ns.DISCO_INFO, {"var": COMMANDS}),
        E("{%s}feature" % ns.DISCO_INFO, {"var": ns.DATA_FORMS}),
    ]


async def handle(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    if iq.get("type") != "set":
        raise StanzaError("bad-request", "commands are executed with iq set")
    if not enabled(hub) or not is_admin(hub, session):
        raise StanzaError("forbidden", "server administrators only ([admin] admins)")
    node = query.get("node", "")
    command = BY_NODE.get(node)
    if command is None:
        raise StanzaError("item-not-found", "no such command")
    action = query.get("action") or "execute"
    sessionid = query.get("sessionid") or secrets.token_urlsafe(9)
    attrs = {"node": node, "sessionid": sessionid}
    if action == "cancel":
        return iq_result(iq, E(COMMAND, {**attrs, "status": "canceled"}))
    if action not in ("execute", "complete", "next"):
        raise StanzaError("bad-request", "unknown action", app=E("{%s}malformed-action" % COMMANDS))
    form = query.find(forms.X)
    submitted = form is not None and form.get("type") == "submit"
    if command.fields and not submitted:
        return iq_result(
            iq,
            E(
                COMMAND,
                {**attrs, "status": "executing"},
                E("{%s}actions" % COMMANDS, {"execute": "complete"}, E("{%s}complete" % COMMANDS)),
                forms.form("form", ADMIN, *command.fields),
            ),
        )
    values = forms.values(form) if form is not None else {}
    try:
        out = await command.run(hub, session, values)
    except service.AdminError as exc:
        condition = {400: "bad-request", 404: "item-not-found", 409: "conflict"}.get(
            exc.status, "resource-constraint" if exc.status >= 500 else "not-acceptable"
        )
        raise StanzaError(condition, exc.text) from None
    return iq_result(iq, E(COMMAND, {**attrs, "status": "completed"}, out))
