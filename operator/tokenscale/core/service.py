"""DESIGN.md step 2, **Service model**: what one ready replica serves within the SLO.

Continuous batching makes the inter-token latency grow with the load a replica carries. With
decode steps that lengthen as the batch fills, ``ITL(x) = itl_floor / (1 - x / C)`` for a
replica serving ``x`` tokens/s of raw capacity ``C`` (the M/M/1-like curve the backtest's
engine model follows too), so ``1 / ITL`` falls linearly with the load:

    1 / ITL = 1 / itl_floor - x / (itl_floor · C)

A least-squares line through the (load per replica, 1 / mean ITL) pairs of the engine's
histograms gives ``itl_floor`` and ``C``; the load at which the ITL reaches the target's
``slo.interTokenLatencySeconds`` is the capacity within the SLO:

    capacity = C · (1 - itl_floor / ITL_target)

The fit is used when it has enough samples (MIN_SAMPLES), explains the data (r² ≥ MIN_R2), has
the right shape (positive floor, latency rising with load) and does not extrapolate far (the
capacity at most EXTRAPOLATION × the highest load seen); otherwise the spec's
``tokensPerReplicaPerSecond`` stands. Without one (it is optional), the highest load per replica
seen with its ITL within the SLO is a capacity the replica certainly has (source Observed, a
lower bound: the planner over-provisions a little until the fit is good), and with no latency
seen at all the capacity is Unknown (0: the planner holds the target). Units: tokens/s, seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tokenscale.api import SloSpec
from tokenscale.core.types import ServiceFit

MIN_SAMPLES = 12
MIN_R2 = 0.5
#: the newest pairs used (bounds the planner's time per call)
MAX_SAMPLES = 400
#: the fitted capacity may lie at most this far beyond the highest load observed
EXTRAPOLATION = 1.5


def spec_service(spec_capacity: float, samples: int = 0, r2: float | None = None) -> ServiceFit:
    """The spec's capacity within the SLO (tokensPerReplicaPerSecond)."""
    return ServiceFit(capacity_within_slo=spec_capacity, r2=r2, samples=samples, source="Spec")


def fallback_service(spec_capacity: float | None, pairs: Sequence[tuple[float, float]],
                     slo: SloSpec, r2: float | None = None) -> ServiceFit:
    """Where the fit is not usable: the spec's capacity, else the highest load (tokens/s per
    replica) of the ``(load, 1/ITL)`` pairs whose ITL met the SLO (Observed), else Unknown."""
    if spec_capacity is not None:
        return spec_service(spec_capacity, len(pairs), r2)
    within = [x for x, inverse in pairs if 1.0 / inverse <= slo.inter_token_latency_seconds]
    if within:
        return ServiceFit(capacity_within_slo=max(within), r2=r2, samples=len(pairs),
                          source="Observed")
    return ServiceFit(capacity_within_slo=0.0, r2=r2, samples=len(pairs), source="Unknown")


def fit_service(samples: Sequence[tuple[float, float]], slo: SloSpec,
                spec_capacity: float | None) -> ServiceFit:
    """The service model of one target from ``(tokens/s per replica, mean ITL s)`` pairs."""
    pairs = [(x, 1.0 / itl) for x, itl in samples[-MAX_SAMPLES:]
             if math.isfinite(x) and math.isfinite(itl) and x > 0 and itl > 0]
    n = len(pairs)
    if n < MIN_SAMPLES:
        return fallback_service(spec_capacity, pairs, slo)
    mean_x = sum(x for x, _ in pairs) / n
    mean_y = sum(y for _, y in pairs) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in pairs)
    syy = sum((y - mean_y) ** 2 for _, y in pairs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in pairs)
    if sxx <= 0 or syy <= 0:
        return fallback_service(spec_capacity, pairs, slo)  # one load level: no curve seen
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    r2 = (sxy * sxy) / (sxx * syy)
    if slope >= 0 or intercept <= 0 or r2 < MIN_R2:
        return fallback_service(spec_capacity, pairs, slo, r2)
    floor = 1.0 / intercept
    raw = intercept / -slope
    capacity = raw * (1.0 - floor / slo.inter_token_latency_seconds)
    highest = max(x for x, _ in pairs)
    if capacity <= 0 or capacity > EXTRAPOLATION * highest:
        return fallback_service(spec_capacity, pairs, slo, r2)
    return ServiceFit(capacity_within_slo=capacity, r2=r2, samples=n, source="Fitted",
                      itl_floor_seconds=floor, raw_capacity=raw)
