"""A simulated vLLM fleet: the Deployment controller for model workloads plus their metrics.

For every :class:`ModelConfig` the fleet

- acts as the Deployment (or StatefulSet) controller against the API emulator: it watches the
  workload's ``spec.replicas``, creates Pods named like a ReplicaSet's
  (``<deploy>-<10 char hash>-<5 char suffix>``, StatefulSets ``<name>-<ordinal>``), marks them
  Ready after ``cold_start_seconds`` and writes ``status.replicas/readyReplicas/
  availableReplicas`` back;
- serves vLLM-style metrics for the ready pods on one ``/metrics`` endpoint (Prometheus text
  format, labels ``namespace``, ``pod``, ``model_name``): counters
  ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``, ``vllm:request_success_total``
  and gauges ``vllm:num_requests_waiting``, ``vllm:num_requests_running``,
  ``vllm:gpu_cache_usage_perc`` (vLLM V0's name) and ``vllm:kv_cache_usage_perc`` (V1's);
  histograms ``vllm:time_to_first_token_seconds``, ``vllm:time_per_output_token_seconds`` (V0)
  and ``vllm:inter_token_latency_seconds`` (V1; the same observations as the V0 one) and
  ``vllm:e2e_request_latency_seconds``, with vLLM V1's bucket bounds
  (``underscore_names=True`` writes ``vllm_…``, the prometheus-client >= 0.23 spelling);
- speaks each model's serving engine (``ModelConfig.server``): ``vllm`` as above, ``sglang``
  (``sglang:prompt_tokens_total``, ``sglang:generation_tokens_total``,
  ``sglang:num_requests_total``, ``sglang:num_queue_reqs``, ``sglang:num_running_reqs``,
  ``sglang:token_usage``, and the histograms ``sglang:time_to_first_token_seconds``,
  ``sglang:inter_token_latency_seconds``, ``sglang:time_per_output_token_seconds``,
  ``sglang:e2e_request_latency_seconds``) or ``tgi`` (Text Generation Inference's router:
  ``tgi_request_count``, ``tgi_request_success``, ``tgi_queue_size``,
  ``tgi_batch_current_size`` and the histograms ``tgi_request_input_length``,
  ``tgi_request_generated_tokens``, ``tgi_request_mean_time_per_token_duration``,
  ``tgi_request_duration``; no ``model_name`` label, no token counters);
- queues work FIFO: served tokens/s = min(demand + backlog, ready replicas × capacity), split
  evenly across the ready pods; the rest waits in the backlog.

**Latency** comes from the backtest's engine model (:class:`tokenscale.sim.latency.EngineModel`,
``ModelConfig.engine``, a default one when None); it shapes latency only, never throughput,
which stays ``tokens_per_replica_per_second`` per ready pod. Per tick, at utilisation
``u = served / (ready × tokens_per_replica_per_second)`` (1 while a backlog remains: saturated),
each ready pod observes its completed requests (``served tokens / tokens_per_request``, a
fractional weight, so ``_count`` equals ``vllm:request_success_total``) with

- ITL = ``engine.itl(u)`` (``itl_max_s`` when saturated), into both ITL histograms;
- TTFT = queue wait (mean backlog over the tick / ready capacity) + prompt tokens per request /
  ``engine.prefill_tokens_per_s`` + ITL;
- e2e = TTFT + (output tokens per request - 1) × ITL;

and the KV-cache gauges read ``engine.kv_usage(u)``.

Time compression: ``speedup`` compresses the *time axis* (demand curve, cold starts), not the
rates: ``demand(t)`` is in tokens per real second at simulated time ``t`` seconds, so
Prometheus' ``rate()`` over the counters equals the demand the curve says. A day-shaped curve
plays in 24 h / speedup. Tokens are totals (prompt + generation), split by ``prompt_fraction``.

Runs in-process (``async with Fleet(...)``, or :class:`FleetThread`) and standalone:
``python -m tokenscale_testbed.fleet --config fleet.json`` (see :func:`load_config`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import itertools
import json
import logging
import math
import secrets
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
import numpy as np
import yaml
from aiohttp import web

from tokenscale.sim.latency import EngineModel

log = logging.getLogger(__name__)

Demand = Callable[[float], float]
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.SafeEncodeString alphabet
DEFAULT_ENGINE = EngineModel()
#: The serving engines whose /metrics format the fleet speaks.
SERVERS = ("vllm", "sglang", "tgi")
#: entries of a model's served-token log (about a second each: four days)
SERVED_LOG_LENGTH = 4 * 86_400
# vLLM V1's bucket bounds (vllm/v1/metrics/loggers.py)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)
#: TGI's request length buckets (tokens)
LENGTH_BUCKETS = tuple(float(2 ** i) for i in range(14))
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
               120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


@dataclass
class ModelConfig:
    """One model workload.

    ``demand(t)``: offered tokens/s (prompt + generation) at simulated second ``t`` since the
    fleet started; ``tokens_per_request`` converts tokens into requests for the request
    counters and gauges; ``max_num_seqs`` bounds ``num_requests_running`` per pod;
    ``engine`` models the latencies (None: :data:`DEFAULT_ENGINE`; throughput stays
    ``tokens_per_replica_per_second`` either way).
    """

    namespace: str
    name: str
    tokens_per_replica_per_second: float
    cold_start_seconds: float
    demand: Demand
    tokens_per_request: float = 1000.0
    prompt_fraction: float = 0.5
    model_name: str | None = None
    kind: str = "Deployment"
    max_num_seqs: int = 256
    engine: EngineModel | None = None
    #: the serving engine whose /metrics format the pods speak: vllm | sglang | tgi
    server: str = "vllm"
    #: the service level its requests are counted against (TTFT s, mean ITL s)
    slo_ttft_seconds: float = 2.0
    slo_itl_seconds: float = 0.05

    def __post_init__(self) -> None:
        if self.server not in SERVERS:
            raise ValueError(f"server {self.server!r} is not one of {', '.join(SERVERS)}")


@dataclass
class Histogram:
    """A Prometheus histogram's state: per-bucket weights (the last is ``+Inf``) and sum."""

    bounds: tuple[float, ...]
    weights: list[float] = field(default_factory=list)
    total: float = 0.0  # _sum

    def __post_init__(self) -> None:
        if not self.weights:
            self.weights = [0.0] * (len(self.bounds) + 1)

    def observe(self, value: float, weight: float = 1.0) -> None:
        """Add ``weight`` observations of ``value``."""
        self.weights[bisect_left(self.bounds, value)] += weight
        self.total += value * weight

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs, ``+Inf`` last (its count is ``_count``)."""
        les = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        return list(zip(les, itertools.accumulate(self.weights), strict=True))


@dataclass
class Pod:
    """A simulated vLLM pod with its own counters (they vanish with the pod, as in vLLM)."""

    name: str
    created_at: float  # simulated seconds
    ready_at: float
    ready: bool = False
    announced: bool = False  # Ready written to the API
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    requests: float = 0.0
    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float = 0.0
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))
    #: tokens per completed request (TGI's only token signal): prompt and output length
    input_length: Histogram = field(default_factory=lambda: Histogram(LENGTH_BUCKETS))
    output_length: Histogram = field(default_factory=lambda: Histogram(LENGTH_BUCKETS))


@dataclass
class ModelState:
    """Controller and queue state of one model."""

    config: ModelConfig
    desired: int | None = None  # spec.replicas; None until the workload is seen
    generation: int = 0
    pods: list[Pod] = field(default_factory=list)
    backlog: float = 0.0  # tokens waiting
    served_rate: float = 0.0  # tokens/s served in the last step
    demand_rate: float = 0.0  # tokens/s offered in the last step
    served_total: float = 0.0
    offered_total: float = 0.0
    #: a gateway in front of the model admits at most this many tokens/s (None: all), the
    #: rate the operator publishes in status.targets[].admission; the rest is shed
    admission: float | None = None
    shed_total: float = 0.0  # tokens turned away at admission
    #: requests completed, and those within the SLO (TTFT and ITL); shed ones count as
    #: requests that missed it
    requests_total: float = 0.0
    requests_within_slo: float = 0.0
    #: (unix time, served_total) about once a second: the ground truth of tokens served
    served_log: collections.deque[tuple[float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=SERVED_LOG_LENGTH))
    pod_hash: str = ""
    selector: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    reported: dict[str, int] = field(default_factory=dict)

    @property
    def ready(self) -> list[Pod]:
        return [p for p in self.pods if p.ready]

    def log_served(self, now: float) -> None:
        """Record ``served_total`` at unix time ``now`` (at most once a second)."""
        if not self.served_log or now - self.served_log[-1][0] >= 1.0:
            self.served_log.append((now, self.served_total))

    def served_between(self, start: float, end: float) -> float:
        """Tokens served between two unix times (linear between the log's entries, clamped
        to what the log covers)."""
        return max(0.0, self._served_at(end) - self._served_at(start))

    def _served_at(self, at: float) -> float:
        log = list(self.served_log)
        if not log:
            return 0.0
        times = [t for t, _ in log]
        i = bisect_left(times, at)
        if i == 0:
            return log[0][1]
        if i == len(log):
            return log[-1][1]
        (t0, v0), (t1, v1) = log[i - 1], log[i]
        return v0 + (v1 - v0) * (at - t0) / (t1 - t0) if t1 > t0 else v1


class SimClock:
    """Simulated seconds since start: ``(monotonic - t0) × speedup``."""

    def __init__(self, speedup: float = 1.0) -> None:
        self.speedup = speedup
        self._t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.speedup


def step(state: ModelState, t: float, dt_real: float) -> None:
    """Advance one model by ``dt_real`` real seconds ending at simulated time ``t``.

    Pure bookkeeping (no I/O): readiness, FIFO queue, per-pod counters, gauges and latency
    histograms (see the module docstring).
    """
    cfg = state.config
    for pod in state.pods:
        pod.ready = pod.ready or t >= pod.ready_at
    ready = state.ready
    backlog_before = state.backlog
    offered = max(0.0, cfg.demand(t)) * dt_real
    if state.admission is not None:
        shed = max(0.0, offered - max(0.0, state.admission) * dt_real)
        offered -= shed
        state.shed_total += shed
        state.requests_total += shed / cfg.tokens_per_request
    capacity = len(ready) * cfg.tokens_per_replica_per_second * dt_real
    served = min(state.backlog + offered, capacity)
    state.backlog = state.backlog + offered - served
    state.served_rate = served / dt_real if dt_real > 0 else 0.0
    state.demand_rate = offered / dt_real if dt_real > 0 else 0.0
    state.served_total += served
    state.offered_total += offered
    if not ready:
        return
    share = served / len(ready)
    utilisation = served / capacity if capacity > 0 else 0.0
    for pod in ready:
        pod.prompt_tokens += share * cfg.prompt_fraction
        pod.generation_tokens += share * (1.0 - cfg.prompt_fraction)
        pod.requests += share / cfg.tokens_per_request
        pod.waiting = state.backlog / cfg.tokens_per_request / len(ready)
        pod.running = round(utilisation * cfg.max_num_seqs)
    _observe_latency(state, ready, served, utilisation, backlog_before)


def _observe_latency(state: ModelState, ready: Sequence[Pod], served: float, utilisation: float,
                     backlog_before: float) -> None:
    """The engine model's latencies of the requests ``ready`` served in one step."""
    cfg = state.config
    engine = cfg.engine or DEFAULT_ENGINE
    rate = len(ready) * cfg.tokens_per_replica_per_second  # tokens/s the ready pods serve
    saturated = state.backlog > 1e-6 * max(rate, 1.0)
    u = np.array([1.0 if saturated else min(max(utilisation, 0.0), 1.0)], dtype=np.float64)
    itl = engine.itl_max_s if saturated else float(engine.itl(u)[0])
    kv_usage = float(engine.kv_usage(u)[0])
    wait = (backlog_before + state.backlog) / 2.0 / rate if rate > 0 else 0.0
    prompt = cfg.tokens_per_request * cfg.prompt_fraction
    output = cfg.tokens_per_request * (1.0 - cfg.prompt_fraction)
    ttft = wait + prompt / engine.prefill_tokens_per_s + itl
    e2e = ttft + max(output - 1.0, 0.0) * itl
    completed = served / len(ready) / cfg.tokens_per_request
    state.requests_total += completed * len(ready)
    if ttft <= cfg.slo_ttft_seconds and itl <= cfg.slo_itl_seconds:
        state.requests_within_slo += completed * len(ready)
    for pod in ready:
        pod.kv_usage = kv_usage
        if completed > 0:
            pod.ttft.observe(ttft, completed)
            pod.itl.observe(itl, completed)
            pod.e2e.observe(e2e, completed)
            pod.input_length.observe(prompt, completed)
            pod.output_length.observe(output, completed)


