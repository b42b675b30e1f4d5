"""The planning loop: observe -> plan -> act -> report, for all TokenBudgets at once.

One :class:`Reconciler` serves every TokenBudget the operator watches. kopf event handlers
keep its registry current (:meth:`Reconciler.on_event`); :meth:`Reconciler.run_forever`
wakes on wall-clock-aligned ticks (multiples of each budget's ``planning.intervalSeconds``),
so budgets with the same interval are due together and share one *cycle*:

* Prometheus, per URL: one range query of the token rate (window = the longest
  ``forecastWindowSeconds`` among the due budgets), one instant query of the queue, one
  ``increase()`` per distinct period start (budgets on the same calendar period share it),
  and one per distinct user override query. The count does not grow with the number of
  budgets. Answers are grouped to targets by namespace and pod name.
* Kubernetes, per namespace: one LIST of Deployments (StatefulSets only if used), one LIST of
  HPAs and one of KEDA ScaledObjects.

Then, per budget: the pure planner decides, replicas are patched through the scale
subresource (Active mode only, never on Conflict), Events are posted for every scale and
condition change, and status is merge-patched when it changed (see :mod:`tokenscale.status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tokenscale import api
from tokenscale.adapters import promql
from tokenscale.adapters.kube import Autoscaler, KubeAdapter, KubeError, Workload
from tokenscale.adapters.prometheus import (
    MetricFailure,
    PrometheusReader,
    Series,
    TargetSeries,
    check_samples,
    group_by_target,
    sum_by_time,
)
from tokenscale.adapters.promql import WorkloadRef
from tokenscale.core.types import Memory, Observation, Plan, TargetObservation
from tokenscale.metrics import OperatorMetrics
from tokenscale.settings import OperatorSettings
from tokenscale.status import (
    ConditionChange,
    build_status,
    invalid_status,
    memory_from_status,
    merge_patch,
    needs_patch,
    spec_valid_condition,
    unobservable_status,
)

log = logging.getLogger("tokenscale")

#: Points per range query of the token rate (step = window / this, at least 1 s).
RANGE_POINTS = 60
#: Model fit (spec.targets[].performance.query): history, step, and how often it is re-read.
FIT_HISTORY_SECONDS = 24 * 3600
FIT_STEP_SECONDS = 300
FIT_REFRESH_SECONDS = 600


class Planner(Protocol):
    """The pure planner's signature (:func:`tokenscale.core.planner.plan`)."""

    def __call__(
        self, spec: api.TokenBudgetSpec, observation: Observation, memory: Memory, now: datetime
    ) -> Plan: ...


class ActivityGate(Protocol):
    """Decides whether this operator replica may act (see :mod:`.adapters.peering`)."""

    async def check(self) -> bool: ...


def default_planner() -> Planner:
    """The decision core's planner."""
    from tokenscale.core import planner

    fn: Planner = planner.plan
    return fn


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
    last_patch: float | None = None  # monotonic time of the last status patch
    next_due: float = 0.0  # unix time of the next planning
    reported_invalid_key: str | None = None

    @property
    def generation(self) -> int | None:
        """metadata.generation, if the API server keeps one."""
        gen = (self.body.get("metadata") or {}).get("generation")
        return int(gen) if isinstance(gen, int) else None

    def ref(self, target: api.TargetSpec) -> WorkloadRef:
        """The workload of one target (always in the budget's namespace)."""
        return WorkloadRef(self.namespace, target.scale_target_ref.kind,
                           target.scale_target_ref.name)


Grouped = dict[WorkloadRef, TargetSeries] | MetricFailure


@dataclass
class _UrlAnswers:
    """The answers of one cycle from one Prometheus.

    The default queries' answers are grouped to the workloads of all due budgets once per
    cycle: grouping them per budget scanned every series once per budget (O(budgets²), the
    bulk of a cycle's CPU at 1,000 budgets).
    """

    at: float
    window: float
    rate: Grouped
    queue: Grouped
    increase: dict[int, Grouped]
    overrides: dict[tuple[str, str], list[Series] | MetricFailure]
    fits: dict[str, tuple[list[Series], list[Series]]] = field(default_factory=dict)


