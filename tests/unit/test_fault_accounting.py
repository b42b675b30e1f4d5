"""Accounting under faults (pure planner): Prometheus losing its history never lowers the
tokens already counted in the period, so a token budget is not handed out twice."""

from __future__ import annotations

from datetime import timedelta

from core_world import NOW, running, seen, spec

from tokenscale.core.planner import plan
from tokenscale.core.types import Observation


def test_tokens_never_drop_within_a_period_when_prometheus_forgets() -> None:
    memory = running(spend_tokens=5e8)
    s = spec(budget={"maxTokens": 10**9, "maxCost": None})
    # An empty TSDB answers increase() with only the last few seconds.
    result = plan(s, Observation({"llama": seen(2, 1500)}, tokens_in_period=3e4), memory, NOW)
    assert result.spend.tokens == 5e8
    # A higher count is taken as it is (Prometheus is authoritative when it knows more).
    result = plan(s, Observation({"llama": seen(2, 1500)}, tokens_in_period=6e8), memory, NOW)
    assert result.spend.tokens == 6e8


def test_a_new_period_starts_from_prometheus_again() -> None:
    memory = running(now=NOW - timedelta(days=1), spend_tokens=5e8)
    s = spec(budget={"maxTokens": 10**9, "maxCost": None})
    result = plan(s, Observation({"llama": seen(2, 1500)}, tokens_in_period=3e4), memory, NOW)
    assert result.spend.tokens == 3e4
