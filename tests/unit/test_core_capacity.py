"""Capacity planning: forecast, queue drain, need, tolerance, limits, stabilization memory."""

from __future__ import annotations

from datetime import timedelta

import pytest
from core_world import NOW, flat, noisy, ramp, seen, spec
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenscale.api import PlanningSpec, SloSpec
from tokenscale.core.capacity import (
    DEFAULT_TOKENS_PER_REQUEST,
    compact_recommendations,
    estimate_demand,
    noise_band,
    queue_drain_rate,
    raw_need,
    round_need,
    scale_up_limit,
    stabilized_recommendation,
    trend_forecast,
    within_tolerance,
)
from tokenscale.core.types import RecommendationEntry


@pytest.mark.parametrize(("samples", "horizon", "observed", "forecast"), [
    ((), 90, 0, 0),
    (((NOW, 1200.0),), 90, 1200, 1200),
    (flat(800), 90, 800, 800),
    (ramp(1000, 2000), 0, 2000, 2000),
    (ramp(1000, 2000), 300, 2000, 2500),
    (ramp(2000, 1000), 600, 1000, 0),  # falling: never below zero
    (((NOW, 5.0), (NOW, 7.0)), 60, 7, 7),  # all at one instant: no trend
], ids=["none", "single", "flat", "ramp-now", "ramp-ahead", "falling-floor", "one-instant"])
def test_trend_forecast(samples: tuple, horizon: float, observed: float,  # type: ignore[type-arg]
                        forecast: float) -> None:
    got = trend_forecast(samples, NOW, 600, horizon)
    assert got == (pytest.approx(observed), pytest.approx(forecast, abs=1e-6))


def test_queue_drain() -> None:
    assert queue_drain_rate(0, 500, 30) == 0
    assert queue_drain_rate(30, 500, 30) == pytest.approx(500)
    assert queue_drain_rate(30, None, 60) == pytest.approx(30 * DEFAULT_TOKENS_PER_REQUEST / 60)
    assert queue_drain_rate(10, 100, 0) == pytest.approx(1000)  # at least one second


@pytest.mark.parametrize(("demand", "headroom", "per_replica", "util", "replicas"), [
    (0, 0.1, 3000, 0.8, 0),
    (2400, 0, 3000, 0.8, 1),
    (2401, 0, 3000, 0.8, 2),
    (3 * 0.8 * 3000, 0, 3000, 0.8, 3),  # exact multiple, despite float noise
    (1000, 0.5, 1000, 1.0, 2),
], ids=["zero", "exact-one", "just-over", "float-noise", "headroom"])
def test_need(demand: float, headroom: float, per_replica: float, util: float,
              replicas: int) -> None:
    assert round_need(raw_need(demand, headroom, per_replica, util)) == replicas


@pytest.mark.parametrize(("noise", "demand", "band", "utilization", "target"), [
    (None, 1000, 0.1, 0.8, 0.8),  # fewer than three samples: nothing known, the user's pair
    (50, 0, 0.1, 0.8, 0.8),  # no demand
    (0, 1000, 0.0, 0.88, 0.8),  # noiseless: planned at the ceiling 0.8 x (1 + 0.1)
    (50, 1000, 0.05, 0.88 / 1.05, 0.8),
    (300, 1000, 0.1, 0.8, 0.8),  # noisier than the tolerance: the user's pair
    (0, 1000, 0.045, 1.0, 0.95),  # ceiling 0.95 x 1.1 = 1.045: the band keeps the plan at 1
], ids=["unknown", "no-demand", "noiseless", "half-the-tolerance", "noisy", "capped-at-one"])
def test_noise_band(noise: float | None, demand: float, band: float,
                    utilization: float, target: float) -> None:
    planning = PlanningSpec(target_utilization=target, tolerance=0.1)
    assert noise_band(planning, noise, demand) == (pytest.approx(band),
                                                    pytest.approx(utilization))


@settings(max_examples=200, deadline=None)
@given(st.floats(0.05, 1.0), st.floats(0.0, 0.5), st.floats(0.0, 1e4), st.floats(1.0, 1e5))
def test_noise_band_keeps_the_ceiling_and_never_plans_cooler(
        utilization: float, tolerance: float, noise: float, demand: float) -> None:
    """The load at which a scale-up happens, utilization x (1 + band), is the user's
    targetUtilization x (1 + tolerance); the planned utilization is between targetUtilization
    and 1."""
    planning = PlanningSpec(target_utilization=utilization, tolerance=tolerance)
    band, planned = noise_band(planning, noise, demand)
    ceiling = utilization * (1 + tolerance)
    assert 0 <= band <= tolerance and utilization - 1e-12 <= planned <= 1.0 + 1e-12
    assert planned * (1 + band) == pytest.approx(ceiling)


