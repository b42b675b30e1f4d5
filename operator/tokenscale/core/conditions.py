"""The conditions and the phase of a TokenBudget after one plan.

Conditions (type: True reasons / False reason):

* MetricsAvailable: MetricsFresh / MetricsUnavailable or FallbackActive.
* BudgetExhausted: CostBudgetSpent, TokenBudgetSpent / BudgetRemaining.
* BudgetAtRisk: Exhausted, MinReplicasOverBudget, DemandExceedsBudget, ProjectedOverrun (the
  forecast demand would cost more than a limit before the period ends) / WithinBudget. The
  message gives the projection to period end (:mod:`~tokenscale.core.outlook`) and, when at
  risk, the average pace that stays inside each limit over the time left next to the pace now.
* ScalingLimited: the first limiting target's reason (ScaleUpLimited, MinReplicas,
  MaxReplicas, BudgetCapped, BudgetExhausted, DiminishingReturns) / DesiredWithinRange.
* Conflict: ConflictingAutoscaler, TargetNotScalable / NoConflict.
* Ready: Reconciled / TargetNotScalable, ConflictingAutoscaler, MetricsUnavailable.

Target reasons are the ones before DryRun. Phase: BudgetExhausted > Degraded (metrics
unavailable or a Conflict target) > BudgetAtRisk > DryRun > Active.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from tokenscale.api import Phase, Reason, TokenBudgetSpec
from tokenscale.core.budget import Accounts
from tokenscale.core.capacity import Recommendation
from tokenscale.core.messages import conflict_message, money, rate
from tokenscale.core.outage import Outage
from tokenscale.core.pacing import Allocation, Outcome
from tokenscale.core.types import ConditionValue, Spend

#: Reasons that mean "the count is limited by something other than demand".
LIMITING_REASONS: frozenset[Reason] = frozenset(
    {"ScaleUpLimited", "MinReplicas", "MaxReplicas", "BudgetCapped", "BudgetExhausted",
     "DiminishingReturns"}
)


class Situation(NamedTuple):
    """What the conditions summarise: the targets after the budget and the budget's state."""

    spec: TokenBudgetSpec
    allocation: Allocation
    accounts: Accounts
    outage: Outage
    spend: Spend
    planned_rate: float  # currency/h at the decided (Active) or current (DryRun) replicas


def conditions(s: Situation) -> tuple[tuple[ConditionValue, ...], Phase]:
    """The conditions (in a fixed order) and the phase."""
    outcomes = s.allocation.outcomes
    unavailable = [o for o in outcomes if o.proposal.seen.kind == "Hold"]
    fixed = [o for o in outcomes if o.proposal.seen.kind == "Fixed"]
    spent_text = _spent_text(s)
    metrics = _metrics(unavailable, s.outage)
    risk = _risk(s, spent_text)
    out = (
        metrics,
        _exhausted(s, spent_text),
        risk,
        _limited(outcomes),
        _conflict(fixed),
        _ready(s, fixed, unavailable, metrics),
    )
    return out, _phase(s, bool(unavailable or fixed), risk)


def _phase(s: Situation, degraded: bool, risk: ConditionValue) -> Phase:
    if s.accounts.exhausted:
        return "BudgetExhausted"
    if degraded:
        return "Degraded"
    if risk.status == "True":
        return "BudgetAtRisk"
    if s.spec.mode == "DryRun":
        return "DryRun"
    return "Active"


def _metrics(unavailable: Sequence[Outcome], outage: Outage) -> ConditionValue:
    if not unavailable:
        return ConditionValue("MetricsAvailable", "True", "MetricsFresh",
                          "token metrics are fresh for all observed targets")
    listed = ", ".join(f"{o.proposal.seen.target.name}: {_error(o)}" for o in unavailable)
    return ConditionValue(
        "MetricsAvailable", "False",
        "FallbackActive" if outage.fallback_active else "MetricsUnavailable",
        f"no usable token metrics for {outage.seconds:.0f}s ({listed}); "
        + ("running fallback replicas" if outage.fallback_active else "holding replicas"),
    )


def _error(o: Outcome) -> str:
    obs = o.proposal.seen.obs
    error = obs.metrics_error or "Empty"
    return f"{error}, {obs.metrics_detail}" if obs.metrics_detail else error


def _spent_text(s: Situation) -> str:
    budget, cur = s.spec.budget, s.spec.budget.currency
    limits = []
    if budget.max_cost is not None:
        limits.append(f"spent {money(s.accounts.spent)} of {money(budget.max_cost)} {cur}")
    if budget.max_tokens is not None:
        limits.append(f"{rate(s.accounts.tokens)} of {rate(budget.max_tokens)} tokens")
    return ", ".join(limits)


def _exhausted(s: Situation, spent_text: str) -> ConditionValue:
    if not s.accounts.exhausted:
        return ConditionValue("BudgetExhausted", "False", "BudgetRemaining", spent_text)
    return ConditionValue(
        "BudgetExhausted", "True",
        "CostBudgetSpent" if s.accounts.cost_exhausted else "TokenBudgetSpent",
        f"{spent_text}; onExhausted={s.spec.budget.on_exhausted} until the period ends",
    )


