"""DESIGN.md step 7, **Outages**: which targets the planner may steer, and what the others run.

Every target is classified once per cycle (:func:`classify`):

* ``Fixed``: another autoscaler on the workload (``conflict``), a workload problem
  (``target_error``) or no observation at all. It keeps its current replicas and is never
  scaled (reason Conflict, also in DryRun: nothing would be set); its cost still counts
  against the budget as a fixed floor.
* ``Hold``: the metrics failed (``metrics_error``) or returned no samples. It holds its
  current replicas clamped to [min, max] (MetricsUnavailableHold); once the outage is
  ``fallback.afterSeconds`` old and ``fallback.replicas`` is set, it runs
  ``max(current, fallback.replicas)`` clamped to [min, max] (FallbackReplicas): missing metrics
  never lower replicas. Budget caps still apply (they need no Prometheus). Hold targets record
  no recommendation and ignore minMarginalValue.
* ``Control``: usable metrics; the demand decides (:func:`~tokenscale.core.capacity.recommend`).

The outage start is kept in ``memory.metrics_unavailable_since``: set on the first cycle with a
Hold target, cleared when all targets report again (:func:`outage_clock`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple

from tokenscale.api import FallbackSpec, Reason, TargetSpec
from tokenscale.core.capacity import clamp
from tokenscale.core.types import TargetObservation

#: How the planner treats a target this cycle.
Kind = Literal["Control", "Hold", "Fixed"]

#: The observation of a target the world did not report.
NOT_OBSERVED = TargetObservation(
    current_replicas=0, ready_replicas=0, target_error="target not observed this cycle"
)


class Seen(NamedTuple):
    """A target as observed this cycle, and how the planner treats it."""

    target: TargetSpec
    obs: TargetObservation
    kind: Kind
    current: int  # current replicas, at least 0


def classify(target: TargetSpec, obs: TargetObservation | None) -> Seen:
    """The target's kind this cycle (Fixed > Hold > Control)."""
    if obs is None:
        obs = NOT_OBSERVED
    kind: Kind
    if obs.conflict is not None or obs.target_error is not None:
        kind = "Fixed"
    elif obs.metrics_error is not None or not obs.token_rate_samples:
        kind = "Hold"
    else:
        kind = "Control"
    return Seen(target, obs, kind, max(0, obs.current_replicas))


class Outage(NamedTuple):
    """The metrics outage of this cycle: since when, how long, and whether the fallback runs."""

    since: datetime | None  # None when every target reports
    seconds: float
    fallback_active: bool


def outage_clock(fallback: FallbackSpec, since: datetime | None, unavailable: bool,
                 now: datetime) -> Outage:
    """The outage at ``now`` given its remembered start and whether a target lacks metrics."""
    start = (since or now) if unavailable else None
    seconds = (now - start).total_seconds() if start else 0.0
    active = (unavailable and fallback.replicas is not None
              and seconds >= fallback.after_seconds)
    return Outage(start, seconds, active)


class Hold(NamedTuple):
    """What a target without usable metrics runs, and why."""

    held: int  # current replicas within [min, max]
    replicas: int  # held, or the fallback when it is active and higher
    reason: Reason  # MetricsUnavailableHold | FallbackReplicas
    error: str  # the metric failure kind
    outage_seconds: float


def hold(seen: Seen, fallback: FallbackSpec, outage: Outage) -> Hold:
    """Hold the current replicas, or run the fallback once it is active (never fewer)."""
    t = seen.target
    held = clamp(seen.current, t.min_replicas, t.max_replicas)
    error = seen.obs.metrics_error or "Empty"
    if outage.fallback_active and fallback.replicas is not None:
        replicas = max(held, clamp(fallback.replicas, t.min_replicas, t.max_replicas))
        return Hold(held, replicas, "FallbackReplicas", error, outage.seconds)
    return Hold(held, held, "MetricsUnavailableHold", error, outage.seconds)
