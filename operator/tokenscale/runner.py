"""`tokenscale run`: the kopf operator with its loop, /metrics and health endpoints.

kopf settings used (see :func:`kopf_settings`): standalone unless ``TOKENSCALE_PEERING_NAME``
is set (with ``TOKENSCALE_SHARDS`` > 1, each shard peers under its own object,
:mod:`tokenscale.sharding`); no finalizers and no progress annotations (only an event
handler is registered); kopf's own handler-failure Events at WARNING and above; watch
server timeout 300 s with a client timeout just above it; API request timeout from the
settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from typing import Any

import kopf
from aiohttp import web
from kopf._core.engines.peering import Identity  # kopf exports no public name for it
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tokenscale.adapters.informer import PAGE_SIZE as LIST_PAGE_SIZE
from tokenscale.adapters.informer import WorkloadCache
from tokenscale.adapters.kube import KubeAdapter, load_client
from tokenscale.adapters.peering import PeeringGate
from tokenscale.handlers import register
from tokenscale.memory import tune_allocator
from tokenscale.metrics import OperatorMetrics
from tokenscale.reconcile import Reconciler
from tokenscale.settings import OperatorSettings

log = logging.getLogger("tokenscale")


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """kopf's settings for the operator."""
    ks = kopf.OperatorSettings()
    ks.posting.level = logging.WARNING
    ks.posting.reporting_component = "tokenscale.dev/operator"
    ks.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tokenscale.dev")
    ks.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="tokenscale.dev", key="last-handled-configuration"
    )
    ks.persistence.finalizer = "tokenscale.dev/finalizer"
    ks.watching.server_timeout = 300
    ks.watching.client_timeout = 330
    ks.watching.connect_timeout = 10
    # the first LIST in pages: at 10,000 TokenBudgets an unpaged answer (every status
    # included) was every shard's peak of memory
    ks.watching.chunk_size = LIST_PAGE_SIZE
    ks.networking.request_timeout = settings.api_timeout_seconds * 3
    ks.networking.connect_timeout = 10
    ks.peering.standalone = settings.effective_peering_name is None
    if settings.effective_peering_name is not None:
        ks.peering.name = settings.effective_peering_name
    ks.peering.mandatory = False
    ks.peering.lifetime = settings.peering_lifetime_seconds
    return ks


def peering_identity(settings: OperatorSettings) -> str:
    """This process' id in the peering record (instance or host, pid, a random tag)."""
    return f"{settings.instance or socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


def configure_logging(settings: OperatorSettings) -> None:
    """Structured (JSON) or text logs on stderr, via kopf's formatter."""
    kopf.configure(
        verbose=settings.log_level == "DEBUG",
        debug=False,
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
        log_prefix=False,
    )
    logging.getLogger().setLevel(settings.log_level)
    logging.getLogger("tokenscale").setLevel(settings.log_level)
    if settings.log_level != "DEBUG":  # kopf logs every handled watch event at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


class Endpoints:
    """/metrics on one port, /healthz and /readyz on another (0 disables either)."""

    def __init__(self, settings: OperatorSettings, metrics: OperatorMetrics,
                 reconciler: Reconciler, ready: asyncio.Event):
        self._settings = settings
        self._metrics = metrics
        self._reconciler = reconciler
        self._ready = ready
        self._runners: list[web.AppRunner] = []

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        age = time.monotonic() - self._reconciler.last_loop
        if age > max(60.0, 10 * self._settings.tick_seconds):
            return web.json_response({"ok": False, "loopAgeSeconds": age}, status=503)
        return web.json_response({"ok": True, "loopAgeSeconds": round(age, 3)})

    async def _readyz(self, request: web.Request) -> web.Response:
        ok = self._ready.is_set()
        return web.json_response({"ready": ok, "tokenbudgets": len(self._reconciler.entries)},
                                 status=200 if ok else 503)

    async def start(self) -> None:
        """Listen on the configured ports."""
        s = self._settings
        apps: list[tuple[int, list[tuple[str, Any]]]] = []
        if s.metrics_port:
            apps.append((s.metrics_port, [("/metrics", self._serve_metrics)]))
        if s.health_port:
            apps.append((s.health_port, [("/healthz", self._healthz),
                                         ("/readyz", self._readyz)]))
        merged: dict[int, list[tuple[str, Any]]] = {}
        for port, routes in apps:
            merged.setdefault(port, []).extend(routes)
        for port, routes in merged.items():
            app = web.Application()
            for path, handler in routes:
                app.router.add_get(path, handler)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, s.bind_address, port).start()
            self._runners.append(runner)

    async def stop(self) -> None:
        """Stop listening."""
        for runner in self._runners:
            await runner.cleanup()


async def operate(
    settings: OperatorSettings,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or SIGINT/SIGTERM)."""
    stop = stop_flag or asyncio.Event()
    ready = ready_flag or asyncio.Event()
    metrics = OperatorMetrics()
    client = load_client(settings.api_timeout_seconds)
    kube = KubeAdapter(client, settings.api_workers, settings.api_timeout_seconds,
                       settings.instance)
    gate: PeeringGate | None = None
    identity = peering_identity(settings)
    priority = settings.peering_priority
    if priority is None:
        priority = random.randint(1, 2**31 - 1)
    peering_name = settings.effective_peering_name
    if settings.peering_name is not None and peering_name is not None:
        gate = PeeringGate(client, peering_name, identity, priority,
                           settings.api_timeout_seconds, base=settings.peering_name,
                           shard=settings.shard_spec)
    offset = settings.clock_offset_seconds
    shard = settings.shard_spec
    cache = (WorkloadCache(client, settings.namespaces, shard.owns,
                           settings.api_timeout_seconds).start()
             if settings.workload_watch else None)
    reconciler = Reconciler(settings, kube, metrics, gate=gate,
                            wall_clock=lambda: time.time() + offset, workloads=cache)
    registry = kopf.OperatorRegistry()
    register(registry, reconciler)
    endpoints = Endpoints(settings, metrics, reconciler, ready)
    await endpoints.start()
    loop_task = asyncio.create_task(reconciler.run_forever(stop), name="tokenscale-loop")

    @kopf.on.cleanup(registry=registry)
    async def stop_planning_loop(**_: Any) -> None:
        """kopf handles SIGINT/SIGTERM; stop the loop before kopf waits for hung tasks."""
        stop.set()
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task

    log.info("tokenscale operator starting (namespaces: %s, shard %d of %d, peering: %s, "
             "prometheus: %s)", ",".join(settings.namespaces) or "all", settings.shard,
             settings.shards, peering_name or "standalone", settings.prometheus_url)
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings(settings),
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=peering_name is None,
            peering_name=peering_name,
            priority=priority,
            identity=Identity(identity),
            stop_flag=stop,
            ready_flag=ready,
        )
    finally:
        stop.set()
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
        await endpoints.stop()
        if cache is not None:
            cache.stop()
        reconciler.close()
        kube.close()


def run(settings: OperatorSettings | None = None) -> int:
    """Blocking entry point of `tokenscale run`."""
    settings = settings or OperatorSettings()
    configure_logging(settings)
    if settings.allocator_tuning:
        tune_allocator()  # before any thread starts: arenas already made would stay
    asyncio.run(operate(settings))
    return 0
