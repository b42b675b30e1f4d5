"""Where the demand last changed course (DESIGN.md step 3): the forecast reads the samples of
the demand's current regime, not a line through a step or a bend.

Units: token rates in tokens/s, durations in seconds, times tz-aware ``datetime``.

Why: the trend and its spread are a least-squares line through the forecast window (10 min by
default). When the demand changed course within it (a ramp that levelled off, traffic moved
to or from the target, a deployment going live), one line through both parts forecasts a rise
or fall that is over, and its residuals are the change itself, not noise: the margin ``z × σ``
stays wide, and the planner pays for a change that has happened, until it leaves the window.

**The rule** (:func:`current_regime`): the window's samples are split where a line through the
earlier part and one through the later part leave the least squared residuals, the later part
at least :data:`MIN_RECENT` samples and the earlier at least :data:`MIN_EARLIER`. The split is
accepted when the Bayesian information criterion prefers the two lines (three more
parameters: a slope, an intercept, the split) over one: ``m × ln(split / one) + 3 × ln(m) <
0``, with ``m`` the effective number of samples. Successive samples of a rate over a window
longer than the scrape interval share most of their data, so ``m`` is ``n (1 - ρ) / (1 + ρ)``
with ``ρ`` the lag-one autocorrelation of the single line's residuals (at least
:data:`MIN_EFFECTIVE`): counted as ``n`` independent samples, every wander of a smooth day
would pass for a change. Recurring bursts are not a change of course: no single split
explains them, and the whole window stands.

When accepted, the trend is fitted through the later part only, and the spread is the two
lines' pooled residual standard deviation: the noise of the whole window, without the change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from itertools import pairwise
from typing import NamedTuple

#: the later part of a split window holds at least this many samples (2 min at 15 s scrapes)
MIN_RECENT = 8
#: the earlier part at least this many (a line and one degree of freedom)
MIN_EARLIER = 3
#: the effective number of samples is at least this (the criterion's threshold is then
#: ``MIN_EFFECTIVE^(-3/MIN_EFFECTIVE)`` = 0.35 of one line's squared residuals at most)
MIN_EFFECTIVE = 2.0


class Regime(NamedTuple):
    """The demand's current regime within the forecast window."""

    #: the first sample after the change of course; None: no change, the whole window
    since: datetime | None = None
    #: the two lines' pooled residual standard deviation (tokens/s) when split
    spread: float | None = None


#: no change of course found (or too few samples to look for one)
WHOLE_WINDOW = Regime()


def _residual_squares(n: int, sx: float, sy: float, sxx: float, sxy: float,
                      syy: float) -> float:
    """The squared residuals around the least-squares line of ``n`` points with these sums
    of ``x`` (s), ``y`` (tokens/s), ``x²``, ``xy`` and ``y²``."""
    if n < 2:
        return 0.0
    cxx = sxx - sx * sx / n
    cxy = sxy - sx * sy / n
    cyy = syy - sy * sy / n
    return max(0.0, cyy - (cxy * cxy / cxx if cxx > 1e-12 else 0.0))


def _effective_samples(points: list[tuple[float, float]]) -> float:
    """``n (1 - ρ) / (1 + ρ)``, ``ρ`` the lag-one autocorrelation of the residuals around the
    window's least-squares line (0 when negative), at least :data:`MIN_EFFECTIVE`."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    cxx = sum((x - mean_x) ** 2 for x, _ in points)
    slope = (sum((x - mean_x) * (y - mean_y) for x, y in points) / cxx) if cxx > 1e-12 else 0.0
    residuals = [y - mean_y - slope * (x - mean_x) for x, y in points]
    squares = sum(r * r for r in residuals)
    if squares <= 0:
        return float(n)
    rho = min(max(sum(a * b for a, b in pairwise(residuals)) / squares, 0.0), 1.0)
    return max(MIN_EFFECTIVE, n * (1.0 - rho) / (1.0 + rho))


def current_regime(samples: Sequence[tuple[datetime, float]], now: datetime,
                   window_seconds: float) -> Regime:
    """Where the samples in ``[now - window, now]`` last changed course, if they did (see the
    module docstring); :data:`WHOLE_WINDOW` otherwise."""
    points = [(x, y) for x, y in (((t - now).total_seconds(), y) for t, y in samples)
              if -window_seconds <= x <= 1e-3]
    n = len(points)
    if n < MIN_RECENT + MIN_EARLIER:
        return WHOLE_WINDOW
    # prefix sums: index k holds the sums of the first k points
    px, py, pxx, pxy, pyy = [0.0], [0.0], [0.0], [0.0], [0.0]
    for x, y in points:
        px.append(px[-1] + x)
        py.append(py[-1] + y)
        pxx.append(pxx[-1] + x * x)
        pxy.append(pxy[-1] + x * y)
        pyy.append(pyy[-1] + y * y)
    one = _residual_squares(n, px[n], py[n], pxx[n], pxy[n], pyy[n])
    if one <= 1e-12 * pyy[n]:  # one line fits (up to float noise): nothing to split
        return WHOLE_WINDOW
    best, cut = one, -1
    for k in range(MIN_EARLIER, n - MIN_RECENT + 1):
        split = (_residual_squares(k, px[k], py[k], pxx[k], pxy[k], pyy[k])
                 + _residual_squares(n - k, px[n] - px[k], py[n] - py[k], pxx[n] - pxx[k],
                                     pxy[n] - pxy[k], pyy[n] - pyy[k]))
        if split < best:
            best, cut = split, k
    if cut < 0:
        return WHOLE_WINDOW
    m = _effective_samples(points)
    if best > 0 and m * math.log(best / one) + 3.0 * math.log(m) >= 0:
        return WHOLE_WINDOW
    spread = math.sqrt(best / (n - 4))
    return Regime(now + timedelta(seconds=points[cut][0]), spread)
