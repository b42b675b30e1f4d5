"""TokenBudget status <-> core values: memory restore, status building, conditions, patches.

Status patch policy (see :func:`patch_cause`): the operator compares the new status with the
last one it wrote (or read) in a *significant view*: ``lastReconcileTime`` left out, the
recommendation history reduced to its replica values (its timestamps move every cycle), the
``message`` of conditions and targets left out (they quote durations; reason and status
stay), and floats rounded to 3 significant digits (spend grows continuously). It patches when that
view changed — integers and strings exactly, floats by more than a relative tolerance against
the last written value (10% for token rates and queues, 1% otherwise, the period's spend
totals 1% of their projection to the period's end; see :func:`differs`) —
or when ``heartbeat`` seconds passed since the last patch, so the stored spend and rates are
never older than the heartbeat. Skipping a patch loses nothing on restart: the memory
pairs ``spend.cost`` with ``lastReconcileTime`` of the same write, and the cost accrued
since then is integrated again from the replicas observed after the restart.

Conditions keep their ``lastTransitionTime`` while their status stays the same (reason and
message may change); a changed status gets ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from tokenscale import api
from tokenscale.core.types import (
    PROFILE_SLOTS,
    BindingLimit,
    ConditionValue,
    DemandProfile,
    ForecastScore,
    Memory,
    Observation,
    Plan,
    RecommendationEntry,
    ServiceFit,
    TargetObservation,
)

CONDITION_ORDER = (
    "Ready", "SpecValid", "MetricsAvailable", "BudgetAtRisk", "BudgetExhausted",
    "ScalingLimited", "Conflict",
)
#: Condition statuses that are worth an Event when a condition first appears.
_ABNORMAL = {
    "Ready": "False", "SpecValid": "False", "MetricsAvailable": "False",
    "BudgetAtRisk": "True", "BudgetExhausted": "True", "ScalingLimited": "True",
    "Conflict": "True",
}


def to_rfc3339(when: datetime) -> str:
    """UTC RFC 3339; microseconds only when there are any."""
    when = when.astimezone(UTC)
    if when.microsecond:
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """Parse an RFC 3339 timestamp (``Z`` or offset); None if missing or malformed."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# ------------------------------------------------------------------------------- memory


def memory_from_status(status: api.TokenBudgetStatus) -> Memory:
    """The core's memory as persisted in status (what makes a restart lossless)."""
    recs = []
    for r in status.recommendations:
        t = parse_time(r.time)
        if t is not None:
            recs.append(RecommendationEntry(target=r.target, time=t, replicas=r.replicas))
    last_scale: dict[str, datetime] = {}
    for target in status.targets:
        t = parse_time(target.last_scale_time)
        if t is not None:
            last_scale[target.name] = t
    profiles = {p.target: _profile(p) for p in status.demand_profiles}
    queues = {t.name: t.queue_length for t in status.targets
              if t.queue_length is not None and math.isfinite(t.queue_length)}
    scores = {t.name: _score(t.forecast_score) for t in status.targets
              if t.forecast_score is not None}
    admissions = {t.name: t.admission.tokens_per_second for t in status.targets
                  if t.admission is not None and math.isfinite(t.admission.tokens_per_second)}
    prices = {t.name: t.price.cost_per_replica_hour for t in status.targets
              if t.price is not None and math.isfinite(t.price.cost_per_replica_hour)
              and t.price.cost_per_replica_hour > 0}
    return Memory(
        period_start=parse_time(status.period.start) if status.period else None,
        spend_cost=status.spend.cost if status.spend else 0.0,
        spend_tokens=status.spend.tokens if status.spend else 0.0,
        last_accounted=parse_time(status.last_reconcile_time),
        recommendations=tuple(recs),
        metrics_unavailable_since=parse_time(status.metrics_unavailable_since),
        last_scale_time=last_scale,
        demand_profiles=profiles,
        queues=queues,
        admissions=admissions,
        prices=prices,
        forecast_scores=scores,
    )


