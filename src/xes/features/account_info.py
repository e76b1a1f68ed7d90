"""Small queries clients ask the server: entity time (XEP-0202), last activity (XEP-0012),
external services such as STUN/TURN (XEP-0215), and the contact addresses of the server's
disco#info (XEP-0157)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.projections import account_data
from xes.projections import roster as roster_view
from xes.projections import sessions as sessions_view
from xes.stanza import forms
from xes.stanza.core import StanzaError, iq_result
from xes.stanza.delay import stamp
from xes.xml import E, Element

TIME = "urn:xmpp:time"
LAST = "jabber:iq:last"
EXTDISCO = "urn:xmpp:extdisco:2"
SERVERINFO = "http://jabber.org/network/serverinfo"
XEPS = ((12, "complete"), (157, "complete"), (202, "complete"), (215, "complete"))


async def entity_time(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    if iq.get("type") != "get":
        raise StanzaError("bad-request")
    now = int(time.time() * 1000)
    return iq_result(
        iq,
        E(
            "{%s}time" % TIME,
            None,
            E("{%s}tzo" % TIME, None, "+00:00"),
            E("{%s}utc" % TIME, None, stamp(now)),
        ),
    )


async def last_activity(hub: Hub, session: LocalSession, iq: Element, query: Element) -> Element:
    """XEP-0012: the server's uptime (§5), or how long ago an account was last online (§4)."""
    if iq.get("type") != "get":
        raise StanzaError("bad-request")
    to = iq.get("to")
    if not to or hub.is_local(to):
        seconds = int(time.time() - hub.started)
        return iq_result(iq, E("{%s}query" % LAST, {"seconds": str(seconds)}))
    try:
        bare = str(JID.parse(to).bare)
    except InvalidJID as exc:
        raise StanzaError("jid-malformed") from exc
    with hub.read() as txn:
        if bare != session.bare:
            # §4: only to those allowed to see the user's presence.
            item = roster_view.item(hub.store, txn, bare, session.bare)
            if item is None or item.subscription not in ("from", "both"):
                raise StanzaError("forbidden", "you are not subscribed to this user's presence")
        online = any(s.available for s in sessions_view.of_user(hub.store, txn, bare))
        last = account_data.last_activity(hub.store, txn, bare)
    if online:
        return iq_result(iq, E("{%s}query" % LAST, {"seconds": "0"}))
    if last is None:
        raise StanzaError("item-not-found", "never seen online")
    seconds = max(0, int(time.time() - last[0] / 1000))
    return iq_result(iq, E("{%s}query" % LAST, {"seconds": str(seconds)}, last[1] or None))


def contact_form(hub: Hub) -> Element | None:
    """XEP-0157 §2: the ``serverinfo`` extended disco#info form, when addresses are set."""
    cfg = hub.config.contact
    fields = [
        forms.field(f"{name}-addresses", None, list(getattr(cfg, name)))
        for name in ("abuse", "admin", "feedback", "sales", "security", "support")
        if getattr(cfg, name)
    ]
    return forms.form("result", SERVERINFO, *fields) if fields else None


def _secret(svc: dict[str, Any]) -> str | None:
    if svc.get("secret"):
        return str(svc["secret"])
    if svc.get("secret_file"):
        return Path(svc["secret_file"]).read_text().strip()
    return None


def _service(hub: Hub, svc: dict[str, Any], user: str) -> Element:
    attrs = {
        "type": svc["type"],
        "host": svc["host"],
        "port": str(svc["port"]),
        "transport": svc.get("transport"),
        "name": svc.get("name"),
    }
    secret = _secret(svc)
    if secret is not None:
        # The TURN REST API scheme (coturn use-auth-secret): username "<expiry>:<user>",
        # password base64(HMAC-SHA1(secret, username)); nothing to store, any node can issue it.
        expires = int(time.time()) + hub.config.external_services.credential_ttl
        username = f"{expires}:{user}"
        digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
        attrs |= {
            "username": username,
            "password": base64.b64encode(digest).decode(),
            "expires": stamp(expires * 1000),
            "restricted": "1",
        }
    return E("{%s}service" % EXTDISCO, attrs)


async def external_services(
    hub: Hub, session: LocalSession, iq: Element, query: Element
) -> Element:
    """XEP-0215 §3.1 services (optionally of one ``type``) and §3.3 credentials."""
    services = hub.config.external_services.services
    if not services:
        raise StanzaError("service-unavailable")
    if iq.get("type") != "get":
        raise StanzaError("bad-request")
    if query.name == "credentials":
        wanted = query.find("{%s}service" % EXTDISCO)
        if wanted is None:
            raise StanzaError("bad-request", "name the service (host and type)")
        chosen = [
            s
            for s in services
            if s["host"] == wanted.get("host")
            and s["type"] == wanted.get("type")
            and (wanted.get("port") is None or str(s["port"]) == wanted.get("port"))
        ]
        if not chosen:
            raise StanzaError("item-not-found")
        return iq_result(
            iq, E("{%s}credentials" % EXTDISCO, None, _service(hub, chosen[0], session.bare))
        )
    type_ = query.get("type")
    chosen = [s for s in services if type_ is None or s["type"] == type_]
    return iq_result(
        iq, E("{%s}services" % EXTDISCO, None, *(_service(hub, s, session.bare) for s in chosen))
    )
