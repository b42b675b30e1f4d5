"""The demo sizes its load with the planner's floor: the budget's targetUtilization and
headroom, or the API's defaults where it sets neither."""

from __future__ import annotations

from typing import Any

from tokenscale.demo.budgets import peak_tokens_per_second, replicas_for


def _budget(planning: dict[str, float]) -> dict[str, Any]:
    target = {"name": "m", "tokensPerReplicaPerSecond": 1000, "minReplicas": 1,
              "maxReplicas": 40}
    return {"spec": {"planning": planning, "targets": [target]}}


def test_a_budget_without_planning_knobs_is_sized_at_the_apis_defaults() -> None:
    # targetUtilization 0.8, headroom 0: ten replicas carry 8,000 tokens/s
    assert peak_tokens_per_second(_budget({}), "m", 10, 0.0) == 8000.0
    assert replicas_for(_budget({}), "m", 8000.0, 0.0) == 10
    assert replicas_for(_budget({}), "m", 8001.0, 0.0) == 11


def test_the_budgets_own_knobs_are_used_when_set() -> None:
    budget = _budget({"targetUtilization": 0.5, "headroom": 0.25})
    assert peak_tokens_per_second(budget, "m", 10, 0.0) == 4000.0
    # a generation-only token query sees 1 - prompt_fraction of the total
    generation = _budget({})
    generation["spec"]["targets"][0]["metrics"] = {
        "tokenRateQuery": "sum by (pod) (rate(vllm:generation_tokens_total[1m]))"}
    assert peak_tokens_per_second(generation, "m", 10, 0.5) == 16000.0
