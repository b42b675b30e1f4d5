"""Engine presets against the real Prometheus: one exposition per engine, in that engine's own
/metrics format (written from each engine's published metrics documentation: vLLM's
``vllm:`` names in both spellings and both ITL histogram names, SGLang's ``sglang:`` names
with its ``model_name``/``tp_rank`` labels, TGI's router metrics with histograms and no
token counters), scraped every second, read by the operator's own batched reads and
observation builder.

Counters and histograms grow linearly (value = rate x seconds since start), so the token
rate, the queue and the mean inter-token latency each target should read are known exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from exposition import exposition, serving
from tokenscale import api, prometheus_reads
from tokenscale.adapters.kube import Workload
from tokenscale.core.planner import plan
from tokenscale.core.types import Memory
from tokenscale.metrics import OperatorMetrics
from tokenscale.observation import build_observation, metrics_status
from tokenscale.prometheus_reads import PrometheusReads
from tokenscale.registry import BudgetEntry
from tokenscale.settings import OperatorSettings
from tokenscale_testbed.prometheus import PrometheusServer
from tokenscale_testbed.waiting import async_wait_for

pytestmark = pytest.mark.integration

NS = "inference"
START = time.time()
REQUESTS_PER_SECOND = 2.0
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1)


def _histogram(name: str, labels: str, value: float, elapsed: float) -> list[str]:
    """A histogram whose every observation is ``value``, REQUESTS_PER_SECOND of them a
    second."""
    count = REQUESTS_PER_SECOND * elapsed
    lines = [f'{name}_bucket{{{labels},le="{le}"}} {count if value <= le else 0.0}'
             for le in ITL_BUCKETS]
    lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {count}')
    lines += [f"{name}_sum{{{labels}}} {value * count}", f"{name}_count{{{labels}}} {count}"]
    return lines


def vllm_v1(pod: str, prompt: float, gen: float, waiting: float, itl: float,
            e: float) -> list[str]:
    """vLLM V1 (``vllm:`` names, inter_token_latency_seconds and kv_cache_usage_perc)."""
    labels = f'namespace="{NS}",pod="{pod}",engine="0",model_name="meta-llama/Llama-3.1-8B"'
    return [
        "# TYPE vllm:prompt_tokens_total counter",
        f"vllm:prompt_tokens_total{{{labels}}} {prompt * e}",
        "# TYPE vllm:generation_tokens_total counter",
        f"vllm:generation_tokens_total{{{labels}}} {gen * e}",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{labels}}} {waiting}",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{labels}}} 7",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{{{labels}}} 0.4",
        "# TYPE vllm:inter_token_latency_seconds histogram",
        *_histogram("vllm:inter_token_latency_seconds", labels, itl, e),
        "# TYPE vllm:time_to_first_token_seconds histogram",
        *_histogram("vllm:time_to_first_token_seconds", labels, 0.09, e),
    ]


def vllm_v0_underscore(pod: str, prompt: float, gen: float, waiting: float, itl: float,
                       e: float) -> list[str]:
    """vLLM V0 names in prometheus-client >= 0.23's OpenMetrics spelling (``vllm_``):
    time_per_output_token_seconds, gpu_cache_usage_perc."""
    labels = f'namespace="{NS}",pod="{pod}",model_name="meta-llama/Llama-3.1-70B"'
    return [
        f"vllm_prompt_tokens_total{{{labels}}} {prompt * e}",
        f"vllm_generation_tokens_total{{{labels}}} {gen * e}",
        f"vllm_num_requests_waiting{{{labels}}} {waiting}",
        f"vllm_gpu_cache_usage_perc{{{labels}}} 0.3",
        *_histogram("vllm_time_per_output_token_seconds", labels, itl, e),
    ]


def sglang(pod: str, prompt: float, gen: float, waiting: float, itl: float,
           e: float) -> list[str]:
    """SGLang with --enable-metrics (labels model_name, engine_type, tp_rank, pp_rank)."""
    labels = (f'namespace="{NS}",pod="{pod}",model_name="Qwen/Qwen2.5-7B-Instruct",'
              'engine_type="unified",tp_rank="0",pp_rank="0"')
    return [
        "# HELP sglang:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE sglang:prompt_tokens_total counter",
        f"sglang:prompt_tokens_total{{{labels}}} {prompt * e}",
        "# HELP sglang:generation_tokens_total Number of generation tokens processed.",
        "# TYPE sglang:generation_tokens_total counter",
        f"sglang:generation_tokens_total{{{labels}}} {gen * e}",
        "# HELP sglang:token_usage The token usage",
        "# TYPE sglang:token_usage gauge",
        f"sglang:token_usage{{{labels}}} 0.28",
        "# TYPE sglang:num_queue_reqs gauge",
        f"sglang:num_queue_reqs{{{labels}}} {waiting}",
        "# TYPE sglang:num_running_reqs gauge",
        f"sglang:num_running_reqs{{{labels}}} 12",
        "# TYPE sglang:time_to_first_token_seconds histogram",
        *_histogram("sglang:time_to_first_token_seconds", labels, 0.2, e),
        "# TYPE sglang:inter_token_latency_seconds histogram",
        *_histogram("sglang:inter_token_latency_seconds", labels, itl, e),
    ]


def tgi(pod: str, prompt: float, gen: float, waiting: float, itl: float,
        e: float) -> list[str]:
    """Text Generation Inference's router: no token counters, per-request length
    histograms, no model label."""
    labels = f'namespace="{NS}",pod="{pod}"'
    requests = REQUESTS_PER_SECOND * e
    lines = [
        "# TYPE tgi_request_count counter", f"tgi_request_count{{{labels}}} {requests}",
        "# TYPE tgi_queue_size gauge", f"tgi_queue_size{{{labels}}} {waiting}",
        "# TYPE tgi_batch_current_size gauge", f"tgi_batch_current_size{{{labels}}} 5",
        "# TYPE tgi_request_mean_time_per_token_duration histogram",
        *_histogram("tgi_request_mean_time_per_token_duration", labels, itl, e),
    ]
    for name, per_second in (("tgi_request_input_length", prompt),
                             ("tgi_request_generated_tokens", gen)):
        lines += [f"# TYPE {name} histogram",
                  f'{name}_bucket{{{labels},le="+Inf"}} {requests}',
                  f"{name}_sum{{{labels}}} {per_second * e}",
                  f"{name}_count{{{labels}}} {requests}"]
    return lines


Exposition = Callable[[str, float, float, float, float, float], list[str]]
# (target, engine it names, exposition, pod, prompt/s, generation/s, waiting, ITL s)
PODS: list[tuple[str, str, Exposition, str, float, float, float, float]] = [
    ("llama-8b", "vllm", vllm_v1, "llama-8b-7d9f8c6b5-x2k4p", 100.0, 300.0, 2.0, 0.02),
    ("llama-70b", "vllm", vllm_v0_underscore, "llama-70b-5c4b3a2d1-aaaaa", 20.0, 80.0, 1.0,
     0.04),
    ("qwen", "sglang", sglang, "qwen-6b8c9d7f5-bcdfg", 60.0, 140.0, 3.0, 0.03),
    ("mistral", "tgi", tgi, "mistral-5f6d7c8b9-hjklm", 90.0, 210.0, 4.0, 0.06),
    # named sglang, but its pods speak vLLM: none of the expected series
    ("mislabelled", "sglang", vllm_v1, "mislabelled-7f8d9c6b5-npqrs", 10.0, 10.0, 0.0, 0.02),
]


def _all_engines() -> list[str]:
    elapsed = time.time() - START
    lines: list[str] = []
    for _, _, engine_exposition, pod, prompt, gen, waiting, itl in PODS:
        lines += engine_exposition(pod, prompt, gen, waiting, itl, elapsed)
    return lines


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with serving(exposition(_all_engines)) as address, \
            PrometheusServer(targets=[address], scrape_interval=1.0) as prom:
        # rate() over 5 s is exact once the whole window holds samples
        full = ('min(count_over_time({__name__=~"tgi_request_input_length_sum|'
                'sglang:prompt_tokens_total|vllm_prompt_tokens_total"}[12s])) >= 11')
        prom.wait_for_series(full, timeout=40)
        yield prom


def target(name: str, engine: str) -> dict[str, Any]:
    return {"name": name, "scaleTargetRef": {"name": name}, "minReplicas": 1,
            "maxReplicas": 4, "tokensPerReplicaPerSecond": 1000, "costPerReplicaHour": 1.0,
            "engine": engine}


def entry(name: str, targets: list[dict[str, Any]]) -> BudgetEntry:
    spec = api.parse_spec({"budget": {"period": "Day", "maxCost": 1000},
                           "targets": targets})
    return BudgetEntry(namespace=NS, name=name, body={}, spec=spec)


WORKLOADS = {("Deployment", t): Workload("Deployment", t, 1, 1) for t, *_ in PODS}


def queries(metrics: OperatorMetrics) -> float:
    return sum(metrics.registry.get_sample_value("tokenscale_prometheus_queries_total",
                                                 {"kind": kind}) or 0.0
               for kind in ("instant", "range"))


@pytest.fixture
def short_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus_reads, "LATENCY_HISTORY_SECONDS", 10)
    monkeypatch.setattr(prometheus_reads, "LATENCY_STEP_SECONDS", 1)
    monkeypatch.setattr(prometheus_reads, "LATENCY_RATE_WINDOW", "5s")


async def test_each_engine_is_read_with_its_own_names_in_one_query_per_family(
    prometheus: PrometheusServer, short_history: None,
) -> None:
    mixed = entry("mixed", [target(t, e) for t, e, *_ in PODS])
    assert mixed.spec is not None
    settings = OperatorSettings(prometheus_url=prometheus.url, namespaces=[NS],
                                rate_window="5s", clock_offset_seconds=0.0)
    expected = {t: (p + g, w, itl) for t, _, _, _, p, g, w, itl in PODS if t != "mislabelled"}

    async def observed() -> Any:
        reads = PrometheusReads(settings, OperatorMetrics())
        try:
            answers = (await reads.read([mixed], time.time()))[prometheus.url]
        finally:
            reads.close()
        seen = build_observation(mixed.spec, NS, answers, WORKLOADS, [], 60.0)
        for name, (rate, waiting, itl) in expected.items():
            obs = seen.targets[name]
            if obs.metrics_error or not obs.latency_samples:
                return None
            if abs(obs.token_rate_samples[-1][1] - rate) > 0.02 * rate:
                return None
            if obs.queue_length != waiting:
                return None
            if abs(obs.latency_samples[-1][1] - itl) > 1e-6:
                return None
            if obs.recent_itl_seconds is None or abs(obs.recent_itl_seconds - itl) > 1e-6:
                return None
        return seen

    seen = await async_wait_for(observed, 30, interval=0.5,
                                message="every engine's rate, queue and ITL as exposed")
    for name, (rate, _, _) in expected.items():  # the fit's pairs: the pod's own rate
        assert abs(seen.targets[name].latency_samples[-1][0] - rate) < 0.02 * rate
    # the time to first token seen now comes with the ITL in the same query, from the
    # engines that export it (the V0 pods here and TGI do not)
    ttft = {name: seen.targets[name].recent_ttft_seconds for name in expected}
    assert ttft == {"llama-8b": pytest.approx(0.09), "llama-70b": None,
                    "qwen": pytest.approx(0.2), "mistral": None}
    assert "vllm:time_to_first_token_seconds" in metrics_status(mixed.spec, seen)[
        "llama-8b"].series

    # a target whose pods export none of its engine's series: Empty, with the names
    wrong = seen.targets["mislabelled"]
    assert wrong.metrics_error == "Empty" and not wrong.token_rate_samples
    assert wrong.metrics_detail is not None
    assert "sglang:prompt_tokens_total" in wrong.metrics_detail
    assert "sglang:generation_tokens_total" in wrong.metrics_detail
    status = metrics_status(mixed.spec, seen)
    assert status["mislabelled"].missing == ["sglang:prompt_tokens_total",
                                             "sglang:generation_tokens_total"]
    assert status["mistral"].engine == "tgi" and not status["mistral"].missing
    assert "tgi_request_generated_tokens_sum" in status["mistral"].series
    assert "sglang:num_queue_reqs" in status["qwen"].series
    # the condition names them too, and the target is held (never scaled down)
    result = plan(mixed.spec, seen, Memory(), datetime.now(UTC))
    metrics = next(c for c in result.conditions if c.type == "MetricsAvailable")
    assert metrics.status == "False"
    assert "sglang:prompt_tokens_total" in metrics.message
    assert result.decisions["mislabelled"].replicas >= 1
    assert result.decisions["mislabelled"].reason == "MetricsUnavailableHold"


async def test_targets_of_several_engines_cost_no_more_queries_than_one_engine(
    prometheus: PrometheusServer, short_history: None,
) -> None:
    """One query per metric family and cycle, whatever the engines and the budgets."""
    settings = OperatorSettings(prometheus_url=prometheus.url, namespaces=[NS],
                                rate_window="5s", clock_offset_seconds=0.0)
    vllm_only = [entry("a", [target("llama-8b", "vllm")])]
    mixed = [entry(f"b{i}", [target(t, e) for t, e, *_ in PODS]) for i in range(5)]
    counts = []
    for due in (vllm_only, mixed):
        metrics = OperatorMetrics()
        reads = PrometheusReads(settings, metrics)
        try:
            await reads.read(due, time.time())
            first = queries(metrics)
            await reads.read(due, time.time())
            counts.append((first, queries(metrics) - first))
        finally:
            reads.close()
    # token rate, queue, recent latency, tokens in period; the first cycle also reads the
    # latency history (two range queries)
    assert counts == [(6, 4), (6, 4)]
