"""The planner, table-driven: inputs / world / expected, one row per behaviour and reason."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from core_world import NOW, flat, noisy, ramp, recs, running, seen, spec, target, world

from tokenscale.api import REASONS, TokenBudgetSpec
from tokenscale.core.planner import plan
from tokenscale.core.types import Memory, Observation, Plan


@dataclass(frozen=True)
class Case:
    """One row: the spec, what the world looks like, what the single target should get."""

    id: str
    spec: TokenBudgetSpec
    world: Observation
    replicas: int
    reason: str
    scale: bool
    memory: Memory = field(default_factory=running)
    message_has: tuple[str, ...] = ()


def _case(id: str, world_: Observation, replicas: int, reason: str, scale: bool,
          memory: Memory | None = None, message_has: tuple[str, ...] = (),
          **spec_args: Any) -> Any:
    return pytest.param(
        Case(id, spec(**spec_args), world_, replicas, reason, scale,
             memory if memory is not None else running(), message_has),
        id=id,
    )


# A 12-hour remainder of the Day period: maxCost 36 leaves an affordable 3 currency/h,
# i.e. three 1-currency/h replicas; maxTokens 129.6e6 leaves 3000 tok/s (three replicas).
CASES = [
    _case("demand-up", world(llama=seen(2, 4500)), 5, "DemandDriven", True,
          message_has=("4,500 tok/s",)),
    _case("demand-down-no-history", world(llama=seen(5, 2500)), 3, "DemandDriven", True),
    _case("demand-steady", world(llama=seen(3, 3000)), 3, "DemandDriven", False),
    # utilization 1 (these tests' default): the ceiling 1 x 1.1 is above the full capacity
    # within the SLO, so the user's band stands: need 5.4 of 5 replicas is kept
    _case("within-tolerance-keeps-current", world(llama=seen(5, 5400)), 5, "WithinTolerance",
          False, message_has=("within 10.0%",)),
    # demand noise of 3 % at utilization 0.8: the band narrows from the tolerance (10 %) to
    # the margin, 2.33 x 3.1 % = 7.1 % of the demand, the plan rises to 0.88 / 1.071 = 0.821;
    # need 5.15 of 5 replicas is kept
    _case("within-the-noise-band-keeps-current",
          world(llama=seen(5, token_rate_samples=noisy(3950, 0.03))), 5, "WithinTolerance",
          False, message_has=("within 7.1%", "0.821 utilization"),
          planning={"targetUtilization": 0.8}),
    # a noiseless demand leaves no band: 4,300 tok/s at 0.88 need 4.89 of 6 replicas, so one
    # is released (the user's band would keep 6: 5.38 at 0.8 is within 10 %)
    _case("noiseless-demand-no-band", world(llama=seen(6, 4300)), 5, "DemandDriven", True,
          message_has=("band 0.0%",), planning={"targetUtilization": 0.8}),
    # latency above the SLO now: one replica more at once, whatever the demand says
    _case("slo-breach-adds-one", world(llama=seen(5, 5400, recent_itl_seconds=0.07)), 6,
          "SloBreach", True, message_has=("ITL 70 ms of 50 ms",)),
    _case("outside-tolerance-scales", world(llama=seen(5, 3900)), 4, "DemandDriven", True),
    _case("scale-up-limited-plus-four", world(llama=seen(2, 9000)), 6, "ScaleUpLimited", True),
    _case("scale-up-limited-doubling", world(llama=seen(8, 30000)), 16, "ScaleUpLimited", True,
          targets=[target(maxReplicas=40)]),
    _case("stabilizing-holds", world(llama=seen(5, 2500)), 5, "StabilizingScaleDown", False,
          memory=running(recommendations=recs(("llama", 120, 5))),
          targets=[target(coldStartSeconds=300)]),
    _case("stabilizing-partial", world(llama=seen(5, 2500)), 4, "StabilizingScaleDown", True,
          memory=running(recommendations=recs(("llama", 100, 4), ("other", 10, 9))),
          targets=[target(coldStartSeconds=300)]),
    _case("stabilization-window-expired", world(llama=seen(5, 2500)), 3, "DemandDriven", True,
          memory=running(recommendations=recs(("llama", 400, 5))),
          targets=[target(coldStartSeconds=300)]),
    # ski rental: a replica is kept one cold start (90 s), not the user's 300 s window
    _case("kept-one-cold-start", world(llama=seen(5, 2500)), 5, "StabilizingScaleDown", False,
          memory=running(recommendations=recs(("llama", 60, 5))),
          targets=[target(coldStartSeconds=90)]),
    _case("released-after-one-cold-start", world(llama=seen(5, 2500)), 3, "DemandDriven",
          True, memory=running(recommendations=recs(("llama", 120, 5))),
          targets=[target(coldStartSeconds=90)]),
    # ... unless the demand rose by a replica's worth within one cold start lately (bursty):
    # then the SLO risk of releasing keeps the user's whole 300 s window
    _case("bursty-keeps-the-user-window",
          world(llama=seen(5, 2500, token_rate_samples=(
              (NOW - timedelta(seconds=600), 1000.0), (NOW - timedelta(seconds=570), 3000.0),
              *flat(2500, span=540)))), 5, "StabilizingScaleDown", False,
          memory=running(recommendations=recs(("llama", 120, 5))),
          targets=[target(coldStartSeconds=90)]),
    # two minutes of metrics (a restarted Prometheus) are too few to trust a fall: hold
    _case("thin-history-holds-scale-down",
          world(llama=seen(5, 2500, token_rate_samples=flat(2500, span=120))), 5,
          "StabilizingScaleDown", False),
    _case("thin-history-still-scales-up",
          world(llama=seen(2, 5000, token_rate_samples=flat(5000, span=120))), 5,
          "DemandDriven", True),
    # and at least one planning interval (30 s) when replicas start at once
    _case("kept-one-interval", world(llama=seen(5, 2500)), 5, "StabilizingScaleDown", False,
          memory=running(recommendations=recs(("llama", 20, 5)))),
    _case("min-replicas", world(llama=seen(2, 100)), 2, "MinReplicas", False,
          targets=[target(minReplicas=2)]),
    _case("max-replicas", world(llama=seen(4, 9000)), 4, "MaxReplicas", False,
          targets=[target(maxReplicas=4)]),
    _case("above-max-scales-down-at-once", world(llama=seen(9, 9000)), 4, "MaxReplicas", True,
          targets=[target(maxReplicas=4)],
          memory=running(recommendations=recs(("llama", 30, 9)))),
    _case("budget-capped", world(llama=seen(2, 5000)), 3, "BudgetCapped", True,
          budget={"maxCost": 36}, message_has=("affordable 3.00 USD/h",)),
    _case("budget-forced-scale-down-not-stabilized", world(llama=seen(6, 5000)), 3,
          "BudgetCapped", True, budget={"maxCost": 36},
          memory=running(recommendations=recs(("llama", 60, 6)))),
    _case("budget-floor-min-replicas", world(llama=seen(3, 5000)), 3, "BudgetCapped", False,
          budget={"maxCost": 24}, targets=[target(minReplicas=3)],
          message_has=("minReplicas floors",)),
    _case("token-budget-capped", world(llama=seen(2, 5000)), 3, "BudgetCapped", True,
          budget={"maxCost": None, "maxTokens": 129_600_000}, message_has=("tok/s",)),
    _case("budget-exhausted-scale-to-minimum", world(llama=seen(6, 5000)), 1, "BudgetExhausted",
          True, budget={"maxCost": 100}, memory=running(spend_cost=100.0)),
    _case("budget-exhausted-hold-keeps", world(llama=seen(4, 9000)), 4, "BudgetExhausted",
          False, budget={"maxCost": 100, "onExhausted": "Hold"},
          memory=running(spend_cost=150.0)),
    pytest.param(
        Case("token-budget-exhausted", spec(budget={"maxTokens": 1_000_000}),
             Observation({"llama": seen(4, 9000)}, tokens_in_period=1_000_000),
             1, "BudgetExhausted", True, running()),
        id="token-budget-exhausted"),
    _case("diminishing-returns", world(llama=seen(2, 5000)), 3, "DiminishingReturns", True,
          planning={"minMarginalValue": 0.3}, message_has=("minMarginalValue 0.3",)),
    _case("metrics-failed-hold", world(llama=seen(4, metrics_error="Timeout")), 4,
          "MetricsUnavailableHold", False, message_has=("Timeout",)),
    _case("metrics-empty-hold", world(llama=seen(4)), 4, "MetricsUnavailableHold", False,
          message_has=("Empty",)),
    _case("metrics-hold-before-fallback", world(llama=seen(2, metrics_error="Unreachable")), 2,
          "MetricsUnavailableHold", False, fallback={"afterSeconds": 120, "replicas": 6},
          memory=running(metrics_unavailable_since=NOW - timedelta(seconds=60))),
    _case("fallback-replicas", world(llama=seen(2, metrics_error="Unreachable")), 6,
          "FallbackReplicas", True, fallback={"afterSeconds": 120, "replicas": 6},
          memory=running(metrics_unavailable_since=NOW - timedelta(seconds=200))),
    _case("fallback-never-lowers", world(llama=seen(8, metrics_error="Stale")), 8,
          "FallbackReplicas", False, fallback={"afterSeconds": 0, "replicas": 3}),
    _case("fallback-clamped-to-max", world(llama=seen(1, metrics_error="Stale")), 10,
          "FallbackReplicas", True, fallback={"afterSeconds": 0, "replicas": 50}),
    _case("fallback-within-budget", world(llama=seen(1, metrics_error="Stale")), 3,
          "BudgetCapped", True, fallback={"afterSeconds": 0, "replicas": 6},
          budget={"maxCost": 36}),
    _case("conflict-hpa", world(llama=seen(3, 9000, conflict="HorizontalPodAutoscaler llama")),
          3, "Conflict", False, message_has=("HorizontalPodAutoscaler llama",)),
    _case("target-missing", world(llama=seen(0, 9000, target_error="Deployment not found")), 0,
          "Conflict", False, message_has=("Deployment not found",)),
    _case("not-observed", world(), 0, "Conflict", False, message_has=("not observed",)),
    _case("dry-run", world(llama=seen(2, 4500)), 5, "DryRun", False, mode="DryRun",
          message_has=("would set 5", "DemandDriven")),
    _case("dry-run-conflict-stays-conflict",
          world(llama=seen(3, 9000, conflict="ScaledObject llama")), 3, "Conflict", False,
          mode="DryRun"),
    _case("queue-drain", world(llama=seen(1, 1000, queue_length=30, tokens_per_request=1000)),
          2, "DemandDriven", True, message_has=("queue 30",)),
    _case("queue-default-tokens-per-request", world(llama=seen(1, 1000, queue_length=30)),
          2, "DemandDriven", True),
    _case("forecast-trend-ahead",
          world(llama=seen(2, token_rate_samples=ramp(1000, 2000))), 3, "DemandDriven", True,
          targets=[target(coldStartSeconds=600)], message_has=("forecast 3,000",)),
    _case("headroom-and-utilization", world(llama=seen(2, 2100)), 4, "DemandDriven", True,
          planning={"headroom": 0.2, "targetUtilization": 0.8, "tolerance": 0}),
    # no noise: planned at 0.8 x (1 + 0.1) = 0.88, the ceiling the user's pair allows
    _case("noiseless-demand-planned-at-the-ceiling", world(llama=seen(2, 2100)), 3,
          "DemandDriven", True, message_has=("0.88 utilization",),
          planning={"headroom": 0.2, "targetUtilization": 0.8}),
]


@pytest.mark.parametrize("case", CASES)
def test_single_target_decision(case: Case) -> None:
    result = plan(case.spec, case.world, case.memory, NOW)
    decision = result.decisions["llama"]
    assert (decision.replicas, decision.reason, decision.scale) == (
        case.replicas, case.reason, case.scale), decision.message
    for text in case.message_has:
        assert text in decision.message
    assert decision.message


def test_every_reason_has_a_row() -> None:
    covered = {p.values[0].reason for p in CASES}  # type: ignore[attr-defined]
    assert covered == set(REASONS)


def test_allocation_between_targets_prefers_value_per_cost() -> None:
    # Budget for 6 replicas of cost 1; "big" has 3x the weight, both need 10.
    s = spec([target("big", weight=3, maxReplicas=20, performance={"b": 0.03}),
              target("small", maxReplicas=20, performance={"b": 0.03})],
             budget={"maxCost": 72})
    result = plan(s, world(big=seen(10, 10000), small=seen(10, 10000)), running(), NOW)
    big, small = result.decisions["big"], result.decisions["small"]
    assert (big.replicas, small.replicas) == (4, 2)  # ∝ 3 : 1 from floors of 1
    assert big.reason == small.reason == "BudgetCapped"
    conditions = {c.type: c for c in result.conditions}
    assert conditions["BudgetAtRisk"].reason == "DemandExceedsBudget"
    assert result.phase == "BudgetAtRisk"


def test_conflict_target_cost_counts_against_budget() -> None:
    s = spec([target("a"), target("b")], budget={"maxCost": 60})  # affordable 5/h
    result = plan(s, world(a=seen(3, 9000, conflict="HorizontalPodAutoscaler a"),
                           b=seen(1, 9000)), running(), NOW)
    assert result.decisions["a"].replicas == 3
    assert result.decisions["b"].replicas == 2


def _conditions(result: Plan) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in result.conditions}


CONDITION_CASES = [
    pytest.param(spec(), world(llama=seen(2, 2000)), running(), "Active",
                 {"Ready": ("True", "Reconciled"), "MetricsAvailable": ("True", "MetricsFresh"),
                  "BudgetAtRisk": ("False", "WithinBudget"),
                  "BudgetExhausted": ("False", "BudgetRemaining"),
                  "ScalingLimited": ("False", "DesiredWithinRange"),
                  "Conflict": ("False", "NoConflict")}, id="healthy"),
    pytest.param(spec(mode="DryRun"), world(llama=seen(2, 2000)), running(), "DryRun",
                 {"Ready": ("True", "Reconciled")}, id="dry-run"),
    pytest.param(spec(), world(llama=seen(2, metrics_error="Timeout")), running(), "Degraded",
                 {"Ready": ("False", "MetricsUnavailable"),
                  "MetricsAvailable": ("False", "MetricsUnavailable")}, id="metrics-down"),
    pytest.param(spec(fallback={"afterSeconds": 0, "replicas": 2}),
                 world(llama=seen(2, metrics_error="Timeout")), running(), "Degraded",
                 {"MetricsAvailable": ("False", "FallbackActive")}, id="fallback"),
    pytest.param(spec(), world(llama=seen(2, 2000, conflict="ScaledObject llama")), running(),
                 "Degraded", {"Conflict": ("True", "ConflictingAutoscaler"),
                              "Ready": ("False", "ConflictingAutoscaler")}, id="conflict"),
    pytest.param(spec(), world(llama=seen(0, target_error="not a Deployment")), running(),
                 "Degraded", {"Conflict": ("True", "TargetNotScalable")}, id="target-error"),
    pytest.param(spec(budget={"maxCost": 36}), world(llama=seen(2, 5000)), running(),
                 "BudgetAtRisk", {"BudgetAtRisk": ("True", "DemandExceedsBudget"),
                                  "ScalingLimited": ("True", "BudgetCapped")}, id="capped"),
    pytest.param(spec(budget={"maxCost": 24}, targets=[target(minReplicas=3)]),
                 world(llama=seen(3, 5000)), running(), "BudgetAtRisk",
                 {"BudgetAtRisk": ("True", "MinReplicasOverBudget")}, id="floors-over"),
    pytest.param(spec(budget={"maxCost": 100}), world(llama=seen(4, 4000)),
                 running(spend_cost=80.0), "BudgetAtRisk",
                 {"BudgetAtRisk": ("True", "DemandExceedsBudget")}, id="paced"),
    pytest.param(spec(budget={"maxCost": 1000}, mode="DryRun"), world(llama=seen(9, 2000)),
                 running(spend_cost=960.0), "BudgetAtRisk",
                 {"BudgetAtRisk": ("True", "ProjectedOverrun")}, id="projected-overrun-dry-run"),
    pytest.param(spec(budget={"maxCost": 100}), world(llama=seen(2, 2000)),
                 running(spend_cost=100.0), "BudgetExhausted",
                 {"BudgetExhausted": ("True", "CostBudgetSpent"),
                  "BudgetAtRisk": ("True", "Exhausted")}, id="cost-exhausted"),
    pytest.param(spec(budget={"maxTokens": 10}), Observation({"llama": seen(2, 2000)}, 11.0),
                 running(), "BudgetExhausted",
                 {"BudgetExhausted": ("True", "TokenBudgetSpent")}, id="tokens-exhausted"),
    pytest.param(spec(), world(llama=seen(2, 9000)), running(), "Active",
                 {"ScalingLimited": ("True", "ScaleUpLimited")}, id="scale-up-limited"),
]


@pytest.mark.parametrize(("spec_", "world_", "memory", "phase", "expected"), CONDITION_CASES)
def test_conditions_and_phase(spec_: TokenBudgetSpec, world_: Observation, memory: Memory,
                              phase: str, expected: dict[str, tuple[str, str]]) -> None:
    result = plan(spec_, world_, memory, NOW)
    got = _conditions(result)
    assert set(got) == {"Ready", "MetricsAvailable", "BudgetAtRisk", "BudgetExhausted",
                        "ScalingLimited", "Conflict"}
    assert {k: got[k] for k in expected} == expected
    assert result.phase == phase
    assert all(c.message for c in result.conditions)


def test_flat_samples_give_equal_forecast() -> None:
    d = plan(spec(), world(llama=seen(2, 1500)), running(), NOW).decisions["llama"]
    assert d.tokens_per_second == pytest.approx(1500)
    assert d.forecast_tokens_per_second == pytest.approx(1500)
    assert d.needed_replicas == 2
    assert d.cost_per_hour == pytest.approx(2.0)


def test_falling_trend_uses_observed() -> None:
    d = plan(spec(targets=[target(coldStartSeconds=300)]),
             world(llama=seen(3, token_rate_samples=ramp(4000, 2500))), running(),
             NOW).decisions["llama"]
    assert d.forecast_tokens_per_second is not None
    assert d.forecast_tokens_per_second < 2500
    assert d.replicas == 3  # ceil(2500 / 1000), from the observed rate


def test_old_samples_outside_window_are_ignored_by_trend() -> None:
    samples = ((NOW - timedelta(seconds=3000), 100000.0), *flat(2000))
    d = plan(spec(targets=[target(coldStartSeconds=600)]),
             world(llama=seen(2, token_rate_samples=samples)), running(), NOW).decisions["llama"]
    assert d.forecast_tokens_per_second == pytest.approx(2000)


def _changes(level: float, noise: float, seed: int) -> list[tuple[int, int]]:
    """(cycle, step) of each change of replicas after 10 minutes of settling, over 90 minutes
    of 30 s cycles of a steady demand with Gaussian noise (seeded), near 10 replicas."""
    rng = random.Random(seed)
    s = spec([target(coldStartSeconds=60, maxReplicas=30)], planning={"targetUtilization": 0.8})
    memory, replicas = running(), 10
    changes: list[tuple[int, int]] = []
    samples: list[tuple[datetime, float]] = []
    for k in range(180):
        now = NOW + timedelta(seconds=30 * k)
        samples += [(now - timedelta(seconds=15), level * (1 + rng.gauss(0, noise))),
                    (now, level * (1 + rng.gauss(0, noise)))]
        samples = [x for x in samples if x[0] > now - timedelta(seconds=600)]
        result = plan(s, world(llama=seen(replicas, token_rate_samples=tuple(samples))),
                      memory, now)
        memory, decided = result.memory, result.decisions["llama"].replicas
        if decided != replicas and k >= 20:
            changes.append((k, decided - replicas))
        replicas = decided
    return changes


@pytest.mark.parametrize(("level", "noise"), [
    (8760.0, 0.002), (8800.0, 0.002), (8400.0, 0.01), (8000.0, 0.03), (8800.0, 0.03)])
def test_a_steady_noisy_demand_does_not_flap(level: float, noise: float) -> None:
    """A steady demand with 0.2-3 % noise near a replica boundary (10 replicas at the 0.88
    ceiling serve 8,800 tok/s), 10 seeds: the band narrowed to the noise at 99 %, the trend and
    the scale-down window keep the count: at most 8 changes in 80 minutes per seed, and over
    the 10 seeds at most 2 reversals within 5 minutes (a band of one standard deviation
    instead: 12-24 such reversals at 1-3 % noise)."""
    runs = [_changes(level, noise, seed) for seed in range(10)]
    quick = sum(1 for changes in runs for (a, up), (b, down) in pairwise(changes)
                if b - a < 10 and up * down < 0)
    assert max(len(changes) for changes in runs) <= 8 and quick <= 2, runs
