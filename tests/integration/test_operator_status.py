"""Status <-> memory mapping, conditions, the status patch policy, Events' wire form.

Plain values in, plain values out; the CRD's own schema (as the emulator and a real API
server enforce it) and Kubernetes' published schemas (kubernetes-validate) check the wire
forms.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import kubernetes_validate
import pytest

from tokenscale import api
from tokenscale.adapters.kube import event_body
from tokenscale.core.types import (
    ConditionValue,
    Decision,
    Memory,
    ModelFit,
    Observation,
    Plan,
    RecommendationEntry,
    ServiceFit,
    Spend,
    TargetObservation,
)
from tokenscale.crd import crd
from tokenscale.status import (
    build_status,
    invalid_status,
    memory_from_status,
    merge_conditions,
    merge_patch,
    patch_cause,
    significant,
)
from tokenscale_testbed.validation import validate

NOW = datetime(2026, 3, 10, 12, 0, 7, 250000, tzinfo=UTC)


def a_plan(now: datetime = NOW, recommendations: int = 3, cost: float = 12.5,
           conditions: tuple[ConditionValue, ...] = ()) -> tuple[Plan, Observation]:
    recs = tuple(RecommendationEntry("llama", now - timedelta(seconds=30 * i), 3 + i % 2)
                 for i in range(recommendations))
    memory = Memory(
        period_start=datetime(2026, 3, 10, tzinfo=UTC), spend_cost=cost, spend_tokens=4.5e6,
        last_accounted=now, recommendations=recs,
        metrics_unavailable_since=NOW - timedelta(seconds=40),
        last_scale_time={"llama": NOW - timedelta(minutes=5)},
    )
    decision = Decision(replicas=4, reason="DemandDriven", message="need 3.2", scale=True,
                        tokens_per_second=2500.0, forecast_tokens_per_second=2700.0,
                        queue_length=3.0, cost_per_hour=15.6,
                        model=ModelFit(a=0.74, b=0.026, r2=float("nan"), samples=0,
                                       source="Spec"))
    plan = Plan(
        decisions={"llama": decision}, memory=memory,
        spend=Spend(cost=cost, tokens=4.5e6, projected_cost=200.0, projected_tokens=9e7,
                    cost_per_hour=11.7, cost_per_million_tokens=float("inf")),
        period_start=datetime(2026, 3, 10, tzinfo=UTC),
        period_end=datetime(2026, 3, 11, tzinfo=UTC), phase="Active",
        conditions=conditions or (ConditionValue("Ready", "True", "Reconciled", "ok"),
                                  ConditionValue("BudgetExhausted", "False", "Remaining", "")),
    )
    observation = Observation(targets={"llama": TargetObservation(3, 2)}, tokens_in_period=4.5e6)
    return plan, observation


def crd_status_schema() -> dict[str, object]:
    version = crd()["spec"]["versions"][0]
    schema: dict[str, object] = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema


def test_memory_survives_the_round_trip_through_status() -> None:
    plan, observation = a_plan()
    plan = replace(plan, decisions={"llama": replace(plan.decisions["llama"],
                                                     admission_tokens_per_second=2000.0)})
    prices = {"llama": api.PriceStatus(source="OpenCost", cost_per_replica_hour=3.9)}
    status, _ = build_status(plan, observation, api.TokenBudgetStatus(), NOW, 3, prices=prices)
    wire = api.dump(status)
    assert validate(wire, crd_status_schema()) == []
    restored = memory_from_status(api.parse_status(wire))
    assert restored.period_start == plan.memory.period_start
    assert restored.spend_cost == plan.memory.spend_cost
    assert restored.spend_tokens == plan.memory.spend_tokens
    assert restored.last_accounted == NOW  # lastReconcileTime keeps microseconds
    assert sorted(restored.recommendations, key=lambda r: r.time) == sorted(
        plan.memory.recommendations, key=lambda r: r.time)
    assert restored.metrics_unavailable_since == plan.memory.metrics_unavailable_since
    assert restored.last_scale_time == plan.memory.last_scale_time
    # what the next cycle compares with: the queue (its growth), the admission in force
    # (censoring) and the price the time since is charged at
    assert restored.queues == {"llama": 3.0}
    assert restored.admissions == {"llama": 2000.0}
    assert restored.prices == {"llama": 3.9}


def test_status_reports_numbers_for_the_printer_columns_and_drops_non_finite() -> None:
    plan, observation = a_plan()
    status, _ = build_status(plan, observation, api.TokenBudgetStatus(), NOW, 3)
    assert (status.replicas, status.desired_replicas, status.tokens_per_second) == (3, 4, 2500.0)
    assert status.spend is not None and status.spend.cost_per_million_tokens is None
    target = status.targets[0]
    assert (target.current_replicas, target.ready_replicas) == (3, 2)
    assert target.model is not None and target.model.r2 is None
    assert status.observed_generation == 3


@pytest.mark.parametrize(("fit", "expect"), [
    pytest.param(ServiceFit(2400.0, r2=0.93, samples=180, source="Fitted", raw_capacity=3000.0),
                 {"capacityWithinSlo": 2400.0, "r2": 0.93, "samples": 180, "source": "Fitted"},
                 id="fitted"),
    pytest.param(ServiceFit(3000.0), {"capacityWithinSlo": 3000.0, "samples": 0,
                                      "source": "Spec"}, id="spec-without-r2"),
    pytest.param(ServiceFit(2400.0, r2=float("nan"), samples=5, source="Fitted"),
                 {"capacityWithinSlo": 2400.0, "samples": 5, "source": "Fitted"},
                 id="non-finite-r2-omitted"),
    pytest.param(ServiceFit(float("inf")), None, id="non-finite-capacity-omits-it"),
    pytest.param(None, None, id="no-service-model-omitted"),
])
def test_service_model_in_target_status(fit: ServiceFit | None,
                                        expect: dict[str, object] | None) -> None:
    plan, observation = a_plan()
    decisions = {n: replace(d, service_model=fit) for n, d in plan.decisions.items()}
    status, _ = build_status(replace(plan, decisions=decisions), observation,
                             api.TokenBudgetStatus(), NOW, 3)
    wire = api.dump(status)
    assert validate(wire, crd_status_schema()) == []
    assert wire["targets"][0].get("serviceModel") == expect
    assert api.parse_status(wire).targets[0] == status.targets[0]


def test_recommendations_are_bounded() -> None:
    plan, observation = a_plan(recommendations=api.MAX_RECOMMENDATIONS + 100)
    status, _ = build_status(plan, observation, api.TokenBudgetStatus(), NOW, 1)
    assert len(status.recommendations) == api.MAX_RECOMMENDATIONS
    newest = max(r.time for r in plan.memory.recommendations)
    assert status.recommendations[-1].time == api.dump(status)["recommendations"][-1]["time"]
    assert memory_from_status(status).recommendations[-1].time == newest


def test_last_transition_time_is_kept_while_the_status_stays() -> None:
    first, changes = merge_conditions(
        [], [ConditionValue("MetricsAvailable", "True", "Fresh", "ok")], NOW, 1)
    assert [c.after.type for c in changes] == ["MetricsAvailable"]
    assert not changes[0].worth_event()  # a new, normal condition is no news
    later = NOW + timedelta(minutes=3)
    same, changes = merge_conditions(
        first, [ConditionValue("MetricsAvailable", "True", "StillFresh", "fine")], later, 2)
    assert changes == []
    assert same[0].last_transition_time == "2026-03-10T12:00:07Z"
    assert (same[0].reason, same[0].observed_generation) == ("StillFresh", 2)
    flipped, changes = merge_conditions(
        same, [ConditionValue("MetricsAvailable", "False", "Unreachable", "down")], later, 2)
    assert flipped[0].last_transition_time == "2026-03-10T12:03:07Z"
    assert len(changes) == 1 and changes[0].worth_event()


def test_invalid_spec_keeps_spend_and_says_why() -> None:
    plan, observation = a_plan()
    valid, _ = build_status(plan, observation, api.TokenBudgetStatus(), NOW, 1)
    problems = ["spec.targets[0].maxReplicas: Field required", "spec.budget: at least one"]
    status, changes = invalid_status(valid, problems, NOW, 2)
    assert status.phase == "Invalid" and status.spend == valid.spend
    spec_valid = next(c for c in status.conditions if c.type == "SpecValid")
    assert spec_valid.status == "False" and "maxReplicas" in spec_valid.message
    assert any(c.after.type == "SpecValid" and c.worth_event() for c in changes)
    assert validate(api.dump(status), crd_status_schema()) == []


def test_patch_policy_ignores_churn_but_not_changes() -> None:
    plan, observation = a_plan()
    old = api.dump(build_status(plan, observation, api.TokenBudgetStatus(), NOW, 1)[0])
    later = NOW + timedelta(seconds=5)
    moved = api.dump(build_status(
        a_plan(later, cost=12.501)[0], observation, api.parse_status(old), later, 1)[0])
    assert moved["lastReconcileTime"] != old["lastReconcileTime"]
    assert moved["recommendations"] != old["recommendations"]  # timestamps moved
    assert significant(moved) == significant(old)
    assert patch_cause(old, moved, seconds_since_patch=5, heartbeat=60) is None
    assert patch_cause(old, moved, seconds_since_patch=61, heartbeat=60) is not None
    assert patch_cause(None, moved, seconds_since_patch=None, heartbeat=60) is not None
    # the spend so far is written every 1% of the projection to the period's end (200 USD)
    cheaper = api.dump(build_status(
        a_plan(later, cost=14.0)[0], observation, api.parse_status(old), later, 1)[0])
    assert patch_cause(old, cheaper, seconds_since_patch=5, heartbeat=60) is None
    dearer = api.dump(build_status(
        a_plan(later, cost=15.0)[0], observation, api.parse_status(old), later, 1)[0])
    assert patch_cause(old, dearer, seconds_since_patch=5, heartbeat=60) is not None
    scaled = {**moved, "desiredReplicas": 5}
    assert patch_cause(old, scaled, seconds_since_patch=5, heartbeat=60) is not None
    # why: a heartbeat-only write may wait for a later cycle, the others may not
    assert patch_cause(old, moved, seconds_since_patch=61, heartbeat=60) == "heartbeat"
    assert patch_cause(old, scaled, seconds_since_patch=61, heartbeat=60) == "changed"
    assert patch_cause(old, moved, seconds_since_patch=None, heartbeat=60) == "first"
    assert patch_cause(old, moved, seconds_since_patch=5, heartbeat=60) is None
    busier = copy.deepcopy(moved)
    busier["targets"][0]["forecastTokensPerSecond"] *= 1.5
    assert patch_cause(old, busier, seconds_since_patch=5, heartbeat=60) == "drift"
    busier["desiredReplicas"] = 5
    assert patch_cause(old, busier, seconds_since_patch=5, heartbeat=60) == "changed"


def test_merge_patch_sets_changes_and_nulls_removed_keys() -> None:
    old = {"phase": "Degraded", "metricsUnavailableSince": "t", "spend": {"cost": 1, "x": 2},
           "targets": [{"name": "a"}]}
    new = {"phase": "Active", "spend": {"cost": 1}, "targets": [{"name": "a"}]}
    assert merge_patch(old, new) == {"phase": "Active", "metricsUnavailableSince": None,
                                     "spend": {"x": None}}
    assert merge_patch(new, new) == {}


@pytest.mark.parametrize("type_", ["Normal", "Warning"])
def test_event_bodies_are_valid_core_v1_events(type_: str) -> None:
    involved = {"apiVersion": "tokenscale.dev/v1alpha1", "kind": "TokenBudget",
                "metadata": {"name": "chat", "namespace": "inference", "uid": "1234"}}
    body = event_body(involved, "Scaled", "Deployment llama: 1 -> 3 " + "x" * 2000, type_, NOW,
                      "tokenscale-7c9-abc")
    kubernetes_validate.validate(body, desired_version="1.30", strict=True)
    assert body["involvedObject"]["uid"] == "1234" and len(body["message"]) == 1024
    assert body["firstTimestamp"] == "2026-03-10T12:00:07Z"


def test_quality_samples_pair_quality_with_the_targets_token_rate() -> None:
    from tokenscale.adapters.prometheus import Series
    from tokenscale.adapters.promql import WorkloadRef
    from tokenscale.observation import quality_samples

    ref = WorkloadRef("inference", "Deployment", "llama")
    pod_a, pod_b = "llama-7d9f8c6b5-x2k4p", "llama-7d9f8c6b5-q9w8e"
    rates = [Series({"namespace": "inference", "pod": pod_a}, ((0, 100.0), (300, 0.0),
                                                                 (600, 300.0))),
             Series({"namespace": "inference", "pod": pod_b}, ((0, 100.0), (600, 100.0))),
             Series({"namespace": "inference", "pod": "other-abc12-zzzzz"}, ((0, 9e9),))]
    model_wide = [Series({"model": "llama"}, ((0, 0.7), (300, 0.71), (600, 0.75)))]
    assert quality_samples((model_wide, rates), ref) == ((200.0, 0.7), (400.0, 0.75))
    per_pod = [Series({"namespace": "inference", "pod": pod_a}, ((0, 0.6), (600, 0.8))),
               Series({"namespace": "inference", "pod": pod_b}, ((0, 0.8), (600, 0.8)))]
    assert quality_samples((per_pod, rates), ref) == ((200.0, 0.7), (400.0, 0.8))
    ambiguous = [Series({"model": "a"}, ((0, 1.0),)), Series({"model": "b"}, ((0, 1.0),))]
    assert quality_samples((ambiguous, rates), ref) == ()
    assert quality_samples(None, ref) == ()
