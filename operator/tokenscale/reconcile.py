"""The planning loop: observe -> plan -> act -> report, for all TokenBudgets at once.

One :class:`Reconciler` serves every TokenBudget the operator watches. kopf event handlers
keep its registry current (:meth:`Reconciler.on_event`, :mod:`tokenscale.registry`);
:meth:`Reconciler.run_forever` wakes on wall-clock-aligned ticks (multiples of each budget's
``planning.intervalSeconds``), so budgets with the same interval are due together and share
one *cycle*:

1. observe, once for all due budgets: Prometheus batched per URL
   (:mod:`tokenscale.prometheus_reads`) and the workloads per namespace from the
   informers' cache, else LISTs (:mod:`tokenscale.namespace_reads`); then per budget, once
   the answers to its own user queries are in (each by its own deadline), the pure
   :func:`tokenscale.observation.build_observation`;
2. plan, per budget: the pure planner (:func:`tokenscale.core.planner.plan`);
3. act: replicas patched through the scale subresource (Active mode only, never on
   Conflict; :mod:`tokenscale.scaling`);
4. report: status merge-patched when it changed, Events for every scale and condition
   change, gauges exported (:mod:`tokenscale.reporting`, :mod:`tokenscale.status`).

Cycles run as tasks: the loop does not wait for one before starting the next tick's, and a
budget is never in two cycles at once (``BudgetEntry.in_flight``). So a cycle held up by a
tenant's slow user queries holds up only the budgets that wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from tokenscale import api
from tokenscale.adapters.informer import WorkloadCache
from tokenscale.adapters.kube import KubeAdapter, KubeError
from tokenscale.concurrency import gather_bounded
from tokenscale.core.types import Memory, Observation, Plan
from tokenscale.memory import release_free_memory
from tokenscale.metrics import OperatorMetrics
from tokenscale.namespace_reads import NamespaceState, read_namespaces
from tokenscale.observation import (
    build_observation,
    metrics_status,
    priced_spec,
    replica_prices,
)
from tokenscale.prometheus_reads import PrometheusReads, UrlAnswers
from tokenscale.registry import BudgetEntry, BudgetRegistry, kept_body
from tokenscale.reporting import CycleWrites, Reporter, adopt_status_age
from tokenscale.scaling import apply_plan
from tokenscale.settings import OperatorSettings
from tokenscale.sharding import Handoff
from tokenscale.status import (
    build_status,
    invalid_status,
    memory_from_status,
    spec_valid_condition,
    unobservable_status,
)

__all__ = ["ActivityGate", "BudgetEntry", "Planner", "Reconciler", "default_planner"]

log = logging.getLogger("tokenscale")


class Planner(Protocol):
    """The pure planner's signature (:func:`tokenscale.core.planner.plan`)."""

    def __call__(
        self, spec: api.TokenBudgetSpec, observation: Observation, memory: Memory, now: datetime
    ) -> Plan: ...


class ActivityGate(Protocol):
    """Decides whether this operator replica may act (see :mod:`.adapters.peering`), and
    which namespaces it leaves to older shards of another configuration (``handoff``)."""

    handoff: Handoff

    async def check(self) -> bool: ...


def default_planner() -> Planner:
    """The decision core's planner."""
    from tokenscale.core import planner

    fn: Planner = planner.plan
    return fn


def stale_after_seconds(settings: OperatorSettings) -> float:
    """The age (s) beyond which a target's newest token-rate sample is Stale: the setting,
    but at least two rate windows (a rate() needs two scrapes)."""
    return max(settings.stale_after_seconds, 2 * settings.rate_window_seconds())


