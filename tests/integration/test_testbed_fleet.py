"""The simulated vLLM fleet: pods follow spec.replicas with cold starts; Prometheus sees it;
latency histograms follow the engine model (utilisation, backlog)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import pytest

from tokenscale.sim.latency import EngineModel
from tokenscale_testbed.apiserver import ApiServer, ApiServerThread
from tokenscale_testbed.fleet import (
    DEFAULT_ENGINE,
    Fleet,
    FleetThread,
    ModelConfig,
    ModelState,
    Pod,
    constant,
    render_metrics,
    step,
    steps,
)
from tokenscale_testbed.prometheus import PrometheusMissingError, PrometheusServer
from tokenscale_testbed.waiting import async_wait_for, wait_for

pytestmark = pytest.mark.integration
SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
POD_NAME = re.compile(rf"^llama-8b-{SAFE}{{10}}-{SAFE}{{5}}$")
DEPLOY = "/apis/apps/v1/namespaces/inference/deployments"
HISTOGRAMS = ("time_to_first_token_seconds", "time_per_output_token_seconds",
              "inter_token_latency_seconds", "e2e_request_latency_seconds")
SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>.*)\} (?P<value>\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
PROMPT_S = 500 / DEFAULT_ENGINE.prefill_tokens_per_s  # 1000 tokens/request, half of them prompt

Series = dict[tuple[str, str], float]  # (metric name, pod) -> value, buckets as name{le}


def deployment(replicas: int, name: str = "llama-8b") -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "inference"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {}}}}


def model(rate: float, cold_start: float = 0.0, name: str = "llama-8b",
          engine: EngineModel | None = None) -> ModelConfig:
    return ModelConfig(namespace="inference", name=name, tokens_per_replica_per_second=3000,
                       cold_start_seconds=cold_start, demand=constant(rate), engine=engine)


def parse(text: str) -> tuple[Series, dict[tuple[str, str], list[str]]]:
    """Samples by (name, pod) (bucket names carry ``{le}``), and each histogram's ``le``
    labels in exposition order."""
    series: Series = {}
    les: dict[tuple[str, str], list[str]] = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m is None:
            continue
        labels = dict(LABEL.findall(m["labels"]))
        name = m["name"]
        if "le" in labels:
            les.setdefault((name, labels["pod"]), []).append(labels["le"])
            name = f"{name}{{{labels['le']}}}"
        series[(name, labels["pod"])] = float(m["value"])
    return series, les


async def scrape(http: aiohttp.ClientSession, fleet: Fleet) -> Series:
    async with http.get(f"http://{fleet.metrics_target}/metrics") as rsp:
        return parse(await rsp.text())[0]


def per_model(series: Series, metric: str, pods: list[str]) -> float:
    return sum(series.get((metric, pod), 0.0) for pod in pods)


def pods_of(fleet: Fleet, name: str) -> list[str]:
    return [p.name for p in fleet.state("inference", name).ready]


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


def test_a_gateway_sheds_above_the_admission_rate_and_requests_are_counted_against_the_slo(
) -> None:
    """Demand 5,000 tok/s on one 3,000 tok/s pod: unlimited, a backlog builds and every
    request waits past the TTFT bound; admitting 2,400 tok/s sheds the rest, serves the
    admitted ones within the SLO and counts the shed ones as misses."""
    flooded, gated = ModelState(model(5000)), ModelState(model(5000))
    gated.admission = 2400.0
    for state in (flooded, gated):
        state.desired = 1
        state.pods = [Pod("llama-8b-a-b", 0.0, 0.0)]
        for second in range(1, 11):
            step(state, t=float(second), dt_real=1.0)
    assert flooded.shed_total == 0 and flooded.backlog == pytest.approx(20000)
    assert gated.shed_total == pytest.approx(26000) and gated.backlog == 0
    assert gated.served_total == pytest.approx(24000)
    # 1,000 tokens per request: 24 admitted within the SLO, 26 shed
    assert gated.requests_total == pytest.approx(50)
    assert gated.requests_within_slo == pytest.approx(24)
    assert flooded.requests_within_slo < gated.requests_within_slo


def test_metrics_exposition_in_both_spellings() -> None:
    state = ModelState(model(1000))
    state.pods = [Pod("llama-8b-x-y", 0.0, 0.0, ready=True, generation_tokens=12.5)]
    colon = render_metrics([state])
    assert "# TYPE vllm:generation_tokens_total counter" in colon
    assert ('vllm:generation_tokens_total{namespace="inference",pod="llama-8b-x-y",'
            'model_name="llama-8b"} 12.500000') in colon
    assert "# TYPE vllm:num_requests_waiting gauge" in colon
    assert "# TYPE vllm:inter_token_latency_seconds histogram" in colon
    assert "# TYPE vllm:kv_cache_usage_perc gauge" in colon
    underscore = render_metrics([state], underscore_names=True)
    assert "vllm_prompt_tokens_total{" in underscore and "vllm:" not in underscore
    for name in (*[f"{h}_bucket" for h in HISTOGRAMS], "gpu_cache_usage_perc",
                 "kv_cache_usage_perc"):
        assert f"vllm_{name}{{" in underscore


def test_the_engine_model_shapes_latency_not_throughput() -> None:
    slow = EngineModel(itl_floor_s=0.05)
    states = [ModelState(model(1500, name=n, engine=e)) for n, e in (("a", None), ("b", slow))]
    for state in states:
        state.pods = [Pod(f"{state.config.name}-x", 0.0, 0.0)]
        step(state, t=1.0, dt_real=1.0)
    assert [s.served_rate for s in states] == [1500, 1500] and states[1].backlog == 0
    default_pod, slow_pod = (s.pods[0] for s in states)
    # u = 1500 / 3000: ITL = floor / (1 - u); 1.5 requests; TTFT = prefill + ITL (no backlog)
    assert default_pod.itl.total / 1.5 == pytest.approx(0.016)
    assert slow_pod.itl.total / 1.5 == pytest.approx(0.1)
    assert default_pod.ttft.total / 1.5 == pytest.approx(PROMPT_S + 0.016)
    assert default_pod.kv_usage == pytest.approx(
        float(DEFAULT_ENGINE.kv_usage(np.array([0.5]))[0]))


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


async def test_latency_histograms_are_cumulative_and_count_the_served_requests() -> None:
    async with ApiServer(namespaces=["inference"]) as api, \
            aiohttp.ClientSession(api.url) as http:
        await http.post(DEPLOY, json=deployment(2))
        async with Fleet(api.url, [model(2000)], tick_seconds=0.05) as fleet:
            state = fleet.state("inference", "llama-8b")

            async def served(requests: float) -> Series | None:
                series = await scrape(http, fleet)
                pods = pods_of(fleet, "llama-8b")
                count = [series.get(("vllm:e2e_request_latency_seconds_count", p), 0.0)
                         for p in pods]
                ok = len(pods) == 2 and min(count) >= requests and state.backlog == 0
                return series if ok else None

            first = await async_wait_for(lambda: served(1.0), 10, message="a served request")
            pods = pods_of(fleet, "llama-8b")
            before = state.served_total
            async with http.get(f"http://{fleet.metrics_target}/metrics") as rsp:
                series, les = parse(await rsp.text())
            after = state.served_total
            for h in HISTOGRAMS:
                for pod in pods:
                    name = f"vllm:{h}"
                    bounds = les[(f"{name}_bucket", pod)]
                    assert bounds[-1] == "+Inf"
                    assert [float(b) for b in bounds[:-1]] == sorted(float(b) for b in bounds[:-1])
                    counts = [series[(f"{name}_bucket{{{le}}}", pod)] for le in bounds]
                    assert counts == sorted(counts) and counts[0] >= 0
                    assert counts[-1] == series[(f"{name}_count", pod)]
                    assert series[(f"{name}_count", pod)] == pytest.approx(
                        series[("vllm:request_success_total", pod)], abs=1e-5)
                    assert series[(f"{name}_sum", pod)] > 0
            for suffix in ("bucket{0.025}", "sum", "count"):  # V0 and V1 ITL: the same data
                for pod in pods:
                    assert (series[(f"vllm:time_per_output_token_seconds_{suffix}", pod)]
                            == series[(f"vllm:inter_token_latency_seconds_{suffix}", pod)])
            total = per_model(series, "vllm:time_to_first_token_seconds_count", pods)
            assert before / 1000 - 1e-5 <= total <= after / 1000 + 1e-5  # 1000 tokens/request
            for pod in pods:  # u = 2000 / 6000, no backlog
                kv = float(DEFAULT_ENGINE.kv_usage(np.array([1 / 3]))[0])
                assert series[("vllm:kv_cache_usage_perc", pod)] == pytest.approx(kv, abs=1e-6)
                assert series[("vllm:gpu_cache_usage_perc", pod)] == pytest.approx(kv, abs=1e-6)

            grown = min(first[("vllm:e2e_request_latency_seconds_count", p)] for p in pods) + 2
            later = await async_wait_for(lambda: served(grown), 10, message="2 more requests")
            for h in HISTOGRAMS:
                for pod in pods:
                    delta = (later[(f"vllm:{h}_count", pod)]
                             - first[(f"vllm:{h}_count", pod)])
                    assert delta >= 2 - 1e-6
                    assert delta == pytest.approx(
                        later[("vllm:request_success_total", pod)]
                        - first[("vllm:request_success_total", pod)], abs=1e-5)


def test_mean_inter_token_latency_rises_with_utilisation() -> None:
    engine = EngineModel(max_batch=1024)  # a cap above ITL(0.95), so 95 % is not saturated
    capacity = 2 * 3000
    demand = {"half": 0.5 * capacity, "busy": 0.95 * capacity}
    models = [ModelConfig(namespace="inference", name=name, tokens_per_replica_per_second=3000,
                          cold_start_seconds=0, demand=steps([(0, 0), (1, rate)]), engine=engine)
              for name, rate in demand.items()]
    expected = {name: float(engine.itl(np.array([rate / capacity]))[0])
                for name, rate in demand.items()}
    assert expected["busy"] > 5 * expected["half"]
    with ApiServerThread(namespaces=["inference"]) as api, \
            FleetThread(api.url, models, tick_seconds=0.05) as fleet, \
            PrometheusServer(scrape_interval=0.5) as prom:
        for name in demand:
            api.call(lambda s, n=name: s.create_object("apps/v1", "deployments",
                                                       deployment(2, n)))
        prom.add_targets([fleet.metrics_target])
        itl = "inter_token_latency_seconds"
        query = (f"sum by (model_name) (rate(vllm:{itl}_sum[5s]))"
                 f" / sum by (model_name) (rate(vllm:{itl}_count[5s]))")

        def converged() -> dict[str, float]:
            mean = {r["metric"]["model_name"]: float(r["value"][1]) for r in prom.query(query)}
            close = all(abs(mean.get(n, 0.0) - expected[n]) < 0.05 * expected[n] for n in demand)
            return mean if close else {}

        mean = wait_for(converged, timeout=40, interval=0.5, message="mean ITL per model")
        assert mean["busy"] > 5 * mean["half"]
        busy = fleet.state("inference", "busy")
        assert busy.backlog == 0 and busy.served_rate == pytest.approx(demand["busy"])


async def test_time_to_first_token_grows_with_the_backlog() -> None:
    capacity = 3000.0
    async with ApiServer(namespaces=["inference"]) as api, \
            aiohttp.ClientSession(api.url) as http:
        await http.post(DEPLOY, json=deployment(1, "over"))
        await http.post(DEPLOY, json=deployment(1, "under"))
        models = [model(2 * capacity, name="over"), model(0.5 * capacity, name="under")]
        async with Fleet(api.url, models, tick_seconds=0.05) as fleet:
            over = fleet.state("inference", "over")
            ttft = "vllm:time_to_first_token_seconds"

            async def once(condition: Callable[[], bool], what: str) -> Series:
                await async_wait_for(condition, 10, message=what)
                return await scrape(http, fleet)

            def served_both() -> bool:  # and the backlog of the watch's delay drained
                serving = all(p.requests > 0 for n in ("over", "under")
                              for p in fleet.state("inference", n).ready)
                return serving and fleet.state("inference", "under").backlog == 0

            s0 = await once(served_both, "both models serving")
            s1 = await once(lambda: over.backlog >= capacity, "1 s of backlog")
            s2 = await once(lambda: over.backlog >= 2 * capacity, "2 s of backlog")

            def mean(a: Series, b: Series, name: str) -> float:
                pods = pods_of(fleet, name)
                dsum = per_model(b, f"{ttft}_sum", pods) - per_model(a, f"{ttft}_sum", pods)
                dcount = per_model(b, f"{ttft}_count", pods) - per_model(a, f"{ttft}_count", pods)
                assert dcount > 0
                return dsum / dcount

            early, late = mean(s0, s1, "over"), mean(s1, s2, "over")
            floor = PROMPT_S + DEFAULT_ENGINE.itl_max_s  # saturated: a full batch
            assert floor < early < late
            assert late > 0.9 + floor  # requests in (s1, s2] wait behind >= ~1 s of backlog
            assert late == pytest.approx(over.backlog / capacity + floor, rel=0.5)
            under = mean(s0, s2, "under")
            assert under == pytest.approx(
                PROMPT_S + float(DEFAULT_ENGINE.itl(np.array([0.5]))[0]), rel=0.05)
