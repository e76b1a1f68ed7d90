"""The checker: what every client was told and received, against what every node's log holds.

Why the journal is the judge: a client is only told part of the truth (an ``<a h>`` says
"handled", an error of type ``wait`` says "unknown", a lost connection says nothing), while
the committed log says exactly which messages exist. So every sent message gets a *client
outcome* (accepted, refused, unknown) and a *log outcome* (committed or not), and:

* accepted (acknowledged, no error) must be committed; refused for a reason that means "not
  recorded" (a full disk) must not be; an unknown outcome may go either way;
* every committed one-to-one message is delivered exactly once to the recipient's device, or is
  still in that device's offline storage;
* every committed groupchat message is delivered exactly once to each device with a session in
  the room when it was applied (a session that ended without resumption is owed nothing after
  its last stanza: MUC keeps no offline copy, XEP-0045 §7.2.15);
* nothing that is not committed is delivered;
* per sender, a device receives messages in the order they were sent, where the sender knew
  the order (the later one was sent after the earlier one was acknowledged);
* every node applied the same log to the same projections (equal digests and journals), and no
  session or room occupant of a campaign user is left once every client has logged out.

Only :func:`check` decides; :func:`read_node` gathers the facts from one node's LMDB (opened
read-only, safe while the node runs).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHAT_ID = re.compile(r"^c(\d+)-(\d+)$")
GC_ID = re.compile(r"^g(\d+)-(\d+)$")
REFUSED_TEXTS = ("disk is almost full",)
"""Error texts that mean "not recorded" for sure (the disk watch refuses before proposing)."""


@dataclass
class NodeFacts:
    """What one node's store says (all nodes should say the same)."""

    node: str
    applied_index: int
    digest: str
    journal_fingerprint: str
    chat: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    """(sender, n) -> first index, recipient user, number of routed copies (re-routes)."""
    groupchat: dict[tuple[int, int], int] = field(default_factory=dict)
    """(sender, n) -> index of its ``muc.message_sent``."""
    joined: dict[str, list[int]] = field(default_factory=dict)
    """session -> indexes of its ``muc.occupant_joined``."""
    left: dict[str, list[int]] = field(default_factory=dict)
    ended: dict[str, tuple[int, str]] = field(default_factory=dict)
    """session -> (index, reason) of its ``session.ended``."""
    offline: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """user -> (sender, n) of chat messages still in offline storage."""
    sessions_left: list[str] = field(default_factory=list)
    """Full JIDs of campaign users' sessions still in the sessions projection."""
    occupants_left: list[str] = field(default_factory=list)


def read_node(
    name: str, data_dir: Path, users: set[str], domain: str, room: str | None
) -> NodeFacts:
    """Gather :class:`NodeFacts` from a node's LMDB environment (read-only)."""
    from xes.projections import muc as muc_view
    from xes.projections import offline as offline_view
    from xes.projections import sessions as sessions_view
    from xes.projections.projector import all_db_names, digest
    from xes.store import journal
    from xes.store.env import open_store

    store = open_store(data_dir / "db", all_db_names(), writer=False)
    try:
        with store.env.begin() as txn:
            facts = NodeFacts(name, journal.applied_index(store, txn), digest(store, txn), "")
            h = hashlib.sha256()
            for committed in journal.read_events(store, txn):
                env = committed.envelope
                h.update(f"{committed.index}.{committed.pos}.{env.id}\n".encode())
                _fold(facts, committed.index, env.type, env.data)
            facts.journal_fingerprint = h.hexdigest()
            for user in users:
                bare = f"{user}@{domain}"
                ids = [_xml_id(m.xml) for m in offline_view.messages(store, txn, bare)]
                found = [(int(m[1]), int(m[2])) for i in ids if (m := CHAT_ID.match(i or ""))]
                if found:
                    facts.offline[user] = found
                facts.sessions_left.extend(s.jid for s in sessions_view.of_user(store, txn, bare))
            if room is not None:
                r = muc_view.get(store, txn, room)
                if r is not None:
                    facts.occupants_left = sorted(
                        f"{o.nick} ({len(o.sessions)} sessions)" for o in r.occupants.values()
                    )
    finally:
        store.close()
    return facts


def _xml_id(xml: str) -> str | None:
    m = re.search(r"<message[^>]*\sid=[\"']([^\"']+)[\"']", xml)
    return m.group(1) if m else None


