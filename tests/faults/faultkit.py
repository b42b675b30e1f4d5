"""Helpers of the fault suite: a switchable Prometheus peer, the operator as a real process,
TokenBudget and Deployment builders, and readers of what the API emulator recorded.

:class:`FaultyPrometheus` is a small HTTP server that speaks Prometheus' query API
(``/api/v1/query``, ``/api/v1/query_range``). Every budget points its ``spec.prometheus.url``
at its own path prefix (``http://127.0.0.1:<port>/<channel>``), and each channel can be
switched at run time between a healthy answer (``ok``: a token rate of ``rate`` tokens/s
spread over the pods of the channel's Deployment) and one failure mode: ``slow`` (answers
after ``slow_seconds``), ``empty``, ``nan``, ``inf``, ``multiple`` (the same pod twice),
``http500`` and ``garbage`` (HTTP 200 with a body that is not JSON). Whatever the channel's
mode, a query containing a marker of ``slow_queries`` answers after that many seconds, and
one containing a marker of ``huge_queries`` answers that many series (one sample each);
``requests`` keeps the parameters of the last 1,000 queries.

:class:`OperatorProcess` runs ``tokenscale run`` as a subprocess against the emulator, so it
can be SIGKILLed and restarted like a pod; its own ``/metrics`` tell what it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

import objects
import testclock
from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.prometheus import free_port
from tokenscale_testbed.waiting import wait_for

MODES = ("ok", "slow", "empty", "nan", "inf", "multiple", "http500", "garbage")
#: The failure kind the operator must name for each mode (DESIGN.md, METRIC_FAILURES).
EXPECTED_KIND = {
    "slow": "Timeout", "empty": "Empty", "nan": "NotANumber", "inf": "Infinite",
    "multiple": "MultipleSeries", "http500": "HTTPError", "garbage": "BadResponse",
}


@dataclass
class Channel:
    """What one path prefix of :class:`FaultyPrometheus` answers."""

    namespace: str
    deployment: str
    rate: float  # tokens/s of the whole Deployment
    pods: int = 2
    mode: str = "ok"
    queries: int = 0
    fail_next: int = 0  # answer this many of the next requests with HTTP 500, then ``mode``

    def pod_names(self) -> list[str]:
        return [f"{self.deployment}-5d8f7c6b9a-{chr(ord('a') + i) * 5}"
                for i in range(self.pods)]


@dataclass
class FaultyPrometheus:
    """A real HTTP peer that answers like Prometheus, or fails in a chosen way."""

    slow_seconds: float = 3.0
    channels: dict[str, Channel] = field(default_factory=dict)
    slow_queries: dict[str, float] = field(default_factory=dict)  # marker -> seconds
    huge_queries: dict[str, int] = field(default_factory=dict)  # marker -> series
    requests: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    def url(self, channel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{channel}"

    def add(self, name: str, channel: Channel) -> str:
        self.channels[name] = channel
        return self.url(name)

    def set_mode(self, name: str, mode: str) -> None:
        assert mode in MODES, mode
        self.channels[name].mode = mode

    # ----------------------------------------------------------------- answers

    def _vector(self, ch: Channel, query: str, at: float, times: list[float] | None) -> Any:
        if "num_requests_waiting" in query:
            per_pod = 0.0
        elif "increase(" in query:
            per_pod = ch.rate / ch.pods * 60.0
        else:
            per_pod = ch.rate / ch.pods
        value = {"nan": "NaN", "inf": "+Inf"}.get(ch.mode, repr(per_pod))
        pods = ch.pod_names()
        if ch.mode == "multiple":
            pods = [pods[0], *pods]
        result = []
        for i, pod in enumerate(pods):
            labels = {"namespace": ch.namespace, "pod": pod, "instance": f"10.0.0.{i}:8000"}
            if times is None:
                result.append({"metric": labels, "value": [at, value]})
            else:
                result.append({"metric": labels,
                               "values": [[t, repr(per_pod)] for t in times[:-1]]
                               + [[times[-1], value]]})
        if ch.mode == "empty":
            result = []
        return {"status": "success",
                "data": {"resultType": "vector" if times is None else "matrix",
                         "result": result}}

    @staticmethod
    def _huge(ch: Channel, count: int, at: float) -> web.Response:
        """``count`` series of one sample each (a vector; Prometheus' ``limit`` is ignored,
        as servers before it do)."""
        rows = ",".join(
            f'{{"metric":{{"namespace":"{ch.namespace}","pod":"{ch.deployment}-{i:06d}"}},'
            f'"value":[{at},"1"]}}' for i in range(count))
        body = f'{{"status":"success","data":{{"resultType":"vector","result":[{rows}]}}}}'
        return web.Response(text=body, content_type="application/json")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name, kind = request.match_info["channel"], request.match_info["kind"]
        ch = self.channels.get(name)
        if ch is None:
            return web.json_response({"status": "error", "error": "no such channel"}, status=404)
        ch.queries += 1
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        query = params.get("query", "")
        self.requests = [*self.requests[-999:], {"channel": name, **params}]
        for marker, seconds in self.slow_queries.items():
            if marker in query:
                await asyncio.sleep(seconds)
        for marker, count in self.huge_queries.items():
            if marker in query:
                return self._huge(ch, count, float(params.get("time") or params.get("end")
                                                   or time.time()))
        if ch.mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        if ch.fail_next > 0:
            ch.fail_next -= 1
            return web.json_response({"status": "error", "errorType": "internal",
                                      "error": "injected failure"}, status=500)
        if ch.mode == "http500":
            return web.json_response({"status": "error", "errorType": "internal",
                                      "error": "injected failure"}, status=500)
        if ch.mode == "garbage":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>\x00{",
                                content_type="application/json")
        if kind == "query":
            at = float(params.get("time") or time.time())
            return web.json_response(self._vector(ch, query, at, None))
        start, end = float(params["start"]), float(params["end"])
        step = max(float(params.get("step") or 1), 0.001)
        count = min(int((end - start) / step) + 1, 11_000)
        times = [start + i * step for i in range(count)]
        return web.json_response(self._vector(ch, query, end, times or [end]))

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> FaultyPrometheus:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            route = r"/{channel}/api/v1/{kind:query|query_range}"
            app.router.add_route("GET", route, self._handle)
            app.router.add_route("POST", route, self._handle)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            loop.run_until_complete(site.start())
            self.port = int(self._runner.addresses[0][1])
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="faulty-prometheus", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the faulty Prometheus did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


# ------------------------------------------------------------------------ the operator


def _tokenscale_binary() -> str:
    path = Path(sys.executable).parent / "tokenscale"
    assert path.exists(), f"{path} missing: pip install -e ."
    return str(path)


class OperatorProcess:
    """``tokenscale run`` as a real process against the emulator (killable like a pod)."""

    def __init__(self, kubeconfig: Path, prometheus_url: str, instance: str = "op",
                 **settings: str) -> None:
        self.instance = instance
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "TOKENSCALE_PROMETHEUS_URL": prometheus_url,
            "TOKENSCALE_METRICS_PORT": str(self.metrics_port),
            "TOKENSCALE_HEALTH_PORT": str(self.health_port),
            "TOKENSCALE_BIND_ADDRESS": "127.0.0.1",
            "TOKENSCALE_LOG_FORMAT": "text",
            "TOKENSCALE_INSTANCE": instance,
            "TOKENSCALE_STATUS_HEARTBEAT_SECONDS": "1",
            "TOKENSCALE_RATE_WINDOW": "10s",
            "TOKENSCALE_TICK_SECONDS": "0.5",
            # the suite's budgets read many channels and closed ports: a test about the
            # allowlist sets its own (prometheus_allowed_urls=...)
            "TOKENSCALE_PROMETHEUS_ALLOWED_URLS": "*",
            **testclock.current().env(),
            **{f"TOKENSCALE_{k.upper()}": v for k, v in settings.items()},
        }
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (kept open for the process)
            prefix=f"tokenscale-{instance}-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        self.proc = subprocess.Popen([_tokenscale_binary(), "run"], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._get("/readyz", self.health_port) is not None or self._dead(),
                 timeout=30, message=f"operator {self.instance} to be ready")
        assert not self._dead(), f"operator {self.instance} exited:\n{self.logs()[-3000:]}"
        return self

    def _dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, like an OOM kill or a node loss."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def _get(self, path: str, port: int) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as rsp:
                text: str = rsp.read().decode()
                return text
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return None

    def healthy(self) -> bool:
        return self._get("/healthz", self.health_port) is not None

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the operator's own /metrics samples ``name{labels}`` (0 if absent)."""
        text = self._get("/metrics", self.metrics_port) or ""
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, rest = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total


