"""Kubernetes adapter: workloads and their scale subresource, autoscaler lookups, Events,
and TokenBudget status patches.

Built on the official ``kubernetes`` client (synchronous) run in a bounded thread pool, with
raw JSON answers (``_preload_content=False``) so nothing is lost or slowed by model
deserialisation. All writes are JSON merge patches (RFC 7386), which every API server
accepts for built-in kinds, their scale subresource and custom resources alike.

Transient answers (409 Conflict, 429 TooManyRequests, 500/502/503/504, refused
connections) are retried with exponential backoff (``retry_backoff_seconds`` doubling, at
most ``attempts`` tries, a 429's Retry-After honoured up to 5 s). Retrying is safe: every
write sets absolute values (replicas, status fields) without a resourceVersion, so a repeat
can never add a second step; a request that timed out is not repeated (the next cycle will).
Nothing here sets ownerReferences: deleting a TokenBudget leaves the workloads as they are.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException

from tokenscale import api

T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"
_KINDS = {"Deployment": "deployments", "StatefulSet": "statefulsets"}
#: HTTP statuses worth another try (0: the connection failed before an answer).
RETRYABLE = frozenset({0, 409, 429, 500, 502, 503, 504})
#: Upper bound of one backoff pause (s), Retry-After included.
MAX_BACKOFF_SECONDS = 5.0


class KubeError(Exception):
    """A failed Kubernetes API call; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, reason: str, retry_after: float | None = None,
                 timed_out: bool = False):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after  # seconds the server asked to wait (429), if any
        self.timed_out = timed_out

    @property
    def transient(self) -> bool:
        """Worth retrying: a conflict, throttling, a server error or a refused connection."""
        return self.status in RETRYABLE and not self.timed_out


@dataclass(frozen=True)
class ReplicaRequests:
    """What one replica (pod) requests: CPU cores, memory bytes and GPUs, summed over the
    pod template's containers (GPUs: ``nvidia.com/gpu``, ``amd.com/gpu`` or
    ``gpu.intel.com/i915``, from requests, else limits, as extended resources allow)."""

    cpu: float = 0.0
    memory_bytes: float = 0.0
    gpus: float = 0.0


@dataclass(frozen=True)
class Workload:
    """Replica counts of a Deployment or StatefulSet, and what one replica requests."""

    kind: str
    name: str
    replicas: int  # spec.replicas (what the scale subresource reports)
    ready_replicas: int  # status.readyReplicas
    requests: ReplicaRequests = ReplicaRequests()


GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915")
_SUFFIXES = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
             "E": 1e18, "Ki": 2.0 ** 10, "Mi": 2.0 ** 20, "Gi": 2.0 ** 30, "Ti": 2.0 ** 40,
             "Pi": 2.0 ** 50, "Ei": 2.0 ** 60}
