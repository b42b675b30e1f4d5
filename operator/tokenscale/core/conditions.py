"""The conditions and the phase of a TokenBudget after one plan.

Conditions (type: True reasons / False reason):

* MetricsAvailable: MetricsFresh / MetricsUnavailable or FallbackActive.
* BudgetExhausted: CostBudgetSpent, TokenBudgetSpent / BudgetRemaining.
* BudgetAtRisk: Exhausted, MinReplicasOverBudget, DemandExceedsBudget, ProjectedOverrun /
  WithinBudget.
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
    return o.proposal.seen.obs.metrics_error or "Empty"


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


def _risk(s: Situation, spent_text: str) -> ConditionValue:
    budget, cur, spend = s.spec.budget, s.spec.budget.currency, s.spend
    if s.accounts.exhausted:
        return ConditionValue("BudgetAtRisk", "True", "Exhausted", spent_text)
    projection = []
    if budget.max_cost is not None:
        projection.append(f"projected {money(spend.projected_cost)} of "
                          f"{money(budget.max_cost)} {cur}")
    if budget.max_tokens is not None:
        projection.append(f"projected {rate(spend.projected_tokens)} of "
                          f"{rate(budget.max_tokens)} tokens")
    projection_text = ", ".join(projection)
    if s.allocation.floors_over:
        return ConditionValue("BudgetAtRisk", "True", "MinReplicasOverBudget",
                          f"minReplicas alone exceed the affordable rate "
                          f"({money(s.planned_rate)} > {money(s.accounts.affordable)} "
                          f"{cur}/h); {projection_text}")
    capped = [o.proposal.seen.target.name for o in s.allocation.outcomes
              if o.reason == "BudgetCapped"]
    if capped:
        return ConditionValue("BudgetAtRisk", "True", "DemandExceedsBudget",
                          f"budget caps {', '.join(capped)}; {projection_text}")
    if (budget.max_cost is not None and spend.projected_cost > budget.max_cost * (1 + 1e-9)) or (
            budget.max_tokens is not None
            and spend.projected_tokens > budget.max_tokens * (1 + 1e-9)):
        return ConditionValue("BudgetAtRisk", "True", "ProjectedOverrun", projection_text)
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
