"""The service model's inputs from the real Prometheus scraping the simulated fleet: the
latency history read (mean inter-token latency and token rate per pod, two range queries per
URL, cached) and the observation builder's (tokens/s, ITL) pairs.

Two models at different utilisation, each in its own fleet so both metric spellings are
scraped: ``half`` (50 %, ``vllm:`` names) and ``busy`` (95 %, ``vllm_`` names, as
prometheus-client >= 0.23 writes them). The history is shortened (30 s at 1 s steps, 5 s
rate window) so a test of seconds has many steps; the queries are the operator's own.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from tokenscale import api, prometheus_reads
from tokenscale.adapters.kube import Workload
from tokenscale.core.planner import plan
from tokenscale.core.types import Memory, Observation
from tokenscale.metrics import OperatorMetrics
from tokenscale.observation import build_observation
from tokenscale.prometheus_reads import PrometheusReads
from tokenscale.registry import BudgetEntry
from tokenscale.settings import OperatorSettings
from tokenscale.sim.latency import EngineModel
from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.fleet import FleetThread, ModelConfig, steps
from tokenscale_testbed.prometheus import PrometheusServer
from tokenscale_testbed.waiting import async_wait_for

pytestmark = pytest.mark.integration

NS = "inference"
PER_REPLICA = 3000.0  # tokens/s a replica serves
REPLICAS = 2
UTILISATION = {"half": 0.5, "busy": 0.95}
NEWEST = 2 * REPLICAS  # pairs of the last two steps of a model (each pod at each step)


def deployment(name: str) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {}}}}


def target(name: str) -> dict[str, Any]:
    return {"name": name, "scaleTargetRef": {"name": name}, "minReplicas": 1, "maxReplicas": 4,
            "tokensPerReplicaPerSecond": PER_REPLICA, "costPerReplicaHour": 1.0}


def budget() -> BudgetEntry:
    spec = api.parse_spec({"budget": {"period": "Day", "maxCost": 1000},
                           "targets": [target(n) for n in UTILISATION]})
    return BudgetEntry(namespace=NS, name="fleet", body={}, spec=spec)


async def _observe(settings: OperatorSettings, entry: BudgetEntry,
                   workloads: dict[tuple[str, str], Workload]) -> Observation:
    """One cycle's reads and observation, with a new reader."""
    assert entry.spec is not None
    reads = PrometheusReads(settings, OperatorMetrics())
    try:
        answers = (await reads.read([entry], time.time()))[settings.prometheus_url]
    finally:
        reads.close()
    return build_observation(entry.spec, NS, answers, workloads, [], 120.0)


async def _recent(settings: OperatorSettings, entry: BudgetEntry,
                  workloads: dict[tuple[str, str], Workload]) -> dict[str, float] | None:
    """Each model's latency seen now, once both are known."""
    seen = await _observe(settings, entry, workloads)
    got = {n: seen.targets[n].recent_itl_seconds for n in UTILISATION}
    return {n: v for n, v in got.items() if v is not None} if all(
        v is not None for v in got.values()) else None


def queries(metrics: OperatorMetrics) -> float:
    """Queries the reads sent so far (the operator's counter)."""
    return sum(metrics.registry.get_sample_value("tokenscale_prometheus_queries_total",
                                                 {"kind": kind}) or 0.0
               for kind in ("instant", "range"))


