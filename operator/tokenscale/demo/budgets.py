"""The sample TokenBudgets, adapted to compressed time (every change is listed on screen).

The demo plays a simulated day in a few minutes (``speedup`` simulated seconds per real
second) but the operator runs on the real clock, and budget periods are calendar periods.
So the demo applies copies of ``manifests/samples/*.yaml`` with:

- **period → Hour**, in a time zone (UTC, Asia/Kolkata +5:30 or Asia/Kathmandu +5:45) whose
  next full hour is the furthest away (always ≥ 30 min), so no period boundary falls inside a
  short demo; **maxCost / maxTokens** keep the sample's *pace* (limit per hour of its period)
  and are sized for the time left in that hour: ``pace × seconds left / 3600``. The operator's
  pacing (remaining / time left) then allows exactly the sample's rate.
- **intervalSeconds → 5** (the API minimum), **coldStartSeconds ÷ speedup** (at least 1, as
  the fleet's pods become ready after coldStart simulated seconds),
  **forecastWindowSeconds ÷ speedup** (at least 60, the API minimum) and
  **scaleDownStabilizationSeconds ÷ speedup** (at least 2 intervals).
- an annotation ``tokenscale.dev/demo-adapted`` that says what changed.

Costs stay real: a replica costs costPerReplicaHour per *real* hour, so spend grows slowly in
absolute numbers while the demand of a whole day passes by.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from tokenscale.api import PlanningSpec

DEMO_INTERVAL_SECONDS = 5
#: Candidate time zones: their full hours fall on UTC minutes :00, :30 and :15.
ZONES = ("UTC", "Asia/Kolkata", "Asia/Kathmandu")
_PERIOD_HOURS = {"Hour": 1.0, "Day": 24.0, "Week": 168.0, "Month": 30.4375 * 24}


@dataclass(frozen=True)
class AdaptedBudget:
    """One TokenBudget as the demo applies it."""

    namespace: str
    name: str
    mode: str
    manifest: dict[str, Any]
    original: dict[str, Any]
    changes: list[str]  # human-readable, shown on screen
    period_end: datetime  # end of the Hour period it was sized for (UTC)


def next_hour_boundary(zone: str, now: datetime) -> datetime:
    """The next full local hour of ``zone`` after ``now`` (UTC)."""
    local = now.astimezone(ZoneInfo(zone))
    start = local.replace(minute=0, second=0, microsecond=0)
    return (start + timedelta(hours=1)).astimezone(UTC)


def demo_time_zone(now: datetime) -> tuple[str, datetime]:
    """The candidate zone whose next full hour is furthest from ``now``, and that instant."""
    best = max(ZONES, key=lambda z: next_hour_boundary(z, now))
    return best, next_hour_boundary(best, now)


def load_samples(samples_dir: Path) -> list[dict[str, Any]]:
    """All TokenBudget documents in ``samples_dir`` (sorted by file name)."""
    out: list[dict[str, Any]] = []
    for path in sorted(samples_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "TokenBudget":
                out.append(doc)
    return out


def _fmt(x: float) -> str:
    return f"{x:,.2f}" if x < 1e6 else f"{x:,.0f}"


def adapt(doc: dict[str, Any], speedup: float, now: datetime,
          zone: str | None = None) -> AdaptedBudget:
    """The demo copy of one sample TokenBudget (see the module docstring)."""
    raw = copy.deepcopy(doc)
    spec = raw["spec"]
    meta = raw["metadata"]
    changes: list[str] = []
    budget = spec.setdefault("budget", {})
    if zone is None:
        zone, end = demo_time_zone(now)
    else:
        end = next_hour_boundary(zone, now)
    left = (end - now).total_seconds()
    period = budget.get("period", "Day")
    hours = _PERIOD_HOURS[period]
    old_zone = budget.get("timeZone", "UTC")
    budget["period"] = "Hour"
    budget["timeZone"] = zone
    changes.append(f"period {period} ({old_zone}) -> Hour ({zone}, ends "
                   f"{end.astimezone(ZoneInfo(zone)):%H:%M} local, {left / 60:.0f} min left)")
    if budget.get("maxCost") is not None:
        pace = float(budget["maxCost"]) / hours
        budget["maxCost"] = round(pace * left / 3600, 2)
        cur = budget.get("currency", "USD")
        changes.append(f"maxCost {_fmt(doc['spec']['budget']['maxCost'])} {cur}/{period} -> "
                       f"{_fmt(budget['maxCost'])} {cur} for the rest of the hour "
                       f"(same pace: {_fmt(pace)} {cur}/h)")
    if budget.get("maxTokens") is not None:
        pace = float(budget["maxTokens"]) / hours
        budget["maxTokens"] = max(1, int(pace * left / 3600))
        changes.append(f"maxTokens {_fmt(doc['spec']['budget']['maxTokens'])}/{period} -> "
                       f"{_fmt(budget['maxTokens'])} for the rest of the hour "
                       f"(same pace: {_fmt(pace / 3600)} tokens/s)")
    planning = spec.setdefault("planning", {})
    interval = int(planning.get("intervalSeconds", 30))
    planning["intervalSeconds"] = DEMO_INTERVAL_SECONDS
    window = int(planning.get("forecastWindowSeconds", 600))
    planning["forecastWindowSeconds"] = max(60, round(window / speedup))
    stab = int(planning.get("scaleDownStabilizationSeconds", 300))
    planning["scaleDownStabilizationSeconds"] = max(2 * DEMO_INTERVAL_SECONDS,
                                                    round(stab / speedup))
    changes.append(f"intervalSeconds {interval} -> {DEMO_INTERVAL_SECONDS}, "
                   f"forecastWindowSeconds {window} -> {planning['forecastWindowSeconds']}, "
                   f"scaleDownStabilizationSeconds {stab} -> "
                   f"{planning['scaleDownStabilizationSeconds']}")
    colds = []
    for target in spec.get("targets", []):
        cold = int(target.get("coldStartSeconds", 60))
        target["coldStartSeconds"] = max(1, math.ceil(cold / speedup))
        colds.append(f"{target['name']} {cold} -> {target['coldStartSeconds']}")
    changes.append("coldStartSeconds " + ", ".join(colds))
    annotations = meta.setdefault("annotations", {})
    annotations["tokenscale.dev/demo-adapted"] = "; ".join(changes)
    return AdaptedBudget(meta.get("namespace", "default"), meta["name"],
                         spec.get("mode", "Active"), raw, doc, changes, end)


def peak_tokens_per_second(budget: dict[str, Any], target_name: str,
                           peak_replicas: float, prompt_fraction: float) -> float:
    """Total tokens/s (prompt + generation) at which ``target_name`` needs ``peak_replicas``.

    need = demand × (1 + headroom) / (tokensPerReplicaPerSecond × targetUtilization) (the
    planner's floor: its learned margin and band move it by the demand's noise), with the
    API's defaults where the budget sets neither; a target whose tokenRateQuery counts
    generation tokens only sees ``1 - prompt_fraction`` of the total.
    """
    spec = budget["spec"]
    planning = spec.get("planning", {})
    defaults = PlanningSpec()
    target = next(t for t in spec["targets"] if t["name"] == target_name)
    per_replica = float(target["tokensPerReplicaPerSecond"]) * float(
        planning.get("targetUtilization", defaults.target_utilization))
    seen = peak_replicas * per_replica / (1 + float(planning.get("headroom", defaults.headroom)))
    query = (target.get("metrics") or {}).get("tokenRateQuery", "")
    if "generation_tokens" in query and "prompt_tokens" not in query:
        return seen / max(1e-9, 1 - prompt_fraction)
    return seen


def fleet_capacity(budget: dict[str, Any], target_name: str, prompt_fraction: float) -> float:
    """Total tokens/s (prompt + generation) one simulated replica serves, so that the
    operator's token-rate query sees the target's tokensPerReplicaPerSecond at full load."""
    target = next(t for t in budget["spec"]["targets"] if t["name"] == target_name)
    capacity = float(target["tokensPerReplicaPerSecond"])
    query = (target.get("metrics") or {}).get("tokenRateQuery", "")
    if "generation_tokens" in query and "prompt_tokens" not in query:
        return capacity / max(1e-9, 1 - prompt_fraction)
    return capacity


def replicas_for(budget: dict[str, Any], target_name: str, tokens_per_second: float,
                 prompt_fraction: float) -> int:
    """Replicas the operator would plan for ``tokens_per_second`` (total) on this target,
    within [minReplicas, maxReplicas] (the inverse of :func:`peak_tokens_per_second`)."""
    target = next(t for t in budget["spec"]["targets"] if t["name"] == target_name)
    per_one = peak_tokens_per_second(budget, target_name, 1.0, prompt_fraction)
    need = math.ceil(tokens_per_second / per_one - 1e-9) if per_one > 0 else 1
    return max(int(target.get("minReplicas", 1)), min(int(target["maxReplicas"]), need))
