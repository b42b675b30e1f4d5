"""Budget periods, time-of-day prices, spend accounting, pacing and projections.

DESIGN.md step 1, **Accounting**: :func:`account` turns the memory of the last cycle and what ran
since into an :class:`Accounts` (spend of the period, exhaustion, affordable rates);
:func:`spend_figures` adds the projections reported in status. The functions below it are the
pieces they are made of.

Units: costs in the budget's currency, cost rates in currency/h, token rates in tokens/s,
times tz-aware ``datetime`` (returned in UTC).

Periods (``budget.period``) are calendar periods in ``budget.timeZone``: ``Hour`` starts at the
local full hour and lasts 3600 s; ``Day`` runs from local midnight to the next local midnight
(23 or 25 h on DST change days); ``Week`` from Monday 00:00 local; ``Month`` from the 1st 00:00
local. A local midnight that does not exist (DST gap at 00:00) maps to the instant of the gap;
an ambiguous one (clocks back at 00:00) to its second occurrence, when the old date really ends.

Price multipliers (``pricing.schedule``): the first window whose weekday and local
``[start, end)`` clock range contain the instant wins, otherwise 1. Windows are read in the
budget's time zone.

Accounting: cost is integrated as ``Σ currentReplicas × costPerReplicaHour × multiplier`` over
the time since the last accounting, split at period boundaries and at the clock times where the
multiplier can change, so a long gap (operator restart) is priced correctly. The part before the
current period belongs to the closed period.

Pacing: the affordable cost rate is ``remaining cost / hours left`` (currency/h); a token budget
caps served capacity at ``remaining tokens / seconds left`` (tokens/s). The time left is at
least one second, so the last instant of a period does not divide by zero. Exhausted means the
spend reached the limit (≥ maxCost or ≥ maxTokens).

Projection: :mod:`~tokenscale.core.outlook` projects the period end from the demand forecast,
the planned replicas, the price schedule and this pacing; :func:`project` (spend so far + rate ×
time left at the multiplier of now) is the run-rate projection it replaced, still reported
next to it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo

from tokenscale.api import WEEKDAYS, BudgetSpec, PriceWindow, TokenBudgetSpec
from tokenscale.core.types import BindingLimit, Memory, Spend

if TYPE_CHECKING:
    from tokenscale.core.outlook import Outlook

_HOUR = timedelta(hours=1)
_DAY_MINUTES = 24 * 60
#: Cached bounds per (period, zone): the last period computed, reused while ``now`` is in it.
_PERIOD_CACHE: dict[tuple[str, str], tuple[datetime, datetime]] = {}


def _zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


def _local_midnight(year: int, month: int, day: int, zone: tzinfo) -> datetime:
    """The instant (UTC) local ``day`` begins: the later reading of an ambiguous midnight
    (the previous date only ends after the repeated hour), and the instant of the gap for a
    midnight that does not exist."""
    first = datetime(year, month, day, tzinfo=zone).astimezone(UTC)
    second = datetime(year, month, day, fold=1, tzinfo=zone).astimezone(UTC)
    return max(first, second)


def _compute_period(period: str, zone: tzinfo, now: datetime) -> tuple[datetime, datetime]:
    local = now.astimezone(zone)
    if period == "Hour":
        start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return start, start + _HOUR
    if period == "Day":
        first = local.date()
        following = first + timedelta(days=1)
    elif period == "Week":
        first = local.date() - timedelta(days=local.weekday())
        following = first + timedelta(days=7)
    else:  # Month
        first = local.date().replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
    start = _local_midnight(first.year, first.month, first.day, zone)
    end = _local_midnight(following.year, following.month, following.day, zone)
    return min(start, now), max(end, now + timedelta(microseconds=1))


def period_bounds(budget: BudgetSpec, now: datetime) -> tuple[datetime, datetime]:
    """The budget period ``[start, end)`` (UTC) that contains ``now`` (tz-aware)."""
    key = (budget.period, budget.time_zone)
    cached = _PERIOD_CACHE.get(key)
    if cached is not None and cached[0] <= now < cached[1]:
        return cached
    bounds = _compute_period(budget.period, _zone(budget.time_zone), now)
    if len(_PERIOD_CACHE) > 4096:
        _PERIOD_CACHE.clear()
    _PERIOD_CACHE[key] = bounds
    return bounds


def _clock_minutes(text: str) -> int:
    return int(text[:2]) * 60 + int(text[3:5])


def multiplier_at(schedule: list[PriceWindow], zone: tzinfo, at: datetime) -> float:
    """Price multiplier of ``schedule`` at instant ``at`` (first matching window, else 1)."""
    if not schedule:
        return 1.0
    local = at.astimezone(zone)
    minute = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
    return multiplier_on(schedule, local.weekday(), minute)


def multiplier_on(schedule: list[PriceWindow], weekday: int, minute: float) -> float:
    """Price multiplier of ``schedule`` on ``weekday`` (0 = Monday) at local ``minute`` of the
    day (first matching window, else 1)."""
    day = WEEKDAYS[weekday]
    for window in schedule:
        if day in window.days and (
            _clock_minutes(window.start) <= minute < _clock_minutes(window.end)
        ):
            return window.multiplier
    return 1.0


def price_multiplier(spec: TokenBudgetSpec, at: datetime) -> float:
    """Price multiplier of the budget's pricing schedule at ``at`` (in ``budget.timeZone``)."""
    return multiplier_at(spec.pricing.schedule, _zone(spec.budget.time_zone), at)


