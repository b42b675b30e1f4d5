"""The projection to period end (core/outlook.py): the learned time-of-day demand, the planned
replicas, the price schedule and the budget's pacing; what status shows of it."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from core_world import NOW, flat, running, seen, spec, target, world

from tokenscale import api
from tokenscale.core.budget import accrue_cost
from tokenscale.core.outlook import (
    DAY_WEIGHT,
    LEVEL_WEIGHT,
    OVERHEAD_PRIOR_SECONDS,
    OVERHEAD_SECONDS,
    learn,
    learn_overhead,
)
from tokenscale.core.planner import plan
from tokenscale.core.types import (
    PROFILE_SLOTS,
    DemandProfile,
    Observation,
    RecommendationEntry,
)
from tokenscale.status import build_status, memory_from_status, significant

SIX = NOW.replace(hour=6)  # Wednesday 06:00 UTC, 18 h left in the day


def day_shape(night: float = 500.0, day: float = 4500.0) -> DemandProfile:
    """A profile that has seen ``night`` tokens/s before 08:00 and after 20:00, else ``day``."""
    return DemandProfile(slots=tuple(day if 16 <= j < 40 else night
                                     for j in range(PROFILE_SLOTS)))


def test_without_history_the_planned_replicas_run_at_the_current_demand() -> None:
    result = plan(spec(), world(llama=seen(4, 3500)), running(), NOW)
    assert result.spend.projected_cost == pytest.approx(4 * 1.0 * 12)  # 4 replicas, 12 h
    assert result.spend.run_rate_cost == pytest.approx(result.spend.projected_cost)
    assert result.spend.projected_tokens == pytest.approx(3500 * 12 * 3600)
    assert set(result.memory.demand_profiles) == {"llama"}


def test_a_learned_day_projects_the_peak_ahead_not_the_night_rate() -> None:
    memory = running(now=SIX, demand_profiles={"llama": day_shape()})
    obs = world(llama=seen(1, 500, token_rate_samples=flat(500, SIX)))
    result = plan(spec(), obs, memory, SIX)
    # 06-08 h at 1 replica, 08-20 h at ceil(4500 / 1000) = 5, 20-24 h at 1 (1 USD/h each)
    assert result.spend.projected_cost == pytest.approx(2 * 1 + 12 * 5 + 4 * 1)
    assert result.spend.run_rate_cost == pytest.approx(18 * 1)  # version 1: the night rate
    assert result.spend.projected_tokens == pytest.approx((6 * 500 + 12 * 4500) * 3600)


def test_todays_level_scales_the_profile_and_a_surprise_fades() -> None:
    profile = DemandProfile(slots=day_shape().slots, level=0.5)  # today runs at half
    memory = running(now=SIX, demand_profiles={"llama": profile})
    half = plan(spec(), world(llama=seen(1, 250, token_rate_samples=flat(250, SIX))), memory,
                SIX)
    assert half.spend.projected_cost == pytest.approx(2 * 1 + 12 * 3 + 4 * 1)  # ceil(2.25) = 3
    # a burst now (3,000 instead of 250 tokens/s) fades within hours: not 18 h at 3 replicas
    burst = plan(spec(), world(llama=seen(3, 3000, token_rate_samples=flat(3000, SIX))),
                 memory, SIX)
    assert half.spend.projected_cost < burst.spend.projected_cost < 2 * 3 + 12 * 3 + 4 * 3


def test_learning_folds_each_half_hour_into_its_slot_and_todays_level() -> None:
    zone = UTC
    ten = NOW.replace(hour=10)
    p = learn(None, zone, 1000.0, None, ten)
    for k in range(1, 62):  # 30 s cycles from 10:00 to 10:30:30
        p = learn(p, zone, 1000.0, ten + timedelta(seconds=30 * (k - 1)),
                  ten + timedelta(seconds=30 * k))
    assert p.slots[20] == pytest.approx(1000.0) and p.level == 1.0  # first sight sets it
    assert p.slot_start == ten + timedelta(minutes=30) and p.slot_seconds == pytest.approx(30)
    tomorrow = ten + timedelta(days=1)
    p = learn(p, zone, 2000.0, None, tomorrow)
    half = tomorrow + timedelta(minutes=30)
    p = learn(learn(p, zone, 2000.0, tomorrow, half), zone, 2000.0, half,
              half + timedelta(seconds=1))
    assert p.slots[20] == pytest.approx(1000.0 + DAY_WEIGHT * 1000.0)
    assert p.level == pytest.approx(1.0 + LEVEL_WEIGHT * (2.0 - 1.0))


def test_a_gap_longer_than_a_half_hour_is_not_filled_with_the_rate_after_it() -> None:
    zone = UTC
    start = NOW.replace(hour=10)
    p = learn(None, zone, 1000.0, None, start)
    p = learn(p, zone, 1000.0, start, start + timedelta(minutes=10))  # 10 min of 10:00-10:30
    after = start + timedelta(hours=3, minutes=10)  # the operator was down until 13:10
    p = learn(p, zone, 9000.0, start + timedelta(minutes=10), after)
    assert all(v < 0 for v in p.slots)  # 10 min is too little of a half hour; 10:30-13:00 unseen
    assert p.slot_start == after.replace(minute=0) and p.slot_seconds == pytest.approx(600)


def test_pacing_caps_the_projection_and_the_risk_gives_the_pace_to_stay_inside() -> None:
    s = spec(budget={"maxCost": 100})
    result = plan(s, world(llama=seen(4, 10_000)), running(spend_cost=50.0), NOW)
    assert result.decisions["llama"].reason == "BudgetCapped"
    assert result.spend.projected_cost == pytest.approx(100, rel=0.01)
    # the first interval runs the decision (4 replicas), then the need of 10
    assert result.spend.demand_cost == pytest.approx(50 + 4 * 30 / 3600 + 10 * (12 - 30 / 3600))
    risk = next(c for c in result.conditions if c.type == "BudgetAtRisk")
    assert risk.reason == "DemandExceedsBudget"
    assert "projected 100.00 of 100.00 USD (169.95 at the forecast demand) by period end" \
        in risk.message
    assert "to stay inside: at most 4.17 USD/h (planned now 4.00 USD/h) on average over the " \
           "12.0 h left" in risk.message


def test_a_peak_ahead_that_the_budget_cannot_pay_is_a_projected_overrun() -> None:
    s = spec(budget={"maxCost": 40})
    memory = running(now=SIX, demand_profiles={"llama": day_shape()})
    result = plan(s, world(llama=seen(1, 500, token_rate_samples=flat(500, SIX))), memory, SIX)
    assert result.decisions["llama"].replicas == 1  # affordable now: 40 / 18 h > 1 USD/h
    assert result.spend.demand_cost == pytest.approx(66)
    # pacing as the planner does it: 2 h at 1 USD/h, then 38 / 16 h = 2.375 USD/h through the
    # peak, then the night's 1 USD/h: 5.50 of the budget stay unspent
    assert result.spend.projected_cost == pytest.approx(2 + 12 * 2.375 + 4)
    risk = next(c for c in result.conditions if c.type == "BudgetAtRisk")
    assert (risk.status, risk.reason) == ("True", "ProjectedOverrun")
    assert "to stay inside: at most 2.22 USD/h" in risk.message
    assert result.phase == "BudgetAtRisk"


def test_dry_run_is_not_paced() -> None:
    s = spec(budget={"maxCost": 1000}, mode="DryRun")
    result = plan(s, world(llama=seen(9, 2000)), running(spend_cost=960.0), NOW)
    assert result.spend.projected_cost == pytest.approx(960 + 9 * 12)


@pytest.mark.parametrize("period", ["Week", "Month"])
def test_long_periods_price_every_slot_of_the_schedule(period: str) -> None:
    schedule = [{"days": ["Sat", "Sun"], "start": "00:00", "end": "24:00", "multiplier": 0.5},
                {"start": "00:00", "end": "07:30", "multiplier": 0.8}]
    s = spec(budget={"period": period}, pricing={"schedule": schedule})
    result = plan(s, world(llama=seen(3, 2500)), running(), NOW)
    expected = sum(c for _, c in accrue_cost(s, 3.0, NOW, result.period_end))
    assert result.spend.projected_cost == pytest.approx(expected, rel=1e-9)


def test_the_binding_limit_is_the_one_used_most_in_its_unit() -> None:
    tokens_only = spec(budget={"maxCost": None, "maxTokens": 10**9})
    result = plan(tokens_only, Observation({"llama": seen(2, 2000)}, 4e8), running(), NOW)
    assert result.binding is not None
    assert (result.binding.kind, result.binding.unit, result.binding.limit) == (
        "Tokens", "tokens", 1e9)
    assert result.binding.spent == 4e8
    assert result.binding.projected == pytest.approx(4e8 + 2000 * 12 * 3600)
    both = spec(budget={"maxCost": 1000, "maxTokens": 10**9})
    result = plan(both, Observation({"llama": seen(2, 2000)}, 4e8), running(), NOW)
    assert result.binding is not None and result.binding.kind == "Tokens"  # 0.49 vs 0.024
    status, _ = build_status(result, Observation({}), api.TokenBudgetStatus(), NOW, 1)
    assert status.budget is not None and status.budget.display == "1G tokens"
    cost = plan(spec(budget={"maxCost": 480}), world(llama=seen(2, 2000)), running(), NOW)
    status, _ = build_status(cost, Observation({}), api.TokenBudgetStatus(), NOW, 1)
    assert status.budget is not None and status.budget.display == "480 USD"
    assert status.budget.spent == cost.spend.cost
    assert status.budget.projected == cost.spend.projected_cost


def test_the_profile_survives_a_restart_and_never_forces_a_patch() -> None:
    shape = replace(day_shape(), overhead=1.3, overhead_need=5000.0)
    memory = running(now=SIX, demand_profiles={"llama": shape})
    result = plan(spec(), world(llama=seen(1, 500, token_rate_samples=flat(500, SIX))), memory,
                  SIX + timedelta(seconds=30))
    status, _ = build_status(result, Observation({}), api.TokenBudgetStatus(), SIX, 1)
    wire = api.dump(status)
    restored = memory_from_status(api.parse_status(wire)).demand_profiles["llama"]
    assert restored.slots == day_shape().slots
    assert restored.slot_start == SIX and restored.slot_seconds == pytest.approx(30)
    learned = result.memory.demand_profiles["llama"]
    assert (restored.overhead, restored.overhead_need) == (
        pytest.approx(learned.overhead, rel=1e-3), pytest.approx(learned.overhead_need, rel=1e-3))
    assert restored.overhead_need > 0
    moved = {**wire, "demandProfiles": [{**wire["demandProfiles"][0], "slotSeconds": 60.0}]}
    assert significant(moved) == significant(wire)
    # a bad need's sum loses that figure only, not the profile's slots
    odd = {**wire, "demandProfiles": [{**wire["demandProfiles"][0], "overheadNeed": -1.0}]}
    kept = memory_from_status(api.parse_status(odd)).demand_profiles["llama"]
    assert kept.slots == day_shape().slots and kept.overhead_need == 0.0
    broken = {**wire, "demandProfiles": [{"target": "llama", "tokensPerSecond": [1.0]}]}
    partial = memory_from_status(api.parse_status(broken)).demand_profiles["llama"]
    assert partial.slots[0] == 1.0 and partial.slots[1:] == (-1.0,) * (PROFILE_SLOTS - 1)


def test_a_target_removed_from_the_spec_drops_its_profile() -> None:
    s = spec([target("a"), target("b")])
    memory = running(demand_profiles={"gone": day_shape()})
    result = plan(s, world(a=seen(1, 500), b=seen(1, metrics_error="Timeout")), memory,
                  NOW + timedelta(seconds=30))
    assert set(result.memory.demand_profiles) == {"a"}  # b has no usable metrics: nothing seen
    assert datetime(2026, 3, 4, 12, tzinfo=UTC) == result.memory.demand_profiles["a"].slot_start


def test_a_target_below_one_replicas_worth_learns_no_overhead() -> None:
    """One replica (the floor the demand needs) for 50 tok/s of a 1,000 tok/s replica: the
    unrounded need is 0.05, but the replica is no overhead; the projection's overhead stays at
    1, so a later rise is projected at its need, not three times it."""
    s = spec([target(minReplicas=0)])
    memory = running()
    at = NOW
    for _ in range(120):
        at += timedelta(seconds=30)
        result = plan(s, world(llama=seen(1, 50, token_rate_samples=flat(50, at))), memory, at)
        assert result.decisions["llama"].replicas == 1
        memory = result.memory
    assert memory.demand_profiles["llama"].overhead == pytest.approx(1.0)


def test_the_overhead_of_what_the_planner_runs_over_the_mean_need_is_learned() -> None:
    # a stabilized target keeps 4 replicas for a mean demand that needs 1.5 (unrounded): after
    # an hour of such cycles the projection runs ceil(1.5 x 2.05) = 4, not 2
    s = spec([target(coldStartSeconds=3600)], planning={"scaleDownStabilizationSeconds": 3600})
    memory = running(now=NOW, recommendations=(RecommendationEntry("llama", NOW, 4),))
    at = NOW
    for _ in range(120):
        at += timedelta(seconds=30)
        obs = world(llama=seen(4, 1500, token_rate_samples=flat(1500, at)))
        result = plan(s, obs, memory, at)
        assert result.decisions["llama"].replicas == 4
        memory = result.memory
    # the ratio of the sums: the overhead so far (1) as an hour's worth of the need, then an
    # hour of 4 replicas for 1.5, all fading over a day
    fade = [math.exp(-30 * k / OVERHEAD_SECONDS) for k in range(120)]
    prior = 1.5 * OVERHEAD_PRIOR_SECONDS * math.exp(-3600 / OVERHEAD_SECONDS)
    learned = (prior + 4 * 30 * sum(fade)) / (prior + 1.5 * 30 * sum(fade))
    assert memory.demand_profiles["llama"].overhead == pytest.approx(learned, rel=1e-6)
    # ceil(1.5 x 1.84) = 3 replicas for the 11 hours left, not 2
    assert result.spend.projected_cost - result.spend.cost == pytest.approx(3 * 11, rel=0.05)


def test_the_overhead_weighs_each_cycle_by_its_need() -> None:
    """A day at 11 replicas for a need of 10, then a night at 2 for a need of 1: in the
    morning the overhead is the day's 1.1 or near it, not the night's 2 (each cycle counts
    by its need), and the first cycles move it from 1 as an hour's worth would."""
    p = DemandProfile()
    for _ in range(16 * 120):
        p = learn_overhead(p, 11, 10.0, 30.0)
    assert p.overhead == pytest.approx(1.1, abs=0.01)
    for _ in range(6 * 120):
        p = learn_overhead(p, 2, 1.0, 30.0)
    assert 1.1 < p.overhead < 1.25
    first = learn_overhead(DemandProfile(), 3, 1.0, 30.0)  # a start-up's 3 for a need of 1
    assert first.overhead == pytest.approx((3600 + 3 * 30) / (3600 + 30), rel=1e-3)
    # below one replica's worth the replicas are a floor: counted at a need of 1
    assert learn_overhead(DemandProfile(), 1, 0.05, 30.0).overhead == pytest.approx(1.0)


def test_a_gap_before_a_cycle_is_not_learned_as_that_cycles_overhead() -> None:
    """After a 12-hour gap (a restart) one cycle adds one interval's worth at most: a day
    learned at an overhead of 2 stays there, not the gap's 12 hours of this cycle's 1.2."""
    learned = replace(DemandProfile(), overhead=2.0, overhead_need=10.0 * 86400 * 0.6)
    at = NOW + timedelta(hours=12)
    memory = running(now=NOW, demand_profiles={"llama": learned})
    result = plan(spec(), world(llama=seen(3, 2500, token_rate_samples=flat(2500, at))),
                  memory, at)
    assert result.decisions["llama"].replicas == 3  # 3 for a need of 2.5: 1.2
    overhead = result.memory.demand_profiles["llama"].overhead
    assert 1.99 < overhead < 2.0
