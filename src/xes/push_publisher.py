"""Publishing push notifications (XEP-0357 §7, ADR 0020) from the node that holds the service.

Every node runs this loop; only the node that holds a push service's component connection
(XEP-0114, :mod:`xes.features.components`) publishes to it, so exactly one node pushes each
registration, and another takes over when the component reconnects elsewhere. The loop wakes on
every applied index (and once a second, for retries), walks the due registrations of the
services held here (:func:`xes.projections.push.due`) and publishes one notification per
registration at a time: triggers that come while one is in flight are covered by the next.
When the service answers with a result the node records ``push.notified`` (up to the trigger
the notification covered); an error of type ``wait`` or no answer within ``[push] timeout`` is
retried with backoff and disables the registration after ``max_attempts`` in a row; any other
error disables it at once (``push.disabled`` with the condition as reason).

The summary form carries ``message-count`` (the user's unread messages in the inbox, at least
one) and ``last-message-sender``; ``last-message-body`` only with ``[push] include_body``. The
publish options the device gave (the app server's ``secret``) go with every publish.

At most once per trigger is what a crash allows: a node that dies after the service accepted a
notification but before ``push.notified`` is committed leaves it due, and the next holder
pushes it again (a duplicate wake-up, never a lost one).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import anyio
import structlog

from xes.eventlog.client import LogUnavailable, ProposalRejected
from xes.events import Committed, decode_event
from xes.events.catalog import PushDisabled, PushNotified
from xes.features import components
from xes.hub import Hub
from xes.projections import inbox as inbox_view
from xes.projections import push as push_view
from xes.projections.push import Registration
from xes.store import journal
from xes.xml import E, Element, ns, parse_fragment

log = structlog.get_logger("xes.push")

NS = "urn:xmpp:push:0"
SUMMARY = "urn:xmpp:push:summary"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
BACKOFF_MAX = 300.0


@dataclass(slots=True)
class _Attempt:
    token: str
    upto: int
    deadline: float


@dataclass(slots=True)
class _Failures:
    count: int
    retry_at: float


class Publisher:
    """What this node has in flight and how often each registration failed (not state: a node
    that takes over starts again from what the log says is due)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.in_flight: dict[tuple[str, str, str], _Attempt] = {}
        self.failures: dict[tuple[str, str, str], _Failures] = {}

    def services_held(self) -> list[str]:
        return sorted(d for d in self.hub.components if components.is_component(self.hub, d))

    async def round(self) -> None:
        now = time.monotonic()
        for reg_key, attempt in list(self.in_flight.items()):
            if attempt.deadline < now:
                del self.in_flight[reg_key]
                await self._failed(reg_key, "timeout", now)
        for service in self.services_held():
            with self.hub.read() as txn:
                due = list(push_view.due(self.hub.store, txn, service))
            for reg in due:
                reg_key = (reg.owner, reg.service, reg.node)
                failed = self.failures.get(reg_key)
                if reg_key in self.in_flight or (failed and failed.retry_at > now):
                    continue
                self._publish(reg)

    def _publish(self, reg: Registration) -> None:
        hub = self.hub
        reg_key = (reg.owner, reg.service, reg.node)
        token = "push-" + secrets.token_urlsafe(9)
        iq = E(
            "{%s}iq" % ns.CLIENT,
            {"type": "set", "id": token, "from": reg.owner, "to": reg.service},
            E("{%s}pubsub" % ns.PUBSUB, None, *self._pubsub_children(reg)),
        )
        attempt = _Attempt(token, reg.due, time.monotonic() + hub.config.push.timeout)

        async def on_answer(answer: Element) -> None:
            if self.in_flight.get(reg_key) is not attempt:
                return  # a late answer to an attempt already given up
            # Still in flight until what it led to is recorded: a round in between must not
            # publish the same triggers again.
            attempt.deadline = float("inf")
            try:
                await self._answered(reg, attempt, answer)
            finally:
                if self.in_flight.get(reg_key) is attempt:
                    del self.in_flight[reg_key]

        if components.request(hub, iq, on_answer, hub.config.push.timeout):
            self.in_flight[reg_key] = attempt
            hub.stats.pushes["sent"] += 1

    def _pubsub_children(self, reg: Registration) -> list[Element]:
        hub = self.hub
        with hub.read() as txn:
            unread = inbox_view.summary(hub.store, txn, reg.owner)["unread"]
            body = self._body(txn, reg) if hub.config.push.include_body else None
        fields = [
            _field("FORM_TYPE", SUMMARY),
            _field("message-count", str(max(1, unread))),
            _field("last-message-sender", reg.sender),
        ]
        if body is not None:
            fields.append(_field("last-message-body", body))
        notification = E(
            "{%s}notification" % NS, None, E("{%s}x" % ns.DATA_FORMS, {"type": "form"}, *fields)
        )
        children = [
            E(
                "{%s}publish" % ns.PUBSUB,
                {"node": reg.node},
                E("{%s}item" % ns.PUBSUB, None, notification),
            )
        ]
        if reg.options:
            options = [_field("FORM_TYPE", PUBLISH_OPTIONS)]
            options += [_field(var, *values) for var, values in sorted(reg.options.items())]
            x = E("{%s}x" % ns.DATA_FORMS, {"type": "submit"}, *options)
            children.append(E("{%s}publish-options" % ns.PUBSUB, None, x))
        return children

    def _body(self, txn: object, reg: Registration) -> str | None:
        raw = txn.get(  # type: ignore[attr-defined]
            journal.event_key(reg.index, reg.pos), db=self.hub.store.db("journal.events")
        )
        if raw is None:
            return None
        event = decode_event(Committed.decode(bytes(raw)).envelope)
        xml = getattr(event, "xml", None)
        if not xml:
            return None
        body = parse_fragment(xml.encode()).find("{%s}body" % ns.CLIENT)
        return body.text if body is not None else None

    async def _answered(self, reg: Registration, attempt: _Attempt, answer: Element) -> None:
        reg_key = (reg.owner, reg.service, reg.node)
        if answer.get("type") == "result":
            self.failures.pop(reg_key, None)
            self.hub.stats.pushes["ok"] += 1
            await self._append(PushNotified(reg.owner, reg.service, reg.node, attempt.upto))
            return
        error = answer.find("{%s}error" % ns.CLIENT)
        kind = error.get("type") if error is not None else None
        condition = next(
            (c.name for c in (error.elements() if error is not None else []) if c.ns == ns.STANZAS),
            "undefined-condition",
        )
        if kind == "wait":
            await self._failed(reg_key, condition, time.monotonic())
            return
        log.info("push_disabled", owner=reg.owner, service=reg.service, reason=condition)
        self.hub.stats.pushes["disabled"] += 1
        await self._append(PushDisabled(reg.owner, reg.service, reg.node, condition))

    async def _failed(self, reg_key: tuple[str, str, str], reason: str, now: float) -> None:
        self.hub.stats.pushes["retry"] += 1
        failed = self.failures.get(reg_key) or _Failures(0, now)
        failed.count += 1
        failed.retry_at = now + min(BACKOFF_MAX, 2.0**failed.count)
        self.failures[reg_key] = failed
        if failed.count >= self.hub.config.push.max_attempts:
            del self.failures[reg_key]
            owner, service, node = reg_key
            log.info("push_disabled", owner=owner, service=service, reason=reason)
            await self._append(PushDisabled(owner, service, node, reason))

    async def _append(self, event: object) -> None:
        try:
            await self.hub.log.append(event)
        except (LogUnavailable, ProposalRejected) as exc:
            # Still due in the log: the next round (here or on the next holder) tries again.
            log.warning("push_record_failed", error=repr(exc))


def _field(var: str, *values: str) -> Element:
    return E(
        "{%s}field" % ns.DATA_FORMS,
        {"var": var},
        *(E("{%s}value" % ns.DATA_FORMS, None, v) for v in values),
    )


async def run(hub: Hub) -> None:
    if not hub.config.push.enabled:
        return
    publisher = Publisher(hub)
    with hub.read() as txn:
        last = journal.applied_index(hub.store, txn)
    while True:
        with anyio.move_on_after(1.0):
            last = await hub.log.wait_applied_change(last)
        if not publisher.services_held():
            continue
        try:
            await publisher.round()
        except LogUnavailable:
            continue
