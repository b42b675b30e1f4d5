"""The ground truth the accounting is measured against (tokenscale_testbed/truth.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from core_world import spec, target

from tokenscale_testbed.truth import relative_error, replicas_at, truth_cost

T0 = datetime(2026, 3, 4, 8, 59, tzinfo=UTC).timestamp()  # a Wednesday, 08:59 UTC


def test_replicas_times_price_times_multiplier_between_the_changes() -> None:
    s = spec([target(costPerReplicaHour=3600.0)],  # 1 currency per replica-second
             pricing={"schedule": [{"start": "09:00", "end": "10:00", "multiplier": 2}]})
    log = [(T0 - 100, 2), (T0 + 30, 4), (T0 + 90, 1)]
    # 08:59:00-08:59:30 at 2 x 1, 08:59:30-09:00 at 4 x 1, 09:00-09:00:30 at 4 x 2, then 1 x 2
    assert truth_cost(s, {"llama": log}, T0, T0 + 120) == pytest.approx(
        30 * 2 + 30 * 4 + 30 * 4 * 2 + 30 * 1 * 2)
    # the operator's calendar an hour later: all of it inside the window
    assert truth_cost(s, {"llama": log}, T0, T0 + 120, offset=3600 - 120) == pytest.approx(
        2 * (30 * 2 + 60 * 4 + 30 * 1))
    assert replicas_at(log, T0 - 200) == 0 and replicas_at(log, T0 + 30) == 4
    assert relative_error(101.0, 100.0) == pytest.approx(0.01)
    assert relative_error(1.0, 0.0) is None
