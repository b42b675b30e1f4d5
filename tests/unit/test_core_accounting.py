"""Planner accounting and memory: spend, rollover, tokens, outages, recommendations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from core_world import NOW, flat, recs, running, seen, spec, target, world

from tokenscale.api import MAX_RECOMMENDATIONS
from tokenscale.core.planner import plan
from tokenscale.core.types import Memory, Observation, RecommendationEntry

TODAY = datetime(2026, 3, 4, tzinfo=UTC)
YESTERDAY = TODAY - timedelta(days=1)


def test_first_cycle_accounts_nothing() -> None:
    result = plan(spec(), world(llama=seen(4, 3500)), Memory(), NOW)
    assert result.spend.cost == 0
    assert result.memory.spend_cost == 0
    assert result.memory.last_accounted == NOW
    assert result.memory.period_start == TODAY
    assert (result.period_start, result.period_end) == (TODAY, TODAY + timedelta(days=1))
    assert result.previous_period_cost is None


def test_cost_integrates_current_replicas() -> None:
    s = spec([target(costPerReplicaHour=3.9)])
    memory = running(now=NOW - timedelta(seconds=30), spend_cost=1.0)
    result = plan(s, world(llama=seen(4, 3500)), memory, NOW)
    assert result.spend.cost == pytest.approx(1.0 + 4 * 3.9 * 30 / 3600)
    assert result.spend.cost_per_hour == pytest.approx(4 * 3.9)
    assert result.memory.spend_cost == result.spend.cost
    # projection: spent + planned rate (4 replicas, 3,500 tok/s) × 12 h left
    assert result.spend.projected_cost == pytest.approx(result.spend.cost + 4 * 3.9 * 12)


def test_spend_resets_and_splits_at_rollover() -> None:
    memory = Memory(period_start=YESTERDAY, spend_cost=100.0, spend_tokens=5e6,
                    last_accounted=TODAY - timedelta(seconds=20))
    now = TODAY + timedelta(seconds=10)
    result = plan(spec(), world(llama=seen(3, 2500, token_rate_samples=flat(2500, now))),
                  memory, now)
    assert result.period_start == TODAY
    assert result.spend.cost == pytest.approx(3 * 10 / 3600)  # only the 10 s after midnight
    assert result.previous_period_cost == pytest.approx(100 + 3 * 20 / 3600)
    assert result.spend.tokens == pytest.approx(2500 * 10)  # estimate: rate × 10 s
    assert result.memory.period_start == TODAY


def test_rollover_after_a_long_gap_counts_only_the_new_period() -> None:
    memory = Memory(period_start=YESTERDAY - timedelta(days=2), spend_cost=400.0,
                    last_accounted=YESTERDAY - timedelta(days=1, hours=-12))
    result = plan(spec(), world(llama=seen(2, 1500)), memory, NOW)
    assert result.spend.cost == pytest.approx(2 * 12)
    assert result.previous_period_cost == pytest.approx(400)  # the old period got no more time


def test_rollover_with_price_windows() -> None:
    s = spec(pricing={"schedule": [{"start": "00:00", "end": "06:00", "multiplier": 0.5}]})
    memory = Memory(period_start=YESTERDAY, spend_cost=0.0,
                    last_accounted=TODAY - timedelta(hours=1))
    result = plan(s, world(llama=seen(2, 1500, token_rate_samples=flat(1500, TODAY))),
                  memory, TODAY + timedelta(hours=1))
    assert result.previous_period_cost == pytest.approx(2.0)  # 23:00-24:00 at 1
    assert result.spend.cost == pytest.approx(1.0)  # 00:00-01:00 at 0.5
    assert result.price_multiplier == 0.5


def test_tokens_from_counters_are_authoritative() -> None:
    memory = running(now=NOW - timedelta(seconds=30), spend_tokens=123.0)
    result = plan(spec(), Observation({"llama": seen(2, 1500)}, tokens_in_period=9e6), memory, NOW)
    assert result.spend.tokens == 9e6
    assert result.spend.cost_per_million_tokens == pytest.approx(
        result.spend.cost / 9e6 * 1e6)
    assert result.spend.projected_tokens == pytest.approx(9e6 + 1500 * 12 * 3600)


def test_tokens_estimated_from_rates_without_counters() -> None:
    memory = running(now=NOW - timedelta(seconds=30), spend_tokens=1000.0)
    result = plan(spec(), world(llama=seen(2, 1500)), memory, NOW)
    assert result.spend.tokens == pytest.approx(1000 + 1500 * 30)


def test_clock_going_backwards_accounts_nothing() -> None:
    memory = running(now=NOW + timedelta(seconds=60), spend_cost=5.0)
    result = plan(spec(), world(llama=seen(2, 1500)), memory, NOW)
    assert result.spend.cost == 5.0
    assert result.memory.last_accounted == NOW + timedelta(seconds=60)


def test_conflict_and_hold_targets_cost_money_too() -> None:
    s = spec([target("a"), target("b"), target("c")])
    memory = running(now=NOW - timedelta(hours=1))
    result = plan(s, world(a=seen(1, 500), b=seen(2, metrics_error="Timeout"),
                           c=seen(3, 900, conflict="HorizontalPodAutoscaler c")), memory, NOW)
    assert result.spend.cost == pytest.approx(6.0)


def test_last_scale_time_only_for_scaled_targets() -> None:
    earlier = NOW - timedelta(minutes=10)
    s = spec([target("a"), target("b")])
    memory = running(last_scale_time={"a": earlier, "b": earlier, "gone": earlier})
    result = plan(s, world(a=seen(1, 3500), b=seen(2, 2000)), memory, NOW)
    assert result.decisions["a"].scale and not result.decisions["b"].scale
    assert result.memory.last_scale_time == {"a": NOW, "b": earlier}


def test_dry_run_never_records_a_scale() -> None:
    result = plan(spec(mode="DryRun"), world(llama=seen(1, 3500)), running(), NOW)
    assert result.decisions["llama"].replicas == 4
    assert not result.decisions["llama"].scale
    assert result.memory.last_scale_time == {}
    # the projection uses what actually runs: the current replica
    assert result.spend.projected_cost == pytest.approx(1 * 12)


def test_outage_start_is_set_kept_and_cleared() -> None:
    s = spec(fallback={"afterSeconds": 120, "replicas": 5})
    down = world(llama=seen(2, metrics_error="Timeout"))
    first = plan(s, down, running(), NOW)
    assert first.memory.metrics_unavailable_since == NOW
    assert first.decisions["llama"].reason == "MetricsUnavailableHold"
    later = NOW + timedelta(seconds=150)
    second = plan(s, down, first.memory, later)
    assert second.memory.metrics_unavailable_since == NOW
    assert second.decisions["llama"].reason == "FallbackReplicas"
    assert second.decisions["llama"].replicas == 5
    back = plan(s, world(llama=seen(5, 4500, token_rate_samples=flat(4500, later))),
                second.memory, later + timedelta(seconds=30))
    assert back.memory.metrics_unavailable_since is None
    assert back.decisions["llama"].reason == "DemandDriven"


def test_recommendations_recorded_compacted_and_pruned() -> None:
    s = spec([target("a", coldStartSeconds=300), target("b")])
    memory = running(recommendations=recs(
        ("a", 400, 9),  # older than the 300 s window: dropped
        ("a", 200, 3),  # not above the newer 5: can never be the maximum again
        ("a", 100, 5),
        ("b", 50, 2),
        ("removed", 10, 7),  # target no longer in the spec
    ))
    result = plan(s, world(a=seen(5, 1500), b=seen(2, metrics_error="Timeout")), memory, NOW)
    kept = {(r.target, int((NOW - r.time).total_seconds()), r.replicas)
            for r in result.memory.recommendations}
    # a: stabilized at the 5 recorded 100 s ago, now recommends 2; b holds and records nothing
    assert kept == {("a", 100, 5), ("a", 0, 2), ("b", 50, 2)}
    assert result.decisions["a"].replicas == 5
    assert result.decisions["a"].reason == "StabilizingScaleDown"


def test_recommendations_stay_bounded() -> None:
    s = spec([target("a", maxReplicas=10_000)],
             planning={"scaleDownStabilizationSeconds": 86400, "intervalSeconds": 5})
    many = tuple(RecommendationEntry("a", NOW - timedelta(seconds=5 * i), 5000 + i)
                 for i in range(2000))  # strictly falling over time: all would be kept
    result = plan(s, world(a=seen(5000, 1000)), running(recommendations=many), NOW)
    assert len(result.memory.recommendations) <= MAX_RECOMMENDATIONS
    assert result.memory.recommendations[-1].time == NOW


def test_the_time_since_the_last_cycle_is_charged_at_the_price_it_ran_at() -> None:
    """A price read this cycle (OpenCost, or an edited spec) applies from now on: the hour
    before ran 4 replicas at 2/h, so it costs 8, not 4 at today's 1/h; and the memory keeps
    today's price for the next interval."""
    before = NOW - timedelta(hours=1)
    memory = running(last_accounted=before, spend_cost=10.0, prices={"llama": 2.0})
    result = plan(spec(), world(llama=seen(4, 3000)), memory, NOW)
    assert result.spend.cost == pytest.approx(10.0 + 8.0)
    assert result.memory.prices == {"llama": 1.0}
    unknown = plan(spec(), world(llama=seen(4, 3000)),
                   running(last_accounted=before, spend_cost=10.0), NOW)
    assert unknown.spend.cost == pytest.approx(10.0 + 4.0)  # no memory: today's price
