"""Node configuration (XEP-0060 §16.4.4 ``pubsub#node_config``) with PEP defaults (XEP-0163 §7).

A configuration is a frozen value stored as canonical JSON in the node's row, so every node of the
cluster holds the same one. ``max_items`` is stored as a number: ``max`` is resolved to the
service's cap by the proposer, so apply never reads local settings. The forms in both directions
live here: the owner's configuration form, a submitted configuration and ``publish-options``
(XEP-0223) preconditions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from xes.jid import JID, InvalidJID
from xes.stanza import forms
from xes.stanza.core import StanzaError
from xes.xml import E, Element, ns

ACCESS_MODELS = ("presence", "open", "roster", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
PUBLISH_MODELS = ("publishers",)
"""Only the account owner publishes to its own PEP nodes (XEP-0163 §4)."""


def precondition_not_met(text: str) -> StanzaError:
    return StanzaError("conflict", text, app=E("{%s}precondition-not-met" % ns.PUBSUB_ERRORS))


@dataclass(frozen=True, slots=True)
class NodeConfig:
    access_model: str = "presence"
    max_items: int = 1
    persist_items: bool = True
    send_last_published_item: str = "on_sub_and_presence"
    notify_retract: bool = True
    notify_delete: bool = True
    deliver_notifications: bool = True
    deliver_payloads: bool = True
    title: str = ""
    type: str = ""
    roster_groups_allowed: list[str] = field(default_factory=list)
    publish_model: str = "publishers"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NodeConfig:
        known = {k: v for k, v in obj.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def kept(self) -> int:
        """How many items the node keeps: the newest only when items are not persistent."""
        return self.max_items if self.persist_items else 1


def _fields(cfg: NodeConfig, cap: int) -> list[Element]:
    f = forms.field
    return [
        f("pubsub#title", "text-single", [cfg.title], label="A short name for the node"),
        f("pubsub#type", "text-single", [cfg.type], label="Payload type"),
        f(
            "pubsub#access_model",
            "list-single",
            [cfg.access_model],
            label="Who may subscribe and retrieve items",
            options=ACCESS_MODELS,
        ),
        f(
            "pubsub#roster_groups_allowed",
            "list-multi",
            cfg.roster_groups_allowed,
            label="Roster groups allowed (access model roster)",
        ),
        f(
            "pubsub#publish_model",
            "list-single",
            [cfg.publish_model],
            label="Who may publish",
            options=PUBLISH_MODELS,
        ),
        f("pubsub#max_items", "text-single", [str(cfg.max_items)], label=f"Items kept (max {cap})"),
        f("pubsub#persist_items", "boolean", forms.bool_value(cfg.persist_items)),
        f(
            "pubsub#send_last_published_item",
            "list-single",
            [cfg.send_last_published_item],
            options=SEND_LAST,
        ),
        f("pubsub#notify_retract", "boolean", forms.bool_value(cfg.notify_retract)),
        f("pubsub#notify_delete", "boolean", forms.bool_value(cfg.notify_delete)),
        f("pubsub#deliver_notifications", "boolean", forms.bool_value(cfg.deliver_notifications)),
        f("pubsub#deliver_payloads", "boolean", forms.bool_value(cfg.deliver_payloads)),
    ]


def config_form(node: str, cfg: NodeConfig, cap: int) -> Element:
    """The form an owner gets to configure ``node`` (XEP-0060 §8.2.1)."""
    return forms.form("form", ns.PUBSUB_NODE_CONFIG, *_fields(cfg, cap))


def metadata_form(node: str, cfg: NodeConfig, items: int) -> Element:
    """``pubsub#meta-data`` for disco#info on a node (XEP-0060 §5.4)."""
    f = forms.field
    return forms.form(
        "result",
        ns.PUBSUB_META_DATA,
        f("pubsub#title", None, [cfg.title]),
        f("pubsub#type", None, [cfg.type]),
        f("pubsub#access_model", None, [cfg.access_model]),
        f("pubsub#max_items", None, [str(cfg.max_items)]),
        f("pubsub#num_items", None, [str(items)]),
    )


