"""A Kubernetes API emulator for tests and the demo: what kopf and kubectl need of the server.

It answers every Kubernetes API path itself (O(1) per request, bounded history); any other
path is a 404 ``Status``, as on a real API server. What it implements, as a real API server
does:

- objects get ``uid``, ``creationTimestamp``, ``resourceVersion`` (one global counter) and
  ``generation`` (bumped when anything outside metadata and status changes);
  ``metadata.namespace`` comes from the URL; no-op writes change nothing;
- 409 on a stale ``resourceVersion`` (PUT, PATCH bodies, delete preconditions) and on create of
  an existing name; 422 with a ``Status`` for invalid patches (incl. a failing JSON-patch
  ``test``) and for schema violations of custom resources (openAPIV3Schema with pruning,
  defaulting and the project's CEL rules, see :mod:`.validation`);
- GET/PUT/PATCH of ``/status`` and of ``/scale`` (an ``autoscaling/v1`` Scale) for Deployments,
  StatefulSets, ReplicaSets and CRDs that declare them; finalizers and ``deletionTimestamp``;
- lists with ``kind``/``apiVersion``/``metadata.resourceVersion``; server-side ``Table``
  rendering (printer columns) for kubectl; label and field selectors;
- watches that honour ``resourceVersion`` (replay from a bounded history, 410 Gone beyond it)
  and ``timeoutSeconds``;
- discovery (``/api``, ``/apis``, group and group/version resource lists) incl. CRDs applied
  at runtime, with short names and subresources.

Test hooks: :meth:`ApiServer.inject_fault` (N answers of 409/429/500/... for a method and path
regex) and request counters (:meth:`ApiServer.request_count`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import datetime as dt
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from aiohttp import web

from tokenscale_testbed import patching, selectors, validation
from tokenscale_testbed.resources import ResourceType, builtin_types, types_from_crd

log = logging.getLogger(__name__)

Obj = dict[str, Any]
StoreKey = tuple[str, str]  # (group, plural): all versions of a resource share storage
ObjKey = tuple[str, str]  # (namespace or "", name)

_REASONS = {
    400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict",
    410: "Expired", 413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}
_CRD_KEY: StoreKey = ("apiextensions.k8s.io", "customresourcedefinitions")
#: The request body limit of kube-apiserver (3 MiB); larger bodies get 413.
MAX_BODY_BYTES = 3 * 1024 * 1024
_NS_KEY: StoreKey = ("", "namespaces")


class ApiError(Exception):
    """An error answered as a Kubernetes ``Status`` object."""

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> Obj:
        out: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            out["details"] = self.details
        return out


@dataclass
class Fault:
    """An injected failure: the next ``times`` requests matching method and path get ``status``."""

    method: str
    path: re.Pattern[str]
    status: int
    times: int
    message: str = "injected fault"
    retry_after: int | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.hits < self.times and self.method in ("*", method)
                and self.path.search(path) is not None)


@dataclass(frozen=True)
class RequestRecord:
    """One served request (kept in a bounded deque for debugging and assertions)."""

    method: str
    path: str
    query: str
    status: int


@dataclass(eq=False)
class _Watcher:
    queue: asyncio.Queue[tuple[str, Obj] | None]
    match: Callable[[Obj], bool]
    api_version: str


@dataclass
class _Resource:
    """Storage of one (group, plural): objects, a bounded event history and live watchers."""

    objects: dict[ObjKey, Obj] = field(default_factory=dict)
    history: collections.deque[tuple[int, str, Obj]] = field(default_factory=collections.deque)
    dropped_rv: int = 0  # events at or below this resourceVersion are gone from history
    watchers: set[_Watcher] = field(default_factory=set)


@dataclass(frozen=True)
class _Target:
    """A parsed resource URL."""

    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def _dig(obj: Any, path: str) -> Any:
    """A value at a simple JSONPath (``.status.replicas``, ``.spec.items[0].name``)."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path.lstrip(".").removeprefix("{").rstrip("}")):
        if part.startswith("["):
            index = int(part[1:-1])
            obj = obj[index] if isinstance(obj, list) and index < len(obj) else None
        else:
            obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _set_path(obj: Obj, path: str, value: Any) -> Obj:
    parts = path.lstrip(".").split(".")
    out = copy.deepcopy(obj)
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def human_age(seconds: float) -> str:
    """Kubernetes' short human duration (``45s``, ``3m12s``, ``5h``, ``2d3h``)."""
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    return f"{d}d{h % 24}h" if d < 8 and h % 24 else f"{d}d"


