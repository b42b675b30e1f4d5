"""Run every policy over the same traces and account cost, service and budget.

``run_backtest(spec, traces, settings) -> Backtest``: ``traces`` maps target names of the
TokenBudget ``spec`` to :class:`~tokenscale.sim.traces.Trace` (already scaled / compressed).
Trace time 0 is ``settings.start`` (default Monday 2024-01-01 00:00 UTC), so budget periods and
price windows fall on calendar times in the budget's time zone.

Policies: ``tokenscale`` (the operator's planner, paced by the budget), ``hpa`` (at the budget's
targetUtilization), the HPA sweep over ``settings.hpa_utilizations`` (its cost-vs-attainment
frontier), ``static`` (peak provisioning) and ``oracle`` (offline, see
:mod:`tokenscale.sim.oracle`). The horizon is the longest trace plus a drain tail
(SLO + rate window), rounded up to whole decision intervals; a shorter trace has no demand
after its end.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from tokenscale.api import TokenBudgetSpec
from tokenscale.core.budget import period_bounds, price_multiplier
from tokenscale.sim.cluster import (
    Group,
    SimTarget,
    latest_scrape,
    lindley,
    on_time_tokens,
    ready_from_paid,
)
from tokenscale.sim.oracle import oracle_schedule
from tokenscale.sim.policies import (
    HpaBank,
    HpaSettings,
    TokenscaleController,
    initial_replicas,
    static_replicas,
)
from tokenscale.sim.traces import Trace

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Trace time 0: a Monday 00:00 UTC, fixed for reproducible period and price-window alignment.
DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT_HPA_UTILIZATIONS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
POLICIES = ("tokenscale", "hpa", "static", "oracle")


@dataclass(frozen=True)
class Settings:
    """Backtest knobs. Durations in s; ``prefill_weight`` see :mod:`tokenscale.sim.traces`."""

    slo_s: int = 10
    scrape_s: int = 15
    rate_window_s: int = 60
    hpa: HpaSettings = field(default_factory=HpaSettings)
    hpa_utilizations: tuple[float, ...] = DEFAULT_HPA_UTILIZATIONS
    prefill_weight: float = 1.0
    seed: int = 0
    start: datetime = DEFAULT_START
    progress: bool | None = None  # None: show when stderr is a terminal
    #: also sweep an HPA on the other metric (served <-> demand), as a robustness check
    hpa_other_metric: bool = False


@dataclass(frozen=True)
class TargetRun:
    """Per-second state of one target under one policy: requested and ready replicas, queue
    (work tokens waiting at the end of each second)."""

    paid: IntArray
    ready: IntArray
    queue: FloatArray


@dataclass
class Backtest:
    """Everything one run produced; summaries are computed from the per-second state."""

    spec: TokenBudgetSpec
    settings: Settings
    targets: list[SimTarget]
    arrivals: FloatArray  # (targets, seconds) work tokens per second
    trace_seconds: int
    price: FloatArray  # (seconds,) time-of-day multiplier
    period_index: IntArray  # (seconds,) budget period of each second
    period_starts: list[datetime]
    runs: dict[str, dict[str, TargetRun]]  # policy -> target -> run
    sweep: dict[float, dict[str, TargetRun]]  # hpa utilization -> target -> run
    other_sweep: dict[float, dict[str, TargetRun]]  # the same on the other metric, if asked
    other_metric: str | None
    reasons: Counter[tuple[str, str]]
    wall_seconds: float = 0.0

    @property
    def horizon(self) -> int:
        """Simulated seconds (trace plus drain tail)."""
        return int(self.arrivals.shape[1])

    def target_summary(self, run: TargetRun, index: int) -> dict[str, float]:
        """cost (currency), gpu_hours (replica-hours), tokens, late tokens, slo_attainment,
        scale_events, mean/peak replicas for one target's run."""
        t = self.targets[index]
        arr = self.arrivals[index]
        on_time = on_time_tokens(arr, run.queue, self.settings.slo_s)
        tokens = float(arr.sum())
        served_in_time = float(on_time.sum())
        late = tokens - served_in_time
        if late < 1e-9 * max(tokens, 1.0):  # float noise of the running sums
            late, served_in_time = 0.0, tokens
        served = tokens - float(run.queue[-1])  # nothing is dropped: the rest still waits
        return {
            "cost": float((run.paid * self.price).sum() * t.cost_per_hour / 3600.0),
            "gpu_hours": float(run.paid.sum() / 3600.0),
            "tokens": tokens,
            "tokens_late": late,
            "served_share": served / tokens if tokens > 0 else 1.0,
            "slo_attainment": served_in_time / tokens if tokens > 0 else 1.0,
            "scale_events": int(np.count_nonzero(np.diff(run.paid))),
            "mean_replicas": float(run.paid.mean()),
            "peak_replicas": int(run.paid.max(initial=0)),
        }

    def period_costs(self, runs: dict[str, TargetRun]) -> FloatArray:
        """Cost per budget period, all targets together (currency)."""
        per_second = np.zeros(self.horizon)
        for t in self.targets:
            per_second += runs[t.name].paid * self.price * (t.cost_per_hour / 3600.0)
        return np.bincount(self.period_index, weights=per_second,
                           minlength=len(self.period_starts)).astype(np.float64)

    def period_tokens(self, runs: dict[str, TargetRun]) -> FloatArray:
        """Work tokens served per budget period, all targets together."""
        served = np.zeros(self.horizon)
        for i, t in enumerate(self.targets):
            q = runs[t.name].queue
            prev = np.concatenate([[0.0], q[:-1]])
            served += self.arrivals[i] + prev - q
        return np.bincount(self.period_index, weights=served,
                           minlength=len(self.period_starts)).astype(np.float64)

    def policy_summary(self, runs: dict[str, TargetRun]) -> dict[str, float]:
        """Totals over targets plus budget_overrun (currency over maxCost, summed over periods)
        and token_overrun (tokens over maxTokens)."""
        per = [self.target_summary(runs[t.name], i) for i, t in enumerate(self.targets)]
        tokens = sum(p["tokens"] for p in per)
        late = sum(p["tokens_late"] for p in per)
        served = sum(p["served_share"] * p["tokens"] for p in per)
        budget = self.spec.budget
        overrun = 0.0
        if budget.max_cost is not None:
            overrun = float(np.maximum(self.period_costs(runs) - budget.max_cost, 0.0).sum())
        token_overrun = 0.0
        if budget.max_tokens is not None:
            token_overrun = float(
                np.maximum(self.period_tokens(runs) - budget.max_tokens, 0.0).sum()
            )
        return {
            "cost": sum(p["cost"] for p in per),
            "gpu_hours": sum(p["gpu_hours"] for p in per),
            "slo_attainment": (tokens - late) / tokens if tokens > 0 else 1.0,
            "tokens": tokens,
            "tokens_late": late,
            "served_share": served / tokens if tokens > 0 else 1.0,
            "budget_overrun": overrun,
            "token_overrun": token_overrun,
            "scale_events": int(sum(p["scale_events"] for p in per)),
            "peak_replicas": int(sum(p["peak_replicas"] for p in per)),
        }


