"""One planning cycle: ``plan(spec, observation, memory, now) -> Plan``.

Pure: everything arrives as arguments, nothing is read from the clock, network or environment.
The steps follow DESIGN.md "The decision" in its order:

1. **Accounting** (:mod:`~tokenscale.core.budget`). The cost of the *current* replicas of all
   targets (× costPerReplicaHour × price multiplier) is integrated from ``memory.last_accounted``
   to ``now``, split at period boundaries (and price-window edges). The first cycle
   (``last_accounted`` unset) accounts nothing. At rollover the spend restarts at 0 plus the part
   of the interval inside the new period; the closed period's final cost is reported in
   ``Plan.previous_period_cost``. Tokens: ``observation.tokens_in_period`` (Prometheus
   ``increase()`` since period start) when known, else the observed token rate × time is added.
2. **Demand** (:mod:`~tokenscale.core.capacity`): ``max(observed, trend forecast coldStartSeconds
   ahead) + queue × tokensPerRequest / max(intervalSeconds, coldStartSeconds)``.
3. **Need**: ``ceil(demand·(1+headroom)/(tokensPerReplicaPerSecond·targetUtilization))`` within
   ``[minReplicas, maxReplicas]`` (reasons MinReplicas / MaxReplicas when clamped).
4. **Pacing**: affordable cost rate = remaining cost / hours left (currency/h, compared with
   replica prices × the multiplier *now*, so cheap hours buy more replicas); a token budget caps
   served capacity (replicas × tokensPerReplicaPerSecond × targetUtilization) at remaining tokens
   / seconds left. Spent → BudgetExhausted: ``ScaleToMinimum`` sets every target to minReplicas
   at once; ``Hold`` keeps the current replicas (scale-downs the demand allows still happen,
   scale-ups do not).
5. **Allocation** (:mod:`~tokenscale.core.costmodel`): the counts from step 6's behaviour are the
   caps; if they fit the affordable rates they stand, else greedy by marginal value from the
   minReplicas floors (reason BudgetCapped). ``minMarginalValue > 0`` caps each target where the
   next replica's value per currency/h falls below it, even within budget (DiminishingReturns).
6. **Behaviour** (applied to the need before step 5): tolerance band (WithinTolerance),
   scale-up at most ``max(current+4, 2·current)`` (ScaleUpLimited), scale-down to the highest
   recommendation within the stabilization window (StabilizingScaleDown). The budget cap comes
   after these, so a budget-forced scale-down is never delayed.
7. **Outages**: a target whose metrics failed (``metrics_error``) or returned no samples holds
   its current replicas (clamped to [min, max]; MetricsUnavailableHold); once the outage is
   ``fallback.afterSeconds`` old and ``fallback.replicas`` is set, it runs
   ``max(current, fallback.replicas)`` clamped to [min, max] (FallbackReplicas): missing metrics
   never lower replicas. Budget caps still apply (they need no Prometheus). The outage start is
   kept in ``memory.metrics_unavailable_since`` (set on the first failing cycle, cleared when all
   targets report again). Hold/fallback targets record no recommendation and ignore
   minMarginalValue.
8. **Conflict**: a target with another autoscaler (``conflict``), a workload problem
   (``target_error``) or no observation at all keeps its current replicas, is never scaled
   (reason Conflict, also in DryRun: nothing would be set) and its cost still counts against the
   budget as a fixed floor.

Output. Every Decision has one reason; precedence: Conflict > BudgetExhausted > BudgetCapped >
DiminishingReturns > ScaleUpLimited > StabilizingScaleDown > WithinTolerance (only when it kept
a count the need would have changed) > MinReplicas/MaxReplicas > DemandDriven. In DryRun every
non-conflict decision carries reason DryRun, the replicas it would set and the underlying reason
in the message, and ``scale`` is False. ``scale`` is True only in Active mode when the replicas
differ from the current ones.

Conditions (type: True reasons / False reason): MetricsAvailable: MetricsFresh / MetricsUnavailable
or FallbackActive. BudgetExhausted: CostBudgetSpent, TokenBudgetSpent / BudgetRemaining.
BudgetAtRisk: Exhausted, MinReplicasOverBudget, DemandExceedsBudget, ProjectedOverrun /
WithinBudget. ScalingLimited: the first limiting target's reason (ScaleUpLimited, MinReplicas,
MaxReplicas, BudgetCapped, BudgetExhausted, DiminishingReturns) / DesiredWithinRange. Conflict:
ConflictingAutoscaler, TargetNotScalable / NoConflict. Ready: Reconciled / TargetNotScalable,
ConflictingAutoscaler, MetricsUnavailable.

Phase: BudgetExhausted > Degraded (metrics unavailable or a Conflict target) > BudgetAtRisk >
DryRun > Active.

Memory: spend and period updated, ``last_accounted = now``, recommendations compacted per
target (see :func:`~tokenscale.core.capacity.compact_recommendations`) to the stabilization
window and at most ``MAX_RECOMMENDATIONS // len(targets)`` per target, entries of removed
targets dropped, ``last_scale_time[target] = now`` for scaled targets.
"""

