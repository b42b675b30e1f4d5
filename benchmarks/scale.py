"""Operator scale benchmark: N TokenBudgets (two targets each) on one `tokenscale run`.

    python benchmarks/scale.py --budgets 1000 [--intervals 4] --json OUT.json

What runs (all on 127.0.0.1):

* the Kubernetes API emulator (:mod:`tokenscale_testbed.apiserver`) in a thread of this
  process, with N TokenBudgets in namespaces of ``--budgets-per-namespace`` each, and their
  2N Deployments (1 replica, 1 ready);
* one synthetic vLLM exporter process (``benchmarks/synthetic_vllm.py``) serving the token
  counters and queue gauge of one pod per Deployment, at a steady 1,000 tokens/s per pod;
* the real Prometheus, scraping that exporter and the operator's /metrics, pre-filled
  (``promtool tsdb create-blocks-from openmetrics``) with a full forecast window of history
  so range queries have their steady-state size from the start;
* the operator, ``python -m tokenscale.cli run``, as its own process (optionally under
  ``py-spy record`` for the measured window, ``--profile``).

Measured over ``--intervals`` planning intervals once every budget has a status and one more
cycle has passed (window from just before a tick to just before the K-th tick after it):

* ``cycle_seconds``: mean of the operator's tokenscale_cycle_duration_seconds in the window
  (all due budgets observed, planned, acted on and reported once);
* ``prometheus_queries_per_cycle``: tokenscale_prometheus_queries_total / cycles;
* ``api_requests_per_cycle`` (and by kind): requests the emulator served / cycles;
* ``status_patches_per_cycle`` / ``status_skipped_per_cycle``: tokenscale_status_patches_total;
* ``cpu_cores``: the operator process's CPU seconds (user + system, all threads) / wall time;
* ``peak_rss_mb``: the operator's VmHWM (peak resident set over its whole life, startup incl.);
* ``scale_lag_seconds``: a load step (+9,000 tokens/s, need 1 -> 5 replicas) on
  ``--step-targets`` targets, 30% into the window; time from the step to the replicas change
  seen by the emulator (median; every value in ``scale_lags``). It includes Prometheus'
  scrape interval, the operator's rate window and the wait for the next planning tick.

The test rig's own CPU (emulator, exporter, Prometheus) is reported apart (``rig_cpu_cores``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tokenscale.crd import crd
from tokenscale.status import differs, significant
from tokenscale_testbed.apiserver import ApiServer, ApiServerThread, write_kubeconfig
from tokenscale_testbed.prometheus import PrometheusServer, free_port
from tokenscale_testbed.waiting import wait_for

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from synthetic_vllm import PodLoad, SyntheticFleet  # noqa: E402

BASE_TOKENS = 1000.0  # tokens/s per pod in steady state: needs 1 replica of 3,000 tokens/s
STEP_TOKENS = 9000.0  # extra tokens/s of the load step: needs 5 replicas
TB = "tokenscale.dev/v1alpha1"


@dataclass
class Config:
    """The benchmark's knobs (see ``--help``)."""

    budgets: int
    intervals: int = 4
    interval_seconds: int = 30
    budgets_per_namespace: int = 10
    scrape_interval: float = 15.0
    rate_window: str = "1m"
    forecast_window_seconds: int = 600
    step_targets: int = 10
    profile: Path | None = None
    keep: Path | None = None
    quiet: bool = False


# ------------------------------------------------------------------------- the workload


def _namespace(i: int, per_ns: int) -> str:
    return f"team-{i // per_ns:04d}"


def _targets(i: int) -> list[str]:
    return [f"m{i:05d}-chat", f"m{i:05d}-code"]


def pod_name(deployment: str) -> str:
    """A ReplicaSet-style pod name (``<deploy>-<10 hex>-<5 hex>``), stable per deployment."""
    digest = hashlib.sha1(deployment.encode()).hexdigest()
    return f"{deployment}-{digest[:10]}-{digest[10:15]}"


