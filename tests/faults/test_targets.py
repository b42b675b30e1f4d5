"""Targets the operator must not scale: another autoscaler on it (HPA, KEDA ScaledObject),
a missing Deployment, a Deployment in another namespace, a kind without a scale
subresource. Each gets a clear condition and no scale request at all. The same run checks
that the rendered ClusterRole grants every request the operator made."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from faultkit import (
    Channel,
    FaultyPrometheus,
    OperatorProcess,
    budget,
    condition,
    create,
    deployment,
    granted,
    operators,
    replica_history,
    required_permissions,
    scale_patches,
    status_of,
    target,
    wait_cycles,
)

from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.kubectl import Kubectl
from tokenscale_testbed.resources import keda_scaledobject_crd
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.faults
NS = "inference"
ROOT = Path(__file__).resolve().parents[2]


def _hpa(name: str, deploy: str) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": deploy},
                     "minReplicas": 1, "maxReplicas": 10}}


def _scaled_object(name: str, deploy: str) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"scaleTargetRef": {"name": deploy},
                     "triggers": [{"type": "prometheus", "metadata": {"query": "x"}}]}}


def _cluster_role_rules() -> list[dict[str, Any]]:
    kubectl = Kubectl(ROOT / "no-kubeconfig").binary
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "manifests" / "base")],
                         check=True, capture_output=True, text=True).stdout
    role = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "ClusterRole")
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def test_unscalable_targets_get_a_condition_and_are_never_scaled(
    apiserver: ApiServerThread, kubectl: Kubectl, kubeconfig: Path,
    faulty_prometheus: FaultyPrometheus,
) -> None:
    prom = faulty_prometheus
    create(apiserver, "apiextensions.k8s.io/v1", "customresourcedefinitions",
           keda_scaledobject_crd())
    # Demand 1,000 tok/s needs 1 replica: every target below would be scaled 3 -> 1.
    cases = {"with-hpa": "llama", "with-keda": "mistral", "missing": "ghost",
             "cross-ns": "victim", "control": "control"}
    for name, deploy in cases.items():
        prom.add(name, Channel(NS, deploy, rate=1000.0))
        if deploy not in ("ghost", "victim"):
            create(apiserver, "apps/v1", "deployments", deployment(NS, deploy, 3))
    create(apiserver, "apps/v1", "deployments", deployment("default", "victim", 3))
    create(apiserver, "autoscaling/v2", "horizontalpodautoscalers", _hpa("llama", "llama"))
    create(apiserver, "keda.sh/v1alpha1", "scaledobjects", _scaled_object("mistral", "mistral"))
    for name, deploy in cases.items():
        body = budget(NS, name, [target(deploy)], prometheus_url=prom.url(name))
        if name == "cross-ns":  # not part of the API: pruned by the structural schema
            body["spec"]["targets"][0]["scaleTargetRef"]["namespace"] = "default"
        kubectl.apply_text(yaml.safe_dump(body))
    cross = apiserver.call(lambda s: s.get_object("tokenscale.dev/v1alpha1", "tokenbudgets",
                                                  NS, "cross-ns"))
    assert "namespace" not in cross["spec"]["targets"][0]["scaleTargetRef"]

    # A kind without a scale subresource is refused before it is stored.
    bad = budget(NS, "cronjob", [target("batch")])
    bad["spec"]["targets"][0]["scaleTargetRef"].update(apiVersion="batch/v1", kind="CronJob")
    refused = kubectl.run("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(bad),
                          check=False)
    assert refused.returncode != 0
    assert "scaleTargetRef.kind" in refused.stderr and "CronJob" in refused.stderr
    assert "scaleTargetRef.apiVersion" in refused.stderr

    apiserver.call(lambda s: s.recent.clear())
    with operators(OperatorProcess(kubeconfig, prom.url("control"))) as (op,):
        wait_for(lambda: replica_history(apiserver, NS, "control")[-1] == 1, timeout=20,
                 message="the control budget to scale")
        wait_cycles(apiserver, NS, "control", cycles=1)  # all share the cycle
        expected = {
            "with-hpa": ("ConflictingAutoscaler", "HorizontalPodAutoscaler llama"),
            "with-keda": ("ConflictingAutoscaler", "ScaledObject mistral"),
            "missing": ("TargetNotScalable", "Deployment ghost not found in inference"),
            "cross-ns": ("TargetNotScalable", "Deployment victim not found in inference"),
        }
        for name, (reason, text) in expected.items():
            st = status_of(apiserver, NS, name)
            c = condition(st, "Conflict")
            assert (c["status"], c["reason"]) == ("True", reason), (name, c)
            assert text in c["message"], (name, c)
            assert condition(st, "Ready")["status"] == "False"
            assert condition(st, "SpecValid")["status"] == "True"
            assert st["phase"] == "Degraded"
            assert st["targets"][0]["reason"] == "Conflict"
        for ns, deploy in ((NS, "llama"), (NS, "mistral"), ("default", "victim")):
            assert scale_patches(apiserver, ns, deploy) == 0, deploy
            assert replica_history(apiserver, ns, deploy) == [3], deploy
        assert condition(status_of(apiserver, NS, "control"), "Conflict")["status"] == "False"
        assert op.alive

        # Least privilege matches reality: every request the operator made is granted.
        rules = _cluster_role_rules()
        needed = required_permissions(apiserver.call(lambda s: list(s.recent)))
        missing = sorted(p for p in needed if not granted(rules, *p))
        assert not missing, f"the ClusterRole lacks what the operator uses: {missing}"