def pod_template_hash(template: Any) -> str:
    """A stable 10-character hash of a pod template (like ``pod-template-hash``)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_SAFE[b % len(_SAFE)] for b in digest[:10])


def _suffix() -> str:
    return "".join(secrets.choice(_SAFE) for _ in range(5))


Family = tuple[str, str, str, Callable[[Pod], float]]  # name, type, help, value
HistogramFamily = tuple[str, str, Callable[[Pod], Histogram]]  # name, help, histogram
_KV_HELP = "KV-cache usage. 1 means 100 percent usage."


def _vllm_families(sep: str) -> tuple[list[Family], list[HistogramFamily]]:
    n = f"vllm{sep}"
    return [
        (n + "prompt_tokens_total", "counter", "Number of prefill tokens processed.",
         lambda p: p.prompt_tokens),
        (n + "generation_tokens_total", "counter", "Number of generation tokens processed.",
         lambda p: p.generation_tokens),
        (n + "request_success_total", "counter", "Count of successfully processed requests.",
         lambda p: p.requests),
        (n + "num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
         lambda p: p.waiting),
        (n + "num_requests_running", "gauge", "Number of requests currently running.",
         lambda p: p.running),
        (n + "gpu_cache_usage_perc", "gauge", _KV_HELP, lambda p: p.kv_usage),
        (n + "kv_cache_usage_perc", "gauge", _KV_HELP, lambda p: p.kv_usage),
    ], [
        (n + "time_to_first_token_seconds", "Histogram of time to first token in seconds.",
         lambda p: p.ttft),
        (n + "time_per_output_token_seconds", "Histogram of time per output token in seconds.",
         lambda p: p.itl),
        (n + "inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
         lambda p: p.itl),
        (n + "e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
         lambda p: p.e2e),
    ]


def _sglang_families(sep: str) -> tuple[list[Family], list[HistogramFamily]]:
    n = f"sglang{sep}"
    return [
        (n + "prompt_tokens_total", "counter", "Number of prefill tokens processed.",
         lambda p: p.prompt_tokens),
        (n + "generation_tokens_total", "counter", "Number of generation tokens processed.",
         lambda p: p.generation_tokens),
        (n + "num_requests_total", "counter", "Number of requests processed.",
         lambda p: p.requests),
        (n + "num_queue_reqs", "gauge", "The number of requests in the waiting queue.",
         lambda p: p.waiting),
        (n + "num_running_reqs", "gauge", "The number of running requests.",
         lambda p: p.running),
        (n + "token_usage", "gauge", "The token usage.", lambda p: p.kv_usage),
    ], [
        (n + "time_to_first_token_seconds", "Histogram of time to first token in seconds.",
         lambda p: p.ttft),
        (n + "inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
         lambda p: p.itl),
        (n + "time_per_output_token_seconds", "Histogram of time per output token in seconds.",
         lambda p: p.itl),
        (n + "e2e_request_latency_seconds", "Histogram of End-to-end request latency in "
         "seconds", lambda p: p.e2e),
    ]


def _tgi_families() -> tuple[list[Family], list[HistogramFamily]]:
    return [
        ("tgi_request_count", "counter", "Total number of requests", lambda p: p.requests),
        ("tgi_request_success", "counter", "Number of successful requests",
         lambda p: p.requests),
        ("tgi_queue_size", "gauge", "Current queue size", lambda p: p.waiting),
        ("tgi_batch_current_size", "gauge", "Current batch size", lambda p: p.running),
    ], [
        ("tgi_request_input_length", "Input token length per request",
         lambda p: p.input_length),
        ("tgi_request_generated_tokens", "Generated tokens per request",
         lambda p: p.output_length),
        ("tgi_request_mean_time_per_token_duration", "Mean time per token per request",
         lambda p: p.itl),
        ("tgi_request_duration", "Total time spent processing the request",
         lambda p: p.e2e),
    ]


def render_metrics(states: Sequence[ModelState], underscore_names: bool = False) -> str:
    """The Prometheus text exposition of all ready pods, each model in its server's format
    (``underscore_names``: ``vllm_…``/``sglang_…`` for the ``:`` names)."""
    sep = "_" if underscore_names else ":"
    lines: list[str] = []
    for server in SERVERS:
        members = [s for s in states if s.config.server == server]
        if not members:
            continue
        families, histograms = (_vllm_families(sep) if server == "vllm"
                                else _sglang_families(sep) if server == "sglang"
                                else _tgi_families())
        pods: list[tuple[str, Pod]] = []
        for state in members:
            cfg = state.config
            model = (cfg.model_name or cfg.name).replace("\\", "\\\\").replace('"', '\\"')
            extra = f',model_name="{model}"' if server != "tgi" else ""
            pods += [(f'namespace="{cfg.namespace}",pod="{pod.name}"{extra}', pod)
                     for pod in state.ready]
        for name, kind, help_text, value in families:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{{{labels}}} {value(pod):.6f}" for labels, pod in pods]
        for name, help_text, histogram in histograms:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
            for labels, pod in pods:
                h = histogram(pod)
                cumulative = h.cumulative()
                lines += [f'{name}_bucket{{{labels},le="{le}"}} {count:.6f}'
                          for le, count in cumulative]
                lines.append(f"{name}_sum{{{labels}}} {h.total:.6f}")
                lines.append(f"{name}_count{{{labels}}} {cumulative[-1][1]:.6f}")
    return "\n".join(lines) + "\n"


class Fleet:
    """The simulated fleet against the API at ``api_url``; metrics on ``metrics_port``.

    ``async with Fleet(url, models, speedup=60) as fleet: fleet.metrics_target`` —
    ``metrics_target`` (``127.0.0.1:<port>``) is what Prometheus scrapes.
    """

    def __init__(self, api_url: str, models: Sequence[ModelConfig], *, speedup: float = 1.0,
                 metrics_host: str = "127.0.0.1", metrics_port: int = 0,
                 underscore_names: bool = False, tick_seconds: float = 0.1,
                 token: str | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.states = [ModelState(m) for m in models]
        self.clock = SimClock(speedup)
        self.metrics_host = metrics_host
        self.metrics_port = metrics_port
        self.underscore_names = underscore_names
        self.tick_seconds = tick_seconds
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    @property
    def metrics_target(self) -> str:
        return f"{self.metrics_host}:{self.metrics_port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(headers=self._headers)
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.metrics_host, self.metrics_port)
        await site.start()
        self.metrics_port = int(self._runner.addresses[0][1])
        self.clock = SimClock(self.clock.speedup)
        self._tasks = [asyncio.create_task(self._watch(s)) for s in self.states]
        self._tasks.append(asyncio.create_task(self._run()))
        log.info("fleet metrics on http://%s/metrics", self.metrics_target)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ queries for tests

    def state(self, namespace: str, name: str) -> ModelState:
        for s in self.states:
            if (s.config.namespace, s.config.name) == (namespace, name):
                return s
        raise KeyError(f"{namespace}/{name}")

    # ------------------------------------------------------------------ metrics

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        body = render_metrics(self.states, self.underscore_names)
        return web.Response(text=body, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Version": "0.0.4"})

    # ------------------------------------------------------------------ controller

    def _workloads_url(self, cfg: ModelConfig) -> str:
        plural = "statefulsets" if cfg.kind == "StatefulSet" else "deployments"
        return f"{self.api_url}/apis/apps/v1/namespaces/{cfg.namespace}/{plural}"

    def _workload_url(self, cfg: ModelConfig, subresource: str = "") -> str:
        return f"{self._workloads_url(cfg)}/{cfg.name}/{subresource}".rstrip("/")

    async def _watch(self, state: ModelState) -> None:
        """Follow the workload's spec.replicas through a watch (relist on 410 or errors)."""
        cfg = state.config
        assert self._session is not None
        rv = ""
        while True:
            params = {"watch": "true", "fieldSelector": f"metadata.name={cfg.name}",
                      "timeoutSeconds": "30", "resourceVersion": rv}
            try:
                async with self._session.get(self._workloads_url(cfg), params=params,
                                             timeout=aiohttp.ClientTimeout(total=40)) as rsp:
                    rsp.raise_for_status()
                    async for line in rsp.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            rv = ""
                            break
                        obj = event["object"]
                        rv = obj["metadata"]["resourceVersion"]
                        if event["type"] == "DELETED":
                            state.desired = 0
                        else:
                            self._observe(state, obj)
                        self._changed.set()
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                log.debug("fleet watch of %s/%s: %r", cfg.namespace, cfg.name, e)
                rv = ""
                await asyncio.sleep(0.2)

    def _observe(self, state: ModelState, obj: dict[str, Any]) -> None:
        spec = obj.get("spec") or {}
        state.desired = int(spec.get("replicas", 1))
        state.generation = int(obj["metadata"].get("generation", 0))
        template = spec.get("template") or {}
        state.pod_hash = pod_template_hash(template)
        state.labels = dict((template.get("metadata") or {}).get("labels") or {})
        state.selector = dict((spec.get("selector") or {}).get("matchLabels") or {})

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self.tick_seconds)
            self._changed.clear()
            now = time.monotonic()
            dt_real, last = now - last, now
            t = self.clock.now()
            wall = time.time()
            for state in self.states:
                was_ready = len(state.ready)
                await self._reconcile_pods(state, t)
                step(state, t, dt_real)
                state.log_served(wall)
                if len(state.ready) != was_ready:
                    await self._mark_ready(state)
                await self._report(state)

    async def _reconcile_pods(self, state: ModelState, t: float) -> None:
        cfg = state.config
        if state.desired is None:
            return
        while len(state.pods) < state.desired:
            if cfg.kind == "StatefulSet":
                name = f"{cfg.name}-{len(state.pods)}"
            else:
                name = f"{cfg.name}-{state.pod_hash}-{_suffix()}"
            pod = Pod(name, t, t + cfg.cold_start_seconds)
            state.pods.append(pod)
            await self._create_pod(state, pod)
        while len(state.pods) > state.desired:
            # a ReplicaSet deletes not-ready pods first, then the youngest
            victim = sorted(state.pods, key=lambda p: (p.ready, -p.created_at))[0]
            if cfg.kind == "StatefulSet":
                victim = state.pods[-1]
            state.pods.remove(victim)
            await self._api("DELETE", self._pod_url(cfg, victim.name))

    def _pod_url(self, cfg: ModelConfig, name: str = "") -> str:
        return f"{self.api_url}/api/v1/namespaces/{cfg.namespace}/pods/{name}".rstrip("/")

    async def _create_pod(self, state: ModelState, pod: Pod) -> None:
        cfg = state.config
        labels = {**state.labels, **state.selector}
        if cfg.kind == "Deployment":
            labels["pod-template-hash"] = state.pod_hash
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod.name, "namespace": cfg.namespace, "labels": labels},
                "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
                "status": {"phase": "Pending"}}
        await self._api("POST", self._pod_url(cfg), body)

    async def _mark_ready(self, state: ModelState) -> None:
        for pod in state.ready:
            if pod.announced:
                continue
            pod.announced = True
            patch = {"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"}]}}
            await self._api("PATCH", self._pod_url(state.config, pod.name) + "/status", patch)

    async def _report(self, state: ModelState) -> None:
        if state.desired is None:
            return
        ready = len(state.ready)
        status = {"replicas": len(state.pods), "readyReplicas": ready,
                  "availableReplicas": ready, "updatedReplicas": len(state.pods),
                  "observedGeneration": state.generation}
        if status != state.reported:
            ok = await self._api("PATCH", self._workload_url(state.config, "status"),
                                 {"status": status})
            if ok:
                state.reported = status

    async def _api(self, method: str, url: str, body: Any = None) -> bool:
        assert self._session is not None
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        try:
            async with self._session.request(method, url, json=body, headers=headers) as rsp:
                if rsp.status >= 400 and not (method == "DELETE" and rsp.status == 404):
                    log.debug("fleet %s %s -> %s", method, url, rsp.status)
                    return False
                return True
        except aiohttp.ClientError as e:
            log.debug("fleet %s %s: %r", method, url, e)
            return False


