"""Capacity planning: demand forecast, replicas needed, tolerance, step limits, stabilization.

Units: token rates in tokens/s, durations in seconds, replicas as counts.

Demand (DESIGN.md step 3) is the *arrival* rate, not only the served rate. Its samples are a
gateway's arrival counter when the target has one (``arrival_rate_samples``), else the served
token rate. The observed rate is the newest sample. The trend is a least-squares line through
the samples of the last ``forecastWindowSeconds``; the forecast is that line's value
``coldStartSeconds`` after now (never negative), i.e. the rate when a replica requested now would
be ready. Fewer than two samples, or all at one instant, forecast the observed rate. The trend's
forecast is used only while its recent error beats the level of now's (the newest sample, same
horizon): otherwise the level is the forecast (:mod:`tokenscale.core.level`). Without an
arrival counter two corrections recover what the served rate hides:

* **Queue growth.** Requests that arrived but were not served are the queue's growth since the
  last cycle: ``max(0, queue - previous queue) × tokensPerRequest / seconds`` is added to the
  observed rate.
* **Censoring.** While an admission rate is published and the served rate reaches it
  (:data:`CENSORED_SHARE` of it), the demand above it is invisible: it is taken as at least the
  rate that needs one replica more than today's admitted capacity, and more than the tolerance
  band (:func:`censored_floor`), so the planner keeps asking for capacity while the budget
  allows and admission stays published while it does not.

**The margin is earned, not fixed.** The demand's samples scatter around their trend line; the
residual standard deviation ``σ`` (:func:`trend_spread`) is how far the rate strays from the
forecast within the window. The planner provisions ``z × σ`` above the demand, with ``z`` the
normal quantile of the target's ``slo.attainment`` (2.33 for 99 %): smooth traffic gets a thin
margin, bursty traffic a wide one. A level shift (a step, a restarted Prometheus' partial
readings) widens the spread too, until it leaves the forecast window: the planner is careful for
that long after a sudden change (measured cheaper overall than a fixed headroom; spreads over
shorter windows or robust to shifts gave back most of the gain on the smooth ServeGen days).
``headroom`` is an optional user floor under it: ``max(demand × (1 + headroom), demand + z ×
σ)``.

Queued requests add ``queue × tokensPerRequest / drainSeconds`` tokens/s, with
``tokensPerRequest`` from the observation or :data:`DEFAULT_TOKENS_PER_REQUEST`, and
``drainSeconds = max(intervalSeconds, coldStartSeconds)``: new replicas cannot help sooner than
they start, and the queue is re-evaluated every interval anyway. ``demand = max(observed +
growth, forecast, censored floor) + drain``.

Need (step 4). ``max(demand × (1 + headroom), demand + z × σ) / (tokensPerReplicaPerSecond ×
utilization)`` replicas, rounded up (with a 1e-9 slack against float noise), then clamped to
``[minReplicas, maxReplicas]``, with the planned utilization of :func:`noise_band`.

**The band is the demand's own noise** (:func:`noise_band`). The user's ``targetUtilization``
and ``tolerance`` together say how loaded the replicas may get before the planner adds one: the
need at ``targetUtilization`` may exceed the current replicas by ``tolerance``, so the load
reaches ``targetUtilization × (1 + tolerance)`` of the capacity within the SLO (the *ceiling*).
The band exists so that noise in the metric moves nothing; how much noise there is, the samples
say: a move of the need within the margin ``z × σ`` is one the margin already covers (up) or
noise at the SLO's confidence (down), ``z`` at least :data:`NOISE_QUANTILE` (99 %) for the band.
Where that, relative to the demand, is narrower than ``tolerance`` the band narrows to it, and
the planned utilization rises to ``targetUtilization × (1 + tolerance) / (1 + band)`` (at most
1: the band stays at least ``ceiling - 1``) so that the ceiling stays where the user put it:
smooth traffic is tracked closely at the same peak load, noisy traffic keeps the user's band and
utilization. With fewer than three samples in the window nothing is known of the noise: the
user's band and utilization stand. (Measured on the yardstick: ServeGen days at 0.898-0.952 of
the envelope instead of 0.931-0.963, the bursty traces within their intervals; one σ instead of
the margin saves a little more and flaps four times as often; tolerance 0 at a fixed utilization
0.8 costs 1-4 % more, BENCHMARKS.md.)

SLO breach (steps 3 and 6): while the latency the requests see now (``recent_itl_seconds``,
``recent_ttft_seconds``) is above the target's ``slo`` and no replica is starting (every
requested one is ready), the need is at least one replica more than current, at once: the
tolerance band and the stabilization do not apply (reason SloBreach; the scale-up limit does).
Only a breach a replica more can relieve adds one (:func:`breach_not_the_load`): a TTFT while
requests wait, an ITL unless the latency history shows it above the SLO at lighter loads too;
otherwise the target holds (reason SloBreach): a latency above the SLO is never a scale-down.

Behaviour (step 6), HPA-like:
* Tolerance: when the unrounded need is within ``±band`` of the current replicas (ratio
  ``need / current``), the current count is kept (only if current is within [min, max]); the
  band is ``tolerance`` narrowed to the demand's noise (above).
* Scale-up is limited to ``max(current + 4, 2 × current)`` per interval (never below min).
* Scale-down is stabilized: the target goes to the highest recommendation recorded within
  ``scaleDownStabilizationSeconds`` (including this one), never below it. Recommendations are the
  demand-driven counts after tolerance, before limits and budget.
* A budget-forced scale-down is applied after these steps and is never delayed (planner).

:func:`recommend` runs these steps for one target with usable metrics and returns a
:class:`Recommendation`: the demand, the need, the count the target should run before the budget,
and the reason (DemandDriven, MinReplicas, MaxReplicas, WithinTolerance, ScaleUpLimited or
StabilizingScaleDown).

Recommendation memory is compacted losslessly: per target only a run with strictly falling
replica counts over time is kept (an older entry not above a newer one can never again be the
window maximum), then entries older than the window are dropped and at most ``limit`` per
target are kept (the newest).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Literal, NamedTuple

from tokenscale.api import PlanningSpec, Reason, TargetSpec
from tokenscale.core.level import level_forecast, score, use_level
from tokenscale.core.service import MIN_SAMPLES
from tokenscale.core.types import ForecastScore, RecommendationEntry, TargetObservation

#: The band ignores moves of the need that the demand's noise makes with this normal quantile
#: (99 %), or the SLO's when that is higher: a lower slo.attainment (a thinner margin) does not
#: let noise alone move replicas every cycle.
NOISE_QUANTILE = NormalDist().inv_cdf(0.99)

#: A served rate at this share of the published admission rate is censored by it.
CENSORED_SHARE = 0.95

#: Tokens per queued request when the observation does not say (prompt + output, typical chat).
DEFAULT_TOKENS_PER_REQUEST = 1000.0
#: Scale-up step: at most this many replicas more, or doubling, whichever is larger.
SCALE_UP_MIN_STEP = 4


class Demand(NamedTuple):
    """The demand of one target (tokens/s) and the unrounded replicas it needs."""

    observed: float
    forecast: float  # the trend coldStartSeconds ahead
    drain: float  # the rate that drains the queue
    total: float  # max(observed + growth, forecast, censored floor) + drain
    raw_need: float
    margin: float = 0.0  # z x the samples' spread around their trend, tokens/s
    growth: float = 0.0  # the queue's growth since the last cycle, tokens/s
    censored: bool = False  # the served rate is at the admission rate: demand is above it
    source: Literal["served", "arrivals"] = "served"  # arrivals: a gateway's counter
    #: which forecast is in use: the trend's, or the level of now (its recent error is lower)
    method: Literal["trend", "level"] = "trend"
    score: ForecastScore | None = None  # both forecasts' recent errors, for the memory
    #: the tolerance band in force: the user's, narrowed to the demand's noise (z·σ / demand)
    band: float = 0.0
    #: the planned share of the capacity within the SLO (keeps the ceiling, see noise_band)
    utilization: float = 1.0


class Previous(NamedTuple):
    """What the last cycle saw of one target (from the memory): its queue and the admission
    rate it published, ``seconds`` before now."""

    queue: float | None = None  # waiting requests
    admission: float | None = None  # tokens/s
    seconds: float = 0.0
    score: ForecastScore | None = None  # the trend's and the level's recent errors


#: Nothing known of the last cycle (the first one).
NOTHING_PREVIOUS = Previous()


class Recommendation(NamedTuple):
    """What demand asks of one target, before the budget, and why."""

    demand: Demand
    current: int
    need: int  # demand-driven replicas within [min, max]
    recommendation: int  # after the tolerance band; remembered for stabilization
    behaviour: int  # after the scale-up limit and scale-down stabilization
    reason: Reason
    window: int = 0  # s an unneeded replica is kept (scale_down_window), when scaling down
    #: why a latency above the SLO now is not one more replica's to fix (breach_not_the_load)
    unrelieved: str | None = None


def estimate_demand(target: TargetSpec, obs: TargetObservation, planning: PlanningSpec,
                    now: datetime, previous: Previous = NOTHING_PREVIOUS) -> Demand:
    """Step 3, demand: the arrival rate observed and forecast, plus the queue's drain, and the
    raw need (see the module docstring)."""
    arrivals = bool(obs.arrival_rate_samples)
    samples = obs.arrival_rate_samples if arrivals else obs.token_rate_samples
    observed, forecast = trend_forecast(
        samples, now, planning.forecast_window_seconds, target.cold_start_seconds
    )
    growth = 0.0
    censored = False
    floor = 0.0
    if not arrivals:
        growth = queue_growth_rate(obs.queue_length, previous, obs.tokens_per_request)
        limit = previous.admission
        if limit is not None and limit > 0 and observed >= CENSORED_SHARE * limit:
            censored = True
            floor = censored_floor(limit, obs.ready_replicas, planning.tolerance)
    drain_seconds = max(planning.interval_seconds, target.cold_start_seconds)
    drain = queue_drain_rate(obs.queue_length, obs.tokens_per_request, drain_seconds)
    level = level_forecast(samples, now, planning.forecast_window_seconds)
    scores = score(previous.score, samples, now, forecast, level, target.cold_start_seconds)
    method: Literal["trend", "level"] = "trend"
    if level is not None and use_level(scores):
        method, forecast = "level", level
    total = max(observed + growth, forecast, floor) + drain
    spread = trend_spread(samples, now, planning.forecast_window_seconds)
    z = slo_quantile(target.slo.attainment)
    margin = z * (spread or 0.0)
    noise = None if spread is None else max(z, NOISE_QUANTILE) * spread
    band, utilization = noise_band(planning, noise, total)
    raw = raw_need(max(total * (1.0 + planning.headroom), total + margin), 0.0,
                   target.capacity, utilization)
    return Demand(observed, forecast, drain, total, raw, margin, growth, censored,
                  "arrivals" if arrivals else "served", method, scores, band, utilization)


def noise_band(planning: PlanningSpec, noise: float | None,
               demand: float) -> tuple[float, float]:
    """``(band, utilization)``: the tolerance band narrowed to the demand's noise (``noise``,
    the margin ``z × σ`` with ``z`` at least :data:`NOISE_QUANTILE`, relative to the demand,
    both in tokens/s; at most ``tolerance``, and not below ``ceiling - 1`` so the utilization
    stays at most 1) and the planned utilization that keeps the ceiling ``targetUtilization ×
    (1 + tolerance)``. The user's own pair when the noise is unknown (None: fewer than three
    samples), when there is no demand, or when the band would not narrow."""
    tolerance, utilization = planning.tolerance, planning.target_utilization
    if noise is None or demand <= 0:
        return tolerance, utilization
    ceiling = utilization * (1.0 + tolerance)
    # never so narrow that the plan would pass the full capacity within the SLO
    band = max(noise / demand, ceiling - 1.0)
    if band >= tolerance - 1e-12:
        return tolerance, utilization
    return band, ceiling / (1.0 + band)


def slo_quantile(attainment: float) -> float:
    """The standard normal quantile of the SLO's attainment (2.33 for 0.99): how many
    standard deviations of the demand's spread the margin covers (0 for attainment ≤ 0.5)."""
    if attainment <= 0.5:
        return 0.0
    return NormalDist().inv_cdf(min(attainment, 0.9999))