@dataclass
class _NamespaceState:
    workloads: dict[tuple[str, str], Workload] | KubeError
    autoscalers: list[Autoscaler] | KubeError


def _aligned_next(now: float, interval: float) -> float:
    return (math.floor(now / interval) + 1) * interval


class Reconciler:
    """Registry of TokenBudgets and the shared planning loop."""

    def __init__(
        self,
        settings: OperatorSettings,
        kube: KubeAdapter,
        metrics: OperatorMetrics,
        planner: Planner | None = None,
        wall_clock: Callable[[], float] = time.time,
        gate: ActivityGate | None = None,
    ):
        self.settings = settings
        self.gate = gate
        self._acting = gate is None  # with a gate: refresh from the API when it opens
        self.kube = kube
        self.metrics = metrics
        self._planner = planner
        self._clock = wall_clock
        self.entries: dict[tuple[str, str], BudgetEntry] = {}
        self._readers: dict[tuple[str, float], PrometheusReader] = {}
        self._wake = asyncio.Event()
        #: (url, quality query) -> (unix time read, quality series, token rate series)
        self._fit_cache: dict[tuple[str, str], tuple[float, list[Series], list[Series]]] = {}
        self.last_loop = time.monotonic()
        self.cycles = 0

    # ------------------------------------------------------------------ registry

    def on_event(self, event_type: str | None, body: dict[str, Any]) -> BudgetEntry | None:
        """Record a watch event; returns the entry if its spec changed (to validate)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if event_type == "DELETED":
            self.forget(*key)
            return None
        entry = self.entries.get(key)
        if entry is None:
            entry = BudgetEntry(namespace=key[0], name=key[1], body=body)
            self.entries[key] = entry
            self.metrics.budgets.set(len(self.entries))
        entry.body = body
        if entry.written is None and isinstance(body.get("status"), dict):
            entry.written = body["status"]
        spec_key = json.dumps(body.get("spec"), sort_keys=True, default=str)
        if spec_key == entry.spec_key:
            return None
        entry.spec_key = spec_key
        try:
            entry.spec = api.parse_spec(body.get("spec"))
            entry.problems = []
            entry.next_due = _aligned_next(self._clock(), entry.spec.planning.interval_seconds)
            self._wake.set()
        except api.SpecError as exc:
            entry.spec = None
            entry.problems = list(exc.problems)
        return entry

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted TokenBudget (its workloads stay as they are)."""
        entry = self.entries.pop((namespace, name), None)
        self.metrics.budgets.set(len(self.entries))
        if entry is not None and entry.spec is not None:
            self.metrics.forget_budget(
                namespace, name, [t.name for t in entry.spec.targets], entry.spec.budget.currency
            )

    async def report_invalid(self, entry: BudgetEntry) -> None:
        """Write phase Invalid and SpecValid=False (with every problem) for a bad spec."""
        if entry.spec is not None or entry.reported_invalid_key == entry.spec_key:
            return
        now = datetime.fromtimestamp(self._clock(), UTC)
        old = api.parse_status(entry.written)
        status, changes = invalid_status(old, entry.problems, now, entry.generation)
        if await self._write_status(entry, api.dump(status), force=True):
            entry.reported_invalid_key = entry.spec_key
        await self._condition_events(entry, changes, now)

    # ---------------------------------------------------------------------- loop

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Run cycles on their ticks until ``stop`` is set."""
        while not stop.is_set():
            self.last_loop = time.monotonic()
            now = self._clock()
            due = [e for e in self.entries.values() if e.spec is not None and e.next_due <= now]
            if due:
                try:
                    if await self.may_act():
                        await self.run_cycle(due, float(math.floor(now)))
                    else:  # another replica acts: skip this tick, scale and write nothing
                        for entry in due:
                            assert entry.spec is not None
                            entry.next_due = _aligned_next(
                                now, entry.spec.planning.interval_seconds)
                except Exception:  # one bad cycle must not stop the operator
                    log.exception("planning cycle failed")
                continue
            upcoming = [e.next_due for e in self.entries.values() if e.spec is not None]
            delay = min([*(t - now for t in upcoming), 5.0, self.settings.tick_seconds * 5])
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.01))
            if stop.is_set():
                break

    async def may_act(self) -> bool:
        """Whether this replica acts now (always without peering). When it starts to act
        (first time, or taking over from a killed peer) the TokenBudgets are read again, so
        spend and stabilization history continue from what the previous actor wrote."""
        if self.gate is None:
            return True
        acting = await self.gate.check()
        if acting and not self._acting:
            await self._refresh_from_api()
        self._acting = acting
        return acting

    async def _refresh_from_api(self) -> None:
        async def refresh(entry: BudgetEntry) -> None:
            try:
                body = await self.kube.get_budget(entry.namespace, entry.name)
            except KubeError as exc:
                if exc.status == 404:
                    self.forget(entry.namespace, entry.name)
                else:
                    log.warning("%s/%s: cannot re-read before acting: %s", entry.namespace,
                                entry.name, exc)
                return
            status = body.get("status")
            entry.body = body
            entry.written = status if isinstance(status, dict) else None
            entry.memory = None  # restored from that status by the next reconcile
            entry.last_patch = None

        limit = asyncio.Semaphore(self.settings.concurrency)

        async def bounded(entry: BudgetEntry) -> None:
            async with limit:
                await refresh(entry)

        await asyncio.gather(*(bounded(e) for e in list(self.entries.values())))

    async def run_cycle(self, due: list[BudgetEntry], at_unix: float) -> None:
        """Observe once for all ``due`` budgets, then plan/act/report each."""
        started = time.monotonic()
        at = datetime.fromtimestamp(at_unix, UTC)
        for entry in due:
            assert entry.spec is not None
            entry.next_due = _aligned_next(at_unix, entry.spec.planning.interval_seconds)
        answers = await self._query_prometheus(due, at_unix)
        namespaces = await self._read_namespaces(due)
        limit = asyncio.Semaphore(self.settings.concurrency)

        async def one(entry: BudgetEntry) -> None:
            async with limit:
                t0 = time.monotonic()
                try:
                    await self.reconcile(entry, at, answers, namespaces)
                except Exception:
                    log.exception("reconcile of %s/%s failed", entry.namespace, entry.name)
                self.metrics.reconcile_duration.observe(time.monotonic() - t0)

        await asyncio.gather(*(one(e) for e in due))
        self.cycles += 1
        self.metrics.cycles.inc()
        self.metrics.cycle_duration.observe(time.monotonic() - started)

    # ------------------------------------------------------------------ observing

    def _url(self, spec: api.TokenBudgetSpec) -> str:
        return (spec.prometheus.url or self.settings.prometheus_url).rstrip("/")

    def _reader(self, url: str, timeout: float) -> PrometheusReader:
        key = (url, timeout)
        if key not in self._readers:
            self._readers[key] = PrometheusReader(
                url, timeout,
                on_query=lambda kind: self.metrics.prometheus_queries.labels(kind).inc(),
                on_failure=lambda kind: self.metrics.prometheus_errors.labels(kind).inc(),
                clock_offset_seconds=self.settings.clock_offset_seconds,
            )
        return self._readers[key]

    def close(self) -> None:
        """Close the Prometheus sessions."""
        for reader in self._readers.values():
            reader.close()

    async def _query_prometheus(
        self, due: list[BudgetEntry], at: float
    ) -> dict[str, _UrlAnswers]:
        by_url: dict[str, list[BudgetEntry]] = {}
        for entry in due:
            assert entry.spec is not None
            by_url.setdefault(self._url(entry.spec), []).append(entry)
        results = await asyncio.gather(
            *(self._query_url(url, entries, at) for url, entries in by_url.items())
        )
        return dict(zip(by_url, results, strict=True))

    async def _query_url(
        self, url: str, entries: list[BudgetEntry], at_unix: float
    ) -> _UrlAnswers:
        specs = [e.spec for e in entries if e.spec is not None]
        timeout = max(s.prometheus.timeout_seconds for s in specs)
        reader = self._reader(url, timeout)
        window = float(max(s.planning.forecast_window_seconds for s in specs))
        step = max(1.0, math.ceil(window / RANGE_POINTS))
        at = datetime.fromtimestamp(at_unix, UTC)
        start = at - timedelta(seconds=window)
        ns = self.settings.namespaces
        rate_window = self.settings.rate_window

        async def attempt(coro: Any) -> list[Series] | MetricFailure:
            try:
                result: list[Series] = await coro
                return result
            except MetricFailure as failure:
                return failure
            except Exception as exc:  # one odd query must not fail the cycle of every budget
                named = unexpected_failure(exc)
                self.metrics.prometheus_errors.labels(named.kind).inc()
                return named

        spans: set[int] = set()
        for s in specs:
            from tokenscale.core.budget import period_bounds

            period_start, _ = period_bounds(s.budget, at)
            spans.add(max(1, int(at_unix - period_start.timestamp())))
        overrides: set[tuple[str, str]] = set()
        for s in specs:
            for t in s.targets:
                if t.metrics.token_rate_query:
                    overrides.add(("rate", t.metrics.token_rate_query))
                if t.metrics.queue_query:
                    overrides.add(("queue", t.metrics.queue_query))
        span_list = sorted(spans)
        override_list = sorted(overrides)
        jobs = [
            attempt(reader.range(promql.token_rate_query(ns, rate_window), start, at, step)),
            attempt(reader.instant(promql.queue_query(ns), at)),
            *(attempt(reader.instant(promql.tokens_increase_query(sp, ns), at))
              for sp in span_list),
            *(
                attempt(reader.range(q, start, at, step)) if kind == "rate"
                else attempt(reader.instant(q, at))
                for kind, q in override_list
            ),
        ]
        out = await asyncio.gather(*jobs)
        n = len(span_list)
        fits = await self._fit_series(url, reader, specs, at_unix)
        refs = {e.ref(t) for e in entries if e.spec is not None for t in e.spec.targets}
        return _UrlAnswers(
            fits=fits,
            at=at_unix,
            window=window,
            rate=_grouped(out[0], refs),
            queue=_grouped(out[1], refs),
            increase={span: _grouped(answer, refs)
                      for span, answer in zip(span_list, out[2:2 + n], strict=True)},
            overrides=dict(zip(override_list, out[2 + n:], strict=True)),
        )

    async def _fit_series(
        self, url: str, reader: PrometheusReader, specs: list[api.TokenBudgetSpec], at: float
    ) -> dict[str, tuple[list[Series], list[Series]]]:
        """Quality and token-rate history for each ``performance.query`` (24 h, 5 min
        steps), re-read every FIT_REFRESH_SECONDS, not every cycle; failures leave the
        fit to the spec's a, b."""
        wanted = {t.performance.query for s in specs for t in s.targets if t.performance.query}
        out: dict[str, tuple[list[Series], list[Series]]] = {}
        for query in sorted(wanted):
            cached = self._fit_cache.get((url, query))
            if cached is None or at - cached[0] >= FIT_REFRESH_SECONDS:
                end = datetime.fromtimestamp(at, UTC)
                start = end - timedelta(seconds=FIT_HISTORY_SECONDS)
                try:
                    quality, rates = await asyncio.gather(
                        reader.range(query, start, end, FIT_STEP_SECONDS),
                        reader.range(promql.token_rate_query(self.settings.namespaces, "5m"),
                                     start, end, FIT_STEP_SECONDS),
                    )
                except MetricFailure as failure:
                    log.warning("performance query %r failed: %s", query[:200], failure)
                    quality, rates = [], []
                cached = (at, quality, rates)
                self._fit_cache[(url, query)] = cached
            out[query] = (cached[1], cached[2])
        return out

    async def _read_namespaces(self, due: list[BudgetEntry]) -> dict[str, _NamespaceState]:
        kinds: dict[str, set[str]] = {}
        for entry in due:
            assert entry.spec is not None
            for t in entry.spec.targets:
                kinds.setdefault(entry.namespace, set()).add(t.scale_target_ref.kind)

        async def read(namespace: str, wanted: set[str]) -> _NamespaceState:
            workloads: dict[tuple[str, str], Workload] | KubeError = {}
            try:
                for kind in sorted(wanted):
                    listed = await self.kube.list_workloads(namespace, kind)
                    assert isinstance(workloads, dict)
                    workloads.update({(kind, name): w for name, w in listed.items()})
            except KubeError as exc:
                workloads = exc
            try:
                autoscalers: list[Autoscaler] | KubeError = await self.kube.list_autoscalers(
                    namespace
                )
            except KubeError as exc:
                autoscalers = exc
            return _NamespaceState(workloads, autoscalers)

        states = await asyncio.gather(*(read(ns, k) for ns, k in kinds.items()))
        return dict(zip(kinds, states, strict=True))

    def observe(
        self, entry: BudgetEntry, answers: _UrlAnswers, state: _NamespaceState
    ) -> Observation | None:
        """The Observation of one budget from the cycle's shared answers (None: no
        workload data, skip this cycle)."""
        spec = entry.spec
        assert spec is not None
        if isinstance(state.workloads, KubeError):
            log.warning("%s/%s: cannot list workloads: %s", entry.namespace, entry.name,
                        state.workloads)
            return None
        refs = {t.name: entry.ref(t) for t in spec.targets}
        default_rate = answers.rate
        default_queue = answers.queue
        window_start = answers.at - spec.planning.forecast_window_seconds
        stale_after = max(self.settings.stale_after_seconds,
                          2 * self.settings.rate_window_seconds())
        targets: dict[str, TargetObservation] = {}
        for t in spec.targets:
            ref = refs[t.name]
            workload = state.workloads.get((ref.kind, ref.name))
            conflict = None
            if isinstance(state.autoscalers, list):
                for a in state.autoscalers:
                    if a.target_kind == ref.kind and a.target_name == ref.name:
                        conflict = a.describe()
                        break
            if workload is None:
                targets[t.name] = TargetObservation(
                    current_replicas=0, ready_replicas=0,
                    target_error=f"{ref.kind} {ref.name} not found in {ref.namespace}",
                    conflict=conflict,
                )
                continue
            rate = (
                _grouped(answers.overrides[("rate", t.metrics.token_rate_query)], [ref])
                if t.metrics.token_rate_query else default_rate
            )
            queue = (
                _grouped(answers.overrides[("queue", t.metrics.queue_query)], [ref])
                if t.metrics.queue_query else default_queue
            )
            samples: tuple[tuple[datetime, float], ...] = ()
            error: str | None = None
            if isinstance(rate, MetricFailure):
                error = rate.kind
            else:
                # A spec edited while this cycle queried has refs the answers were not
                # grouped for: no series this cycle (Empty, held), grouped next cycle.
                group = rate.get(ref) or TargetSeries()
                summed = [(ts, v) for ts, v in sum_by_time(group.pods) if ts >= window_start]
                if group.failure:
                    error = group.failure
                elif not summed and workload.replicas == 0:
                    summed = [(answers.at, 0.0)]  # scaled to zero: serves nothing
                else:
                    problem = check_samples(summed, answers.at, stale_after)
                    error = problem[0] if problem else None
                samples = tuple((datetime.fromtimestamp(ts, UTC), v) for ts, v in summed)
            queue_length = 0.0
            if isinstance(queue, MetricFailure):
                error = error or queue.kind
            else:
                qgroup = queue.get(ref) or TargetSeries()
                if qgroup.failure:
                    error = error or qgroup.failure
                values = [s[-1][1] for s in qgroup.pods.values() if s]
                if any(math.isnan(v) for v in values):
                    error = error or "NotANumber"
                elif any(math.isinf(v) for v in values):
                    error = error or "Infinite"
                else:
                    queue_length = float(sum(values))
            targets[t.name] = TargetObservation(
                current_replicas=workload.replicas,
                ready_replicas=workload.ready_replicas,
                token_rate_samples=samples,
                queue_length=queue_length,
                metrics_error=error,
                conflict=conflict,
                quality_samples=quality_samples(answers.fits.get(t.performance.query), ref),
            )
        return Observation(targets=targets, tokens_in_period=self._tokens_in_period(
            entry, answers, refs.values()))

    def _tokens_in_period(
        self, entry: BudgetEntry, answers: _UrlAnswers, refs: Iterable[WorkloadRef]
    ) -> float | None:
        from tokenscale.core.budget import period_bounds

        assert entry.spec is not None
        at = datetime.fromtimestamp(answers.at, UTC)
        period_start, _ = period_bounds(entry.spec.budget, at)
        span = max(1, int(answers.at - period_start.timestamp()))
        result = answers.increase.get(span)
        if result is None or isinstance(result, MetricFailure):
            return None
        total = 0.0
        for ref in set(refs):
            group = result.get(ref)
            if group is None:
                continue
            for samples in group.pods.values():
                if samples and math.isfinite(samples[-1][1]):
                    total += samples[-1][1]
        return total

    # ------------------------------------------------------------ plan, act, report

    async def reconcile(
        self,
        entry: BudgetEntry,
        at: datetime,
        answers: dict[str, _UrlAnswers],
        namespaces: dict[str, _NamespaceState],
    ) -> None:
        """Plan, act and report one budget from the cycle's shared observations."""
        spec = entry.spec
        if spec is None:
            return
        state = namespaces[entry.namespace]
        observation = self.observe(entry, answers[self._url(spec)], state)
        if observation is None:
            if isinstance(state.workloads, KubeError):  # say why nothing is planned
                status, changes = unobservable_status(
                    api.parse_status(entry.written),
                    f"cannot list the workloads of {entry.namespace}: {state.workloads}",
                    at, entry.generation)
                await self._write_status(entry, api.dump(status))
                await self._condition_events(entry, changes, at)
            return
        if entry.memory is None:
            entry.memory = memory_from_status(api.parse_status(entry.written))
        if self._planner is None:
            self._planner = default_planner()
        plan = self._planner(spec, observation, entry.memory, at)
        await self._act(entry, spec, plan, observation, at)
        entry.memory = plan.memory
        old = api.parse_status(entry.written)
        status, changes = build_status(
            plan, observation, old, at, entry.generation, extra_conditions=[spec_valid_condition()]
        )
        wire = api.dump(status)
        await self._write_status(entry, wire)
        await self._condition_events(entry, changes, at)
        self._export(entry, spec, plan, observation)

    async def _act(
        self, entry: BudgetEntry, spec: api.TokenBudgetSpec, plan: Plan,
        observation: Observation, at: datetime,
    ) -> None:
        if spec.mode != "Active":
            return  # DryRun: decide and report only
        for t in spec.targets:
            decision = plan.decisions.get(t.name)
            seen = observation.targets.get(t.name)
            if decision is None or seen is None or not decision.scale:
                continue
            if seen.conflict or seen.target_error or decision.replicas == seen.current_replicas:
                continue
            ref = t.scale_target_ref
            try:
                await self.kube.patch_scale(entry.namespace, ref.kind, ref.name, decision.replicas)
            except KubeError as exc:
                self.metrics.scale_errors.inc()
                log.warning("%s/%s: scaling %s %s failed: %s", entry.namespace, entry.name,
                            ref.kind, ref.name, exc)
                await self._event(entry, "ScaleFailed",
                                  f"{ref.kind} {ref.name}: {seen.current_replicas} -> "
                                  f"{decision.replicas} failed: {exc}", "Warning", at)
                continue
            self.metrics.scale_actions.labels(decision.reason).inc()
            log.info("%s/%s: scaled %s %s %d -> %d (%s)", entry.namespace, entry.name, ref.kind,
                     ref.name, seen.current_replicas, decision.replicas, decision.reason)
            await self._event(
                entry, "Scaled",
                f"{ref.kind} {ref.name}: {seen.current_replicas} -> {decision.replicas} "
                f"replicas ({decision.reason}: {decision.message})", "Normal", at,
            )

    async def _write_status(
        self, entry: BudgetEntry, wire: dict[str, Any], force: bool = False
    ) -> bool:
        since = None if entry.last_patch is None else time.monotonic() - entry.last_patch
        if not force and not needs_patch(
            entry.written, wire, since, _heartbeat(self.settings, entry.namespace, entry.name)
        ):
            self.metrics.status_patches.labels("skipped").inc()
            return False
        patch = merge_patch(entry.written, wire)
        if not patch:
            entry.last_patch = time.monotonic()
            return False
        try:
            await self.kube.patch_budget_status(entry.namespace, entry.name, patch)
        except KubeError as exc:
            self.metrics.status_patches.labels("failed").inc()
            if exc.status == 404:
                self.forget(entry.namespace, entry.name)
            log.warning("%s/%s: status patch failed: %s", entry.namespace, entry.name, exc)
            return False
        self.metrics.status_patches.labels("sent").inc()
        entry.written = wire
        entry.last_patch = time.monotonic()
        return True

    async def _condition_events(
        self, entry: BudgetEntry, changes: list[ConditionChange], at: datetime
    ) -> None:
        for change in changes:
            if not change.worth_event():
                continue
            c = change.after
            abnormal = change.worth_event() and c.status == _abnormal_status(c.type)
            await self._event(
                entry, c.type, f"{c.type}={c.status} ({c.reason}): {c.message}",
                "Warning" if abnormal and c.type != "BudgetAtRisk" else "Normal", at,
            )

    async def _event(
        self, entry: BudgetEntry, reason: str, message: str, type_: str, at: datetime
    ) -> None:
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
            await self.kube.post_event(involved, reason, message, type_, at)
        except KubeError as exc:
            log.warning("%s/%s: event %s not posted: %s", entry.namespace, entry.name, reason,
                        exc)

    def _export(
        self, entry: BudgetEntry, spec: api.TokenBudgetSpec, plan: Plan, observation: Observation
    ) -> None:
        m, ns, name, cur = self.metrics, entry.namespace, entry.name, spec.budget.currency
        for t in spec.targets:
            decision = plan.decisions.get(t.name)
            seen = observation.targets.get(t.name)
            if decision is not None:
                m.desired_replicas.labels(ns, name, t.name).set(decision.replicas)
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


