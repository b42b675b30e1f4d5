"""BudgetRegistry: what an entry keeps of a TokenBudget's watch events (plain bodies)."""

from __future__ import annotations

from typing import Any

from core_world import target

from tokenscale.metrics import OperatorMetrics
from tokenscale.registry import BudgetRegistry
from tokenscale.sharding import Shard

SPEC = {"budget": {"period": "Day", "maxCost": 100}, "targets": [target()]}


def _body(namespace: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = {"namespace": namespace, "name": "b", "uid": "u-1", "generation": 3,
            "resourceVersion": "42", "managedFields": [{"manager": "kubectl"}] * 50,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}" * 100}}
    body: dict[str, Any] = {"metadata": meta, "spec": SPEC}
    if status is not None:
        body["status"] = status
    return body


def test_an_entry_keeps_identity_parsed_spec_and_status_not_the_whole_body() -> None:
    registry = BudgetRegistry(OperatorMetrics(), lambda: 1000.0)
    status = {"phase": "Active", "demandProfiles": [{"slots": [1.0] * 48}]}
    entry = registry.on_event("ADDED", _body("ns", status))
    assert entry is not None and entry.spec is not None
    assert entry.body == {"metadata": {"namespace": "ns", "name": "b", "uid": "u-1",
                                       "generation": 3, "resourceVersion": "42"}}
    assert entry.generation == 3 and entry.written == status
    # our own status patch echoed back by the watch: the status as written stays
    registry.on_event("MODIFIED", _body("ns", {"phase": "Degraded"}))
    assert entry.written == status and "status" not in entry.body


def test_a_shard_ignores_the_budgets_of_namespaces_it_does_not_own() -> None:
    shard = Shard(0, 4)
    mine = next(f"team-{i}" for i in range(100) if shard.owns(f"team-{i}"))
    other = next(f"team-{i}" for i in range(100) if not shard.owns(f"team-{i}"))
    registry = BudgetRegistry(OperatorMetrics(), lambda: 1000.0, owns=shard.owns)
    assert registry.on_event("ADDED", _body(other)) is None
    assert registry.on_event("ADDED", _body(mine)) is not None
    assert list(registry.entries) == [(mine, "b")]