def trend_spread(samples: Sequence[tuple[datetime, float]], now: datetime,
                 window_seconds: float) -> float | None:
    """The residual standard deviation (tokens/s) of the samples in ``[now - window, now]``
    around their least-squares line (None with fewer than three samples: nothing known)."""
    points = [(x, y) for x, y in (((t - now).total_seconds(), y) for t, y in samples)
              if -window_seconds <= x <= 1e-3]
    n = len(points)
    if n < 3:
        return None
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx if sxx > 0 else 0.0
    squares = sum((y - mean_y - slope * (x - mean_x)) ** 2 for x, y in points)
    return math.sqrt(squares / (n - 2))


def queue_growth_rate(queue_length: float, previous: Previous,
                      tokens_per_request: float | None) -> float:
    """Tokens/s that arrived but were not served since the last cycle: the queue's growth
    (waiting requests) × tokens per request ÷ the seconds between (0 when it shrank or
    nothing is known)."""
    if previous.queue is None or previous.seconds <= 0 or queue_length <= previous.queue:
        return 0.0
    return queue_drain_rate(queue_length - previous.queue, tokens_per_request,
                            previous.seconds)


def censored_floor(admission: float, ready: int, tolerance: float) -> float:
    """The least demand (tokens/s) to assume when the served rate sits at the admission rate
    ``admission``: what one replica more than the ``ready`` ones serve, and at least one
    tolerance band beyond, so the need always leaves the band; the planner asks for more
    capacity step by step until the served rate falls below the limit (the demand is found)
    or the budget caps it (admission stays)."""
    per_replica = admission / ready if ready > 0 else admission
    return max(admission + per_replica, admission * (1.0 + 2.0 * tolerance))


