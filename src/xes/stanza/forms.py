"""XEP-0004 data forms: reading submitted values and building fields.

Only what protocol modules need: the values of a form by ``var``, its ``FORM_TYPE``, boolean
reading as XEP-0004 §3.3 defines it, and field builders for forms the server sends.
"""

from __future__ import annotations

from xes.stanza.core import StanzaError
from xes.xml import E, Element, ns

X = "{%s}x" % ns.DATA_FORMS
FIELD = "{%s}field" % ns.DATA_FORMS
VALUE = "{%s}value" % ns.DATA_FORMS
OPTION = "{%s}option" % ns.DATA_FORMS


def values(form: Element) -> dict[str, list[str]]:
    """Every field's values by ``var`` (a field without ``var`` is ignored)."""
    out: dict[str, list[str]] = {}
    for field in form.find_all(FIELD):
        var = field.get("var")
        if var:
            out[var] = [v.text for v in field.find_all(VALUE)]
    return out


def form_type(form: Element) -> str | None:
    """The hidden ``FORM_TYPE`` value (XEP-0068), if the form has one."""
    found = values(form).get("FORM_TYPE")
    return found[0] if found else None


def as_bool(vals: list[str], name: str) -> bool:
    """XEP-0004 §3.3 boolean: ``1``/``true`` or ``0``/``false``; anything else is bad-request."""
    value = vals[0].strip().lower() if vals else ""
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise StanzaError("bad-request", f"{name} must be a boolean")


def field(
    var: str,
    type_: str | None,
    values_: list[str],
    *,
    label: str | None = None,
    options: tuple[str, ...] = (),
) -> Element:
    children = [E(OPTION, {"label": o}, E(VALUE, None, o)) for o in options]
    children += [E(VALUE, None, v) for v in values_]
    return E(FIELD, {"var": var, "type": type_, "label": label}, *children)


def form(type_: str, form_type_: str | None, *fields: Element) -> Element:
    """A form of ``type_`` (form, submit, result) with its hidden ``FORM_TYPE`` first."""
    head = [field("FORM_TYPE", "hidden", [form_type_])] if form_type_ else []
    return E(X, {"type": type_}, *head, *fields)


def bool_value(value: bool) -> list[str]:
    return ["1" if value else "0"]
