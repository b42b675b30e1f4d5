"""The real Prometheus killed mid-run and restarted later: hold, fallback, clean recovery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import (
    OperatorProcess,
    budget,
    condition,
    create,
    deployment,
    operators,
    replica_history,
    status_of,
    target,
)

from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.fleet import FleetThread, ModelConfig, constant
from tokenscale_testbed.prometheus import PrometheusServer
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.faults
NS = "inference"


def test_prometheus_killed_holds_then_falls_back_then_recovers(
    apiserver: ApiServerThread, kubeconfig: Path,
    prometheus_factory: Callable[..., PrometheusServer],
) -> None:
    create(apiserver, "apps/v1", "deployments", deployment(NS, "llama", 3))
    model = ModelConfig(NS, "llama", tokens_per_replica_per_second=1000, cold_start_seconds=0,
                        demand=constant(2500))
    with FleetThread(apiserver.url, [model], tick_seconds=0.1) as fleet:
        prom = prometheus_factory(targets=[fleet.metrics_target], scrape_interval=1.0)
        served = ("sum(rate(vllm:prompt_tokens_total[10s])) + "
                  "sum(rate(vllm:generation_tokens_total[10s]))")
        wait_for(lambda: any(float(r["value"][1]) > 2400 for r in prom.query(served)),
                 timeout=30, message="the fleet's demand in Prometheus")
        create(apiserver, "tokenscale.dev/v1alpha1", "tokenbudgets", budget(
            NS, "chat", [target("llama", minReplicas=1)],
            fallback={"afterSeconds": 5, "replicas": 5},
            # Longer than the outage: the pre-outage recommendations bound the first
            # readings of a restarted (empty) Prometheus, which miss pods with < 2 samples.
            planning={"scaleDownStabilizationSeconds": 60}))

        def metrics() -> dict[str, str]:
            return condition(status_of(apiserver, NS, "chat"), "MetricsAvailable")

        with operators(OperatorProcess(kubeconfig, prom.url)) as (op,):
            wait_for(lambda: metrics().get("reason") == "MetricsFresh"
                     and status_of(apiserver, NS, "chat")["targets"][0]["reason"]
                     == "DemandDriven", timeout=40, message="fresh metrics, demand-driven")
            cost_before = status_of(apiserver, NS, "chat")["spend"]["cost"]
            # 2,500 tokens/s need 3 replicas; a busy machine can make the first readings
            # of the ramp-up ask for 4. Either way: no change while Prometheus is away.
            before = replica_history(apiserver, NS, "llama")
            assert before[-1] in (3, 4), before

            assert prom._proc is not None
            prom._proc.kill()  # SIGKILL, no shutdown
            prom._proc.wait(10)
            held = wait_for(lambda: metrics().get("reason") == "MetricsUnavailable"
                            and status_of(apiserver, NS, "chat"), timeout=20,
                            message="MetricsAvailable=False while Prometheus is down")
            assert "llama: Unreachable" in metrics()["message"]
            assert held["targets"][0]["reason"] == "MetricsUnavailableHold"
            assert held["metricsUnavailableSince"]
            assert replica_history(apiserver, NS, "llama") == before

            wait_for(lambda: metrics().get("reason") == "FallbackActive", timeout=30,
                     message="fallback after fallback.afterSeconds")
            wait_for(lambda: replica_history(apiserver, NS, "llama")[-1] == 5, timeout=15,
                     message="fallback replicas")
            st = status_of(apiserver, NS, "chat")
            assert st["targets"][0]["reason"] == "FallbackReplicas"
            assert st["spend"]["cost"] > cost_before  # accounting goes on without Prometheus

            prom.stop()
            prom.start()  # same port, empty TSDB
            wait_for(lambda: metrics().get("reason") == "MetricsFresh", timeout=40,
                     message="recovery after the restart")
            # Demand still needs what it needed before: back down once metrics are trusted
            # again. The restarted Prometheus' first readings (pods with < 2 samples are
            # missing from rate()) ramp up and widen the demand's spread, so the learned
            # margin stays wide until they leave the forecast window (60 s), and what they
            # asked for the stabilization window (60 s).
            wait_for(lambda: replica_history(apiserver, NS, "llama")[-1] in (3, 4), timeout=150,
                     message="demand-driven replicas after recovery")
            st = status_of(apiserver, NS, "chat")
            assert "metricsUnavailableSince" not in st
            assert st["phase"] == "Active"
            assert op.alive
            # Never below the pre-outage count while Prometheus was away, then down.
            history = replica_history(apiserver, NS, "llama")
            assert history[:len(before) + 1] == [*before, 5], history
            assert history[-1] < 5 and min(history[len(before):]) >= 3, history
