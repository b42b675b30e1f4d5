"""Operator SIGKILLed mid-period and restarted: spend continues (no reset, no double count
beyond one interval), the stabilization history survives."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from faultkit import (
    Channel,
    FaultyPrometheus,
    OperatorProcess,
    budget,
    create,
    deployment,
    operators,
    replica_history,
    status_of,
    target,
    wait_cycles,
)

import testclock
from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.faults
NS = "inference"
PRICE = 720.0  # currency/h per replica: 0.2 per replica-second, visible within seconds
REPLICAS = 4
INTERVAL = 5


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_sigkill_and_restart_keeps_spend_and_stabilization(
    apiserver: ApiServerThread, kubeconfig: Path, faulty_prometheus: FaultyPrometheus
) -> None:
    prom = faulty_prometheus
    url = prom.add("chat", Channel(NS, "llama", rate=4000.0))
    create(apiserver, "apps/v1", "deployments", deployment(NS, "llama", REPLICAS))
    # A Day in the test clock's zone: at a "month-end" or "dst-*" instant the period ends
    # while the test runs, and the spend must restart from the new period's start.
    create(apiserver, "tokenscale.dev/v1alpha1", "tokenbudgets", budget(
        # a 600 s cold start: the scale-down is held for the whole 600 s window
        NS, "chat", [target("llama", costPerReplicaHour=PRICE, coldStartSeconds=600)],
        prometheus_url=url, planning={"scaleDownStabilizationSeconds": 600},
        budget={"period": "Day", "timeZone": testclock.current().zone}))

    first = OperatorProcess(kubeconfig, url, instance="first")
    with operators(first):
        wait_for(lambda: status_of(apiserver, NS, "chat").get("spend", {}).get("cost", 0) > 0,
                 timeout=20, message="spend accounted")
        prom.channels["chat"].rate = 1000.0  # demand drops: the need is now 1
        st = wait_for(lambda: (s := status_of(apiserver, NS, "chat"))["targets"][0]["reason"]
                      == "StabilizingScaleDown" and s, timeout=20,
                      message="stabilizing the scale-down")
        assert st["targets"][0]["desiredReplicas"] == REPLICAS
        first.kill()  # SIGKILL, between two writes of the period's spend
    before = status_of(apiserver, NS, "chat")
    spent_before, at_before = before["spend"]["cost"], _time(before["lastReconcileTime"])
    # The entries that hold the scale-down (newer, lower ones are compacted away).
    holding = {(r["time"], r["replicas"]) for r in before["recommendations"]
               if r["replicas"] == REPLICAS}
    assert holding

    with operators(OperatorProcess(kubeconfig, url, instance="second")):
        after = wait_cycles(apiserver, NS, "chat", cycles=1)
        spent_after, at_after = after["spend"]["cost"], _time(after["lastReconcileTime"])
        rate = REPLICAS * PRICE / 3600.0  # currency/s while the replicas stayed at 4
        one_interval = rate * INTERVAL
        if after["period"]["start"] == before["period"]["start"]:
            expected = spent_before + rate * (at_after - at_before)
            assert spent_after >= spent_before  # no reset
        else:  # the day ended in between: the new day's spend counts from its start
            period_start = _time(after["period"]["start"])
            assert at_before <= period_start <= at_after, (before["period"], after["period"])
            expected = rate * (at_after - period_start)
        assert abs(spent_after - expected) <= one_interval, (spent_before, spent_after,
                                                             expected)
        # The restarted operator still knows the recommendation of 4: no scale-down.
        assert after["targets"][0]["reason"] == "StabilizingScaleDown"
        assert after["targets"][0]["desiredReplicas"] == REPLICAS
        assert holding <= {(r["time"], r["replicas"]) for r in after["recommendations"]}
        assert replica_history(apiserver, NS, "llama") == [REPLICAS]