def _max_items(vals: list[str], cap: int) -> int:
    raw = vals[0].strip() if vals else ""
    if raw == "max":
        return cap  # XEP-0060 §16.4.4 (``#config-node-max``)
    try:
        value = int(raw)
    except ValueError as exc:
        raise StanzaError("not-acceptable", "pubsub#max_items must be a number or max") from exc
    if value < 1:
        raise StanzaError("not-acceptable", "pubsub#max_items must be at least 1")
    if value > cap:
        raise StanzaError("not-acceptable", f"pubsub#max_items is at most {cap} here")
    return value


def _choice(vals: list[str], name: str, allowed: tuple[str, ...]) -> str:
    value = vals[0].strip() if vals else ""
    if value not in allowed:
        raise StanzaError("not-acceptable", f"{name} must be one of {', '.join(allowed)}")
    return value


def apply_form(form: Element, current: NodeConfig, cap: int) -> NodeConfig:
    """``current`` with the fields of a submitted configuration (or publish-options) form.

    Fields left out keep their value; unknown fields are ignored (XEP-0004 §3.4). A value that
    cannot be is ``not-acceptable`` (XEP-0060 §8.2.5)."""
    changes: dict[str, Any] = {}
    for var, vals in forms.values(form).items():
        name = var.removeprefix("pubsub#")
        if name == "access_model":
            changes[name] = _choice(vals, var, ACCESS_MODELS)
        elif name == "publish_model":
            changes[name] = _choice(vals, var, PUBLISH_MODELS)
        elif name == "send_last_published_item":
            changes[name] = _choice(vals, var, SEND_LAST)
        elif name == "max_items":
            changes[name] = _max_items(vals, cap)
        elif name in (
            "persist_items",
            "notify_retract",
            "notify_delete",
            "deliver_notifications",
            "deliver_payloads",
        ):
            try:
                changes[name] = forms.as_bool(vals, var)
            except StanzaError as exc:
                raise StanzaError("not-acceptable", exc.text) from exc
        elif name in ("title", "type"):
            changes[name] = vals[0] if vals else ""
        elif name == "roster_groups_allowed":
            changes[name] = sorted({v for v in vals if v})
    return replace(current, **changes)


def check_preconditions(form: Element, cfg: NodeConfig, cap: int) -> None:
    """XEP-0223 / XEP-0060 §7.1.5: every option the publisher names must hold on the existing
    node, else ``conflict`` with ``precondition-not-met`` (the client reconfigures and retries)."""
    wanted = apply_form(form, cfg, cap)
    for var in forms.values(form):
        name = var.removeprefix("pubsub#")
        if name in NodeConfig.__dataclass_fields__ and getattr(wanted, name) != getattr(cfg, name):
            raise precondition_not_met(f"the node's {var} differs")


def submitted(container: Element) -> Element | None:
    """The data form inside ``<configure/>`` or ``<publish-options/>``, if any; a form of
    another ``FORM_TYPE`` or not of type ``submit`` is bad-request."""
    form = container.find(forms.X)
    if form is None:
        return None
    if form.get("type") not in ("submit", "cancel", None):
        raise StanzaError("bad-request", "the form must be of type submit (or cancel)")
    kind = forms.form_type(form)
    if kind not in (None, ns.PUBSUB_NODE_CONFIG, ns.PUBSUB_PUBLISH_OPTIONS):
        raise StanzaError("bad-request", f"unexpected FORM_TYPE {kind}")
    return form


def parse_jids(values: list[str]) -> list[str]:
    out = set()
    for value in values:
        try:
            out.add(str(JID.parse(value.strip()).bare))
        except InvalidJID as exc:
            raise StanzaError("jid-malformed", f"{value!r} is not a JID") from exc
    return sorted(out)
