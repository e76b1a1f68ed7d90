"""The XMPP side of HTTP File Upload (XEP-0363): the ``upload.<domain>`` service's disco and its
slot requests.

A slot request is checked against the configuration (size, content type) and against the
``uploads`` view (open slots, quota), then ``upload.slot_granted`` is proposed with a slot id
chosen here; apply checks the quota again, so a race between nodes ends in the same error the
client would have got had this node seen the other grant first. The answer carries the PUT URL
with its token (``Authorization`` header, :mod:`xes.features.upload.tokens`) and the GET URL;
both point at ``[http] public_url`` or this node's HTTPS listener.

Emits ``upload.slot_granted``; reads the ``uploads`` view and the configuration.
"""

from __future__ import annotations

import secrets
import shutil
import time
from datetime import UTC, datetime
from urllib.parse import quote

from xes.eventlog.client import ProposalRejected
from xes.events.catalog import UploadSlotGranted
from xes.features.upload import policy, tokens
from xes.hub import Hub, LocalSession
from xes.jid import JID, InvalidJID
from xes.projections import uploads as uploads_view
from xes.stanza import forms
from xes.stanza.core import StanzaError, iq_result
from xes.xml import E, Element, ns, serialize

NS = "urn:xmpp:http:upload:0"
PATH = "/upload/"
"""Where slots live on the HTTP side: ``/upload/<slot id>/<file name>``."""


def is_upload_domain(hub: Hub, domain: str) -> bool:
    return hub.config.upload.enabled and domain == hub.config.upload_domain


def base_url(hub: Hub) -> str:
    """What clients reach this node's HTTP side at: ``[http] public_url``, else the HTTPS
    listener (its host, or the XMPP domain when it listens on every address)."""
    if hub.config.http.public_url:
        return hub.config.http.public_url.rstrip("/")
    host, _, port = (hub.config.listen.https or "").rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = hub.domain
    elif ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{port}"


def slot_path(slot: str, filename: str) -> str:
    return f"{PATH}{slot}/{quote(filename, safe='')}"


async def handle(hub: Hub, session: LocalSession, stanza: Element) -> None:
    """A stanza to the upload service; only iq means anything to it."""
    if stanza.name == "presence":
        return
    if stanza.name != "iq":
        raise StanzaError("service-unavailable")
    if stanza.get("type") in ("result", "error"):
        return
    try:
        to = JID.parse(stanza.get("to") or "")
    except InvalidJID as exc:
        raise StanzaError("jid-malformed") from exc
    if to.local is not None or to.resource is not None:
        raise StanzaError("item-not-found", "the upload service has no users or resources")
    children = stanza.elements()
    if len(children) != 1:
        raise StanzaError("bad-request", "iq get/set carries exactly one payload")
    child = children[0]
    iq = stanza.with_attrs(**{"from": session.full})
    if child.tag == "{%s}query" % ns.DISCO_INFO and iq.get("type") == "get":
        reply = disco_info(hub, iq, child)
    elif child.tag == "{%s}query" % ns.DISCO_ITEMS and iq.get("type") == "get":
        if child.get("node"):
            raise StanzaError("item-not-found")
        reply = iq_result(iq, E("{%s}query" % ns.DISCO_ITEMS))
    elif child.tag == "{%s}request" % NS and iq.get("type") == "get":
        reply = await request_slot(hub, session, iq, child)
    else:
        raise StanzaError("service-unavailable")
    session.send_bytes(serialize(reply))


def disco_info(hub: Hub, iq: Element, query: Element) -> Element:
    """XEP-0363 §3: identity ``store/file``, the feature, and ``max-file-size`` in a form."""
    if query.get("node"):
        raise StanzaError("item-not-found")
    size_form = forms.form(
        "result", NS, forms.field("max-file-size", None, [str(hub.config.upload.max_file_size)])
    )
    return iq_result(
        iq,
        E(
            "{%s}query" % ns.DISCO_INFO,
            None,
            E(
                "{%s}identity" % ns.DISCO_INFO,
                {"category": "store", "type": "file", "name": "HTTP File Upload"},
            ),
            E("{%s}feature" % ns.DISCO_INFO, {"var": ns.DISCO_INFO}),
            E("{%s}feature" % ns.DISCO_INFO, {"var": ns.DISCO_ITEMS}),
            E("{%s}feature" % ns.DISCO_INFO, {"var": NS}),
            size_form,
        ),
    )


