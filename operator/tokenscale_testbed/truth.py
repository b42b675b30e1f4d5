"""The ground truth a TokenBudget's ``status.spend`` is measured against.

Cost: every target's ``spec.replicas`` as the API emulator logged it (each change with its
time, from the workload's creation to its deletion: a replica is paid from request to
deletion, ready or not) × ``costPerReplicaHour`` × the pricing schedule's multiplier, integrated
exactly between the changes and the minute edges (price windows start and end on whole local
minutes). The multiplier is looked up with the operator's own
:func:`~tokenscale.core.budget.price_multiplier`; the integration is independent of its
accounting. Tokens: what the simulated fleet served (prompt + generation) between two instants.

Times are unix seconds of the real clock; ``offset`` shifts them into the operator's calendar
(``TOKENSCALE_CLOCK_OFFSET_SECONDS`` of the test clock), which decides the price windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from itertools import pairwise

from tokenscale.api import TokenBudgetSpec
from tokenscale.core.budget import price_multiplier


def replicas_at(log: Sequence[tuple[float, int]], at: float) -> int:
    """The replicas a workload had at unix time ``at`` (0 before its creation)."""
    value = 0
    for when, replicas in log:
        if when > at:
            break
        value = replicas
    return value


def truth_cost(spec: TokenBudgetSpec, logs: Mapping[str, Sequence[tuple[float, int]]],
               start: float, end: float, offset: float = 0.0) -> float:
    """Cost (currency) of the targets' replicas from ``start`` to ``end`` (unix s, real clock);
    ``logs`` maps target names to their workload's ``(unix time, spec.replicas)`` log."""
    if end <= start:
        return 0.0
    # multipliers change only on whole minutes of the operator's clock
    first_minute = math.floor((start + offset) / 60.0) + 1
    minutes = [m * 60.0 - offset for m in range(first_minute,
                                                math.floor((end + offset) / 60.0) + 1)]
    total = 0.0
    for target in spec.targets:
        log = list(logs.get(target.name, ()))
        cuts = sorted({start, end, *minutes, *(t for t, _ in log if start < t < end)})
        replicas = replicas_at(log, start)
        k = next((i for i, (t, _) in enumerate(log) if t > start), len(log))
        for a, b in pairwise(cuts):
            while k < len(log) and log[k][0] <= a:
                replicas = log[k][1]
                k += 1
            if replicas == 0:
                continue
            mult = price_multiplier(spec, datetime.fromtimestamp(a + offset, UTC))
            total += replicas * target.cost_per_replica_hour * mult * (b - a) / 3600.0
    return total


def relative_error(status: float, truth: float) -> float | None:
    """``(status - truth) / truth``; None when the truth is 0."""
    return (status - truth) / truth if truth > 0 else None
