"""How well the period-end projection predicts the final spend, measured in the backtest.

Windows: every complete budget period within the trace; a trace shorter than any period
(the hour-long request traces, a half-day trace) is one window from its start to its end,
projected to that end as if it were the period. At 25 %, 50 % and 75 % of each window, the
first planning cycle at or after that instant projects the window's end two ways: the
operator's projection (:func:`~tokenscale.core.outlook.outlook`: the demand forecast, the
planned replicas, the price schedule, pacing) and the run rate of version 1 (spend so far +
the planned cost rate × the time left). Each is compared with what tokenscale's replicas cost
over the whole window in the simulation: ``(projected - final) / final``.

History: before a replayed window that starts later in its trace (ServeGen's second day), the
operator would have run the day before; :func:`seed_profiles` learns the demand profiles
from the trace's preceding part (its mean demand per minute, as the planner would have
observed it) into the memory tokenscale starts with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenscale.api import TokenBudgetSpec
from tokenscale.core.budget import Accounts, _zone, period_bounds
from tokenscale.core.outlook import learn, outlook
from tokenscale.core.types import DemandProfile, Plan

FloatArray = npt.NDArray[np.float64]
FRACTIONS = (0.25, 0.5, 0.75)


def windows(spec: TokenBudgetSpec, start: datetime, trace_seconds: int) -> list[tuple[int, int]]:
    """``(first second, end second)`` of every complete budget period within the trace, or the
    whole trace when none is complete."""
    out = []
    at = start
    end = start + timedelta(seconds=trace_seconds)
    while at < end:
        p_start, p_end = period_bounds(spec.budget, at)
        if p_start >= start and p_end <= end:
            out.append((int((p_start - start).total_seconds()),
                        int((p_end - start).total_seconds())))
        at = p_end
    return out or [(0, trace_seconds)]


def seed_profiles(spec: TokenBudgetSpec, start: datetime,
                  history: Mapping[str, FloatArray]) -> dict[str, DemandProfile]:
    """Demand profiles learned from ``history`` (per target, mean tokens/s per minute of the
    time just before ``start``, oldest first), minute by minute."""
    zone = _zone(spec.budget.time_zone)
    out: dict[str, DemandProfile] = {}
    for name, rates in history.items():
        profile: DemandProfile | None = None
        first = start - timedelta(minutes=len(rates))
        since: datetime | None = None
        for k, rate in enumerate(rates.tolist()):
            at = first + timedelta(minutes=k + 1)
            profile = learn(profile, zone, float(rate), since, at)
            since = at
        if profile is not None:
            out[name] = profile
    return out


@dataclass
class ProjectionProbe:
    """Records the projections at each window's 25/50/75 % instants as the planner runs."""

    spec: TokenBudgetSpec
    start: datetime
    windows: list[tuple[int, int]]
    #: (window index, fraction) -> (second, projected, run rate)
    seen: dict[tuple[int, float], tuple[int, float, float]] = field(default_factory=dict)
    #: the final costs of the periods closed so far (the trace's spend before the current one)
    closed: float = 0.0

    def observe(self, t: int, plan: Plan) -> None:
        """After every plan (made at second ``t``): record it at every checkpoint it is the
        first cycle at or after."""
        if plan.previous_period_cost is not None:
            self.closed += plan.previous_period_cost
        for w, (first, end) in enumerate(self.windows):
            if not first < t < end:
                continue
            for f in FRACTIONS:
                at = first + f * (end - first)
                if t >= at and (w, f) not in self.seen:
                    self.seen[(w, f)] = (t, *self._project(plan, t, first, end))

    def _project(self, plan: Plan, t: int, first: int, end: int) -> tuple[float, float]:
        """(outlook, run rate) of the window's cost at its end, as planned at second ``t``."""
        now = self.start + timedelta(seconds=t)
        window_end = self.start + timedelta(seconds=end)
        period = plan.period_start == self.start + timedelta(seconds=first) \
            and plan.period_end == window_end
        # a window that is no period is the whole trace: its spend includes closed periods
        spent = plan.spend.cost if period else self.closed + plan.spend.cost
        accounts = Accounts(at=now, period_start=plan.period_start, period_end=window_end,
                            spent=spent, tokens=plan.spend.tokens, previous_period_cost=None,
                            cost_exhausted=False, token_exhausted=False, exhausted=False,
                            affordable=math.inf, token_cap=math.inf)
        if period:
            projected = plan.spend.projected_cost
        else:
            unpaced = self.spec.model_copy(update={"budget": self.spec.budget.model_copy(
                update={"max_cost": None, "max_tokens": None})})
            projected = outlook(unpaced, accounts, plan.lanes,
                                self.spec.planning.interval_seconds).cost
        rate = sum(d.cost_per_hour or 0.0 for d in plan.decisions.values())
        run_rate = spent + rate * (window_end - now).total_seconds() / 3600.0
        return projected, run_rate

    def report(self, final: Sequence[float]) -> dict[str, Any]:
        """The errors against each window's ``final`` cost: per fraction the mean signed and
        the mean absolute relative error over the windows, for both projections, and each
        checkpoint."""
        rows = []
        for (w, f), (t, projected, run_rate) in sorted(self.seen.items()):
            if final[w] > 0:
                rows.append({"window": w, "fraction": f, "second": t, "final_cost": final[w],
                             "projected_cost": projected, "run_rate_cost": run_rate,
                             "error": (projected - final[w]) / final[w],
                             "run_rate_error": (run_rate - final[w]) / final[w]})

        def mean(key: str, absolute: bool) -> dict[str, float | None]:
            out: dict[str, float | None] = {}
            for f in FRACTIONS:
                values = [abs(r[key]) if absolute else r[key] for r in rows
                          if r["fraction"] == f]
                out[f"{round(100 * f)}"] = (round(sum(values) / len(values), 6)
                                            if values else None)
            return out

        return {
            "projection_error": mean("error", False),
            "projection_abs_error": mean("error", True),
            "projection_error_run_rate": mean("run_rate_error", False),
            "projection_abs_error_run_rate": mean("run_rate_error", True),
            "projection_windows": [{"first_second": a, "end_second": b}
                                   for a, b in self.windows],
            "projection_checkpoints": rows,
        }
