"""A full read (the whole forecast window, the period since its start, the latency history)
waits longer than the news a cycle reads: it is many times their size and is asked once, at a
start, so under the news reads' timeout a loaded Prometheus could fail it in every cycle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from faultkit import (
    Channel,
    FaultyPrometheus,
    OperatorProcess,
    budget,
    create,
    deployment,
    operators,
    target,
)

from tokenscale.prometheus_reads import full_read_timeout
from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.faults
NS = "inference"
TIMEOUT = 2.0  # spec.prometheus.timeoutSeconds (s)
WINDOW = 60.0  # spec.planning.forecastWindowSeconds (s), faultkit's budgets


def _token_rate_reads(prom: FaultyPrometheus) -> list[dict[str, Any]]:
    """The token-rate range reads over the forecast window (not the hour of latency history,
    whose rate window is 5m), oldest first."""
    return [r for r in prom.requests if "start" in r and "generation_tokens" in r["query"]
            and "[5m]" not in r["query"]]


def test_the_first_window_read_waits_longer_than_the_reads_of_news(
    apiserver: ApiServerThread, kubeconfig: Path, faulty_prometheus: FaultyPrometheus
) -> None:
    prom = faulty_prometheus
    url = prom.add("main", Channel(NS, "llama", rate=1000.0))
    create(apiserver, "apps/v1", "deployments", deployment(NS, "llama", 2))
    spec = budget(NS, "llama", [target("llama")])
    spec["spec"]["prometheus"] = {"timeoutSeconds": TIMEOUT}
    create(apiserver, "tokenscale.dev/v1alpha1", "tokenbudgets", spec)
    with operators(OperatorProcess(kubeconfig, url)):
        wait_for(lambda: len(_token_rate_reads(prom)) >= 3, timeout=30,
                 message="three cycles' token-rate reads")
    first, *later = _token_rate_reads(prom)
    long_wait = f"{full_read_timeout(TIMEOUT):g}"
    assert long_wait == "8"
    assert float(first["end"]) - float(first["start"]) == pytest.approx(WINDOW, abs=1)
    assert first["timeout"] == long_wait
    for read in later:  # the news since the last cycle (with two steps of overlap)
        assert float(read["end"]) - float(read["start"]) < WINDOW / 2
        assert read["timeout"] == f"{TIMEOUT:g}"
    # The hour of latency history is read in full whenever it is read.
    history = [r for r in prom.requests if "start" in r and "[5m]" in r["query"]]
    assert history and all(r["timeout"] == long_wait for r in history)
    # The period's tokens since its start: the first read is full, the next ones are news.
    since_start = [r for r in prom.requests if "start" not in r and "increase(" in r["query"]]
    assert since_start[0]["timeout"] == long_wait
    assert since_start[-1]["timeout"] == f"{TIMEOUT:g}"