def too_large(max_size: int) -> StanzaError:
    """XEP-0363 §5: ``not-acceptable`` with ``<file-too-large><max-file-size/>``."""
    app = E("{%s}file-too-large" % NS, None, E("{%s}max-file-size" % NS, None, str(max_size)))
    return StanzaError(
        "not-acceptable",
        f"File too large. The maximum file size is {max_size} bytes",
        "modify",
        app,
    )


def over_quota(quota: int, used: int, size: int) -> StanzaError:
    return StanzaError(
        "resource-constraint",
        f"Quota reached: you may keep {quota} bytes of files, {used} are used, "
        f"this file needs {size}",
        "wait",
    )


def retry_later(hub: Hub, now_ms: int) -> StanzaError:
    """XEP-0363 §5: too many open slots; ``<retry stamp>`` is when the oldest has expired."""
    cfg = hub.config.upload
    at = now_ms + cfg.slot_ttl * 1000 + policy.OPEN_SLOT_GRACE_MS
    at += int(cfg.retention_check_interval * 1000)
    stamp = datetime.fromtimestamp(at / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return StanzaError(
        "resource-constraint",
        f"Too many uploads at once: at most {cfg.max_open_slots} slots may wait for their file",
        "wait",
        E("{%s}retry" % NS, {"stamp": stamp}),
    )


def _size_of(text: str | None) -> int:
    if text is None or not text.isdigit() or len(text) > 18 or int(text) <= 0:
        raise StanzaError("bad-request", "size must be a positive integer (bytes)")
    return int(text)


async def request_slot(hub: Hub, session: LocalSession, iq: Element, request: Element) -> Element:
    cfg = hub.config.upload
    filename = request.get("filename") or ""
    problem = policy.filename_problem(filename)
    if problem is not None:
        raise StanzaError("bad-request", f"Invalid file name: {problem}")
    size = _size_of(request.get("size"))
    if size > cfg.max_file_size:
        raise too_large(cfg.max_file_size)
    content_type = policy.normalise_content_type(request.get("content-type"))
    if content_type is None:
        raise StanzaError("bad-request", "content-type must be a MIME type (type/subtype)")
    if not policy.content_type_allowed(content_type, cfg.allowed_content_types):
        raise StanzaError(
            "not-acceptable", f"Files of type {policy.base_type(content_type)} are not accepted"
        )
    if hub.disk_low or not _room_on_disk(hub, size):
        raise StanzaError("resource-constraint", "The server has no room for files now", "wait")
    now_ms = int(time.time() * 1000)
    with hub.read() as txn:
        used = uploads_view.usage(hub.store, txn, session.bare)
    if used.open >= cfg.max_open_slots:
        raise retry_later(hub, now_ms)
    if cfg.quota_per_user and used.bytes + size > cfg.quota_per_user:
        raise over_quota(cfg.quota_per_user, used.bytes, size)
    slot = secrets.token_urlsafe(16)
    expires = now_ms + cfg.slot_ttl * 1000
    granted = UploadSlotGranted(
        slot=slot,
        owner=session.bare,
        filename=filename,
        size=size,
        content_type=content_type,
        expires=expires,
        quota=cfg.quota_per_user,
        max_open=cfg.max_open_slots,
    )
    try:
        await hub.log.append(granted)
    except ProposalRejected as exc:
        # Another node's grant was committed first (ADR 0017): the same answer as if seen.
        if exc.reason.startswith("upload-quota"):
            with hub.read() as txn:
                used = uploads_view.usage(hub.store, txn, session.bare)
            raise over_quota(cfg.quota_per_user, used.bytes, size) from exc
        if exc.reason.startswith("upload-retry"):
            raise retry_later(hub, now_ms) from exc
        raise
    url = base_url(hub) + slot_path(slot, filename)
    token = tokens.put_token(hub.upload_key, slot, size, content_type, expires)
    return iq_result(
        iq,
        E(
            "{%s}slot" % NS,
            None,
            E(
                "{%s}put" % NS,
                {"url": url},
                E("{%s}header" % NS, {"name": "Authorization"}, f"Bearer {token}"),
            ),
            E("{%s}get" % NS, {"url": url}),
        ),
    )


def _room_on_disk(hub: Hub, size: int) -> bool:
    """The upload directory keeps ``[limits] min_free_disk_mb`` free after this file."""
    directory = hub.config.upload_dir
    try:
        free = shutil.disk_usage(directory if directory.exists() else hub.config.data_dir).free
    except OSError:
        return False
    return free - size >= hub.config.limits.min_free_disk_mb * 1024 * 1024
