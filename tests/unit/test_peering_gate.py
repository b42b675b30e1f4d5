"""kopf's peering rule as the planning loop applies it (pure, no API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tokenscale.adapters.peering import may_act

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _peer(priority: int, seen_ago: float, lifetime: int = 60) -> dict[str, object]:
    return {"priority": priority, "lifetime": lifetime,
            "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat()}


def test_alone_or_highest_acts() -> None:
    assert may_act({}, "me", 10, NOW)
    assert may_act({"me": _peer(10, 0)}, "me", 10, NOW)
    assert may_act({"me": _peer(10, 0), "other": _peer(5, 1)}, "me", 10, NOW)


def test_a_live_higher_or_equal_peer_pauses() -> None:
    assert not may_act({"other": _peer(11, 1)}, "me", 10, NOW)
    assert not may_act({"other": _peer(10, 1)}, "me", 10, NOW)  # a tie pauses both (kopf)


def test_a_dead_peer_does_not_count() -> None:
    assert may_act({"other": _peer(99, 61, lifetime=60)}, "me", 10, NOW)
    assert may_act({"other": _peer(99, 6, lifetime=6)}, "me", 10, NOW)
    assert not may_act({"other": _peer(99, 5, lifetime=6)}, "me", 10, NOW)


def test_malformed_records_are_ignored() -> None:
    assert may_act({"x": "garbage", "y": {"priority": "high", "lastseen": "now"},
                    "z": {"priority": 50}}, "me", 10, NOW)