class FleetThread:
    """A :class:`Fleet` on its own event loop in a daemon thread: ``with FleetThread(...)``."""

    def __init__(self, api_url: str, models: Sequence[ModelConfig], **kwargs: Any) -> None:
        self._args = (api_url, models, kwargs)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllm-fleet", daemon=True)
        self.fleet: Fleet | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        api_url, models, kwargs = self._args
        self.fleet = Fleet(api_url, models, **kwargs)
        self._loop.run_until_complete(self.fleet.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.fleet.stop())
        self._loop.close()

    def start(self, timeout: float = 10.0) -> Fleet:
        self._thread.start()
        if not self._ready.wait(timeout) or self.fleet is None:
            raise TimeoutError("the fleet did not start")
        return self.fleet

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------- demand shapes


def constant(rate: float) -> Demand:
    """``rate`` tokens/s forever."""
    return lambda t: rate


def steps(points: Sequence[tuple[float, float]]) -> Demand:
    """Piecewise constant: ``[(t0, rate0), (t1, rate1), ...]`` (rate_i from t_i on)."""
    ordered = sorted(points)

    def demand(t: float) -> float:
        rate = 0.0
        for start, value in ordered:
            if t >= start:
                rate = value
        return rate
    return demand


def series(points: Sequence[tuple[float, float]]) -> Demand:
    """Linear interpolation between ``(t, rate)`` points; constant outside them."""
    ordered = sorted(points)

    def demand(t: float) -> float:
        if not ordered:
            return 0.0
        if t <= ordered[0][0]:
            return ordered[0][1]
        for (t0, r0), (t1, r1) in itertools.pairwise(ordered):
            if t <= t1:
                return r0 + (r1 - r0) * (t - t0) / (t1 - t0) if t1 > t0 else r1
        return ordered[-1][1]
    return demand