@contextlib.contextmanager
def operators(*procs: OperatorProcess) -> Iterator[tuple[OperatorProcess, ...]]:
    """Start the operators; always stop them (and show their logs on failure)."""
    started: list[OperatorProcess] = []
    try:
        for p in procs:
            started.append(p.start())
        yield procs
    except BaseException:
        for p in started:
            sys.stderr.write(f"--- operator {p.instance} log (tail) ---\n{p.logs()[-4000:]}\n")
        raise
    finally:
        for p in started:
            p.stop()


# ------------------------------------------------------------------------ objects


def deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """A vLLM Deployment (see tests/objects.py)."""
    return objects.deployment(namespace, name, replicas, image="vllm")


target = objects.target


def budget(namespace: str, name: str, targets: list[dict[str, Any]], *,
           prometheus_url: str | None = None, **spec_overrides: Any) -> dict[str, Any]:
    """A TokenBudget with compressed time: 5 s interval, 60 s forecast window,
    no scale-down stabilization and no tolerance, unless overridden.

    Its budget never binds and its period does not end within ten minutes of the test
    clock's now (whatever the day): 1e9 USD paces over 1.3 million USD/h even with a whole
    month left. A test about accounting or rollover sets ``budget`` itself."""
    zone, period = testclock.zone_and_period_lasting(600)
    spec: dict[str, Any] = {
        "mode": "Active",
        "budget": {"period": period, "timeZone": zone, "maxCost": 1e9, "currency": "USD"},
        "planning": {"intervalSeconds": 5, "targetUtilization": 1.0, "headroom": 0.0,
                     "forecastWindowSeconds": 60, "tolerance": 0.0,
                     "scaleDownStabilizationSeconds": 0},
        "fallback": {"afterSeconds": 10, "replicas": 6},
        "targets": targets,
    }
    if prometheus_url:
        spec["prometheus"] = {"url": prometheus_url, "timeoutSeconds": 1}
    for key, value in spec_overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return objects.tokenbudget(namespace, name, spec)


