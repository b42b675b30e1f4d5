"""The TokenBudgets the operator watches, kept current from kopf's watch events.

Each budget is a :class:`BudgetEntry`: its last body, the parsed spec (or the problems that
made it invalid), the status as last written and the planner's memory. Budgets are planned on
wall-clock-aligned ticks (multiples of ``planning.intervalSeconds``), so budgets with the same
interval come due together and share one cycle. A spec is valid when the API model accepts
it *and* the operator's own checks (``operator_problems``: e.g. a Prometheus URL that is not
on the allowlist) find nothing.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenscale import api
from tokenscale.adapters.promql import WorkloadRef
from tokenscale.core.types import Memory
from tokenscale.metrics import OperatorMetrics


def next_tick(now: float, interval: float, phase: float = 0.0) -> float:
    """The first multiple of ``interval`` (s) after ``now`` (unix s), shifted by ``phase``
    (a fraction of the interval, rounded to whole seconds)."""
    offset = float(round(phase * interval))
    return (math.floor((now - offset) / interval) + 1) * interval + offset


#: The metadata an entry keeps of its TokenBudget's body (status and Events need no more).
KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion")


def kept_body(body: dict[str, Any]) -> dict[str, Any]:
    """The part of a TokenBudget body an entry keeps: its identifying metadata. The spec is
    kept parsed, the status as ``written``; a full body (with its status, and in a real
    cluster managedFields and kubectl's last-applied copy of the spec) per budget was most
    of a shard's memory at 10,000 budgets."""
    meta = body.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in KEPT_METADATA if k in meta}}


@dataclass
class BudgetEntry:
    """What the operator holds about one TokenBudget between cycles."""

    namespace: str
    name: str
    body: dict[str, Any]
    spec: api.TokenBudgetSpec | None = None
    problems: list[str] = field(default_factory=list)
    spec_key: str = ""
    memory: Memory | None = None  # None until restored from status
    written: dict[str, Any] | None = None  # the status as last written or read
    last_patch: float | None = None  # monotonic time (s) of the last status patch
    #: monotonic time (s) of the last status patch that failed (paced writes go to the
    #: budgets whose last write or attempt is oldest, so a failing one does not take every turn)
    last_failed_patch: float | None = None
    next_due: float = 0.0  # unix time (s) of the next planning
    reported_invalid_key: str | None = None
    in_flight: bool = False  # a cycle is planning it (never due twice at once)
    yielded: bool = False  # left to an older shard of another configuration (handoff)
    phase: float = 0.0  # this operator's ticks: a fraction of the interval past its multiples

    @property
    def generation(self) -> int | None:
        """metadata.generation, if the API server keeps one."""
        gen = (self.body.get("metadata") or {}).get("generation")
        return int(gen) if isinstance(gen, int) else None

    def ref(self, target: api.TargetSpec) -> WorkloadRef:
        """The workload of one target (always in the budget's namespace)."""
        return WorkloadRef(self.namespace, target.scale_target_ref.kind,
                           target.scale_target_ref.name)

    def schedule_after(self, now: float) -> None:
        """Due again at the first tick of its interval after ``now`` (unix s)."""
        assert self.spec is not None
        self.next_due = next_tick(now, self.spec.planning.interval_seconds, self.phase)


class BudgetRegistry:
    """The watched TokenBudgets by (namespace, name); ``changed`` is set when one needs an
    earlier planning than the loop is waiting for (a new or edited valid spec). ``owns``
    (namespace -> bool) keeps only this shard's budgets; the others' events are ignored.
    ``phase`` shifts this operator's ticks by a fraction of each interval (shard i of n:
    i/n), so shards do not all query Prometheus at the same second."""

    def __init__(
        self, metrics: OperatorMetrics, wall_clock: Callable[[], float],
        operator_problems: Callable[[api.TokenBudgetSpec], list[str]] | None = None,
        owns: Callable[[str], bool] | None = None,
        phase: float = 0.0,
    ):
        self.entries: dict[tuple[str, str], BudgetEntry] = {}
        self.changed = asyncio.Event()
        self._metrics = metrics
        self._clock = wall_clock
        self._operator_problems = operator_problems
        self._owns = owns
        self._phase = phase

    def on_event(self, event_type: str | None, body: dict[str, Any]) -> BudgetEntry | None:
        """Record a watch event; returns the entry if its spec changed (to validate)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if self._owns is not None and not self._owns(key[0]):
            return None  # another shard's (tokenscale.sharding)
        if event_type == "DELETED":
            self.forget(*key)
            return None
        entry = self.entries.get(key)
        if entry is None:
            entry = BudgetEntry(namespace=key[0], name=key[1], body=kept_body(body),
                                phase=self._phase)
            self.entries[key] = entry
            self._metrics.budgets.set(len(self.entries))
        entry.body = kept_body(body)
        if entry.written is None and isinstance(body.get("status"), dict):
            entry.written = body["status"]
        spec_key = json.dumps(body.get("spec"), sort_keys=True, default=str)
        if spec_key == entry.spec_key:
            return None
        entry.spec_key = spec_key
        spec: api.TokenBudgetSpec | None
        try:
            spec = api.parse_spec(body.get("spec"))
            problems = self._operator_problems(spec) if self._operator_problems else []
        except api.SpecError as exc:
            spec, problems = None, list(exc.problems)
        if problems or spec is None:
            entry.spec = None
            entry.problems = problems
        else:
            entry.spec = spec
            entry.problems = []
            entry.schedule_after(self._clock())
            self.changed.set()
        return entry

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted TokenBudget (its workloads stay as they are)."""
        entry = self.entries.pop((namespace, name), None)
        self._metrics.budgets.set(len(self.entries))
        if entry is not None and entry.spec is not None:
            self._metrics.forget_budget(
                namespace, name, [t.name for t in entry.spec.targets], entry.spec.budget.currency
            )

    def valid(self) -> list[BudgetEntry]:
        """The entries with a valid spec (the ones that are planned)."""
        return [e for e in self.entries.values() if e.spec is not None]

    def due(self, now: float) -> list[BudgetEntry]:
        """The valid entries whose planning is due at ``now`` (unix s) and not in flight."""
        return [e for e in self.valid() if e.next_due <= now and not e.in_flight]

    def seconds_to_next_due(self, now: float, at_most: float) -> float:
        """Seconds from ``now`` (unix s) until the next planning of an entry not in flight,
        capped at ``at_most``."""
        return min([*(e.next_due - now for e in self.valid() if not e.in_flight), at_most])