def _projection_text(s: Situation) -> str:
    """The projection to period end of each limit, and the forecast demand's where the budget
    holds the spend below it."""
    budget, cur, spend = s.spec.budget, s.spec.budget.currency, s.spend
    parts = []
    if budget.max_cost is not None:
        text = f"projected {money(spend.projected_cost)} of {money(budget.max_cost)} {cur}"
        if spend.demand_cost is not None and spend.demand_cost > spend.projected_cost * 1.005:
            text += f" ({money(spend.demand_cost)} at the forecast demand)"
        parts.append(text)
    if budget.max_tokens is not None:
        text = f"projected {rate(spend.projected_tokens)} of {rate(budget.max_tokens)} tokens"
        if spend.demand_tokens is not None and spend.demand_tokens > spend.projected_tokens * 1.005:
            text += f" ({rate(spend.demand_tokens)} at the forecast demand)"
        parts.append(text)
    return ", ".join(parts) + " by period end"


def _pace_text(s: Situation) -> str:
    """The pace that stays inside each limit over the time left, next to the pace of now."""
    budget, cur, accounts, spend = s.spec.budget, s.spec.budget.currency, s.accounts, s.spend
    hours = max(accounts.hours_left, 0.0)
    parts = []
    if budget.max_cost is not None:
        parts.append(f"at most {money(accounts.affordable)} {cur}/h (planned now "
                     f"{money(s.planned_rate)} {cur}/h)")
    if budget.max_tokens is not None:
        left = max(1.0, hours * 3600.0)
        now_rate = ((spend.run_rate_tokens - spend.tokens) / left
                    if spend.run_rate_tokens is not None else 0.0)
        parts.append(f"at most {rate(accounts.token_cap)} tokens/s (now {rate(now_rate)} "
                     "tokens/s)")
    return f"to stay inside: {' and '.join(parts)} on average over the {hours:.1f} h left"


def _over(limit: float | None, value: float | None) -> bool:
    return limit is not None and value is not None and value > limit * (1 + 1e-9)


def _risk(s: Situation, spent_text: str) -> ConditionValue:
    budget, cur, spend = s.spec.budget, s.spec.budget.currency, s.spend
    if s.accounts.exhausted:
        return ConditionValue("BudgetAtRisk", "True", "Exhausted", spent_text)
    projection_text = _projection_text(s)
    if s.allocation.floors_over:
        return ConditionValue("BudgetAtRisk", "True", "MinReplicasOverBudget",
                          f"minReplicas alone exceed the affordable rate "
                          f"({money(s.planned_rate)} > {money(s.accounts.affordable)} "
                          f"{cur}/h); {projection_text}")
    capped = [o.proposal.seen.target.name for o in s.allocation.outcomes
              if o.reason == "BudgetCapped"]
    if capped:
        return ConditionValue("BudgetAtRisk", "True", "DemandExceedsBudget",
                          f"budget caps {', '.join(capped)}; {projection_text}; "
                          f"{_pace_text(s)}")
    demand_cost = spend.demand_cost if spend.demand_cost is not None else spend.projected_cost
    demand_tokens = (spend.demand_tokens if spend.demand_tokens is not None
                     else spend.projected_tokens)
    if _over(budget.max_cost, demand_cost) or _over(budget.max_tokens, demand_tokens):
        return ConditionValue("BudgetAtRisk", "True", "ProjectedOverrun",
                              f"{projection_text}; {_pace_text(s)}")
    return ConditionValue("BudgetAtRisk", "False", "WithinBudget", projection_text)


def _wants(o: Outcome) -> int:
    wants = o.proposal.wants
    return wants.need if isinstance(wants, Recommendation) else o.cap


def _limited(outcomes: Sequence[Outcome]) -> ConditionValue:
    limited = [o for o in outcomes if o.reason in LIMITING_REASONS]
    if not limited:
        return ConditionValue("ScalingLimited", "False", "DesiredWithinRange",
                          "every target is at its demand-driven count")
    return ConditionValue(
        "ScalingLimited", "True", limited[0].reason,
        "; ".join(f"{o.proposal.seen.target.name}: {o.reason} at {o.final} (wants {_wants(o)})"
                  for o in limited),
    )


def _conflict_reason(fixed: Sequence[Outcome]) -> str:
    return ("ConflictingAutoscaler" if any(o.proposal.seen.obs.conflict for o in fixed)
            else "TargetNotScalable")


def _conflict(fixed: Sequence[Outcome]) -> ConditionValue:
    if not fixed:
        return ConditionValue("Conflict", "False", "NoConflict",
                          "no other autoscaler on the targets")
    return ConditionValue(
        "Conflict", "True", _conflict_reason(fixed),
        "; ".join(f"{o.proposal.seen.target.name}: {conflict_message(o.proposal.seen)}"
                  for o in fixed),
    )


def _ready(s: Situation, fixed: Sequence[Outcome], unavailable: Sequence[Outcome],
           metrics: ConditionValue) -> ConditionValue:
    outcomes = s.allocation.outcomes
    if fixed:
        return ConditionValue("Ready", "False", _conflict_reason(fixed),
                          f"{len(fixed)} of {len(outcomes)} targets cannot be scaled")
    if unavailable:
        return ConditionValue("Ready", "False", "MetricsUnavailable", metrics.message)
    desired = sum(o.final for o in outcomes)
    return ConditionValue("Ready", "True", "Reconciled",
                      f"{len(outcomes)} targets planned: {desired} replicas, "
                      f"{money(s.planned_rate)} {s.spec.budget.currency}/h")
