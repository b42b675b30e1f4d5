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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenscale.api import TokenBudgetSpec
from tokenscale.core.budget import period_bounds, price_multiplier
from tokenscale.core.costmodel import select_model
from tokenscale.core.types import Memory
from tokenscale.sim.cluster import (
    Group,
    SimTarget,
    latest_scrape,
    lindley,
    on_time_tokens,
    ready_from_paid,
)
from tokenscale.sim.family import Member, Signals, desired_replicas, members
from tokenscale.sim.latency import EngineModel, Outcome, Requests, request_outcome, requests_of
from tokenscale.sim.oracle import oracle_schedule, requests_for_ready, sliding_max
from tokenscale.sim.policies import (
    FamilyBank,
    HpaBank,
    HpaSettings,
    TokenscaleController,
    initial_replicas,
    static_replicas,
)
from tokenscale.sim.projections import ProjectionProbe, seed_profiles, windows
from tokenscale.sim.traces import Trace

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Trace time 0: a Monday 00:00 UTC, fixed for reproducible period and price-window alignment.
DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT_HPA_UTILIZATIONS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
POLICIES = ("tokenscale", "hpa", "static", "oracle")
#: attainments this close count as equal when policies are compared (0.005 %: a request in
#: 20,000), so a comparison at 100 % does not hinge on one request at the horizon's edge
ATTAINMENT_TOLERANCE = 5e-5


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
    #: replicas behave like continuous-batching engines and the SLO is counted per request
    #: (the yardstick); None: the fluid model of version 1 (fixed capacity, token waits)
    engine: EngineModel | None = field(default_factory=EngineModel)
    #: seconds at the start excluded from cost and attainment, for every policy alike
    warmup_s: int = 0
    #: a gateway sheds tokenscale's arrivals above the admission rate it publishes
    admission: bool = True
    #: tokenscale reads that gateway's arrival counter (the demand before admission); False:
    #: it estimates arrivals from the served rate, the queue's growth and censoring
    arrival_counter: bool = False