async def test_latency_pairs_from_the_fleet_rise_with_the_per_pod_load(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus_reads, "LATENCY_HISTORY_SECONDS", 30)
    monkeypatch.setattr(prometheus_reads, "LATENCY_STEP_SECONDS", 1)
    monkeypatch.setattr(prometheus_reads, "LATENCY_RATE_WINDOW", "5s")
    engine = EngineModel(max_batch=1024)  # a cap above ITL(0.95): 95 % is not saturated
    models = {name: ModelConfig(namespace=NS, name=name, tokens_per_replica_per_second=PER_REPLICA,
                                cold_start_seconds=0, engine=engine,
                                demand=steps([(0, 0), (1, u * REPLICAS * PER_REPLICA)]))
              for name, u in UTILISATION.items()}
    itl = {name: float(engine.itl(np.array([u]))[0]) for name, u in UTILISATION.items()}
    per_pod = {name: u * PER_REPLICA for name, u in UTILISATION.items()}
    assert itl["busy"] > 5 * itl["half"]
    workloads = {("Deployment", n): Workload("Deployment", n, REPLICAS, REPLICAS)
                 for n in UTILISATION}
    entry = budget()
    assert entry.spec is not None
    spec = entry.spec

    with ApiServerThread(namespaces=[NS]) as apiserver, \
            FleetThread(apiserver.url, [models["half"]], tick_seconds=0.05) as colon, \
            FleetThread(apiserver.url, [models["busy"]], tick_seconds=0.05,
                        underscore_names=True) as underscore, \
            PrometheusServer(scrape_interval=0.5) as prom:
        for name in UTILISATION:
            apiserver.call(lambda s, n=name: s.create_object("apps/v1", "deployments",
                                                             deployment(n)))
        prom.add_targets([colon.metrics_target, underscore.metrics_target])
        settings = OperatorSettings(prometheus_url=prom.url, namespaces=[NS],
                                    clock_offset_seconds=0.0)

        async def converged() -> dict[str, tuple[tuple[float, float], ...]]:
            """Each model's pairs once their newest ones match the engine model (a new
            reader each time: one reader re-reads the history only every 10 min)."""
            reads = PrometheusReads(settings, OperatorMetrics())
            try:
                answers = (await reads.read([entry], time.time()))[prom.url]
            finally:
                reads.close()
            seen = build_observation(spec, NS, answers, workloads, [], 120.0)
            pairs = {n: seen.targets[n].latency_samples for n in UTILISATION}
            for n, got in pairs.items():
                newest = got[-NEWEST:]
                if len(newest) < NEWEST or not all(
                        abs(rate - per_pod[n]) < 0.05 * per_pod[n]
                        and abs(latency - itl[n]) < 0.05 * itl[n] for rate, latency in newest):
                    return {}
            return pairs

        pairs = await async_wait_for(converged, 60, interval=0.5,
                                     message="(tokens/s, ITL) pairs matching the engine model")
        # the latency requests see now, from the cycle's own batched instant query: busy's
        # 0.16 s is above the 50 ms SLO, so the planner adds a replica at once
        now_read = await async_wait_for(lambda: _recent(settings, entry, workloads), 30,
                                        interval=0.5, message="the latency seen now")
        assert now_read["busy"] == pytest.approx(itl["busy"], rel=0.1)
        assert now_read["half"] == pytest.approx(itl["half"], rel=0.1)
        seen_now = await _observe(settings, entry, workloads)
        decided = plan(spec, seen_now, Memory(), datetime.now(UTC)).decisions
        assert decided["busy"].reason == "SloBreach", decided["busy"].message
        assert decided["busy"].replicas >= REPLICAS + 1
        assert decided["half"].reason != "SloBreach"
        half, busy = (pairs[n][-NEWEST:] for n in UTILISATION)
        # more load per pod, higher mean inter-token latency, pair by pair
        assert min(r for r, _ in busy) > 1.5 * max(r for r, _ in half)
        assert min(t for _, t in busy) > 5 * max(t for _, t in half)
        for got in pairs.values():
            assert all(rate > 0 and latency > 0 for rate, latency in got)
            assert len(got) <= REPLICAS * 31  # each pod at each step of 30 s, at most once

        # the history is read once per refresh for all budgets of a URL: two range queries
        # in the first cycle, none in the next (the cycle's own four stay)
        metrics = OperatorMetrics()
        reads = PrometheusReads(settings, metrics)
        try:
            first = await reads.read([entry, budget()], time.time())
            asked = queries(metrics)
            second = await reads.read([entry], time.time())
            assert (asked, queries(metrics) - asked) == (6, 4)
        finally:
            reads.close()
        assert second[prom.url].itl == first[prom.url].itl
        assert build_observation(spec, NS, second[prom.url], workloads, [], 120.0).targets[
            "busy"].latency_samples