def _age(timestamp: Any) -> str:
    try:
        then = dt.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    return human_age((dt.datetime.now(dt.UTC) - then).total_seconds())


class ApiServer:
    """The emulated Kubernetes API server on ``host:port`` (``port=0`` picks a free one).

    Use ``async with ApiServer() as srv: srv.url``; see :class:`ApiServerThread` for a
    synchronous runner. ``crds`` are installed at start (e.g. ``[tokenscale.crd.crd()]``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 crds: Iterable[Obj] = (), namespaces: Iterable[str] = ("default",),
                 watch_history: int = 10_000, request_log: int = 2_000) -> None:
        self.host = host
        self.port = port
        self.faults: list[Fault] = []
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.recent: collections.deque[RequestRecord] = collections.deque(maxlen=request_log)
        self._watch_history = watch_history
        self._rv = 0
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._store: dict[StoreKey, _Resource] = collections.defaultdict(_Resource)
        self._runner: web.ServerRunner | None = None
        for rtype in builtin_types():
            self._types[rtype.key] = rtype
        for ns in (*namespaces, "kube-system"):
            self.create_object("v1", "namespaces", {"metadata": {"name": ns}})
        for crd in crds:
            self.create_object("apiextensions.k8s.io/v1", "customresourcedefinitions", crd)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` once started."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        """Listen; return the URL."""
        loop = asyncio.get_running_loop()

        def request(message: Any, payload: Any, protocol: Any, writer: Any,
                    task: Any) -> web.BaseRequest:
            return web.BaseRequest(message, payload, protocol, writer, task, loop,
                                   client_max_size=MAX_BODY_BYTES)

        self._runner = web.ServerRunner(web.Server(self._serve, request_factory=request),
                                        shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("Kubernetes API emulator on %s", self.url)
        return self.url

    async def stop(self) -> None:
        """End all watches and stop listening."""
        for res in self._store.values():
            for watcher in list(res.watchers):
                watcher.queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    # ------------------------------------------------------------------ test hooks

    def inject_fault(self, method: str, path: str, status: int, times: int = 1,
                     message: str = "injected fault", retry_after: int | None = None) -> Fault:
        """Answer the next ``times`` requests of ``method`` (or ``*``) whose path matches the
        regex ``path`` with ``status`` (e.g. 409, 429, 500); returns the rule (``.hits``)."""
        fault = Fault(method.upper() if method != "*" else "*", re.compile(path), status, times,
                      message, retry_after if retry_after is not None or status != 429 else 1)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def request_count(self, method: str | None = None, path: str | None = None) -> int:
        """Requests served so far with this method and a path matching the regex ``path``."""
        pattern = re.compile(path) if path else None
        return sum(n for (m, p), n in list(self.counts.items())
                   if (method is None or m == method.upper())
                   and (pattern is None or pattern.search(p)))

    def reset_counts(self) -> None:
        self.counts.clear()

    # ------------------------------------------------------------------ direct access

    def resource_type(self, api_version: str, plural: str) -> ResourceType:
        """The served type of ``apps/v1`` + ``deployments`` (KeyError if unknown)."""
        group, _, version = api_version.rpartition("/")
        return self._types[(group, version, plural)]

    def get_object(self, api_version: str, plural: str, namespace: str | None,
                   name: str) -> Obj | None:
        """The stored object (do not mutate), or None."""
        rtype = self.resource_type(api_version, plural)
        return self._store[(rtype.group, rtype.plural)].objects.get((namespace or "", name))

    def list_objects(self, api_version: str, plural: str,
                     namespace: str | None = None) -> list[Obj]:
        rtype = self.resource_type(api_version, plural)
        objects = list(self._store[(rtype.group, rtype.plural)].objects.items())
        return [o for (ns, _), o in objects if namespace is None or ns == namespace]

    def create_object(self, api_version: str, plural: str, body: Obj) -> Obj:
        """Create as a POST would (raises :class:`ApiError`)."""
        rtype = self.resource_type(api_version, plural)
        namespace = body.get("metadata", {}).get("namespace") if rtype.namespaced else None
        return self._create(_Target(rtype, namespace, None, None), copy.deepcopy(body), False)

    # ------------------------------------------------------------------ HTTP entry

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        method, path = request.method, request.path
        self.counts[(method, path)] += 1
        status = 500
        try:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    raise ApiError(fault.status, fault.message)
            response = await self._dispatch(request)
            status = response.status
            return response
        except ApiError as e:
            status = e.code
            headers = {"Retry-After": "1"} if e.code == 429 else None
            return web.json_response(e.status(), status=e.code, headers=headers)
        except Exception as e:
            log.exception("emulator failure on %s %s", method, path)
            return web.json_response(ApiError(500, repr(e)).status(), status=500)
        finally:
            self.recent.append(RequestRecord(method, path, request.query_string, status))

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis", "version", "healthz", "livez", "readyz",
                                         "openapi"):
            raise ApiError(404, f"the server could not find the requested resource "
                                f"({request.path})")
        if parts[0] in ("healthz", "livez", "readyz"):
            return web.Response(text="ok")
        if parts[0] == "version":
            return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0",
                                      "platform": "linux/amd64"})
        if parts[0] == "openapi":
            raise ApiError(404, "the emulator serves no OpenAPI document")
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"],
                                      "serverAddressByClientCIDRs": [
                                          {"clientCIDR": "0.0.0.0/0",
                                           "serverAddress": f"{self.host}:{self.port}"}]})
        if parts == ["apis"]:
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1",
                                      "groups": [self._group(g) for g in self._groups()]})
        if parts[0] == "apis" and len(parts) == 2:
            if parts[1] not in self._groups():
                raise ApiError(404, f"the server could not find the group {parts[1]}")
            return web.json_response({"kind": "APIGroup", "apiVersion": "v1",
                                      **self._group(parts[1])})
        if parts[0] == "api":
            group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return web.json_response(self._resource_list(group, version))
        target = self._target(group, version, rest)
        return await self._resource_request(request, target)

    # ------------------------------------------------------------------ discovery

    def _groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for group, version, _ in self._types:
            if group and version not in out.setdefault(group, []):
                out[group].append(version)
        return out

    def _group(self, group: str) -> Obj:
        versions = [{"groupVersion": f"{group}/{v}", "version": v}
                    for v in sorted(self._groups()[group], key=_version_rank)]
        return {"name": group, "versions": versions, "preferredVersion": versions[0]}

    def _resource_list(self, group: str, version: str) -> Obj:
        resources = [entry for rtype in self._types.values()
                     if (rtype.group, rtype.version) == (group, version)
                     for entry in rtype.discovery()]
        if not resources:
            raise ApiError(404, f"the server could not find {group}/{version}")
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": resources}

    def _target(self, group: str, version: str, rest: list[str]) -> _Target:
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        rtype = self._types.get((group, version, plural))
        if rtype is None:
            raise ApiError(404, f"the server could not find the requested resource "
                                f"({group or 'core'}/{version} {plural})")
        name = rest[1] if len(rest) > 1 else None
        sub = "/".join(rest[2:]) or None
        if sub is not None and not ((sub == "status" and rtype.status)
                                    or (sub == "scale" and rtype.scale is not None)):
            raise ApiError(404, f"the server could not find the requested resource ({sub})")
        if namespace is not None and not rtype.namespaced:
            raise ApiError(404, f"{plural} is not namespaced")
        return _Target(rtype, namespace, name, sub)

    # ------------------------------------------------------------------ resource requests

    async def _resource_request(self, request: web.BaseRequest,
                                target: _Target) -> web.StreamResponse:
        method, query = request.method, request.query
        dry_run = "dryRun" in query
        if target.name is None:
            if method == "GET" and query.get("watch") in ("true", "1"):
                return await self._watch(request, target)
            if method == "GET":
                items = self._select(target, query)
                if _wants_table(request):
                    return web.json_response(self._table(target.rtype, items, query))
                return web.json_response({
                    "kind": target.rtype.list_kind, "apiVersion": target.rtype.group_version,
                    "metadata": {"resourceVersion": str(self._rv)},
                    "items": [self._out(target.rtype, o) for o in items]})
            if method == "POST":
                body = await _body(request)
                return web.json_response(self._out(target.rtype,
                                                   self._create(target, body, dry_run)),
                                         status=201)
            if method == "DELETE":
                deleted = [self._delete(_Target(target.rtype, _ns(o), o["metadata"]["name"],
                                                None), {}) for o in self._select(target, query)]
                return web.json_response({"kind": target.rtype.list_kind,
                                          "apiVersion": target.rtype.group_version,
                                          "metadata": {"resourceVersion": str(self._rv)},
                                          "items": deleted})
            raise ApiError(405, f"{method} is not allowed on a collection")
        if method == "GET" and query.get("watch") in ("true", "1"):
            return await self._watch(request, target)
        if method == "GET":
            obj = self._require(target)
            if target.subresource == "scale":
                return web.json_response(self._scale_of(target.rtype, obj))
            if _wants_table(request):
                return web.json_response(self._table(target.rtype, [obj], query))
            return web.json_response(self._out(target.rtype, obj))
        if method == "PUT":
            body = await _body(request)
            return web.json_response(self._update(target, lambda _: body, dry_run))
        if method == "PATCH":
            body = await _body(request)
            ctype = request.content_type
            if ctype == "application/apply-patch+yaml" and self._find(target) is None:
                body.setdefault("metadata", {}).setdefault("name", target.name)
                created = self._create(_Target(target.rtype, target.namespace, None, None),
                                       body, dry_run)
                return web.json_response(self._out(target.rtype, created), status=201)
            return web.json_response(self._update(target, _patcher(ctype, body), dry_run))
        if method == "DELETE":
            options = await _body(request) if request.can_read_body else {}
            return web.json_response(self._out(target.rtype, self._delete(target, options)))
        raise ApiError(405, f"{method} is not allowed")

    def _select(self, target: _Target, query: Any) -> list[Obj]:
        res = self._store[(target.rtype.group, target.rtype.plural)]
        labels = selectors.label_selector(query.get("labelSelector"))
        fields = selectors.field_selector(query.get("fieldSelector"))
        return [o for (ns, _), o in res.objects.items()
                if (target.namespace is None or ns == target.namespace) and labels(o)
                and fields(o)]

    def _find(self, target: _Target) -> Obj | None:
        res = self._store[(target.rtype.group, target.rtype.plural)]
        return res.objects.get((target.namespace or "", target.name or ""))

    def _require(self, target: _Target) -> Obj:
        obj = self._find(target)
        if obj is None:
            raise ApiError(404, f'{_qualified(target.rtype)} "{target.name}" not found',
                           details={"name": target.name, "group": target.rtype.group,
                                    "kind": target.rtype.plural})
        return obj

    def _out(self, rtype: ResourceType, obj: Obj) -> Obj:
        if obj.get("apiVersion") == rtype.group_version:
            return obj
        return {**obj, "apiVersion": rtype.group_version}

    # ------------------------------------------------------------------ writes

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, rtype: ResourceType, kind: str, obj: Obj) -> None:
        res = self._store[(rtype.group, rtype.plural)]
        rv = int(obj["metadata"]["resourceVersion"])
        res.history.append((rv, kind, obj))
        while len(res.history) > self._watch_history:
            res.dropped_rv = res.history.popleft()[0]
        for watcher in list(res.watchers):
            if watcher.match(obj):
                watcher.queue.put_nowait((kind, obj))

    def _create(self, target: _Target, body: Obj, dry_run: bool) -> Obj:
        rtype = target.rtype
        if not isinstance(body, dict):
            raise ApiError(400, "the body of a create must be an object")
        meta = _meta(body)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
            else:
                raise ApiError(422, f"{rtype.kind} is invalid: metadata.name: Required value: "
                                    "name or generateName is required")
        if rtype.namespaced:
            namespace = target.namespace or meta.get("namespace") or "default"
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(400, "the namespace of the provided object does not match the "
                                    "namespace sent on the request")
            meta["namespace"] = namespace
            if (("", namespace) not in self._store[_NS_KEY].objects):
                raise ApiError(404, f'namespaces "{namespace}" not found',
                               details={"name": namespace, "kind": "namespaces"})
        else:
            meta.pop("namespace", None)
        key = (meta.get("namespace", ""), meta["name"])
        res = self._store[(rtype.group, rtype.plural)]
        if key in res.objects:
            raise ApiError(409, f'{_qualified(rtype)} "{meta["name"]}" already exists',
                           reason="AlreadyExists",
                           details={"name": meta["name"], "group": rtype.group,
                                    "kind": rtype.plural})
        body["apiVersion"], body["kind"] = rtype.group_version, rtype.kind
        for transient in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(transient, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        body = self._defaults(rtype, body)
        body = self._admit(rtype, body, meta["name"])
        if (rtype.group, rtype.plural) == _CRD_KEY:
            body = self._install_crd(body, dry_run)
        if dry_run:
            return body
        body["metadata"]["resourceVersion"] = self._next_rv()
        res.objects[key] = body
        self._emit(rtype, "ADDED", body)
        return body

    def _defaults(self, rtype: ResourceType, body: Obj) -> Obj:
        if (rtype.group, rtype.plural) in (("apps", "deployments"), ("apps", "statefulsets"),
                                           ("apps", "replicasets")):
            body.setdefault("spec", {}).setdefault("replicas", 1)
            body.setdefault("status", {})
        elif (rtype.group, rtype.plural) == _NS_KEY:
            body["status"] = {"phase": "Active"}
            body.setdefault("spec", {"finalizers": ["kubernetes"]})
        elif (rtype.group, rtype.plural) == ("", "pods"):
            body.setdefault("status", {"phase": "Pending"})
        return body

    def _admit(self, rtype: ResourceType, body: Obj, name: str) -> Obj:
        """Schema normalization and validation of custom resources (422 on violations)."""
        if rtype.schema is None:
            return body
        body = validation.normalize(body, rtype.schema)
        errors = validation.validate(body, rtype.schema)
        if errors:
            causes = [{"reason": "FieldValueInvalid", "message": str(e), "field": e.field}
                      for e in errors]
            raise ApiError(
                422, f'{rtype.kind}.{rtype.group} "{name}" is invalid: '
                     + ", ".join(str(e) for e in errors),
                details={"name": name, "group": rtype.group, "kind": rtype.kind,
                         "causes": causes})
        return body

    def _install_crd(self, crd: Obj, dry_run: bool) -> Obj:
        try:
            new_types = types_from_crd(crd)
        except (KeyError, TypeError) as e:
            raise ApiError(422, f"CustomResourceDefinition is invalid: missing {e}") from e
        if dry_run:
            return crd
        for key in [k for k, t in self._types.items() if t.from_crd == crd["metadata"]["name"]]:
            del self._types[key]
        for rtype in new_types:
            self._types[rtype.key] = rtype
        names = crd["spec"]["names"]
        crd["status"] = {
            "acceptedNames": names, "storedVersions": [v.version for v in new_types[:1]],
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": _now(),
                            "reason": r, "message": ""}
                           for t, r in (("NamesAccepted", "NoConflicts"),
                                        ("Established", "InitialNamesAccepted"))]}
        return crd

    def _update(self, target: _Target, change: Callable[[Obj], Obj], dry_run: bool) -> Obj:
        """Read-modify-write of one object or its status/scale subresource."""
        rtype = target.rtype
        current = self._require(target)
        if target.subresource == "scale":
            return self._update_scale(target, current, change, dry_run)
        try:
            candidate = change(copy.deepcopy(current))
        except patching.PatchError as e:
            raise ApiError(422, str(e)) from e
        if not isinstance(candidate, dict):
            raise ApiError(422, "the patched object is not an object")
        new = self._merge_write(rtype, target.subresource, current, candidate)
        return self._store_update(rtype, current, new, dry_run)

    def _merge_write(self, rtype: ResourceType, subresource: str | None, current: Obj,
                     candidate: Obj) -> Obj:
        cmeta, meta = current["metadata"], _meta(candidate)
        stated_rv = meta.get("resourceVersion")
        if stated_rv not in (None, "") and str(stated_rv) != cmeta["resourceVersion"]:
            raise ApiError(409, f'Operation cannot be fulfilled on {_qualified(rtype)} '
                                f'"{cmeta["name"]}": the object has been modified; please apply '
                                "your changes to the latest version and try again",
                           details={"name": cmeta["name"], "group": rtype.group,
                                    "kind": rtype.plural})
        if meta.get("name", cmeta["name"]) != cmeta["name"]:
            raise ApiError(400, "the name of the object does not match the name on the URL")
        if subresource == "status":
            new = copy.deepcopy(current)
            if "status" in candidate:
                new["status"] = candidate["status"]
            else:
                new.pop("status", None)
            return new
        new = candidate
        new["apiVersion"], new["kind"] = current["apiVersion"], current["kind"]
        for fixed in ("uid", "creationTimestamp", "namespace", "deletionTimestamp",
                      "generation", "resourceVersion", "deletionGracePeriodSeconds"):
            if fixed in cmeta:
                meta[fixed] = cmeta[fixed]
            else:
                meta.pop(fixed, None)
        if rtype.status:
            if "status" in current:
                new["status"] = current["status"]
            else:
                new.pop("status", None)
        return new

    def _store_update(self, rtype: ResourceType, current: Obj, new: Obj, dry_run: bool) -> Obj:
        name = current["metadata"]["name"]
        new = self._admit(rtype, new, name)
        if (rtype.group, rtype.plural) == _CRD_KEY:
            new = self._install_crd(new, dry_run)
        if _spec_part(new, rtype) != _spec_part(current, rtype):
            new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if new == current or dry_run:
            return new
        new["metadata"]["resourceVersion"] = self._next_rv()
        key = (new["metadata"].get("namespace", ""), name)
        res = self._store[(rtype.group, rtype.plural)]
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del res.objects[key]
            self._emit(rtype, "DELETED", new)
            self._after_delete(rtype, new)
        else:
            res.objects[key] = new
            self._emit(rtype, "MODIFIED", new)
        return new

    def _scale_of(self, rtype: ResourceType, obj: Obj) -> Obj:
        assert rtype.scale is not None
        meta = obj["metadata"]
        status: Obj = {"replicas": _dig(obj, rtype.scale.status_replicas) or 0}
        if rtype.scale.label_selector:
            raw = _dig(obj, rtype.scale.label_selector)
            if isinstance(raw, dict):
                raw = selectors.selector_string(raw.get("matchLabels"))
            if raw:
                status["selector"] = raw
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                   "creationTimestamp") if k in meta},
                "spec": {"replicas": _dig(obj, rtype.scale.spec_replicas) or 0},
                "status": status}

    def _update_scale(self, target: _Target, current: Obj, change: Callable[[Obj], Obj],
                      dry_run: bool) -> Obj:
        rtype = target.rtype
        assert rtype.scale is not None
        scale = self._scale_of(rtype, current)
        try:
            new_scale = change(copy.deepcopy(scale))
        except patching.PatchError as e:
            raise ApiError(422, str(e)) from e
        replicas = (new_scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(422, f'Scale.autoscaling "{target.name}" is invalid: spec.replicas: '
                                f"Invalid value: {json.dumps(replicas)}: must be greater than or "
                                "equal to 0")
        stated_rv = (new_scale.get("metadata") or {}).get("resourceVersion")
        candidate = _set_path(current, rtype.scale.spec_replicas, replicas)
        candidate["metadata"]["resourceVersion"] = stated_rv
        new = self._merge_write(rtype, None, current, candidate)
        stored = self._store_update(rtype, current, new, dry_run)
        return self._scale_of(rtype, stored)

    def _delete(self, target: _Target, options: Obj) -> Obj:
        rtype = target.rtype
        current = self._require(target)
        pre = (options or {}).get("preconditions") or {}
        meta = current["metadata"]
        if (pre.get("resourceVersion") not in (None, meta["resourceVersion"])
                or pre.get("uid") not in (None, meta["uid"])):
            raise ApiError(409, f'Operation cannot be fulfilled on {_qualified(rtype)} '
                                f'"{meta["name"]}": precondition failed')
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return current
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._store_update(rtype, current, new, False)
        res = self._store[(rtype.group, rtype.plural)]
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        del res.objects[(meta.get("namespace", ""), meta["name"])]
        self._emit(rtype, "DELETED", gone)
        self._after_delete(rtype, gone)
        return gone

    def _after_delete(self, rtype: ResourceType, obj: Obj) -> None:
        key = (rtype.group, rtype.plural)
        if key == _NS_KEY:
            namespace = obj["metadata"]["name"]
            for (group, plural), res in list(self._store.items()):
                for ns, name in [k for k in res.objects if k[0] == namespace]:
                    owner = next(t for t in self._types.values()
                                 if (t.group, t.plural) == (group, plural))
                    gone = copy.deepcopy(res.objects.pop((ns, name)))
                    gone["metadata"]["resourceVersion"] = self._next_rv()
                    self._emit(owner, "DELETED", gone)
        elif key == _CRD_KEY:
            crd_name = obj["metadata"]["name"]
            for tkey in [k for k, t in self._types.items() if t.from_crd == crd_name]:
                rt = self._types.pop(tkey)
                self._store.pop((rt.group, rt.plural), None)

    # ------------------------------------------------------------------ watch

    async def _watch(self, request: web.BaseRequest, target: _Target) -> web.StreamResponse:
        rtype, query = target.rtype, request.query
        res = self._store[(rtype.group, rtype.plural)]
        labels = selectors.label_selector(query.get("labelSelector"))
        fields = selectors.field_selector(query.get("fieldSelector"))

        def match(obj: Obj) -> bool:
            meta = obj["metadata"]
            return ((target.namespace is None or meta.get("namespace") == target.namespace)
                    and (target.name is None or meta["name"] == target.name)
                    and labels(obj) and fields(obj))

        since = query.get("resourceVersion", "")
        initial: list[tuple[str, Obj]]
        if since in ("", "0"):
            initial = [("ADDED", o) for o in res.objects.values() if match(o)]
        else:
            try:
                since_rv = int(since)
            except ValueError as e:
                raise ApiError(400, f"invalid resourceVersion {since!r}") from e
            if since_rv < res.dropped_rv:
                initial = [("ERROR", ApiError(
                    410, f"too old resource version: {since_rv} ({res.dropped_rv + 1})",
                    reason="Expired").status())]
            else:
                initial = [(k, o) for rv, k, o in res.history if rv > since_rv and match(o)]
        watcher = _Watcher(asyncio.Queue(), match, rtype.group_version)
        expired = bool(initial) and initial[0][0] == "ERROR"
        if not expired:
            res.watchers.add(watcher)
        timeout = float(query.get("timeoutSeconds", 0) or 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout > 0 else None
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            for kind, obj in initial:
                await self._send(response, rtype, kind, obj)
            while not expired:
                wait = 5.0 if deadline is None else min(5.0, deadline - loop.time())
                if wait <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
                except TimeoutError:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    continue
                if item is None:
                    break
                await self._send(response, rtype, *item)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            res.watchers.discard(watcher)
        return response

    async def _send(self, response: web.StreamResponse, rtype: ResourceType, kind: str,
                    obj: Obj) -> None:
        if kind != "ERROR":
            obj = self._out(rtype, obj)
        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    # ------------------------------------------------------------------ tables

    def _table(self, rtype: ResourceType, items: list[Obj], query: Any) -> Obj:
        columns, cells = _columns(rtype)
        include = query.get("includeObject", "Metadata")
        rows = []
        for obj in items:
            row: Obj = {"cells": [fn(obj) for fn in cells]}
            if include == "Object":
                row["object"] = self._out(rtype, obj)
            elif include != "None":
                row["object"] = {"kind": "PartialObjectMetadata",
                                 "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
            rows.append(row)
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": str(self._rv)},
                "columnDefinitions": columns, "rows": rows}


def _version_rank(version: str) -> tuple[int, int, int]:
    m = re.match(r"v(\d+)(?:(alpha|beta)(\d+))?$", version)
    if not m:
        return (3, 0, 0)
    stage = {"alpha": 2, "beta": 1, None: 0}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0))


def _qualified(rtype: ResourceType) -> str:
    return f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural


def _ns(obj: Obj) -> str | None:
    ns = obj["metadata"].get("namespace")
    return str(ns) if ns else None


def _spec_part(obj: Obj, rtype: ResourceType) -> Obj:
    skip = {"metadata", "status"} if rtype.status else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skip}


def _wants_table(request: web.BaseRequest) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


async def _body(request: web.BaseRequest) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as e:
        raise ApiError(413, f"Request entity too large: limit is {MAX_BODY_BYTES}") from e
    if not raw:
        return {}
    if "protobuf" in request.content_type or "cbor" in request.content_type:
        raise ApiError(415, f"the emulator speaks JSON only, not {request.content_type}")
    try:
        if request.content_type == "application/apply-patch+yaml":
            return yaml.safe_load(raw)
        return json.loads(raw, parse_constant=_not_json)
    except (ValueError, yaml.YAMLError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from e


def _not_json(token: str) -> Any:
    """NaN and Infinity are not JSON: a real API server refuses them (Go's decoder)."""
    raise ValueError(f"invalid character {token[0]!r} looking for beginning of value "
                     f"({token} is not JSON)")


def _patcher(content_type: str, body: Any) -> Callable[[Obj], Obj]:
    if content_type == "application/json-patch+json":
        return lambda obj: patching.json_patch(obj, body)
    if content_type == "application/strategic-merge-patch+json":
        return lambda obj: patching.strategic_merge_patch(obj, body)
    if not isinstance(body, dict):
        raise ApiError(422, "a merge patch must be a JSON object")
    return lambda obj: patching.merge_patch(obj, body)


Cell = Callable[[Obj], Any]


def _col(name: str, ctype: str = "string", fmt: str = "", priority: int = 0) -> Obj:
    return {"name": name, "type": ctype, "format": fmt, "description": "", "priority": priority}


def _columns(rtype: ResourceType) -> tuple[list[Obj], list[Cell]]:
    name_col = _col("Name", fmt="name")
    age: Cell = lambda o: _age(o["metadata"].get("creationTimestamp"))  # noqa: E731
    name: Cell = lambda o: o["metadata"]["name"]  # noqa: E731
    if rtype.printer_columns:
        cols, cells = [name_col], [name]
        for pc in rtype.printer_columns:
            cols.append(_col(pc["name"], pc.get("type", "string"), pc.get("format", ""),
                             pc.get("priority", 0)))
            path = pc["jsonPath"]
            cells.append(_cell(path, pc.get("type") == "date"))
        return cols, cells
    key = (rtype.group, rtype.plural)
    if key in (("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets")):
        ready: Cell = lambda o: (  # noqa: E731
            f"{(o.get('status') or {}).get('readyReplicas', 0)}/"
            f"{(o.get('spec') or {}).get('replicas', 0)}")
        if key == ("apps", "deployments"):
            return ([name_col, _col("Ready"), _col("Up-to-date", "integer"),
                     _col("Available", "integer"), _col("Age")],
                    [name, ready,
                     lambda o: (o.get("status") or {}).get("updatedReplicas", 0),
                     lambda o: (o.get("status") or {}).get("availableReplicas", 0), age])
        return [name_col, _col("Ready"), _col("Age")], [name, ready, age]
    if key == ("", "pods"):
        return ([name_col, _col("Ready"), _col("Status"), _col("Restarts", "integer"),
                 _col("Age")],
                [name, lambda o: "1/1" if _pod_ready(o) else "0/1",
                 lambda o: (o.get("status") or {}).get("phase", "Pending"), lambda o: 0, age])
    if key == _NS_KEY:
        return ([name_col, _col("Status"), _col("Age")],
                [name, lambda o: (o.get("status") or {}).get("phase"), age])
    return [name_col, _col("Age")], [name, age]


def _cell(path: str, is_date: bool) -> Cell:
    def cell(obj: Obj) -> Any:
        value = _dig(obj, path)
        return _age(value) if is_date and value else value
    return cell


def _pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


# ---------------------------------------------------------------------- sync runner, kubeconfig


class ApiServerThread:
    """:class:`ApiServer` on its own event loop in a daemon thread (for sync tests, the demo).

    ``with ApiServerThread(crds=[crd()]) as srv: srv.url``; ``srv.server`` is the ApiServer;
    :meth:`call` runs a function on the server's loop (thread-safe access to its state).
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="kube-api-emulator", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.server: ApiServer | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self.server = ApiServer(**self._kwargs)
            self._loop.run_until_complete(self.server.start())
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    def start(self, timeout: float = 10.0) -> str:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the API emulator did not start")
        if self._error is not None:
            raise RuntimeError("the API emulator failed to start") from self._error
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def call(self, fn: Callable[[ApiServer], Any], timeout: float = 10.0) -> Any:
        """Run ``fn(server)`` on the server's loop and return its result."""
        server = self.server
        assert server is not None

        async def run() -> Any:
            return fn(server)
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_kubeconfig(path: str | Path, url: str, namespace: str = "default") -> Path:
    """A kubeconfig with one context ``testbed`` pointing at ``url`` (a dummy bearer token)."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "testbed",
        "clusters": [{"name": "testbed", "cluster": {"server": url}}],
        "users": [{"name": "testbed", "user": {"token": "testbed"}}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": "testbed",
                                                      "namespace": namespace}}],
        "preferences": {},
    }
    out = Path(path)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


@contextlib.contextmanager
def running(**kwargs: Any) -> Iterator[ApiServerThread]:
    """``with running(crds=[...]) as srv:`` — an emulator in a thread for the block."""
    thread = ApiServerThread(**kwargs)
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m tokenscale_testbed.apiserver --port 0 --kubeconfig k.yaml``: serve forever."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the server here")
    parser.add_argument("--tokenbudget-crd", action="store_true", help="preinstall the CRD")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    crds = []
    if args.tokenbudget_crd:
        from tokenscale.crd import crd
        crds.append(crd())

    async def serve() -> None:
        async with ApiServer(args.host, args.port, crds=crds) as srv:
            if args.kubeconfig:
                write_kubeconfig(args.kubeconfig, srv.url)
            print(srv.url, flush=True)
            await asyncio.Event().wait()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
