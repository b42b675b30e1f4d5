"""What the operator tells about a budget: its status, Events and the /metrics gauges.

Status is merge-patched only when it changed beyond tolerance or its heartbeat came due (see
:mod:`tokenscale.status`); a 404 on the patch means the budget is gone and it is forgotten.
Events are posted for condition changes worth one; a failed post is logged, never raised.

**Spread, not all at once** (issue 15): what many budgets do together is paced per cycle.

* *Heartbeat and drift writes* (nothing changed beyond tolerance and the last write is a
  heartbeat old, or only token rates, queue lengths and latencies moved) get an allowance
  per cycle of :attr:`OperatorSettings.status_heartbeat_burst` x the heartbeats' steady rate
  (the cycle's
  budgets x their interval / the heartbeat), given to the budgets written longest ago and
  sent at the cycle's end (:class:`CycleWrites`); the rest wait for the next cycle, still
  due (a drift that settles back within tolerance meanwhile is not written at all). Budgets created
  together otherwise all rewrite their status in the same cycle at every heartbeat (2,500
  patches in one cycle at 2,500 budgets), and their forecasts move together while their
  windows fill after a start. A first write and a change of anything else (conditions,
  replicas, spend, the stabilization memory) are never held back.
* *Condition-change Events of a cycle* wait in a queue and are posted, oldest first, at most
  :attr:`OperatorSettings.events_per_cycle` per cycle (:meth:`Reporter.flush_events`): a
  Prometheus outage at a start flips MetricsAvailable on every budget at once (2,000 Events
  in one cycle on a shard). At most ten cycles' worth wait; beyond that the oldest are
  dropped, logged and counted (the condition itself is in each status). Scale Events and
  a rejected spec's Events (one per edit of the user's) are posted at once.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tokenscale import api
from tokenscale.adapters.kube import KubeAdapter, KubeError
from tokenscale.concurrency import gather_bounded
from tokenscale.core.types import Observation, Plan
from tokenscale.metrics import OperatorMetrics
from tokenscale.registry import BudgetEntry
from tokenscale.settings import OperatorSettings
from tokenscale.status import ConditionChange, merge_patch, parse_time, patch_cause

log = logging.getLogger("tokenscale")

#: cycles' worth of condition Events (x events_per_cycle) that may wait to be posted
EVENT_BACKLOG_CYCLES = 10

#: an Event to post: (involved object, reason, message, type, time)
EventItem = tuple[dict[str, Any], str, str, str, datetime]


def heartbeat_seconds(settings: OperatorSettings, namespace: str, name: str) -> float:
    """The status heartbeat (s) of one budget, spread by up to +25 % by a hash of its name.

    Budgets created together would otherwise all reach their heartbeat in the same cycle and
    write 1,000 statuses at once; a fixed per-budget offset spreads those writes out.
    """
    spread = zlib.crc32(f"{namespace}/{name}".encode()) / 2**32  # [0, 1)
    return settings.status_heartbeat_seconds * (1.0 + 0.25 * spread)


def adopt_status_age(entry: BudgetEntry, at: datetime) -> None:
    """Count a status read from the API (after a start or a takeover) as written when its
    ``lastReconcileTime`` says, not as never written: an unchanged status is then rewritten
    at its heartbeat, not by every budget in the first cycle (a restarted shard of 2,500
    budgets wrote 2,500 statuses at once). A missing or future time leaves it unwritten."""
    if entry.last_patch is not None or not isinstance(entry.written, dict):
        return
    stamp = parse_time(str(entry.written.get("lastReconcileTime") or ""))
    if stamp is None:
        return
    age = (at - stamp).total_seconds()
    if age >= 0:
        entry.last_patch = time.monotonic() - age


def involved_object(entry: BudgetEntry) -> dict[str, Any]:
    """The ``involvedObject`` of an Event about the budget of ``entry``."""
    return {
        "apiVersion": f"{api.GROUP}/{api.VERSION}",
        "kind": api.KIND,
        "metadata": {
            "name": entry.name,
            "namespace": entry.namespace,
            "uid": (entry.body.get("metadata") or {}).get("uid"),
        },
    }


def condition_event_items(
    entry: BudgetEntry, changes: list[ConditionChange], at: datetime
) -> list[EventItem]:
    """(involved object, reason, message, type, time) of an Event per condition change worth
    one: Warning when abnormal, except BudgetAtRisk."""
    items: list[EventItem] = []
    for change in changes:
        if not change.worth_event():
            continue
        c = change.after
        abnormal = c.status == abnormal_status(c.type)
        items.append((involved_object(entry), c.type,
                      f"{c.type}={c.status} ({c.reason}): {c.message}",
                      "Warning" if abnormal and c.type != "BudgetAtRisk" else "Normal", at))
    return items


def abnormal_status(condition_type: str) -> str:
    """The status ("True" | "False") in which a condition type reports a problem."""
    return "False" if condition_type in ("Ready", "SpecValid", "MetricsAvailable") else "True"


@dataclass
class CycleWrites:
    """What one cycle may still write beyond first writes and changes: ``slots`` heartbeat
    and drift status writes, ``events`` condition Events. The writes offered are kept on a
    heap by the age of their budget's last write, the ``slots`` oldest; a younger one is
    left for a later cycle (still due then), so none waits for ever behind others."""

    slots: int
    events: int
    #: (minus the last write or attempt, order, entry, wire, the status written when offered)
    kept: list[tuple[float, int, BudgetEntry, dict[str, Any], dict[str, Any] | None]] = field(
        default_factory=list)
    offered: int = 0

    def offer(self, entry: BudgetEntry, wire: dict[str, Any]) -> None:
        """Keep ``wire`` for the cycle's end if its budget's last write (or failed attempt)
        is among the ``slots`` oldest offered."""
        self.offered += 1
        last = max(entry.last_patch or 0.0, entry.last_failed_patch or 0.0)
        # a min-heap on minus that time: the youngest at the top, evicted first
        item = (-last, self.offered, entry, wire, entry.written)
        if len(self.kept) < self.slots:
            heapq.heappush(self.kept, item)
        elif self.kept and item[:2] > self.kept[0][:2]:
            heapq.heapreplace(self.kept, item)


class Reporter:
    """Writes status and Events of budgets and exports their gauges.

    ``forget(namespace, name)`` is called when a status patch finds the budget deleted;
    ``current(entry)`` tells whether an entry is still the registry's (a write held to the
    cycle's end is dropped when its budget was deleted meanwhile).
    """

    def __init__(
        self,
        settings: OperatorSettings,
        kube: KubeAdapter,
        metrics: OperatorMetrics,
        forget: Callable[[str, str], None],
        current: Callable[[BudgetEntry], bool],
    ):
        self._settings = settings
        self._kube = kube
        self._metrics = metrics
        self._forget = forget
        self._current = current  # whether an entry is still the registry's (not deleted)
        #: condition Events waiting: (involved object, reason, message, type, time)
        self.backlog: deque[EventItem] = deque()
        self._dropped = 0  # Events dropped since the last flush (logged there, once)

    @property
    def backlog_limit(self) -> int:
        """The most condition Events that wait (ten cycles' worth)."""
        return EVENT_BACKLOG_CYCLES * self._settings.events_per_cycle

    def begin_cycle(self, due: Sequence[BudgetEntry]) -> CycleWrites:
        """A cycle's allowances: heartbeat and drift writes (``status_heartbeat_burst`` x the
        ``due`` budgets' steady heartbeat rate, at least one) and ``events_per_cycle``
        Events; :meth:`end_cycle` sends what they admit."""
        heartbeat = self._settings.status_heartbeat_seconds
        if heartbeat <= 0:
            slots = len(due)  # a write every cycle was asked for
        else:
            steady = sum(e.spec.planning.interval_seconds for e in due
                         if e.spec is not None) / heartbeat
            slots = max(1, math.ceil(self._settings.status_heartbeat_burst * steady - 1e-9))
        return CycleWrites(slots, self._settings.events_per_cycle)

    async def end_cycle(self, cycle: CycleWrites) -> None:
        """Send the heartbeat and drift writes ``cycle`` kept (the longest unwritten ones, at
        most its slots) and post waiting Events within its allowance, ``concurrency`` at a
        time."""
        kept, cycle.kept = cycle.kept, []
        self._metrics.status_patches.labels("deferred").inc(cycle.offered - len(kept))

        async def send(entry: BudgetEntry, wire: dict[str, Any],
                       offered_over: dict[str, Any] | None) -> None:
            if (entry.spec is None or entry.written is not offered_over
                    or not self._current(entry)):
                return  # made invalid, written or deleted since: this status is stale
            try:
                await self._patch(entry, wire)
            except Exception:  # one budget's failure must not stop the others' writes
                log.exception("%s/%s: status patch failed", entry.namespace, entry.name)

        await gather_bounded((send(entry, wire, over) for _, _, entry, wire, over in kept),
                             self._settings.concurrency)
        await self.flush_events(cycle)

    async def write_status(
        self, entry: BudgetEntry, wire: dict[str, Any], force: bool = False,
        cycle: CycleWrites | None = None,
    ) -> bool:
        """Merge-patch ``wire`` (the status as JSON) if it is worth a write (always with
        ``force``); True if a patch was sent and accepted. Within a ``cycle``, a heartbeat or
        drift write is left to :meth:`end_cycle` (False here)."""
        since = None if entry.last_patch is None else time.monotonic() - entry.last_patch
        heartbeat = heartbeat_seconds(self._settings, entry.namespace, entry.name)
        cause = "first" if force else patch_cause(entry.written, wire, since, heartbeat)
        if cause is None:
            self._metrics.status_patches.labels("skipped").inc()
            return False
        if cause in ("heartbeat", "drift") and cycle is not None:
            cycle.offer(entry, wire)
            return False
        return await self._patch(entry, wire)

    async def _patch(self, entry: BudgetEntry, wire: dict[str, Any]) -> bool:
        patch = merge_patch(entry.written, wire)
        if not patch:
            entry.last_patch = time.monotonic()
            return False
        try:
            await self._kube.patch_budget_status(entry.namespace, entry.name, patch)
        except KubeError as exc:
            self._metrics.status_patches.labels("failed").inc()
            entry.last_failed_patch = time.monotonic()
            if exc.status == 404:
                self._forget(entry.namespace, entry.name)
            log.warning("%s/%s: status patch failed: %s", entry.namespace, entry.name, exc)
            return False
        self._metrics.status_patches.labels("sent").inc()
        entry.written = wire
        entry.last_patch = time.monotonic()
        return True

    def condition_events(
        self, entry: BudgetEntry, changes: list[ConditionChange], at: datetime
    ) -> None:
        """Queue an Event per condition change worth one; :meth:`end_cycle` posts them."""
        for item in condition_event_items(entry, changes, at):
            self.backlog.append(item)
            if len(self.backlog) > self.backlog_limit:
                self.backlog.popleft()
                self._metrics.events.labels("dropped").inc()
                self._dropped += 1

    async def post_condition_events(
        self, entry: BudgetEntry, changes: list[ConditionChange], at: datetime
    ) -> None:
        """Post an Event per condition change worth one at once (a rejected spec: one per
        edit of the user's, never a storm of the operator's own)."""
        for item in condition_event_items(entry, changes, at):
            await self._post(*item)

    async def flush_events(self, cycle: CycleWrites) -> None:
        """Post the waiting condition Events, oldest first, within the ``cycle``'s allowance
        (``concurrency`` at a time); the rest keep waiting."""
        if self._dropped:
            log.warning("%d condition Events dropped, the oldest: more than %d waited",
                        self._dropped, self.backlog_limit)
            self._dropped = 0
        batch = []
        while self.backlog and cycle.events >= 1:
            batch.append(self.backlog.popleft())
            cycle.events -= 1
        if self.backlog:
            self._metrics.events.labels("deferred").inc(len(self.backlog))

        async def post(item: EventItem) -> None:
            try:
                await self._post(*item)
            except Exception:  # one Event's failure must not stop the others
                log.exception("event %s not posted", item[1])

        await gather_bounded((post(item) for item in batch), self._settings.concurrency)

    async def event(
        self, entry: BudgetEntry, reason: str, message: str, type_: str, at: datetime
    ) -> None:
        """Post an Event about the budget now (``type_``: Normal | Warning)."""
        await self._post(involved_object(entry), reason, message, type_, at)

    async def _post(self, involved: dict[str, Any], reason: str, message: str, type_: str,
                    at: datetime) -> None:
        try:
            await self._kube.post_event(involved, reason, message, type_, at)
        except KubeError as exc:
            self._metrics.events.labels("failed").inc()
            meta = involved["metadata"]
            log.warning("%s/%s: event %s not posted: %s", meta["namespace"], meta["name"],
                        reason, exc)
            return
        self._metrics.events.labels("posted").inc()

    def export_metrics(
        self, entry: BudgetEntry, spec: api.TokenBudgetSpec, plan: Plan, observation: Observation
    ) -> None:
        """Set the budget's gauges: replicas per target, spend, projected cost (currency),
        cost rate (currency/h) and what is left of each limit."""
        m, ns, name, cur = self._metrics, entry.namespace, entry.name, spec.budget.currency
        for t in spec.targets:
            decision = plan.decisions.get(t.name)
            seen = observation.targets.get(t.name)
            if decision is not None:
                m.desired_replicas.labels(ns, name, t.name).set(decision.replicas)
                if decision.admission_tokens_per_second is not None:
                    m.admission.labels(ns, name, t.name).set(
                        decision.admission_tokens_per_second)
                else:
                    with contextlib.suppress(KeyError):
                        m.admission.remove(ns, name, t.name)
            if seen is not None:
                m.current_replicas.labels(ns, name, t.name).set(seen.current_replicas)
        m.spend_cost.labels(ns, name, cur).set(plan.spend.cost)
        m.spend_tokens.labels(ns, name).set(plan.spend.tokens)
        m.projected_cost.labels(ns, name, cur).set(plan.spend.projected_cost)
        m.cost_per_hour.labels(ns, name, cur).set(plan.spend.cost_per_hour)
        if spec.budget.max_cost is not None:
            m.budget_remaining.labels(ns, name, "currency").set(
                max(0.0, spec.budget.max_cost - plan.spend.cost))
        if spec.budget.max_tokens is not None:
            m.budget_remaining.labels(ns, name, "tokens").set(
                max(0.0, spec.budget.max_tokens - plan.spend.tokens))
