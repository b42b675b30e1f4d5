"""The scale benchmark's budgets are as far into their day whatever the hour it runs at."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from scale_workload import period_start, zone_name, zone_offset_hours

MIDNIGHT_UTC = 1_796_169_600.0  # 2026-12-02T00:00:00Z


def test_every_hour_of_the_day_lands_as_far_into_the_local_day() -> None:
    for quarter in range(96):
        now = MIDNIGHT_UTC + quarter * 900.0 + 7.0
        offset = zone_offset_hours(now, 12.0)
        assert -12 <= offset <= 14
        zone = ZoneInfo(zone_name(offset))
        start = period_start(now, offset)
        local_start = datetime.fromtimestamp(start, zone)
        assert (local_start.hour, local_start.minute, local_start.second) == (0, 0, 0)
        assert 12 * 3600 <= now - start < 13 * 3600, (quarter, offset)
        early = zone_offset_hours(now, 0.5)
        assert 0 <= now - period_start(now, early) < 3600, (quarter, early)


def test_fixed_offset_zone_names_use_posix_signs() -> None:
    assert zone_name(5) == "Etc/GMT-5"
    assert zone_name(-3) == "Etc/GMT+3"
    assert ZoneInfo(zone_name(5)).utcoffset(datetime(2026, 12, 2)).total_seconds() == 5 * 3600
