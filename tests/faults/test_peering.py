"""Two operator replicas with kopf peering: exactly one acts; SIGKILL the active one and the
other takes over, continuing the spend."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
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

from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.faults
NS = "inference"
ROOT = Path(__file__).resolve().parents[2]


def _events_by(apiserver: ApiServerThread) -> set[str]:
    events = apiserver.call(lambda s: s.list_objects("v1", "events", NS))
    return {e.get("reportingInstance", "") for e in events
            if e.get("source", {}).get("component") == "tokenscale"}


def test_one_replica_acts_and_the_other_takes_over_after_sigkill(
    apiserver: ApiServerThread, kubeconfig: Path, faulty_prometheus: FaultyPrometheus
) -> None:
    peering_crd = yaml.safe_load((ROOT / "crds" / "clusterkopfpeerings.kopf.dev.yaml").read_text())
    create(apiserver, "apiextensions.k8s.io/v1", "customresourcedefinitions", peering_crd)
    create(apiserver, "kopf.dev/v1", "clusterkopfpeerings",
           {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
            "metadata": {"name": "tokenscale"}})
    prom = faulty_prometheus
    url = prom.add("chat", Channel(NS, "llama", rate=4000.0))
    create(apiserver, "apps/v1", "deployments", deployment(NS, "llama", 2))
    create(apiserver, "tokenscale.dev/v1alpha1", "tokenbudgets",
           budget(NS, "chat", [target("llama", costPerReplicaHour=720.0)], prometheus_url=url))

    common = {"peering_name": "tokenscale", "peering_lifetime_seconds": "6"}
    high = OperatorProcess(kubeconfig, url, instance="high", peering_priority="200", **common)
    low = OperatorProcess(kubeconfig, url, instance="low", peering_priority="100", **common)
    with operators(high, low):  # high first: it is the only actor from the start
        wait_for(lambda: replica_history(apiserver, NS, "llama")[-1] == 4, timeout=30,
                 message="the budget served (2 -> 4)")
        wait_cycles(apiserver, NS, "chat", cycles=1)
        # Exactly one operator patched: scale, status and events all come from "high".
        assert high.metric("tokenscale_scale_actions_total") == 1
        assert high.metric("tokenscale_status_patches_total", outcome="sent") >= 1
        assert low.metric("tokenscale_scale_actions_total") == 0
        assert low.metric("tokenscale_status_patches_total", outcome="sent") == 0
        assert low.metric("tokenscale_cycles_total") == 0
        assert _events_by(apiserver) == {"high"}
        first = status_of(apiserver, NS, "chat")

        high.kill()  # SIGKILL: its peering record stays until its lifetime runs out
        prom.channels["chat"].rate = 6000.0  # now needs 6: only a live actor gets there
        wait_for(lambda: replica_history(apiserver, NS, "llama")[-1] == 6, timeout=40,
                 message="the standby replica to take over")
        assert low.metric("tokenscale_scale_actions_total") == 1
        # Events follow the status write of the same cycle: await them, do not race them.
        wait_for(lambda: "low" in _events_by(apiserver), timeout=15,
                 message="the standby replica's scale Event")
        after = wait_cycles(apiserver, NS, "chat", cycles=1)
        if after["period"] == first["period"]:  # continued, not restarted from zero
            assert after["spend"]["cost"] > first["spend"]["cost"]
        else:  # the test clock crossed the period's end: the new one has its own spend
            assert after["period"]["start"] > first["period"]["start"]
            assert after["spend"]["cost"] > 0
        assert replica_history(apiserver, NS, "llama") == [2, 4, 6]
