"""The demand forecast's choice (DESIGN.md step 3, "use an estimate only while its recent error
beats the reactive one"): per target, the trend line's forecast or the level of now (the
newest demand sample), whichever has lately forecast better.

Units: token rates in tokens/s, durations in seconds, times tz-aware ``datetime``.

Why: the trend line through a noisy forecast window, read a cold start past now, has several
times the variance of one sample (``1 + 12 (1/2 + ahead/W)²`` sample variances for the mean
of ``n`` samples of a window ``W``), so on flat or jittery demand it forecasts swings that do
not come and the plan pays for them; on a ramp it is right and the level of now lags. Neither
wins everywhere, so each target keeps both forecasts' recent errors and uses the trend's
unless the level's has been lower (measured on the backtest yardstick: BENCHMARKS.md
"Decision quality", docs/decisions.md "Planner v2").

**The rule** (:func:`score`, :func:`use_level`): each target keeps one pending pair of
forecasts (the trend's and the level's, made at the same cycle for the same instant
``due = now + cold start``); the first cycle at or after ``due`` scores both against the first
demand sample at or after ``due`` (at most :data:`SCORE_SLACK_SECONDS` later; a missed one
drops the pair) and moves their mean absolute errors by :data:`ERROR_WEIGHT` (an exponential
average over about ten scored pairs). The level replaces the trend's forecast while its mean
error is below the trend's, after at least :data:`MIN_SCORED` pairs. The scores are part of
the memory (``status.targets[].forecastScore``), so a restart keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from tokenscale.core.types import ForecastScore

#: weight of the newest scored pair in the mean absolute errors (about ten pairs of memory)
ERROR_WEIGHT = 0.1
#: scored pairs before the level may replace the trend's forecast
MIN_SCORED = 5
#: a forecast is scored against the first demand sample at most this many seconds after due
SCORE_SLACK_SECONDS = 120.0
#: the scored count stops here (status stays small; the average forgets anyway)
MAX_SCORED = 1000


def level_forecast(samples: Sequence[tuple[datetime, float]], now: datetime,
                   window_seconds: float) -> float | None:
    """The level of now (tokens/s): the newest sample in ``[now - window, now]``; None when
    there is none."""
    for t, y in reversed(samples):
        x = (t - now).total_seconds()
        if -window_seconds <= x <= 1e-3:
            return max(0.0, y)
    return None


def observed_at(samples: Sequence[tuple[datetime, float]], due: datetime) -> float | None:
    """The first sample (tokens/s) at or after ``due``, at most :data:`SCORE_SLACK_SECONDS`
    after it; None when there is none yet (or it was missed)."""
    for t, y in samples:
        late = (t - due).total_seconds()
        if late >= -1e-3:
            return y if late <= SCORE_SLACK_SECONDS else None
    return None


def score(previous: ForecastScore | None, samples: Sequence[tuple[datetime, float]],
          now: datetime, trend: float, level: float | None,
          ahead_seconds: float) -> ForecastScore:
    """The score after this cycle: the pending pair scored once its instant has been observed
    (dropped when its sample was missed), and this cycle's pair pending when none is."""
    s = previous or ForecastScore()
    due = s.due
    if due is not None and due <= now:
        actual = observed_at(samples, due)
        if actual is not None:
            w = ERROR_WEIGHT if s.scored else 1.0  # the first pair sets the averages
            s = ForecastScore(
                trend_error=s.trend_error + w * (abs(s.trend - actual) - s.trend_error),
                level_error=s.level_error + w * (abs(s.level - actual) - s.level_error),
                scored=min(s.scored + 1, MAX_SCORED))
        elif (now - due).total_seconds() > SCORE_SLACK_SECONDS:
            s = ForecastScore(trend_error=s.trend_error, level_error=s.level_error,
                              scored=s.scored)
    if s.due is None and level is not None:
        s = ForecastScore(now + timedelta(seconds=ahead_seconds), trend, level,
                          s.trend_error, s.level_error, s.scored)
    return s


def use_level(s: ForecastScore | None) -> bool:
    """True while the level's recent mean absolute error is below the trend's (after
    :data:`MIN_SCORED` scored pairs)."""
    return s is not None and s.scored >= MIN_SCORED and s.level_error < s.trend_error
