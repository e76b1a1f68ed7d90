"""Framing between the XMPP process and the log process (a Unix socket, mode 0600).

Every frame is ``u32 length`` + ``kind byte`` + body. Kinds:

* ``P`` propose: ``u64 request id`` + command (a JSON list of proposals, each a list of envelopes)
* ``R`` result: ``u64 request id`` + ``u8 outcome`` + ``u64 index`` + result JSON
* ``S`` status request: ``u64 request id``; answered by ``T``: ``u64 request id`` + JSON
* ``M`` membership change: ``u64 request id`` + JSON ``{"op": "add"|"remove", "addr": ...}``;
  answered by ``R``
* ``A`` applied notice (log process -> XMPP process): ``u64 applied index``
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">IB")
U64 = struct.Struct(">Q")
RESULT = struct.Struct(">QBQ")
MAX_FRAME = 64 * 1024 * 1024

PROPOSE, RESULT_KIND, STATUS, STATUS_REPLY, MEMBERSHIP, APPLIED = (
    ord("P"),
    ord("R"),
    ord("S"),
    ord("T"),
    ord("M"),
    ord("A"),
)

# Outcome codes on the wire (see xes.eventlog.raft.Outcome).
OUTCOME_CODES = {"APPLIED": 0, "NOT_APPENDED": 1, "UNKNOWN": 2, "TOO_LARGE": 3}
OUTCOME_NAMES = {v: k for k, v in OUTCOME_CODES.items()}


def frame(kind: int, body: bytes) -> bytes:
    return HEADER.pack(len(body) + 1, kind) + body
