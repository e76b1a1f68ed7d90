"""XEP-0115 entity capabilities: the verification string and hash of a disco#info answer.

The server learns what each client wants notifications for (``<feature var='NODE+notify'/>``,
XEP-0163 §4.3) from the features behind its caps hash. An answer is cached (as an event, for the
whole cluster) only when it hashes to the ``ver`` the client advertised, so one client cannot
poison the cache for everyone else with the same hash (XEP-0115 §5.4).
"""

from __future__ import annotations

import base64
import hashlib

from xes.stanza import forms
from xes.xml import Element, ns

HASHES = {
    "sha-1": "sha1",
    "sha-224": "sha224",
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}
"""IANA hash names XEP-0115 §5.1 allows, to :mod:`hashlib` names."""
NOTIFY = "+notify"


def verification_string(query: Element) -> str | None:
    """XEP-0115 §5.1 string S of a disco#info ``<query/>``; None if it is ill-formed (§5.4:
    duplicate identities or features, or a form without ``FORM_TYPE``)."""
    identities = []
    for ident in query.find_all("{%s}identity" % ns.DISCO_INFO):
        identities.append(
            "/".join(
                (
                    ident.get("category", "") or "",
                    ident.get("type", "") or "",
                    ident.get("{%s}lang" % ns.XML, "") or "",
                    ident.get("name", "") or "",
                )
            )
        )
    features = [f.get("var", "") or "" for f in query.find_all("{%s}feature" % ns.DISCO_INFO)]
    if len(set(identities)) != len(identities) or len(set(features)) != len(features):
        return None
    out = [s + "<" for s in sorted(identities)] + [f + "<" for f in sorted(features)]
    extended = []
    for form in query.find_all(forms.X):
        fields = {}
        for fld in form.find_all(forms.FIELD):
            var = fld.get("var")
            if var:
                fields[var] = sorted(v.text for v in fld.find_all(forms.VALUE))
        form_type = fields.pop("FORM_TYPE", None)
        if not form_type:
            continue  # XEP-0115 §5.4 (v1.5): a form without FORM_TYPE is ignored
        if len(set(form_type)) != 1:
            return None  # §5.4: a FORM_TYPE with more than one value makes it ill-formed
        part = form_type[0] + "<"
        for var in sorted(fields):
            part += var + "<" + "".join(v + "<" for v in fields[var])
        extended.append((form_type[0], part))
    if len({t for t, _ in extended}) != len(extended):
        return None
    out += [part for _, part in sorted(extended)]
    return "".join(out)


def verify(query: Element, hash_name: str, ver: str) -> bool:
    """Does ``query`` hash to ``ver`` under ``hash_name`` (XEP-0115 §5.1 step 8)?"""
    algo = HASHES.get(hash_name.lower())
    s = verification_string(query)
    if algo is None or s is None:
        return False
    digest = hashlib.new(algo, s.encode()).digest()
    return base64.b64encode(digest).decode() == ver


def features(query: Element) -> list[str]:
    return sorted({f.get("var", "") or "" for f in query.find_all("{%s}feature" % ns.DISCO_INFO)})


def notify_nodes(feature_list: list[str]) -> list[str]:
    """The PEP nodes a client wants notifications for (XEP-0163 §4.3: ``NODE+notify``)."""
    return [f[: -len(NOTIFY)] for f in feature_list if f.endswith(NOTIFY) and len(f) > len(NOTIFY)]


def advertised(presence: Element) -> tuple[str, str, str] | None:
    """``(hash, node, ver)`` of a presence's ``<c/>`` element, if it has a usable one."""
    c = presence.find("{%s}c" % ns.CAPS)
    if c is None:
        return None
    hash_name, node, ver = c.get("hash"), c.get("node"), c.get("ver")
    if not hash_name or not ver or not node or len(ver) > 128:
        return None  # legacy caps (no hash) cannot be verified: such a client is not notified
    return hash_name, node, ver