def _score(s: api.ForecastScoreStatus) -> ForecastScore:
    """A target's forecast errors as persisted (broken numbers read as none scored)."""
    numbers = (s.trend, s.level, s.trend_error, s.level_error)
    if not all(math.isfinite(x) and x >= 0 for x in numbers):
        return ForecastScore()
    return ForecastScore(due=parse_time(s.due), trend=s.trend, level=s.level,
                         trend_error=s.trend_error, level_error=s.level_error,
                         scored=s.scored)


def _score_status(s: ForecastScore | None) -> api.ForecastScoreStatus | None:
    """A target's forecast errors for status, to 4 significant digits."""
    if s is None:
        return None

    def r(x: float) -> float:
        return float(f"{x:.4g}")

    return api.ForecastScoreStatus(
        due=to_rfc3339(s.due) if s.due else None, trend=r(s.trend), level=r(s.level),
        trend_error=r(s.trend_error), level_error=r(s.level_error), scored=s.scored)


def _profile(p: api.DemandProfileStatus) -> DemandProfile:
    """A target's demand profile as persisted (missing or broken slots read as unseen)."""
    slots = [v if math.isfinite(v) else -1.0 for v in p.tokens_per_second[:PROFILE_SLOTS]]
    slots += [-1.0] * (PROFILE_SLOTS - len(slots))
    level = p.level if math.isfinite(p.level) and p.level > 0 else 1.0
    overhead = p.overhead if math.isfinite(p.overhead) and p.overhead > 0 else 1.0
    need = p.overhead_need if math.isfinite(p.overhead_need) and p.overhead_need > 0 else 0.0
    return DemandProfile(slots=tuple(slots), level=level, slot_start=parse_time(p.slot_start),
                         slot_tokens=max(0.0, p.slot_tokens),
                         slot_seconds=max(0.0, p.slot_seconds), overhead=overhead,
                         overhead_need=need)


def _profile_status(target: str, p: DemandProfile) -> api.DemandProfileStatus:
    """A demand profile for status, to 4 significant digits."""
    def r(x: float) -> float:
        return float(f"{x:.4g}") if math.isfinite(x) else -1.0

    return api.DemandProfileStatus(
        target=target, tokens_per_second=[r(v) if v >= 0 else -1.0 for v in p.slots],
        level=r(p.level), slot_start=to_rfc3339(p.slot_start) if p.slot_start else None,
        slot_tokens=r(p.slot_tokens), slot_seconds=r(p.slot_seconds), overhead=r(p.overhead),
        overhead_need=max(0.0, r(p.overhead_need)))


def _amount(x: float, unit: str) -> str:
    """A limit for the Budget column: ``480 USD``, ``12.5 EUR``, ``2G tokens``."""
    if unit == "tokens":
        for suffix, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(x) >= div:
                return f"{x / div:.4g}{suffix} tokens"
        return f"{x:.4g} tokens"
    text = f"{x:,.2f}"
    return f"{text.removesuffix('.00')} {unit}"


def _budget_status(binding: BindingLimit | None) -> api.BudgetStatus | None:
    if binding is None:
        return None
    return api.BudgetStatus(binding=binding.kind, limit=binding.limit, unit=binding.unit,
                            spent=binding.spent, projected=binding.projected,
                            display=_amount(binding.limit, binding.unit))


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class ConditionChange:
    """A condition whose status changed (``before`` None: it is new)."""

    before: api.Condition | None
    after: api.Condition

    def worth_event(self) -> bool:
        """Status flips always; a new condition only when it is abnormal."""
        if self.before is not None:
            return self.before.status != self.after.status
        return _ABNORMAL.get(self.after.type) == self.after.status


def merge_conditions(
    old: Sequence[api.Condition],
    new: Iterable[ConditionValue],
    now: datetime,
    generation: int | None,
) -> tuple[list[api.Condition], list[ConditionChange]]:
    """New conditions with lastTransitionTime carried over where the status is unchanged.

    Old conditions of types not in ``new`` are kept as they are.
    """
    by_type: dict[str, api.Condition] = {c.type: c for c in old}
    merged: dict[str, api.Condition] = dict(by_type)
    changes = []
    stamp = to_rfc3339(now.replace(microsecond=0))
    for value in new:
        before = by_type.get(value.type)
        unchanged = before is not None and before.status == value.status
        after = api.Condition(
            type=cast(Any, value.type),
            status=cast(Any, value.status),
            reason=value.reason,
            message=value.message[:32768],
            last_transition_time=before.last_transition_time if unchanged and before else stamp,
            observed_generation=generation,
        )
        merged[after.type] = after
        if not unchanged:
            changes.append(ConditionChange(before, after))
    ordered = sorted(
        merged.values(),
        key=lambda c: CONDITION_ORDER.index(c.type) if c.type in CONDITION_ORDER else 99,
    )
    return ordered, changes


