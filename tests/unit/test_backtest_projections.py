"""The backtest's measurement of the period-end projection (sim/projections.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from test_backtest_sim import constant_trace, spec_for

from tokenscale.backtest.report import to_json
from tokenscale.sim.engine import Settings, run_backtest
from tokenscale.sim.projections import seed_profiles, windows

MONDAY = datetime(2024, 1, 1, tzinfo=UTC)


def test_windows_are_the_complete_periods_else_the_whole_trace() -> None:
    hourly = spec_for(budget={"period": "Hour", "maxCost": 100})
    assert windows(hourly, MONDAY, 7300) == [(0, 3600), (3600, 7200)]
    assert windows(hourly, MONDAY.replace(minute=30), 7300) == [(1800, 5400)]
    assert windows(hourly, MONDAY, 1800) == [(0, 1800)]


def test_a_steady_demand_is_projected_exactly_and_reported_next_to_the_run_rate() -> None:
    spec = spec_for(budget={"period": "Hour", "maxCost": 100})
    bt = run_backtest(spec, {"m": constant_trace(30.0, 7300)},
                      Settings(progress=False, engine=None, hpa_utilizations=(0.8,)))
    doc = to_json(bt)
    assert [w["end_second"] for w in doc["projection_windows"]] == [3600, 7200]
    assert len(doc["projection_checkpoints"]) == 6
    for key in ("projection_error", "projection_error_run_rate"):
        assert set(doc[key]) == {"25", "50", "75"}
        assert all(abs(v) < 0.02 for v in doc[key].values()), doc[key]


def test_history_seeds_the_profile_the_operator_would_have_learned() -> None:
    spec = spec_for(budget={"period": "Day", "maxCost": 100})
    minute = np.arange(2 * 1440) % 1440
    rates = np.where((minute >= 8 * 60) & (minute < 20 * 60), 400.0, 100.0)  # two days
    profile = seed_profiles(spec, MONDAY, {"m": rates})["m"]
    assert profile.slots[0] == pytest.approx(100.0) and profile.slots[20] == pytest.approx(400.0)
    assert profile.level == pytest.approx(1.0)
    # the last half hour before the replay is complete, folded in at its first cycle
    assert profile.slot_start == datetime(2023, 12, 31, 23, 30, tzinfo=UTC)
    assert profile.slot_seconds == pytest.approx(1800)
