"""Prices from OpenCost against the real Prometheus.

An exporter in OpenCost's format (``node_gpu_hourly_cost``, ``node_cpu_hourly_cost``,
``node_ram_hourly_cost`` per node, with OpenCost's labels) and kube-state-metrics'
``kube_pod_info`` (which node each pod runs on) is scraped every second; the operator's
batched reads join them (one query per cycle, whatever the number of budgets) and each target
priced by OpenCost gets its replica's requests times its nodes' prices, or the spec's price,
with the reason, when the series are missing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from exposition import exposition, serving
from tokenscale import api
from tokenscale.adapters.kube import ReplicaRequests, Workload
from tokenscale.core.planner import plan
from tokenscale.core.types import Memory
from tokenscale.metrics import OperatorMetrics
from tokenscale.observation import build_observation, priced_spec, replica_prices
from tokenscale.prometheus_reads import PrometheusReads
from tokenscale.registry import BudgetEntry
from tokenscale.settings import OperatorSettings
from tokenscale_testbed.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

NS = "inference"
# node: (GPU/h, vCPU/h, GiB/h); "cpu-only" publishes no GPU price
NODES = {"gpu-a100-1": (3.06, 0.031611, 0.004237), "gpu-a100-2": (2.5, 0.03, 0.004),
         "cpu-only": (None, 0.02, 0.003)}
# pod: node
PODS = {"llama-8b-7d9f8c6b5-x2k4p": "gpu-a100-1", "llama-8b-7d9f8c6b5-q9w8e": "gpu-a100-2",
        "stranded-6c7d8f9b5-bcdfg": "cpu-only", "other-5f6d7c8b9-hjklm": "gpu-a100-1"}


def _opencost() -> list[str]:
    lines = ["# HELP node_gpu_hourly_cost node_gpu_hourly_cost hourly cost for each gpu "
             "on this node", "# TYPE node_gpu_hourly_cost gauge"]
    for node, (gpu, _, _) in NODES.items():
        labels = (f'arch="amd64",instance="{node}",instance_type="p4d.24xlarge",'
                  f'node="{node}",provider_id="aws:///us-east-1a/i-0{len(node)}",'
                  'region="us-east-1"')
        if gpu is not None:
            lines.append(f"node_gpu_hourly_cost{{{labels}}} {gpu}")
    for metric, index in (("node_cpu_hourly_cost", 1), ("node_ram_hourly_cost", 2)):
        lines += [f"# TYPE {metric} gauge"]
        for node, prices in NODES.items():
            labels = f'instance="{node}",instance_type="p4d.24xlarge",node="{node}"'
            lines.append(f"{metric}{{{labels}}} {prices[index]}")
    lines += ["# HELP kube_pod_info Information about pod.", "# TYPE kube_pod_info gauge"]
    for pod, node in PODS.items():
        lines.append(f'kube_pod_info{{namespace="{NS}",pod="{pod}",node="{node}",'
                     f'host_ip="10.0.0.1",pod_ip="10.1.0.2",created_by_kind="ReplicaSet",'
                     f'uid="u-{pod}"}} 1')
    return lines


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with serving(exposition(_opencost)) as address, \
            PrometheusServer(targets=[address], scrape_interval=1.0) as prom:
        prom.wait_for_series("kube_pod_info", timeout=30)
        prom.wait_for_series("node_ram_hourly_cost", timeout=30)
        yield prom


def target(name: str, source: str, price: float = 9.0) -> dict[str, Any]:
    return {"name": name, "scaleTargetRef": {"name": name}, "minReplicas": 1,
            "maxReplicas": 4, "tokensPerReplicaPerSecond": 1000, "costPerReplicaHour": price,
            "costSource": source}


GPU_REPLICA = ReplicaRequests(cpu=8.0, memory_bytes=32 * 2.0 ** 30, gpus=1.0)
WORKLOADS = {
    ("Deployment", "llama-8b"): Workload("Deployment", "llama-8b", 2, 2, GPU_REPLICA),
    ("Deployment", "stranded"): Workload("Deployment", "stranded", 1, 1, GPU_REPLICA),
    ("Deployment", "nothing"): Workload("Deployment", "nothing", 1, 1, ReplicaRequests()),
    ("Deployment", "fixed"): Workload("Deployment", "fixed", 1, 1, GPU_REPLICA),
}


def per_pod(node: str) -> float:
    gpu, cpu, ram = NODES[node]
    assert gpu is not None
    return gpu * 1 + cpu * 8 + ram * 32


async def test_price_per_replica_from_opencost_node_prices(prometheus: PrometheusServer) -> None:
    spec = api.parse_spec({"budget": {"period": "Day", "maxCost": 1000}, "targets": [
        target("llama-8b", "OpenCost"), target("stranded", "OpenCost", 7.0),
        target("nothing", "OpenCost", 5.0), target("fixed", "Spec", 4.0)]})
    entries = [BudgetEntry(namespace=NS, name=f"b{i}", body={}, spec=spec) for i in range(3)]
    settings = OperatorSettings(prometheus_url=prometheus.url, namespaces=[NS],
                                clock_offset_seconds=0.0)
    metrics = OperatorMetrics()
    reads = PrometheusReads(settings, metrics)
    try:
        answers = (await reads.read(entries, time.time()))[prometheus.url]
    finally:
        reads.close()
    # one more query than without OpenCost targets (4 + 2 latency history), for 3 budgets
    asked = sum(metrics.registry.get_sample_value("tokenscale_prometheus_queries_total",
                                                  {"kind": k}) or 0.0
                for k in ("instant", "range"))
    assert asked == 7
    prices = replica_prices(spec, NS, answers, WORKLOADS)

    # two pods on two nodes: the mean of their nodes' prices for 1 GPU, 8 CPU, 32 GiB
    llama = prices["llama-8b"]
    expected = (per_pod("gpu-a100-1") + per_pod("gpu-a100-2")) / 2
    assert llama.source == "OpenCost"
    assert llama.cost_per_replica_hour == pytest.approx(expected, rel=1e-5)
    assert "2 of 2 pod(s)" in llama.detail
    # its node publishes no GPU price: the spec's price, and the missing series named
    assert prices["stranded"].source == "Spec"
    assert prices["stranded"].cost_per_replica_hour == 7.0
    assert "node_gpu_hourly_cost" in prices["stranded"].detail
    # no pod running to place on a node: the spec's price
    assert prices["nothing"].source == "Spec" and prices["nothing"].cost_per_replica_hour == 5.0
    assert prices["fixed"] == api.PriceStatus(source="Spec", cost_per_replica_hour=4.0)

    # the planner charges and plans with the derived price: the cost rate is replicas x it
    priced = priced_spec(spec, prices)
    seen = build_observation(priced, NS, answers, WORKLOADS, [], 120.0)
    result = plan(priced, seen, Memory(), datetime.now(UTC))
    assert result.decisions["llama-8b"].cost_per_hour == pytest.approx(2 * expected, rel=1e-5)
    assert result.spend.cost_per_hour == pytest.approx(2 * expected + 7.0 + 5.0 + 4.0,
                                                       rel=1e-5)


async def test_prices_fall_back_to_the_spec_when_prometheus_has_no_opencost(
    prometheus: PrometheusServer,
) -> None:
    """A namespace whose pods kube_pod_info does not list (as when OpenCost or
    kube-state-metrics is not installed): every OpenCost target keeps its spec's price."""
    spec = api.parse_spec({"budget": {"period": "Day", "maxCost": 1000},
                           "targets": [target("llama-8b", "OpenCost", 6.5)]})
    entry = BudgetEntry(namespace="elsewhere", name="b", body={}, spec=spec)
    settings = OperatorSettings(prometheus_url=prometheus.url, namespaces=["elsewhere"],
                                clock_offset_seconds=0.0)
    reads = PrometheusReads(settings, OperatorMetrics())
    try:
        answers = (await reads.read([entry], time.time()))[prometheus.url]
    finally:
        reads.close()
    price = replica_prices(spec, "elsewhere", answers, WORKLOADS)["llama-8b"]
    assert (price.source, price.cost_per_replica_hour) == ("Spec", 6.5)
    assert "kube_pod_info" in price.detail
