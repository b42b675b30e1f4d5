"""Properties of the planner over random specs, worlds and memories (hypothesis)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core_world import NOW, running, spec, target
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tokenscale.api import MAX_RECOMMENDATIONS, TokenBudgetSpec
from tokenscale.core.costmodel import continuous_optimum
from tokenscale.core.planner import plan
from tokenscale.core.types import (
    Memory,
    Observation,
    Plan,
    RecommendationEntry,
    TargetObservation,
)

Scenario = tuple[TokenBudgetSpec, Observation, Memory]
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenarios(draw: st.DrawFn, mode: str | None = None,
              on_exhausted: str | None = None) -> Scenario:
    targets: list[dict[str, Any]] = []
    seen: dict[str, TargetObservation] = {}
    history: list[RecommendationEntry] = []
    for i in range(draw(st.integers(1, 4))):
        name = f"t{i}"
        low = draw(st.integers(0, 3))
        high = draw(st.integers(max(1, low), 30))
        targets.append(target(
            name, minReplicas=low, maxReplicas=high,
            tokensPerReplicaPerSecond=draw(st.sampled_from([500, 1000, 3000])),
            costPerReplicaHour=draw(st.sampled_from([0.7, 1.0, 2.5, 3.9])),
            coldStartSeconds=draw(st.sampled_from([0, 30, 90, 300])),
            weight=draw(st.sampled_from([0.5, 1, 3])),
            performance={"b": draw(st.sampled_from([0.01, 0.026, 0.1]))},
        ))
        rates = draw(st.lists(st.floats(0, 60000), min_size=1, max_size=21))
        samples = tuple((NOW - timedelta(seconds=30 * (len(rates) - 1 - j)), r)
                        for j, r in enumerate(rates))
        error = draw(st.sampled_from([None, None, None, "Timeout", "Empty"]))
        conflict = draw(st.sampled_from([None] * 9 + ["HorizontalPodAutoscaler " + name]))
        current = draw(st.integers(0, 40))
        seen[name] = TargetObservation(
            current_replicas=current, ready_replicas=current,
            token_rate_samples=() if error else samples,
            queue_length=draw(st.floats(0, 200)), metrics_error=error, conflict=conflict,
        )
        for ago in draw(st.lists(st.integers(0, 900), max_size=5)):
            history.append(RecommendationEntry(name, NOW - timedelta(seconds=ago),
                                               draw(st.integers(0, 40))))
    max_cost = draw(st.one_of(st.none(), st.floats(1, 3000)))
    max_tokens = draw(st.one_of(st.none(), st.integers(10**6, 10**10)))
    if max_cost is None and max_tokens is None:
        max_cost = 500.0
    s = spec(
        targets,
        budget={"maxCost": max_cost, "maxTokens": max_tokens,
                "onExhausted": on_exhausted or draw(st.sampled_from(["ScaleToMinimum", "Hold"]))},
        planning={"tolerance": draw(st.sampled_from([0, 0.1, 0.3])),
                  "targetUtilization": draw(st.sampled_from([0.5, 0.8, 0.95, 1.0])),
                  "headroom": draw(st.sampled_from([0, 0, 0.2])),
                  "scaleDownStabilizationSeconds": draw(st.sampled_from([0, 300, 600])),
                  "minMarginalValue": draw(st.sampled_from([0, 0, 0, 0.001, 0.05]))},
        fallback={"afterSeconds": draw(st.sampled_from([0, 120])),
                  "replicas": draw(st.sampled_from([None, 0, 2, 50]))},
        mode=mode or draw(st.sampled_from(["Active", "DryRun"])),
    )
    memory = running(
        spend_cost=draw(st.floats(0, 3000)),
        spend_tokens=draw(st.floats(0, 1e10)),
        recommendations=tuple(history),
        metrics_unavailable_since=draw(st.sampled_from([None, NOW - timedelta(seconds=300)])),
        last_accounted=NOW - timedelta(seconds=draw(st.sampled_from([0, 30, 3600]))),
    )
    tokens_in_period = draw(st.one_of(st.none(), st.floats(0, 1e10)))
    return s, Observation(seen, tokens_in_period=tokens_in_period), memory


def _run(scenario: Scenario) -> Plan:
    s, observation, memory = scenario
    return plan(s, observation, memory, NOW)


def _exhausted(result: Plan) -> bool:
    return any(c.type == "BudgetExhausted" and c.status == "True" for c in result.conditions)


@SETTINGS
@given(scenarios())
def test_desired_within_min_and_max(scenario: Scenario) -> None:
    s, observation, _ = scenario
    result = _run(scenario)
    assert list(result.decisions) == [t.name for t in s.targets]
    for t in s.targets:
        d = result.decisions[t.name]
        if d.reason == "Conflict":
            assert d.replicas == observation.targets[t.name].current_replicas
            assert not d.scale
        else:
            assert t.min_replicas <= d.replicas <= t.max_replicas


@SETTINGS
@given(scenarios())
def test_planned_cost_within_affordable_unless_min_replicas_force_it(scenario: Scenario) -> None:
    s, observation, _ = scenario
    assume(all(o.conflict is None for o in observation.targets.values()))
    result = _run(scenario)
    if _exhausted(result):
        for t in s.targets:
            d = result.decisions[t.name]
            current = observation.targets[t.name].current_replicas
            if s.budget.on_exhausted == "ScaleToMinimum":
                assert d.replicas == t.min_replicas
            else:
                assert d.replicas <= max(current, t.min_replicas)
        return
    planned = sum(d.cost_per_hour or 0 for d in result.decisions.values())
    served = 0.0  # as the token cap counts it: at the utilization each target was planned at
    for t in s.targets:
        d = result.decisions[t.name]
        utilization = (d.planned_utilization if d.planned_utilization is not None
                       else s.planning.target_utilization)
        served += d.replicas * t.tokens_per_replica_per_second * utilization
    affordable = result.affordable_cost_per_hour
    token_cap = result.affordable_tokens_per_second
    over_cost = affordable is not None and planned > affordable * (1 + 1e-9) + 1e-9
    over_tokens = token_cap is not None and served > token_cap * (1 + 1e-9) + 1e-9
    if over_cost or over_tokens:
        risk = next(c for c in result.conditions if c.type == "BudgetAtRisk")
        assert risk.reason == "MinReplicasOverBudget"
        assert all(result.decisions[t.name].replicas == t.min_replicas for t in s.targets)
        for t in s.targets:
            d = result.decisions[t.name]
            if d.needed_replicas is not None and d.needed_replicas > t.min_replicas:
                assert "minReplicas floors" in d.message


@SETTINGS
@given(scenarios(mode="Active"))
def test_missing_metrics_never_lower_replicas(scenario: Scenario) -> None:
    s, observation, _ = scenario
    result = _run(scenario)
    for t in s.targets:
        o = observation.targets[t.name]
        d = result.decisions[t.name]
        if o.metrics_error is None or o.conflict is not None:
            continue
        if d.reason in ("BudgetCapped", "BudgetExhausted"):
            continue  # the budget needs no metrics and goes on
        assert d.replicas >= min(o.current_replicas, t.max_replicas)
        assert d.reason in ("MetricsUnavailableHold", "FallbackReplicas")


@SETTINGS
@given(scenarios(on_exhausted="ScaleToMinimum"), st.floats(1, 3000))
def test_more_budget_never_fewer_replicas(scenario: Scenario, extra: float) -> None:
    s, observation, memory = scenario
    more: dict[str, float] = {}
    if s.budget.max_cost is not None:
        more["max_cost"] = s.budget.max_cost + extra
    if s.budget.max_tokens is not None:
        more["max_tokens"] = s.budget.max_tokens + extra * 1e6
    richer = s.model_copy(update={"budget": s.budget.model_copy(update=more)})
    poor, rich = _run(scenario), plan(richer, observation, memory, NOW)
    for t in s.targets:
        assert rich.decisions[t.name].replicas >= poor.decisions[t.name].replicas
    assert (sum(d.replicas for d in rich.decisions.values())
            >= sum(d.replicas for d in poor.decisions.values()))


@SETTINGS
@given(scenarios(mode="Active"))
def test_dry_run_decides_the_same_and_never_scales(scenario: Scenario) -> None:
    s, observation, memory = scenario
    active = _run(scenario)
    dry = plan(s.model_copy(update={"mode": "DryRun"}), observation, memory, NOW)
    for name, d in active.decisions.items():
        current = observation.targets[name].current_replicas
        assert d.scale == (d.reason != "Conflict" and d.replicas != current)
        assert dry.decisions[name].replicas == d.replicas
        assert not dry.decisions[name].scale
        if d.reason != "Conflict":
            assert dry.decisions[name].reason == "DryRun"
            assert d.reason in dry.decisions[name].message


@SETTINGS
@given(scenarios())
def test_memory_is_bounded_and_consistent(scenario: Scenario) -> None:
    s, _, memory = scenario
    result = _run(scenario)
    names = {t.name for t in s.targets}
    window = timedelta(seconds=s.planning.scale_down_stabilization_seconds)
    assert len(result.memory.recommendations) <= MAX_RECOMMENDATIONS
    for r in result.memory.recommendations:
        assert r.target in names and NOW - window <= r.time <= NOW
    assert result.memory.last_accounted == NOW
    assert result.memory.spend_cost >= memory.spend_cost  # same period: spend only grows
    assert result.spend.projected_cost >= result.spend.cost
    assert result.phase in ("Active", "DryRun", "BudgetAtRisk", "BudgetExhausted", "Degraded")
    assert result == _run(scenario)  # pure: same inputs, same plan


@settings(max_examples=150, deadline=None)
@given(
    weights=st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=2, max_size=2),
    slopes=st.lists(st.sampled_from([0.01, 0.026, 0.073]), min_size=2, max_size=2),
    max_cost=st.floats(100, 20000),
)
def test_budget_bound_planner_tracks_the_continuous_optimum(
    weights: list[float], slopes: list[float], max_cost: float
) -> None:
    """Two targets on one replica price with unbounded demand, capped by the budget."""
    targets = [target(f"m{i}", minReplicas=0, maxReplicas=10_000, weight=w,
                      performance={"b": b})
               for i, (w, b) in enumerate(zip(weights, slopes, strict=True))]
    s = spec(targets, budget={"maxCost": max_cost})
    huge = {f"m{i}": TargetObservation(10_000, 10_000, ((NOW, 1e9),)) for i in range(2)}
    result = plan(s, Observation(huge), running(), NOW)
    got = [result.decisions[f"m{i}"].replicas for i in range(2)]
    values = [w * b for w, b in zip(weights, slopes, strict=True)]
    spent = float(sum(got))  # 1 currency/h per replica
    assert result.affordable_cost_per_hour is not None
    assert spent <= result.affordable_cost_per_hour + 1e-9
    optimum = continuous_optimum(values, [1.0, 1.0], spent)
    assume(min(optimum) >= 1)
    assert all(abs(n - x) <= 1 + 1e-9 for n, x in zip(got, optimum, strict=True))
    assert all(d.reason == "BudgetCapped" for d in result.decisions.values())
