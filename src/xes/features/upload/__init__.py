"""XEP-0363 HTTP File Upload on ``upload.<domain>``, cluster-wide (ADR 0017).

``service`` answers slot requests over XMPP; ``web`` takes PUTs and serves GETs on the node's
HTTP listener; ``files`` keeps this node's copies (and fetches one another node holds);
``retention`` has the leader expire unused slots and old files; ``policy`` and ``tokens`` are
the pure rules and proofs they share. Events: ``upload.slot_granted``, ``upload.stored``,
``upload.deleted``; view: ``uploads``.
"""

from __future__ import annotations

from xes.features.upload.service import NS, handle, is_upload_domain

XEPS = ((363, "complete"),)

__all__ = ["NS", "XEPS", "handle", "is_upload_domain"]
