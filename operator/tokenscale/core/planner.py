"""One planning cycle: ``plan(spec, observation, memory, now) -> Plan``.

Pure: everything arrives as arguments, nothing is read from the clock, network or environment.
:func:`plan` runs the steps of DESIGN.md "The decision", each in its module:

1. **Accounting** (:mod:`~tokenscale.core.budget`). The cost of the *current* replicas of all
   targets (× the costPerReplicaHour each was planned with at the last cycle, ``memory.prices``,
   else today's × price multiplier) is integrated from ``memory.last_accounted``
   to ``now``, split at period boundaries (and price-window edges). The first cycle
   (``last_accounted`` unset) accounts nothing. At rollover the spend restarts at 0 plus the part
   of the interval inside the new period; the closed period's final cost is reported in
   ``Plan.previous_period_cost``. Tokens: ``observation.tokens_in_period`` (Prometheus
   ``increase()`` since period start) when known, else the observed token rate × time is added.
2. **Service model** (:mod:`~tokenscale.core.costmodel`): the quality model per target, fitted
   from ``quality_samples`` or the spec's.
3. **Demand** (:mod:`~tokenscale.core.capacity`): the arrival rate (a gateway's counter, else
   the served rate plus the queue's growth, censored at a published admission)
   ``max(observed, trend forecast coldStartSeconds ahead) + queue × tokensPerRequest /
   max(intervalSeconds, coldStartSeconds)``.
4. **Need**: ``ceil(max(demand·(1+headroom), demand + z·σ)/(capacity within the SLO·
   utilization))`` (σ the demand's spread around its trend, z from slo.attainment; utilization
   ``targetUtilization·(1+tolerance)/(1+band)``, the band the tolerance narrowed to the margin
   ``z·σ`` relative to the demand, :func:`~tokenscale.core.capacity.noise_band`) within
   ``[minReplicas, maxReplicas]`` (reasons MinReplicas / MaxReplicas when clamped).
5. **Pacing and allocation** (:mod:`~tokenscale.core.pacing`): the counts from step 6 are the
   caps, cut by minMarginalValue (DiminishingReturns); if they fit the affordable rates they
   stand, else greedy by marginal value from the minReplicas floors (BudgetCapped). Spent →
   BudgetExhausted and onExhausted.
6. **Behaviour** (:mod:`~tokenscale.core.capacity`, applied to the need before step 5):
   the band (WithinTolerance), scale-up at most ``max(current+4, 2·current)``
   (ScaleUpLimited), scale-down to the highest recommendation within the stabilization window
   (StabilizingScaleDown). The budget cap comes after these, so a budget-forced scale-down is
   never delayed.
7. **Outages** (:mod:`~tokenscale.core.outage`): targets without usable metrics hold
   (MetricsUnavailableHold) or run the fallback (FallbackReplicas), never fewer replicas;
   targets with another autoscaler, a workload problem or no observation are not scaled
   (Conflict) and their cost counts as a fixed floor.
8. **Output**: a Decision per target with one reason and a message with the numbers
   (:mod:`~tokenscale.core.messages`), the conditions and phase
   (:mod:`~tokenscale.core.conditions`), spend with its projection to period end from the
   demand forecast and the planned replicas (:mod:`~tokenscale.core.outlook`, which also
   learns each target's time-of-day demand into the memory) and the memory for the next cycle.

The steps hand each other immutable typed records (``typing.NamedTuple``: as frozen as a frozen
dataclass and about three times cheaper to build, which matters at a dozen records per call).

Reason precedence: Conflict > BudgetExhausted > BudgetCapped > DiminishingReturns >
ScaleUpLimited > StabilizingScaleDown > WithinTolerance (only when it kept a count the need
would have changed) > MinReplicas/MaxReplicas > DemandDriven. In DryRun every non-conflict
decision carries reason DryRun, the replicas it would set and the underlying reason in the
message, and ``scale`` is False. ``scale`` is True only in Active mode when the replicas differ
from the current ones.

Memory: spend and period updated, ``last_accounted = now``, recommendations compacted per
target (see :func:`~tokenscale.core.capacity.compact_recommendations`) to the stabilization
window and at most ``MAX_RECOMMENDATIONS // len(targets)`` per target, entries of removed
targets dropped, ``last_scale_time[target] = now`` for scaled targets.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime
from typing import NamedTuple

from tokenscale.api import MAX_RECOMMENDATIONS, TargetSpec, TokenBudgetSpec
from tokenscale.core.budget import (
    Accounts,
    Usage,
    account,
    accrue_cost,
    binding_limit,
    counter_increase,
    period_bounds,
    price_multiplier,
    spend_figures,
)
from tokenscale.core.capacity import Previous, Recommendation, compact_recommendations, recommend
from tokenscale.core.conditions import Situation, conditions
from tokenscale.core.costmodel import continuous_optimum, fit_log_linear, select_model
from tokenscale.core.messages import decision_message, dry_run_message
from tokenscale.core.outage import Hold, Outage, Seen, classify, hold, outage_clock
from tokenscale.core.outlook import lanes, learn_all, outlook
from tokenscale.core.pacing import Allocation, Outcome, Proposal, pace
from tokenscale.core.service import fit_service, spec_service
from tokenscale.core.types import (
    Decision,
    ForecastScore,
    Memory,
    Observation,
    Plan,
    RecommendationEntry,
    ServiceFit,
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


def plan(spec: TokenBudgetSpec, observation: Observation, memory: Memory,
         now: datetime) -> Plan:
    """Decide replicas for every target of one TokenBudget at ``now`` (tz-aware).

    See the module docstring for the rules. Returns the decisions (keyed by target name, in
    spec order), the new memory to persist, spend figures, the period, phase and conditions.
    """
    # 7. Outages, first: which targets can be steered (Control), held (Hold) or not (Fixed).
    classified = [classify(t, observation.targets.get(t.name)) for t in spec.targets]
    fits = {s.target.name: _used_fit(s.target, _service_fit(s)) for s in classified}
    # 2. Service model: a good fit replaces the spec's capacity within the SLO.
    seen = [_served_by_model(s, fits[s.target.name]) for s in classified]
    usage = _usage(seen, observation.tokens_in_period, memory.prices)
    # 1. Accounting: spend and tokens of the period, exhaustion, affordable rates.
    accounts = account(spec, memory, usage, now)
    outage = outage_clock(spec.fallback, memory.metrics_unavailable_since,
                          any(s.kind == "Hold" for s in seen), now)
    cycle = _Cycle(spec, now, price_multiplier(spec, now), outage,
                   _by_target(memory.recommendations), memory)
    # 2. Service model, 3. Demand, 4. Need, 6. Behaviour (or 7's hold): what each target asks.
    proposals = [_propose(s, cycle) for s in seen]
    # 5. Pacing and allocation: what the budget lets each target run, and why.
    allocation = pace(proposals, spec, accounts)
    # 8. Output: decisions with messages, spend, conditions and phase, memory.
    active = spec.mode == "Active"
    decisions = _decisions(allocation, spec, accounts, fits)
    planned_rate = _planned_rate(allocation, active)
    run = lanes(spec, allocation, memory.demand_profiles)
    projected = outlook(spec, accounts, run, spec.planning.interval_seconds)
    spend = spend_figures(accounts, usage, cycle.multiplier, planned_rate, projected)
    status, phase = conditions(Situation(spec, allocation, accounts, outage, spend, planned_rate))
    return Plan(
        decisions=decisions,
        memory=replace(_next_memory(cycle, memory, allocation, decisions, accounts),
                       demand_profiles=learn_all(spec, allocation, memory.demand_profiles,
                                                 memory.last_accounted, now)),
        spend=spend,
        period_start=accounts.period_start,
        period_end=accounts.period_end,
        phase=phase,
        conditions=status,
        affordable_cost_per_hour=_finite(accounts.affordable),
        affordable_tokens_per_second=_finite(accounts.token_cap),
        price_multiplier=cycle.multiplier,
        previous_period_cost=accounts.previous_period_cost,
        binding=binding_limit(spec.budget, spend),
        lanes=tuple(run),
    )


class _Cycle(NamedTuple):
    """What every target's proposal reads besides its own observation."""

    spec: TokenBudgetSpec
    now: datetime
    multiplier: float  # price multiplier at now
    outage: Outage
    history: dict[str, list[RecommendationEntry]]  # past recommendations per target
    memory: Memory  # the last cycle's

    def previous(self, target: str) -> Previous:
        """What the last cycle saw of ``target``: its queue and published admission."""
        last = self.memory.last_accounted
        seconds = (self.now - last).total_seconds() if last is not None else 0.0
        return Previous(self.memory.queues.get(target), self.memory.admissions.get(target),
                        seconds, self.memory.forecast_scores.get(target))


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _by_target(entries: tuple[RecommendationEntry, ...]) -> dict[str, list[RecommendationEntry]]:
    out: dict[str, list[RecommendationEntry]] = {}
    for entry in entries:
        out.setdefault(entry.target, []).append(entry)
    return out


