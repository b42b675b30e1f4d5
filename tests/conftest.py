"""Shared fixtures of the test stack: API emulator, kubeconfig, kubectl, Prometheus, fleet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

import testclock
from tokenscale.crd import crd
from tokenscale_testbed.apiserver import ApiServer, ApiServerThread, write_kubeconfig
from tokenscale_testbed.kubectl import Kubectl
from tokenscale_testbed.prometheus import PrometheusServer

REPO = Path(__file__).resolve().parent.parent


# Property tests replay the same examples on every run and keep no database between runs.
hypothesis_settings.register_profile("tokenscale", derandomize=True, database=None)
hypothesis_settings.load_profile("tokenscale")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test inherits operator settings or an in-cluster identity from the shell that runs
    it (a stray TOKENSCALE_NAMESPACES, or a CI pod's service account)."""
    import os

    for name in list(os.environ):
        if ((name.startswith("TOKENSCALE_") and name != "TOKENSCALE_TEST_CLOCK")
                or name.startswith("KUBERNETES_SERVICE_")):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def test_clock() -> testclock.TestClock:
    """The calendar of this test's operator processes (``TOKENSCALE_TEST_CLOCK``, see
    tests/testclock.py); the system clock unless a run chose an instant."""
    return testclock.begin_test()


@pytest.fixture
def apiserver() -> Iterator[ApiServerThread]:
    """An emulator in a thread with the TokenBudget CRD and namespaces default + inference."""
    with ApiServerThread(crds=[crd()], namespaces=["default", "inference"]) as srv:
        yield srv


@pytest.fixture
def emulator(apiserver: ApiServerThread) -> ApiServer:
    """The ApiServer object of :func:`apiserver` (its hooks: faults, counters, objects)."""
    assert apiserver.server is not None
    return apiserver.server


@pytest.fixture
def kubeconfig(apiserver: ApiServerThread, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", apiserver.url)


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    return Kubectl(kubeconfig, cache_dir=tmp_path / "kubectl-cache")


@pytest.fixture
def prometheus_factory() -> Iterator[Callable[..., PrometheusServer]]:
    """``prometheus_factory(targets=[...], scrape_interval=1.0)`` -> a started server."""
    started: list[PrometheusServer] = []

    def start(**kwargs: Any) -> PrometheusServer:
        server = PrometheusServer(**kwargs)
        server.start()
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()
