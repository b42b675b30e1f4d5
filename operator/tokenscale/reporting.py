"""What the operator tells about a budget: its status, Events and the /metrics gauges.

Status is merge-patched only when it changed beyond tolerance or its heartbeat came due (see
:mod:`tokenscale.status`); a 404 on the patch means the budget is gone and it is forgotten.
Events are posted for condition changes worth one; a failed post is logged, never raised.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tokenscale import api
from tokenscale.adapters.kube import KubeAdapter, KubeError
from tokenscale.core.types import Observation, Plan
from tokenscale.metrics import OperatorMetrics
from tokenscale.registry import BudgetEntry
from tokenscale.settings import OperatorSettings
from tokenscale.status import ConditionChange, merge_patch, needs_patch, parse_time

log = logging.getLogger("tokenscale")


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


def abnormal_status(condition_type: str) -> str:
    """The status ("True" | "False") in which a condition type reports a problem."""
    return "False" if condition_type in ("Ready", "SpecValid", "MetricsAvailable") else "True"


class Reporter:
    """Writes status and Events of budgets and exports their gauges.

    ``forget(namespace, name)`` is called when a status patch finds the budget deleted.
    """

    def __init__(
        self,
        settings: OperatorSettings,
        kube: KubeAdapter,
        metrics: OperatorMetrics,
        forget: Callable[[str, str], None],
    ):
        self._settings = settings
        self._kube = kube
        self._metrics = metrics
        self._forget = forget

    async def write_status(
        self, entry: BudgetEntry, wire: dict[str, Any], force: bool = False
    ) -> bool:
        """Merge-patch ``wire`` (the status as JSON) if it is worth a write (always with
        ``force``); True if a patch was sent and accepted."""
        since = None if entry.last_patch is None else time.monotonic() - entry.last_patch
        heartbeat = heartbeat_seconds(self._settings, entry.namespace, entry.name)
        if not force and not needs_patch(entry.written, wire, since, heartbeat):
            self._metrics.status_patches.labels("skipped").inc()
            return False
        patch = merge_patch(entry.written, wire)
        if not patch:
            entry.last_patch = time.monotonic()
            return False
        try:
            await self._kube.patch_budget_status(entry.namespace, entry.name, patch)
        except KubeError as exc:
            self._metrics.status_patches.labels("failed").inc()
            if exc.status == 404:
                self._forget(entry.namespace, entry.name)
            log.warning("%s/%s: status patch failed: %s", entry.namespace, entry.name, exc)
            return False
        self._metrics.status_patches.labels("sent").inc()
        entry.written = wire
        entry.last_patch = time.monotonic()
        return True

    async def condition_events(
        self, entry: BudgetEntry, changes: list[ConditionChange], at: datetime
    ) -> None:
        """An Event per condition change worth one (Warning when abnormal, except
        BudgetAtRisk)."""
        for change in changes:
            if not change.worth_event():
                continue
            c = change.after
            abnormal = c.status == abnormal_status(c.type)
            await self.event(
                entry, c.type, f"{c.type}={c.status} ({c.reason}): {c.message}",
                "Warning" if abnormal and c.type != "BudgetAtRisk" else "Normal", at,
            )

    async def event(
        self, entry: BudgetEntry, reason: str, message: str, type_: str, at: datetime
    ) -> None:
        """Post an Event about the budget (``type_``: Normal | Warning)."""
        involved = {
            "apiVersion": f"{api.GROUP}/{api.VERSION}",
            "kind": api.KIND,
            "metadata": {
                "name": entry.name,
                "namespace": entry.namespace,
                "uid": (entry.body.get("metadata") or {}).get("uid"),
            },
        }
        try:
            await self._kube.post_event(involved, reason, message, type_, at)
        except KubeError as exc:
            log.warning("%s/%s: event %s not posted: %s", entry.namespace, entry.name, reason,
                        exc)

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
