"""Planner step 5's admission: a target the budget holds below its need publishes the token
rate its affordable, ready replicas serve within the SLO (plain inputs)."""

from __future__ import annotations

import pytest
from core_world import NOW, noisy, running, seen, spec, target, world

from tokenscale.core.planner import ADMISSION_SHARE, plan


@pytest.mark.parametrize(
    ("case", "current", "budget", "utilization", "expected"),
    [
        # demand 5,000 tok/s needs 5 replicas; 36/day paces ~3 replicas: admit 3 x 1,000
        # (x the admission share, a margin for the service model's error)
        ("capped-at-three", 3, {"maxCost": 36}, 1.0, 3000.0 * ADMISSION_SHARE),
        # only 2 of the affordable replicas are ready: admit what 2 serve
        ("capped-two-ready", 2, {"maxCost": 36}, 1.0, 2000.0 * ADMISSION_SHARE),
        # at utilisation 0.8 the need grows to 7; admission is not sized by the planning
        # utilisation (the admitted rate is capped every second, it cannot swing)
        ("capped-with-margin", 3, {"maxCost": 36}, 0.8, 3000.0 * ADMISSION_SHARE),
        # ample budget: no limit to publish
        ("ample", 3, {"maxCost": 1e6}, 1.0, None),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_admission_of_a_capped_target(case: str, current: int, budget: dict[str, float],
                                      utilization: float, expected: float | None) -> None:
    s = spec([target()], budget=budget, planning={"targetUtilization": utilization})
    result = plan(s, world(llama=seen(current, 5000)), running(), NOW)
    decision = result.decisions["llama"]
    if expected is None:
        assert decision.reason == "DemandDriven"
        assert decision.admission_tokens_per_second is None
    else:
        assert decision.reason == "BudgetCapped", decision.message
        assert decision.needed_replicas is not None
        assert decision.replicas < decision.needed_replicas
        serving = min(decision.replicas, current)
        assert decision.admission_tokens_per_second == pytest.approx(expected)
        assert decision.admission_tokens_per_second == pytest.approx(
            serving * 1000 * ADMISSION_SHARE)


def test_under_a_binding_budget_a_target_held_within_tolerance_is_admitted_too() -> None:
    """b's need (1,800 tok/s and its noise) is within its band (8 %) of its 2 replicas, so it
    is not scaled; but with the budget binding (a is capped) no replica is coming, and the
    excess would only queue."""
    s = spec([target("a"), target("b")], budget={"maxCost": 48})
    b_seen = seen(2, token_rate_samples=noisy(1800, 0.08))
    result = plan(s, world(a=seen(2, 6000), b=b_seen), running(), NOW)
    a, b = result.decisions["a"], result.decisions["b"]
    admitted = 2000.0 * ADMISSION_SHARE
    assert a.reason == "BudgetCapped" and a.admission_tokens_per_second == admitted
    assert b.reason == "WithinTolerance" and b.admission_tokens_per_second == admitted
    # the same b without a binding budget: the tolerance band is the HPA's, nothing admitted
    ample = plan(spec([target("a"), target("b")]), world(a=seen(2, 6000), b=b_seen),
                 running(), NOW)
    assert ample.decisions["b"].admission_tokens_per_second is None


def test_the_token_cap_counts_replicas_at_the_utilization_they_are_planned_at() -> None:
    """A noiseless 8,750 tok/s is planned at 0.88 (the ceiling 0.8 x 1.1): 10 replicas would
    serve 8,800 tok/s, above the 8,000 tok/s the token budget leaves for the 12 h left, so
    the budget caps the target at 9 and admits what they were planned to serve, 7,920 tok/s
    (with a token limit not ADMISSION_SHARE of their capacity, 8,550 tok/s, past the cap).
    Counted at targetUtilization (10 x 800 = 8,000) the cap would not bind and 8,750 tok/s
    would be served."""
    s = spec(budget={"maxCost": None, "maxTokens": 8000 * 12 * 3600},
             planning={"targetUtilization": 0.8})
    result = plan(s, world(llama=seen(9, 8750)), running(), NOW)
    d = result.decisions["llama"]
    assert (d.replicas, d.reason) == (9, "BudgetCapped")
    assert d.admission_tokens_per_second == pytest.approx(9 * 1000 * 0.88)
    assert d.admission_tokens_per_second <= result.affordable_tokens_per_second


def test_a_token_limit_that_does_not_bind_leaves_admission_at_its_share() -> None:
    """Both limits set, the cost binding (4 one-currency/h replicas affordable) and the token
    limit far away: admission is the replicas' capacity x ADMISSION_SHARE, as for a cost-only
    budget, not the planned utilization the token cap would count them at."""
    s = spec(budget={"maxCost": 48, "maxTokens": 10**13}, planning={"targetUtilization": 0.8})
    result = plan(s, world(llama=seen(9, 8750)), running(), NOW)
    d = result.decisions["llama"]
    assert (d.replicas, d.reason) == (4, "BudgetCapped")
    assert d.admission_tokens_per_second == pytest.approx(4 * 1000 * ADMISSION_SHARE)