def _next_price_change(schedule: list[PriceWindow], zone: tzinfo, at: datetime) -> datetime:
    """The next instant after ``at`` where the multiplier may change (a window edge or midnight)."""
    local = at.astimezone(zone)
    seconds = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    cuts = {_DAY_MINUTES}
    for window in schedule:
        cuts.add(_clock_minutes(window.start))
        cuts.add(_clock_minutes(window.end))
    cut = min(c for c in cuts if c * 60 > seconds)
    midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
    nxt = (midnight + timedelta(minutes=cut)).astimezone(UTC)  # wall-clock arithmetic
    if nxt <= at:  # DST fold: the wall clock repeats; step forward a little
        nxt = at + timedelta(minutes=1)
    return nxt


def accrue_cost(
    spec: TokenBudgetSpec, cost_per_hour: float, since: datetime, until: datetime
) -> list[tuple[datetime, float]]:
    """Cost of running at a base ``cost_per_hour`` (currency/h, before multipliers) from
    ``since`` to ``until``, as ``(period_start, cost)`` pairs in time order.

    The interval is split at period boundaries and at price-window edges. Empty when
    ``until <= since``.
    """
    if until <= since:
        return []
    budget = spec.budget
    schedule = spec.pricing.schedule
    zone = _zone(budget.time_zone)
    out: list[tuple[datetime, float]] = []
    t = since
    while t < until:
        p_start, p_end = period_bounds(budget, t)
        seg_end = min(until, p_end)
        cost = 0.0
        if not schedule or cost_per_hour == 0:
            cost = cost_per_hour * (seg_end - t).total_seconds() / 3600.0
        else:
            s = t
            while s < seg_end:
                e = min(seg_end, _next_price_change(schedule, zone, s))
                mult = multiplier_at(schedule, zone, s)
                cost += cost_per_hour * mult * (e - s).total_seconds() / 3600.0
                s = e
        if out and out[-1][0] == p_start:
            out[-1] = (p_start, out[-1][1] + cost)
        else:
            out.append((p_start, cost))
        t = seg_end
    return out


def seconds_left(now: datetime, period_end: datetime) -> float:
    """Seconds from ``now`` to the end of the period, at least 1."""
    return max(1.0, (period_end - now).total_seconds())