def _service_fit(seen: Seen) -> ServiceFit | None:
    """2. Service model: the capacity within the SLO fitted from the latency histograms (or
    the spec's); None for targets without metrics this cycle."""
    if seen.kind != "Control":
        return None
    t = seen.target
    return fit_service(seen.obs.latency_samples, t.slo, t.tokens_per_replica_per_second)


#: admission admits this share of the capacity within the SLO of the ready replicas. The
#: admitted rate is capped every second, so the load does not swing with demand the way the
#: planning utilisation (targetUtilization) allows for; what is left is the error of the
#: service model itself. Tight case (goodput vs the budget-aware oracle, one seed): 0.8 (the
#: planning utilisation) 73.6 %, 0.9 82.8 %, 0.95 87.3 %, 1.0 34.2 % (ITL at the SLO: half late)
ADMISSION_SHARE = 0.95

#: a good fit replaces the spec's capacity only when the two differ by more than this share:
#: the fit reads mean latencies, which second-scale bursts bias low by up to ~18 % against the
#: simulator's truth (BENCHMARKS.md), so a spec within that band is kept
SPEC_TRUST = 0.25


def _used_fit(target: TargetSpec, fit: ServiceFit | None) -> ServiceFit | None:
    """The service model the planner uses: a good fit when the spec is clearly off
    (SPEC_TRUST), else the spec's capacity (with the fit's r² and samples)."""
    if fit is None or fit.source != "Fitted":
        return fit
    stated = target.tokens_per_replica_per_second
    if stated is not None and abs(fit.capacity_within_slo - stated) <= SPEC_TRUST * stated:
        return spec_service(stated, fit.samples, fit.r2)
    return fit


