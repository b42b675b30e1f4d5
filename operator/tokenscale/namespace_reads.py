"""One cycle's Kubernetes reads of workloads and autoscalers, per namespace of the due budgets.

From the watch-based cache (:class:`tokenscale.adapters.informer.WorkloadCache`, no request)
where its informers have synced; else one set of LISTs per namespace: one LIST per workload
kind the due budgets scale (Deployments, StatefulSets only if used) and one LIST of other
autoscalers (HPAs and KEDA ScaledObjects). A failed LIST is kept as its :class:`KubeError`,
so the budgets of that namespace can say why they were not planned.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tokenscale.adapters.informer import WorkloadCache
from tokenscale.adapters.kube import Autoscaler, KubeAdapter, KubeError, Workload
from tokenscale.registry import BudgetEntry

#: Workloads of one namespace by (kind, name).
Workloads = dict[tuple[str, str], Workload]


@dataclass
class NamespaceState:
    """The workloads and the other autoscalers of one namespace (or why they are unknown)."""

    workloads: Workloads | KubeError
    autoscalers: list[Autoscaler] | KubeError


def kinds_by_namespace(due: list[BudgetEntry]) -> dict[str, set[str]]:
    """The workload kinds the ``due`` budgets scale, per namespace."""
    kinds: dict[str, set[str]] = {}
    for entry in due:
        assert entry.spec is not None
        for t in entry.spec.targets:
            kinds.setdefault(entry.namespace, set()).add(t.scale_target_ref.kind)
    return kinds


async def read_namespace(kube: KubeAdapter, namespace: str, kinds: set[str]) -> NamespaceState:
    """The workloads of ``kinds`` and the autoscalers of one namespace."""
    workloads: Workloads | KubeError = {}
    try:
        for kind in sorted(kinds):
            listed = await kube.list_workloads(namespace, kind)
            assert isinstance(workloads, dict)
            workloads.update({(kind, name): w for name, w in listed.items()})
    except KubeError as exc:
        workloads = exc
    try:
        autoscalers: list[Autoscaler] | KubeError = await kube.list_autoscalers(namespace)
    except KubeError as exc:
        autoscalers = exc
    return NamespaceState(workloads, autoscalers)


async def read_namespaces(
    kube: KubeAdapter, due: list[BudgetEntry], cache: WorkloadCache | None = None
) -> dict[str, NamespaceState]:
    """The state of every namespace with a ``due`` budget: from ``cache`` where it can
    answer, the others LISTed concurrently."""
    kinds = kinds_by_namespace(due)
    out: dict[str, NamespaceState] = {}
    if cache is not None:
        for ns, k in kinds.items():
            cached = cache.read(ns, k)
            if cached is not None:
                out[ns] = NamespaceState(*cached)
    rest = [ns for ns in kinds if ns not in out]
    states = await asyncio.gather(*(read_namespace(kube, ns, kinds[ns]) for ns in rest))
    out.update(zip(rest, states, strict=True))
    return out