def budget_body(i: int, cfg: Config) -> dict[str, Any]:
    """TokenBudget ``tb-<i>``: a daily cost budget over two Deployments."""
    return {
        "apiVersion": TB, "kind": "TokenBudget",
        "metadata": {"name": f"tb-{i:05d}", "namespace": _namespace(i, cfg.budgets_per_namespace)},
        "spec": {
            "mode": "Active",
            "budget": {"period": "Day", "timeZone": "UTC", "maxCost": 5000, "currency": "USD"},
            "planning": {"intervalSeconds": cfg.interval_seconds,
                         "forecastWindowSeconds": cfg.forecast_window_seconds},
            "targets": [
                {"name": name.split("-")[-1],
                 "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": 1, "maxReplicas": 16, "tokensPerReplicaPerSecond": 3000,
                 "costPerReplicaHour": 3.9, "coldStartSeconds": 60}
                for name in _targets(i)
            ],
        },
    }


def deployment_body(namespace: str, name: str) -> dict[str, Any]:
    """A vLLM Deployment with 1 replica, 1 ready."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "vllm",
                                                       "image": "vllm/vllm-openai"}]}}},
        "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1},
    }


def running_status(origin: float, now: float) -> dict[str, Any]:
    """The status an operator running since ``origin`` (this period) would have written:
    the spend so far, so the benchmark sees a budget hours into its period, not a new one."""
    def stamp(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    midnight = math.floor(now / 86400) * 86400
    hours = max(0.0, now - max(origin, midnight)) / 3600
    return {
        "phase": "Active",
        "period": {"start": stamp(midnight), "end": stamp(midnight + 86400)},
        "spend": {"cost": 2 * 3.9 * hours, "tokens": 2 * BASE_TOKENS * hours * 3600},
        "lastReconcileTime": stamp(now),
    }


def populate(server: ApiServer, cfg: Config, origin: float, now: float) -> None:
    """Create the Deployments and TokenBudgets (on the emulator's loop), the latter with the
    status of an operator that has served them since the period start."""
    for i in range(cfg.budgets):
        ns = _namespace(i, cfg.budgets_per_namespace)
        for name in _targets(i):
            server.create_object("apps/v1", "deployments", deployment_body(ns, name))
    status = running_status(origin, now)
    for i in range(cfg.budgets):
        server.create_object(TB, "tokenbudgets", {**budget_body(i, cfg), "status": status})


def pods(cfg: Config) -> list[PodLoad]:
    return [PodLoad(_namespace(i, cfg.budgets_per_namespace), pod_name(d), BASE_TOKENS)
            for i in range(cfg.budgets) for d in _targets(i)]


def step_deployments(cfg: Config) -> list[tuple[str, str]]:
    """The (namespace, deployment) that get the load step: spread evenly over the budgets."""
    n = min(cfg.step_targets, cfg.budgets)
    picks = sorted({round(k * (cfg.budgets - 1) / max(1, n - 1)) for k in range(n)})
    return [(_namespace(i, cfg.budgets_per_namespace), _targets(i)[0]) for i in picks]


# ------------------------------------------------------------------------- the test rig


class PrefilledPrometheus(PrometheusServer):
    """PrometheusServer whose data dir receives promtool blocks before the binary starts."""

    JOB = "testbed"  # the scrape job name PrometheusServer configures

    def __init__(self, blocks: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._blocks: Path | None = blocks

    def _write_targets(self) -> None:
        # start() calls this after creating the data dir and before running prometheus.
        if self._blocks is not None:
            for block in self._blocks.iterdir():
                shutil.move(str(block), str(self.workdir / "data" / block.name))
            self._blocks = None
        super()._write_targets()


def history_times(origin: float, fine_from: float, end: float, step: float) -> list[float]:
    """Sample times: every 5 min from ``origin`` (the period start) to ``fine_from``, then
    every ``step`` s (the scrape interval) to ``end``: ``increase()`` since the period start
    sees the whole period, range queries over the forecast window see scrape resolution."""
    times = []
    t = origin
    while t < fine_from:
        times.append(t)
        t += 300.0
    t = fine_from
    while t <= end:
        times.append(t)
        t += step
    return times


def history_blocks(fleet: SyntheticFleet, times: list[float], work: Path,
                   target_labels: str) -> Path:
    """promtool TSDB blocks of the fleet's counters at ``times``."""
    text = work / "history.om"
    with text.open("w") as out:
        fleet.write_history(out, times, target_labels)
    blocks = work / "blocks"
    blocks.mkdir()
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(text),
                    str(blocks)], check=True, capture_output=True)
    text.unlink()
    return blocks


