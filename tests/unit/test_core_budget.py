"""Budget periods (time zones, DST), price multipliers, cost integration, pacing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from core_world import NOW, spec
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenscale.core.budget import (
    accrue_cost,
    affordable_cost_rate,
    affordable_token_rate,
    counter_increase,
    is_exhausted,
    period_bounds,
    price_multiplier,
    project,
)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


PERIODS = [
    # period, zone, now (UTC), expected start, expected end (UTC)
    ("Hour", "UTC", _utc(2026, 3, 4, 12, 34, 56), _utc(2026, 3, 4, 12), _utc(2026, 3, 4, 13)),
    ("Day", "UTC", _utc(2026, 3, 4, 12), _utc(2026, 3, 4), _utc(2026, 3, 5)),
    ("Day-at-start", "UTC", _utc(2026, 3, 4), _utc(2026, 3, 4), _utc(2026, 3, 5)),
    ("Week", "UTC", _utc(2026, 3, 4, 12), _utc(2026, 3, 2), _utc(2026, 3, 9)),
    ("Month", "UTC", _utc(2026, 3, 4, 12), _utc(2026, 3, 1), _utc(2026, 4, 1)),
    ("Month", "UTC", _utc(2026, 12, 31, 23, 59), _utc(2026, 12, 1), _utc(2027, 1, 1)),
    ("Month", "UTC", _utc(2028, 2, 29, 1), _utc(2028, 2, 1), _utc(2028, 3, 1)),
    # half-hour offset: local hours start at :30 UTC
    ("Hour", "Asia/Kolkata", _utc(2026, 3, 4, 12, 10), _utc(2026, 3, 4, 11, 30),
     _utc(2026, 3, 4, 12, 30)),
    ("Day", "Asia/Kolkata", _utc(2026, 3, 4, 12, 10), _utc(2026, 3, 3, 18, 30),
     _utc(2026, 3, 4, 18, 30)),
    ("Week", "Asia/Tokyo", _utc(2026, 3, 8, 20), _utc(2026, 3, 8, 15), _utc(2026, 3, 15, 15)),
    # DST: spring forward makes a 23 h day, fall back a 25 h day
    ("Day", "America/New_York", _utc(2026, 3, 8, 12), _utc(2026, 3, 8, 5), _utc(2026, 3, 9, 4)),
    ("Day", "Europe/Berlin", _utc(2026, 10, 25, 12), _utc(2026, 10, 24, 22),
     _utc(2026, 10, 25, 23)),
    ("Month", "Europe/Berlin", _utc(2026, 3, 30), _utc(2026, 2, 28, 23), _utc(2026, 3, 31, 22)),
    # Santiago changes at midnight: a missing midnight and a repeated 23:00 hour
    ("Day", "America/Santiago", _utc(2026, 9, 6, 12), _utc(2026, 9, 6, 4), _utc(2026, 9, 7, 3)),
    ("Day", "America/Santiago", _utc(2026, 4, 5, 2, 30), _utc(2026, 4, 4, 3),
     _utc(2026, 4, 5, 4)),
    ("Day", "America/Santiago", _utc(2026, 4, 5, 3, 30), _utc(2026, 4, 4, 3),
     _utc(2026, 4, 5, 4)),
]


@pytest.mark.parametrize(
    ("period", "zone", "now", "start", "end"), PERIODS,
    ids=[f"{p}-{z}-{n:%Y%m%dT%H%M}" for p, z, n, _, _ in PERIODS],
)
def test_period_bounds(period: str, zone: str, now: datetime, start: datetime,
                       end: datetime) -> None:
    s = spec(budget={"period": period.split("-")[0], "timeZone": zone})
    assert period_bounds(s.budget, now) == (start, end)


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "America/Santiago", "Asia/Kolkata",
         "Australia/Lord_Howe", "Pacific/Chatham", "America/St_Johns"]


@settings(max_examples=300, deadline=None)
@given(
    period=st.sampled_from(["Hour", "Day", "Week", "Month"]),
    zone=st.sampled_from(ZONES),
    now=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1),
                     timezones=st.just(UTC)),
)
def test_periods_contain_now_and_tile_time(period: str, zone: str, now: datetime) -> None:
    budget = spec(budget={"period": period, "timeZone": zone}).budget
    start, end = period_bounds(budget, now)
    assert start <= now < end
    assert period_bounds(budget, end)[0] == end  # the next period starts where this ends
    assert period_bounds(budget, start) == (start, end)
    hours = (end - start).total_seconds() / 3600
    low, high = {"Hour": (1, 1), "Day": (22, 26), "Week": (166, 170),
                 "Month": (28 * 24 - 2, 31 * 24 + 2)}[period]
    assert low <= hours <= high


WEEKEND = {"pricing": {"schedule": [
    {"days": ["Sat", "Sun"], "start": "00:00", "end": "24:00", "multiplier": 0.6},
    {"start": "00:00", "end": "06:00", "multiplier": 0.5},
    {"days": ["Mon"], "start": "00:00", "end": "24:00", "multiplier": 2.0},
]}}


@pytest.mark.parametrize(("zone", "at", "multiplier"), [
    ("UTC", _utc(2026, 3, 4, 12), 1.0),  # Wednesday noon
    ("UTC", _utc(2026, 3, 4, 5, 59), 0.5),  # night window
    ("UTC", _utc(2026, 3, 4, 6), 1.0),  # end is exclusive
    ("UTC", _utc(2026, 3, 7, 3), 0.6),  # Saturday: first matching window wins over night
    ("UTC", _utc(2026, 3, 9, 3), 0.5),  # Monday night: night window is listed first
    ("UTC", _utc(2026, 3, 9, 23, 59), 2.0),  # "24:00" end covers the last minute
    ("Asia/Tokyo", _utc(2026, 3, 6, 16), 0.6),  # Friday 16:00 UTC is Saturday 01:00 JST
], ids=["weekday", "night", "end-exclusive", "first-wins", "order", "until-24", "local-zone"])
def test_price_multiplier(zone: str, at: datetime, multiplier: float) -> None:
    s = spec(budget={"timeZone": zone}, **WEEKEND)
    assert price_multiplier(s, at) == multiplier


def test_no_schedule_multiplier_is_one() -> None:
    assert price_multiplier(spec(), NOW) == 1.0


def test_accrue_within_period() -> None:
    assert accrue_cost(spec(), 3.9, NOW, NOW + timedelta(seconds=30)) == [
        (_utc(2026, 3, 4), pytest.approx(3.9 * 30 / 3600))]


def test_accrue_splits_at_period_boundary() -> None:
    got = accrue_cost(spec(), 2.0, _utc(2026, 3, 4, 23), _utc(2026, 3, 5, 1, 30))
    assert got == [(_utc(2026, 3, 4), pytest.approx(2.0)), (_utc(2026, 3, 5), pytest.approx(3.0))]


def test_accrue_prices_windows() -> None:
    s = spec(**WEEKEND)  # Friday 23:00 -> Saturday 01:00: 1 h at 1, 1 h at 0.6
    got = accrue_cost(s, 10.0, _utc(2026, 3, 6, 23), _utc(2026, 3, 7, 1))
    assert got == [(_utc(2026, 3, 6), pytest.approx(10.0)), (_utc(2026, 3, 7), pytest.approx(6.0))]


def test_accrue_nothing_backwards() -> None:
    assert accrue_cost(spec(), 1.0, NOW, NOW) == []
    assert accrue_cost(spec(), 1.0, NOW, NOW - timedelta(seconds=1)) == []


def _minute_riemann(s: Any, rate: float, since: datetime, until: datetime) -> float:
    total, t = 0.0, since
    while t < until:
        total += rate * price_multiplier(s, t) / 60
        t += timedelta(minutes=1)
    return total


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
    period=st.sampled_from(["Hour", "Day", "Week"]),
    start_minute=st.integers(0, 60 * 24 * 14),
    minutes=st.integers(1, 60 * 30),
    rate=st.floats(0.1, 100),
)
def test_accrued_pieces_add_up_and_belong_to_their_periods(
    zone: str, period: str, start_minute: int, minutes: int, rate: float
) -> None:
    s = spec(budget={"timeZone": zone, "period": period}, **WEEKEND)
    since = _utc(2026, 3, 1) + timedelta(minutes=start_minute)
    until = since + timedelta(minutes=minutes)
    pieces = accrue_cost(s, rate, since, until)
    assert sum(c for _, c in pieces) == pytest.approx(_minute_riemann(s, rate, since, until))
    starts = [p for p, _ in pieces]
    assert starts == sorted(set(starts))
    assert starts[0] == period_bounds(s.budget, since)[0]
    assert starts[-1] == period_bounds(s.budget, until - timedelta(microseconds=1))[0]


def test_pacing_rates() -> None:
    end = NOW + timedelta(hours=12)
    assert affordable_cost_rate(480, 120, NOW, end) == pytest.approx(30)
    assert affordable_cost_rate(480, 500, NOW, end) == 0
    assert affordable_cost_rate(None, 500, NOW, end) == math.inf
    assert affordable_token_rate(1_000_000, 136_000, NOW, end) == pytest.approx(20)
    assert affordable_token_rate(None, 1, NOW, end) == math.inf
    # the last instant of a period divides by one second, not zero
    assert affordable_cost_rate(10, 0, end, end) == pytest.approx(36000)


def test_projection_and_exhaustion() -> None:
    end = NOW + timedelta(hours=2)
    assert project(10, 1 / 3600, NOW, end) == pytest.approx(12)
    assert project(10, 1, end, end) == 10
    assert is_exhausted(100, 100) and not is_exhausted(100, 99.9) and not is_exhausted(None, 1e9)


@pytest.mark.parametrize(("values", "increase"), [
    ([], 0), ([5], 0), ([1, 4, 10], 9), ([10, 20, 3, 8], 18), ([7, 7, 7], 0),
], ids=["empty", "single", "monotonic", "reset", "flat"])
def test_counter_increase(values: list[float], increase: float) -> None:
    assert counter_increase(values) == increase
