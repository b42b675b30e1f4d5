"""Malformed and hostile TokenBudgets: each refused with a clear message, by the CRD schema
(422/400 from the API server) or by the operator (SpecValid=False, phase Invalid), while
the operator keeps serving the other budgets.

Two layers are checked separately: the real CRD against every case (no operator needed),
then a permissive CRD (``x-kubernetes-preserve-unknown-fields`` on spec, as an old or
tampered CRD would be) so that every case reaches the operator, which must refuse each one
on its own.
"""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faultkit import (
    Channel,
    FaultyPrometheus,
    OperatorProcess,
    budget,
    condition,
    create,
    deployment,
    operators,
    replica_history,
    scale_patches,
    status_of,
    target,
    wait_cycles,
)

from tokenscale.crd import crd
from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.faults
NS = "inference"
Spec = dict[str, Any]


def _t(spec: Spec) -> Spec:
    first: Spec = spec["targets"][0]
    return first


def _set(path: str, value: Any) -> Callable[[Spec], None]:
    """A mutation setting a dotted path (``t.`` = the first target)."""
    def mutate(spec: Spec) -> None:
        node = spec
        parts = path.split(".")
        if parts[0] == "t":
            node, parts = _t(spec), parts[1:]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return mutate


def _many_targets(spec: Spec) -> None:
    spec["targets"] = [dict(_t(spec), name=f"t{i}", scaleTargetRef={"name": f"d{i}"})
                       for i in range(10_000)]


def _duplicate(spec: Spec) -> None:
    spec["targets"] = [_t(spec), dict(_t(spec))]


NAN, INF = float("nan"), float("inf")
#: name -> (mutation, the field the refusal must name, how the real CRD treats it:
#: "schema" = refused by the API server, "operator" = stored, refused by the operator,
#: "json" = not JSON at all: refused by any API server before the schema, never stored).
CORPUS: dict[str, tuple[Callable[[Spec], None], str, str]] = {
    "huge-max-cost": (_set("budget.maxCost", 1e308), "maxCost", "schema"),
    "huge-replicas": (_set("t.maxReplicas", 10**12), "maxReplicas", "schema"),
    "int64-overflow": (_set("planning.intervalSeconds", 10**20), "intervalSeconds", "schema"),
    "negative-price": (_set("t.costPerReplicaHour", -1), "costPerReplicaHour", "schema"),
    "nan-string": (_set("budget.maxCost", "NaN"), "maxCost", "schema"),
    "inf-string": (_set("t.tokensPerReplicaPerSecond", "+Inf"), "tokensPerReplicaPerSecond",
                   "schema"),
    "nan-literal": (_set("budget.maxCost", NAN), "NaN is not JSON", "json"),
    "inf-literal": (_set("t.costPerReplicaHour", INF), "Infinity is not JSON", "json"),
    "promql-in-target-name": (_set("t.name", 'llama"} or vector(1e9) #'), "name", "schema"),
    "promql-in-workload-name": (_set("t.scaleTargetRef.name", 'llama.*"}[5m]) or vector(1'),
                                "scaleTargetRef.name", "schema"),
    "override-too-long": (_set("t.metrics.tokenRateQuery", "vector(1)" + " " * 5000),
                          "tokenRateQuery", "schema"),
    "ten-thousand-targets": (_many_targets, "targets", "schema"),
    "no-targets": (_set("targets", []), "targets", "schema"),
    "unicode-target-name": (_set("t.name", "llama-ü-8b"), "name", "schema"),
    "unicode-currency": (_set("budget.currency", "€UR"), "currency", "schema"),
    "rtl-override-url": (_set("prometheus.url", "http://prom\u202e.evil/"), "url", "schema"),
    "file-url": (_set("prometheus.url", "file:///etc/passwd"), "url", "schema"),
    "unknown-time-zone": (_set("budget.timeZone", "Mars/Olympus_Mons"), "timeZone",
                          "operator"),
    "targets-not-a-list": (_set("targets", "llama"), "targets", "schema"),
    "replicas-as-string": (_set("t.minReplicas", "1"), "minReplicas", "schema"),
    "mode-as-bool": (_set("mode", True), "mode", "schema"),
    "budget-as-list": (_set("budget", []), "budget", "schema"),
    "min-above-max": (_set("t.minReplicas", 9), "minReplicas", "schema"),
    "duplicate-targets": (_duplicate, "targets", "schema"),
    "foreign-kind": (_set("t.scaleTargetRef.kind", "Pod"), "kind", "schema"),
}