def _price_series(spec: TokenBudgetSpec, start: datetime, seconds: int) -> FloatArray:
    """Price multiplier per second (windows are minute-aligned: evaluated per minute)."""
    if not spec.pricing.schedule:
        return np.ones(seconds)
    minutes = math.ceil(seconds / 60)
    per_minute = np.array(
        [price_multiplier(spec, start + timedelta(minutes=m)) for m in range(minutes)]
    )
    return np.repeat(per_minute, 60)[:seconds].astype(np.float64)


def _periods(spec: TokenBudgetSpec, start: datetime, seconds: int) -> tuple[IntArray,
                                                                              list[datetime]]:
    """Budget period index of each second and the periods' starts."""
    starts: list[datetime] = []
    cuts: list[int] = []
    at = start
    end = start + timedelta(seconds=seconds)
    while at < end:
        p_start, p_end = period_bounds(spec.budget, at)
        starts.append(p_start)
        cuts.append(max(0, math.ceil((p_end - start).total_seconds())))
        at = p_end
    index = np.searchsorted(np.array(cuts), np.arange(seconds), side="right")
    return np.asarray(index, dtype=np.int64), starts


def _progress(total: int, enabled: bool | None, desc: str) -> object:
    from tqdm import tqdm

    show = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(total=total, disable=not show, file=sys.stderr, unit="step", desc=desc,
                mininterval=0.5, leave=False)