def affordable_cost_rate(
    max_cost: float | None, spent: float, now: datetime, period_end: datetime
) -> float:
    """Cost rate (currency/h) that spends the rest of ``max_cost`` evenly until period end.

    ``inf`` without a cost limit; 0 once spent.
    """
    if max_cost is None:
        return math.inf
    return max(0.0, max_cost - spent) * 3600.0 / seconds_left(now, period_end)


def affordable_token_rate(
    max_tokens: float | None, used: float, now: datetime, period_end: datetime
) -> float:
    """Token rate (tokens/s) that uses the rest of ``max_tokens`` evenly until period end.

    ``inf`` without a token limit; 0 once used.
    """
    if max_tokens is None:
        return math.inf
    return max(0.0, max_tokens - used) / seconds_left(now, period_end)


def project(spent: float, rate_per_second: float, now: datetime, period_end: datetime) -> float:
    """Spend at period end if ``rate_per_second`` continues: ``spent + rate × seconds left``."""
    return spent + rate_per_second * max(0.0, (period_end - now).total_seconds())


def is_exhausted(limit: float | None, spent: float) -> bool:
    """True when a limit is set and ``spent`` reached it."""
    return limit is not None and spent >= limit


def counter_increase(values: list[float] | tuple[float, ...]) -> float:
    """Increase of a monotonic counter over successive readings, counting resets.

    Like Prometheus ``increase()`` without extrapolation: a reading below the previous one is a
    restart of the counter from 0, so it adds its own value. Used for token accounting.
    """
    total = 0.0
    previous: float | None = None
    for v in values:
        if previous is not None:
            total += v - previous if v >= previous else v
        previous = v
    return total


# ------------------------------------------------------------------------ step 1: accounting


class Usage(NamedTuple):
    """What the targets ran at this cycle: the rates step 1 integrates."""

    base_cost_rate: float  # currency/h at the current replicas, before the price multiplier
    token_rate: float  # observed tokens/s of the targets with usable metrics
    tokens_in_period: float | None  # Prometheus increase() since period start, None if unknown
    #: currency/h the time since the last cycle is charged at: the current replicas at the
    #: prices they ran at (a price read from OpenCost this cycle applies from now on); None:
    #: ``base_cost_rate``
    accrued_cost_rate: float | None = None


class Accounts(NamedTuple):
    """The period's spend at ``at`` and what the rest of the budget allows."""

    at: datetime
    period_start: datetime
    period_end: datetime
    spent: float  # currency
    tokens: float
    previous_period_cost: float | None  # final cost of a period closed since the last cycle
    cost_exhausted: bool
    token_exhausted: bool
    exhausted: bool  # either limit is spent
    affordable: float  # currency/h; inf without maxCost
    token_cap: float  # tokens/s of served capacity; inf without maxTokens

    @property
    def hours_left(self) -> float:
        """Hours from ``at`` to the end of the period."""
        return (self.period_end - self.at).total_seconds() / 3600.0


def account(spec: TokenBudgetSpec, memory: Memory, usage: Usage, now: datetime) -> Accounts:
    """Step 1: spend and tokens of the period at ``now``, from ``memory`` and ``usage``.

    Cost is integrated from ``memory.last_accounted`` (nothing on the first cycle); at rollover
    the spend restarts at 0 and the part of the interval before the new period goes to
    ``previous_period_cost``. Tokens are Prometheus' count when known (never below what the
    period already counted), else the observed rate × time is added.
    """
    budget = spec.budget
    period_start, period_end = period_bounds(budget, now)
    rate = usage.base_cost_rate if usage.accrued_cost_rate is None else usage.accrued_cost_rate
    spent, previous = _accrue_spend(spec, memory, rate, period_start, now)
    tokens = _count_tokens(memory, usage, period_start, now)
    cost_exhausted = is_exhausted(budget.max_cost, spent)
    token_exhausted = is_exhausted(budget.max_tokens, tokens)
    return Accounts(
        at=now,
        period_start=period_start,
        period_end=period_end,
        spent=spent,
        tokens=tokens,
        previous_period_cost=previous,
        cost_exhausted=cost_exhausted,
        token_exhausted=token_exhausted,
        exhausted=cost_exhausted or token_exhausted,
        affordable=affordable_cost_rate(budget.max_cost, spent, now, period_end),
        token_cap=affordable_token_rate(budget.max_tokens, tokens, now, period_end),
    )