def _fold(facts: NodeFacts, index: int, type_: str, data: dict[str, Any]) -> None:
    if type_ == "message.routed" and data.get("type") == "chat":
        m = CHAT_ID.match(data.get("msg_id") or _xml_id(data.get("xml", "")) or "")
        if m:
            key = (int(m[1]), int(m[2]))
            entry = facts.chat.setdefault(
                key, {"index": index, "to": data["to"].split("@", 1)[0], "copies": 0}
            )
            entry["copies"] += 1
    elif type_ == "muc.message_sent":
        m = GC_ID.match(data.get("msg_id") or _xml_id(data.get("xml", "")) or "")
        if m:
            facts.groupchat.setdefault((int(m[1]), int(m[2])), index)
    elif type_ == "muc.occupant_joined":
        facts.joined.setdefault(data["session"], []).append(index)
    elif type_ == "muc.occupant_left":
        facts.left.setdefault(data["session"], []).append(index)
    elif type_ == "session.ended":
        facts.ended[data["session"]] = (index, data.get("reason", ""))


@dataclass
class Report:
    """The figures of one run and every violation found (empty: the run proved its claims)."""

    figures: dict[str, Any]
    violations: list[str]
    notes: list[str]


def check(records: list[dict[str, Any]], nodes: list[NodeFacts]) -> Report:
    """Judge the client records against the nodes' facts (see the module docstring)."""
    violations: list[str] = []
    notes: list[str] = []
    ref = nodes[0]
    if len({n.digest for n in nodes}) != 1 or len({n.applied_index for n in nodes}) != 1:
        violations.append(
            "digests differ: "
            + ", ".join(f"{n.node} {n.digest[:12]} @ {n.applied_index}" for n in nodes)
        )
    if len({n.journal_fingerprint for n in nodes}) != 1:
        violations.append("journals differ between nodes")

    by_index = {r["index"]: r for r in records}
    sent: dict[tuple[str, int, int], dict[str, Any]] = {}
    for r in records:
        for s in r["sent"]:
            sent[(s["kind"], r["index"], s["n"])] = s
        violations.extend(f"client f{r['index']}: {e}" for e in r["errors"])

    outcome: Counter[str] = Counter()
    for (kind, sender, n), s in sent.items():
        committed = (sender, n) in (ref.chat if kind == "chat" else ref.groupchat)
        client = _client_outcome(s)
        outcome[f"{kind} {client}"] += 1
        if client == "accepted" and not committed:
            violations.append(f"{kind} {sender}-{n}: acknowledged without error, not in the log")
        if client == "refused" and committed:
            violations.append(f"{kind} {sender}-{n}: refused ({s['error']}), yet committed")
        if client != "accepted" and committed:
            outcome[f"{kind} {client} but committed"] += 1

    # Receptions per device: (kind, sender, n) -> times, in order.
    got: dict[int, list[dict[str, Any]]] = {r["index"]: r["received"] for r in records}
    delivered = lost = duplicated = stored = phantom = gc_not_owed = 0
    dup_examples: list[str] = []
    lost_examples: list[str] = []
    for (sender, n), info in sorted(ref.chat.items()):
        rcpt = int(info["to"][1:]) if info["to"][1:].isdigit() else -1
        if rcpt not in got:
            continue
        times = sum(
            1 for x in got[rcpt] if x["kind"] == "chat" and x["sender"] == sender and x["n"] == n
        )
        if times == 1:
            delivered += 1
        elif times == 0:
            if (sender, n) in ref.offline.get(f"f{rcpt}", []):
                stored += 1
            else:
                lost += 1
                lost_examples.append(f"chat {sender}-{n} -> f{rcpt} (index {info['index']})")
        else:
            delivered += 1
            duplicated += times - 1
            dup_examples.append(
                f"chat {sender}-{n} -> f{rcpt} x{times} (index {info['index']}, "
                f"{info['copies']} routed copies)"
            )

    for device, rec in by_index.items():
        sessions = rec["sessions"]
        for (sender, n), index in sorted(ref.groupchat.items()):
            owed_by = _gc_owed(ref, sessions, index)
            if owed_by is None:
                continue
            times = sum(
                1
                for x in got[device]
                if x["kind"] == "groupchat" and x["sender"] == sender and x["n"] == n
            )
            if times == 1:
                delivered += 1
            elif times == 0:
                if owed_by["ended"] == "logout":
                    lost += 1
                    lost_examples.append(f"groupchat {sender}-{n} -> f{device} (index {index})")
                else:
                    gc_not_owed += 1
            else:
                delivered += 1
                duplicated += times - 1
                dup_examples.append(f"groupchat {sender}-{n} -> f{device} x{times} (index {index})")

    for device, received in got.items():
        for x in received:
            log = ref.chat if x["kind"] == "chat" else ref.groupchat
            if (x["sender"], x["n"]) not in log:
                phantom += 1
                violations.append(
                    f"f{device} received {x['kind']} {x['sender']}-{x['n']}: not in the log"
                )

    ooo, causal = _order(records, got)
    if lost:
        violations.append(f"{lost} lost: " + "; ".join(lost_examples[:8]))
    if duplicated:
        violations.append(f"{duplicated} duplicated: " + "; ".join(dup_examples[:8]))
    if causal:
        violations.append(
            f"{len(causal)} delivered out of the order the sender knew: " + "; ".join(causal[:8])
        )
    ghosts = sorted({j for n in nodes for j in n.sessions_left})
    if ghosts:
        violations.append(f"ghost sessions after every client left: {ghosts[:10]}")
    occupants = sorted({o for n in nodes for o in n.occupants_left})
    if occupants:
        violations.append(f"ghost room occupants after every client left: {occupants[:10]}")
    if gc_not_owed:
        notes.append(
            f"{gc_not_owed} groupchat copies not delivered to sessions that ended without "
            "resumption (MUC keeps no offline copy; not counted as lost)"
        )
    figures = {
        "sent": len(sent),
        "sent_chat": sum(1 for k in sent if k[0] == "chat"),
        "sent_groupchat": sum(1 for k in sent if k[0] == "groupchat"),
        "accepted": sum(v for k, v in outcome.items() if k.endswith(" accepted")),
        "refused": sum(v for k, v in outcome.items() if k.endswith(" refused")),
        "unknown": sum(v for k, v in outcome.items() if k.endswith(" unknown")),
        "unknown_committed": sum(
            v for k, v in outcome.items() if k.endswith("unknown but committed")
        ),
        "committed_chat": len(ref.chat),
        "committed_groupchat": len(ref.groupchat),
        "delivered": delivered,
        "stored_offline": stored,
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": ooo,
        "out_of_order_causal": len(causal),
        "phantom": phantom,
        "ghost_sessions": len(ghosts),
        "ghost_occupants": len(occupants),
        "digests_equal": len({n.digest for n in nodes}) == 1,
        "applied_index": ref.applied_index,
    }
    return Report(figures, violations, notes)


