"""The log-linear model: fit, model choice, marginal value, greedy allocation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tokenscale.core.costmodel import (
    DEFAULT_MODEL,
    AllocationItem,
    allocate,
    continuous_optimum,
    fit_log_linear,
    marginal_value,
    select_model,
    value_cap,
)
from tokenscale.core.types import ModelFit

#: OpenAI o1 on AIME 2024 (../shared/traces/README.md): samples -> accuracy.
O1_AIME = [(1.0, 0.74), (64.0, 0.83), (1000.0, 0.93)]


def test_fit_o1_aime_reference_points() -> None:
    fit = fit_log_linear(O1_AIME)
    # The README quotes a = 0.738, b = 0.026 (rounded from the published 74.4/83.3/93.3%).
    assert fit.a == pytest.approx(0.738, abs=0.005)
    assert fit.b == pytest.approx(0.026, abs=0.0015)
    b, a = np.polyfit(np.log([t for t, _ in O1_AIME]), [p for _, p in O1_AIME], 1)
    assert (fit.a, fit.b) == (pytest.approx(a), pytest.approx(b))
    assert fit.r2 is not None and 0.97 < fit.r2 < 0.99
    assert (fit.samples, fit.source) == (3, "Fitted")


def test_fit_large_language_monkeys_slope() -> None:
    fit = fit_log_linear([(1, 0.159), (250, 0.56)])
    assert fit.b == pytest.approx(0.073, abs=0.001)


@settings(max_examples=200, deadline=None)
@given(
    a=st.floats(-10, 10),
    b=st.floats(0.001, 5),
    tokens=st.lists(st.floats(1, 1e7), min_size=2, max_size=50, unique=True),
)
def test_fit_recovers_noiseless_parameters(a: float, b: float, tokens: list[float]) -> None:
    assume(max(tokens) / min(tokens) > 1.5)
    fit = fit_log_linear([(t, a + b * math.log(t)) for t in tokens])
    assert fit.b == pytest.approx(b, rel=0.01)
    assert fit.a == pytest.approx(a, rel=0.01, abs=0.01 * b)
    assert fit.r2 == pytest.approx(1.0, abs=1e-6)


def test_power_law_fits_worse_than_log_linear() -> None:
    # Kaplan-style loss L = T^-0.076 is linear in log-log, curved in P vs ln T.
    power = [(10.0**k, 10.0 ** (k * 0.5)) for k in range(1, 13)]
    assert (fit_log_linear(power).r2 or 0) < 0.9


@pytest.mark.parametrize(("points", "b", "r2", "samples"), [
    ([], 0.0, 0.0, 0),
    ([(5, 0.3), (5, 0.4)], 0.0, 0.0, 2),
    ([(0, 0.3), (-1, 0.1), (math.inf, 1), (2, math.nan), (3, 0.5)], 0.0, 0.0, 1),
    ([(1, 0.5), (10, 0.5), (100, 0.5)], 0.0, 1.0, 3),
], ids=["empty", "one-x", "invalid-dropped", "flat"])
def test_fit_degenerate_inputs(points: list[tuple[float, float]], b: float, r2: float,
                               samples: int) -> None:
    fit = fit_log_linear(points)
    assert (fit.b, fit.r2, fit.samples) == (pytest.approx(b), r2, samples)


GOOD = ModelFit(a=0.5, b=0.03, r2=0.9, samples=12, source="Fitted")


@pytest.mark.parametrize(("spec_a", "spec_b", "fit", "expected"), [
    (None, None, None, DEFAULT_MODEL),
    (0.7, 0.02, None, ModelFit(0.7, 0.02, source="Spec")),
    (None, 0.02, None, ModelFit(0.0, 0.02, source="Spec")),
    (0.7, None, None, DEFAULT_MODEL),
    (0.7, 0.02, GOOD, GOOD),
    (0.7, 0.02, ModelFit(0.5, 0.03, 0.9, 11, "Fitted"), ModelFit(0.7, 0.02, source="Spec")),
    (0.7, 0.02, ModelFit(0.5, 0.03, 0.4, 50, "Fitted"), ModelFit(0.7, 0.02, source="Spec")),
    (None, None, ModelFit(0.5, -0.03, 0.9, 50, "Fitted"), DEFAULT_MODEL),
], ids=["default", "spec", "spec-b-only", "spec-a-only", "fitted", "too-few-samples",
        "low-r2", "negative-slope"])
def test_select_model(spec_a: float | None, spec_b: float | None, fit: ModelFit | None,
                      expected: ModelFit) -> None:
    assert select_model(spec_a, spec_b, fit) == expected


def test_marginal_value() -> None:
    assert marginal_value(1, 0.026, 3.9, 0) == math.inf
    assert marginal_value(1, 0, 3.9, 0) == 0
    assert marginal_value(2, 0.026, 3.9, 1) == pytest.approx(2 * 0.026 * math.log(2) / 3.9)
    assert marginal_value(1, 1, 1, 10) < marginal_value(1, 1, 1, 9)


@settings(max_examples=200, deadline=None)
@given(weight=st.floats(0.01, 100), b=st.floats(0, 2), cost=st.floats(0.1, 100),
       min_value=st.floats(1e-4, 10))
def test_value_cap_matches_marginal_value(weight: float, b: float, cost: float,
                                          min_value: float) -> None:
    cap = value_cap(weight, b, cost, min_value)
    assert cap is not None and cap >= 1
    assume(cap < 10**6)
    # the cap-th replica (from cap-1) is worth at least min_value, the next one less
    if cap > 1:
        assert marginal_value(weight, b, cost, cap - 1) >= min_value * (1 - 1e-6)
    assert marginal_value(weight, b, cost, cap) < min_value * (1 + 1e-6)


def _item(floor: int = 0, cap: int = 100, cost: float = 1.0, tokens: float = 0.0,
          value: float = 1.0) -> AllocationItem:
    return AllocationItem(floor=floor, cap=cap, cost_per_hour=cost, tokens_per_second=tokens,
                          value=value)


def test_allocate_keeps_caps_that_fit() -> None:
    assert allocate([_item(1, 5), _item(0, 3)], cost_rate=8) == [5, 3]


def test_allocate_floors_even_over_budget() -> None:
    assert allocate([_item(3, 5), _item(2, 3)], cost_rate=1) == [3, 2]


def test_allocate_prefers_value_per_cost() -> None:
    # equal values, the second costs twice as much: x ∝ 1/c -> 2:1 of the count
    assert allocate([_item(cost=1), _item(cost=2)], cost_rate=12) == [6, 3]


def test_allocate_respects_token_rate() -> None:
    got = allocate([_item(tokens=1000), _item(tokens=500)], token_rate=4000)
    assert got[0] * 1000 + got[1] * 500 <= 4000
    assert got == [3, 2]  # value per cost decides, not tokens per replica


def test_allocate_stops_at_first_replica_that_does_not_fit() -> None:
    # The first replica of "expensive" is the most valuable (infinite) and fits at 10;
    # at 9 it does not, and the cheaper replicas are not traded for it.
    items = [_item(cost=10, cap=5), _item(cost=1, cap=50)]
    assert allocate(items, cost_rate=9) == [0, 0]
    assert allocate(items, cost_rate=11) == [1, 1]


def _reference_greedy(items: list[AllocationItem], cost_rate: float,
                      token_rate: float) -> list[int]:
    """The rule as written in DESIGN.md, one replica at a time, no shortcuts."""
    counts = [it.floor for it in items]
    while True:
        best, best_value = -1, -1.0
        for i, it in enumerate(items):
            if counts[i] < it.cap:
                v = marginal_value(it.value, 1.0, it.cost_per_hour, counts[i])
                if v > best_value:
                    best, best_value = i, v
        if best < 0:
            return counts
        cost = sum(n * it.cost_per_hour for n, it in zip(counts, items, strict=True))
        tokens = sum(n * it.tokens_per_second for n, it in zip(counts, items, strict=True))
        it = items[best]
        if cost + it.cost_per_hour > cost_rate + 1e-9 or (
                tokens + it.tokens_per_second > token_rate + 1e-9):
            return counts
        counts[best] += 1


items_strategy = st.lists(
    st.builds(
        _item,
        floor=st.integers(0, 3),
        cap=st.integers(3, 400),
        cost=st.sampled_from([0.5, 1.0, 2.5, 3.9, 8.0]),
        tokens=st.sampled_from([0.0, 500.0, 3000.0]),
        value=st.sampled_from([0.013, 0.026, 0.05, 0.26, 1.0]),
    ),
    min_size=1, max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(items=items_strategy, cost_rate=st.floats(0, 2000), token_rate=st.floats(0, 3e6))
def test_allocate_equals_one_at_a_time_greedy(items: list[AllocationItem], cost_rate: float,
                                              token_rate: float) -> None:
    got = allocate(items, cost_rate, token_rate)
    want = _reference_greedy(items, cost_rate, token_rate)
    # equal up to ties between equal marginal values
    assert sum(got) == pytest.approx(sum(want), abs=1)
    assert all(abs(g - w) <= 1 for g, w in zip(got, want, strict=True))


@settings(max_examples=200, deadline=None)
@given(items=items_strategy, low=st.floats(0, 1000), extra=st.floats(0, 1000))
def test_more_rate_never_fewer_replicas_per_item(items: list[AllocationItem], low: float,
                                                 extra: float) -> None:
    small = allocate(items, low)
    large = allocate(items, low + extra)
    assert all(s <= g for s, g in zip(small, large, strict=True))


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.floats(0.005, 2), min_size=1, max_size=2),
    cost=st.floats(0.5, 10),
    scale=st.floats(2, 500),
)
def test_budget_bound_same_price_targets_are_within_one_of_the_continuous_optimum(
    values: list[float], cost: float, scale: float
) -> None:
    """Targets on one replica price: each within one replica of x_i ∝ w_i·b_i/c_i."""
    rate = scale * cost
    assume(min(continuous_optimum(values, [cost] * len(values), rate)) >= 1)
    items = [_item(floor=0, cap=100_000, cost=cost, value=v) for v in values]
    got = allocate(items, rate)
    spent = sum(got) * cost
    assert spent <= rate + 1e-9 and rate - spent < cost + 1e-9  # budget-bound, rate used
    optimum = continuous_optimum(values, [cost] * len(values), spent)
    assert all(abs(n - x) <= 1 + 1e-9 for n, x in zip(got, optimum, strict=True)), (got, optimum)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.floats(0.005, 2), min_size=1, max_size=6),
    costs=st.lists(st.floats(0.5, 10), min_size=6, max_size=6),
    scale=st.floats(5, 300),
)
def test_budget_bound_allocation_tracks_the_continuous_optimum(
    values: list[float], costs: list[float], scale: float
) -> None:
    """Mixed prices: the greedy stops where ``w·b·ln((n+1)/n)/c`` ≈ λ for every target, i.e.
    ``n_i ≈ k_i/λ - ½`` (k = w·b/c); the half replica of every target is spend the continuous
    optimum hands to the others, so target i may differ by ``1 + share_i·Σc/c_i`` replicas
    (one replica when prices are equal and two targets share the budget)."""
    costs = costs[: len(values)]
    rate = scale * max(costs)
    assume(min(continuous_optimum(values, costs, rate)) >= 1)  # every target worth a replica
    items = [_item(floor=0, cap=100_000, cost=c, value=v)
             for v, c in zip(values, costs, strict=True)]
    got = allocate(items, rate)
    spent = sum(n * c for n, c in zip(got, costs, strict=True))
    assert rate - spent < max(costs) + 1e-9
    optimum = continuous_optimum(values, costs, spent)
    total_cost, total_value = sum(costs), sum(values)
    for n, x, v, c in zip(got, optimum, values, costs, strict=True):
        assert abs(n - x) <= 1 + v / total_value * total_cost / c + 1e-9, (got, optimum)


def test_continuous_optimum() -> None:
    assert continuous_optimum([1, 3], [1, 1], 8) == [2, 6]
    assert continuous_optimum([0, 0], [1, 1], 8) == [0, 0]


def test_allocate_with_many_replicas_is_fast_path_equivalent() -> None:
    # thousands of replicas: the closed-form jump lands where the greedy would
    items = [_item(cap=10_000, cost=1.0, value=1.0), _item(cap=10_000, cost=2.0, value=1.0)]
    got = allocate(items, 3000)
    assert got == _reference_greedy(items, 3000, math.inf)
    assert got[0] + 2 * got[1] <= 3000
    assert abs(got[0] - 1500) <= 1 and abs(got[1] - 750) <= 1


def test_ties_prefer_the_first_item() -> None:
    assert allocate([_item(cap=5), _item(cap=5)], cost_rate=3) == [2, 1]
