"""Start and stop the demo's components: API emulator, Prometheus, vLLM fleet, operator.

:class:`Stack` starts them in order (each step raises :class:`DemoError` with the reason)
and :meth:`Stack.stop` stops everything it started, in reverse order, whatever happened:
the emulator and the fleet run on threads of this process; Prometheus and the operator
(``tokenscale run``) are child processes in their own sessions (a Ctrl-C in the terminal
reaches only the demo, which then stops them in order).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tokenscale.demo.budgets import AdaptedBudget
from tokenscale.demo.workloads import WorkloadDemand
from tokenscale_testbed.apiserver import ApiServer, ApiServerThread, write_kubeconfig
from tokenscale_testbed.fleet import SERVERS, FleetThread, ModelConfig
from tokenscale_testbed.kubectl import Kubectl, KubectlMissingError, find_kubectl
from tokenscale_testbed.prometheus import (
    PrometheusError,
    PrometheusMissingError,
    PrometheusServer,
    find_prometheus,
    free_port,
)

PROMPT_FRACTION = 0.5


class DemoError(RuntimeError):
    """A component could not start; the message says why and what to do."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if ``host:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _port_owner(port: int) -> str:
    """``" (pid 123: prometheus)"`` if psutil can tell who listens on ``port``."""
    try:
        import psutil

        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN" and conn.pid:
                return f" (pid {conn.pid}: {psutil.Process(conn.pid).name()})"
    except Exception:  # psutil missing or not permitted: the message works without it
        pass
    return ""


def require_free_port(port: int, flag: str) -> None:
    """Raise :class:`DemoError` if ``port`` is taken, naming the flag that changes it."""
    if port and not port_is_free(port):
        raise DemoError(f"port {port} on 127.0.0.1 is already in use{_port_owner(port)}: stop "
                        f"that process or choose another port with {flag} PORT")