def _served_by_model(seen: Seen, fit: ServiceFit | None) -> Seen:
    """A target planned with a fitted (or, without tokensPerReplicaPerSecond, observed)
    capacity within its SLO instead of the spec's; with none known (Unknown) it cannot be
    sized and is held as in a metrics outage (NoServiceModel: never down, the fallback after
    fallback.afterSeconds)."""
    if fit is None or fit.source == "Spec":
        return seen
    if fit.source == "Unknown":
        return seen._replace(kind="Hold", obs=replace(seen.obs, metrics_error="NoServiceModel"))
    return seen._replace(target=seen.target.model_copy(
        update={"tokens_per_replica_per_second": fit.capacity_within_slo}))


def _usage(seen: list[Seen], tokens_in_period: float | None,
           prices: dict[str, float]) -> Usage:
    """Cost rate of the current replicas (before the multiplier) at today's prices and at the
    prices of the last cycle (what the time since is charged at), and observed tokens/s."""
    base_rate = 0.0
    accrued_rate = 0.0
    token_rate = 0.0
    for s in seen:
        if s.kind == "Control":
            token_rate += max(0.0, s.obs.token_rate_samples[-1][1])
        price = s.target.cost_per_replica_hour
        base_rate += s.current * price
        accrued_rate += s.current * prices.get(s.target.name, price)
    return Usage(base_rate, token_rate, tokens_in_period, accrued_rate)


def _propose(seen: Seen, cycle: _Cycle) -> Proposal:
    """What one target asks for before the budget: demand (Control), hold (Hold) or its
    current replicas (Fixed)."""
    t = seen.target
    price = t.cost_per_replica_hour * cycle.multiplier
    if seen.kind == "Fixed":
        return Proposal(seen, None, None, seen.current, "Conflict", price)
    model = select_model(  # 2. service model
        t.performance.a, t.performance.b,
        fit_log_linear(seen.obs.quality_samples) if seen.obs.quality_samples else None,
    )
    wants: Recommendation | Hold
    if seen.kind == "Control":  # 3, 4, 6: demand, need, behaviour
        wants = recommend(t, seen.obs, cycle.spec.planning,
                          cycle.history.get(t.name, []), cycle.now, cycle.previous(t.name))
        return Proposal(seen, model, wants, wants.behaviour, wants.reason, price)
    wants = hold(seen, cycle.spec.fallback, cycle.outage)  # 7. outages
    return Proposal(seen, model, wants, wants.replicas, wants.reason, price)


def _decisions(allocation: Allocation, spec: TokenBudgetSpec, accounts: Accounts,
               fits: dict[str, ServiceFit | None]) -> dict[str, Decision]:
    """The Decision of every target, in spec order."""
    active = spec.mode == "Active"
    binding = any(o.reason in ("BudgetCapped", "BudgetExhausted") for o in allocation.outcomes)
    return {
        o.proposal.seen.target.name: _decision(
            o, active, decision_message(o, spec, accounts, allocation), binding,
            fits.get(o.proposal.seen.target.name), allocation.tokens_bind)
        for o in allocation.outcomes
    }


