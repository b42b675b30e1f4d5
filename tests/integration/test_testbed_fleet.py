"""The simulated vLLM fleet: pods follow spec.replicas with cold starts; Prometheus sees it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tokenscale_testbed.apiserver import ApiServer, ApiServerThread
from tokenscale_testbed.fleet import (
    Fleet,
    FleetThread,
    ModelConfig,
    ModelState,
    Pod,
    constant,
    render_metrics,
    step,
)
from tokenscale_testbed.prometheus import PrometheusMissingError, PrometheusServer
from tokenscale_testbed.waiting import async_wait_for, wait_for

pytestmark = pytest.mark.integration
SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
POD_NAME = re.compile(rf"^llama-8b-{SAFE}{{10}}-{SAFE}{{5}}$")
DEPLOY = "/apis/apps/v1/namespaces/inference/deployments"


def deployment(replicas: int) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "llama-8b", "namespace": "inference"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "llama-8b"}},
                     "template": {"metadata": {"labels": {"app": "llama-8b"}}, "spec": {}}}}


def model(rate: float, cold_start: float = 0.0) -> ModelConfig:
    return ModelConfig(namespace="inference", name="llama-8b", tokens_per_replica_per_second=3000,
                       cold_start_seconds=cold_start, demand=constant(rate))


def test_fifo_queue_serves_at_most_capacity_and_drains_the_backlog() -> None:
    state = ModelState(model(5000))
    state.desired = 1
    state.pods = [Pod("llama-8b-a-b", 0.0, 0.0)]
    step(state, t=1.0, dt_real=1.0)
    assert state.served_rate == 3000 and state.backlog == 2000
    assert state.pods[0].waiting == 2.0  # 2000 tokens / 1000 tokens per request
    state.config.demand = constant(1000)
    step(state, t=2.0, dt_real=1.0)
    assert state.served_rate == 3000 and state.backlog == 0
    pod = state.pods[0]
    assert pod.prompt_tokens + pod.generation_tokens == pytest.approx(6000)
    assert pod.requests == pytest.approx(6.0)


def test_metrics_exposition_in_both_spellings() -> None:
    state = ModelState(model(1000))
    state.pods = [Pod("llama-8b-x-y", 0.0, 0.0, ready=True, generation_tokens=12.5)]
    colon = render_metrics([state])
    assert "# TYPE vllm:generation_tokens_total counter" in colon
    assert ('vllm:generation_tokens_total{namespace="inference",pod="llama-8b-x-y",'
            'model_name="llama-8b"} 12.500000') in colon
    assert "# TYPE vllm:num_requests_waiting gauge" in colon
    underscore = render_metrics([state], underscore_names=True)
    assert "vllm_prompt_tokens_total{" in underscore and "vllm:" not in underscore


async def test_pods_follow_replicas_with_cold_start() -> None:
    cold_start, speedup = 30.0, 30.0  # one real second
    async with ApiServer(namespaces=["inference"]) as api, \
            aiohttp.ClientSession(api.url) as http:
        await http.post(DEPLOY, json=deployment(2))
        async with Fleet(api.url, [model(1000, cold_start)], speedup=speedup,
                         tick_seconds=0.05) as fleet:

            def pods() -> list[dict[str, object]]:
                return api.list_objects("v1", "pods", "inference")

            def status() -> dict[str, int]:
                obj = api.get_object("apps/v1", "deployments", "inference", "llama-8b") or {}
                return obj.get("status") or {}

            await async_wait_for(lambda: status().get("readyReplicas") == 2, 10, message="2 ready")
            names = [p["metadata"]["name"] for p in pods()]  # type: ignore[index]
            assert len(names) == 2 and all(POD_NAME.match(n) for n in names)

            scaled_at = fleet.clock.now()
            async with http.patch(f"{DEPLOY}/llama-8b/scale", json={"spec": {"replicas": 4}},
                                  headers={"Content-Type": "application/merge-patch+json"}):
                pass
            await async_wait_for(lambda: status().get("replicas") == 4, 5, message="4 pods")
            await async_wait_for(lambda: status().get("readyReplicas") == 4, 10,
                                 message="4 ready")
            assert fleet.clock.now() - scaled_at >= cold_start
            assert len(pods()) == 4

            async with http.patch(f"{DEPLOY}/llama-8b/scale", json={"spec": {"replicas": 1}},
                                  headers={"Content-Type": "application/merge-patch+json"}):
                pass
            await async_wait_for(lambda: status().get("readyReplicas") == 1, 5, message="1 ready")
            assert len(pods()) == 1 and len(fleet.state("inference", "llama-8b").pods) == 1


def test_prometheus_follows_the_fleet_served_rate() -> None:
    rate = 2000.0
    with ApiServerThread(namespaces=["inference"]) as api, \
            FleetThread(api.url, [model(rate)], tick_seconds=0.05) as fleet, \
            PrometheusServer(scrape_interval=0.5) as prom:
        api.call(lambda s: s.create_object("apps/v1", "deployments", deployment(2)))
        prom.add_targets([fleet.metrics_target])  # added while running (file_sd)
        query = "sum by (namespace, pod) (rate(vllm:generation_tokens_total[15s]))"

        def converged() -> list[dict[str, Any]]:
            result = prom.query(query)
            total = sum(float(r["value"][1]) for r in result)
            expected = fleet.state("inference", "llama-8b").served_rate * 0.5  # promptFraction
            close = len(result) == 2 and abs(total - expected) < 0.05 * expected
            return result if close else []

        result = wait_for(converged, timeout=30, interval=0.5, message="rate to converge")
        assert {r["metric"]["namespace"] for r in result} == {"inference"}
        per_pod = sorted(float(r["value"][1]) for r in result)
        assert per_pod[0] == pytest.approx(per_pod[1], rel=0.1)
        assert fleet.state("inference", "llama-8b").served_rate == pytest.approx(rate)


def test_missing_prometheus_binary_is_a_clear_error(
        prometheus_factory: Callable[..., PrometheusServer]) -> None:
    with pytest.raises(PrometheusMissingError, match="not found at /nonexistent/prometheus"):
        prometheus_factory(binary="/nonexistent/prometheus")