from __future__ import annotations

import math
from datetime import datetime

from tokenscale.api import MAX_RECOMMENDATIONS, TargetSpec, TokenBudgetSpec
from tokenscale.core.budget import (
    accrue_cost,
    affordable_cost_rate,
    affordable_token_rate,
    counter_increase,
    is_exhausted,
    period_bounds,
    price_multiplier,
    project,
)
from tokenscale.core.capacity import (
    clamp,
    compact_recommendations,
    queue_drain_rate,
    raw_need,
    round_need,
    scale_up_limit,
    stabilized_recommendation,
    trend_forecast,
    within_tolerance,
)
from tokenscale.core.costmodel import (
    AllocationItem,
    allocate,
    continuous_optimum,
    fit_log_linear,
    marginal_value,
    select_model,
    value_cap,
)
from tokenscale.core.types import (
    ConditionValue,
    Decision,
    Memory,
    ModelFit,
    Observation,
    Plan,
    RecommendationEntry,
    Spend,
    TargetObservation,
)

#: ``plan`` and the helpers the operator and the backtest use next to it.
__all__ = [
    "accrue_cost",
    "continuous_optimum",
    "counter_increase",
    "fit_log_linear",
    "period_bounds",
    "plan",
    "price_multiplier",
]

#: Reasons that mean "the count is limited by something other than demand".
LIMITING_REASONS = frozenset(
    {"ScaleUpLimited", "MinReplicas", "MaxReplicas", "BudgetCapped", "BudgetExhausted",
     "DiminishingReturns"}
)

_CONTROL, _HOLD, _FIXED = 0, 1, 2


class _Work:
    """Mutable per-target state of one cycle."""

    __slots__ = (
        "behaviour", "cap", "current", "demand_text", "error", "final", "forecast", "kind",
        "message", "model", "need", "obs", "observed", "reason", "recommendation", "spec",
    )

    def __init__(self, spec: TargetSpec, obs: TargetObservation, kind: int) -> None:
        self.spec = spec
        self.obs = obs
        self.kind = kind
        self.current = max(0, obs.current_replicas)
        self.observed: float | None = None
        self.forecast: float | None = None
        self.need: int | None = None
        self.recommendation: int | None = None
        self.behaviour = self.current
        self.cap = self.current
        self.final = self.current
        self.reason = "DemandDriven"
        self.message = ""
        self.demand_text = ""
        self.error = ""
        self.model: ModelFit | None = None


def _money(x: float) -> str:
    return f"{x:,.2f}"


def _rate(x: float) -> str:
    return f"{x:,.0f}"


def _model_for(target: TargetSpec, obs: TargetObservation) -> ModelFit:
    fit = fit_log_linear(obs.quality_samples) if obs.quality_samples else None
    return select_model(target.performance.a, target.performance.b, fit)


