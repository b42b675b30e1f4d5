"""The scale benchmark's test rig: emulator, synthetic exporter, Prometheus, operator, py-spy.

Each ``start_*`` function starts one component and records it on the :class:`Rig`;
:func:`teardown` stops whatever was started. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from scale_workload import (
    Config,
    history_blocks,
    history_seconds,
    history_times,
    namespaces,
    pod_name,
    pods,
    populate,
)
from synthetic_vllm import SyntheticFleet
from tokenscale.crd import crd
from tokenscale_testbed.apiserver import ApiServer, ApiServerThread, write_kubeconfig
from tokenscale_testbed.prometheus import PrometheusServer, free_port
from tokenscale_testbed.waiting import wait_for

HERE = Path(__file__).resolve().parent


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


def http_get(url: str, timeout: float = 30.0) -> str:
    """The body of a GET (``timeout`` in s)."""
    with urllib.request.urlopen(url, timeout=timeout) as rsp:
        body: bytes = rsp.read()
    return body.decode()


def post_json(url: str, data: Any) -> Any:
    """POST ``data`` as JSON, return the decoded JSON answer (30 s timeout)."""
    req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as rsp:
        return json.loads(rsp.read())


def alive(url: str) -> bool:
    """True if a GET of ``url`` answers within 5 s."""
    try:
        http_get(url, timeout=5)
        return True
    except OSError:
        return False


def tail(path: Path, n: int = 3000) -> str:
    """The last ``n`` characters of a log file ('' if there is none)."""
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@dataclass
class Rig:
    """Processes and threads of one run, and its log (lines prefixed with the wall time)."""

    cfg: Config
    work: Path
    api: ApiServerThread | None = None
    prom: PrometheusServer | None = None
    exporter: subprocess.Popen[bytes] | None = None
    operators: list[subprocess.Popen[bytes]] = field(default_factory=list)  # one per shard
    profiler: subprocess.Popen[bytes] | None = None
    metrics_ports: list[int] = field(default_factory=list)  # one per shard
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

    def call(self, fn: Callable[[ApiServer], Any], timeout: float = 10.0) -> Any:
        """Run ``fn(server)`` on the emulator's loop (``timeout`` in s)."""
        assert self.api is not None
        return self.api.call(fn, timeout=timeout)

    def rig_processes(self) -> dict[str, psutil.Process]:
        """The rig's own processes by role (not the operator)."""
        out = {"emulator": psutil.Process()}  # this process: the emulator thread, mostly
        if self.exporter is not None:
            out["exporter"] = psutil.Process(self.exporter.pid)
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if child.name() == "prometheus":
                    out["prometheus"] = child
        return out


def start_exporter(rig: Rig, origin: float, now: float) -> Path:
    """Write the pods' history since ``origin`` (unix s) up to ``now`` as promtool blocks and
    start the synthetic vLLM exporter; returns the blocks directory."""
    cfg, work = rig.cfg, rig.work
    loads = pods(cfg)
    fleet = SyntheticFleet(loads, origin, latency=cfg.latency)
    rig.exporter_port = free_port()
    rig.say(f"writing {(now - origin) / 3600:.1f} h of history for {len(loads)} pods")
    blocks = history_blocks(
        fleet, history_times(origin, now - history_seconds(cfg), now - cfg.scrape_interval,
                             cfg.scrape_interval), work,
        f'job="{PrefilledPrometheus.JOB}",instance="127.0.0.1:{rig.exporter_port}"')
    (work / "pods.json").write_text(json.dumps(
        [[p.namespace, p.pod, p.tokens_per_second] for p in loads]))
    rig.exporter = subprocess.Popen(
        [sys.executable, str(HERE / "synthetic_vllm.py"), "--pods", str(work / "pods.json"),
         "--origin", repr(origin), "--port", str(rig.exporter_port),
         *([] if cfg.latency else ["--no-latency"])],
        stdout=subprocess.DEVNULL, stderr=(work / "exporter.log").open("wb"))
    wait_for(lambda: alive(f"http://127.0.0.1:{rig.exporter_port}/metrics"), timeout=30,
             message="the synthetic exporter")
    return blocks


def start_prometheus(rig: Rig, blocks: Path) -> PrometheusServer:
    """Prometheus, prefilled with ``blocks``, scraping the exporter and the operators."""
    rig.metrics_ports = [free_port() for _ in range(rig.cfg.shards)]
    rig.prom = PrefilledPrometheus(
        blocks, targets=[f"127.0.0.1:{rig.exporter_port}",
                         *(f"127.0.0.1:{port}" for port in rig.metrics_ports)],
        scrape_interval=rig.cfg.scrape_interval)
    rig.prom.start()
    prom = rig.prom
    wait_for(lambda: prom.query(f'up{{instance="127.0.0.1:{rig.exporter_port}"}} == 1'),
             timeout=60, interval=0.25, message="Prometheus to scrape the exporter")
    rig.say(f"Prometheus up at {prom.url}: "
            f"{prom.query('count(vllm:prompt_tokens_total)')[0]['value'][1]} pods")
    return prom


