"""Smoke run of the operator scale benchmark (benchmarks/scale.py) on the real test stack.

Tiny sizes (5 TokenBudgets on one operator, 10 on two shards; 2 intervals of 5 s): the point
is that the benchmark runs end to end, that the operator batches its Prometheus queries (the
count per cycle does not grow with the number of budgets), reads its workloads from watches
(no LIST per cycle), and that the shards split the budgets. The figures themselves belong in
BENCHMARKS.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
KEYS = ("cycle_seconds", "prometheus_queries_per_cycle", "api_requests_per_cycle", "cpu_cores",
        "peak_rss_mb", "scale_lag_seconds")


def run_benchmark(budgets: int, out: Path, shards: int = 1) -> dict[str, Any]:
    cmd = [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--budgets", str(budgets),
           "--shards", str(shards),
           "--intervals", "2", "--interval-seconds", "5", "--scrape-interval", "1",
           "--rate-window", "10s", "--forecast-window", "60", "--step-targets", "2",
           "--budgets-per-namespace", "5", "--quiet", "--json", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.mark.skipif(shutil.which("promtool") is None and not Path("/usr/bin/promtool").exists(),
                    reason="promtool (Debian package prometheus) is needed for the history")
def test_scale_benchmark_reports_batched_queries(tmp_path: Path) -> None:
    # Both sizes at once (each run is mostly waiting for planning ticks).
    with ThreadPoolExecutor(2) as pool:
        small_run = pool.submit(run_benchmark, 5, tmp_path / "n5.json")
        larger_run = pool.submit(run_benchmark, 20, tmp_path / "n20.json", 2)
        small, larger = small_run.result(), larger_run.result()
    for key in KEYS:
        assert key in small, key
    assert small["cycles"] >= 2
    # A handful of queries per cycle: rate range, queue, one increase() per period start.
    assert 1 <= small["prometheus_queries_per_cycle"] <= 5
    assert small["prometheus_errors_per_cycle"] == 0
    # Workloads and autoscalers come from watches: no LIST per namespace and cycle.
    assert small["api_requests_per_cycle_by_kind"]["list_deployments"] == 0
    assert small["api_requests_per_cycle_by_kind"]["list_hpas"] == 0
    assert small["status_patches_per_cycle"] <= 5
    assert small["shards"] == 1 and len(small["per_shard"]) == 1
    # The load step was answered with a scale-up of both stepped targets.
    assert small["scale_lag_missing"] == 0 and small["scale_lag_seconds"] > 0
    assert 0 < small["peak_rss_mb"] < 1000 and small["cpu_cores"] > 0

    # 20 budgets in 4 namespaces on 2 shards: each shard serves its namespaces' budgets, with
    # the same handful of queries per cycle.
    assert larger["shards"] == 2 and len(larger["per_shard"]) == 2
    assert sum(s["budgets"] for s in larger["per_shard"]) == 20
    assert all(s["budgets"] < 20 for s in larger["per_shard"])  # team-0000/1 hash apart
    for shard in larger["per_shard"]:
        for key in ("cycle_seconds", "prometheus_queries_per_cycle", "cpu_cores",
                    "peak_rss_mb"):
            assert key in shard, key
        assert shard["prometheus_queries_per_cycle"] == small["prometheus_queries_per_cycle"]
        assert shard["prometheus_errors_per_cycle"] == 0
    assert larger["scale_lag_missing"] == 0
    assert larger["api_requests_per_cycle_by_kind"]["list_deployments"] == 0
