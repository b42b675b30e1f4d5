"""The status patch policy writes changed values only: tolerance against the last write."""

from __future__ import annotations

from typing import Any

import pytest

from tokenscale.registry import BudgetEntry
from tokenscale.reporting import CycleWrites
from tokenscale.status import differs, patch_cause


def a_status(tokens_per_second: float = 1000.0, cost: float = 50.0,
             desired: int = 150) -> dict[str, Any]:
    return {
        "phase": "Active", "lastReconcileTime": "2026-03-10T12:00:00Z",
        "spend": {"cost": cost, "tokens": 4.5e6},
        "targets": [{"name": "llama", "desiredReplicas": desired, "reason": "DemandDriven",
                     "tokensPerSecond": tokens_per_second,
                     "forecastTokensPerSecond": tokens_per_second * 1.02}],
    }


def test_rate_noise_within_ten_percent_is_no_patch() -> None:
    old = a_status(1000.0)
    assert patch_cause(old, a_status(1049.0), seconds_since_patch=30, heartbeat=300) is None
    assert patch_cause(old, a_status(951.0), seconds_since_patch=30, heartbeat=300) is None
    assert patch_cause(old, a_status(1150.0), seconds_since_patch=30, heartbeat=300) is not None
    assert patch_cause(old, a_status(1049.0), seconds_since_patch=300, heartbeat=300) is not None


def test_spend_drift_adds_up_against_the_last_write() -> None:
    old = a_status(cost=50.0)
    assert patch_cause(old, a_status(cost=50.4), seconds_since_patch=30, heartbeat=300) is None
    assert patch_cause(old, a_status(cost=50.6), seconds_since_patch=30, heartbeat=300) is not None


def test_spend_early_in_a_period_is_written_per_share_of_its_projection() -> None:
    # 20 minutes into a day that will cost 100 USD: 0.5 USD spent, +0.8 USD in ten minutes.
    def early(cost: float, projected: float = 100.0) -> dict[str, Any]:
        status = a_status(cost=cost)
        status["spend"] = {"cost": cost, "tokens": cost * 1e6, "projectedCost": projected,
                           "projectedTokens": projected * 1e6}
        status["budget"] = {"binding": "Cost", "limit": 5000.0, "unit": "USD", "spent": cost,
                            "projected": projected, "display": "5,000 USD"}
        return status

    old = early(0.5)
    assert patch_cause(old, early(0.55), seconds_since_patch=30, heartbeat=300) is None
    assert patch_cause(old, early(1.3), seconds_since_patch=30, heartbeat=300) is None
    assert patch_cause(old, early(1.6), seconds_since_patch=30, heartbeat=300) is not None
    # the binding limit's total alone follows the same rule
    moved = early(0.5)
    moved["budget"]["spent"] = 0.55
    assert patch_cause(old, moved, seconds_since_patch=30, heartbeat=300) is None
    moved["budget"]["spent"] = 1.6
    assert patch_cause(old, moved, seconds_since_patch=30, heartbeat=300) is not None
    # the projection itself keeps its own 1%
    assert patch_cause(old, early(0.55, projected=102.0), seconds_since_patch=30,
                       heartbeat=300) is not None


def test_integers_and_strings_compare_exactly() -> None:
    old = a_status(desired=150)
    assert patch_cause(old, a_status(desired=151), seconds_since_patch=30,
                       heartbeat=300) is not None
    assert differs({"phase": "Active"}, {"phase": "BudgetAtRisk"})
    assert differs({"a": 1}, {"a": 1, "b": None})
    assert differs([1, 2], [1, 2, 3])
    assert not differs({"x": float("nan")}, {"x": float("nan")})
    assert differs({"x": float("inf")}, {"x": 1.0})
    assert differs({"x": True}, {"x": False})