@dataclass(frozen=True)
class TargetRun:
    """Per-second state of one target under one policy: requested and ready replicas, queue
    (work tokens waiting at the end of each second)."""

    paid: IntArray
    ready: IntArray
    queue: FloatArray
    shed: FloatArray | None = None  # work tokens turned away at admission per second


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
    #: engine mode: each target's requests, and the HPA family's runs per member
    requests: list[Requests] = field(default_factory=list)
    family: dict[Member, dict[str, TargetRun]] = field(default_factory=dict)
    oracles: list[dict[str, TargetRun]] = field(default_factory=list)
    #: under a binding cost budget: the best foresight schedule that never overruns it
    budget_oracle: dict[str, TargetRun] | None = None
    #: the same, every target held to the cost tokenscale spent on it in each period: the
    #: schedule's quality within tokenscale's own split of the budget between targets
    budget_oracle_same_split: dict[str, TargetRun] | None = None
    #: per target: how the planner's fitted capacity within the SLO compares with the truth
    service_models: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: the period-end projections against the final spend (sim/projections.py)
    projections: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def oracle_summaries(self) -> list[dict[str, float]]:
        """:meth:`policy_summary` of every oracle candidate (computed once: each runs the
        per-request outcome of every target)."""
        return [self.policy_summary(r) for r in self.oracles]

    def pick_oracle(self, attainment: float) -> dict[str, TargetRun]:
        """The cheapest oracle candidate reaching ``attainment`` (the best one if none
        does)."""
        summaries = self.oracle_summaries
        good = [(s["cost"], k) for k, s in enumerate(summaries)
                if s["slo_attainment"] >= attainment - ATTAINMENT_TOLERANCE]
        if good:
            return self.oracles[min(good)[1]]
        best = max(range(len(summaries)),
                   key=lambda k: (summaries[k]["slo_attainment"], -summaries[k]["cost"]))
        return self.oracles[best]

    @property
    def counted(self) -> slice:
        """The seconds that count (after the warm-up)."""
        return slice(min(self.settings.warmup_s, self.horizon), self.horizon)

    def outcome(self, run: TargetRun, index: int) -> Outcome | None:
        """Per-request service of one target's run (engine mode), else None."""
        engine = self.settings.engine
        if engine is None or not self.requests:
            return None
        arrivals = self.arrivals[index]
        admitted = None
        if run.shed is not None and run.shed.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                admitted = np.where(arrivals > 0, 1.0 - run.shed / arrivals, 1.0)
            arrivals = arrivals - run.shed
        return request_outcome(self.requests[index], arrivals, run.ready, run.queue,
                               engine, self.spec.targets[index].slo, self.settings.warmup_s,
                               admitted=admitted)

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
        c = self.counted
        out = {
            "cost": float((run.paid[c] * self.price[c]).sum() * t.cost_per_hour / 3600.0),
            "gpu_hours": float(run.paid[c].sum() / 3600.0),
            "tokens": tokens,
            "tokens_late": late,
            "served_share": served / tokens if tokens > 0 else 1.0,
            "slo_attainment": served_in_time / tokens if tokens > 0 else 1.0,
            "scale_events": int(np.count_nonzero(np.diff(run.paid))),
            "mean_replicas": float(run.paid.mean()),
            "peak_replicas": int(run.paid.max(initial=0)),
        }
        outcome = self.outcome(run, index)
        if outcome is not None:
            out.update({
                "token_slo_attainment": out["slo_attainment"],
                "slo_attainment": outcome.attainment,
                "requests": outcome.requests,
                "goodput_tokens": outcome.goodput_tokens,
                "request_tokens": outcome.tokens,
                "shed_share": outcome.shed_share,
                "ttft_p50_seconds": outcome.ttft_p50_s,
                "ttft_p99_seconds": outcome.ttft_p99_s,
                "itl_p50_seconds": outcome.itl_p50_s,
            })
        return out

    def period_costs(self, runs: dict[str, TargetRun]) -> FloatArray:
        """Cost per budget period of the targets in ``runs`` together (currency)."""
        per_second = np.zeros(self.horizon)
        for t in self.targets:
            if t.name in runs:
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

    def quality_value(self, goodput_tokens: list[float]) -> float | None:
        """The budget's own measure of what a policy served: ``Σ weight × (a + b × ln(goodput
        tokens/s))`` over the targets, with each target's quality curve as the planner reads it
        (``performance.a``/``b``, else a = 0, b = 1) and its goodput (prompt + output tokens of
        the requests within the SLO) per counted second; DESIGN.md step 5 splits a binding
        budget to raise it. None where a target served nothing within the SLO (-inf)."""
        seconds = self.horizon - min(self.settings.warmup_s, self.horizon)
        if seconds <= 0 or min(goodput_tokens, default=0.0) <= 0:
            return None
        total = 0.0
        for target, goodput in zip(self.spec.targets, goodput_tokens, strict=True):
            model = select_model(target.performance.a, target.performance.b, None)
            total += target.weight * (model.a + model.b * math.log(goodput / seconds))
        return total

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
        attainment = (tokens - late) / tokens if tokens > 0 else 1.0
        extra: dict[str, float] = {}
        if per and "requests" in per[0]:
            requests = sum(p["requests"] for p in per)
            met = sum(p["slo_attainment"] * p["requests"] for p in per)
            shed = sum(p["shed_share"] * p["requests"] for p in per)
            extra = {"token_slo_attainment": attainment, "requests": requests,
                     "goodput_tokens": sum(p["goodput_tokens"] for p in per),
                     "request_tokens": sum(p["request_tokens"] for p in per),
                     "shed_share": shed / requests if requests > 0 else 0.0}
            attainment = met / requests if requests > 0 else 1.0
            value = self.quality_value([p["goodput_tokens"] for p in per])
            if value is not None:
                extra["quality_value"] = value
        return {
            "cost": sum(p["cost"] for p in per),
            "gpu_hours": sum(p["gpu_hours"] for p in per),
            "slo_attainment": attainment,
            **extra,
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


@dataclass
class _World:
    """What every policy of one run shares: the truth of the simulated cluster."""

    spec: TokenBudgetSpec
    cfg: Settings
    names: list[str]
    targets: list[SimTarget]  # the truth (engine mode: raw engine capacity)
    spec_capacity: FloatArray  # tokensPerReplicaPerSecond per target (the users' belief)
    arrivals: FloatArray
    cumulative: FloatArray
    requests: list[Requests]
    tokens_per_request: list[float]  # work tokens per request
    price: FloatArray
    trace_seconds: int
    bar: Any

    @property
    def horizon(self) -> int:
        return int(self.arrivals.shape[1])

    def group_runs(self, group: Group, first_row: int) -> dict[str, TargetRun]:
        return {n: TargetRun(group.paid[first_row + i], group.ready[first_row + i],
                             group.queue[first_row + i], group.shed[first_row + i])
                for i, n in enumerate(self.names)}

    def initial(self, i: int, utilization: float, headroom: float = 0.0,
                low: int | None = None) -> int:
        t = self.targets[i]
        return initial_replicas(self.arrivals[i], float(self.spec_capacity[i]), utilization,
                                t.min_replicas if low is None else low, t.max_replicas,
                                headroom)


def _world(spec: TokenBudgetSpec, traces: dict[str, Trace], cfg: Settings) -> _World:
    names = [t.name for t in spec.targets]
    unknown = sorted(set(traces) - set(names))
    if unknown:
        raise ValueError(f"traces for unknown targets {unknown}; the budget has {names}")
    missing = [n for n in names if n not in traces]
    if missing:
        raise ValueError(f"no trace for target(s) {missing}")
    engine = cfg.engine
    weight = engine.prefill_weight if engine is not None else cfg.prefill_weight
    targets = [
        SimTarget(name=t.name,
                  capacity=(engine.decode_tokens_per_s if engine is not None
                            else t.capacity),
                  cost_per_hour=t.cost_per_replica_hour, cold_start_s=t.cold_start_seconds,
                  min_replicas=t.min_replicas, max_replicas=t.max_replicas)
        for t in spec.targets
    ]
    step = math.lcm(cfg.hpa.sync_s, spec.planning.interval_seconds)
    trace_seconds = max(traces[n].steps(1.0) for n in names)
    horizon = math.ceil((trace_seconds + cfg.slo_s + cfg.rate_window_s) / step) * step
    arrivals = np.zeros((len(names), horizon))
    requests: list[Requests] = []
    tpr: list[float] = []
    for i, n in enumerate(names):
        if engine is not None:
            req = requests_of(traces[n], seed=cfg.seed + i)
            requests.append(req)
            arrivals[i] = req.arrivals(horizon, weight)
            tpr.append(float(arrivals[i].sum()) / req.count if req.count > 0 else 0.0)
        else:
            a = traces[n].arrivals(1.0, weight, seed=cfg.seed + i)
            arrivals[i, : len(a)] = a[:horizon]
            tpr.append(traces[n].tokens_per_request(weight))
    return _World(
        spec=spec, cfg=cfg, names=names, targets=targets,
        spec_capacity=np.array([t.capacity for t in spec.targets]),
        arrivals=arrivals, cumulative=np.cumsum(arrivals, axis=1), requests=requests,
        tokens_per_request=tpr, price=_price_series(spec, cfg.start, horizon),
        trace_seconds=trace_seconds, bar=None,
    )


def _tick(w: _World, steps: int) -> None:
    w.bar.update(steps)


def _run_tokenscale(w: _World, probe: ProjectionProbe | None = None,
                    history: Mapping[str, FloatArray] | None = None,
                    memory: Memory | None = None,
                    ) -> tuple[dict[str, TargetRun], TokenscaleController]:
    """The operator's planner every intervalSeconds, one row per target; ``probe`` records
    its projections, ``history`` (mean tokens/s per minute before the trace) seeds its
    demand profiles, ``memory`` (an earlier run's) continues where that run stopped."""
    plan = w.spec.planning
    initial = [w.initial(i, plan.target_utilization, plan.headroom) for i in range(len(w.names))]
    group = Group(w.arrivals, w.cumulative, w.targets, list(range(len(w.names))), initial,
                  plan.interval_seconds)
    engine = w.cfg.engine
    prefill = [float(np.average(r.input_tokens, weights=r.weight)) / engine.prefill_tokens_per_s
               if engine is not None and r.count > 0 else 0.0 for r in w.requests]
    controller = TokenscaleController(w.spec, w.cfg.start, w.tokens_per_request, w.cfg.scrape_s,
                                      w.cfg.rate_window_s, engine, w.cfg.arrival_counter,
                                      prefill)
    if memory is not None:
        controller.memory = memory
    elif history:
        controller.memory = Memory(demand_profiles=seed_profiles(w.spec, w.cfg.start, history))
    pending = 0
    while not group.done:
        t = group.t
        replicas = controller.decide(group, t)
        if probe is not None and controller.last_plan is not None:
            probe.observe(t, controller.last_plan)
        shedding = w.cfg.admission and w.cfg.engine is not None  # the fluid model drops nothing
        group.advance(replicas, controller.admission() if shedding else None)
        pending += 1
        if pending >= 64:
            _tick(w, pending)
            pending = 0
    _tick(w, pending)
    return w.group_runs(group, 0), controller


def _run_hpa_sweep(w: _World) -> tuple[dict[float, dict[str, TargetRun]],
                                       dict[float, dict[str, TargetRun]], str | None]:
    """Version 1's baseline: an HPA on one token rate, swept over target utilisations."""
    cfg, util, n = w.cfg, w.spec.planning.target_utilization, len(w.names)
    utils = sorted({*cfg.hpa_utilizations, util})
    other = {"served": "demand", "demand": "served"}[cfg.hpa.metric]
    metrics = [cfg.hpa.metric, *([other] if cfg.hpa_other_metric else [])]
    rows_target = [i for _ in metrics for _ in utils for i in range(n)]
    rows_util = np.array([u for _ in metrics for u in utils for _ in range(n)])
    rows_demand = np.array([m == "demand" for m in metrics for _ in utils for _ in range(n)])
    initial = [w.initial(i, u, low=max(1, w.targets[i].min_replicas))
               for _ in metrics for u in utils for i in range(n)]
    group = Group(w.arrivals, w.cumulative, w.targets, rows_target, initial, cfg.hpa.sync_s)
    bank = HpaBank(rows_util, w.spec_capacity[rows_target],
                   np.array([w.targets[i].min_replicas for i in rows_target], dtype=np.int64),
                   np.array([w.targets[i].max_replicas for i in rows_target], dtype=np.int64),
                   cfg.hpa, np.asarray(initial, dtype=np.int64))
    group.advance(np.asarray(initial, dtype=np.int64))
    while not group.done:
        at = np.array([latest_scrape(group.t, cfg.scrape_s)], dtype=np.int64)
        served = group.rates_at(at, cfg.rate_window_s) if not rows_demand.all() else 0.0
        demand = group.demand_rates_at(at, cfg.rate_window_s) if rows_demand.any() else 0.0
        rate = np.where(rows_demand[:, None], demand, served)[:, 0]
        group.advance(bank.decide(rate, group.paid[:, group.t - 1]))
    _tick(w, w.horizon // cfg.hpa.sync_s)
    sweep = {u: w.group_runs(group, k * n) for k, u in enumerate(utils)}
    other_sweep = {u: w.group_runs(group, (len(utils) + k) * n) for k, u in enumerate(utils)
                   if u in cfg.hpa_utilizations} if cfg.hpa_other_metric else {}
    return sweep, other_sweep, other if cfg.hpa_other_metric else None


def _run_family(w: _World, engine: EngineModel) -> dict[Member, dict[str, TargetRun]]:
    """Every member of the HPA/KEDA family (sim/family.py), all rows in one group."""
    cfg, n = w.cfg, len(w.names)
    family = members(extra_served=(w.spec.planning.target_utilization,))
    rows = [(m, i) for m in family for i in range(n)]
    rows_target = [i for _, i in rows]
    initial = np.array([w.initial(i, w.spec.planning.target_utilization,
                                  low=max(1, w.targets[i].min_replicas)) for _, i in rows],
                       dtype=np.int64)
    group = Group(w.arrivals, w.cumulative, w.targets, rows_target, initial.tolist(),
                  cfg.hpa.sync_s)
    bank = FamilyBank(np.array([m.window_s for m, _ in rows], dtype=np.int64),
                      np.array([w.targets[i].min_replicas for i in rows_target], dtype=np.int64),
                      np.array([w.targets[i].max_replicas for i in rows_target], dtype=np.int64),
                      initial, cfg.hpa)
    signals = Signals(metric=[m.metric for m, _ in rows],
                      target=np.array([m.target for m, _ in rows]),
                      spec_capacity=w.spec_capacity[rows_target],
                      tokens_per_request=np.array([w.tokens_per_request[i] for i in rows_target]))
    group.advance(initial)
    while not group.done:
        current = group.paid[:, group.t - 1]
        wanted = desired_replicas(group, signals, engine, latest_scrape(group.t, cfg.scrape_s),
                                  cfg.rate_window_s, current)
        group.advance(bank.decide(wanted, current))
    _tick(w, w.horizon // cfg.hpa.sync_s)
    return {m: w.group_runs(group, k * n) for k, m in enumerate(family)}


#: the latency-aware oracle's family: perfect-foresight schedules that provision, a cold start
#: ahead, for the demand (mean over ``smooth`` s) at utilisation ``u`` of the engine's raw
#: capacity, holding each level ``hold`` s; every one is evaluated on the engine and the
#: report keeps the cheapest reaching the attainment compared at
ORACLE_UTILIZATIONS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
ORACLE_SMOOTHING_S = (10, 30, 60)
ORACLE_HOLD_S = (30, 120)


def foresight_ready(arrivals: FloatArray, per_replica: float, smooth_s: int, hold_s: int,
                    low: int, high: int) -> IntArray:
    """Ready replicas that cover the coming demand: ``ceil(mean demand over smooth_s /
    per_replica)``, the maximum over the next ``hold_s`` s, within [low, high]."""
    kernel = np.ones(smooth_s) / smooth_s
    smooth = np.convolve(arrivals, kernel, mode="full")[smooth_s - 1:]  # mean of [t, t+smooth)
    need = np.ceil(smooth / per_replica - 1e-9).astype(np.int64)
    ready = sliding_max(need, 0, hold_s)
    return np.asarray(np.clip(ready, max(low, 1), high), dtype=np.int64)


def _oracle_runs(w: _World, engine: EngineModel) -> list[dict[str, TargetRun]]:
    """The oracle family (ORACLE_*), each run evaluated on the engine."""
    out = []
    for u in ORACLE_UTILIZATIONS:
        for smooth in ORACLE_SMOOTHING_S:
            for hold in ORACLE_HOLD_S:
                runs = {}
                for i, (n, t) in enumerate(zip(w.names, w.targets, strict=True)):
                    ready = foresight_ready(w.arrivals[i], u * engine.decode_tokens_per_s,
                                            smooth, hold, t.min_replicas, t.max_replicas)
                    paid = requests_for_ready(ready, t.cold_start_s, w.price)
                    runs[n] = _evaluate(w.arrivals[i], paid, t)
                out.append(runs)
    return out


#: shares of the foresight schedules the budget-aware oracle tries (the largest that fits)
BUDGET_SHARES = tuple(k / 40 for k in range(40, 0, -1))


def _admitted_run(arrivals: FloatArray, paid: IntArray, target: SimTarget,
                  per_replica: float) -> TargetRun:
    """A fixed schedule with a gateway that sheds what the ready replicas cannot serve at
    ``per_replica`` tokens/s (work tokens per second)."""
    ready = ready_from_paid(paid, target.cold_start_s, int(paid[0]))
    admitted = np.minimum(arrivals, ready * per_replica)
    q = lindley(admitted[None, :], (ready * target.capacity)[None, :].astype(np.float64),
                np.zeros(1))[0]
    return TargetRun(paid=paid, ready=ready, queue=q, shed=arrivals - admitted)


def _shaved_run(w: _World, i: int, wanted: IntArray, share: float, per_replica: float
                ) -> TargetRun:
    """Target ``i`` on ``share`` of the foresight schedule ``wanted`` (at least minReplicas and
    one), behind a gateway that sheds what those replicas cannot serve at ``per_replica``."""
    t = w.targets[i]
    ready = np.maximum(np.floor(wanted * share).astype(np.int64), max(t.min_replicas, 1))
    return _admitted_run(w.arrivals[i], requests_for_ready(ready, t.cold_start_s, w.price), t,
                         per_replica)


def _budget_oracle(w: _World, engine: EngineModel, bt: Backtest) -> dict[str, TargetRun] | None:
    """Under a cost budget: perfect foresight that never overruns it. Each foresight
    schedule of the oracle family is shaved to the largest share of its replicas (at least
    minReplicas) whose every period fits maxCost, and a gateway sheds what those replicas
    cannot serve at the schedule's utilisation; the one with the most goodput is kept. None
    without a cost limit or when even the floors overrun."""
    limit = w.spec.budget.max_cost
    if limit is None:
        return None
    best: tuple[float, dict[str, TargetRun]] | None = None
    for u in ORACLE_UTILIZATIONS:
        per_replica = u * engine.decode_tokens_per_s
        for smooth in ORACLE_SMOOTHING_S:
            for hold in ORACLE_HOLD_S:
                wanted = [foresight_ready(w.arrivals[i], per_replica, smooth, hold,
                                          t.min_replicas, t.max_replicas)
                          for i, t in enumerate(w.targets)]
                for share in BUDGET_SHARES:
                    runs = {n: _shaved_run(w, i, wanted[i], share, per_replica)
                            for i, n in enumerate(w.names)}
                    if float(np.max(bt.period_costs(runs) - limit)) <= 1e-6:
                        goodput = bt.policy_summary(runs)["goodput_tokens"]
                        if best is None or goodput > best[0]:
                            best = (goodput, runs)
                        break
    return best[1] if best is not None else None


def _budget_oracle_same_split(w: _World, engine: EngineModel, bt: Backtest,
                              ts_runs: dict[str, TargetRun]) -> dict[str, TargetRun]:
    """Per target, the foresight schedule (of the oracle family, shaved by the largest share
    that fits) with the most goodput whose cost in every period is at most what tokenscale
    spent on that target there: how well tokenscale used the money it gave each target,
    apart from how it split the budget between them (by quality value per cost, not by
    goodput)."""
    out: dict[str, TargetRun] = {}
    for i, (n, t) in enumerate(zip(w.names, w.targets, strict=True)):
        limit = bt.period_costs({n: ts_runs[n]})
        best: tuple[float, TargetRun] | None = None
        for u in ORACLE_UTILIZATIONS:
            per_replica = u * engine.decode_tokens_per_s
            for smooth in ORACLE_SMOOTHING_S:
                for hold in ORACLE_HOLD_S:
                    wanted = foresight_ready(w.arrivals[i], per_replica, smooth, hold,
                                             t.min_replicas, t.max_replicas)
                    for share in BUDGET_SHARES:
                        run = _shaved_run(w, i, wanted, share, per_replica)
                        if float(np.max(bt.period_costs({n: run}) - limit)) <= 1e-6:
                            goodput = bt.target_summary(run, i).get("goodput_tokens", 0.0)
                            if best is None or goodput > best[0]:
                                best = (goodput, run)
                            break
        out[n] = best[1] if best is not None else ts_runs[n]
    return out


def _run_fixed(w: _World) -> dict[str, dict[str, TargetRun]]:
    """Static peak provisioning (and, in the fluid model, the token-wait oracle)."""
    cfg, util = w.cfg, w.spec.planning.target_utilization
    static, oracle = {}, {}
    for i, (n, t) in enumerate(zip(w.names, w.targets, strict=True)):
        count = static_replicas(w.arrivals[i, : w.trace_seconds], float(w.spec_capacity[i]),
                                util, t.min_replicas)
        static[n] = _evaluate(w.arrivals[i], np.full(w.horizon, count, dtype=np.int64), t)
        if cfg.engine is None:
            oracle[n] = _evaluate(w.arrivals[i], oracle_schedule(w.arrivals[i], t, cfg.slo_s,
                                                                 w.price), t)
    return {"static": static, **({"oracle": oracle} if oracle else {})}


def _window_cost(w: _World, runs: dict[str, TargetRun], first: int, end: int) -> float:
    """What the replicas of ``runs`` cost from second ``first`` to ``end`` (currency)."""
    return float(sum((runs[t.name].paid[first:end] * w.price[first:end]).sum()
                     * t.cost_per_hour / 3600.0 for t in w.targets))


def lower_bound_cost(bt: Backtest) -> float:
    """A lower bound on any schedule's cost that serves the counted work within the SLO: the
    work ÷ one replica's capacity within the SLO, paid at each second's price (currency)."""
    engine = bt.settings.engine
    c = bt.counted
    total = 0.0
    for i, t in enumerate(bt.targets):
        per_replica = (engine.capacity_within_slo(bt.spec.targets[i].slo) if engine is not None
                       else t.capacity)
        replicas = bt.arrivals[i, c] / per_replica
        total += float((replicas * bt.price[c]).sum()) * t.cost_per_hour / 3600.0
    return total


def _binding(bt: Backtest, ts_runs: dict[str, TargetRun]) -> bool:
    """Whether the budget binds: tokenscale shed load (it admits only what the budget
    affords), or the HPA at the budget's utilisation would overrun it."""
    shed = any(r.shed is not None and r.shed.any() for r in ts_runs.values())
    return shed or bt.policy_summary(bt.runs["hpa"])["budget_overrun"] > 0


def _service_models(w: _World, controller: TokenscaleController
                    ) -> dict[str, dict[str, float | None]]:
    """Per target: the share of cycles that used a fitted service model, and the median fitted
    capacity within the SLO against the engine's truth (tokens/s, relative error)."""
    engine = w.cfg.engine
    if engine is None:
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for i, name in enumerate(w.names):
        truth = engine.capacity_within_slo(w.spec.targets[i].slo)
        fits = controller.fits.get(name, [])
        fitted = sorted(f for f in fits if f is not None)
        median = fitted[len(fitted) // 2] if fitted else None
        out[name] = {
            "truth_capacity_within_slo": round(truth, 3),
            "spec_tokens_per_replica_per_second":
                w.spec.targets[i].tokens_per_replica_per_second,
            "fitted_share_of_cycles": round(len(fitted) / len(fits), 4) if fits else 0.0,
            "median_fitted_capacity": None if median is None else round(median, 3),
            "median_fit_error": None if median is None else round((median - truth) / truth, 4),
        }
    return out


def run_backtest(spec: TokenBudgetSpec, traces: dict[str, Trace],
                 settings: Settings | None = None,
                 history: Mapping[str, FloatArray] | None = None) -> Backtest:
    """Replay ``traces`` (target name -> trace) through every policy; see the module docstring.
    ``history``: per target, the mean tokens/s per minute before the trace (what an operator
    running before it would have learned its demand profile from)."""
    import time

    began = time.perf_counter()
    cfg = settings or Settings()
    w = _world(spec, traces, cfg)
    total = w.horizon // cfg.hpa.sync_s + w.horizon // spec.planning.interval_seconds
    w.bar = _progress(total, cfg.progress, "backtest")
    try:
        family: dict[Member, dict[str, TargetRun]] = {}
        if cfg.engine is not None:
            family = _run_family(w, cfg.engine)
            sweep: dict[float, dict[str, TargetRun]] = {
                m.target: r for m, r in family.items()
                if (m.metric, m.window_s) == (cfg.hpa.metric, cfg.hpa.stabilization_s)}
            other_sweep: dict[float, dict[str, TargetRun]] = {}
            other_metric = None
        else:
            sweep, other_sweep, other_metric = _run_hpa_sweep(w)
        probe = ProjectionProbe(spec, cfg.start, windows(spec, cfg.start, w.trace_seconds))
        ts_runs, controller = _run_tokenscale(w, probe, history)
    finally:
        w.bar.close()
    runs = {"tokenscale": ts_runs, "hpa": sweep[spec.planning.target_utilization],
            **_run_fixed(w)}
    oracles = _oracle_runs(w, cfg.engine) if cfg.engine is not None else []
    period_index, period_starts = _periods(spec, cfg.start, w.horizon)
    bt = Backtest(
        spec=spec, settings=cfg, targets=w.targets, arrivals=w.arrivals,
        trace_seconds=w.trace_seconds, price=w.price, period_index=period_index,
        period_starts=period_starts, runs=runs,
        sweep={u: r for u, r in sweep.items() if u in cfg.hpa_utilizations},
        other_sweep=other_sweep, other_metric=other_metric,
        reasons=controller.reasons, wall_seconds=time.perf_counter() - began,
        requests=w.requests, family=family, oracles=oracles,
        service_models=_service_models(w, controller),
        projections=probe.report([_window_cost(w, ts_runs, a, b) for a, b in probe.windows]),
    )
    if oracles:  # the oracle compared is the cheapest reaching tokenscale's attainment
        bt.runs["oracle"] = bt.pick_oracle(bt.policy_summary(ts_runs)["slo_attainment"])
        if _binding(bt, ts_runs) and cfg.engine is not None:
            bt.budget_oracle = _budget_oracle(w, cfg.engine, bt)
            if len(w.targets) > 1:
                bt.budget_oracle_same_split = _budget_oracle_same_split(w, cfg.engine, bt,
                                                                        ts_runs)
    return bt