def _accrue_spend(spec: TokenBudgetSpec, memory: Memory, base_rate: float,
                  period_start: datetime, now: datetime) -> tuple[float, float | None]:
    """``(spent this period, final cost of the closed period or None)`` at ``now``."""
    rolled = memory.period_start != period_start
    spent = 0.0 if rolled else memory.spend_cost
    previous = memory.spend_cost if rolled and memory.period_start is not None else None
    last = memory.last_accounted
    if last is None or last >= now:
        return spent, previous
    if last >= period_start and not spec.pricing.schedule:
        return spent + base_rate * (now - last).total_seconds() / 3600.0, previous
    for p_start, cost in accrue_cost(spec, base_rate, last, now):
        if p_start == period_start:
            spent += cost
        elif p_start == memory.period_start and previous is not None:
            previous += cost
    return spent, previous


def _count_tokens(memory: Memory, usage: Usage, period_start: datetime, now: datetime) -> float:
    """Tokens served in the period at ``now``."""
    tokens = 0.0 if memory.period_start != period_start else memory.spend_tokens
    if usage.tokens_in_period is not None:
        # Never below what this period already counted: Prometheus can lose history
        # (a restart without a persistent TSDB, retention shorter than the period).
        return max(tokens, usage.tokens_in_period, 0.0)
    last = memory.last_accounted
    if last is not None and last < now:
        tokens += usage.token_rate * (now - max(last, period_start)).total_seconds()
    return tokens


def spend_figures(accounts: Accounts, usage: Usage, multiplier: float,
                  planned_rate: float, outlook: Outlook | None = None) -> Spend:
    """Spend for status: so far, and projected to period end: from ``outlook`` (the demand
    forecast and the planned replicas, see :mod:`~tokenscale.core.outlook`) when given, and at
    the run rate (the planned cost rate, currency/h, and the observed token rate)."""
    now, end = accounts.at, accounts.period_end
    spent, tokens = accounts.spent, accounts.tokens
    run_cost = project(spent, planned_rate / 3600.0, now, end)
    run_tokens = project(tokens, usage.token_rate, now, end)
    return Spend(
        cost=spent,
        tokens=tokens,
        projected_cost=outlook.cost if outlook is not None else run_cost,
        projected_tokens=outlook.tokens if outlook is not None else run_tokens,
        cost_per_hour=usage.base_cost_rate * multiplier,
        cost_per_million_tokens=spent / tokens * 1e6 if tokens > 0 else None,
        demand_cost=outlook.demand_cost if outlook is not None else None,
        demand_tokens=outlook.demand_tokens if outlook is not None else None,
        run_rate_cost=run_cost,
        run_rate_tokens=run_tokens,
    )


def binding_limit(budget: BudgetSpec, spend: Spend) -> BindingLimit | None:
    """The limit that binds: of maxCost and maxTokens the one whose projection uses the larger
    share of it (cost on a tie); None without limits."""
    cost = tokens = None
    if budget.max_cost is not None:
        cost = BindingLimit("Cost", budget.max_cost, budget.currency, spend.cost,
                            spend.projected_cost)
    if budget.max_tokens is not None:
        tokens = BindingLimit("Tokens", budget.max_tokens, "tokens", spend.tokens,
                              spend.projected_tokens)
    if cost is None or tokens is None:
        return cost or tokens

    def share(x: BindingLimit) -> float:
        return x.projected / x.limit if x.limit > 0 else math.inf

    return tokens if share(tokens) > share(cost) else cost
