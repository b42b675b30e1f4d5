"""The TokenBudget models, the CRD generated from them, the samples and the invalid corpus."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokenscale import api, crd
from tokenscale_testbed.crdschema import crd_schema, schema_errors

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "tokenbudgets.tokenscale.dev.yaml"
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
SCHEMA = crd_schema(crd.crd())


def test_committed_crd_equals_generated() -> None:
    assert CRD_FILE.read_text() == crd.render(), "run `make crd` and commit the result"


def test_at_least_three_samples() -> None:
    assert len(SAMPLES) >= 3


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_sample_valid_against_crd_schema_and_models(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert schema_errors(SCHEMA, doc) == []
        model = api.TokenBudget.model_validate(doc)
        assert model.spec.targets


def test_samples_cover_the_three_shapes() -> None:
    specs = [api.parse_spec(yaml.safe_load(p.read_text())["spec"]) for p in SAMPLES]
    assert any(len(s.targets) == 1 and s.budget.max_cost for s in specs)
    assert any(
        len(s.targets) >= 2 and len({(t.weight, t.performance.b) for t in s.targets}) >= 2
        for s in specs
    )
    assert any(s.mode == "DryRun" and s.budget.max_tokens for s in specs)


def test_defaults_fill_in() -> None:
    spec = api.parse_spec(_base())
    assert spec.mode == "Active"
    assert spec.planning.interval_seconds == 30
    assert spec.planning.target_utilization == 0.8
    assert spec.targets[0].min_replicas == 1
    assert spec.targets[0].scale_target_ref.kind == "Deployment"


def test_round_trip_is_camel_case() -> None:
    wire = api.dump(api.parse_spec(_base()))
    assert "maxCost" in wire["budget"] and "max_cost" not in wire["budget"]
    assert api.parse_spec(wire) == api.parse_spec(_base())


def test_status_parse_is_lenient() -> None:
    status = api.parse_status({"phase": "Active", "spend": {"cost": "oops"}, "junk": 1})
    assert status.phase == "Active"
    assert status.spend is None


def _base() -> dict[str, Any]:
    return {
        "budget": {"period": "Day", "maxCost": 100},
        "targets": [
            {
                "name": "llama",
                "scaleTargetRef": {"kind": "Deployment", "name": "llama"},
                "minReplicas": 1,
                "maxReplicas": 4,
                "tokensPerReplicaPerSecond": 3000,
                "costPerReplicaHour": 3.9,
            }
        ],
    }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(spec: dict[str, Any]) -> None:
        node: Any = spec
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        last = parts[-1]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


_DELETE = object()


def _dup_target(spec: dict[str, Any]) -> None:
    spec["targets"].append(copy.deepcopy(spec["targets"][0]))


def _same_workload(spec: dict[str, Any]) -> None:
    other = copy.deepcopy(spec["targets"][0])
    other["name"] = "other"
    spec["targets"].append(other)


# (id, mutation, field the message must name, rejected by the CRD schema too)
INVALID: list[tuple[str, Callable[[dict[str, Any]], None], str, bool]] = [
    ("negative-cost", _set("budget.maxCost", -5), "budget.maxCost", True),
    ("zero-cost", _set("budget.maxCost", 0), "budget.maxCost", True),
    ("no-limit", _set("budget.maxCost", _DELETE), "budget", True),
    ("unknown-period", _set("budget.period", "Fortnight"), "budget.period", True),
    ("bad-time-zone", _set("budget.timeZone", "Mars/Olympus"), "budget.timeZone", False),
    ("bad-currency", _set("budget.currency", "dollars"), "budget.currency", True),
    ("unknown-on-exhausted", _set("budget.onExhausted", "Panic"), "budget.onExhausted", True),
    ("unknown-mode", _set("mode", "Yolo"), "mode", True),
    ("empty-targets", _set("targets", []), "targets", True),
    ("min-above-max", _set("targets.0.minReplicas", 9), "targets[0]", True),
    ("negative-min", _set("targets.0.minReplicas", -1), "targets[0].minReplicas", True),
    ("zero-capacity", _set("targets.0.tokensPerReplicaPerSecond", 0),
     "targets[0].tokensPerReplicaPerSecond", True),
    ("negative-replica-cost", _set("targets.0.costPerReplicaHour", -1),
     "targets[0].costPerReplicaHour", True),
    ("duplicate-names", _dup_target, "targets", True),
    ("same-workload-twice", _same_workload, "targets", True),
    ("bad-target-name", _set("targets.0.name", "Llama_8B"), "targets[0].name", True),
    ("bad-kind", _set("targets.0.scaleTargetRef.kind", "Pod"),
     "targets[0].scaleTargetRef.kind", True),
    ("utilization-above-one", _set("planning.targetUtilization", 1.5),
     "planning.targetUtilization", True),
    ("interval-too-short", _set("planning.intervalSeconds", 1), "planning.intervalSeconds", True),
    ("cost-as-string", _set("budget.maxCost", "lots"), "budget.maxCost", True),
    ("nan-cost", _set("budget.maxCost", float("nan")), "budget.maxCost", False),
    ("inf-capacity", _set("targets.0.tokensPerReplicaPerSecond", float("inf")),
     "targets[0].tokensPerReplicaPerSecond", True),
    ("price-window-backwards", _set("pricing.schedule", [
        {"start": "18:00", "end": "06:00", "multiplier": 0.5}]), "pricing.schedule[0]", True),
    ("bad-clock-time", _set("pricing.schedule", [
        {"start": "25:00", "end": "26:00", "multiplier": 0.5}]), "pricing.schedule[0].start", True),
    ("zero-multiplier", _set("pricing.schedule", [{"multiplier": 0}]),
     "pricing.schedule[0].multiplier", True),
    ("unknown-field", _set("budget.maxDollars", 5), "budget.maxDollars", False),
    ("too-many-targets", lambda s: s.__setitem__("targets", [
        {**copy.deepcopy(s["targets"][0]), "name": f"t{i}",
         "scaleTargetRef": {"name": f"t{i}"}} for i in range(api.MAX_TARGETS + 1)]),
     "targets", True),
    ("prometheus-url-not-http", _set("prometheus.url", "file:///etc/passwd"), "prometheus.url",
     True),
]


@pytest.mark.parametrize(("mutate", "field", "schema_too"),
                         [pytest.param(m, f, s, id=i) for i, m, f, s in INVALID])
def test_invalid_spec_rejected_naming_the_field(
    mutate: Callable[[dict[str, Any]], None], field: str, schema_too: bool
) -> None:
    spec = _base()
    mutate(spec)
    with pytest.raises(api.SpecError) as err:
        api.parse_spec(spec)
    assert any(p.startswith(f"spec.{field}") for p in err.value.problems), err.value.problems
    if schema_too:
        obj = {"apiVersion": "tokenscale.dev/v1alpha1", "kind": "TokenBudget",
               "metadata": {"name": "x"}, "spec": spec}
        problems = schema_errors(SCHEMA, obj)
        assert any(p.startswith(f"spec.{field}") for p in problems), problems


def test_invalid_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 15


def test_base_is_valid_for_both() -> None:
    obj = {"apiVersion": "tokenscale.dev/v1alpha1", "kind": "TokenBudget",
           "metadata": {"name": "x"}, "spec": _base()}
    assert schema_errors(SCHEMA, obj) == []
    api.parse_spec(_base())


def test_tokens_per_replica_per_second_is_optional_for_both() -> None:
    """Planner v2 fits the capacity within the SLO from the latency histograms: a target
    may leave it out (the schema and the models agree); a bad value is still refused."""
    spec = _base()
    for target in spec["targets"]:
        target.pop("tokensPerReplicaPerSecond", None)
    obj = {"apiVersion": "tokenscale.dev/v1alpha1", "kind": "TokenBudget",
           "metadata": {"name": "x"}, "spec": spec}
    assert schema_errors(SCHEMA, obj) == []
    parsed = api.parse_spec(spec)
    assert all(t.tokens_per_replica_per_second is None and t.capacity == 0.0
               for t in parsed.targets)
    spec["targets"][0]["tokensPerReplicaPerSecond"] = 0
    assert schema_errors(SCHEMA, obj)
    with pytest.raises(api.SpecError, match="tokensPerReplicaPerSecond"):
        api.parse_spec(spec)