def start_emulator(rig: Rig, origin: float, now: float) -> Path:
    """The API emulator with the Deployments and TokenBudgets; returns the kubeconfig."""
    cfg = rig.cfg
    spaces = namespaces(cfg)
    rig.api = ApiServerThread(crds=[crd()], namespaces=spaces)
    rig.api.start()
    t0 = time.monotonic()
    rig.call(lambda s: populate(s, cfg, origin, now), timeout=600)
    rig.say(f"emulator at {rig.api.url}: {cfg.budgets} TokenBudgets, {2 * cfg.budgets} "
            f"Deployments in {len(spaces)} namespaces ({time.monotonic() - t0:.1f}s)")
    return write_kubeconfig(rig.work / "kubeconfig", rig.api.url)


def start_operators(rig: Rig, kubeconfig: Path, prom: PrometheusServer) -> list[psutil.Process]:
    """One ``python -m tokenscale.cli run`` per shard (``TOKENSCALE_SHARDS``/``_SHARD``;
    standalone, no peering) against the emulator and Prometheus."""
    out = []
    for shard, port in enumerate(rig.metrics_ports):
        env = {**os.environ, "KUBECONFIG": str(kubeconfig),
               "TOKENSCALE_PROMETHEUS_URL": prom.url,
               "TOKENSCALE_METRICS_PORT": str(port),
               "TOKENSCALE_HEALTH_PORT": str(free_port()),
               "TOKENSCALE_BIND_ADDRESS": "127.0.0.1",
               "TOKENSCALE_LOG_FORMAT": "text", "TOKENSCALE_LOG_LEVEL": "INFO",
               "TOKENSCALE_RATE_WINDOW": rig.cfg.rate_window,
               "TOKENSCALE_SHARDS": str(rig.cfg.shards), "TOKENSCALE_SHARD": str(shard)}
        if rig.cfg.memory_profile is not None:  # benchmarks/memprobe: SIGUSR2 -> snapshot
            rig.cfg.memory_profile.mkdir(parents=True, exist_ok=True)
            env.update({"TOKENSCALE_MEMPROBE_DIR": str(rig.cfg.memory_profile.resolve()),
                        "PYTHONPATH": os.pathsep.join(
                            [str(Path(__file__).parent / "memprobe"),
                             *filter(None, [os.environ.get("PYTHONPATH")])])})
        log = rig.work / ("operator.log" if rig.cfg.shards == 1 else f"operator-{shard}.log")
        proc = subprocess.Popen([sys.executable, "-m", "tokenscale.cli", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        rig.operators.append(proc)
        out.append(psutil.Process(proc.pid))
    if rig.cfg.memory_profile is not None:  # trace from when each serves its metrics
        for proc, port in zip(rig.operators, rig.metrics_ports, strict=True):
            wait_for(lambda p=port: alive(f"http://127.0.0.1:{p}/metrics"),  # type: ignore[misc]
                     timeout=120, message="an operator's metrics endpoint")
            proc.send_signal(signal.SIGUSR1)
    return out


def planned(rig: Rig) -> float:
    """Budgets planned so far, over all shards (tokenscale_reconcile_duration_seconds_count)."""
    total = 0.0
    for port in rig.metrics_ports:
        with contextlib.suppress(OSError):
            for line in http_get(f"http://127.0.0.1:{port}/metrics", timeout=10).splitlines():
                if line.startswith("tokenscale_reconcile_duration_seconds_count"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def wait_first_statuses(rig: Rig, origin: float, now: float) -> float:
    """Wait until the operators have planned every TokenBudget once (a status is written
    where it changed: the statuses :func:`populate` wrote at ``now`` are recent, so an
    unchanged one is only rewritten at its heartbeat); returns the seconds that took."""
    cfg = rig.cfg
    t0 = time.monotonic()

    def all_planned() -> bool:
        for shard, proc in enumerate(rig.operators):
            if proc.poll() is not None:
                log = rig.work / ("operator.log" if cfg.shards == 1 else f"operator-{shard}.log")
                raise RuntimeError(f"operator {shard} exited: {tail(log)}")
        return planned(rig) >= cfg.budgets

    wait_for(all_planned, timeout=max(120.0, 6 * cfg.interval_seconds + cfg.budgets * 0.05),
             interval=0.5, message="every TokenBudget to be planned")
    return time.monotonic() - t0


def step_load(rig: Rig, steps: list[tuple[str, str]], at: float, extra: float) -> None:
    """Tell the exporter to add ``extra`` tokens/s to the pods of ``steps`` from unix ``at``."""
    found = post_json(f"http://127.0.0.1:{rig.exporter_port}/step",
                      {"pods": [[ns, pod_name(d)] for ns, d in steps], "at": at,
                       "extra": extra})["found"]
    assert found == len(steps), found


def start_profiler(rig: Rig, pid: int, seconds: float, out: Path) -> None:
    """``py-spy record`` of process ``pid`` for ``seconds`` (at least 1) into ``out``."""
    rig.profiler = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
         "--duration", str(max(1, int(seconds))), "--rate", "50", "--threads",
         "--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=(rig.work / "py-spy.log").open("wb"))


def teardown(rig: Rig) -> None:
    """Stop the processes (all at once), Prometheus and the emulator."""
    procs = [p for p in (rig.profiler, *rig.operators, rig.exporter)
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
