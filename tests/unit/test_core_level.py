"""Planner step 3, the demand forecast's choice: the trend line's forecast, or the level of now
(the newest demand sample) while its recent error beats the trend's (plain inputs)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from core_world import flat, running, seen, spec, target, world

from tokenscale import api
from tokenscale.core.level import (
    ERROR_WEIGHT,
    MIN_SCORED,
    level_forecast,
    observed_at,
    score,
    use_level,
)
from tokenscale.core.planner import plan
from tokenscale.core.types import ForecastScore, Observation
from tokenscale.status import build_status, memory_from_status, significant

TEN = datetime(2026, 3, 4, 10, 15, tzinfo=UTC)


def ramp(now: datetime, start: float, slope: float, span: int = 600, step: int = 30
         ) -> tuple[tuple[datetime, float], ...]:
    """Samples rising by ``slope`` tokens/s per second over ``span`` seconds up to ``now``."""
    return tuple((now - timedelta(seconds=s), start + slope * (span - s))
                 for s in range(span, -1, -step))


def test_the_level_is_the_newest_sample_in_the_window() -> None:
    samples = (*flat(900.0, TEN)[:-1], (TEN, 1200.0))
    assert level_forecast(samples, TEN, 600) == 1200.0
    # a sample after now is not seen; one older than the window is no level
    assert level_forecast((*samples, (TEN + timedelta(seconds=30), 5.0)), TEN, 600) == 1200.0
    assert level_forecast(flat(900.0, TEN - timedelta(minutes=20)), TEN, 600) is None
    assert level_forecast((), TEN, 600) is None


def test_a_pending_pair_is_scored_against_the_demand_at_its_instant() -> None:
    due = TEN + timedelta(seconds=90)
    first = score(None, flat(1000.0, TEN), TEN, 1100.0, 1040.0, 90)
    assert (first.due, first.trend, first.level, first.scored) == (due, 1100.0, 1040.0, 0)
    # not due yet: kept as it is, no new pair
    assert score(first, flat(1000.0, TEN), TEN + timedelta(seconds=60), 5.0, 5.0, 90) == first
    seen_later = (*flat(1000.0, TEN), (due, 1000.0), (due + timedelta(seconds=15), 3000.0))
    after = score(first, seen_later, due + timedelta(seconds=30), 1200.0, 1300.0, 90)
    assert after.scored == 1
    assert (after.trend_error, after.level_error) == (100.0, 40.0)  # the first sets them
    assert after.due == due + timedelta(seconds=120) and after.level == 1300.0  # the next
    then = after.due
    assert then is not None
    again = score(after, ((then, 1000.0),), then, 1000.0, 1000.0, 90)
    assert again.trend_error == 100.0 + ERROR_WEIGHT * (200.0 - 100.0)
    assert again.level_error == 40.0 + ERROR_WEIGHT * (300.0 - 40.0)


def test_a_missed_instant_drops_the_pair_and_no_level_scores_nothing() -> None:
    pending = ForecastScore(due=TEN, trend=1.0, level=2.0, trend_error=5.0, level_error=6.0,
                            scored=3)
    assert observed_at(flat(1000.0, TEN - timedelta(seconds=30)), TEN) is None
    later = TEN + timedelta(minutes=10)
    dropped = score(pending, flat(1000.0, TEN - timedelta(minutes=5)), later, 9.0, None, 90)
    assert dropped == ForecastScore(trend_error=5.0, level_error=6.0, scored=3)
    assert score(None, (), TEN, 1000.0, None, 90) == ForecastScore()


def test_the_level_is_used_only_after_enough_pairs_scored_better() -> None:
    assert use_level(ForecastScore(trend_error=200.0, level_error=100.0, scored=MIN_SCORED))
    assert not use_level(ForecastScore(trend_error=200.0, level_error=100.0,
                                       scored=MIN_SCORED - 1))
    assert not use_level(ForecastScore(trend_error=100.0, level_error=100.0,
                                       scored=MIN_SCORED))
    assert not use_level(None)


def test_on_jitter_the_level_wins_after_the_minimum_and_on_a_ramp_the_trend_stays() -> None:
    """Cycle by cycle through score/use_level: a level that jitters around a flat demand
    beats a trend that extrapolates the jitter; a steady ramp keeps the trend."""
    def run(series: list[float], trend_of: list[float]) -> list[bool]:
        s: ForecastScore | None = None
        used = []
        for i, y in enumerate(series):
            now = TEN + timedelta(seconds=30 * i)
            samples = tuple((TEN + timedelta(seconds=30 * j), series[j]) for j in range(i + 1))
            s = score(s, samples, now, trend_of[i], y, 30)
            used.append(use_level(s))
        return used

    n = 40
    jitter = [1000.0 + (50.0 if i % 2 else -50.0) for i in range(n)]
    wild_trend = [1000.0 + (400.0 if i % 2 else -400.0) for i in range(n)]
    used = run(jitter, wild_trend)
    assert not any(used[:MIN_SCORED]) and used[-1]
    assert used.index(True) == MIN_SCORED  # the cycle that scores the fifth pair
    rising = [1000.0 + 20.0 * i for i in range(n)]
    exact_trend = [1000.0 + 20.0 * (i + 1) for i in range(n)]  # one cycle ahead, right
    assert not any(run(rising, exact_trend))


def test_the_planner_uses_the_level_while_it_scores_better_and_says_so() -> None:
    s = spec([target(coldStartSeconds=300)])
    # a ramp 0 -> 1500 over ten minutes: the trend reads ~2,250 five minutes ahead
    obs = world(llama=seen(2, 1500, token_rate_samples=ramp(TEN, 0.0, 2.5)))
    trend = plan(s, obs, running(TEN), TEN).decisions["llama"]
    assert trend.forecast_tokens_per_second is not None
    assert trend.forecast_tokens_per_second > 2000.0
    good = ForecastScore(trend_error=300.0, level_error=100.0, scored=MIN_SCORED)
    d = plan(s, obs, running(TEN, forecast_scores={"llama": good}), TEN).decisions["llama"]
    assert d.forecast_tokens_per_second == 1500.0
    assert d.replicas < trend.replicas, (d.message, trend.message)
    assert "= the level of now (recent error 100 vs the trend's 300)" in (d.message or "")
    worse = replace(good, level_error=400.0)
    kept = plan(s, obs, running(TEN, forecast_scores={"llama": worse}), TEN).decisions["llama"]
    assert kept.forecast_tokens_per_second == trend.forecast_tokens_per_second
    assert "by trend (level of now: recent error 400" in (kept.message or "")
    # the cycle leaves a pending pair in the memory for the cold start ahead
    after = plan(s, obs, running(TEN), TEN).memory.forecast_scores["llama"]
    assert after.due == TEN + timedelta(seconds=300) and after.level == 1500.0


def test_the_scores_survive_a_restart_through_status_and_never_force_a_patch() -> None:
    now = TEN
    pending = ForecastScore(due=now + timedelta(seconds=30), trend=1234.5678, level=1300.0,
                            trend_error=250.0, level_error=120.0, scored=42)
    memory = running(now - timedelta(seconds=30), forecast_scores={"llama": pending})
    result = plan(spec(), world(llama=seen(2, 1500, token_rate_samples=flat(1500.0, now))),
                  memory, now)
    status, _ = build_status(result, Observation({}), api.TokenBudgetStatus(), now, 1)
    wire = api.dump(status)
    restored = memory_from_status(api.parse_status(wire)).forecast_scores["llama"]
    assert restored.due == pending.due and restored.scored == 42
    assert restored.trend == 1235.0  # 4 significant digits
    assert (restored.trend_error, restored.level_error) == (250.0, 120.0)
    row = wire["targets"][0]
    moved = {**wire, "targets": [{**row, "forecastScore": {**row["forecastScore"],
                                                           "scored": 43}}]}
    assert significant(moved) == significant(wire)
    broken = {**wire, "targets": [{**row, "forecastScore": {"trendError": -1.0}}]}
    assert memory_from_status(api.parse_status(broken)).forecast_scores["llama"] == \
        ForecastScore()