def recommend(target: TargetSpec, obs: TargetObservation, planning: PlanningSpec,
              history: Sequence[RecommendationEntry], now: datetime,
              previous: Previous = NOTHING_PREVIOUS) -> Recommendation:
    """Steps 3, 4 and 6 for one target: demand, need within [min, max], tolerance band, then
    the scale-up limit or the scale-down stabilization over ``history``."""
    demand = estimate_demand(target, obs, planning, now, previous)
    low, high = target.min_replicas, target.max_replicas
    unclamped = round_need(demand.raw_need)
    need = clamp(unclamped, low, high)
    reason: Reason = (
        "MinReplicas" if unclamped < low else "MaxReplicas" if unclamped > high else "DemandDriven"
    )
    current = max(0, obs.current_replicas)
    rec = need
    above = latency_above_slo(target, obs)
    unrelieved = breach_not_the_load(target, obs) if above else None
    if above and unrelieved is None and obs.ready_replicas >= current and current < high:
        rec = need = max(need, current + 1)
        reason = "SloBreach"
    elif above and need < min(current, high):
        # never a scale-down while the latency is above the SLO, relieved by one more
        # replica or not (a replica starting, or the cause not the load)
        rec, reason = min(current, high), "SloBreach"
    elif (need != current and low <= current <= high
            and within_tolerance(demand.raw_need, current, demand.band)):
        rec, reason = current, "WithinTolerance"
    behaviour = rec
    window = 0
    if rec > current:
        behaviour = min(rec, max(low, scale_up_limit(current)))
    elif rec < current:
        window = scale_down_window(planning, target, obs.token_rate_samples,
                                   demand.utilization)
        stable = stabilized_recommendation(history, target.name, now, window, rec)
        behaviour = min(current, clamp(stable, low, high))
        if history_seconds(obs, now) < planning.forecast_window_seconds / 2:
            # too little history to trust a fall (a restarted Prometheus): hold, within max
            behaviour = max(behaviour, min(current, high))
    if behaviour < rec:
        reason = "ScaleUpLimited"
    elif behaviour > rec:
        reason = "StabilizingScaleDown"
    return Recommendation(demand, current, need, rec, behaviour, reason, window, unrelieved)