def _plan_demand(w: _Work, spec: TokenBudgetSpec, memory_recs: list[RecommendationEntry],
                 now: datetime) -> None:
    """Steps 2, 3 and 6 for a target with usable metrics: need, recommendation, behaviour."""
    t = w.spec
    o = w.obs
    planning = spec.planning
    observed, forecast = trend_forecast(
        o.token_rate_samples, now, planning.forecast_window_seconds, t.cold_start_seconds
    )
    drain_seconds = max(planning.interval_seconds, t.cold_start_seconds)
    drain = queue_drain_rate(o.queue_length, o.tokens_per_request, drain_seconds)
    demand = max(observed, forecast) + drain
    raw = raw_need(demand, planning.headroom, t.tokens_per_replica_per_second,
                   planning.target_utilization)
    unclamped = round_need(raw)
    need = clamp(unclamped, t.min_replicas, t.max_replicas)
    w.observed, w.forecast, w.need = observed, forecast, need
    w.demand_text = (
        f"demand {_rate(demand)} tok/s (observed {_rate(observed)}, forecast "
        f"{_rate(forecast)} in {t.cold_start_seconds}s, queue {o.queue_length:g} -> "
        f"+{_rate(drain)}) at {_rate(t.tokens_per_replica_per_second)} tok/s/replica x "
        f"{planning.target_utilization:g} utilization, {planning.headroom:.0%} headroom "
        f"needs {raw:.2f} replicas"
    )
    current = w.current
    if unclamped < t.min_replicas:
        reason, msg = "MinReplicas", f"{w.demand_text}; minReplicas is {t.min_replicas}"
    elif unclamped > t.max_replicas:
        reason, msg = "MaxReplicas", f"{w.demand_text}; maxReplicas is {t.max_replicas}"
    else:
        reason, msg = "DemandDriven", w.demand_text
    rec = need
    if (need != current and t.min_replicas <= current <= t.max_replicas
            and within_tolerance(raw, current, planning.tolerance)):
        rec = current
        reason = "WithinTolerance"
        msg = (f"need {raw:.2f} is within {planning.tolerance:.0%} of current {current}; "
               f"{w.demand_text}")
    w.recommendation = rec
    behaviour = rec
    if rec > current:
        limit = max(t.min_replicas, scale_up_limit(current))
        if rec > limit:
            behaviour = limit
            reason = "ScaleUpLimited"
            msg = (f"need {rec}, scale-up limited to {limit} from {current} per interval "
                   f"(max(+4, 100%)); {w.demand_text}")
    elif rec < current:
        stab = clamp(
            stabilized_recommendation(
                memory_recs, t.name, now, planning.scale_down_stabilization_seconds, rec
            ),
            t.min_replicas, t.max_replicas,
        )
        behaviour = min(current, stab)
        if behaviour > rec:
            reason = "StabilizingScaleDown"
            msg = (f"need {rec}, keeping {behaviour}: highest recommendation in the last "
                   f"{planning.scale_down_stabilization_seconds}s; {w.demand_text}")
    w.behaviour = behaviour
    w.reason, w.message = reason, msg


def _plan_hold(w: _Work, spec: TokenBudgetSpec, fallback_active: bool,
               outage_seconds: float) -> None:
    """Step 7 for a target without usable metrics: hold, or the fallback after a while."""
    t = w.spec
    hold = clamp(w.current, t.min_replicas, t.max_replicas)
    fallback = spec.fallback
    err = w.obs.metrics_error or "Empty"
    w.error = err
    if fallback_active and fallback.replicas is not None:
        fb = clamp(fallback.replicas, t.min_replicas, t.max_replicas)
        w.behaviour = max(hold, fb)
        w.reason = "FallbackReplicas"
        w.message = (f"metrics unavailable ({err}) for {outage_seconds:.0f}s, over "
                     f"fallback.afterSeconds {fallback.after_seconds}: {w.behaviour} replicas "
                     f"(fallback.replicas {fallback.replicas}, never fewer than current "
                     f"{w.current})")
    else:
        w.behaviour = hold
        w.reason = "MetricsUnavailableHold"
        then = (f"; fallback to {fallback.replicas} after {fallback.after_seconds}s"
                if fallback.replicas is not None else "")
        w.message = (f"metrics unavailable ({err}) for {outage_seconds:.0f}s: holding "
                     f"{hold} replicas{then}")


