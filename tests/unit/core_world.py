"""Builders of plain planner inputs for the core tests (no mocks: real specs and values)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tokenscale.api import TokenBudgetSpec, parse_spec
from tokenscale.core.types import (
    Memory,
    Observation,
    RecommendationEntry,
    TargetObservation,
)

#: A Wednesday noon (UTC): 12 h left in the Day period.
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def target(name: str = "llama", **fields: Any) -> dict[str, Any]:
    """A raw target: 1000 tok/s per replica, 1 currency/h, no cold start, 1..10 replicas."""
    raw: dict[str, Any] = {
        "name": name,
        "scaleTargetRef": {"name": name},
        "minReplicas": 1,
        "maxReplicas": 10,
        "tokensPerReplicaPerSecond": 1000,
        "costPerReplicaHour": 1.0,
        "coldStartSeconds": 0,
    }
    raw.update(fields)
    return raw


def spec(
    targets: list[dict[str, Any]] | None = None,
    budget: dict[str, Any] | None = None,
    planning: dict[str, Any] | None = None,
    **top: Any,
) -> TokenBudgetSpec:
    """A parsed spec with simple arithmetic: utilization 1, no headroom, tolerance 0.1.

    ``need = ceil(tokens/s / 1000)`` for the default target; the budget is ample by default.
    """
    raw: dict[str, Any] = {
        "budget": {"period": "Day", "maxCost": 1e6, **(budget or {})},
        "planning": {
            "intervalSeconds": 30,
            "targetUtilization": 1.0,
            "headroom": 0.0,
            "tolerance": 0.1,
            "scaleDownStabilizationSeconds": 300,
            **(planning or {}),
        },
        "targets": targets if targets is not None else [target()],
        **top,
    }
    if raw["budget"].get("maxCost") is None:
        raw["budget"].pop("maxCost")
    return parse_spec(raw)


def flat(rate: float, now: datetime = NOW, span: int = 600, step: int = 30
         ) -> tuple[tuple[datetime, float], ...]:
    """Samples at a constant tokens/s over ``span`` seconds up to ``now``."""
    return tuple((now - timedelta(seconds=s), rate) for s in range(span, -1, -step))


def ramp(start: float, end: float, now: datetime = NOW, span: int = 600, step: int = 30
         ) -> tuple[tuple[datetime, float], ...]:
    """Samples rising linearly from ``start`` to ``end`` tokens/s over ``span`` seconds."""
    n = span // step
    return tuple(
        (now - timedelta(seconds=span - i * step), start + (end - start) * i / n)
        for i in range(n + 1)
    )


def noisy(rate: float, share: float, now: datetime = NOW, span: int = 600, step: int = 30
          ) -> tuple[tuple[datetime, float], ...]:
    """Samples alternating ``rate × (1 ± share)`` over ``span`` seconds, the newest at ``rate``
    tokens/s: a level demand whose noise (its spread around the trend) is about ``share``."""
    older = tuple((now - timedelta(seconds=s), rate * (1.0 + share * (-1) ** (s // step)))
                  for s in range(span, 0, -step))
    return (*older, (now, rate))


def seen(current: int, rate: float | None = None, **fields: Any) -> TargetObservation:
    """A target observation with ``current`` ready replicas and flat samples at ``rate``."""
    samples = flat(rate) if rate is not None else ()
    fields.setdefault("token_rate_samples", samples)
    return TargetObservation(current_replicas=current, ready_replicas=current, **fields)


def world(**targets: TargetObservation) -> Observation:
    """An observation keyed by target name."""
    return Observation(targets=dict(targets))


def recs(*entries: tuple[str, int, int]) -> tuple[RecommendationEntry, ...]:
    """Recommendations as ``(target, seconds before NOW, replicas)``."""
    return tuple(RecommendationEntry(t, NOW - timedelta(seconds=ago), n) for t, ago, n in entries)


def running(now: datetime = NOW, **fields: Any) -> Memory:
    """Memory of an operator that accounted at ``now`` in the current Day period."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    fields.setdefault("period_start", start)
    fields.setdefault("last_accounted", now)
    return Memory(**fields)