#: Pairs of the latency history (one per pod and step) that must show the ITL above the SLO
#: at the load one more replica would leave, none within it, before a breach is taken as not
#: the load's: as many as the service model needs for a fit (a burst, or one instant seen on
#: a few pods, is not that evidence).
UNRELIEVED_PAIRS = MIN_SAMPLES


def latency_above_slo(target: TargetSpec, obs: TargetObservation) -> bool:
    """True when the latency seen now (mean ITL or TTFT) is above the target's SLO."""
    slo = target.slo
    itl, ttft = obs.recent_itl_seconds, obs.recent_ttft_seconds
    return ((itl is not None and itl > slo.inter_token_latency_seconds)
            or (ttft is not None and ttft > slo.ttft_seconds))


def breach_not_the_load(target: TargetSpec, obs: TargetObservation) -> str | None:
    """Why the latency above the SLO now is not one more replica's to fix, or None when it may
    be (or nothing is above the SLO). More replicas shorten the queue and lower each one's
    load; they do not shorten a prompt's prefill or an engine's step at a light load. So a
    TTFT above the target counts while requests wait (``queue_length`` > 0), or when the
    queue is not known (``queue_known``: its series missing); with nobody waiting it is the
    prompts' own prefill. An ITL above the target counts unless the latency history
    (``latency_samples``: load per replica and mean ITL, per pod and step) has at least
    :data:`UNRELIEVED_PAIRS` pairs at or below the load per replica one more replica would
    leave (the newest served rate over ``ready_replicas + 1``; the history's loads are in the
    tokens the target's rate counts, see :func:`tokenscale.observation.in_own_tokens`), all
    of them above the target. Without that evidence a breach is taken as the load's, as
    before (bounded by maxReplicas and the budget). Either way a latency above the SLO is
    never a scale-down (:func:`recommend`)."""
    slo = target.slo
    itl, ttft = obs.recent_itl_seconds, obs.recent_ttft_seconds
    itl_high = itl is not None and itl > slo.inter_token_latency_seconds
    ttft_high = ttft is not None and ttft > slo.ttft_seconds
    if ttft_high and (obs.queue_length > 0 or not obs.queue_known):
        return None
    if not itl_high:
        return "no request waits: a TTFT above the target is the prompts' prefill" \
            if ttft_high else None
    served = obs.token_rate_samples[-1][1] if obs.token_rate_samples else 0.0
    relieved = max(0.0, served) / (max(0, obs.ready_replicas) + 1)
    lighter = [latency for x, latency in obs.latency_samples if x <= relieved]
    slow = sum(1 for latency in lighter if latency > slo.inter_token_latency_seconds)
    if slow >= UNRELIEVED_PAIRS and slow == len(lighter):
        return (f"the ITL was above the target in all {slow} windows of its latency history "
                f"at loads up to {relieved:,.0f} tok/s per replica, none within it")
    return None


