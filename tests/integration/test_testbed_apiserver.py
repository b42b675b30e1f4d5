"""The API emulator behaves like a Kubernetes API server where kopf and kubectl need it to."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

import objects
from tokenscale.crd import crd
from tokenscale_testbed.apiserver import ApiServer
from tokenscale_testbed.kubectl import Kubectl

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "manifests" / "samples" / "chat-cost-budget.yaml"
DEPLOY = "/apis/apps/v1/namespaces/inference/deployments"
TB = "/apis/tokenscale.dev/v1alpha1/namespaces/inference/tokenbudgets"
WORKLOADS = """
apiVersion: v1
kind: Namespace
metadata: {name: inference}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: llama-8b, namespace: inference, labels: {app: llama-8b}}
spec:
  replicas: 2
  selector: {matchLabels: {app: llama-8b}}
  template:
    metadata: {labels: {app: llama-8b}}
    spec:
      containers: [{name: vllm, image: vllm/vllm-openai:v0.6.0}]
"""


def deployment(name: str = "llama-8b", replicas: int = 2) -> dict[str, Any]:
    return objects.deployment(None, name, replicas, image="x")


def budget() -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    return body


@pytest.fixture
async def api() -> AsyncIterator[tuple[ApiServer, aiohttp.ClientSession]]:
    async with ApiServer(crds=[crd()], namespaces=["default", "inference"]) as srv, \
            aiohttp.ClientSession(srv.url) as http:
        yield srv, http


async def call(http: aiohttp.ClientSession, method: str, path: str, body: Any = None,
               content_type: str = "application/json") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body)
    async with http.request(method, path, data=data,
                            headers={"Content-Type": content_type}) as rsp:
        return rsp.status, await rsp.json()


# ---------------------------------------------------------------------- kubectl


def test_kubectl_apply_get_scale_describe(kubectl: Kubectl, emulator: ApiServer) -> None:
    out = kubectl.apply_text(WORKLOADS)
    assert "deployment.apps/llama-8b created" in out
    assert "tokenbudget.tokenscale.dev/chat created" in kubectl.apply(SAMPLE)
    first = emulator.get_object("tokenscale.dev/v1alpha1", "tokenbudgets", "inference", "chat")
    kubectl.apply(SAMPLE)  # list defaults (weight) make kubectl send a no-op patch, as for real
    again = emulator.get_object("tokenscale.dev/v1alpha1", "tokenbudgets", "inference", "chat")
    assert first is not None and again is not None
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]

    rows = kubectl.get_table("tb", namespace="inference")
    assert [r["NAME"] for r in rows] == ["chat"]
    assert rows[0]["MODE"] == "Active" and rows[0]["BUDGET"] == ""  # the operator's to fill
    assert {"PHASE", "REPLICAS", "DESIRED", "TOKENS/S", "SPEND", "PROJECTED", "AGE"} <= set(rows[0])
    status = {"status": {"budget": {"binding": "Cost", "limit": 480, "unit": "USD",
                                    "spent": 12.5, "projected": 401.25, "display": "480 USD"}}}
    kubectl.run("patch", "tb", "chat", "--subresource=status", "--type=merge", "-p",
                json.dumps(status), namespace="inference")
    row = kubectl.get_table("tb", namespace="inference")[0]
    assert (row["SPEND"], row["BUDGET"], row["PROJECTED"]) == ("12.5", "480 USD", "401.25")

    deploys = kubectl.get_table("deploy", namespace="inference")
    assert deploys[0]["NAME"] == "llama-8b" and deploys[0]["READY"] == "0/2"

    kubectl.run("scale", "deployment/llama-8b", "--replicas=5", namespace="inference")
    stored = emulator.get_object("apps/v1", "deployments", "inference", "llama-8b")
    assert stored is not None
    assert stored["spec"]["replicas"] == 5
    assert stored["metadata"]["generation"] == 2

    described = kubectl.run("describe", "tb", "chat", namespace="inference").stdout
    assert "Max Cost:" in described and "480" in described

    resources = kubectl.run("api-resources", "--api-group=tokenscale.dev").stdout
    assert "tokenbudgets" in resources and " tb " in resources


def test_kubectl_rejects_invalid_budget_with_the_cel_message(kubectl: Kubectl) -> None:
    invalid = budget()
    invalid["spec"]["targets"][0]["minReplicas"] = 20  # maxReplicas is 16
    result = kubectl.run("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(invalid),
                         check=False)
    assert result.returncode != 0
    assert "minReplicas must not exceed maxReplicas" in result.stderr
    assert kubectl.get_table("tb", namespace="inference") == []


# ---------------------------------------------------------------------- object metadata


async def test_create_fills_metadata_and_generation_follows_spec(
        api: tuple[ApiServer, aiohttp.ClientSession]) -> None:
    _, http = api
    status, created = await call(http, "POST", DEPLOY, deployment())
    assert status == 201
    meta = created["metadata"]
    assert meta["namespace"] == "inference"  # from the URL
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and meta["resourceVersion"].isdigit()

    status, labelled = await call(http, "PATCH", f"{DEPLOY}/llama-8b",
                                  {"metadata": {"labels": {"team": "a"}}},
                                  "application/merge-patch+json")
    assert status == 200 and labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])

    status, scaled = await call(http, "PATCH", f"{DEPLOY}/llama-8b",
                                {"spec": {"replicas": 3}}, "application/merge-patch+json")
    assert scaled["metadata"]["generation"] == 2

    status, same = await call(http, "PATCH", f"{DEPLOY}/llama-8b",
                              {"spec": {"replicas": 3}}, "application/merge-patch+json")
    assert same["metadata"]["resourceVersion"] == scaled["metadata"]["resourceVersion"]

    status, listed = await call(http, "GET", DEPLOY)
    assert listed["kind"] == "DeploymentList" and listed["apiVersion"] == "apps/v1"
    assert listed["metadata"]["resourceVersion"].isdigit()
    assert [i["kind"] for i in listed["items"]] == ["Deployment"]

    status, dup = await call(http, "POST", DEPLOY, deployment())
    assert status == 409 and dup["reason"] == "AlreadyExists"

    status, _ = await call(http, "POST", "/apis/apps/v1/namespaces/nowhere/deployments",
                              deployment())
    assert status == 404


async def test_namespaces_put_and_status_subresource(
        api: tuple[ApiServer, aiohttp.ClientSession]) -> None:
    _, http = api
    status, namespaces = await call(http, "GET", "/api/v1/namespaces")
    assert status == 200 and namespaces["kind"] == "NamespaceList"
    assert {"default", "inference"} <= {n["metadata"]["name"] for n in namespaces["items"]}

    _, created = await call(http, "POST", TB, budget())
    replaced = copy.deepcopy(created)
    replaced["spec"]["budget"]["maxCost"] = 500
    replaced["status"] = {"phase": "Active"}  # ignored on the main resource
    status, put = await call(http, "PUT", f"{TB}/chat", replaced)
    assert status == 200 and put["spec"]["budget"]["maxCost"] == 500
    assert "status" not in put and put["metadata"]["generation"] == 2

    status, with_status = await call(http, "PATCH", f"{TB}/chat/status",
                                     {"status": {"phase": "Active"},
                                      "spec": {"mode": "DryRun"}},
                                     "application/merge-patch+json")
    assert status == 200 and with_status["status"]["phase"] == "Active"
    assert with_status["spec"]["mode"] == "Active" and with_status["metadata"]["generation"] == 2


# ---------------------------------------------------------------------- concurrency, patches


async def test_stale_resource_version_is_a_conflict(
        api: tuple[ApiServer, aiohttp.ClientSession]) -> None:
    _, http = api
    _, created = await call(http, "POST", DEPLOY, deployment())
    stale = created["metadata"]["resourceVersion"]
    fresh = copy.deepcopy(created)
    fresh["spec"]["replicas"] = 4
    status, updated = await call(http, "PUT", f"{DEPLOY}/llama-8b", fresh)
    assert status == 200 and updated["spec"]["replicas"] == 4

    again = copy.deepcopy(created)
    again["spec"]["replicas"] = 7
    status, conflict = await call(http, "PUT", f"{DEPLOY}/llama-8b", again)
    assert status == 409
    assert conflict["kind"] == "Status" and conflict["reason"] == "Conflict"

    status, _ = await call(http, "PATCH", f"{DEPLOY}/llama-8b",
                           {"metadata": {"resourceVersion": stale}, "spec": {"replicas": 1}},
                           "application/merge-patch+json")
    assert status == 409

    status, _ = await call(http, "DELETE", f"{DEPLOY}/llama-8b",
                              {"preconditions": {"resourceVersion": stale}})
    assert status == 409


async def test_failing_json_patch_test_is_422_not_500(
        api: tuple[ApiServer, aiohttp.ClientSession]) -> None:
    _, http = api
    _, created = await call(http, "POST", TB, budget())
    rv = created["metadata"]["resourceVersion"]
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
           {"op": "add", "path": "/metadata/finalizers", "value": ["tokenscale.dev/f"]}]
    status, patched = await call(http, "PATCH", f"{TB}/chat", ops, "application/json-patch+json")
    assert status == 200 and patched["metadata"]["finalizers"] == ["tokenscale.dev/f"]

    status, failed = await call(http, "PATCH", f"{TB}/chat", ops, "application/json-patch+json")
    assert status == 422 and failed["kind"] == "Status"

    status, _ = await call(http, "PATCH", f"{TB}/chat", [{"op": "remove", "path": "/nope"}],
                           "application/json-patch+json")
    assert status == 422

    # finalizers hold a deletion until they are removed
    status, deleting = await call(http, "DELETE", f"{TB}/chat")
    assert status == 200 and deleting["metadata"]["deletionTimestamp"]
    status, _ = await call(http, "PATCH", f"{TB}/chat", {"metadata": {"finalizers": None}},
                           "application/merge-patch+json")
    assert status == 200
    status, _ = await call(http, "GET", f"{TB}/chat")
    assert status == 404


# ---------------------------------------------------------------------- schema


@pytest.mark.parametrize(("path", "value", "needle"), [
    (("targets", 0, "minReplicas"), 20, "minReplicas must not exceed maxReplicas"),
    (("targets", 0, "costPerReplicaHour"), -1.0, "spec.targets[0].costPerReplicaHour"),
    (("mode",), "Sometimes", "spec.mode"),
    (("budget", "currency"), "dollars", "spec.budget.currency"),
])
async def test_tokenbudget_schema_violations_are_422(
        api: tuple[ApiServer, aiohttp.ClientSession], path: tuple[Any, ...], value: Any,
        needle: str) -> None:
    _, http = api
    body = budget()
    node = body["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    status, answer = await call(http, "POST", TB, body)
    assert status == 422, answer
    assert answer["kind"] == "Status" and answer["reason"] == "Invalid"
    assert needle in answer["message"]
    assert answer["details"]["causes"]


async def test_schema_prunes_unknown_fields_and_applies_defaults(
        api: tuple[ApiServer, aiohttp.ClientSession]) -> None:
    _, http = api
    body = budget()
    del body["spec"]["planning"]["intervalSeconds"]
    body["spec"]["unknownField"] = 1
    status, created = await call(http, "POST", TB, body)
    assert status == 201
    assert "unknownField" not in created["spec"]
    assert created["spec"]["planning"]["intervalSeconds"] == 30
    status, _ = await call(http, "PATCH", f"{TB}/chat/status",
                           {"status": {"kopf": {"progress": {}}}}, "application/merge-patch+json")
    assert status == 200


# ---------------------------------------------------------------------- scale subresource


@pytest.mark.parametrize("plural", ["deployments", "statefulsets"])
async def test_scale_subresource_round_trip(
        api: tuple[ApiServer, aiohttp.ClientSession], plural: str) -> None:
    _, http = api
    base = f"/apis/apps/v1/namespaces/inference/{plural}"
    body = deployment()
    body["kind"] = "StatefulSet" if plural == "statefulsets" else "Deployment"
    await call(http, "POST", base, body)
    status, scale = await call(http, "GET", f"{base}/llama-8b/scale")
    assert status == 200
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"]["replicas"] == 2 and scale["status"]["selector"] == "app=llama-8b"

    status, scaled = await call(http, "PATCH", f"{base}/llama-8b/scale",
                                {"spec": {"replicas": 6}}, "application/merge-patch+json")
    assert status == 200 and scaled["spec"]["replicas"] == 6
    _, parent = await call(http, "GET", f"{base}/llama-8b")
    assert parent["spec"]["replicas"] == 6 and parent["metadata"]["generation"] == 2

    stale = {"metadata": {"resourceVersion": scale["metadata"]["resourceVersion"]},
             "spec": {"replicas": 1}}
    status, _ = await call(http, "PATCH", f"{base}/llama-8b/scale", stale,
                           "application/merge-patch+json")
    assert status == 409
    status, _ = await call(http, "PATCH", f"{base}/llama-8b/scale", {"spec": {"replicas": -1}},
                           "application/merge-patch+json")
    assert status == 422


# ---------------------------------------------------------------------- discovery


async def test_discovery_announces_core_groups_and_the_crd(
        api: tuple[ApiServer, aiohttp.ClientSession]) -> None:
    _, http = api
    _, core = await call(http, "GET", "/api")
    assert core["versions"] == ["v1"]
    _, groups = await call(http, "GET", "/apis")
    names = {g["name"] for g in groups["groups"]}
    assert {"apps", "autoscaling", "tokenscale.dev", "events.k8s.io"} <= names
    assert "" not in names
    _, v1 = await call(http, "GET", "/api/v1")
    assert v1["groupVersion"] == "v1"
    _, tb = await call(http, "GET", "/apis/tokenscale.dev/v1alpha1")
    entries = {r["name"]: r for r in tb["resources"]}
    assert entries["tokenbudgets"]["shortNames"] == ["tb"]
    assert "tokenbudgets/status" in entries
    _, apps = await call(http, "GET", "/apis/apps/v1")
    scale = next(r for r in apps["resources"] if r["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")


# ---------------------------------------------------------------------- faults, counters


async def test_injected_faults_answer_then_clear(
        api: tuple[ApiServer, aiohttp.ClientSession]) -> None:
    srv, http = api
    await call(http, "POST", DEPLOY, deployment())
    fault = srv.inject_fault("PATCH", r"/deployments/llama-8b/scale$", 500, times=2)
    throttle = srv.inject_fault("GET", r"/deployments/llama-8b$", 429)
    patch = {"spec": {"replicas": 3}}
    codes = [(await call(http, "PATCH", f"{DEPLOY}/llama-8b/scale", patch,
                         "application/merge-patch+json"))[0] for _ in range(3)]
    assert codes == [500, 500, 200] and fault.hits == 2
    async with http.get(f"{DEPLOY}/llama-8b") as rsp:
        assert rsp.status == 429 and rsp.headers["Retry-After"] == "1"
    assert throttle.hits == 1
    conflict = srv.inject_fault("*", r"/scale$", 409)
    status, body = await call(http, "GET", f"{DEPLOY}/llama-8b/scale")
    assert status == 409 and body["reason"] == "Conflict" and conflict.hits == 1
    assert srv.request_count("PATCH", r"/scale$") == 3
    assert srv.request_count(path=r"/deployments/llama-8b") == 5


async def test_request_history_is_bounded() -> None:
    async with ApiServer(request_log=20) as srv, aiohttp.ClientSession(srv.url) as http:
        for _ in range(100):
            await call(http, "GET", "/api/v1/namespaces/default")
        assert len(srv.recent) == 20
        assert srv.request_count("GET") == 100


# ---------------------------------------------------------------------- watches


async def read_events(http: aiohttp.ClientSession, path: str, count: int,
                      **params: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with http.get(path, params={"watch": "true", **params}) as rsp:
        async for line in rsp.content:
            if line.strip():
                events.append(json.loads(line))
            if len(events) >= count:
                break
    return events


async def test_watch_honours_resource_version_and_timeout(
        api: tuple[ApiServer, aiohttp.ClientSession]) -> None:
    _, http = api
    _, created = await call(http, "POST", DEPLOY, deployment())
    _, listed = await call(http, "GET", DEPLOY)
    since = listed["metadata"]["resourceVersion"]

    watching = asyncio.create_task(read_events(http, DEPLOY, 1, resourceVersion=since))
    await call(http, "PATCH", f"{DEPLOY}/llama-8b", {"spec": {"replicas": 9}},
               "application/merge-patch+json")
    (event,) = await asyncio.wait_for(watching, 5)
    assert event["type"] == "MODIFIED" and event["object"]["spec"]["replicas"] == 9

    replay = await asyncio.wait_for(read_events(
        http, DEPLOY, 2, resourceVersion=str(int(created["metadata"]["resourceVersion"]) - 1)), 5)
    assert [e["type"] for e in replay] == ["ADDED", "MODIFIED"]

    everything = await asyncio.wait_for(read_events(http, DEPLOY, 100, timeoutSeconds="1"), 5)
    assert [e["type"] for e in everything] == ["ADDED"]  # stream ended by the server


async def test_watch_from_a_forgotten_version_is_410() -> None:
    async with ApiServer(namespaces=["inference"], watch_history=3) as srv, \
            aiohttp.ClientSession(srv.url) as http:
        _, created = await call(http, "POST", DEPLOY, deployment())
        for replicas in range(5):
            await call(http, "PATCH", f"{DEPLOY}/llama-8b", {"spec": {"replicas": replicas}},
                       "application/merge-patch+json")
        (event,) = await asyncio.wait_for(read_events(
            http, DEPLOY, 1, resourceVersion=created["metadata"]["resourceVersion"]), 5)
        assert event["type"] == "ERROR" and event["object"]["code"] == 410


def test_kubectl_retries_a_conflicting_scale(kubectl: Kubectl, emulator: ApiServer) -> None:
    kubectl.apply_text(WORKLOADS)
    conflict = emulator.inject_fault("PATCH", r"/scale$", 409)
    kubectl.run("scale", "deployment/llama-8b", "--replicas=3", namespace="inference")
    assert conflict.hits == 1
    stored = emulator.get_object("apps/v1", "deployments", "inference", "llama-8b")
    assert stored is not None and stored["spec"]["replicas"] == 3
    with pytest.raises(subprocess.CalledProcessError):
        kubectl.run("get", "tb", "missing", namespace="inference")
