"""Prometheus answering badly: each failure is named, none crashes, none scales down."""

from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import (
    EXPECTED_KIND,
    Channel,
    FaultyPrometheus,
    OperatorProcess,
    budget,
    condition,
    create,
    deployment,
    operators,
    replica_history,
    status_of,
    target,
    wait_cycles,
)

from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.prometheus import free_port
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.faults
NS = "inference"
FAILURES = sorted(EXPECTED_KIND)
KIND = {**EXPECTED_KIND, "down": "Unreachable"}


def test_each_bad_answer_is_named_and_never_scales_down(
    apiserver: ApiServerThread, kubeconfig: Path, faulty_prometheus: FaultyPrometheus
) -> None:
    prom = faulty_prometheus
    # One budget per failure mode, each on its own channel of the faulty peer; demand
    # 4,000 tok/s at 1,000 tok/s per replica keeps them at 4. A reading of "no demand"
    # would scale them to minReplicas 1 at once (no stabilization, no tolerance).
    for mode in [*FAILURES, "down", "control"]:
        name = f"m-{mode}"
        url = prom.add(mode, Channel(NS, name, rate=1000.0 if mode == "control" else 4000.0))
        create(apiserver, "apps/v1", "deployments", deployment(NS, name, 4))
        if mode == "down":  # nothing listens there: Unreachable
            url = f"http://127.0.0.1:{free_port()}"
        create(apiserver, "tokenscale.dev/v1alpha1", "tokenbudgets",
               budget(NS, name, [target(name)], prometheus_url=url,
                      fallback={"afterSeconds": 0, "replicas": None}))
    with operators(OperatorProcess(kubeconfig, prom.url("control"))) as (op,):
        for mode in [*FAILURES, "control"]:
            wait_for(lambda m=mode: condition(status_of(apiserver, NS, f"m-{m}"),  # type: ignore[misc]
                                              "MetricsAvailable").get("status") == "True",
                     timeout=30, message=f"healthy metrics for m-{mode}")
        # The control budget acts in this setup: demand 1,000 tok/s -> 1 replica.
        wait_for(lambda: replica_history(apiserver, NS, "m-control")[-1] == 1, timeout=20,
                 message="the control budget to scale down")

        for mode in FAILURES:
            prom.set_mode(mode, mode)
        for mode in [*FAILURES, "down"]:
            def named(m: str = mode) -> bool:
                c = condition(status_of(apiserver, NS, f"m-{m}"), "MetricsAvailable")
                return (c.get("status") == "False" and c.get("reason") == "MetricsUnavailable"
                        and f"m-{m}: {KIND[m]}" in c.get("message", ""))
            wait_for(named, timeout=30, message=f"MetricsAvailable=False naming "
                                                f"{KIND[mode]} for m-{mode}")
        # One more full cycle in the failure modes, the control budget still served.
        wait_cycles(apiserver, NS, "m-control", cycles=1)
        for mode in [*FAILURES, "down"]:
            st = status_of(apiserver, NS, f"m-{mode}")
            assert st["phase"] == "Degraded"
            t = st["targets"][0]
            assert t["reason"] == "MetricsUnavailableHold", t
            assert t["desiredReplicas"] == 4
            assert replica_history(apiserver, NS, f"m-{mode}") == [4], mode
        assert op.alive and op.healthy()
        for kind in ("Timeout", "HTTPError", "BadResponse", "Unreachable"):
            assert op.metric("tokenscale_prometheus_errors_total", kind=kind) > 0, kind

        # Clean recovery: every budget fresh again, still at 4 replicas. The duplicated
        # series of "multiple" stays in the token rate's window until it has left it (the
        # operator keeps the window between cycles, as a full read of a real Prometheus
        # would still show it): its recovery may take the forecast window (60 s) longer.
        for mode in FAILURES:
            prom.set_mode(mode, "ok")
        for mode in FAILURES:
            wait_for(lambda m=mode: condition(status_of(apiserver, NS, f"m-{m}"),  # type: ignore[misc]
                                              "MetricsAvailable").get("reason") == "MetricsFresh",
                     timeout=30 + (60 if mode == "multiple" else 0),
                     message=f"recovery of m-{mode}")
            assert replica_history(apiserver, NS, f"m-{mode}") == [4], mode
        assert op.alive


def test_one_failed_read_is_bridged_and_the_second_in_a_row_is_reported(
    apiserver: ApiServerThread, kubeconfig: Path, faulty_prometheus: FaultyPrometheus
) -> None:
    """A shard's batched queries answer for all its budgets: one timeout of a loaded
    Prometheus must not flip every budget's MetricsAvailable (a status write and an Event
    each, twice). One failed read is bridged (its budgets skip the cycle); two in a row are an
    outage, reported as before."""
    prom = faulty_prometheus
    ch = Channel(NS, "llama", rate=4000.0)
    url = prom.add("shared", ch)
    create(apiserver, "apps/v1", "deployments", deployment(NS, "llama", 4))
    create(apiserver, "tokenscale.dev/v1alpha1", "tokenbudgets",
           budget(NS, "chat", [target("llama")], prometheus_url=url,
                  fallback={"afterSeconds": 0, "replicas": None}))

    def metrics() -> dict[str, str]:
        return condition(status_of(apiserver, NS, "chat"), "MetricsAvailable")

    with operators(OperatorProcess(kubeconfig, url)) as (op,):
        wait_for(lambda: metrics().get("status") == "True", timeout=30,
                 message="healthy metrics")
        wait_cycles(apiserver, NS, "chat", cycles=2)  # past the first cycle's extra reads
        fresh_since = metrics()["lastTransitionTime"]
        # Just after a cycle wrote its status: the next cycle's four queries (token rate,
        # queue, recent latency, tokens in period) fail, the one after answers.
        ch.fail_next = 4
        wait_for(lambda: ch.fail_next == 0, timeout=30, message="one cycle's reads failed")
        wait_cycles(apiserver, NS, "chat", cycles=2)
        assert metrics()["status"] == "True" and metrics()["lastTransitionTime"] == fresh_since
        for query in ("token rate", "queue", "recent latency", "tokens in period"):
            assert op.metric("tokenscale_prometheus_bridged_total", query=query) == 1, query
        assert op.metric("tokenscale_prometheus_errors_total", kind="HTTPError") >= 4

        # Two cycles in a row fail: an outage, reported (and the replicas held).
        ch.fail_next = 8
        wait_for(lambda: metrics().get("status") == "False"
                 and "llama: HTTPError" in metrics().get("message", ""), timeout=30,
                 message="MetricsAvailable=False on the second failed read in a row")
        wait_for(lambda: metrics().get("status") == "True", timeout=30, message="recovery")
        assert replica_history(apiserver, NS, "llama") == [4]
