"""The LIST of workloads refused (403, e.g. RBAC missing): a condition says why nothing is
planned, nothing is scaled, spend is left as it was; planning resumes when it is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import (
    Channel,
    FaultyPrometheus,
    OperatorProcess,
    budget,
    condition,
    create,
    deployment,
    operators,
    replica_history,
    scale_patches,
    status_of,
    target,
)

from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.faults
NS = "inference"


def test_forbidden_workload_list_is_reported_and_scales_nothing(
    apiserver: ApiServerThread, kubeconfig: Path, faulty_prometheus: FaultyPrometheus
) -> None:
    url = faulty_prometheus.add("chat", Channel(NS, "llama", rate=1000.0))  # needs 1
    create(apiserver, "apps/v1", "deployments", deployment(NS, "llama", 3))
    create(apiserver, "tokenscale.dev/v1alpha1", "tokenbudgets",
           budget(NS, "chat", [target("llama")], prometheus_url=url))
    apiserver.call(lambda s: s.inject_fault(
        "GET", f"/apis/apps/v1/(namespaces/{NS}/)?deployments$", 403, times=10_000,
        message='deployments.apps is forbidden: User "system:serviceaccount:tokenscale-system'
                ':tokenscale" cannot list resource "deployments"'))
    with operators(OperatorProcess(kubeconfig, url)) as (op,):
        st = wait_for(lambda: (s := status_of(apiserver, NS, "chat")).get("phase") and s,
                      timeout=20, message="a status despite the 403")
        ready = condition(st, "Ready")
        assert (st["phase"], ready["status"], ready["reason"]) == (
            "Degraded", "False", "WorkloadsUnreadable")
        assert "403" in ready["message"] and "forbidden" in ready["message"]
        assert "spend" not in st and "lastReconcileTime" not in st  # nothing invented
        assert scale_patches(apiserver, NS, "llama") == 0
        assert op.alive

        apiserver.call(lambda s: s.clear_faults())
        wait_for(lambda: condition(status_of(apiserver, NS, "chat"), "Ready").get("status")
                 == "True", timeout=20, message="planning to resume")
        wait_for(lambda: replica_history(apiserver, NS, "llama")[-1] == 1, timeout=10,
                 message="the demand-driven scale-down once allowed")
        assert replica_history(apiserver, NS, "llama") == [3, 1]