def plan(spec: TokenBudgetSpec, observation: Observation, memory: Memory,
         now: datetime) -> Plan:
    """Decide replicas for every target of one TokenBudget at ``now`` (tz-aware).

    See the module docstring for the rules. Returns the decisions (keyed by target name, in
    spec order), the new memory to persist, spend figures, the period, phase and conditions.
    """
    budget = spec.budget
    planning = spec.planning
    currency = budget.currency
    period_start, period_end = period_bounds(budget, now)
    multiplier = price_multiplier(spec, now)
    active = spec.mode == "Active"

    # ---- observe: classify targets, current cost rate, observed tokens/s
    works: list[_Work] = []
    base_rate = 0.0  # currency/h at current replicas, before the multiplier
    observed_total = 0.0
    unavailable: list[_Work] = []
    for t in spec.targets:
        o = observation.targets.get(t.name)
        if o is None:
            o = TargetObservation(current_replicas=0, ready_replicas=0,
                                  target_error="target not observed this cycle")
        if o.conflict is not None or o.target_error is not None:
            w = _Work(t, o, _FIXED)
        elif o.metrics_error is not None or not o.token_rate_samples:
            w = _Work(t, o, _HOLD)
            unavailable.append(w)
        else:
            w = _Work(t, o, _CONTROL)
            observed_total += max(0.0, o.token_rate_samples[-1][1])
        base_rate += w.current * t.cost_per_replica_hour
        works.append(w)

    # ---- 1. accounting
    rolled = memory.period_start != period_start
    spent = 0.0 if rolled else memory.spend_cost
    tokens = 0.0 if rolled else memory.spend_tokens
    previous_period_cost = (
        memory.spend_cost if rolled and memory.period_start is not None else None
    )
    last = memory.last_accounted
    if last is not None and last < now:
        if last >= period_start and not spec.pricing.schedule:
            spent += base_rate * (now - last).total_seconds() / 3600.0
        else:
            for p_start, cost in accrue_cost(spec, base_rate, last, now):
                if p_start == period_start:
                    spent += cost
                elif p_start == memory.period_start and previous_period_cost is not None:
                    previous_period_cost += cost
        if observation.tokens_in_period is None:
            tokens += observed_total * (now - max(last, period_start)).total_seconds()
    if observation.tokens_in_period is not None:
        # Never below what this period already counted: Prometheus can lose history
        # (a restart without a persistent TSDB, retention shorter than the period).
        tokens = max(tokens, observation.tokens_in_period, 0.0)

    cost_exhausted = is_exhausted(budget.max_cost, spent)
    token_exhausted = is_exhausted(budget.max_tokens, tokens)
    exhausted = cost_exhausted or token_exhausted
    affordable = affordable_cost_rate(budget.max_cost, spent, now, period_end)
    token_cap = affordable_token_rate(budget.max_tokens, tokens, now, period_end)

    # ---- 7. outage bookkeeping
    outage_since = (
        (memory.metrics_unavailable_since or now) if unavailable else None
    )
    outage_seconds = (now - outage_since).total_seconds() if outage_since else 0.0
    fallback_active = (
        bool(unavailable) and spec.fallback.replicas is not None
        and outage_seconds >= spec.fallback.after_seconds
    )

    # ---- 2, 3, 6: demand, need, behaviour
    recs_by_target: dict[str, list[RecommendationEntry]] = {}
    for entry in memory.recommendations:
        recs_by_target.setdefault(entry.target, []).append(entry)
    mmv = planning.min_marginal_value
    items: list[AllocationItem] = []
    for w in works:
        t = w.spec
        price = t.cost_per_replica_hour * multiplier
        if w.kind == _FIXED:
            w.reason = "Conflict"
            w.message = (
                f"{w.obs.conflict} also scales {t.scale_target_ref.kind}/"
                f"{t.scale_target_ref.name}; not scaling, keeping {w.current}"
                if w.obs.conflict is not None
                else f"cannot scale {t.scale_target_ref.kind}/{t.scale_target_ref.name}: "
                f"{w.obs.target_error}"
            )
            floor = cap = w.current
        else:
            w.model = _model_for(t, w.obs)
            if w.kind == _CONTROL:
                _plan_demand(w, spec, recs_by_target.get(t.name, []), now)
            else:
                _plan_hold(w, spec, fallback_active, outage_seconds)
            floor = t.min_replicas
            cap = w.behaviour
            if w.kind == _CONTROL:
                vcap = value_cap(t.weight, w.model.b, price, mmv)
                if vcap is not None and max(floor, vcap) < cap:
                    cap = max(floor, vcap)
                    nxt = marginal_value(t.weight, w.model.b, price, cap)
                    w.reason = "DiminishingReturns"
                    w.message = (
                        f"need {w.behaviour}, stopping at {cap}: replica {cap + 1} adds "
                        f"{nxt:.3g} quality per {currency}/h, below minMarginalValue {mmv:g}; "
                        f"{w.demand_text}"
                    )
        w.cap = cap
        items.append(AllocationItem(
            floor=floor, cap=cap, cost_per_hour=price,
            tokens_per_second=t.tokens_per_replica_per_second * planning.target_utilization,
            value=t.weight * (w.model.b if w.model is not None else 0.0),
        ))

    # ---- 4, 5: pacing and allocation (budget cuts are applied at once)
    floors_cost = sum(it.floor * it.cost_per_hour for it in items)
    floors_tokens = sum(it.floor * it.tokens_per_second for it in items)
    floors_over = floors_cost > affordable or floors_tokens > token_cap
    if exhausted:
        for w, it in zip(works, items, strict=True):
            if w.kind == _FIXED:
                continue
            if budget.on_exhausted == "ScaleToMinimum":
                w.final = it.floor
            else:
                w.final = max(it.floor, min(w.current, it.cap))
    else:
        counts = allocate(items, affordable, token_cap)
        for w, n in zip(works, counts, strict=True):
            w.final = n

    # ---- 8. reasons and messages
    what = (f"cost ({_money(spent)} of {_money(budget.max_cost or 0)} {currency})"
            if cost_exhausted else
            f"token ({_rate(tokens)} of {_rate(budget.max_tokens or 0)} tokens)")
    hours_left = (period_end - now).total_seconds() / 3600.0
    for w in works:
        if w.kind == _FIXED:
            continue
        if exhausted:
            w.reason = "BudgetExhausted"
            w.message = (
                f"{what} budget exhausted until {period_end.isoformat()}; "
                f"onExhausted={budget.on_exhausted}: {w.final} replicas (demand/hold wants "
                f"{w.cap})"
            )
        elif w.final < w.cap or (floors_over and w.final < w.behaviour):
            # The budget outranks minMarginalValue: when the floors alone overrun it, a
            # target held at its floor is BudgetCapped even if the value cut-off agreed.
            w.reason = "BudgetCapped"
            if floors_over:
                limit = (f"minReplicas floors cost {_money(floors_cost)} {currency}/h, above "
                         f"the affordable {_money(affordable)} {currency}/h"
                         if floors_cost > affordable else
                         f"minReplicas floors serve {_rate(floors_tokens)} tok/s, above the "
                         f"affordable {_rate(token_cap)} tok/s")
                w.message = (f"wants {max(w.cap, w.behaviour)}, kept at minReplicas {w.final}: "
                             f"{limit}")
            else:
                parts = []
                if math.isfinite(affordable):
                    left = (budget.max_cost or 0) - spent
                    parts.append(f"affordable {_money(affordable)} {currency}/h "
                                 f"({_money(left)} {currency} left for {hours_left:.1f} h)")
                if math.isfinite(token_cap):
                    parts.append(f"affordable {_rate(token_cap)} tok/s of served capacity")
                w.message = (f"wants {w.cap}, budget allows {w.final}: " + ", ".join(parts)
                             + f"; {w.message}")
    # ---- conditions, spend, memory
    decisions: dict[str, Decision] = {}
    planned_rate = 0.0
    for w in works:
        t = w.spec
        price = t.cost_per_replica_hour * multiplier
        applied = w.final if active and w.kind != _FIXED else w.current
        planned_rate += applied * price
        reason, message = w.reason, w.message
        if not active and w.kind != _FIXED:
            message = f"would set {w.final} (now {w.current}); {reason}: {message}"
            reason = "DryRun"
        decisions[t.name] = Decision(
            replicas=w.final,
            reason=reason,
            message=message,
            scale=active and w.kind != _FIXED and w.final != w.current,
            tokens_per_second=w.observed,
            forecast_tokens_per_second=w.forecast,
            queue_length=w.obs.queue_length if w.kind == _CONTROL else None,
            cost_per_hour=w.final * price,
            model=w.model,
            needed_replicas=w.need,
        )

    current_rate = base_rate * multiplier
    projected_cost = project(spent, planned_rate / 3600.0, now, period_end)
    projected_tokens = project(tokens, observed_total, now, period_end)
    spend = Spend(
        cost=spent,
        tokens=tokens,
        projected_cost=projected_cost,
        projected_tokens=projected_tokens,
        cost_per_hour=current_rate,
        cost_per_million_tokens=spent / tokens * 1e6 if tokens > 0 else None,
    )

    conditions, phase = _conditions(
        spec, works, unavailable, fallback_active, outage_seconds, spent, tokens,
        cost_exhausted, token_exhausted, floors_over, projected_cost, projected_tokens,
        planned_rate, affordable,
    )

    new_memory = _next_memory(spec, memory, works, recs_by_target, now, period_start,
                              spent, tokens, outage_since, decisions)
    return Plan(
        decisions=decisions,
        memory=new_memory,
        spend=spend,
        period_start=period_start,
        period_end=period_end,
        phase=phase,
        conditions=conditions,
        affordable_cost_per_hour=affordable if math.isfinite(affordable) else None,
        affordable_tokens_per_second=token_cap if math.isfinite(token_cap) else None,
        price_multiplier=multiplier,
        previous_period_cost=previous_period_cost,
    )