# ------------------------------------------------------------------------------- status


def _finite(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def _service_model(fit: ServiceFit | None) -> api.ServiceModelStatus | None:
    """The service model of a decision for status (None: omitted, also when its capacity is
    not a finite number >= 0)."""
    capacity = _finite(fit.capacity_within_slo) if fit is not None else None
    if fit is None or capacity is None or capacity < 0:
        return None
    return api.ServiceModelStatus(
        capacity_within_slo=capacity, r2=_finite(fit.r2), samples=max(0, fit.samples),
        source=fit.source,
    )


def _latency(seen: TargetObservation | None) -> api.LatencyStatus | None:
    """The latency the target's requests see now (None: neither mean is known)."""
    if seen is None:
        return None
    itl, ttft = _finite(seen.recent_itl_seconds), _finite(seen.recent_ttft_seconds)
    if itl is None and ttft is None:
        return None
    return api.LatencyStatus(inter_token_latency_seconds=itl, ttft_seconds=ttft)


def build_status(
    plan: Plan,
    observation: Observation,
    old: api.TokenBudgetStatus,
    now: datetime,
    generation: int | None,
    extra_conditions: Iterable[ConditionValue] = (),
    metrics: Mapping[str, api.TargetMetricsStatus] | None = None,
    prices: Mapping[str, api.PriceStatus] | None = None,
) -> tuple[api.TokenBudgetStatus, list[ConditionChange]]:
    """The status that reports ``plan`` (and the memory it carries); ``metrics`` and
    ``prices`` (per target name) say what each target was read and priced with."""
    targets = []
    for name, decision in plan.decisions.items():
        seen = observation.targets.get(name)
        last_scale = plan.memory.last_scale_time.get(name)
        model = None
        if decision.model is not None:
            source = decision.model.source if decision.model.source in (
                "Spec", "Fitted", "Default") else "Default"
            model = api.ModelStatus(
                a=decision.model.a, b=decision.model.b, r2=_finite(decision.model.r2),
                samples=decision.model.samples, source=cast(Any, source),
            )
        targets.append(api.TargetStatus(
            name=name,
            current_replicas=seen.current_replicas if seen else None,
            ready_replicas=seen.ready_replicas if seen else None,
            desired_replicas=decision.replicas,
            reason=decision.reason,
            message=decision.message,
            tokens_per_second=_finite(decision.tokens_per_second),
            forecast_tokens_per_second=_finite(decision.forecast_tokens_per_second),
            queue_length=_finite(decision.queue_length),
            cost_per_hour=_finite(decision.cost_per_hour),
            last_scale_time=to_rfc3339(last_scale) if last_scale else None,
            model=model,
            admission=(api.AdmissionStatus(tokens_per_second=decision.admission_tokens_per_second,
                                           reason=decision.reason)
                       if decision.admission_tokens_per_second is not None else None),
            service_model=_service_model(decision.service_model),
            latency=_latency(seen),
            metrics=(metrics or {}).get(name),
            price=(prices or {}).get(name),
            forecast_score=_score_status(plan.memory.forecast_scores.get(name)),
        ))
    conditions, changes = merge_conditions(
        old.conditions, [*extra_conditions, *plan.conditions], now, generation
    )
    recs = sorted(plan.memory.recommendations, key=lambda r: r.time)[-api.MAX_RECOMMENDATIONS:]
    scale_times = list(plan.memory.last_scale_time.values())
    spend = plan.spend
    observed_rates = [t.tokens_per_second for t in targets if t.tokens_per_second is not None]
    status = api.TokenBudgetStatus(
        observed_generation=generation,
        phase=cast(Any, plan.phase),
        conditions=conditions,
        period=api.PeriodStatus(
            start=to_rfc3339(plan.period_start), end=to_rfc3339(plan.period_end)
        ),
        spend=api.SpendStatus(
            cost=spend.cost,
            tokens=spend.tokens,
            projected_cost=spend.projected_cost,
            projected_tokens=spend.projected_tokens,
            cost_per_hour=spend.cost_per_hour,
            cost_per_million_tokens=_finite(spend.cost_per_million_tokens),
        ),
        targets=targets,
        replicas=sum(t.current_replicas or 0 for t in targets),
        desired_replicas=sum(t.desired_replicas or 0 for t in targets),
        tokens_per_second=sum(observed_rates) if observed_rates else None,
        last_scale_time=to_rfc3339(max(scale_times)) if scale_times else None,
        last_reconcile_time=to_rfc3339(now),
        metrics_unavailable_since=(
            to_rfc3339(plan.memory.metrics_unavailable_since)
            if plan.memory.metrics_unavailable_since else None
        ),
        recommendations=[
            api.Recommendation(target=r.target, time=to_rfc3339(r.time), replicas=r.replicas)
            for r in recs
        ],
        budget=_budget_status(plan.binding),
        demand_profiles=[_profile_status(name, p)
                         for name, p in plan.memory.demand_profiles.items()],
    )
    return status, changes


def invalid_status(
    old: api.TokenBudgetStatus, problems: Sequence[str], now: datetime, generation: int | None
) -> tuple[api.TokenBudgetStatus, list[ConditionChange]]:
    """Status of a TokenBudget whose spec does not validate: phase Invalid, nothing scaled.

    Spend and memory stay as they are, so fixing the spec continues the period's accounting.
    """
    message = "; ".join(problems)[:32768]
    conditions, changes = merge_conditions(
        old.conditions,
        [
            ConditionValue("SpecValid", "False", "InvalidSpec", message),
            ConditionValue("Ready", "False", "InvalidSpec", "the spec does not validate"),
        ],
        now,
        generation,
    )
    status = old.model_copy(update={
        "phase": "Invalid", "conditions": conditions, "observed_generation": generation,
    })
    return status, changes


def unobservable_status(
    old: api.TokenBudgetStatus, message: str, now: datetime, generation: int | None
) -> tuple[api.TokenBudgetStatus, list[ConditionChange]]:
    """Status when the targets cannot be read at all (e.g. the LIST of workloads is
    refused): Ready=False reason WorkloadsUnreadable, phase Degraded, nothing else touched.

    Spend and ``lastReconcileTime`` stay as they are, so the next readable cycle accounts
    the whole gap with the replicas it then observes.
    """
    conditions, changes = merge_conditions(
        old.conditions,
        [ConditionValue("Ready", "False", "WorkloadsUnreadable", message[:32768])],
        now,
        generation,
    )
    status = old.model_copy(update={
        "phase": "Degraded", "conditions": conditions, "observed_generation": generation,
    })
    return status, changes


def spec_valid_condition() -> ConditionValue:
    """SpecValid=True."""
    return ConditionValue("SpecValid", "True", "Valid", "the spec validates")


# ---------------------------------------------------------------------- patch policy


def _round(value: Any) -> Any:
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return value
        return float(f"{value:.3g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


#: left out of the significant view: the reconcile time, and the demand profiles (they move a
#: little every cycle; written with the next significant change or the heartbeat, a restart
#: loses at most a heartbeat of learning)
_NOT_SIGNIFICANT = frozenset({"lastReconcileTime", "demandProfiles"})


def significant(status: Mapping[str, Any]) -> dict[str, Any]:
    """The view of a wire-form status that decides whether to patch."""
    view = {k: v for k, v in status.items() if k not in _NOT_SIGNIFICANT}
    # messages quote durations that tick every cycle; a forecast score moves every cycle too
    # (memory written along with a patch that is due anyway, like the demand profiles)
    for key in ("conditions", "targets"):
        view[key] = [
            {k: v for k, v in item.items() if k not in ("message", "forecastScore")}
            for item in view.get(key) or [] if isinstance(item, dict)
        ]
    recs = view.pop("recommendations", None) or []
    view["recommendations"] = [
        (r.get("target"), r.get("replicas")) for r in recs if isinstance(r, dict)
    ]
    result: dict[str, Any] = _round(view)
    return result


#: Relative change of a float (vs. the last written status) that is worth a patch. Rates,
#: queues and the latency seen now are noisy from cycle to cycle (the planner's own band is
#: at most its tolerance, 10 % by default); spend grows steadily. Integers (replicas) and
#: strings must match exactly.
RATE_TOLERANCE = 0.10
FLOAT_TOLERANCE = 0.01
_RATE_KEYS = frozenset({"tokensPerSecond", "forecastTokensPerSecond", "queueLength",
                        "latency", "interTokenLatencySeconds", "ttftSeconds"})
#: The period's running totals in ``spend`` and ``budget`` and the projection of each to the
#: period's end:
#: a total is compared against the larger of itself and that projection, so it is written
#: every 1% of what the period will cost (or at the heartbeat), not every 1% of itself. A
#: total starts at 0 with every period: relative to itself, every status changed in every
#: cycle of a period's first hour (670 patches per cycle at 1,000 budgets, BENCHMARKS.md).
_SPEND_TOTALS = {
    "spend": {"cost": "projectedCost", "tokens": "projectedTokens"},
    "budget": {"spent": "projected"},  # the binding limit's total, in its unit
}


def differs(old: Any, new: Any, key: str = "", floor: float = 0.0) -> bool:
    """Whether two significant views differ, floats beyond their relative tolerance.

    Compared with the last *written* status, so slow drift adds up to a patch and a value
    hovering at a rounding boundary does not flap. A float's tolerance is relative to the
    larger of its two values and ``floor`` (a running total's projection to the period's
    end, :data:`_SPEND_TOTALS`).
    """
    if isinstance(old, dict) and isinstance(new, dict):
        if old.keys() != new.keys():
            return True
        totals = _SPEND_TOTALS.get(key, {})
        return any(differs(old[k], new[k], k, _magnitude(new.get(totals.get(k, ""))))
                   for k in new)
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        return len(old) != len(new) or any(
            differs(a, b, key) for a, b in zip(old, new, strict=True))
    numbers = (int, float)
    if (isinstance(old, float) or isinstance(new, float)) and isinstance(old, numbers) \
            and isinstance(new, numbers) and not isinstance(old, bool) \
            and not isinstance(new, bool):
        if not (math.isfinite(old) and math.isfinite(new)):
            return not (old == new or (math.isnan(old) and math.isnan(new)))
        tolerance = RATE_TOLERANCE if key in _RATE_KEYS else FLOAT_TOLERANCE
        return abs(new - old) > tolerance * max(abs(old), abs(new), floor)
    return bool(old != new)


def _magnitude(value: Any) -> float:
    """``abs(value)`` of a finite number, else 0 (a projection that is missing or not one)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return abs(value)
    return 0.0


def patch_cause(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    seconds_since_patch: float | None,
    heartbeat: float,
) -> Literal["first", "changed", "drift", "heartbeat"] | None:
    """Why ``new`` is worth a patch: the first write (nothing written, or not since a start),
    a significant change, a *drift* (only token rates, queue lengths and latencies moved
    beyond their tolerance: what the status reports of the traffic, not what the operator decided or
    remembers), or only the heartbeat (the last write is ``heartbeat`` seconds old); None when
    it is not."""
    if old is None or seconds_since_patch is None:
        return "first"
    before, after = significant(old), significant(new)
    if differs(before, after):
        return "changed" if differs(_without_rates(before), _without_rates(after)) else "drift"
    return "heartbeat" if seconds_since_patch >= heartbeat else None


def _without_rates(view: Any) -> Any:
    """A significant view without its token rates, queue lengths and latencies
    (:data:`_RATE_KEYS`)."""
    if isinstance(view, dict):
        return {k: _without_rates(v) for k, v in view.items() if k not in _RATE_KEYS}
    if isinstance(view, list):
        return [_without_rates(v) for v in view]
    return view


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """An RFC 7386 merge patch turning ``old`` into ``new`` (null removes a key)."""
    old = old or {}
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif before != value:
            patch[key] = value
    return patch