def _evaluate(arrivals: FloatArray, paid: IntArray, target: SimTarget) -> TargetRun:
    """Simulate a fixed requested-replica series over the whole horizon at once."""
    ready = ready_from_paid(paid, target.cold_start_s, int(paid[0]))
    q = lindley(arrivals[None, :], (ready * target.capacity)[None, :].astype(np.float64),
                np.zeros(1))[0]
    return TargetRun(paid=paid, ready=ready, queue=q)


def run_backtest(spec: TokenBudgetSpec, traces: dict[str, Trace],
                 settings: Settings | None = None) -> Backtest:
    """Replay ``traces`` (target name -> trace) through every policy; see the module docstring."""
    import time

    began = time.perf_counter()
    cfg = settings or Settings()
    names = [t.name for t in spec.targets]
    unknown = sorted(set(traces) - set(names))
    if unknown:
        raise ValueError(f"traces for unknown targets {unknown}; the budget has {names}")
    missing = [n for n in names if n not in traces]
    if missing:
        raise ValueError(f"no trace for target(s) {missing}")
    targets = [
        SimTarget(
            name=t.name,
            capacity=t.tokens_per_replica_per_second,
            cost_per_hour=t.cost_per_replica_hour,
            cold_start_s=t.cold_start_seconds,
            min_replicas=t.min_replicas,
            max_replicas=t.max_replicas,
        )
        for t in spec.targets
    ]
    interval = spec.planning.interval_seconds
    step = math.lcm(cfg.hpa.sync_s, interval)
    trace_seconds = max(traces[n].steps(1.0) for n in names)
    horizon = math.ceil((trace_seconds + cfg.slo_s + cfg.rate_window_s) / step) * step
    arrivals = np.zeros((len(names), horizon))
    for i, n in enumerate(names):
        a = traces[n].arrivals(1.0, cfg.prefill_weight, seed=cfg.seed + i)
        arrivals[i, : len(a)] = a[:horizon]
    cumulative = np.cumsum(arrivals, axis=1)
    tpr = [traces[n].tokens_per_request(cfg.prefill_weight) for n in names]
    price = _price_series(spec, cfg.start, horizon)
    period_index, period_starts = _periods(spec, cfg.start, horizon)
    util = spec.planning.target_utilization

    # ---- HPA: the budget's utilization and the sweep, all rows in one group
    utils = sorted({*cfg.hpa_utilizations, util})
    other = {"served": "demand", "demand": "served"}[cfg.hpa.metric]
    metrics = [cfg.hpa.metric, *([other] if cfg.hpa_other_metric else [])]
    rows_target = [i for _ in metrics for _ in utils for i in range(len(names))]
    rows_util = np.array([u for _ in metrics for u in utils for _ in names])
    rows_demand = np.array([m == "demand" for m in metrics for _ in utils for _ in names])
    hpa_initial = [
        initial_replicas(arrivals[i], targets[i].capacity, u, max(1, targets[i].min_replicas),
                         targets[i].max_replicas)
        for _ in metrics for u in utils for i in range(len(names))
    ]
    hpa_group = Group(arrivals, cumulative, targets, rows_target, hpa_initial, cfg.hpa.sync_s)
    bank = HpaBank(
        rows_util,
        np.array([targets[i].capacity for i in rows_target]),
        np.array([targets[i].min_replicas for i in rows_target], dtype=np.int64),
        np.array([targets[i].max_replicas for i in rows_target], dtype=np.int64),
        cfg.hpa,
        np.asarray(hpa_initial, dtype=np.int64),
    )

    def hpa_rates(at: IntArray, window: int) -> FloatArray:
        served = hpa_group.rates_at(at, window) if not rows_demand.all() else 0.0
        demand = hpa_group.demand_rates_at(at, window) if rows_demand.any() else 0.0
        return np.asarray(np.where(rows_demand[:, None], demand, served), dtype=np.float64)

    # ---- tokenscale: one row per target, the planner every intervalSeconds
    ts_initial = [
        initial_replicas(arrivals[i], targets[i].capacity, util, targets[i].min_replicas,
                         targets[i].max_replicas, spec.planning.headroom)
        for i in range(len(names))
    ]
    ts_group = Group(arrivals, cumulative, targets, list(range(len(names))), ts_initial, interval)
    controller = TokenscaleController(spec, cfg.start, tpr, cfg.scrape_s, cfg.rate_window_s)

    total = horizon // cfg.hpa.sync_s + horizon // interval
    bar = _progress(total, cfg.progress, "backtest")
    update = bar.update  # type: ignore[attr-defined]
    hpa_group.advance(np.asarray(hpa_initial, dtype=np.int64))
    update(1)
    pending = 0
    while not hpa_group.done:
        t = hpa_group.t
        s = latest_scrape(t, cfg.scrape_s)
        rate = hpa_rates(np.array([s], dtype=np.int64), cfg.rate_window_s)[:, 0]
        hpa_group.advance(bank.decide(rate, hpa_group.paid[:, t - 1]))
        pending += 1
        if pending >= 256:
            update(pending)
            pending = 0
    while not ts_group.done:
        ts_group.advance(controller.decide(ts_group, ts_group.t))
        pending += 1
        if pending >= 64:
            update(pending)
            pending = 0
    update(pending)
    bar.close()  # type: ignore[attr-defined]

    def group_runs(group: Group, first_row: int) -> dict[str, TargetRun]:
        return {
            n: TargetRun(group.paid[first_row + i], group.ready[first_row + i],
                         group.queue[first_row + i])
            for i, n in enumerate(names)
        }

    sweep = {u: group_runs(hpa_group, k * len(names)) for k, u in enumerate(utils)}
    other_sweep = {
        u: group_runs(hpa_group, (len(utils) + k) * len(names)) for k, u in enumerate(utils)
        if u in cfg.hpa_utilizations
    } if cfg.hpa_other_metric else {}
    runs: dict[str, dict[str, TargetRun]] = {
        "tokenscale": group_runs(ts_group, 0),
        "hpa": sweep[util],
    }
    runs["static"] = {
        n: _evaluate(arrivals[i], np.full(horizon, static_replicas(
            arrivals[i, :trace_seconds], targets[i].capacity, util, targets[i].min_replicas),
            dtype=np.int64), targets[i])
        for i, n in enumerate(names)
    }
    runs["oracle"] = {
        n: _evaluate(arrivals[i], oracle_schedule(arrivals[i], targets[i], cfg.slo_s, price),
                     targets[i])
        for i, n in enumerate(names)
    }
    sweep = {u: r for u, r in sweep.items() if u in cfg.hpa_utilizations}
    return Backtest(
        spec=spec, settings=cfg, targets=targets, arrivals=arrivals,
        trace_seconds=trace_seconds, price=price, period_index=period_index,
        period_starts=period_starts, runs=runs, sweep=sweep, other_sweep=other_sweep,
        other_metric=other if cfg.hpa_other_metric else None,
        reasons=controller.reasons, wall_seconds=time.perf_counter() - began,
    )