def _client_outcome(s: dict[str, Any]) -> str:
    if s["error"]:
        return "refused" if any(t in s["error"] for t in REFUSED_TEXTS) else "unknown"
    if s["acked_at"] is not None:
        return "accepted"
    return "unknown"


def _gc_owed(ref: NodeFacts, sessions: list[dict[str, Any]], index: int) -> dict[str, Any] | None:
    """The device's session that was in the room when the message at ``index`` was applied."""
    for s in sessions:
        joins = ref.joined.get(s["sm_id"], [])
        if not joins or min(joins) >= index:
            continue
        leaves = [i for i in ref.left.get(s["sm_id"], []) if i > min(joins)]
        if leaves and min(leaves) <= index:
            continue
        return s
    return None


def _order(
    records: list[dict[str, Any]], got: dict[int, list[dict[str, Any]]]
) -> tuple[int, list[str]]:
    """Inversions per (device, kind, sender): all of them, and those the sender had ordered
    (the later-numbered message was sent after the earlier one was acknowledged)."""
    sent = {(s["kind"], r["index"], s["n"]): s for r in records for s in r["sent"]}
    total = 0
    causal: list[str] = []
    for device, received in got.items():
        best: dict[tuple[str, int], int] = defaultdict(int)
        seen: set[tuple[str, int, int]] = set()
        for x in received:
            key = (x["kind"], x["sender"], x["n"])
            if key in seen:
                continue
            seen.add(key)
            top = best[(x["kind"], x["sender"])]
            if x["n"] < top:
                total += 1
                early = sent.get((x["kind"], x["sender"], x["n"]))
                late = sent.get((x["kind"], x["sender"], top))
                if early and late and early["acked_at"] and early["acked_at"] <= late["at"]:
                    causal.append(f"f{device}: {x['kind']} {x['sender']}-{x['n']} after -{top}")
            else:
                best[(x["kind"], x["sender"])] = x["n"]
    return total, causal
