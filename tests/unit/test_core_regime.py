"""Where the demand last changed course (core/regime.py), and what the forecast makes of it
(plain inputs)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest
from core_world import NOW, flat, noisy, ramp, seen, spec
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenscale.core.capacity import estimate_demand, trend_spread
from tokenscale.core.regime import MIN_RECENT, WHOLE_WINDOW, current_regime

Samples = tuple[tuple[datetime, float], ...]


def stepped(low: float, high: float, at: int, noise: float = 0.02) -> Samples:
    """Ten minutes of 30 s samples at ``low`` tokens/s (±``noise``), ``high`` from ``at`` s
    before now on."""
    return tuple((t, y * high / low if t > NOW - timedelta(seconds=at) else y)
                 for t, y in noisy(low, noise))


def square(high: float, low: float, half: int) -> Samples:
    """Bursts: ``high`` and ``low`` tokens/s alternating every ``half`` seconds."""
    return tuple((NOW - timedelta(seconds=s), high if (s // half) % 2 == 0 else low)
                 for s in range(600, -1, -30))


def wave(amplitude: float, period: int) -> Samples:
    """A smooth swing of ``amplitude`` tokens/s around 3,000 with ``period`` seconds."""
    return tuple((NOW - timedelta(seconds=s), 3000 + amplitude * math.sin(2 * math.pi * s / period))
                 for s in range(600, -1, -30))


def test_a_step_is_where_the_regime_begins_and_its_spread_is_the_noise_alone() -> None:
    samples = stepped(2000, 4000, at=300)
    regime = current_regime(samples, NOW, 600)
    assert regime.since == NOW - timedelta(seconds=270)  # the first sample at the new level
    assert regime.spread is not None
    # ±2 % noise around 2,000 and 4,000: tens of tokens/s, where one line through the step
    # leaves a spread of hundreds
    one_line = trend_spread(samples, NOW, 600)
    assert one_line is not None
    assert regime.spread < 100 < 500 < one_line


def test_a_ramp_that_levelled_off_is_a_change_of_course() -> None:
    samples = (*ramp(1000, 4000, now=NOW - timedelta(seconds=300), span=300),
               *flat(4000, span=270, step=30))
    regime = current_regime(samples, NOW, 600)
    assert regime.since is not None
    assert abs((NOW - regime.since).total_seconds() - 300) <= 30


@pytest.mark.parametrize(
    ("name", "samples"),
    [
        ("a level with noise", noisy(3000, 0.1)),
        ("a straight ramp", ramp(1000, 4000)),
        ("bursts every 2 min", square(4000, 2000, 120)),
        ("bursts every minute", square(4000, 2000, 60)),
        ("too few samples", flat(3000, span=300, step=30)),
    ],
)
def test_what_one_line_and_its_noise_describe_is_the_whole_window(name: str,
                                                                  samples: Samples) -> None:
    assert current_regime(samples, NOW, 600) == WHOLE_WINDOW, name


def test_the_samples_overlap_is_counted_a_wave_is_not_a_change_of_course() -> None:
    """Two lines leave 47 % of one line's squared residuals on a wave the window holds once:
    counted as 21 independent samples the criterion would split it (threshold 21^(-3/21) =
    65 %); its residuals' autocorrelation makes them about 3 (threshold 33 %)."""
    assert current_regime(wave(300, 600), NOW, 600) == WHOLE_WINDOW


def test_after_a_step_the_forecast_is_the_new_level_not_the_step_extrapolated() -> None:
    s = spec(planning={"forecastWindowSeconds": 600})
    target = s.targets[0].model_copy(update={"cold_start_seconds": 90})
    obs = seen(4, token_rate_samples=stepped(2000, 4000, at=300))
    demand = estimate_demand(target, obs, s.planning, NOW)
    assert demand.changed_seconds == 270
    # one line through the step would forecast about 4,900 tok/s 90 s ahead; a margin of
    # hundreds of tok/s
    assert demand.forecast < 4200
    assert demand.margin < 250


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1e5, allow_nan=False), min_size=0, max_size=40))
def test_a_regime_holds_enough_samples_and_stays_within_the_window(rates: list[float]) -> None:
    samples = tuple((NOW - timedelta(seconds=15 * (len(rates) - 1 - i)), r)
                    for i, r in enumerate(rates))
    regime = current_regime(samples, NOW, 600)
    if regime.since is None:
        assert regime.spread is None
        return
    recent = [t for t, _ in samples if t >= regime.since]
    assert len(recent) >= MIN_RECENT
    assert NOW - timedelta(seconds=600) <= regime.since <= NOW
    assert regime.spread is not None
    assert regime.spread >= 0