def trend_forecast(
    samples: Sequence[tuple[datetime, float]],
    now: datetime,
    window_seconds: float,
    horizon_seconds: float,
) -> tuple[float, float]:
    """``(observed, forecast)`` in tokens/s from ``(time, tokens/s)`` samples, oldest first.

    ``observed`` is the newest sample; ``forecast`` the least-squares trend over the samples in
    ``[now - window_seconds, now]`` evaluated ``horizon_seconds`` after now, at least 0.
    """
    if not samples:
        return 0.0, 0.0
    observed = max(0.0, samples[-1][1])
    n = 0
    sx = sy = sxx = sxy = 0.0
    for t, y in samples:
        x = (t - now).total_seconds()
        if x < -window_seconds or x > 1e-3:  # a sample stamped a millisecond late still counts
            continue
        n += 1
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
    if n < 2:
        return observed, observed
    denom = n * sxx - sx * sx
    if denom <= 1e-9 * max(1.0, sxx):
        return observed, observed
    slope = (n * sxy - sx * sy) / denom
    intercept = (sy - slope * sx) / n
    return observed, max(0.0, intercept + slope * horizon_seconds)


def queue_drain_rate(
    queue_length: float, tokens_per_request: float | None, drain_seconds: float
) -> float:
    """Token rate (tokens/s) that drains ``queue_length`` waiting requests in ``drain_seconds``."""
    if queue_length <= 0:
        return 0.0
    per_request = (
        tokens_per_request
        if tokens_per_request is not None and tokens_per_request > 0
        else DEFAULT_TOKENS_PER_REQUEST
    )
    return queue_length * per_request / max(1.0, drain_seconds)