STORABLE = [name for name, (_, _, layer) in CORPUS.items() if layer != "json"]


def _body(name: str) -> dict[str, Any]:
    good = budget(NS, name, [target("llama", deploy=f"{name}-llama", maxReplicas=8)])
    mutate, _, _ = CORPUS[name]
    mutate(good["spec"])
    return good


def _post(url: str, body: dict[str, Any]) -> tuple[int, str]:
    """POST as a client would; NaN/Infinity go out as the bare JSON tokens."""
    req = urllib.request.Request(
        f"{url}/apis/tokenscale.dev/v1alpha1/namespaces/{NS}/tokenbudgets",
        data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as rsp:
            return rsp.status, rsp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_crd_schema_refuses_the_hostile_corpus(apiserver: ApiServerThread) -> None:
    for name, (_, field, layer) in CORPUS.items():
        code, text = _post(apiserver.url, _body(name))
        if layer in ("schema", "json"):
            assert code == (400 if layer == "json" else 422), (name, code, text[:300])
            message = json.loads(text)["message"]
            assert field in message, (name, message[:300])
        else:
            assert code == 201, (name, code, text[:300])


def _permissive_crd() -> dict[str, Any]:
    out = copy.deepcopy(crd())
    for version in out["spec"]["versions"]:
        props = version["schema"]["openAPIV3Schema"]["properties"]
        props["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return out


def test_the_operator_refuses_each_spec_and_serves_the_rest(
    tmp_path: Path, faulty_prometheus: FaultyPrometheus
) -> None:
    from tokenscale_testbed.apiserver import write_kubeconfig

    prom = faulty_prometheus
    with ApiServerThread(crds=[_permissive_crd()], namespaces=["default", NS]) as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        for name in STORABLE:
            create(api, "apps/v1", "deployments", deployment(NS, f"{name}-llama", 3))
            code, text = _post(api.url, _body(name))
            assert code == 201, (name, code, text[:300])
        # A good budget (demand needs 1: 3 -> 1) and one whose override reads another
        # namespace's series: those are ignored, it holds (Empty), it never scales.
        url = prom.add("good", Channel(NS, "good", rate=1000.0))
        snoop = prom.add("snoop", Channel("default", "snoop", rate=1000.0))
        for name, prom_url in (("good", url), ("snoop", snoop)):
            create(api, "apps/v1", "deployments", deployment(NS, name, 3))
            t = target(name)
            if name == "snoop":
                t["metrics"] = {"tokenRateQuery": 'sum by (namespace, pod) (rate('
                                'vllm:generation_tokens_total{namespace="default"}[1m]))'}
            create(api, "tokenscale.dev/v1alpha1", "tokenbudgets",
                   budget(NS, name, [t], prometheus_url=prom_url))

        with operators(OperatorProcess(kubeconfig, url)) as (op,):
            wait_for(lambda: replica_history(api, NS, "good")[-1] == 1, timeout=20,
                     message="the good budget served")
            for name in STORABLE:
                field = CORPUS[name][1]
                st = wait_for(lambda n=name: (s := status_of(api, NS, n)).get("phase")  # type: ignore[misc]
                              and s, timeout=20, message=f"a status for {name}")
                c = condition(st, "SpecValid")
                assert (st["phase"], c["status"], c["reason"]) == (
                    "Invalid", "False", "InvalidSpec"), (name, st)
                assert field in c["message"], (name, c["message"][:300])
                assert len(c["message"]) <= 32768
                assert scale_patches(api, NS, f"{name}-llama") == 0, name
            wait_cycles(api, NS, "good", cycles=1)  # still served after all of them
            snooped = status_of(api, NS, "snoop")
            assert "snoop: Empty" in condition(snooped, "MetricsAvailable")["message"]
            assert replica_history(api, NS, "snoop") == [3]
            assert op.alive and op.healthy()
