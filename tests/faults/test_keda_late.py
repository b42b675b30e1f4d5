"""KEDA installed while the operator runs: its ScaledObjects are seen as a second autoscaler
once the "no KEDA here" answer is re-checked (the adapter against the emulator)."""

from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import create

from tokenscale.adapters.kube import KubeAdapter, load_client
from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.resources import keda_scaledobject_crd

pytestmark = pytest.mark.faults
NS = "inference"


async def test_keda_installed_later_is_noticed(apiserver: ApiServerThread,
                                               kubeconfig: Path) -> None:
    kube = KubeAdapter(load_client(5.0, kubeconfig=str(kubeconfig)), workers=2,
                       keda_recheck_seconds=0.0)
    remembering = KubeAdapter(load_client(5.0, kubeconfig=str(kubeconfig)), workers=2)
    try:
        assert await kube.list_autoscalers(NS) == []  # 404: no KEDA in this cluster
        assert await remembering.list_autoscalers(NS) == []
        create(apiserver, "apiextensions.k8s.io/v1", "customresourcedefinitions",
               keda_scaledobject_crd())
        create(apiserver, "keda.sh/v1alpha1", "scaledobjects", {
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "llama", "namespace": NS},
            "spec": {"scaleTargetRef": {"name": "llama"}}})
        found = await kube.list_autoscalers(NS)
        assert [(a.kind, a.target_kind, a.target_name) for a in found] == [
            ("ScaledObject", "Deployment", "llama")]
        # With the default re-check interval (300 s) the 404 is still remembered.
        assert await remembering.list_autoscalers(NS) == []
    finally:
        kube.close()
        remembering.close()
