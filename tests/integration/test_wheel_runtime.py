"""What the image runs: the built wheel in a fresh venv without extras (as the Dockerfile
installs it), `tokenscale run` against the API emulator and the real Prometheus."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import objects
from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.prometheus import PrometheusServer, free_port
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
NS = "inference"


def _run(*cmd: str | Path, timeout: float = 600) -> str:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{cmd}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel and its declared runtime dependencies."""
    tmp = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", REPO)
    wheel = next((tmp / "dist").glob("tokenscale-*.whl"))
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)
    return venv


def test_the_wheel_without_extras_runs_the_operator(
    runtime_venv: Path, apiserver: ApiServerThread, kubeconfig: Path,
    prometheus_factory: type[PrometheusServer], tmp_path: Path,
) -> None:
    python = runtime_venv / "bin" / "python"
    absent = _run(python, "-c", "import importlib.util as u; print([m for m in "
                  "('numpy', 'matplotlib', 'tqdm', 'celpy', 'jsonschema', 'psutil') "
                  "if u.find_spec(m)])")
    assert absent.strip() == "[]"  # really without the extras
    crd = _run(runtime_venv / "bin" / "tokenscale", "crd")
    assert "name: tokenbudgets.tokenscale.dev" in crd
    demo = subprocess.run([runtime_venv / "bin" / "tokenscale", "demo", "--duration", "1"],
                          capture_output=True, text=True, timeout=60)
    assert demo.returncode != 0 and "pip install 'tokenscale[demo]'" in demo.stderr

    prom = prometheus_factory(targets=[], scrape_interval=1.0)
    apiserver.call(lambda s: s.create_object("apps/v1", "deployments",
                                             objects.deployment(NS, "llama", 1)))
    apiserver.call(lambda s: s.create_object("tokenscale.dev/v1alpha1", "tokenbudgets",
                                             objects.tokenbudget(NS, "chat", {
        "budget": {"period": "Month", "maxCost": 1e9}, "planning": {"intervalSeconds": 5},
        "targets": [objects.target("llama", maxReplicas=4)]})))
    health = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "KUBECONFIG": str(kubeconfig), "TOKENSCALE_PROMETHEUS_URL": prom.url,
           "TOKENSCALE_HEALTH_PORT": str(health), "TOKENSCALE_METRICS_PORT": "0",
           "TOKENSCALE_BIND_ADDRESS": "127.0.0.1", "TOKENSCALE_LOG_FORMAT": "text",
           "TOKENSCALE_TICK_SECONDS": "0.5"}
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([runtime_venv / "bin" / "tokenscale", "run"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        def healthz() -> bool:
            assert proc.poll() is None, f"operator exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz",
                                            timeout=2) as rsp:
                    return bool(rsp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_for(healthz, timeout=60, message="/healthz 200 from the wheel's operator")

        def status() -> dict[str, object] | None:
            assert proc.poll() is None, f"operator exited:\n{log.read_text()[-3000:]}"
            obj = apiserver.call(lambda s: s.get_object(
                "tokenscale.dev/v1alpha1", "tokenbudgets", NS, "chat")) or {}
            st = obj.get("status") or {}
            return st if st.get("lastReconcileTime") else None

        st = wait_for(status, timeout=60, message="a TokenBudget status")
        assert st["phase"] and any(c["type"] == "SpecValid" and c["status"] == "True"
                                   for c in st["conditions"])
    finally:
        proc.terminate()
        proc.wait(20)
