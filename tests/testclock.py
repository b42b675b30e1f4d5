"""The calendar the operator processes of a test live in.

``TOKENSCALE_TEST_CLOCK`` picks it: empty (the default) is the system clock; a name from
:data:`INSTANTS` (``month-start``, ``month-end``, ``week-start``, ``dst-spring``,
``dst-autumn``) or ``<local ISO time>@<IANA zone>`` starts every test at that instant. The
operator processes get it as ``TOKENSCALE_CLOCK_OFFSET_SECONDS`` (their calendar is shifted,
Prometheus is still asked in its own time), and the tests' budgets are written in the
clock's zone, so periods, price windows and DST follow the chosen instant.

The offset is taken once per test, when the test starts: every process of one test (a
restarted operator, a standby) shares one calendar.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

#: Named instants (local time, zone): each starts a test 20 s before, or 10 s after, the
#: boundary it is about, so the test itself crosses it or starts right on it.
INSTANTS: dict[str, tuple[str, str]] = {
    # the first minute of a month (and of its first hour, day and a year)
    "month-start": ("2027-01-01T00:00:10", "UTC"),
    # the last minute of a month: hour, day and month periods end while the test runs
    "month-end": ("2026-12-31T23:59:40", "UTC"),
    # Sunday night before a Monday week start (hour, day and week end; the month goes on)
    "week-start": ("2027-01-03T23:59:40", "UTC"),
    # Europe/Berlin springs forward: 01:59:40 CET, then 03:00 CEST twenty seconds later
    "dst-spring": ("2027-03-28T01:59:40", "Europe/Berlin"),
    # Europe/Berlin falls back: 02:59:40 CEST, then 02:00 CET again (a 25-hour day)
    "dst-autumn": ("2026-10-25T02:59:40+02:00", "Europe/Berlin"),
}


@dataclass(frozen=True)
class TestClock:
    """The instant a test starts at (None: the system clock), its zone and the offset."""

    name: str
    zone: str
    offset_seconds: float

    def now(self) -> datetime:
        """The operator's time now (UTC)."""
        return datetime.fromtimestamp(time.time() + self.offset_seconds, UTC)

    def env(self) -> dict[str, str]:
        """The environment of an operator process living on this clock."""
        return {"TOKENSCALE_CLOCK_OFFSET_SECONDS": repr(self.offset_seconds)}


def parse(spec: str) -> tuple[datetime, str]:
    """``name`` or ``<local ISO>@<zone>`` -> (aware instant, zone)."""
    local, zone = INSTANTS.get(spec, (None, None)) if "@" not in spec else spec.split("@", 1)
    if local is None or zone is None:
        raise ValueError(f"TOKENSCALE_TEST_CLOCK={spec!r}: not one of {sorted(INSTANTS)} "
                         "nor <local ISO time>@<IANA zone>")
    at = datetime.fromisoformat(local)
    if at.tzinfo is None:
        at = at.replace(tzinfo=ZoneInfo(zone))
    return at, zone


def start(spec: str | None = None) -> TestClock:
    """A clock starting now at the chosen instant (``TOKENSCALE_TEST_CLOCK`` by default)."""
    spec = os.environ.get("TOKENSCALE_TEST_CLOCK", "") if spec is None else spec
    if not spec:
        return TestClock("system", "UTC", 0.0)
    at, zone = parse(spec)
    return TestClock(spec, zone, float(round(at.timestamp() - time.time())))  # whole seconds


_current = start("")


def current() -> TestClock:
    """The clock of the running test (set by the autouse fixture in tests/conftest.py)."""
    return _current


_lasting: dict[tuple[float, tuple[str, ...]], tuple[str, str]] = {}


def begin_test() -> TestClock:
    """Take the offset for a new test (and forget the previous test's period choices)."""
    global _current
    _current = start()
    _lasting.clear()
    return _current


def zone_and_period_lasting(seconds: float,
                            periods: tuple[str, ...] = ("Month", "Week", "Day", "Hour"),
                            ) -> tuple[str, str]:
    """A (timeZone, period) whose current period still has ``seconds`` left at the test
    clock's now: for tests whose behaviour is not a period rollover. The first of ``periods``
    that lasts, in the clock's own zone first, then in zones whose midnight lies elsewhere.
    Chosen once per test: every budget of a test gets the same answer, however long it runs."""
    if (seconds, periods) not in _lasting:
        _lasting[(seconds, periods)] = _choose(seconds, current(), periods)
    return _lasting[(seconds, periods)]


def _choose(seconds: float, clock: TestClock, periods: tuple[str, ...]) -> tuple[str, str]:
    now = clock.now()
    for period in periods:
        for zone in (clock.zone, "Asia/Tokyo", "America/New_York"):
            if _seconds_left(now, period, ZoneInfo(zone)) >= seconds:
                return zone, period
    raise AssertionError(f"no period lasts {seconds} s from {now}")  # pragma: no cover


def _seconds_left(now: datetime, period: str, zone: ZoneInfo) -> float:
    local = now.astimezone(zone)
    if period == "Hour":
        end = local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return (end - local).total_seconds()
    midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
    if period == "Day":
        end = midnight + timedelta(days=1)
    elif period == "Week":
        end = midnight + timedelta(days=7 - local.weekday())
    else:
        end = (datetime(local.year + 1, 1, 1, tzinfo=zone) if local.month == 12
               else datetime(local.year, local.month + 1, 1, tzinfo=zone))
    # wall-clock arithmetic in the zone, then to UTC: DST days are 23 or 25 hours long
    return (end.astimezone(UTC) - now.astimezone(UTC)).total_seconds()