def diurnal(base: float, peak: float, period_seconds: float = 86_400.0,
            peak_at_seconds: float = 50_400.0) -> Demand:
    """A day-shaped cosine between ``base`` and ``peak`` tokens/s, highest at ``peak_at``."""
    def demand(t: float) -> float:
        phase = 2 * math.pi * (t - peak_at_seconds) / period_seconds
        return base + (peak - base) * (1 + math.cos(phase)) / 2
    return demand


def demand_from_config(raw: dict[str, Any]) -> Demand:
    """``{"type": "constant"|"steps"|"series"|"diurnal", ...}`` as in the fleet config file."""
    kind = raw.get("type", "constant")
    if kind == "constant":
        return constant(float(raw["rate"]))
    if kind == "steps":
        return steps([(float(t), float(r)) for t, r in raw["points"]])
    if kind == "series":
        return series([(float(t), float(r)) for t, r in raw["points"]])
    if kind == "diurnal":
        return diurnal(float(raw["base"]), float(raw["peak"]),
                       float(raw.get("periodSeconds", 86_400)),
                       float(raw.get("peakAtSeconds", 50_400)))
    raise ValueError(f"unknown demand type {kind!r}")


def load_config(path: str | Path) -> tuple[str, list[ModelConfig], dict[str, Any]]:
    """Read a fleet config (JSON or YAML)::

        {"apiUrl": "http://127.0.0.1:6443",        # or "kubeconfig": "path"
         "speedup": 60, "metricsPort": 9400, "underscoreNames": false,
         "models": [{"namespace": "inference", "name": "llama-8b",
                     "tokensPerReplicaPerSecond": 3000, "coldStartSeconds": 90,
                     "tokensPerRequest": 1000, "promptFraction": 0.5,
                     "demand": {"type": "diurnal", "base": 2000, "peak": 20000}}]}
    """
    raw = yaml.safe_load(Path(path).read_text())
    api_url = raw.get("apiUrl")
    if not api_url and raw.get("kubeconfig"):
        kube = yaml.safe_load(Path(raw["kubeconfig"]).read_text())
        api_url = kube["clusters"][0]["cluster"]["server"]
    models = [ModelConfig(
        namespace=m["namespace"], name=m["name"],
        tokens_per_replica_per_second=float(m["tokensPerReplicaPerSecond"]),
        cold_start_seconds=float(m.get("coldStartSeconds", 0)),
        demand=demand_from_config(m.get("demand", {"type": "constant", "rate": 0})),
        tokens_per_request=float(m.get("tokensPerRequest", 1000)),
        prompt_fraction=float(m.get("promptFraction", 0.5)),
        model_name=m.get("modelName"), kind=m.get("kind", "Deployment"),
        server=m.get("server", "vllm"),
    ) for m in raw["models"]]
    options = {"speedup": float(raw.get("speedup", 1.0)),
               "metrics_port": int(raw.get("metricsPort", 0)),
               "underscore_names": bool(raw.get("underscoreNames", False))}
    return str(api_url), models, options


def main(argv: list[str] | None = None) -> None:
    """``python -m tokenscale_testbed.fleet --config fleet.json``: run until interrupted."""
    parser = argparse.ArgumentParser(description="simulated vLLM fleet")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    api_url, models, options = load_config(args.config)

    async def run() -> None:
        async with Fleet(api_url, models, **options) as fleet:
            print(f"http://{fleet.metrics_target}/metrics", flush=True)
            await asyncio.Event().wait()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