def _decision(o: Outcome, active: bool, message: str, binding: bool,
              fit: ServiceFit | None, tokens_bind: bool) -> Decision:
    """The Decision of one target; in DryRun the reason becomes DryRun (except Conflict)."""
    p = o.proposal
    steered = p.seen.kind != "Fixed"
    r = p.wants if isinstance(p.wants, Recommendation) else None
    return Decision(
        replicas=o.final,
        reason=o.reason if active or not steered else "DryRun",
        message=message if active or not steered else dry_run_message(o, message),
        scale=active and steered and o.final != p.seen.current,
        tokens_per_second=r.demand.observed if r else None,
        forecast_tokens_per_second=r.demand.forecast if r else None,
        queue_length=p.seen.obs.queue_length if r else None,
        cost_per_hour=o.final * p.price,
        model=p.model,
        needed_replicas=r.need if r else None,
        admission_tokens_per_second=_admission(o, r, binding, tokens_bind),
        service_model=fit,
        planned_utilization=r.demand.utilization if r else None,
    )


def _admission(o: Outcome, r: Recommendation | None, binding: bool,
               tokens_bind: bool) -> float | None:
    """Step 5's admission: while the budget binds (some target is BudgetCapped or
    BudgetExhausted), or while the target's demand is censored by the admission it already
    has (its served rate sits at the limit, so the demand above it is unknown and withdrawing
    the limit floods the queue: tight case attainment 31.2 % -> 38.4 % with this rule, 1
    seed), every target whose demand exceeds what its decided replicas serve gets the token
    rate they serve within the SLO times :data:`ADMISSION_SHARE`, counting only the ready
    ones. A target held within its tolerance band under a binding budget is included: more
    replicas are not coming, so the excess would only queue. None otherwise. (Lowering it
    further to drain a backlog within the TTFT target was measured and dropped: tight case
    31.2 % -> 28.3 % attainment.) While the token limit (``maxTokens``) is what holds the
    allocation back (``tokens_bind``), the share is at most the utilization the target was
    planned at, what the token cap counted its replicas at, so the admitted tokens stay within
    the cap."""
    if r is None or not (binding or r.demand.censored):
        return None
    t = o.proposal.seen.target
    serving = min(o.final, max(o.proposal.seen.obs.ready_replicas, 0))
    share = min(ADMISSION_SHARE, r.demand.utilization) if tokens_bind else ADMISSION_SHARE
    admitted = serving * t.capacity * share
    if r.demand.total <= admitted and o.final >= r.need:
        return None
    return admitted


def _planned_rate(allocation: Allocation, active: bool) -> float:
    """Cost rate (currency/h) of the replicas that will run: decided (Active) or current."""
    total = 0.0
    for o in allocation.outcomes:
        p = o.proposal
        applied = o.final if active and p.seen.kind != "Fixed" else p.seen.current
        total += applied * p.price
    return total


def _next_memory(cycle: _Cycle, memory: Memory, allocation: Allocation,
                 decisions: dict[str, Decision], accounts: Accounts) -> Memory:
    """The memory to persist: spend, compacted recommendations, outage start, scale times."""
    outcomes = allocation.outcomes
    window = cycle.spec.planning.scale_down_stabilization_seconds
    per_target = max(1, MAX_RECOMMENDATIONS // len(outcomes))
    now = cycle.now
    recommendations: list[RecommendationEntry] = []
    for o in outcomes:
        name = o.proposal.seen.target.name
        entries = cycle.history.get(name, [])
        if isinstance(o.proposal.wants, Recommendation):
            entries = [*entries,
                       RecommendationEntry(name, now, o.proposal.wants.recommendation)]
        if entries:
            recommendations.extend(compact_recommendations(entries, now, window, per_target))
    last_scale = {n: memory.last_scale_time[n] for n in decisions if n in memory.last_scale_time}
    for name, d in decisions.items():
        if d.scale:
            last_scale[name] = now
    last = memory.last_accounted
    return Memory(
        period_start=accounts.period_start,
        spend_cost=accounts.spent,
        spend_tokens=accounts.tokens,
        last_accounted=now if last is None or last < now else last,
        recommendations=tuple(recommendations),
        metrics_unavailable_since=cycle.outage.since,
        last_scale_time=last_scale,
        queues={n: d.queue_length for n, d in decisions.items() if d.queue_length is not None},
        admissions={n: d.admission_tokens_per_second for n, d in decisions.items()
                    if d.admission_tokens_per_second is not None},
        prices={o.proposal.seen.target.name: o.proposal.seen.target.cost_per_replica_hour
                for o in outcomes},
        forecast_scores=_scores(outcomes, memory),
    )


def _scores(outcomes: tuple[Outcome, ...], memory: Memory) -> dict[str, ForecastScore]:
    """Each target's forecast score after this cycle: a steered target's as its demand
    estimate left it, a held one's unchanged; removed targets dropped."""
    out: dict[str, ForecastScore] = {}
    for o in outcomes:
        name = o.proposal.seen.target.name
        wants = o.proposal.wants
        s = wants.demand.score if isinstance(wants, Recommendation) else None
        s = s or memory.forecast_scores.get(name)
        if s is not None:
            out[name] = s
    return out