# ------------------------------------------------------------------------ reading back


def create(api: ApiServerThread, api_version: str, plural: str, body: dict[str, Any]) -> Any:
    return api.call(lambda s: s.create_object(api_version, plural, body))


def status_of(api: ApiServerThread, namespace: str, name: str) -> dict[str, Any]:
    obj = api.call(lambda s: s.get_object("tokenscale.dev/v1alpha1", "tokenbudgets",
                                          namespace, name)) or {}
    status: dict[str, Any] = obj.get("status") or {}
    return status


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in status.get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def replicas_of(api: ApiServerThread, namespace: str, name: str) -> int:
    obj = api.call(lambda s: s.get_object("apps/v1", "deployments", namespace, name))
    assert obj is not None, f"deployment {namespace}/{name} is gone"
    return int(obj["spec"]["replicas"])


def replica_history(api: ApiServerThread, namespace: str, name: str) -> list[int]:
    """Every spec.replicas value the Deployment had, in order (the emulator's replica log)."""
    log = api.call(lambda s: s.replica_log("apps/v1", "deployments", namespace, name))
    return [replicas for _, replicas in log]


def scale_patches(api: ApiServerThread, namespace: str, name: str) -> int:
    """PATCH requests the emulator served (any status code) on the Deployment's scale."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale$"
    count: int = api.call(lambda s: s.request_count("PATCH", path))
    return count


def reconciled_after(api: ApiServerThread, namespace: str, name: str,
                     after: str | None) -> dict[str, Any] | None:
    """The status once its lastReconcileTime is later than ``after`` (RFC 3339), else None."""
    st = status_of(api, namespace, name)
    stamp = st.get("lastReconcileTime")
    if stamp and (after is None or stamp > after):
        return st
    return None


def wait_cycles(api: ApiServerThread, namespace: str, name: str, cycles: int = 1,
                timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the budget's status was reconciled ``cycles`` more times."""
    st = status_of(api, namespace, name)
    for _ in range(cycles):
        before = st.get("lastReconcileTime")
        st = wait_for(lambda b=before: reconciled_after(api, namespace, name, b),  # type: ignore[misc]
                      timeout=timeout, message=f"a new reconcile of {namespace}/{name}")
    return st


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


# ------------------------------------------------------------------------ RBAC


_DISCOVERY = ("/api", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi")


def required_permissions(requests: list[Any]) -> set[tuple[str, str, str]]:
    """The (apiGroup, resource[/subresource], verb) triples that served requests needed.

    ``requests`` are the emulator's :class:`RequestRecord`s; discovery needs no grant.
    """
    out: set[tuple[str, str, str]] = set()
    for r in requests:
        parts = [p for p in r.path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis"):
            continue
        if parts[0] == "api":
            group, rest = "", parts[2:]
        elif len(parts) < 3:
            continue  # discovery of a group
        else:
            group, rest = parts[1], parts[3:]
        if not rest:
            continue  # discovery of a group/version
        if rest[0] == "namespaces" and len(rest) >= 3:
            rest = rest[2:]
        resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
        named = len(rest) > 1
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update",
                "DELETE": "delete"}.get(r.method)
        if verb is None:
            verb = ("watch" if "watch=true" in r.query or "watch=1" in r.query
                    else "get" if named else "list")
        out.add((group, resource, verb))
    return out


def granted(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
               and verb in rule.get("verbs", []) for rule in rules)