def raw_need(
    demand: float, headroom: float, tokens_per_replica: float, utilization: float
) -> float:
    """Unrounded replicas for ``demand`` tokens/s: ``demand·(1+headroom)/(capacity·util)``."""
    return max(0.0, demand) * (1.0 + headroom) / (tokens_per_replica * utilization)


def round_need(raw: float) -> int:
    """Replicas for an unrounded need (ceil, ignoring float noise below 1e-9)."""
    return max(0, math.ceil(raw - 1e-9))


def clamp(value: int, low: int, high: int) -> int:
    """``value`` within ``[low, high]``."""
    return low if value < low else high if value > high else value


def within_tolerance(raw: float, current: int, tolerance: float) -> bool:
    """True when ``raw / current`` is within ``1 ± tolerance`` (never for ``current == 0``)."""
    if current <= 0:
        return False
    return abs(raw / current - 1.0) <= tolerance + 1e-9


def scale_up_limit(current: int) -> int:
    """Most replicas reachable from ``current`` in one interval: ``max(current+4, 2·current)``."""
    return max(current + SCALE_UP_MIN_STEP, 2 * current)


def history_seconds(obs: TargetObservation, now: datetime) -> float:
    """How far back (s) the token-rate samples reach: a scale-down needs half a forecast
    window of them, so the partial first readings of a restarted Prometheus (pods with fewer
    than two samples are missing from rate()) never scale a target down."""
    if not obs.token_rate_samples:
        return 0.0
    return (now - obs.token_rate_samples[0][0]).total_seconds()


def scale_down_window(planning: PlanningSpec, target: TargetSpec,
                      samples: Sequence[tuple[datetime, float]],
                      utilization: float) -> int:
    """How long (s) a replica the demand no longer needs is kept: the ski-rental rule. Keeping
    it costs its price per second; releasing it and needing it again costs a cold start (paid
    while not serving) and the requests that wait meanwhile. Keeping it for one cold start
    before releasing never costs more than twice the better of the two in hindsight, whatever
    the demand does next; one planning interval is the lower bound (no flapping between two
    cycles). Where the recent samples show the demand rising by a replica's worth within one
    cold start (:func:`rises_within`), a released replica would be missed before a new one is
    ready: the SLO risk outweighs the price and the user's scaleDownStabilizationSeconds, the
    upper bound in any case, applies in full."""
    user = planning.scale_down_stabilization_seconds
    keep = max(target.cold_start_seconds, planning.interval_seconds)
    one_replica = target.capacity * utilization
    if keep < user and rises_within(samples, keep) >= one_replica:
        return user
    return min(user, keep)


def rises_within(samples: Sequence[tuple[datetime, float]], seconds: float) -> float:
    """The largest rise of the token rate (tokens/s) between two samples at most ``seconds``
    apart (0 without a rise)."""
    best = 0.0
    for i, (t0, r0) in enumerate(samples):
        for t1, r1 in samples[i + 1:]:
            if (t1 - t0).total_seconds() > seconds:
                break
            best = max(best, r1 - r0)
    return best


def stabilized_recommendation(
    history: Iterable[RecommendationEntry],
    target: str,
    now: datetime,
    window_seconds: float,
    recommendation: int,
) -> int:
    """Highest recommendation for ``target`` in ``[now - window, now]``, this one included."""
    best = recommendation
    if window_seconds <= 0:
        return best
    oldest = now - timedelta(seconds=window_seconds)
    for entry in history:
        if entry.target == target and oldest <= entry.time <= now and entry.replicas > best:
            best = entry.replicas
    return best


def compact_recommendations(
    entries: Iterable[RecommendationEntry],
    now: datetime,
    window_seconds: float,
    limit: int,
) -> list[RecommendationEntry]:
    """One target's entries (any order) reduced to what future windows can still need.

    Keeps entries in ``[now - window, now]`` whose replicas exceed every newer entry's, oldest
    first, at most ``limit`` (the newest).
    """
    oldest = now - timedelta(seconds=window_seconds)
    live = sorted(
        (e for e in entries if oldest <= e.time <= now), key=lambda e: e.time, reverse=True
    )
    kept: list[RecommendationEntry] = []
    highest = -1
    for e in live:  # newest first
        if e.replicas > highest:
            kept.append(e)
            highest = e.replicas
    kept.reverse()
    return kept[-limit:] if limit > 0 else []
