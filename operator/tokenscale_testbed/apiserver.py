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

This module is the HTTP layer (routing, request bodies, fault injection, request counters,
the threaded runner and kubeconfig); the rest lives in :mod:`.store` (objects and write
rules, usable without HTTP), :mod:`.watch`, :mod:`.discovery` and :mod:`.tables`.

Test hooks: :meth:`ApiServer.inject_fault` (N answers of 409/429/500/... for a method and path
regex) and request counters (:meth:`ApiServer.request_count`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from aiohttp import web

from tokenscale_testbed import discovery, patching
from tokenscale_testbed.errors import ApiError, Obj
from tokenscale_testbed.resources import ResourceType
from tokenscale_testbed.store import ObjKey, Store, StoreKey, Target, served
from tokenscale_testbed.tables import human_age, table
from tokenscale_testbed.watch import end_watches, serve_watch

__all__ = [
    "MAX_BODY_BYTES", "ApiError", "ApiServer", "ApiServerThread", "Fault", "Obj", "ObjKey",
    "RequestRecord", "StoreKey", "human_age", "main", "running", "write_kubeconfig",
]

log = logging.getLogger(__name__)

#: The request body limit of kube-apiserver (3 MiB); larger bodies get 413.
MAX_BODY_BYTES = 3 * 1024 * 1024
_PREFIXES = ("api", "apis", "version", "healthz", "livez", "readyz", "openapi")


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


class ApiServer:
    """The emulated Kubernetes API server on ``host:port`` (``port=0`` picks a free one).

    Use ``async with ApiServer() as srv: srv.url``; see :class:`ApiServerThread` for a
    synchronous runner. ``crds`` are installed at start (e.g. ``[tokenscale.crd.crd()]``).
    The objects live in :attr:`store` (a :class:`~tokenscale_testbed.store.Store`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 crds: Iterable[Obj] = (), namespaces: Iterable[str] = ("default",),
                 watch_history: int = 10_000, request_log: int = 2_000) -> None:
        self.host = host
        self.port = port
        self.faults: list[Fault] = []
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.recent: collections.deque[RequestRecord] = collections.deque(maxlen=request_log)
        self._runner: web.ServerRunner | None = None
        self.store = Store(crds=crds, namespaces=namespaces, watch_history=watch_history)

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
        end_watches(self.store.resources.values())
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
        return self.store.resource_type(api_version, plural)

    def get_object(self, api_version: str, plural: str, namespace: str | None,
                   name: str) -> Obj | None:
        """The stored object (do not mutate), or None."""
        return self.store.get_object(api_version, plural, namespace, name)

    def list_objects(self, api_version: str, plural: str,
                     namespace: str | None = None) -> list[Obj]:
        return self.store.list_objects(api_version, plural, namespace)

    def create_object(self, api_version: str, plural: str, body: Obj) -> Obj:
        """Create as a POST would (raises :class:`ApiError`)."""
        return self.store.create_object(api_version, plural, body)

    def replica_log(self, api_version: str, plural: str, namespace: str,
                    name: str) -> list[tuple[float, int]]:
        """Every ``(unix time, spec.replicas)`` of a workload (see :meth:`Store.replica_log`)."""
        return self.store.replica_log(api_version, plural, namespace, name)

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
        if not parts or parts[0] not in _PREFIXES:
            raise ApiError(404, f"the server could not find the requested resource "
                                f"({request.path})")
        if parts[0] in ("healthz", "livez", "readyz"):
            return web.Response(text="ok")
        if parts[0] == "version":
            return web.json_response(discovery.VERSION)
        if parts[0] == "openapi":
            raise ApiError(404, "the emulator serves no OpenAPI document")
        types = self.store.types
        if parts == ["api"]:
            return web.json_response(discovery.core_versions(f"{self.host}:{self.port}"))
        if parts == ["apis"]:
            return web.json_response(discovery.group_list(types))
        if parts[0] == "apis" and len(parts) == 2:
            return web.json_response(discovery.api_group(types, parts[1]))
        if parts[0] == "api":
            group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return web.json_response(discovery.resource_list(types, group, version))
        target = self._target(group, version, rest)
        if request.method == "GET" and request.query.get("watch") in ("true", "1"):
            return await serve_watch(request, self.store.resource(target.rtype), target)
        if target.name is None:
            return await self._collection_request(request, target)
        return await self._object_request(request, target)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        """The resource a URL path (after the group/version) addresses (404 if none)."""
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        rtype = self.store.types.get((group, version, plural))
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
        return Target(rtype, namespace, name, sub)

    # ------------------------------------------------------------------ resource requests

    async def _collection_request(self, request: web.BaseRequest,
                                  target: Target) -> web.StreamResponse:
        """GET (list or Table), POST (create) and DELETE (deletecollection) of a collection."""
        method, query, rtype, store = request.method, request.query, target.rtype, self.store
        if method == "GET":
            items = store.select(target, query)
            if _wants_table(request):
                return web.json_response(table(rtype, items, query, store.rv))
            items, meta = _page(items, query, str(store.rv))
            return web.json_response({
                "kind": rtype.list_kind, "apiVersion": rtype.group_version,
                "metadata": meta, "items": [served(rtype, o) for o in items]})
        if method == "POST":
            body = await _body(request)
            created = store.create(target, body, "dryRun" in query)
            return web.json_response(served(rtype, created), status=201)
        if method == "DELETE":
            deleted = [store.delete(Target(rtype, _ns(o), o["metadata"]["name"], None), {})
                       for o in store.select(target, query)]
            return web.json_response({"kind": rtype.list_kind,
                                      "apiVersion": rtype.group_version,
                                      "metadata": {"resourceVersion": str(store.rv)},
                                      "items": deleted})
        raise ApiError(405, f"{method} is not allowed on a collection")

    async def _object_request(self, request: web.BaseRequest,
                              target: Target) -> web.StreamResponse:
        """GET, PUT, PATCH (incl. server-side apply) and DELETE of one object or subresource."""
        method, query, rtype, store = request.method, request.query, target.rtype, self.store
        dry_run = "dryRun" in query
        if method == "GET":
            obj = store.require(target)
            if target.subresource == "scale":
                return web.json_response(store.scale_of(rtype, obj))
            if _wants_table(request):
                return web.json_response(table(rtype, [obj], query, store.rv))
            return web.json_response(served(rtype, obj))
        if method == "PUT":
            body = await _body(request)
            return web.json_response(store.update(target, lambda _: body, dry_run))
        if method == "PATCH":
            body = await _body(request)
            ctype = request.content_type
            if ctype == "application/apply-patch+yaml" and store.find(target) is None:
                body.setdefault("metadata", {}).setdefault("name", target.name)
                created = store.create(Target(rtype, target.namespace, None, None), body,
                                       dry_run)
                return web.json_response(served(rtype, created), status=201)
            return web.json_response(store.update(target, _patcher(ctype, body), dry_run))
        if method == "DELETE":
            options = await _body(request) if request.can_read_body else {}
            return web.json_response(served(rtype, store.delete(target, options)))
        raise ApiError(405, f"{method} is not allowed")


def _ns(obj: Obj) -> str | None:
    ns = obj["metadata"].get("namespace")
    return str(ns) if ns else None


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


def _page(items: list[Obj], query: Mapping[str, str], rv: str) -> tuple[list[Obj], Obj]:
    """One page of a LIST (``limit``, ``continue``) in key order (namespace, name), and the
    list's metadata: the resourceVersion of the first page and, if more follow, the
    ``continue`` token of the next. Unlike etcd, later pages are not a snapshot of the first
    page's version: a change between pages shows up there *and* in a watch from that version
    (a client that applies both ends up right). Without ``limit``/``continue``: every item in
    store order."""
    raw_limit, token = query.get("limit"), query.get("continue")
    if not raw_limit and not token:
        return items, {"resourceVersion": rv}
    try:
        limit = int(raw_limit or 0)
        after: list[str] = []
        if token:
            decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
            rv, after = str(decoded["rv"]), [str(k) for k in decoded["after"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ApiError(400, f"invalid limit or continue token: {e}") from e

    def key(o: Obj) -> list[str]:
        return [str(o["metadata"].get("namespace") or ""), str(o["metadata"]["name"])]

    rest = sorted((o for o in items if key(o) > after), key=key)
    meta: Obj = {"resourceVersion": rv}
    if 0 < limit < len(rest):
        rest = rest[:limit]
        meta["continue"] = base64.urlsafe_b64encode(
            json.dumps({"rv": rv, "after": key(rest[-1])}).encode()).decode()
    return rest, meta


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