_QUANTITY = re.compile(r"^([+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def parse_quantity(raw: object) -> float:
    """A Kubernetes resource quantity (``500m``, ``4``, ``16Gi``, ``1e3``) as a number; 0 for
    anything unreadable."""
    match = _QUANTITY.match(str(raw).strip())
    if match is None:
        return 0.0
    try:
        return float(match.group(1)) * _SUFFIXES[match.group(2) or ""]
    except ValueError:
        return 0.0


def replica_requests(template: Any) -> ReplicaRequests:
    """What one pod of ``template`` (a pod template) requests (see :class:`ReplicaRequests`);
    init containers are left out."""
    spec = template.get("spec") if isinstance(template, dict) else None
    if not isinstance(spec, dict):
        return ReplicaRequests()
    cpu = memory = gpus = 0.0
    for container in spec.get("containers") or []:
        resources = (container or {}).get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        cpu += parse_quantity(requests.get("cpu", limits.get("cpu", 0)))
        memory += parse_quantity(requests.get("memory", limits.get("memory", 0)))
        for name in GPU_RESOURCES:
            gpus += parse_quantity(requests.get(name, limits.get(name, 0)))
    return ReplicaRequests(cpu, memory, gpus)


@dataclass(frozen=True)
class Autoscaler:
    """Another autoscaler and the workload it scales."""

    kind: str  # HorizontalPodAutoscaler | ScaledObject
    name: str
    target_kind: str
    target_name: str

    def describe(self) -> str:
        """e.g. ``HorizontalPodAutoscaler llama-8b``."""
        return f"{self.kind} {self.name}"


def workload_of(kind: str, item: dict[str, Any]) -> Workload:
    """The replica counts of a Deployment or StatefulSet object (``kind``) and what one
    replica requests."""
    spec = item.get("spec") or {}
    replicas = spec.get("replicas")
    return Workload(
        kind=kind,
        name=str((item.get("metadata") or {}).get("name", "")),
        replicas=int(replicas) if replicas is not None else 1,
        ready_replicas=int((item.get("status") or {}).get("readyReplicas") or 0),
        requests=replica_requests(spec.get("template")),
    )


def autoscaler_of(kind: str, item: dict[str, Any]) -> Autoscaler:
    """An HPA or KEDA ScaledObject (``kind``) and the workload it scales (a ScaledObject's
    default kind is Deployment)."""
    ref = (item.get("spec") or {}).get("scaleTargetRef") or {}
    default_kind = "Deployment" if kind == "ScaledObject" else ""
    return Autoscaler(kind, str((item.get("metadata") or {}).get("name", "")),
                      str(ref.get("kind") or default_kind), str(ref.get("name", "")))


def load_client(
    timeout_seconds: float = 10.0, kubeconfig: str | None = None
) -> kubernetes.client.ApiClient:
    """An API client from the in-cluster service account, else from the kubeconfig
    (``kubeconfig``, else ``$KUBECONFIG`` read now, else ``~/.kube/config``)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    except kubernetes.config.ConfigException:
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=configuration
        )
    configuration.retries = 0
    client = kubernetes.client.ApiClient(configuration)
    client.user_agent = "tokenscale-operator"
    return client


def _rfc3339(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeAdapter:
    """Async facade over the Kubernetes API calls the operator makes."""

    def __init__(
        self,
        client: kubernetes.client.ApiClient,
        workers: int = 8,
        timeout_seconds: float = 10.0,
        instance: str = "",
        attempts: int = 4,
        retry_backoff_seconds: float = 0.2,
        keda_recheck_seconds: float = 300.0,
    ):
        self._client = client
        self._apps = kubernetes.client.AppsV1Api(client)
        self._core = kubernetes.client.CoreV1Api(client)
        self._autoscaling = kubernetes.client.AutoscalingV2Api(client)
        self._custom = kubernetes.client.CustomObjectsApi(client)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")
        self._timeout = timeout_seconds
        self._instance = instance or socket.gethostname()
        self._keda_absent_until = 0.0  # monotonic time before which KEDA is known absent
        self._keda_recheck = keda_recheck_seconds
        self._attempts = max(1, attempts)
        self._backoff = retry_backoff_seconds
        self.retries = 0  # transient failures retried so far

    def close(self) -> None:
        """Stop the thread pool and close connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()  # type: ignore[no-untyped-call]

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self._timeout)
        kwargs.setdefault("_preload_content", False)

        def run() -> Any:
            try:
                response = fn(*args, **kwargs)
            except ApiException as exc:
                raise KubeError(int(exc.status or 0), _api_reason(exc),
                                retry_after=_retry_after(exc)) from None
            except Exception as exc:  # connection refused, timeouts, TLS
                name = type(exc).__name__
                raise KubeError(0, f"{name}: {exc}",
                                timed_out="Timeout" in name or "timed out" in str(exc)) from None
            data = response.data
            return json.loads(data) if data else {}

        loop = asyncio.get_running_loop()
        for attempt in range(self._attempts):
            try:
                return await loop.run_in_executor(self._pool, run)
            except KubeError as exc:
                if not exc.transient or attempt + 1 >= self._attempts:
                    raise
                self.retries += 1
                pause = self._backoff * 2**attempt * random.uniform(1.0, 1.25)
                if exc.retry_after is not None:
                    pause = max(pause, exc.retry_after)
                await asyncio.sleep(min(pause, MAX_BACKOFF_SECONDS))
        raise AssertionError("unreachable")  # pragma: no cover

    # ---------------------------------------------------------------------- workloads

    async def list_workloads(self, namespace: str, kind: str) -> dict[str, Workload]:
        """All Deployments (or StatefulSets) of a namespace by name (one LIST call)."""
        fn = (
            self._apps.list_namespaced_deployment
            if kind == "Deployment"
            else self._apps.list_namespaced_stateful_set
        )
        answer = await self._call(fn, namespace)
        listed = [workload_of(kind, item) for item in answer.get("items") or []]
        return {w.name: w for w in listed}

    async def read_scale(self, namespace: str, kind: str, name: str) -> int:
        """spec.replicas from the workload's scale subresource (autoscaling/v1 Scale)."""
        fn = (
            self._apps.read_namespaced_deployment_scale
            if kind == "Deployment"
            else self._apps.read_namespaced_stateful_set_scale
        )
        answer = await self._call(fn, name, namespace)
        return int((answer.get("spec") or {}).get("replicas") or 0)

    async def patch_scale(self, namespace: str, kind: str, name: str, replicas: int) -> int:
        """Set spec.replicas through the scale subresource; returns the answered value."""
        fn = (
            self._apps.patch_namespaced_deployment_scale
            if kind == "Deployment"
            else self._apps.patch_namespaced_stateful_set_scale
        )
        body = {"spec": {"replicas": int(replicas)}}
        answer = await self._call(fn, name, namespace, body, _content_type=MERGE_PATCH)
        return int((answer.get("spec") or {}).get("replicas", replicas))

    # -------------------------------------------------------------------- autoscalers

    async def list_autoscalers(self, namespace: str) -> list[Autoscaler]:
        """HPAs (autoscaling/v2) and KEDA ScaledObjects of a namespace.

        A cluster without KEDA answers 404 for ScaledObjects: that is "none", remembered for
        ``keda_recheck_seconds`` so the lookup is not repeated every cycle, then asked again
        (KEDA installed while the operator runs is seen within that time).
        """
        found: list[Autoscaler] = []
        try:
            hpas = await self._call(
                self._autoscaling.list_namespaced_horizontal_pod_autoscaler, namespace
            )
        except KubeError as exc:
            if exc.status != 404:
                raise
            hpas = {}
        found.extend(autoscaler_of("HorizontalPodAutoscaler", i) for i in hpas.get("items") or [])
        if time.monotonic() >= self._keda_absent_until:
            try:
                scaled = await self._call(
                    self._custom.list_namespaced_custom_object,
                    "keda.sh", "v1alpha1", namespace, "scaledobjects",
                )
            except KubeError as exc:
                if exc.status != 404:
                    raise
                self._keda_absent_until = time.monotonic() + self._keda_recheck
                scaled = {}
            found.extend(autoscaler_of("ScaledObject", i) for i in scaled.get("items") or [])
        return found

    # ------------------------------------------------------------------ TokenBudgets

    async def patch_budget_status(
        self, namespace: str, name: str, status_patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status subresource of a TokenBudget; returns the object."""
        answer: dict[str, Any] = await self._call(
            self._custom.patch_namespaced_custom_object_status,
            api.GROUP, api.VERSION, namespace, api.PLURAL, name,
            {"status": status_patch},
            _content_type=MERGE_PATCH,
        )
        return answer

    async def get_budget(self, namespace: str, name: str) -> dict[str, Any]:
        """Read one TokenBudget."""
        answer: dict[str, Any] = await self._call(
            self._custom.get_namespaced_custom_object,
            api.GROUP, api.VERSION, namespace, api.PLURAL, name,
        )
        return answer

    # ------------------------------------------------------------------------- events

    async def post_event(
        self,
        involved: dict[str, Any],
        reason: str,
        message: str,
        type_: str = "Normal",
        now: datetime | None = None,
    ) -> None:
        """Create a core/v1 Event about ``involved`` (see :func:`event_body`)."""
        body = event_body(involved, reason, message, type_, now or datetime.now(UTC),
                          self._instance)
        await self._call(self._core.create_namespaced_event, body["metadata"]["namespace"],
                         body)


def event_body(
    involved: dict[str, Any], reason: str, message: str, type_: str, now: datetime,
    instance: str,
) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` (an object with apiVersion, kind and
    metadata.name/namespace/uid), as the API server accepts it."""
    meta = involved.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    stamp = _rfc3339(now)
    ref = {
        "apiVersion": involved.get("apiVersion", f"{api.GROUP}/{api.VERSION}"),
        "kind": involved.get("kind", api.KIND),
        "name": meta.get("name", ""),
        "namespace": namespace,
    }
    if meta.get("uid"):
        ref["uid"] = meta["uid"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name', 'tokenbudget')}.{uuid.uuid4().hex[:16]}",
            "namespace": namespace,
        },
        "involvedObject": ref,
        "reason": reason[:128],
        "message": message[:1024],
        "type": type_,
        "source": {"component": "tokenscale"},
        "reportingComponent": "tokenscale.dev/operator",
        "reportingInstance": instance[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def _retry_after(exc: ApiException) -> float | None:
    """The Retry-After header of an answer in seconds, if there is a usable one."""
    headers = exc.headers or {}
    raw = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def _api_reason(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)
