"""DESIGN.md step 5, **Budget pacing and allocation**: what the budget lets each target run.

Input: one :class:`Proposal` per target (what demand, the outage rule or a conflict asks, from
steps 2-4, 6 and 7), and the :class:`~tokenscale.core.budget.Accounts` of step 1.

* **Value cap.** ``minMarginalValue > 0`` caps a Control target where the next replica's value
  per currency/h falls below it, even within budget (DiminishingReturns), never below
  minReplicas.
* **Pacing.** The affordable cost rate (remaining cost / hours left, compared with replica
  prices × the multiplier *now*, so cheap hours buy more replicas) and the token cap (served
  capacity ``replicas × capacity within the SLO × planned utilization`` at most remaining
  tokens / seconds left; the planned utilization is the one the target was sized at this
  cycle, :func:`planned_utilization`).
* **Allocation** (:func:`~tokenscale.core.costmodel.allocate`): the proposals (after the value
  cap) stand if they fit; else greedy by marginal value from the minReplicas floors
  (BudgetCapped). Budget cuts apply at once, so a budget-forced scale-down is never delayed.
  Fixed targets are a floor at their current replicas.
* **Exhausted** (BudgetExhausted): ``ScaleToMinimum`` sets every target to minReplicas at once;
  ``Hold`` keeps the current replicas (scale-downs the demand allows still happen, scale-ups do
  not).

The budget outranks minMarginalValue: when the floors alone overrun it, a target held at its
floor is BudgetCapped even if the value cut-off agreed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from tokenscale.api import OnExhausted, Reason, TokenBudgetSpec
from tokenscale.core.budget import Accounts
from tokenscale.core.capacity import Recommendation
from tokenscale.core.costmodel import AllocationItem, allocate, marginal_value, value_cap
from tokenscale.core.outage import Hold, Seen
from tokenscale.core.types import ModelFit


class Proposal(NamedTuple):
    """One target before the budget: what it asks for and why."""

    seen: Seen
    model: ModelFit | None  # None for Fixed targets
    wants: Recommendation | Hold | None  # by kind: Control | Hold | Fixed
    behaviour: int  # replicas asked for
    reason: Reason
    price: float  # currency/h per replica at the multiplier of now


class Outcome(NamedTuple):
    """One target after the budget."""

    proposal: Proposal
    cap: int  # the proposal after the value cap
    final: int  # replicas decided
    next_value: float | None  # the first cut replica's value when minMarginalValue capped
    reason: Reason  # before DryRun


class Allocation(NamedTuple):
    """Step 5's result."""

    outcomes: tuple[Outcome, ...]
    floors_cost: float  # currency/h of every target at its floor
    floors_tokens: float  # tokens/s served by every target at its floor
    floors_over: bool  # the floors alone exceed the affordable rates
    #: the token limit holds some target back (without it the allocation would differ), or
    #: a token-limited budget is exhausted: admission then counts at the planned utilization
    tokens_bind: bool = False


def pace(proposals: Sequence[Proposal], spec: TokenBudgetSpec, accounts: Accounts) -> Allocation:
    """Value caps, then the budget's allocation (or the exhausted rule), then the reasons."""
    planning = spec.planning
    items: list[AllocationItem] = []
    cuts: list[float | None] = []
    for p in proposals:
        cap, cut = _value_cap(p, planning.min_marginal_value)
        items.append(_item(p, cap, planned_utilization(p, planning.target_utilization)))
        cuts.append(cut)
    floors_cost = sum(it.floor * it.cost_per_hour for it in items)
    floors_tokens = sum(it.floor * it.tokens_per_second for it in items)
    floors_over = floors_cost > accounts.affordable or floors_tokens > accounts.token_cap
    exhausted = accounts.exhausted
    token_limited = math.isfinite(accounts.token_cap)
    if exhausted:
        finals = [_exhausted_count(p, it, spec.budget.on_exhausted)
                  for p, it in zip(proposals, items, strict=True)]
        tokens_bind = token_limited
    else:
        finals = allocate(items, accounts.affordable, accounts.token_cap)
        tokens_bind = token_limited and finals != allocate(items, accounts.affordable)
    outcomes = []
    for p, it, cut, final in zip(proposals, items, cuts, finals, strict=True):
        budget_cut = final < it.cap or (floors_over and final < p.behaviour)
        outcomes.append(Outcome(p, it.cap, final, cut, _reason(p, cut, budget_cut, exhausted)))
    return Allocation(tuple(outcomes), floors_cost, floors_tokens, floors_over, tokens_bind)


def _value_cap(p: Proposal, min_value: float) -> tuple[int, float | None]:
    """``(cap, value of replica cap+1)`` where minMarginalValue cuts a Control target below its
    proposal (never below min), else ``(proposal, None)``."""
    if p.seen.kind != "Control" or p.model is None:
        return p.behaviour, None
    t = p.seen.target
    vcap = value_cap(t.weight, p.model.b, p.price, min_value)
    if vcap is None or max(t.min_replicas, vcap) >= p.behaviour:
        return p.behaviour, None
    cap = max(t.min_replicas, vcap)
    return cap, marginal_value(t.weight, p.model.b, p.price, cap)


def planned_utilization(p: Proposal, target_utilization: float) -> float:
    """The share of the capacity within the SLO the planner sized this target at this cycle:
    its demand's (above ``target_utilization`` where the band narrowed to the demand's noise,
    :func:`~tokenscale.core.capacity.noise_band`), else ``target_utilization``."""
    if isinstance(p.wants, Recommendation):
        return p.wants.demand.utilization
    return target_utilization


def _item(p: Proposal, cap: int, utilization: float) -> AllocationItem:
    t = p.seen.target
    return AllocationItem(
        floor=p.seen.current if p.seen.kind == "Fixed" else t.min_replicas,
        cap=cap,
        cost_per_hour=p.price,
        tokens_per_second=t.capacity * utilization,
        value=t.weight * (p.model.b if p.model is not None else 0.0),
    )


def _exhausted_count(p: Proposal, item: AllocationItem, on_exhausted: OnExhausted) -> int:
    if p.seen.kind == "Fixed":
        return p.seen.current
    if on_exhausted == "ScaleToMinimum":
        return item.floor
    return max(item.floor, min(p.seen.current, item.cap))


def _reason(p: Proposal, cut: float | None, budget_cut: bool, exhausted: bool) -> Reason:
    """Precedence: Conflict > BudgetExhausted > BudgetCapped > DiminishingReturns > the
    proposal's reason."""
    if p.seen.kind == "Fixed":
        return "Conflict"
    if exhausted:
        return "BudgetExhausted"
    if budget_cut:
        return "BudgetCapped"
    if cut is not None:
        return "DiminishingReturns"
    return p.reason