def repo_root() -> Path | None:
    """The source checkout this package runs from (editable install), if any."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "manifests").is_dir():
            return parent
    return None


def workload_manifest(demand: WorkloadDemand, replicas: int) -> dict[str, Any]:
    """The Deployment or StatefulSet of one demo workload."""
    spec = demand.spec
    labels = {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/part-of": "tokenscale-demo"}
    body: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": spec.kind,
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels,
                     "annotations": {"tokenscale.dev/demo-demand": demand.source}},
        "spec": {"replicas": replicas,
                 "selector": {"matchLabels": {"app.kubernetes.io/name": spec.name}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{
                                  "name": "vllm", "image": "vllm/vllm-openai:latest",
                                  "args": ["--model", spec.name],
                                  "ports": [{"name": "http", "containerPort": 8000}]}]}}},
    }
    if spec.kind == "StatefulSet":
        body["spec"]["serviceName"] = spec.name
    return body


@dataclass
class ChildInfo:
    """A process the demo started (for the summary and the orphan check)."""

    name: str
    pid: int
    create_time: float


@dataclass
class Stack:
    """The running demo. Fill in the options, then :meth:`start`; always :meth:`stop`."""

    demo_dir: Path
    api_port: int
    prometheus_port: int
    speedup: float
    log: Callable[[str], None] = print
    api: ApiServerThread | None = None
    kubectl: Kubectl | None = None
    fleet: FleetThread | None = None
    prometheus: PrometheusServer | None = None
    operator: subprocess.Popen[bytes] | None = None
    operator_metrics_port: int = 0
    operator_health_port: int = 0
    children: list[ChildInfo] = field(default_factory=list)
    _operator_log: Any = None

    # ------------------------------------------------------------------ paths

    @property
    def kubeconfig(self) -> Path:
        return self.demo_dir / "kubeconfig"

    @property
    def operator_log_path(self) -> Path:
        return self.demo_dir / "operator.log"

    def ports(self) -> list[int]:
        """Every port the demo listens on (for the summary and the port check)."""
        ports = [self.api_port, self.prometheus_port, self.operator_metrics_port,
                 self.operator_health_port]
        if self.fleet is not None and self.fleet.fleet is not None:
            ports.append(self.fleet.fleet.metrics_port)
        return [p for p in ports if p]

    # ------------------------------------------------------------------ start

    def preflight(self) -> None:
        """Ports free, kubectl and prometheus present: fail before starting anything."""
        require_free_port(self.api_port, "--api-port")
        require_free_port(self.prometheus_port, "--prometheus-port")
        if self.api_port == self.prometheus_port:
            raise DemoError("--api-port and --prometheus-port must differ")
        try:
            find_kubectl()
        except KubectlMissingError as e:
            raise DemoError(f"{e} (the venv of `make demo` has it)") from None
        try:
            find_prometheus()
        except PrometheusMissingError as e:
            raise DemoError(
                "Prometheus is not installed: " + str(e) + ". `make demo` installs Debian's "
                "prometheus package when run as root or with sudo; otherwise ask an admin to "
                "run: apt-get install -y --no-install-recommends prometheus") from None

    def start_api(self, crd_path: Path, samples_namespaces: Sequence[str]) -> None:
        """The emulator, a kubeconfig, the namespaces and the CRD (applied with kubectl)."""
        self.demo_dir.mkdir(parents=True, exist_ok=True)
        self.api = ApiServerThread(port=self.api_port, namespaces=["default"])
        try:
            self.api.start()
        except (RuntimeError, TimeoutError, OSError) as e:
            cause = e.__cause__ or e
            raise DemoError(f"the Kubernetes API emulator did not start on port "
                            f"{self.api_port}: {cause}") from None
        write_kubeconfig(self.kubeconfig, self.api.url, namespace="inference")
        self.kubectl = Kubectl(self.kubeconfig, cache_dir=self.demo_dir / "kubectl-cache")
        namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                      for ns in sorted(set(samples_namespaces))]
        self.apply_documents(namespaces, "namespaces.yaml")
        self._kubectl("apply", "--validate=false", "-f", str(crd_path))
        deadline = time.monotonic() + 20
        while True:
            got = self.kubectl.run("get", "tokenbudgets", "-A", check=False)
            if got.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise DemoError(f"the TokenBudget CRD was not served: {got.stderr.strip()}")
            time.sleep(0.2)

    def _kubectl(self, *args: str) -> str:
        assert self.kubectl is not None
        result = self.kubectl.run(*args, check=False)
        if result.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def apply_documents(self, docs: Sequence[dict[str, Any]], file_name: str) -> Path:
        """Write ``docs`` to the demo dir and ``kubectl apply --validate=false -f`` them."""
        path = self.demo_dir / file_name
        path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
        self._kubectl("apply", "--validate=false", "-f", str(path))
        return path

    def start_fleet(self, demands: Sequence[WorkloadDemand],
                    capacity: dict[str, tuple[float, float]], replicas: dict[str, int],
                    engines: Mapping[str, str] | None = None) -> None:
        """The workloads (kubectl apply) and the simulated fleet that serves them.

        ``capacity[name] = (tokens/s per ready replica, cold start in simulated seconds)``;
        ``replicas[name]``: the initial spec.replicas; ``engines[name]``: the serving engine
        whose /metrics format its pods speak (vllm when absent or custom).
        """
        assert self.api is not None
        self.apply_documents([workload_manifest(d, replicas[d.spec.name]) for d in demands],
                             "workloads.yaml")
        models = [ModelConfig(
            namespace=d.spec.namespace, name=d.spec.name, kind=d.spec.kind,
            tokens_per_replica_per_second=capacity[d.spec.name][0],
            cold_start_seconds=capacity[d.spec.name][1], demand=d,
            tokens_per_request=d.tokens_per_request, prompt_fraction=PROMPT_FRACTION,
            server=_server((engines or {}).get(d.spec.name, "vllm")),
        ) for d in demands]
        self.fleet = FleetThread(self.api.url, models, speedup=self.speedup, tick_seconds=0.2)
        try:
            self.fleet.start()
        except (TimeoutError, OSError) as e:
            raise DemoError(f"the simulated vLLM fleet did not start: {e}") from None

    def start_prometheus(self) -> None:
        """Real Prometheus scraping the fleet (and the operator's /metrics) every second."""
        assert self.fleet is not None and self.fleet.fleet is not None
        self.operator_metrics_port = free_port()
        self.operator_health_port = free_port()
        try:
            self.prometheus = PrometheusServer(
                targets=[self.fleet.fleet.metrics_target], scrape_interval=1.0,
                port=self.prometheus_port)
            self.prometheus.start()
        except (PrometheusError, PrometheusMissingError, OSError) as e:
            raise DemoError(f"Prometheus did not start on port {self.prometheus_port}: "
                            f"{e}") from None
        self.prometheus.add_targets([f"127.0.0.1:{self.operator_metrics_port}"],
                                    {"job": "tokenscale-operator"})
        proc = getattr(self.prometheus, "_proc", None)
        if proc is not None:
            self._remember("prometheus", proc.pid)
        try:  # the operator's first cycle then sees fresh token rates (no Degraded start)
            self.prometheus.wait_for_series("rate(vllm:generation_tokens_total[10s])",
                                            timeout=30)
        except (TimeoutError, PrometheusError) as e:
            raise DemoError(f"Prometheus does not see the fleet's vLLM metrics: {e}") from None

    def _remember(self, name: str, pid: int) -> None:
        create = 0.0
        with contextlib.suppress(Exception):
            import psutil

            create = psutil.Process(pid).create_time()
        self.children.append(ChildInfo(name, pid, create))

    def operator_env(self) -> dict[str, str]:
        """The environment of ``tokenscale run`` (see :mod:`tokenscale.settings`)."""
        assert self.prometheus is not None
        env = dict(os.environ)
        env.update({
            "KUBECONFIG": str(self.kubeconfig.resolve()),
            "TOKENSCALE_PROMETHEUS_URL": self.prometheus.url,
            "TOKENSCALE_NAMESPACES": "inference",
            "TOKENSCALE_METRICS_PORT": str(self.operator_metrics_port),
            "TOKENSCALE_HEALTH_PORT": str(self.operator_health_port),
            "TOKENSCALE_BIND_ADDRESS": "127.0.0.1",
            "TOKENSCALE_LOG_FORMAT": "text",
            "TOKENSCALE_RATE_WINDOW": "10s",
            "TOKENSCALE_STALE_AFTER_SECONDS": "30",
            "TOKENSCALE_INSTANCE": "tokenscale-demo",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def start_operator(self, timeout: float = 60.0) -> None:
        """``tokenscale run`` as a child process; wait for its /readyz."""
        self._operator_log = self.operator_log_path.open("wb")
        cmd = [sys.executable, "-m", "tokenscale.cli", "run"]
        self.operator = subprocess.Popen(cmd, env=self.operator_env(), stdin=subprocess.DEVNULL,
                                         stdout=self._operator_log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self._remember("operator", self.operator.pid)
        url = f"http://127.0.0.1:{self.operator_health_port}/readyz"
        deadline = time.monotonic() + timeout
        while True:
            if self.operator.poll() is not None:
                raise DemoError(f"the operator exited with {self.operator.returncode} at start; "
                                f"its log ({self.operator_log_path}) ends with:\n"
                                f"{self.operator_log_tail()}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError,
                                     ValueError), urllib.request.urlopen(url, timeout=1) as rsp:
                if json.loads(rsp.read()).get("ready"):
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"the operator was not ready within {timeout:.0f} s; see "
                                f"{self.operator_log_path}:\n{self.operator_log_tail()}")
            time.sleep(0.2)

    def operator_log_tail(self, lines: int = 15) -> str:
        if not self.operator_log_path.exists():
            return ""
        text = self.operator_log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def operator_errors(self) -> tuple[int, str]:
        """Number of ERROR lines in the operator's log and the last one (for the view)."""
        if not self.operator_log_path.exists():
            return 0, ""
        errors = [line for line in self.operator_log_path.read_text(errors="replace")
                  .splitlines() if "[ERROR" in line or line.startswith(("NameError",
                                                                       "Traceback"))]
        real = [e for e in errors if "[ERROR" in e]
        detail = next((e for e in reversed(errors) if not e.startswith("Traceback")), "")
        return len(real), detail

    def operator_alive(self) -> bool:
        return self.operator is not None and self.operator.poll() is None

    def apply_budgets(self, budgets: Sequence[AdaptedBudget]) -> Path:
        """``kubectl apply`` the adapted TokenBudgets (written to tokenbudgets.yaml)."""
        return self.apply_documents([b.manifest for b in budgets], "tokenbudgets.yaml")

    # ------------------------------------------------------------------ reading state

    def call(self, fn: Callable[[ApiServer], Any]) -> Any:
        """Run ``fn(server)`` on the emulator's loop (thread-safe)."""
        assert self.api is not None
        return self.api.call(fn)

    # ------------------------------------------------------------------ stop

    def stop(self) -> list[str]:
        """Stop everything started, newest first; returns problems (empty if clean)."""
        problems: list[str] = []
        if self.operator is not None:
            if self.operator.poll() is None:
                self.operator.send_signal(signal.SIGTERM)
                try:
                    self.operator.wait(15)
                except subprocess.TimeoutExpired:
                    problems.append("the operator ignored SIGTERM for 15 s and was killed")
                    self.operator.kill()
                    self.operator.wait(5)
            self.operator = None
        if self._operator_log is not None:
            self._operator_log.close()
            self._operator_log = None
        if self.prometheus is not None:
            try:
                self.prometheus.stop()
            except Exception as e:
                problems.append(f"stopping Prometheus: {e}")
            self.prometheus = None
        if self.fleet is not None:
            self.fleet.stop()
        if self.api is not None:
            self.api.stop()
        return problems


def _server(engine: str) -> str:
    """The fleet's /metrics format for a target's engine (custom targets read vLLM's)."""
    return engine if engine in SERVERS else "vllm"