def test_at_full_utilization_the_band_is_exactly_the_users() -> None:
    """targetUtilization 1: the ceiling 1 x (1 + tolerance) needs the whole band, so the user's
    pair comes back exactly (no float residue reported as a narrowed band)."""
    for tolerance in (0.0, 0.07, 0.13, 0.29, 0.5):
        planning = PlanningSpec(target_utilization=1.0, tolerance=tolerance)
        assert noise_band(planning, 0.0, 1000.0) == (tolerance, 1.0)


@pytest.mark.parametrize("attainment", [0.5, 0.9, 0.99])
def test_the_band_ignores_noise_at_99_percent_whatever_the_slo(attainment: float) -> None:
    """At slo.attainment 0.5 the margin is 0 (z = 0), but the band still spans the noise at the
    99 % quantile: a lower SLO does not let noise move replicas every cycle."""
    s = spec(planning={"targetUtilization": 0.8})
    t = s.targets[0].model_copy(update={"slo": SloSpec(attainment=attainment)})
    d = estimate_demand(t, seen(5, token_rate_samples=noisy(4000, 0.02)), s.planning, NOW)
    reference = estimate_demand(s.targets[0], seen(5, token_rate_samples=noisy(4000, 0.02)),
                                s.planning, NOW)
    assert d.band == pytest.approx(reference.band) and 0.03 < d.band < 0.1


def test_tolerance_and_step_limits() -> None:
    assert within_tolerance(4.6, 5, 0.1) and within_tolerance(5.5, 5, 0.1)
    assert not within_tolerance(5.6, 5, 0.1) and not within_tolerance(0.0, 0, 0.5)
    assert [scale_up_limit(n) for n in (0, 1, 4, 5, 100)] == [4, 5, 8, 10, 200]


def _entry(ago: int, replicas: int, target: str = "a") -> RecommendationEntry:
    return RecommendationEntry(target, NOW - timedelta(seconds=ago), replicas)


def test_stabilized_recommendation_takes_window_maximum() -> None:
    history = [_entry(400, 9), _entry(200, 6), _entry(100, 4), _entry(50, 8, "b")]
    assert stabilized_recommendation(history, "a", NOW, 300, 3) == 6
    assert stabilized_recommendation(history, "a", NOW, 300, 7) == 7
    assert stabilized_recommendation(history, "a", NOW, 0, 3) == 3


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(0, 20), min_size=1, max_size=40),
    window=st.integers(0, 600),
    later=st.lists(st.integers(0, 900), min_size=1, max_size=5),
)
def test_compaction_never_changes_a_future_window_maximum(
    values: list[int], window: int, later: list[int]
) -> None:
    entries = [_entry(15 * (len(values) - 1 - i), v) for i, v in enumerate(values)]
    kept = compact_recommendations(entries, NOW, window, limit=10_000)
    assert kept == sorted(kept, key=lambda e: e.time)
    for delay in later:
        t = NOW + timedelta(seconds=delay)
        assert stabilized_recommendation(kept, "a", t, window, 0) == stabilized_recommendation(
            entries, "a", t, window, 0)


def test_compaction_bound_keeps_newest() -> None:
    entries = [_entry(i, 100 + i) for i in range(50)]
    kept = compact_recommendations(entries, NOW, 600, limit=5)
    assert [e.replicas for e in kept] == [104, 103, 102, 101, 100]


def test_a_sample_stamped_a_millisecond_after_now_still_counts() -> None:
    """A shifted clock rounds query times to milliseconds: the newest sample may come back
    up to 1 ms after now; dropping it would fit the trend on older, rising samples only."""
    from datetime import UTC, datetime, timedelta

    from tokenscale.core.capacity import trend_forecast

    now = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    rising = [(now - timedelta(seconds=60 - 10 * i), 1000.0 + 500 * i) for i in range(5)]
    flat_tail = (now + timedelta(microseconds=500), 3000.0)
    _, with_tail = trend_forecast([*rising, flat_tail], now, 60, 60)
    _, without = trend_forecast(rising, now, 60, 60)
    assert with_tail < without  # the plateau is seen, the extrapolation is lower
