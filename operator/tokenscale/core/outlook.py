"""Where the period is heading: a learned time-of-day demand profile per target, and the spend
and tokens projected to the period end from the demand forecast, the replicas the planner would
run for it, the price schedule and the budget's pacing (DESIGN.md step 1, Projection).

**Profile** (:class:`DemandProfile`, carried in the memory, so in status): the served tokens/s
of a target per local half hour of the day (48 slots, in ``budget.timeZone``), learned from the
rate the planner observes each cycle. When a half hour ends (at least half of it observed) its
mean moves the slot by :data:`DAY_WEIGHT` (an exponential average over days: yesterday weighs
0.3); the first mean of a slot sets it. ``level`` is today's demand relative to the profile:
after each completed half hour it moves by :data:`LEVEL_WEIGHT` towards mean / slot (about five
hours of memory), within :data:`LEVEL_BOUNDS`.

**Forecast** of a target's demand at a later instant: ``base + deviation × exp(-ahead /
DEVIATION_SECONDS)``, where ``base`` is slot × level where the slot has been seen, else the
current demand (the mean of the forecast window's token-rate samples), and ``deviation`` is the
current demand minus ``base`` now: today's surprise fades into the profile within hours. With no
profile yet (the first day) the forecast is the current demand.

**Projection** (:func:`outlook`) from now to the period end, a half-hour slot at a time (and at
price-window edges): every target runs its planned replicas (the decision) for the first
interval, then ``ceil(demand / per-replica rate × overhead)`` for its forecast demand (the
per-replica rate is the planner's sizing at the capacity in use, the utilization it planned at
this cycle and the headroom), within [minReplicas, maxReplicas], at its price × the schedule's
multiplier. The overhead is what the planner runs above the need of the mean demand (it sizes
for the peaks of its short window, rounds up and keeps replicas through stabilization): the
ratio of the decided replicas to that unrounded need, as the ratio of their sums over about a
day of cycles in which the target was neither held by the budget nor at a bound, so each
cycle counts by its need (:func:`learn_overhead`). Targets
the planner does not steer (metric outage, conflict) and every target in DryRun keep their
replicas. The budget caps each slot as the planner's pacing does: a cost rate of at most
remaining / time left (never below the targets' floors) and served tokens of at most the
remaining tokens / time left (Active only: in DryRun nothing holds the spend to the budget).
Tokens: the forecast demand up to the replicas' capacity. The same sums without the caps are
the cost and tokens *at the forecast demand*, what BudgetAtRisk compares with the limits. Beyond
:data:`DEVIATION_HORIZON` the deviation has faded: the slots repeat day by day from precomputed
rates and whole days are added at once, so a Month period costs little more than a Day.

Pure: time, memory and observations are arguments. Costs in the budget's currency, cost rates
currency/h, token rates tokens/s, times tz-aware ``datetime``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import pairwise
from typing import NamedTuple

from tokenscale.api import WEEKDAYS, PlanningSpec, TokenBudgetSpec
from tokenscale.core.budget import (
    Accounts,
    _clock_minutes,
    _next_price_change,
    _zone,
    multiplier_at,
    multiplier_on,
)
from tokenscale.core.pacing import Allocation, Outcome, planned_utilization
from tokenscale.core.types import PROFILE_SLOTS as SLOTS
from tokenscale.core.types import DemandProfile, Lane

SLOT_SECONDS = 1800
#: weight of a completed half hour's mean in its slot (the rest is the days before)
DAY_WEIGHT = 0.3
#: weight of a completed half hour's ratio to its slot in today's level
LEVEL_WEIGHT = 0.1
LEVEL_BOUNDS = (0.1, 10.0)
#: a half hour counts when at least this share of it was observed
MIN_COVERAGE = 0.5
#: the overhead of the replicas run over the need of the mean demand (bursts, stabilization)
#: is the ratio of their sums fading with this time constant (s, a day: the period's daily
#: shape), within OVERHEAD_BOUNDS
OVERHEAD_SECONDS = 86400.0
OVERHEAD_BOUNDS = (0.5, 3.0)
#: what the overhead so far weighs when nothing is learned yet (s of the first need)
OVERHEAD_PRIOR_SECONDS = 3600.0
#: today's deviation from the profile fades with this time constant (s)
DEVIATION_SECONDS = 3600.0
#: beyond this (s) the deviation is below 1e-5 of itself: slots repeat from precomputed rates
DEVIATION_HORIZON = 12 * DEVIATION_SECONDS
_SLOT = timedelta(seconds=SLOT_SECONDS)


class Outlook(NamedTuple):
    """The period's end as projected at ``now``."""

    cost: float  # spend at period end (currency), paced by the budget
    tokens: float  # tokens served by period end, paced
    demand_cost: float  # spend at period end at the forecast demand, without the caps
    demand_tokens: float