def _wants(w: _Work) -> int:
    return w.need if w.need is not None else w.cap


def _conditions(
    spec: TokenBudgetSpec, works: list[_Work], unavailable: list[_Work],
    fallback_active: bool, outage_seconds: float, spent: float, tokens: float,
    cost_exhausted: bool, token_exhausted: bool, floors_over: bool, projected_cost: float,
    projected_tokens: float, planned_rate: float, affordable: float,
) -> tuple[tuple[ConditionValue, ...], str]:
    budget = spec.budget
    cur = budget.currency
    out: list[ConditionValue] = []

    if unavailable:
        listed = ", ".join(f"{w.spec.name}: {w.error}" for w in unavailable)
        metrics = ConditionValue(
            "MetricsAvailable", "False",
            "FallbackActive" if fallback_active else "MetricsUnavailable",
            f"no usable token metrics for {outage_seconds:.0f}s ({listed}); "
            + ("running fallback replicas" if fallback_active else "holding replicas"),
        )
    else:
        metrics = ConditionValue("MetricsAvailable", "True", "MetricsFresh",
                                 "token metrics are fresh for all observed targets")
    out.append(metrics)

    limits = []
    if budget.max_cost is not None:
        limits.append(f"spent {_money(spent)} of {_money(budget.max_cost)} {cur}")
    if budget.max_tokens is not None:
        limits.append(f"{_rate(tokens)} of {_rate(budget.max_tokens)} tokens")
    spent_text = ", ".join(limits)
    exhausted = cost_exhausted or token_exhausted
    if exhausted:
        out.append(ConditionValue(
            "BudgetExhausted", "True",
            "CostBudgetSpent" if cost_exhausted else "TokenBudgetSpent",
            f"{spent_text}; onExhausted={budget.on_exhausted} until the period ends",
        ))
    else:
        out.append(ConditionValue("BudgetExhausted", "False", "BudgetRemaining", spent_text))

    capped = [w.spec.name for w in works if w.reason == "BudgetCapped"]
    projection = []
    if budget.max_cost is not None:
        projection.append(f"projected {_money(projected_cost)} of {_money(budget.max_cost)} "
                          f"{cur}")
    if budget.max_tokens is not None:
        projection.append(f"projected {_rate(projected_tokens)} of {_rate(budget.max_tokens)} "
                          "tokens")
    projection_text = ", ".join(projection)
    over = (budget.max_cost is not None and projected_cost > budget.max_cost * (1 + 1e-9)) or (
        budget.max_tokens is not None and projected_tokens > budget.max_tokens * (1 + 1e-9))
    if exhausted:
        risk = ConditionValue("BudgetAtRisk", "True", "Exhausted", f"{spent_text}")
    elif floors_over:
        risk = ConditionValue("BudgetAtRisk", "True", "MinReplicasOverBudget",
                              f"minReplicas alone exceed the affordable rate "
                              f"({_money(planned_rate)} > {_money(affordable)} {cur}/h); "
                              f"{projection_text}")
    elif capped:
        risk = ConditionValue("BudgetAtRisk", "True", "DemandExceedsBudget",
                              f"budget caps {', '.join(capped)}; {projection_text}")
    elif over:
        risk = ConditionValue("BudgetAtRisk", "True", "ProjectedOverrun", projection_text)
    else:
        risk = ConditionValue("BudgetAtRisk", "False", "WithinBudget", projection_text)
    out.append(risk)

    limited = [w for w in works if w.reason in LIMITING_REASONS]
    if limited:
        out.append(ConditionValue(
            "ScalingLimited", "True", limited[0].reason,
            "; ".join(f"{w.spec.name}: {w.reason} at {w.final} (wants {_wants(w)})"
                      for w in limited),
        ))
    else:
        out.append(ConditionValue("ScalingLimited", "False", "DesiredWithinRange",
                                  "every target is at its demand-driven count"))

    fixed = [w for w in works if w.kind == _FIXED]
    conflict_reason = ""
    if fixed:
        conflict_reason = ("ConflictingAutoscaler" if any(w.obs.conflict for w in fixed)
                           else "TargetNotScalable")
        out.append(ConditionValue("Conflict", "True", conflict_reason,
                                  "; ".join(f"{w.spec.name}: {w.message}" for w in fixed)))
    else:
        out.append(ConditionValue("Conflict", "False", "NoConflict",
                                  "no other autoscaler on the targets"))

    if fixed:
        ready = ConditionValue("Ready", "False", conflict_reason,
                               f"{len(fixed)} of {len(works)} targets cannot be scaled")
    elif unavailable:
        ready = ConditionValue("Ready", "False", "MetricsUnavailable", metrics.message)
    else:
        desired = sum(w.final for w in works)
        ready = ConditionValue("Ready", "True", "Reconciled",
                               f"{len(works)} targets planned: {desired} replicas, "
                               f"{_money(planned_rate)} {cur}/h")
    out.append(ready)

    if exhausted:
        phase = "BudgetExhausted"
    elif unavailable or fixed:
        phase = "Degraded"
    elif risk.status == "True":
        phase = "BudgetAtRisk"
    elif spec.mode == "DryRun":
        phase = "DryRun"
    else:
        phase = "Active"
    return tuple(out), phase


