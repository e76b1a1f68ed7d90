"""The feature gate of rolling upgrades: emit an event type or version only once every member of
the cluster can read it (ADR 0022).

A build that meets an event it cannot read stops before applying it (``NewerEvent``, ADR 0002):
that keeps replicas from diverging, but it means a new release must not write what an older
member still running cannot read. Each node therefore announces, in its ``node.started``, the
highest version of every event type it reads (:func:`this_build_reads`). The cluster-features
projection (:mod:`xes.projections.cluster_features`) keeps the latest announcement per node, and
proposers consult a :class:`Gate` built from it and the Raft membership (members that are down
included: they apply the log when they come back):

* a newer *version* of an existing type is sent in the highest version every member reads,
  through a registered :func:`downcaster` (``message.routed`` v2 goes out as v1 while an old
  member remains; its upcaster recomputes what v2 carries, so every reader folds the same);
* a wholly new *type* has no older form: :meth:`Gate.shape` raises :class:`Gated`, and the
  feature it belongs to checks :meth:`Gate.can_emit` first and answers ``feature-not-implemented``
  (or its periodic job waits) until the gate opens.

A member that announced nothing (a build from before the gate) reads :data:`BASELINE`. Pure: no
I/O; the node refreshes its gate from the log's status and the projection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from xes.events.envelope import Envelope
from xes.events.registry import EVENT_TYPES

BASELINE_COMMIT = "cf6c0833c36b486f67fe9578fb0fb2a781cd7ea2"
"""The last commit before the first version bump (``message.routed`` v2): the oldest build a
rolling upgrade is tested from (``tests/integration/test_rolling_upgrade.py``)."""

BASELINE: Mapping[str, int] = dict.fromkeys(
    """
    account.registered account.password_changed account.removed roster.item_updated
    roster.item_removed node.started node.down session.bound session.ended presence.updated
    presence.routed message.routed iq.routed offline.flushed sm.enabled sm.handled sm.acked
    sm.stanzas_queued sm.roster_requested sm.resumed sm.detached archive.prefs_set
    archive.expired carbons.toggled muc.room_created muc.room_configured muc.room_destroyed
    muc.occupant_joined muc.occupant_presence muc.occupant_left muc.nick_changed muc.role_set
    muc.affiliation_set muc.subject_set muc.message_sent muc.private_sent pep.node_configured
    pep.item_published pep.item_retracted pep.node_purged pep.node_deleted caps.learned
    private.stored vcard.stored blocking.changed fast.token_issued fast.token_revoked
    upload.slot_granted upload.stored upload.deleted
    """.split(),  # noqa: SIM905 - fifty names read better as words than as a list
    1,
)
"""What a member reads that never announced anything: the catalogue of :data:`BASELINE_COMMIT`
(every build before the gate reads at least this). Frozen: never edit it for a new event."""

DOWNCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""``(type, v)`` -> pure ``data`` of ``v`` to ``data`` of ``v - 1``."""


class Gated(Exception):
    """The event's type (in any version this build can write) is not readable by every member
    yet: the feature that wanted it must wait or refuse."""

    def __init__(self, type_name: str, v: int, waiting: list[str]) -> None:
        super().__init__(f"{type_name} v{v} waits for {', '.join(waiting) or '?'}")
        self.type_name = type_name
        self.v = v
        self.waiting = waiting


def downcaster(type_name: str, from_v: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as the pure downcast of ``type_name`` data from ``from_v`` to the one
    before. Only for bumps whose upcaster recomputes every dropped field from what is kept
    (``upcast(downcast(d)) == d``): otherwise an old-form event would lose what apply folds."""

    def register(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[..., Any]:
        DOWNCASTERS[(type_name, from_v)] = fn
        return fn

    return register


_FACTS = ("body", "marker", "marker_id", "msg_id", "track")


@downcaster("message.routed", 2)
def _message_routed_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 has no facts; its upcaster reads them again from ``xml``."""
    return {k: v for k, v in data.items() if k not in _FACTS}


@downcaster("muc.message_sent", 2)
def _muc_message_sent_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 has no facts; its upcaster reads them again from ``xml``."""
    return {k: v for k, v in data.items() if k not in _FACTS}


def this_build_reads() -> dict[str, int]:
    """The highest version of every event type this build decodes (what ``node.started``
    announces)."""
    return {name: cls.V for name, cls in sorted(EVENT_TYPES.items())}


@dataclass(frozen=True, slots=True)
class Member:
    """One Raft member as the gate sees it."""

    raft: str
    """Its Raft address (the membership lists addresses)."""
    node: str | None = None
    """Its node id, once a ``node.started`` named this address."""
    reads: Mapping[str, int] | None = None
    """What its latest ``node.started`` announced; None: nothing (it reads :data:`BASELINE`)."""

    @property
    def name(self) -> str:
        return self.node or self.raft

    def can_read(self, type_name: str, v: int) -> bool:
        reads = BASELINE if self.reads is None else self.reads
        return reads.get(type_name, 0) >= v


@dataclass(frozen=True, slots=True)
class Gate:
    """What every member can read; built by the node from the membership and announcements."""

    members: tuple[Member, ...]

    @classmethod
    def unknown(cls) -> Gate:
        """Before the node has read the membership: as if one member announced nothing."""
        return cls((Member("?"),))

    def can_emit(self, type_name: str, v: int) -> bool:
        """Every member reads ``type_name`` at version ``v`` (cheap: called per proposal)."""
        return all(m.can_read(type_name, v) for m in self.members)

    def allows(self, *events: Any) -> bool:
        """Every member reads each of the event classes ``events`` (at this build's version):
        the check a feature makes before offering what needs them."""
        return all(self.can_emit(ev.TYPE, ev.V) for ev in events)

    def waiting(self, type_name: str, v: int) -> list[str]:
        """The members ``type_name`` v``v`` waits for (node id, or Raft address if unknown)."""
        return [m.name for m in self.members if not m.can_read(type_name, v)]

    def emit_version(self, type_name: str, v: int) -> int | None:
        """The highest version up to ``v`` every member reads and this build can write (through
        downcasters), or None: the type is gated."""
        while v >= 1:
            if self.can_emit(type_name, v):
                return v
            if (type_name, v) not in DOWNCASTERS:
                return None
            v -= 1
        return None

    def shape(self, env: Envelope) -> Envelope:
        """``env`` in the form every member reads; raises :class:`Gated` if there is none."""
        target = self.emit_version(env.type, env.v)
        if target is None:
            raise Gated(env.type, env.v, self.waiting(env.type, env.v))
        if target == env.v:
            return env
        data, v = dict(env.data), env.v
        while v > target:
            data, v = DOWNCASTERS[(env.type, v)](data), v - 1
        return replace(env, v=v, data=data)

    def pending(self) -> dict[str, list[str]]:
        """Every ``type vN`` this build writes that some member cannot read yet, with those
        members (what ``xes cluster status`` shows under "gate")."""
        out: dict[str, list[str]] = {}
        for name, v in this_build_reads().items():
            waiting = self.waiting(name, v)
            if waiting:
                out[f"{name} v{v}"] = waiting
        return out
