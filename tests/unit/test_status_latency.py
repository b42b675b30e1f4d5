"""status.targets[].latency: the latency the requests see now, next to the SLO."""

from __future__ import annotations

from core_world import NOW, running, seen, spec, world

from tokenscale import api
from tokenscale.core.planner import plan
from tokenscale.status import build_status


def _wire_target(itl: float | None, ttft: float | None) -> dict[str, object]:
    observation = world(llama=seen(2, 1500, recent_itl_seconds=itl, recent_ttft_seconds=ttft))
    result = plan(spec(), observation, running(), NOW)
    status, _ = build_status(result, observation, api.TokenBudgetStatus(), NOW, 1)
    target: dict[str, object] = api.dump(status)["targets"][0]
    return target


def test_the_latency_seen_now_is_reported_per_target() -> None:
    assert _wire_target(0.031, 0.42)["latency"] == {"interTokenLatencySeconds": 0.031,
                                                    "ttftSeconds": 0.42}
    # an engine without a TTFT histogram: the ITL alone
    assert _wire_target(0.031, None)["latency"] == {"interTokenLatencySeconds": 0.031}


def test_no_latency_known_means_no_latency_field() -> None:
    assert "latency" not in _wire_target(None, None)