def test_heartbeats_of_many_budgets_are_spread_not_synchronised() -> None:
    from tokenscale.reporting import heartbeat_seconds
    from tokenscale.settings import OperatorSettings

    settings = OperatorSettings(status_heartbeat_seconds=300)
    beats = [heartbeat_seconds(settings, f"ns-{i // 10}", f"tb-{i}") for i in range(1000)]
    assert all(300 <= b < 375 for b in beats)
    assert heartbeat_seconds(settings, "ns-0", "tb-0") == beats[0]  # stable across calls
    # in any 30 s slice of the spread, at most about half of the budgets come due together
    assert max(sum(lo <= b < lo + 30 for b in beats) for lo in range(300, 375, 5)) < 600


def test_a_status_read_after_a_start_counts_as_written_at_its_reconcile_time() -> None:
    """After a start or takeover, an unchanged status is rewritten at its heartbeat, not by
    every budget in the first cycle."""
    import time
    from datetime import UTC, datetime

    from tokenscale.registry import BudgetEntry
    from tokenscale.reporting import adopt_status_age

    at = datetime(2026, 3, 1, 12, 1, 40, tzinfo=UTC)
    recent = BudgetEntry("ns", "b", {}, written={"lastReconcileTime": "2026-03-01T12:00:00Z"})
    adopt_status_age(recent, at)
    assert recent.last_patch is not None
    assert time.monotonic() - recent.last_patch == pytest.approx(100, abs=1)
    future = BudgetEntry("ns", "b", {}, written={"lastReconcileTime": "2026-03-01T12:05:00Z"})
    unknown = BudgetEntry("ns", "b", {}, written={})
    fresh = BudgetEntry("ns", "b", {})
    for entry in (future, unknown, fresh):
        adopt_status_age(entry, at)
        assert entry.last_patch is None  # written in the first cycle, as before
    recent.last_patch = 5.0
    adopt_status_age(recent, at)
    assert recent.last_patch == 5.0  # this operator's own writes are not replaced


def test_a_move_of_the_traffic_alone_is_a_drift_anything_else_a_change() -> None:
    old = a_status(1000.0)
    assert patch_cause(old, a_status(1150.0), 30, 300) == "drift"
    assert patch_cause(old, a_status(1150.0, desired=151), 30, 300) == "changed"
    assert patch_cause(old, a_status(1000.0, cost=60.0), 30, 300) == "changed"
    assert patch_cause(old, a_status(1049.0), 300, 300) == "heartbeat"
    assert patch_cause(None, a_status(1049.0), None, 300) == "first"


def test_a_cycle_keeps_the_writes_of_the_budgets_written_longest_ago() -> None:
    cycle = CycleWrites(slots=2, events=0)
    for name, last in [("e", 5.0), ("a", 1.0), ("d", 4.0), ("b", 2.0), ("c", 3.0)]:
        entry = BudgetEntry("ns", name, {}, last_patch=last)
        cycle.offer(entry, {"phase": "Active"})
    assert sorted(entry.name for *_, entry, _, _ in cycle.kept) == ["a", "b"]
    assert cycle.offered == 5


def test_a_budget_whose_patches_fail_does_not_take_every_turn() -> None:
    cycle = CycleWrites(slots=1, events=0)
    failing = BudgetEntry("ns", "failing", {}, last_patch=1.0, last_failed_patch=9.0)
    cycle.offer(failing, {"phase": "Active"})
    cycle.offer(BudgetEntry("ns", "waiting", {}, last_patch=2.0), {"phase": "Active"})
    assert [entry.name for *_, entry, _, _ in cycle.kept] == ["waiting"]



def test_the_latency_seen_now_is_traffic_drift_never_a_change() -> None:
    """A latency within 10 % is no patch; beyond it, or appearing, it is a drift (paced like
    token rates), never a change that bypasses the pacing."""
    def with_latency(itl: float | None) -> dict[str, Any]:
        status = a_status()
        if itl is not None:
            status["targets"][0]["latency"] = {"interTokenLatencySeconds": itl,
                                               "ttftSeconds": 0.5}
        return status

    old = with_latency(0.040)
    assert patch_cause(old, with_latency(0.043), seconds_since_patch=30, heartbeat=300) is None
    assert patch_cause(old, with_latency(0.060), seconds_since_patch=30,
                       heartbeat=300) == "drift"
    assert patch_cause(with_latency(None), old, seconds_since_patch=30,
                       heartbeat=300) == "drift"
