"""The informer cache of workloads and autoscalers against the API emulator: a paged list,
then the watch; only the namespaces kept; a relist when the watch's version has expired."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

import objects
from tokenscale.adapters.informer import PAGE_SIZE, WorkloadCache
from tokenscale.adapters.kube import Autoscaler, Workload, load_client
from tokenscale.crd import crd
from tokenscale_testbed.apiserver import ApiServer, ApiServerThread, write_kubeconfig
from tokenscale_testbed.waiting import wait_for
from tokenscale_testbed.watch import end_watches

pytestmark = pytest.mark.integration
LIST = "/apis/apps/v1/deployments"


@pytest.fixture
def small_history() -> Iterator[ApiServerThread]:
    """An emulator whose watch history keeps only 20 events per resource."""
    with ApiServerThread(crds=[crd()], namespaces=["default", "kept", "other"],
                         watch_history=20) as srv:
        yield srv


def _create(server: ApiServer, namespace: str, names: list[str]) -> None:
    for name in names:
        server.create_object("apps/v1", "deployments", objects.deployment(namespace, name, 1))


def test_the_cache_pages_its_list_then_follows_the_watch(
    small_history: ApiServerThread, tmp_path: Path
) -> None:
    api = small_history
    many = PAGE_SIZE + 100  # two pages
    api.call(lambda s: _create(s, "kept", [f"m{i:04d}" for i in range(many)]), timeout=60)
    api.call(lambda s: _create(s, "other", ["elsewhere"]))
    client = load_client(5.0, kubeconfig=str(write_kubeconfig(tmp_path / "kc", api.url)))
    cache = WorkloadCache(client, [], keep=lambda ns: ns != "other").start()
    try:
        wait_for(lambda: cache.read("kept", {"Deployment"}) is not None, timeout=20,
                 message="the informers to sync")
        found = cache.read("kept", {"Deployment"})
        assert found is not None
        workloads, autoscalers = found
        assert len(workloads) == many and autoscalers == []  # no KEDA here: none
        assert workloads[("Deployment", "m0007")] == Workload("Deployment", "m0007", 1, 0)
        assert cache.read("other", {"Deployment"}) == ({}, [])  # another shard's: not kept
        assert api.call(lambda s: s.request_count("GET", LIST + "$")) >= 2  # paged list

        apps = kubernetes.client.AppsV1Api(client)
        apps.patch_namespaced_deployment_scale("m0007", "kept", {"spec": {"replicas": 3}})
        apps.delete_namespaced_deployment("m0008", "kept")
        kubernetes.client.AutoscalingV2Api(client).create_namespaced_horizontal_pod_autoscaler(
            "kept", {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                     "metadata": {"name": "hpa"},
                     "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": "m0009"},
                              "minReplicas": 1, "maxReplicas": 3}})

        def followed() -> bool:
            got = cache.read("kept", {"Deployment"})
            return bool(got and got[0][("Deployment", "m0007")].replicas == 3
                        and ("Deployment", "m0008") not in got[0] and got[1])

        wait_for(followed, timeout=10, message="the watch's changes in the cache")
        found = cache.read("kept", {"Deployment"})
        assert found is not None and found[1] == [
            Autoscaler("HorizontalPodAutoscaler", "hpa", "Deployment", "m0009")]
        lists = cache.workloads["Deployment"][0].lists
        assert lists == 1  # followed, not listed again

        # The watch ends while more changes happen than the history keeps: 410, list again.
        def cut(s: ApiServer) -> None:
            end_watches(s.store.resources.values())
            _create(s, "kept", [f"late{i}" for i in range(30)])

        api.call(cut)
        wait_for(lambda: (got := cache.read("kept", {"Deployment"})) is not None
                 and ("Deployment", "late29") in got[0], timeout=20,
                 message="a relist after the expired watch")
        assert cache.workloads["Deployment"][0].lists == 2
    finally:
        cache.stop()
        client.close()  # type: ignore[no-untyped-call]
