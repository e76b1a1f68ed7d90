"""XEP-0357 Push Notifications: a device enables and disables pushes to its app server.

``<enable xmlns='urn:xmpp:push:0' jid='SERVICE' node='NODE'>`` (with an optional
``pubsub#publish-options`` form, e.g. the app server's ``secret``) to the user's own bare JID
records ``push.enabled`` for the device that sent it; ``<disable jid='SERVICE' [node='NODE']/>``
records ``push.disabled``. What is pushed and when is decided in apply
(:mod:`xes.projections.push`) and published by the node that holds the service's component
connection (:mod:`xes.push_publisher`).
"""

from __future__ import annotations

from xes.events.catalog import PushDeviceState, PushDisabled, PushEnabled, PushNotified
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.projections import push as push_view
from xes.stanza.core import StanzaError, iq_result
from xes.xml import Element, ns

NS = "urn:xmpp:push:0"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
XEPS = ((357, "complete"),)
FEATURES = (NS,)
MAX_NODE = 256
MAX_FIELDS = 16
MAX_VALUE = 1024


def _service(elem: Element) -> str:
    try:
        return str(JID.parse(elem.get("jid") or ""))
    except InvalidJID as exc:
        raise StanzaError("jid-malformed", "jid names the push service") from exc


def _options(enable: Element) -> dict[str, list[str]]:
    form = enable.find("{%s}x" % ns.DATA_FORMS)
    if form is None:
        return {}
    values: dict[str, list[str]] = {}
    for field in form.find_all("{%s}field" % ns.DATA_FORMS):
        var = field.get("var") or ""
        values[var] = [v.text for v in field.find_all("{%s}value" % ns.DATA_FORMS)]
    if values.pop("FORM_TYPE", [PUBLISH_OPTIONS])[:1] != [PUBLISH_OPTIONS]:
        raise StanzaError("bad-request", f"the form's FORM_TYPE must be {PUBLISH_OPTIONS}")
    if len(values) > MAX_FIELDS or any(
        len(var) > MAX_VALUE or sum(len(v) for v in vals) > MAX_VALUE
        for var, vals in values.items()
    ):
        raise StanzaError("not-acceptable", "publish options too large")
    return values


def available(hub: Hub) -> bool:
    """Configured, and every cluster member reads the push events (ADR 0022)."""
    return hub.config.push.enabled and hub.gate.allows(
        PushEnabled, PushDisabled, PushNotified, PushDeviceState
    )


async def handle(hub: Hub, session: LocalSession, iq: Element, child: Element) -> Element:
    to = iq.get("to")
    if to not in (None, session.bare, session.jid.domain):
        raise StanzaError("forbidden", "push is enabled on your own account")
    if not hub.config.push.enabled:
        raise StanzaError("service-unavailable")
    if not available(hub):
        raise StanzaError("feature-not-implemented", "not until every node of the cluster reads it")
    if iq.get("type") != "set":
        raise StanzaError("bad-request", "enable and disable are iq set")
    service = _service(child)
    node = child.get("node")
    if node is not None and (not node or len(node) > MAX_NODE):
        raise StanzaError("bad-request", f"node is 1 to {MAX_NODE} characters")
    if child.name == "disable":
        await hub.log.append(PushDisabled(session.bare, service, node, "user"))
        return iq_result(iq)
    if node is None:
        raise StanzaError("bad-request", "enable needs the node the app server gave you")
    options = _options(child)
    with hub.read() as txn:
        current = push_view.registrations(hub.store, txn, session.bare)
    known = any(r.service == service and r.node == node for r in current)
    if not known and len(current) >= hub.config.push.max_registrations:
        raise StanzaError("resource-constraint", "too many push registrations on this account")
    resource = session.full.partition("/")[2]
    await hub.log.append(PushEnabled(session.bare, resource, service, node, options))
    return iq_result(iq)