def unexpected_failure(exc: Exception) -> MetricFailure:
    """A named failure for an exception the Prometheus adapter let through (e.g. urllib3's
    own connection errors): Unreachable for connection problems, Timeout for timeouts,
    else BadResponse."""
    name = type(exc).__name__
    text = f"{name}: {exc}"[:500]
    if isinstance(exc, ConnectionError) or "Connection" in name or "Protocol" in name:
        return MetricFailure("Unreachable", text)
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return MetricFailure("Timeout", text)
    return MetricFailure("BadResponse", text)


def _abnormal_status(condition_type: str) -> str:
    return "False" if condition_type in ("Ready", "SpecValid", "MetricsAvailable") else "True"


def _grouped(
    answer: list[Series] | MetricFailure, refs: Iterable[WorkloadRef]
) -> dict[WorkloadRef, TargetSeries] | MetricFailure:
    if isinstance(answer, MetricFailure):
        return answer
    return group_by_target(answer, refs)


def quality_samples(
    fit: tuple[list[Series], list[Series]] | None, ref: WorkloadRef
) -> tuple[tuple[float, float], ...]:
    """``(tokens/s, quality)`` pairs at the timestamps both histories share.

    The quality query may answer per pod (then the target's pods are averaged) or with one
    series (a model-wide signal); anything else gives no samples. Points with no traffic
    (tokens/s <= 0) or non-finite values are left out: ln(0) has no place in the fit.
    """
    if fit is None:
        return ()
    quality_series, rate_series = fit
    per_pod = group_by_target(quality_series, [ref])[ref]
    if per_pod.pods and not per_pod.failure:
        sums: dict[float, list[float]] = {}
        for samples in per_pod.pods.values():
            for ts, v in samples:
                sums.setdefault(ts, []).append(v)
        quality = {ts: sum(vs) / len(vs) for ts, vs in sums.items()}
    elif len(quality_series) == 1:
        quality = dict(quality_series[0].samples)
    else:
        return ()
    rates = dict(sum_by_time(group_by_target(rate_series, [ref])[ref].pods))
    return tuple(
        (rates[ts], q) for ts, q in sorted(quality.items())
        if ts in rates and rates[ts] > 0 and math.isfinite(rates[ts]) and math.isfinite(q)
    )


def _heartbeat(settings: OperatorSettings, namespace: str, name: str) -> float:
    """The status heartbeat (s) of one budget, spread by up to +25 % by a hash of its name.

    Budgets created together would otherwise all reach their heartbeat in the same cycle and
    write 1,000 statuses at once; a fixed per-budget offset spreads those writes out.
    """
    spread = zlib.crc32(f"{namespace}/{name}".encode()) / 2**32  # [0, 1)
    return settings.status_heartbeat_seconds * (1.0 + 0.25 * spread)
