"""Run the real ``prometheus`` binary for tests and the demo.

A free 127.0.0.1 port, a temporary config and data dir, scrape targets through ``file_sd`` (so
they can be added while it runs), ``honor_labels: true`` (the fleet exports ``namespace`` and
``pod`` labels itself, as a ServiceMonitor with honorLabels would keep them)::

    with PrometheusServer(targets=["127.0.0.1:9400"], scrape_interval=1.0) as prom:
        prom.wait_for_series('vllm:generation_tokens_total')
        prom.query('sum(rate(vllm:generation_tokens_total[15s]))')
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self

import yaml


class PrometheusMissingError(RuntimeError):
    """The prometheus binary is not installed."""


class PrometheusError(RuntimeError):
    """Prometheus did not start, or answered a query with an error."""


def find_prometheus(binary: str | None = None) -> str:
    """Path of the prometheus binary: ``binary`` if given, else ``$PROMETHEUS_BIN``, ``$PATH``,
    /usr/bin."""
    candidates = [binary] if binary else [os.environ.get("PROMETHEUS_BIN"),
                                          shutil.which("prometheus"), "/usr/bin/prometheus"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise PrometheusMissingError(
        f"the prometheus binary was not found{f' at {binary}' if binary else ''} "
        "(set PROMETHEUS_BIN, or install it: "
        "apt-get install -y --no-install-recommends prometheus, or `make prometheus`)")


#: Where free ports are drawn from: below the kernel's ephemeral range, so that the outgoing
#: connections of everything running meanwhile (which take ephemeral ports) cannot take a port
#: between the moment it is chosen here and the moment a server binds it.
_PORTS_FLOOR = 10000


def _ephemeral_floor() -> int:
    """The lowest ephemeral port of the kernel (Linux), else 32768."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, drawn at random below the ephemeral range (an
    ephemeral one, from the kernel, where that range leaves no room)."""
    top = _ephemeral_floor()
    rng = random.SystemRandom()
    room = top - _PORTS_FLOOR > 1000
    drawn = [rng.randrange(_PORTS_FLOOR, top) for _ in range(50)] if room else []
    for port in (*drawn, 0):  # 0: the kernel's choice, always bindable
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError(f"no free port on {host}")


def _fmt_seconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class PrometheusServer:
    """A prometheus process with its own config and temporary data dir.

    ``scrape_interval`` in seconds (default 1 s for tests); ``targets`` are ``host:port``
    strings scraped at ``/metrics`` (more via :meth:`add_targets`). ``rule_files`` are copied
    into the config dir; ``extra_args`` go to the command line.
    """

    def __init__(self, targets: Iterable[str] = (), *, scrape_interval: float = 1.0,
                 binary: str | None = None, port: int | None = None,
                 rule_files: Iterable[str | Path] = (), extra_args: Iterable[str] = (),
                 retention: str = "2h") -> None:
        self.binary = find_prometheus(binary)
        self.scrape_interval = scrape_interval
        self.port = port or 0
        self._targets: list[tuple[str, dict[str, str]]] = [(t, {}) for t in targets]
        self._rule_files = [Path(p) for p in rule_files]
        self._extra_args = list(extra_args)
        self._retention = retention
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def workdir(self) -> Path:
        assert self._dir is not None, "not started"
        return Path(self._dir.name)

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 20.0) -> str:
        """Start and wait until ``/-/ready`` answers; return the URL."""
        self._dir = tempfile.TemporaryDirectory(prefix="tokenscale-prom-")
        work = self.workdir
        (work / "data").mkdir()
        rules = []
        for i, path in enumerate(self._rule_files):
            target = work / f"rules-{i}.yaml"
            shutil.copy(path, target)
            rules.append(str(target))
        self._write_targets()
        interval = _fmt_seconds(self.scrape_interval)
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval,
                       "scrape_timeout": _fmt_seconds(min(self.scrape_interval, 10.0))},
            "rule_files": rules,
            "scrape_configs": [{
                "job_name": "testbed",
                "honor_labels": True,
                "file_sd_configs": [{"files": [str(work / "targets.json")],
                                     "refresh_interval": "1s"}],
            }],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        if not self.port:
            self.port = free_port()
        self._log = (work / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [self.binary, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'data'}",
             f"--storage.tsdb.retention.time={self._retention}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
             "--web.enable-admin-api", "--log.level=warn", *self._extra_args],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self._proc.returncode}: "
                                      f"{self.logs()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as rsp:
                    if rsp.status == 200:
                        return self.url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.stop()
        raise PrometheusError(f"prometheus was not ready within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate, wait, kill if needed; remove the temporary directory."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def logs(self) -> str:
        """What prometheus wrote to stdout/stderr so far."""
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ targets

    def _write_targets(self) -> None:
        groups = [{"targets": [t], "labels": labels} for t, labels in self._targets]
        tmp = self.workdir / "targets.json.tmp"
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.workdir / "targets.json")  # atomic for file_sd's watcher

    def add_targets(self, targets: Iterable[str], labels: Mapping[str, str] | None = None) -> None:
        """Scrape more ``host:port`` targets (picked up within about a second)."""
        self._targets += [(t, dict(labels or {})) for t in targets]
        if self._dir is not None:
            self._write_targets()

    # ------------------------------------------------------------------ queries

    def query(self, promql: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """An instant query; the ``result`` list (vector items have ``metric`` and ``value``)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=timeout) as rsp:
                body = json.loads(rsp.read())
        except urllib.error.HTTPError as e:
            raise PrometheusError(f"query {promql!r} failed: {e.read()[:500]!r}") from e
        if body.get("status") != "success":
            raise PrometheusError(f"query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for_series(self, promql: str, timeout: float = 30.0,
                        poll: float = 0.25) -> list[dict[str, Any]]:
        """Poll until ``promql`` returns at least one series; return it (or TimeoutError)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"no series for {promql!r} within {timeout} s")
            time.sleep(poll)

    def scrape_targets(self) -> list[dict[str, Any]]:
        """The active targets with their health (``/api/v1/targets``)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as rsp:
            targets: list[dict[str, Any]] = json.loads(rsp.read())["data"]["activeTargets"]
        return targets
