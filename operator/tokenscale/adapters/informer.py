"""Watch-based caches of the workloads and autoscalers the cycles read (informers).

A cycle needs, per namespace of a due budget, the replica counts of its Deployments (and
StatefulSets) and the HPAs and KEDA ScaledObjects that would conflict. Listing them per
namespace and cycle costs API requests that grow with the namespaces (2 per namespace and
cycle); an :class:`Informer` instead lists a resource once (in pages of
:data:`PAGE_SIZE`) and then follows its watch, keeping only a small summary of each object
(:func:`tokenscale.adapters.kube.workload_of` / ``autoscaler_of``) and only for the
namespaces the operator serves (``keep``: its shard, :mod:`tokenscale.sharding`). A cycle
then reads memory, and makes no request at all for its workloads.

Each informer runs on its own daemon thread with the synchronous Kubernetes client: list,
then watch from the list's resourceVersion (bookmarks keep it fresh; a watch ends after
:data:`WATCH_SECONDS` and is reopened from the last version), list again after a 410 Gone or
a broken stream. It counts as *synced* from its first complete list until a list fails (then
the cycles fall back to LISTs per namespace, :mod:`tokenscale.namespace_reads`, and report
what those answer). A resource the API server does not serve (404: no KEDA installed) syncs
as empty and is asked again every :data:`ABSENT_RECHECK_SECONDS`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from tokenscale.adapters.kube import Autoscaler, Workload, autoscaler_of, workload_of

log = logging.getLogger("tokenscale")
T = TypeVar("T")

#: Objects per LIST page (API servers cap the memory of a list this way, and so do we).
PAGE_SIZE = 500
#: Server-side timeout of one watch request (s); it is reopened from the last version.
WATCH_SECONDS = 300
#: Pause before listing again after a failure (s).
RETRY_SECONDS = 5.0
#: How often a resource the API server does not serve is asked for again (s).
ABSENT_RECHECK_SECONDS = 300.0


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class Informer(Generic[T]):
    """One resource, cluster-wide or in one namespace: list + watch on a daemon thread.

    ``lister(**kwargs)`` is the client's list call (``watch``, ``resource_version``, ``limit``,
    ``_continue`` ... are passed through); ``summarize(obj)`` keeps what the cycles need;
    ``keep(namespace)`` decides which namespaces are kept at all.
    """

    def __init__(self, name: str, lister: Callable[..., Any], summarize: Callable[[Any], T],
                 keep: Callable[[str], bool], request_timeout: float = 10.0) -> None:
        self.name = name
        self._lister = lister
        self._summarize = summarize
        self._keep = keep
        self._timeout = request_timeout
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, T]] = {}
        self._synced = False
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"informer-{name}", daemon=True)
        self.lists = 0  # complete lists so far (first sync and every relist)

    @property
    def synced(self) -> bool:
        """Whether the cache reflects a complete list (and the watch since)."""
        return self._synced

    def start(self) -> Informer[T]:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following the watch (the thread ends at its next read)."""
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # unblocks the thread reading it
                response.shutdown()

    def namespace(self, namespace: str) -> dict[str, T]:
        """A copy of the summaries of one namespace, by object name."""
        with self._lock:
            return dict(self._objects.get(namespace, {}))

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._list()
                while not self._stop.is_set():
                    version = self._watch(version)
            except _Gone:
                continue  # list again at once
            except ApiException as exc:
                if exc.status == 404:  # not served here (no KEDA): none, ask again later
                    with self._lock:
                        self._objects = {}
                    self._synced = True
                    self._stop.wait(ABSENT_RECHECK_SECONDS)
                    continue
                self._failed(exc)
            except Exception as exc:  # connection errors of any kind
                self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        if self._stop.is_set():
            return
        log.warning("informer %s: %s: %s; listing again in %gs", self.name,
                    type(exc).__name__, str(exc)[:300], RETRY_SECONDS)
        self._stop.wait(RETRY_SECONDS)

    def _list(self) -> str:
        """A complete list in pages; replaces the cache; returns its resourceVersion."""
        objects: dict[str, dict[str, T]] = {}
        token: str | None = None
        version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE_SIZE}
            if token:
                kwargs["_continue"] = token
            try:
                response = self._lister(_preload_content=False,
                                        _request_timeout=self._timeout * 3, **kwargs)
                page = json.loads(response.data)
            except ApiException:
                self._synced = False  # the cycles read LISTs and report what they answer
                raise
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            for item in page.get("items") or []:
                self._put(objects, item)
            token = meta.get("continue")
            if not token:
                break
        with self._lock:
            self._objects = objects
        if not self._synced:
            log.info("informer %s: synced (%d namespaces)", self.name, len(objects))
        self._synced = True
        self.lists += 1
        return version

    def _watch(self, version: str) -> str:
        """Follow the watch from ``version`` until it ends; returns the last version seen."""
        self._response = self._lister(
            watch=True, resource_version=version, allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS, _preload_content=False,
            _request_timeout=(self._timeout, WATCH_SECONDS + 30))
        try:
            for line in iter_resp_lines(self._response):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise RuntimeError(f"watch error: {str(obj.get('message'))[:200]}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                with self._lock:
                    if kind == "DELETED":
                        self._drop(obj)
                    else:
                        self._put(self._objects, obj)
        finally:
            self._response.close()
            self._response = None
        return version

    def _put(self, objects: dict[str, dict[str, T]], obj: Any) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        if self._keep(namespace):
            objects.setdefault(namespace, {})[name] = self._summarize(obj)

    def _drop(self, obj: Any) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        members = self._objects.get(namespace)
        if members is not None:
            members.pop(name, None)
            if not members:
                del self._objects[namespace]


class WorkloadCache:
    """Informers of Deployments, StatefulSets, HPAs and KEDA ScaledObjects: cluster-wide, or
    per namespace of ``namespaces`` (an operator restricted to a namespace list may have no
    cluster-wide grants). ``keep`` filters the namespaces kept (a shard's own)."""

    KINDS = ("Deployment", "StatefulSet")

    def __init__(self, client: kubernetes.client.ApiClient, namespaces: list[str],
                 keep: Callable[[str], bool], request_timeout: float = 10.0) -> None:
        apps = kubernetes.client.AppsV1Api(client)
        autoscaling = kubernetes.client.AutoscalingV2Api(client)
        custom = kubernetes.client.CustomObjectsApi(client)
        scopes: list[str | None] = list(namespaces) or [None]
        self._scoped = bool(namespaces)

        def lister(cluster: Callable[..., Any], namespaced: Callable[..., Any],
                   namespace: str | None) -> Callable[..., Any]:
            return (functools.partial(cluster) if namespace is None
                    else functools.partial(namespaced, namespace))

        def informer(name: str, namespace: str | None, cluster: Callable[..., Any],
                     namespaced: Callable[..., Any], summarize: Callable[[Any], T]
                     ) -> Informer[T]:
            return Informer(f"{name}{'/' + namespace if namespace else ''}",
                            lister(cluster, namespaced, namespace), summarize, keep,
                            request_timeout)

        keda = ("keda.sh", "v1alpha1")
        self.workloads: dict[str, list[Informer[Workload]]] = {
            "Deployment": [informer(
                "deployments", ns, apps.list_deployment_for_all_namespaces,
                apps.list_namespaced_deployment, functools.partial(workload_of, "Deployment"))
                for ns in scopes],
            "StatefulSet": [informer(
                "statefulsets", ns, apps.list_stateful_set_for_all_namespaces,
                apps.list_namespaced_stateful_set,
                functools.partial(workload_of, "StatefulSet")) for ns in scopes],
        }
        self.autoscalers: list[Informer[Autoscaler]] = [
            *(informer("horizontalpodautoscalers", ns,
                       autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces,
                       autoscaling.list_namespaced_horizontal_pod_autoscaler,
                       functools.partial(autoscaler_of, "HorizontalPodAutoscaler"))
              for ns in scopes),
            *(informer("scaledobjects", ns,
                       functools.partial(custom.list_cluster_custom_object, *keda,
                                         "scaledobjects"),
                       lambda n, **kw: custom.list_namespaced_custom_object(
                           *keda, n, "scaledobjects", **kw),
                       functools.partial(autoscaler_of, "ScaledObject"))
              for ns in scopes),
        ]

    def _all(self) -> list[Informer[Any]]:
        return [*(i for group in self.workloads.values() for i in group), *self.autoscalers]

    def start(self) -> WorkloadCache:
        for informer in self._all():
            informer.start()
        return self

    def stop(self) -> None:
        for informer in self._all():
            informer.stop()

    def _covering(self, group: list[Informer[T]], namespace: str) -> list[Informer[T]]:
        if not self._scoped:
            return group
        return [i for i in group if i.name.endswith("/" + namespace)]

    def read(self, namespace: str, kinds: set[str]
             ) -> tuple[dict[tuple[str, str], Workload], list[Autoscaler]] | None:
        """The workloads of ``kinds`` and the autoscalers of one namespace, or None when an
        informer they need has not synced (read them with LISTs instead)."""
        needed = [i for kind in sorted(kinds) for i in self._covering(
            self.workloads.get(kind, []), namespace)]
        autoscalers = self._covering(self.autoscalers, namespace)
        if (len(needed) < len(kinds) or not autoscalers
                or not all(i.synced for i in needed) or not all(i.synced for i in autoscalers)):
            return None
        workloads = {(w.kind, w.name): w for i in needed for w in i.namespace(namespace).values()}
        found = [a for i in autoscalers for a in i.namespace(namespace).values()]
        return workloads, found