# ---------------------------------------------------------------------------- the profile


def slot_start(at: datetime, zone: tzinfo) -> datetime:
    """The start (UTC) of the local half hour containing ``at``."""
    local = at.astimezone(zone)
    start = local.replace(minute=local.minute // 30 * 30, second=0, microsecond=0)
    return start.astimezone(UTC)


def slot_index(at: datetime, zone: tzinfo) -> int:
    """The local half hour of the day (0..47) containing ``at``."""
    local = at.astimezone(zone)
    return (local.hour * 60 + local.minute) // 30


def _close(profile: DemandProfile, zone: tzinfo) -> DemandProfile:
    """``profile`` with its accumulated half hour folded into its slot and the level."""
    start, seconds = profile.slot_start, profile.slot_seconds
    if start is None or seconds < MIN_COVERAGE * SLOT_SECONDS:
        return profile
    mean = max(0.0, profile.slot_tokens / seconds)
    j = slot_index(start, zone)
    old = profile.slots[j]
    level = profile.level
    if old > 0:
        ratio = min(max(mean / old, LEVEL_BOUNDS[0]), LEVEL_BOUNDS[1])
        level = min(max(level + LEVEL_WEIGHT * (ratio - level), LEVEL_BOUNDS[0]),
                    LEVEL_BOUNDS[1])
    slots = list(profile.slots)
    slots[j] = mean if old < 0 else old + DAY_WEIGHT * (mean - old)
    return replace(profile, slots=tuple(slots), level=level)


def learn(profile: DemandProfile | None, zone: tzinfo, rate: float, since: datetime | None,
          now: datetime) -> DemandProfile:
    """``profile`` after the target served ``rate`` tokens/s from ``since`` to ``now``.

    Half hours that end on the way are folded in (:func:`_close`); a gap longer than a half
    hour (an operator restart) is not attributed to the rate seen after it: only the part of
    the current half hour is.
    """
    p = profile or DemandProfile()
    current = slot_start(now, zone)
    if since is None or since >= now:
        if p.slot_start != current:
            p = replace(_close(p, zone), slot_start=current, slot_tokens=0.0, slot_seconds=0.0)
        return p
    if (now - since).total_seconds() > SLOT_SECONDS:
        since = max(since, current)
    rate = max(0.0, rate)
    t = since
    while True:
        start = slot_start(t, zone)
        if p.slot_start != start:
            p = replace(_close(p, zone), slot_start=start, slot_tokens=0.0, slot_seconds=0.0)
        end = min(now, start + _SLOT)
        seconds = (end - t).total_seconds()
        if seconds > 0:
            p = replace(p, slot_tokens=p.slot_tokens + rate * seconds,
                        slot_seconds=p.slot_seconds + seconds)
        if end >= now:
            return p
        t = end


def planned_rate_per_replica(o: Outcome, planning: PlanningSpec) -> float:
    """Tokens/s one replica of this target is planned to serve: its capacity within the SLO
    at the utilization the planner sized it at this cycle (its demand's: above
    targetUtilization where the band narrowed to the demand's noise), less the headroom."""
    utilization = planned_utilization(o.proposal, planning.target_utilization)
    return o.proposal.seen.target.capacity * utilization / (1.0 + planning.headroom)


def learn_all(spec: TokenBudgetSpec, allocation: Allocation,
              profiles: Mapping[str, DemandProfile], since: datetime | None,
              now: datetime) -> dict[str, DemandProfile]:
    """Every target's profile after this cycle: steered targets learn their observed rate and
    (Active, not held by the budget, within [min, max]) the overhead of the replicas they run
    over the need of their mean demand; the others keep theirs; targets no longer in the spec
    are dropped."""
    zone = _zone(spec.budget.time_zone)
    planning = spec.planning
    out: dict[str, DemandProfile] = {}
    for o in allocation.outcomes:
        s = o.proposal.seen
        t = s.target
        old = profiles.get(t.name)
        samples = s.obs.token_rate_samples
        if s.kind != "Control" or not samples:
            if old is not None:
                out[t.name] = old
            continue
        p = learn(old, zone, samples[-1][1], since, now)
        per_replica = planned_rate_per_replica(o, planning)
        need = sum(r for _, r in samples) / len(samples) / per_replica  # unrounded
        if (spec.mode == "Active" and since is not None and since < now and need > 0
                and o.reason not in ("BudgetCapped", "BudgetExhausted")
                and t.min_replicas < o.final < t.max_replicas):
            # a cycle stands for its own interval: a gap before it (a restart, an outage)
            # is not this cycle's replicas and need
            held = min((now - since).total_seconds(), 2.0 * planning.interval_seconds)
            p = learn_overhead(p, o.final, need, held)
        out[t.name] = p
    return out


def learn_overhead(p: DemandProfile, replicas: int, need: float, seconds: float
                   ) -> DemandProfile:
    """``p`` with this cycle's replicas and unrounded need (at least one replica's worth:
    below it the replicas are a floor and say nothing of an overhead) held for ``seconds``
    added to the sums of both, which fade with the time constant :data:`OVERHEAD_SECONDS`;
    the overhead is the ratio of the sums, within :data:`OVERHEAD_BOUNDS`. A ratio of sums
    weighs each cycle by its need: the hours that cost the most say the most of what the
    rest of the period will cost (an average of per-cycle ratios let the night's thin
    demand, where the margin and the rounding are a large share, set the morning's
    projection of the day). Nothing learned yet, the sums start from the overhead so far (1
    by default) as :data:`OVERHEAD_PRIOR_SECONDS` of the first need: a start-up's first
    cycles move it as an hour's average would, and a day of the planner's record outweighs
    it."""
    need, seconds = max(need, 1.0), max(0.0, seconds)
    if p.overhead_need <= 0:  # nothing learned: the overhead so far (1) as an hour's worth
        p = replace(p, overhead_need=need * OVERHEAD_PRIOR_SECONDS)
    fade = math.exp(-seconds / OVERHEAD_SECONDS)
    need_sum = p.overhead_need * fade + need * seconds
    if need_sum <= 0:
        return p
    replica_sum = p.overhead * p.overhead_need * fade + replicas * seconds
    ratio = min(max(replica_sum / need_sum, OVERHEAD_BOUNDS[0]), OVERHEAD_BOUNDS[1])
    return replace(p, overhead=ratio, overhead_need=need_sum)


def lanes(spec: TokenBudgetSpec, allocation: Allocation,
          profiles: Mapping[str, DemandProfile]) -> list[Lane]:
    """The targets after the budget, as the projection runs them: steered targets (Active,
    usable metrics) at their decision, then sized for the forecast; the rest at the replicas
    they keep (held, conflicting, DryRun)."""
    planning = spec.planning
    active = spec.mode == "Active"
    out = []
    for o in allocation.outcomes:
        s = o.proposal.seen
        t = s.target
        samples = s.obs.token_rate_samples if s.kind == "Control" else ()
        demand = sum(r for _, r in samples) / len(samples) if samples else 0.0
        steered = active and s.kind == "Control"
        out.append(Lane(
            price=t.cost_per_replica_hour,
            replicas=o.final if active and s.kind != "Fixed" else s.current,
            floor=s.current if s.kind == "Fixed" else t.min_replicas,
            low=t.min_replicas,
            high=t.max_replicas,
            per_replica=planned_rate_per_replica(o, planning) if steered else 0.0,
            capacity=t.capacity,
            demand=max(0.0, demand),
            profile=profiles.get(t.name),
        ))
    return out


# --------------------------------------------------------------------------- the forecast


class _Forecast:
    """One lane's demand forecast from ``now`` (see the module docstring)."""

    __slots__ = ("current", "deviation", "flat", "level", "slots")

    def __init__(self, lane: Lane, j_now: int) -> None:
        self.current = max(0.0, lane.demand)
        p = lane.profile
        self.slots = p.slots if p is not None and any(v >= 0 for v in p.slots) else None
        self.level = p.level if p is not None else 1.0
        self.deviation = self.current - self.base(j_now)
        self.flat = self.slots is None  # the current demand throughout

    def base(self, j: int) -> float:
        if self.slots is None or self.slots[j] < 0:
            return self.current
        return self.slots[j] * self.level

    def at(self, j: int, ahead: float) -> float:
        fade = math.exp(-ahead / DEVIATION_SECONDS) if ahead < DEVIATION_HORIZON else 0.0
        return max(0.0, self.base(j) + self.deviation * fade)


def _run(lane: Lane, demand: float) -> tuple[int, float]:
    """(replicas, tokens/s served) of a lane at ``demand`` tokens/s."""
    if lane.per_replica <= 0:
        replicas = lane.replicas
    else:
        overhead = lane.profile.overhead if lane.profile is not None else 1.0
        need = max(0, math.ceil(demand / lane.per_replica * overhead - 1e-9))
        replicas = lane.low if need < lane.low else lane.high if need > lane.high else need
    served = min(demand, replicas * lane.capacity) if lane.capacity > 0 else demand
    return replicas, served


class _Totals:
    """The running sums of the projection, paced and at the forecast demand. Times are
    seconds from now. Consecutive stretches at the same rates are paced as one (the same
    result: below the affordable rate a stretch stays below it, at it it stays at it)."""

    __slots__ = ("cost", "demand_cost", "demand_tokens", "end", "max_cost", "max_tokens",
                 "pending", "tokens")

    def __init__(self, accounts: Accounts, max_cost: float | None,
                 max_tokens: float | None) -> None:
        self.cost = self.demand_cost = accounts.spent
        self.tokens = self.demand_tokens = accounts.tokens
        self.end = (accounts.period_end - accounts.at).total_seconds()
        self.max_cost = max_cost
        self.max_tokens = max_tokens
        self.pending: list[float] = []  # at, seconds, cost rate, floor rate, served

    def add(self, at: float, seconds: float, cost_rate: float, floor_rate: float,
            served: float) -> None:
        """One stretch of ``seconds`` from ``at``: cost rate (currency/h, multiplied), the
        floors' cost rate, tokens/s served."""
        p = self.pending
        if p and p[2] == cost_rate and p[3] == floor_rate and p[4] == served \
                and p[0] + p[1] == at:
            p[1] += seconds
            return
        self.flush()
        self.pending = [at, seconds, cost_rate, floor_rate, served]

    def flush(self) -> None:
        """Pace and add the pending stretch."""
        if not self.pending:
            return
        at, seconds, cost_rate, floor_rate, served = self.pending
        self.pending = []
        hours = seconds / 3600.0
        self.demand_cost += cost_rate * hours
        self.demand_tokens += served * seconds
        left = max(1.0, self.end - at)
        if self.max_tokens is not None:
            cap = max(0.0, self.max_tokens - self.tokens) / left
            if served > cap:  # the token cap holds capacity (and so replicas) down
                cost_rate = max(floor_rate, cost_rate * (cap / served if served > 0 else 0.0))
                served = cap
        if self.max_cost is not None:
            affordable = max(0.0, self.max_cost - self.cost) * 3600.0 / left
            cost_rate = max(floor_rate, min(cost_rate, affordable))
        self.cost += cost_rate * hours
        self.tokens += served * seconds


def outlook(spec: TokenBudgetSpec, accounts: Accounts, lanes: Sequence[Lane],
            interval_seconds: float) -> Outlook:
    """Spend and tokens at the period end (see the module docstring)."""
    budget = spec.budget
    now = accounts.at
    paced = spec.mode == "Active"  # in DryRun nothing holds the spend to the budget
    totals = _Totals(accounts, budget.max_cost if paced else None,
                     budget.max_tokens if paced else None)
    end = totals.end
    if end <= 0 or not lanes:
        return Outlook(totals.cost, totals.tokens, totals.cost, totals.tokens)
    zone = _zone(budget.time_zone)
    schedule = spec.pricing.schedule
    first = (slot_start(now, zone) - now).total_seconds()  # <= 0
    j_now = slot_index(now, zone)
    forecasts = [_Forecast(lane, j_now) for lane in lanes]
    fresh = max(1.0, interval_seconds)
    floor_base = sum(lane.floor * lane.price for lane in lanes)
    # with no profile and no prices to follow, the rates after the first interval are constant
    flat = not schedule and all(f.flat for f in forecasts)
    t = 0.0
    k = 0  # slots since ``first``
    while t < end and (t < DEVIATION_HORIZON or t != first + k * SLOT_SECONDS):
        slot_end = first + (k + 1) * SLOT_SECONDS
        nxt = end if flat and t >= fresh else min(end, slot_end)
        if t < fresh:
            nxt = min(nxt, fresh)
        mult = 1.0
        if schedule:
            at = now + timedelta(seconds=t)
            nxt = min(nxt, (_next_price_change(schedule, zone, at) - now).total_seconds())
            mult = multiplier_at(schedule, zone, at)
        j = (j_now + k) % SLOTS
        cost_rate = served = 0.0
        for lane, forecast in zip(lanes, forecasts, strict=True):
            if t < fresh:
                replicas = lane.replicas
                demand = forecast.current
                tokens = min(demand, replicas * lane.capacity) if lane.capacity > 0 else demand
            else:
                replicas, tokens = _run(lane, forecast.at(j, t))
            cost_rate += replicas * lane.price
            served += tokens
        totals.add(t, nxt - t, cost_rate * mult, floor_base * mult, served)
        t = nxt
        while t >= first + (k + 1) * SLOT_SECONDS:
            k += 1
    if t < end:
        _repeat_days(totals, lanes, forecasts, spec, now, t, (j_now + k) % SLOTS, floor_base)
    totals.flush()
    return Outlook(totals.cost, totals.tokens, totals.demand_cost, totals.demand_tokens)


def _day_multipliers(spec: TokenBudgetSpec, weekday: int) -> list[float]:
    """The mean price multiplier of each half hour of a ``weekday`` (0 = Monday)."""
    day = WEEKDAYS[weekday]
    windows = [w for w in spec.pricing.schedule if day in w.days]
    if not windows:
        return [1.0] * SLOTS
    edges = {m for w in windows for m in (_clock_minutes(w.start), _clock_minutes(w.end))}
    out = []
    for slot in range(SLOTS):
        lo, hi = slot * 30, slot * 30 + 30
        cuts = sorted({lo, hi} | {m for m in edges if lo < m < hi})
        out.append(sum(multiplier_on(windows, weekday, a) * (b - a)
                       for a, b in pairwise(cuts)) / 30.0)
    return out


def _repeat_days(totals: _Totals, lanes: Sequence[Lane], forecasts: Sequence[_Forecast],
                 spec: TokenBudgetSpec, now: datetime, t: float, j: int,
                 floor_base: float) -> None:
    """From ``t`` (s from ``now``, a slot edge, slot ``j``) to the period end with the
    deviation faded: each slot's cost rate and served tokens computed once, the multiplier
    once per (weekday, slot), whole days added at once (paced per day), the rest slot by
    slot."""
    rates: list[tuple[float, float]] = []
    for slot in range(SLOTS):
        cost_rate = served = 0.0
        for lane, forecast in zip(lanes, forecasts, strict=True):
            replicas, tokens = _run(lane, forecast.at(slot, DEVIATION_HORIZON))
            cost_rate += replicas * lane.price
            served += tokens
        rates.append((cost_rate, served))
    multipliers: dict[int, list[float]] = {}

    def multiplier(weekday: int, slot: int) -> float:
        if weekday not in multipliers:
            multipliers[weekday] = _day_multipliers(spec, weekday)
        return multipliers[weekday][slot]

    zone = _zone(spec.budget.time_zone)
    weekday = (now + timedelta(seconds=t)).astimezone(zone).weekday()
    days: dict[tuple[int, int], tuple[float, float, float]] = {}
    end = totals.end
    while t + 86400.0 <= end:
        key = (weekday, j)
        if key not in days:  # currency, currency at the floors, tokens over the day
            cost = floors = tokens = 0.0
            for s in range(SLOTS):
                slot = (j + s) % SLOTS
                mult = multiplier((weekday + (j + s) // SLOTS) % 7, slot)
                cost += rates[slot][0] * mult * SLOT_SECONDS / 3600.0
                floors += floor_base * mult * SLOT_SECONDS / 3600.0
                tokens += rates[slot][1] * SLOT_SECONDS
            days[key] = (cost, floors, tokens)
        cost, floors, tokens = days[key]
        totals.add(t, 86400.0, cost / 24.0, floors / 24.0, tokens / 86400.0)
        t += 86400.0
        weekday = (weekday + 1) % 7
    while t < end:
        nxt = min(end, t + SLOT_SECONDS)
        mult = multiplier(weekday, j)
        cost_rate, served = rates[j]
        totals.add(t, nxt - t, cost_rate * mult, floor_base * mult, served)
        t = nxt
        j += 1
        if j == SLOTS:
            j = 0
            weekday = (weekday + 1) % 7