def _get(url: str, timeout: float = 30.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as rsp:
        body: bytes = rsp.read()
    return body.decode()


def _post_json(url: str, data: Any) -> Any:
    req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as rsp:
        return json.loads(rsp.read())


def operator_metrics(port: int) -> dict[str, float]:
    """The operator's counters and histogram sums we need, by sample name + labels."""
    text = _get(f"http://127.0.0.1:{port}/metrics")
    out: dict[str, float] = {}
    wanted = ("tokenscale_cycle", "tokenscale_prometheus", "tokenscale_status_patches",
              "tokenscale_scale", "tokenscale_tokenbudgets", "tokenscale_reconcile_duration")
    for family in text_string_to_metric_families(
            "\n".join(line for line in text.splitlines() if line.startswith(wanted)
                      or line.startswith(tuple("# HELP " + w for w in wanted))
                      or line.startswith(tuple("# TYPE " + w for w in wanted)))):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if s.name.endswith("_bucket"):
                labels += f",le={s.labels.get('le')}"
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def _sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


_KINDS = [
    ("list_deployments", "GET", re.compile(r"/deployments$")),
    ("list_hpas", "GET", re.compile(r"/horizontalpodautoscalers$")),
    ("list_scaledobjects", "GET", re.compile(r"/scaledobjects$")),
    ("patch_status", "PATCH", re.compile(r"/tokenbudgets/[^/]+/status$")),
    ("patch_scale", "PATCH", re.compile(r"/scale$")),
    ("post_event", "POST", re.compile(r"/events$")),
]


def classify(counts: Counter[tuple[str, str]]) -> dict[str, int]:
    """Request counts by kind (``other``: watches, discovery, the rest)."""
    out: dict[str, int] = {name: 0 for name, _, _ in _KINDS}
    out["other"] = 0
    for (method, path), n in counts.items():
        for name, m, pattern in _KINDS:
            if method == m and pattern.search(path):
                out[name] += n
                break
        else:
            out["other"] += n
    return out


@dataclass
class Snapshot:
    at: float
    metrics: dict[str, float]
    op_cpu: float
    rig_cpu: dict[str, float]
    requests: Counter[tuple[str, str]]


@dataclass
class Rig:
    """Processes and threads of one run."""

    cfg: Config
    work: Path
    api: ApiServerThread | None = None
    prom: PrometheusServer | None = None
    exporter: subprocess.Popen[bytes] | None = None
    operator: subprocess.Popen[bytes] | None = None
    profiler: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    exporter_port: int = 0
    log: list[str] = field(default_factory=list)

    def say(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        self.log.append(line)
        if not self.cfg.quiet:
            print(line, file=sys.stderr, flush=True)

    @property
    def server(self) -> ApiServer:
        assert self.api is not None and self.api.server is not None
        return self.api.server

    def rig_processes(self) -> dict[str, psutil.Process]:
        out = {"emulator": psutil.Process()}  # this process: the emulator thread, mostly
        if self.exporter is not None:
            out["exporter"] = psutil.Process(self.exporter.pid)
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if child.name() == "prometheus":
                    out["prometheus"] = child
        return out

    def snapshot(self, op: psutil.Process, metrics_first: bool) -> Snapshot:
        # The scrape of /metrics costs the operator CPU: keep it outside the window.
        metrics = operator_metrics(self.metrics_port) if metrics_first else {}
        op_cpu = cpu_seconds(op)
        rig = {name: cpu_seconds(p) for name, p in self.rig_processes().items()}
        requests: Counter[tuple[str, str]] = Counter(self.api.call(lambda s: dict(s.counts))
                                                     if self.api else {})
        at = time.time()
        if not metrics_first:
            metrics = operator_metrics(self.metrics_port)
        return Snapshot(at, metrics, op_cpu, rig, requests)


# ------------------------------------------------------------------------------- run


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def statuses(server: ApiServer, after: str) -> int:
    """How many TokenBudgets have a lastReconcileTime later than ``after`` (RFC 3339)."""
    return sum(1 for o in server.list_objects(TB, "tokenbudgets")
               if str((o.get("status") or {}).get("lastReconcileTime") or "") > after)


def events_by_reason(server: ApiServer, since: float) -> dict[str, int]:
    """Events the operator posted at or after unix time ``since``, by reason."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
    out: Counter[str] = Counter()
    for event in server.list_objects("v1", "events"):
        if str(event.get("lastTimestamp") or "") >= stamp:
            out[str(event.get("reason"))] += 1
    return dict(out.most_common())


def sample_statuses(server: ApiServer, names: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [copy.deepcopy((server.get_object(TB, "tokenbudgets", ns, n) or {}).get("status")
                          or {}) for ns, n in names]


def changed_paths(before: Any, after: Any, prefix: str = "", key: str = "") -> list[str]:
    """Dotted paths whose values differ by the operator's patch policy (lists by index)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in sorted(set(before) | set(after)):
            out += changed_paths(before.get(k), after.get(k), f"{prefix}.{k}", k)
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            out += changed_paths(b, a, f"{prefix}[{i}]", key)
        return out
    return [prefix or "."] if differs(before, after, key) else []


def replicas_of(server: ApiServer, keys: list[tuple[str, str]]) -> list[int]:
    out = []
    for ns, name in keys:
        obj = server.get_object("apps/v1", "deployments", ns, name) or {}
        out.append(int((obj.get("spec") or {}).get("replicas") or 0))
    return out


def next_tick(now: float, interval: float) -> float:
    return (math.floor(now / interval) + 1) * interval


def run(cfg: Config) -> dict[str, Any]:
    """Run the benchmark; returns the result dict (see the module docstring)."""
    work = Path(tempfile.mkdtemp(prefix="tokenscale-scale-"))
    rig = Rig(cfg, work)
    try:
        return _run(rig)
    finally:
        _teardown(rig)
        if cfg.keep is not None:
            shutil.copytree(work, cfg.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)


def _run(rig: Rig) -> dict[str, Any]:
    cfg, work = rig.cfg, rig.work
    started = time.monotonic()
    n_ns = math.ceil(cfg.budgets / cfg.budgets_per_namespace)
    namespaces = [_namespace(i * cfg.budgets_per_namespace, cfg.budgets_per_namespace)
                  for i in range(n_ns)]

    # 1. synthetic vLLM series since the period start (UTC midnight), at least one forecast
    # window of it at scrape resolution
    history = cfg.forecast_window_seconds + 120
    now = time.time()
    midnight = math.floor(now / 86400) * 86400
    origin = min(midnight, now - history)
    loads = pods(cfg)
    fleet = SyntheticFleet(loads, origin)
    rig.exporter_port = free_port()
    rig.say(f"writing {(now - origin) / 3600:.1f} h of history for {len(loads)} pods")
    blocks = history_blocks(
        fleet, history_times(origin, now - history, now - cfg.scrape_interval,
                             cfg.scrape_interval), work,
        f'job="{PrefilledPrometheus.JOB}",instance="127.0.0.1:{rig.exporter_port}"')
    (work / "pods.json").write_text(json.dumps(
        [[p.namespace, p.pod, p.tokens_per_second] for p in loads]))
    rig.exporter = subprocess.Popen(
        [sys.executable, str(HERE / "synthetic_vllm.py"), "--pods", str(work / "pods.json"),
         "--origin", repr(origin), "--port", str(rig.exporter_port)],
        stdout=subprocess.DEVNULL, stderr=(work / "exporter.log").open("wb"))
    wait_for(lambda: _alive(f"http://127.0.0.1:{rig.exporter_port}/metrics"), timeout=30,
             message="the synthetic exporter")

    # 2. Prometheus, prefilled, scraping the exporter and the operator
    rig.metrics_port = free_port()
    rig.prom = PrefilledPrometheus(
        blocks, targets=[f"127.0.0.1:{rig.exporter_port}", f"127.0.0.1:{rig.metrics_port}"],
        scrape_interval=cfg.scrape_interval)
    rig.prom.start()
    prom = rig.prom
    wait_for(lambda: prom.query(f'up{{instance="127.0.0.1:{rig.exporter_port}"}} == 1'),
             timeout=60, interval=0.25, message="Prometheus to scrape the exporter")
    rig.say(f"Prometheus up at {prom.url}: "
            f"{prom.query('count(vllm:prompt_tokens_total)')[0]['value'][1]} pods")

    # 3. the emulator with Deployments and TokenBudgets
    rig.api = ApiServerThread(crds=[crd()], namespaces=namespaces)
    rig.api.start()
    t0 = time.monotonic()
    rig.api.call(lambda s: populate(s, cfg, origin, now), timeout=600)
    rig.say(f"emulator at {rig.api.url}: {cfg.budgets} TokenBudgets, {2 * cfg.budgets} "
            f"Deployments in {n_ns} namespaces ({time.monotonic() - t0:.1f}s)")
    kubeconfig = write_kubeconfig(work / "kubeconfig", rig.api.url)

    # 4. the operator
    env = {**os.environ, "KUBECONFIG": str(kubeconfig),
           "TOKENSCALE_PROMETHEUS_URL": prom.url,
           "TOKENSCALE_METRICS_PORT": str(rig.metrics_port),
           "TOKENSCALE_HEALTH_PORT": str(free_port()),
           "TOKENSCALE_BIND_ADDRESS": "127.0.0.1",
           "TOKENSCALE_LOG_FORMAT": "text", "TOKENSCALE_LOG_LEVEL": "INFO",
           "TOKENSCALE_RATE_WINDOW": cfg.rate_window}
    oplog = work / "operator.log"
    rig.operator = subprocess.Popen([sys.executable, "-m", "tokenscale.cli", "run"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=oplog.open("wb"))
    op = psutil.Process(rig.operator.pid)
    t0 = time.monotonic()
    created = str(running_status(origin, now)["lastReconcileTime"])

    def all_reported() -> bool:
        if rig.operator is not None and rig.operator.poll() is not None:
            raise RuntimeError(f"the operator exited: {_tail(oplog)}")
        return bool(rig.api and rig.api.call(lambda s: statuses(s, created), timeout=60)
                    >= cfg.budgets)

    wait_for(all_reported, timeout=max(120.0, 6 * cfg.interval_seconds + cfg.budgets * 0.05),
             interval=0.5, message="every TokenBudget to get a status")
    first_status = time.monotonic() - t0
    rig.say(f"all {cfg.budgets} TokenBudgets have a status {first_status:.1f}s after start")

    # 5. the measured window: from just before a tick (one full cycle after the first
    # statuses) to just before the K-th tick after it
    interval = float(cfg.interval_seconds)
    lead = min(1.0, 0.05 * interval)
    begin = next_tick(time.time() + interval, interval) - lead
    time.sleep(max(0.0, begin - time.time()))
    s0 = rig.snapshot(op, metrics_first=True)
    sampled = [(_namespace(i, cfg.budgets_per_namespace), f"tb-{i:05d}")
               for i in range(cfg.budgets)][-20:]  # not stepped unless N is tiny
    status0 = rig.api.call(lambda s: sample_statuses(s, sampled), timeout=60)
    end = begin + cfg.intervals * interval

    steps = step_deployments(cfg)
    step_at = s0.at + 0.3 * interval
    lags: dict[tuple[str, str], float] = {}
    watching = threading.Event()

    def watch_replicas() -> None:
        while not watching.is_set():
            now = time.time()
            assert rig.api is not None
            current = rig.api.call(lambda s: replicas_of(s, steps))
            for key, value in zip(steps, current, strict=True):
                if value != 1 and key not in lags and now >= step_at:
                    lags[key] = now - step_at
            time.sleep(0.1)

    watcher = threading.Thread(target=watch_replicas, daemon=True)
    time.sleep(max(0.0, step_at - time.time()))
    found = _post_json(f"http://127.0.0.1:{rig.exporter_port}/step",
                       {"pods": [[ns, pod_name(d)] for ns, d in steps], "at": step_at,
                        "extra": STEP_TOKENS})["found"]
    assert found == len(steps), found
    watcher.start()
    profile_window = end - time.time()
    if cfg.profile is not None:
        rig.profiler = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(op.pid),
             "--duration", str(max(1, int(profile_window))), "--rate", "50", "--threads",
             "--format", "raw", "--output", str(cfg.profile), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=(work / "py-spy.log").open("wb"))
    rig.say(f"measuring {cfg.intervals} intervals of {interval:g}s; load step on "
            f"{len(steps)} targets")
    time.sleep(max(0.0, end - time.time()))
    s1 = rig.snapshot(op, metrics_first=False)
    events = rig.api.call(lambda s: events_by_reason(s, s0.at), timeout=60)
    status1 = rig.api.call(lambda s: sample_statuses(s, sampled), timeout=60)
    status_changes: Counter[str] = Counter()
    for before, after in zip(status0, status1, strict=True):
        status_changes.update(re.sub(r"\[\d+\]", "[]", p) for p in changed_paths(
            significant(before), significant(after)))
    deadline = time.time() + 4 * interval
    while len(lags) < len(steps) and time.time() < deadline:
        time.sleep(0.2)
    watching.set()
    watcher.join(5)
    if rig.profiler is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            rig.profiler.wait(60)

    # 6. figures
    m0, m1 = s0.metrics, s1.metrics
    wall = s1.at - s0.at
    cycles = _sum(m1, "tokenscale_cycles_total") - _sum(m0, "tokenscale_cycles_total")
    per = max(cycles, 1.0)
    duration_sum = (_sum(m1, "tokenscale_cycle_duration_seconds_sum")
                    - _sum(m0, "tokenscale_cycle_duration_seconds_sum"))
    by_kind_0, by_kind_1 = classify(s0.requests), classify(s1.requests)
    by_kind = {k: (by_kind_1[k] - by_kind_0[k]) / per for k in by_kind_1}
    rig_cpu = {k: (s1.rig_cpu[k] - s0.rig_cpu.get(k, 0.0)) / wall for k in s1.rig_cpu}
    lag_values = sorted(lags.values())
    result: dict[str, Any] = {
        "budgets": cfg.budgets,
        "targets": 2 * cfg.budgets,
        "namespaces": n_ns,
        "interval_seconds": cfg.interval_seconds,
        "intervals": cfg.intervals,
        "cycles": cycles,
        "window_seconds": round(wall, 2),
        "cycle_seconds": round(duration_sum / per, 3),
        "prometheus_queries_per_cycle": round(
            (_sum(m1, "tokenscale_prometheus_queries_total")
             - _sum(m0, "tokenscale_prometheus_queries_total")) / per, 2),
        "api_requests_per_cycle": round(sum(by_kind.values()), 1),
        "api_requests_per_cycle_by_kind": {k: round(v, 2) for k, v in by_kind.items()},
        "status_patches_per_cycle": round(
            (_sum(m1, "tokenscale_status_patches_total{outcome=sent")
             - _sum(m0, "tokenscale_status_patches_total{outcome=sent")) / per, 1),
        "status_skipped_per_cycle": round(
            (_sum(m1, "tokenscale_status_patches_total{outcome=skipped")
             - _sum(m0, "tokenscale_status_patches_total{outcome=skipped")) / per, 1),
        "cpu_cores": round((s1.op_cpu - s0.op_cpu) / wall, 4),
        "peak_rss_mb": round(peak_rss_mb(op.pid), 1),
        "rss_mb_end": round(op.memory_info().rss / 2**20, 1),
        "scale_lag_seconds": round(statistics.median(lag_values), 2) if lag_values else None,
        "scale_lags": [round(v, 2) for v in lag_values],
        "scale_lag_missing": len(steps) - len(lag_values),
        "first_status_seconds": round(first_status, 1),
        "events_in_window_by_reason": events,
        "status_significant_changes": dict(status_changes.most_common(12)),
        "rig_cpu_cores": {k: round(v, 3) for k, v in rig_cpu.items()},
        "scrape_interval_seconds": cfg.scrape_interval,
        "rate_window": cfg.rate_window,
        "forecast_window_seconds": cfg.forecast_window_seconds,
        "budgets_per_namespace": cfg.budgets_per_namespace,
        "total_seconds": round(time.monotonic() - started, 1),
    }
    errors = _sum(m1, "tokenscale_prometheus_errors_total") - _sum(
        m0, "tokenscale_prometheus_errors_total")
    result["prometheus_errors_per_cycle"] = round(errors / per, 2)
    return result


def _alive(url: str) -> bool:
    try:
        _get(url, timeout=5)
        return True
    except OSError:
        return False


def _teardown(rig: Rig) -> None:
    procs = [p for p in (rig.profiler, rig.operator, rig.exporter)
             if p is not None and p.poll() is None]
    for proc in procs:  # all at once: the operator's graceful stop takes a few seconds
        proc.terminate()
    if rig.prom is not None:
        rig.prom.stop()
    if rig.api is not None:
        rig.api.stop()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ---------------------------------------------------------------------------- output

COLUMNS = [
    ("budgets", "TokenBudgets", "{:,}"),
    ("cycle_seconds", "cycle s", "{:.2f}"),
    ("prometheus_queries_per_cycle", "Prom queries/cycle", "{:g}"),
    ("api_requests_per_cycle", "API requests/cycle", "{:,.0f}"),
    ("status_patches_per_cycle", "status patches/cycle", "{:,.0f}"),
    ("cpu_cores", "CPU cores", "{:.3f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("scale_lag_seconds", "scale lag s", "{}"),
]


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of results."""
    head = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---:" for _ in COLUMNS) + "|"
    rows = [head, rule]
    for r in results:
        cells = []
        for key, _, fmt in COLUMNS:
            value = r.get(key)
            cells.append("n/a" if value is None else fmt.format(value))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> tuple[Config, Path | None]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--budgets", type=int, required=True, help="number of TokenBudgets (N)")
    p.add_argument("--intervals", type=int, default=4, help="planning intervals measured (K)")
    p.add_argument("--interval-seconds", type=int, default=30,
                   help="spec.planning.intervalSeconds of every budget (>= 5)")
    p.add_argument("--budgets-per-namespace", type=int, default=10)
    p.add_argument("--scrape-interval", type=float, default=15.0,
                   help="Prometheus scrape interval (s)")
    p.add_argument("--rate-window", default="1m", help="TOKENSCALE_RATE_WINDOW")
    p.add_argument("--forecast-window", type=int, default=600,
                   help="spec.planning.forecastWindowSeconds (s)")
    p.add_argument("--step-targets", type=int, default=10, help="targets given a load step")
    p.add_argument("--profile", type=Path, help="py-spy raw (collapsed) profile of the window")
    p.add_argument("--keep", type=Path, help="copy the work dir (logs) here")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.budgets < 1 or a.intervals < 1 or a.interval_seconds < 5:
        p.error("--budgets >= 1, --intervals >= 1, --interval-seconds >= 5")
    cfg = Config(budgets=a.budgets, intervals=a.intervals, interval_seconds=a.interval_seconds,
                 budgets_per_namespace=a.budgets_per_namespace,
                 scrape_interval=a.scrape_interval, rate_window=a.rate_window,
                 forecast_window_seconds=a.forecast_window, step_targets=a.step_targets,
                 profile=a.profile, keep=a.keep, quiet=a.quiet)
    return cfg, a.json


def main(argv: list[str] | None = None) -> int:
    cfg, out = parse_args(argv)
    result = run(cfg)
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(table([result]))
    print(json.dumps({k: result[k] for k in ("api_requests_per_cycle_by_kind", "rig_cpu_cores",
                                              "scale_lags", "first_status_seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