class Reconciler:
    """The shared planning loop over the registry of TokenBudgets.

    ``wall_clock`` gives the operator's time (unix s; the test clock shifts it), ``gate``
    decides whether this replica acts (None: always).
    """

    def __init__(
        self,
        settings: OperatorSettings,
        kube: KubeAdapter,
        metrics: OperatorMetrics,
        planner: Planner | None = None,
        wall_clock: Callable[[], float] = time.time,
        gate: ActivityGate | None = None,
        workloads: WorkloadCache | None = None,
    ):
        self.settings = settings
        self.gate = gate
        self.workloads = workloads  # None: LISTs per namespace and cycle
        self._acting = gate is None  # with a gate: refresh from the API when it opens
        self.kube = kube
        self.metrics = metrics
        self._planner = planner
        self._clock = wall_clock
        self.prometheus = PrometheusReads(
            settings, metrics, served_namespaces=lambda: (ns for ns, _ in self.entries))
        self.registry = BudgetRegistry(metrics, wall_clock, self.operator_problems,
                                       owns=settings.shard_spec.owns,
                                       phase=settings.shard / settings.shards)
        self.reporter = Reporter(
            settings, kube, metrics, self.registry.forget,
            lambda e: self.registry.entries.get((e.namespace, e.name)) is e)
        self.last_loop = time.monotonic()
        self.cycles = 0

    # ------------------------------------------------------------------ registry

    @property
    def entries(self) -> dict[tuple[str, str], BudgetEntry]:
        """The watched budgets by (namespace, name)."""
        return self.registry.entries

    def operator_problems(self, spec: api.TokenBudgetSpec) -> list[str]:
        """What the operator refuses in a spec the API model accepts: a Prometheus URL that
        is not on the allowlist (no request is ever made to it)."""
        problem = self.prometheus.allowlist.problem(spec.prometheus.url)
        return [problem] if problem else []

    def serves(self, namespace: str) -> bool:
        """Whether this operator's shard serves the TokenBudgets of ``namespace``."""
        return self.settings.shard_spec.owns(namespace)

    def on_event(self, event_type: str | None, body: dict[str, Any]) -> BudgetEntry | None:
        """Record a watch event; returns the entry if its spec changed (to validate)."""
        return self.registry.on_event(event_type, body)

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted TokenBudget (its workloads stay as they are)."""
        self.registry.forget(namespace, name)

    async def report_invalid(self, entry: BudgetEntry) -> None:
        """Write phase Invalid and SpecValid=False (with every problem) for a bad spec."""
        if (entry.spec is not None or entry.reported_invalid_key == entry.spec_key
                or entry.yielded):
            return
        now = datetime.fromtimestamp(self._clock(), UTC)
        old = api.parse_status(entry.written)
        status, changes = invalid_status(old, entry.problems, now, entry.generation)
        if await self.reporter.write_status(entry, api.dump(status), force=True):
            entry.reported_invalid_key = entry.spec_key
        await self.reporter.post_condition_events(entry, changes, now)  # one per edit: at once

    def close(self) -> None:
        """Close the Prometheus sessions."""
        self.prometheus.close()

    # ---------------------------------------------------------------------- loop

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Run cycles on their ticks until ``stop`` is set (cycles in flight then end)."""
        cycles: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                self.last_loop = time.monotonic()
                self.registry.changed.clear()
                now = self._clock()
                due = self.registry.due(now)
                if due:
                    try:
                        if await self.may_act():
                            due = await self._take_over(due, now)
                            if not due:  # all left to another shard configuration
                                continue
                            for entry in due:
                                entry.in_flight = True
                            task = asyncio.create_task(
                                self._cycle_task(due, float(math.floor(now))))
                            cycles.add(task)
                            task.add_done_callback(cycles.discard)
                        else:  # another replica acts: skip this tick, scale and write nothing
                            for entry in due:
                                entry.schedule_after(now)
                    except Exception:  # one bad cycle must not stop the operator
                        log.exception("planning cycle failed")
                    continue
                delay = self.registry.seconds_to_next_due(
                    now, at_most=min(5.0, self.settings.tick_seconds * 5))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.registry.changed.wait(),
                                           timeout=max(delay, 0.01))
        finally:
            for task in cycles:
                task.cancel()
            if cycles:
                await asyncio.gather(*cycles, return_exceptions=True)

    async def _cycle_task(self, due: list[BudgetEntry], at_unix: float) -> None:
        """One cycle in the background (its budgets were marked in flight when it was
        started, until it ends); one whose next tick passed meanwhile is due at the tick
        after now (never off its ticks)."""
        try:
            await self.run_cycle(due, at_unix)
        except Exception:  # one bad cycle must not stop the operator
            log.exception("planning cycle failed")
        finally:
            now = self._clock()
            for entry in due:
                entry.in_flight = False
                if entry.spec is not None and entry.next_due <= now:
                    entry.schedule_after(now)
            if self.settings.allocator_tuning:
                release_free_memory()  # the cycle's answers and bodies are garbage now
            self.registry.changed.set()

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

    async def _take_over(self, due: list[BudgetEntry], now: float) -> list[BudgetEntry]:
        """The ``due`` budgets this shard serves now: those an older shard of another
        configuration still owns (:class:`tokenscale.sharding.Handoff`) are skipped this
        tick; those it has just released are read again first (that shard wrote their
        status meanwhile)."""
        if self.gate is None:
            return due
        handoff = self.gate.handoff
        served, released = [], []
        for entry in due:
            if handoff.yields(entry.namespace):
                entry.yielded = True
                entry.schedule_after(now)
                continue
            if entry.yielded:
                released.append(entry)
                entry.yielded = False
            served.append(entry)
        if released:
            log.info("taking over %d TokenBudgets from a shard of another configuration",
                     len(released))
            await self._refresh_from_api(released)
        self.metrics.budgets_yielded.set(sum(e.yielded for e in self.entries.values()))
        return [e for e in served if (e.namespace, e.name) in self.entries]

    async def _refresh_from_api(self, entries: list[BudgetEntry] | None = None) -> None:
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
            entry.body = kept_body(body)
            entry.written = status if isinstance(status, dict) else None
            entry.memory = None  # restored from that status by the next reconcile
            entry.last_patch = None

        chosen = list(self.entries.values()) if entries is None else entries
        await gather_bounded((refresh(e) for e in chosen), self.settings.concurrency)

    async def run_cycle(self, due: list[BudgetEntry], at_unix: float) -> None:
        """Observe once for all ``due`` budgets at ``at_unix`` (unix s), then plan, act and
        report each."""
        started = time.monotonic()
        at = datetime.fromtimestamp(at_unix, UTC)
        for entry in due:
            entry.schedule_after(at_unix)
        writes = self.reporter.begin_cycle(due)
        answers = await self.prometheus.read(due, at_unix)
        namespaces = await read_namespaces(self.kube, due, self.workloads)
        limit = asyncio.Semaphore(self.settings.concurrency)

        async def one(entry: BudgetEntry) -> None:
            spec = entry.spec  # wait for its own user queries outside the limit
            own = answers.get(self.prometheus.url_for(spec)) if spec is not None else None
            if spec is not None and own is not None:
                await self.prometheus.settle(own, spec)
            async with limit:
                t0 = time.monotonic()
                try:
                    await self.reconcile(entry, at, answers, namespaces, writes)
                except Exception:
                    log.exception("reconcile of %s/%s failed", entry.namespace, entry.name)
                self.metrics.reconcile_duration.observe(time.monotonic() - t0)

        await asyncio.gather(*(one(e) for e in due))
        await self.reporter.end_cycle(writes)  # heartbeats, drifts and Events it admits
        self.cycles += 1
        self.metrics.cycles.inc()
        self.metrics.cycle_duration.observe(time.monotonic() - started)

    # ------------------------------------------------- observe, plan, act, report

    def observe(
        self, entry: BudgetEntry, answers: UrlAnswers, state: NamespaceState
    ) -> Observation | None:
        """The Observation of one budget from the cycle's shared answers (None: no
        workload data, skip this cycle)."""
        assert entry.spec is not None
        if isinstance(state.workloads, KubeError):
            log.warning("%s/%s: cannot list workloads: %s", entry.namespace, entry.name,
                        state.workloads)
            return None
        return build_observation(entry.spec, entry.namespace, answers, state.workloads,
                                 state.autoscalers, stale_after_seconds(self.settings))

    async def reconcile(
        self,
        entry: BudgetEntry,
        at: datetime,
        answers: dict[str, UrlAnswers],
        namespaces: dict[str, NamespaceState],
        writes: CycleWrites | None = None,
    ) -> None:
        """Plan, act and report one budget from the cycle's shared observations (status
        writes paced by the cycle's ``writes``)."""
        spec = entry.spec
        if spec is None:
            return
        state = namespaces[entry.namespace]
        url_answers = answers[self.prometheus.url_for(spec)]
        if url_answers.bridged:  # one failed read: skip the cycle, change and write nothing
            return
        await self.prometheus.settle(url_answers, spec)
        observation = self.observe(entry, url_answers, state)
        if observation is None:
            if isinstance(state.workloads, KubeError):  # say why nothing is planned
                await self._report_unobservable(
                    entry, f"cannot list the workloads of {entry.namespace}: {state.workloads}",
                    at, writes)
            return
        if entry.memory is None:
            entry.memory = memory_from_status(api.parse_status(entry.written))
        if self._planner is None:
            self._planner = default_planner()
        assert not isinstance(state.workloads, KubeError)  # observe() said so
        prices = replica_prices(spec, entry.namespace, url_answers, state.workloads)
        priced = priced_spec(spec, prices)  # one price per target for the whole cycle
        plan = self._planner(priced, observation, entry.memory, at)
        await apply_plan(self.kube, self.metrics, self.reporter, entry, priced, plan,
                         observation, at)
        entry.memory = plan.memory
        status, changes = build_status(
            plan, observation, api.parse_status(entry.written), at, entry.generation,
            extra_conditions=[spec_valid_condition()],
            metrics=metrics_status(spec, observation),
            prices=prices,
        )
        adopt_status_age(entry, at)  # a start or takeover rewrites only what changed
        await self.reporter.write_status(entry, api.dump(status), cycle=writes)
        self.reporter.condition_events(entry, changes, at)
        self.reporter.export_metrics(entry, priced, plan, observation)

    async def _report_unobservable(self, entry: BudgetEntry, why: str, at: datetime,
                                   writes: CycleWrites | None = None) -> None:
        """Ready=False (WorkloadsUnreadable) with ``why``; spend is left alone."""
        status, changes = unobservable_status(
            api.parse_status(entry.written), why, at, entry.generation)
        await self.reporter.write_status(entry, api.dump(status), cycle=writes)
        self.reporter.condition_events(entry, changes, at)