def _next_memory(
    spec: TokenBudgetSpec, memory: Memory, works: list[_Work],
    recs_by_target: dict[str, list[RecommendationEntry]], now: datetime,
    period_start: datetime, spent: float, tokens: float, outage_since: datetime | None,
    decisions: dict[str, Decision],
) -> Memory:
    window = spec.planning.scale_down_stabilization_seconds
    per_target = max(1, MAX_RECOMMENDATIONS // len(works))
    recommendations: list[RecommendationEntry] = []
    for w in works:
        name = w.spec.name
        entries = recs_by_target.get(name, [])
        if w.recommendation is not None:
            entries = [*entries, RecommendationEntry(name, now, w.recommendation)]
        if entries:
            recommendations.extend(compact_recommendations(entries, now, window, per_target))
    last_scale = {w.spec.name: memory.last_scale_time[w.spec.name] for w in works
                  if w.spec.name in memory.last_scale_time}
    for name, d in decisions.items():
        if d.scale:
            last_scale[name] = now
    return Memory(
        period_start=period_start,
        spend_cost=spent,
        spend_tokens=tokens,
        last_accounted=now if memory.last_accounted is None or memory.last_accounted < now
        else memory.last_accounted,
        recommendations=tuple(recommendations),
        metrics_unavailable_since=outage_since,
        last_scale_time=last_scale,
    )
