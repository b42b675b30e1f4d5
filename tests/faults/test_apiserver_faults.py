"""API server answering 409/429/500 on scale and status writes: retried with backoff, never a
double step, never a lost status update."""

from __future__ import annotations

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
    scale_patches,
    status_of,
    target,
    wait_cycles,
)

from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.faults
NS = "inference"


def _events(apiserver: ApiServerThread, reason: str, name: str) -> list[dict[str, object]]:
    events = apiserver.call(lambda s: s.list_objects("v1", "events", NS))
    return [e for e in events
            if e.get("reason") == reason and e["involvedObject"]["name"] == name]


def test_transient_write_failures_are_retried_without_double_steps(
    apiserver: ApiServerThread, kubeconfig: Path, faulty_prometheus: FaultyPrometheus
) -> None:
    prom = faulty_prometheus
    # Demand 6,000 tok/s at 1,000 per replica: 2 -> 6 in one step (scale-up limit 2 + 4).
    for name in ("llama", "mistral"):
        url = prom.add(name, Channel(NS, name, rate=6000.0))
        create(apiserver, "apps/v1", "deployments", deployment(NS, name, 2))
        create(apiserver, "tokenscale.dev/v1alpha1", "tokenbudgets",
               budget(NS, name, [target(name)], prometheus_url=url))

    def inject(method: str, path: str, status: int, times: int) -> None:
        apiserver.call(lambda s: s.inject_fault(method, path, status, times))

    llama_scale = f"/namespaces/{NS}/deployments/llama/scale$"
    llama_status = f"/namespaces/{NS}/tokenbudgets/llama/status$"
    mistral_scale = f"/namespaces/{NS}/deployments/mistral/scale$"
    # llama: one of each on its scale and status writes -> absorbed by the retries.
    for status in (409, 429, 500):
        inject("PATCH", llama_scale, status, 1)
        inject("PATCH", llama_status, status, 1)
    # mistral: 500 for longer than one cycle's retries -> the next cycle scales it, once.
    inject("PATCH", mistral_scale, 500, 6)

    with operators(OperatorProcess(kubeconfig, prom.url("llama"))) as (op,):
        wait_for(lambda: replica_history(apiserver, NS, "llama")[-1] == 6, timeout=20,
                 message="llama scaled despite 409, 429, 500")
        wait_for(lambda: replica_history(apiserver, NS, "mistral")[-1] == 6, timeout=30,
                 message="mistral scaled once the API server recovered")
        wait_cycles(apiserver, NS, "mistral", cycles=1)  # one more cycle of both

        # Exactly one step each; no request beyond the failed ones and one success.
        assert replica_history(apiserver, NS, "llama") == [2, 6]
        assert replica_history(apiserver, NS, "mistral") == [2, 6]
        assert scale_patches(apiserver, NS, "llama") == 4
        assert scale_patches(apiserver, NS, "mistral") == 7
        assert len(_events(apiserver, "Scaled", "llama")) == 1
        assert not _events(apiserver, "ScaleFailed", "llama")
        assert len(_events(apiserver, "Scaled", "mistral")) == 1
        assert len(_events(apiserver, "ScaleFailed", "mistral")) >= 1

        # No status update lost: the failed writes were repeated and nothing was dropped.
        st = status_of(apiserver, NS, "llama")
        assert st["targets"][0]["desiredReplicas"] == 6
        assert st["targets"][0]["lastScaleTime"] == st["lastScaleTime"]
        assert op.metric("tokenscale_status_patches_total", outcome="failed") == 0
        assert op.metric("tokenscale_scale_errors_total") >= 1  # mistral's first cycle
        assert op.alive
