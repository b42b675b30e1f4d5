"""Operator scale benchmark: N TokenBudgets (two targets each) on one `tokenscale run`.

    python benchmarks/scale.py --budgets 1000 [--intervals 4] [--shards N] --json OUT.json

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
  ``py-spy record`` for the measured window, ``--profile``); with ``--shards N``, N of them,
  each with ``TOKENSCALE_SHARDS=N`` and its own ``TOKENSCALE_SHARD`` (standalone: the
  benchmark measures the shards' work, not their standbys).

Measured over ``--intervals`` planning intervals once every budget was planned, ``--measure-after``
seconds passed and one more cycle has passed (window from just before a tick to just before the
K-th tick after it):

* ``cycle_seconds``: mean of the operator's tokenscale_cycle_duration_seconds in the window
  (all due budgets observed, planned, acted on and reported once);
* ``prometheus_queries_per_cycle``: tokenscale_prometheus_queries_total / cycles;
* ``api_requests_per_cycle`` (and by kind): requests the emulator served / cycles;
* ``status_patches_per_cycle`` / ``status_skipped_per_cycle`` / ``status_deferred_per_cycle``
  (heartbeat and drift writes past a cycle's allowance): tokenscale_status_patches_total;
* ``cpu_cores``: the operator process's CPU seconds (user + system, all threads) / wall time;
* ``peak_rss_mb``: the operator's VmHWM (peak resident set over its whole life, startup incl.);
* ``scale_lag_seconds``: a load step (+9,000 tokens/s, need 1 -> 5 replicas) on
  ``--step-targets`` targets, 30% into the window; time from the step to the replicas change
  seen by the emulator (median; every value in ``scale_lags``). It includes Prometheus'
  scrape interval, the operator's rate window and the wait for the next planning tick.

With shards, each figure above is also reported per shard (``per_shard``: ``cycle_seconds``,
``prometheus_queries_per_cycle``, ``prometheus_errors_per_cycle``, ``cpu_cores``,
``peak_rss_mb``, ``budgets``, ``cycles``), and the top-level keys combine them: the slowest
shard's ``cycle_seconds``, the most ``prometheus_queries_per_cycle`` of a shard, the sum of
``prometheus_errors_per_cycle`` and of ``cpu_cores``, the largest ``peak_rss_mb``; API
requests and status patches per cycle are totals over the shards per planning interval.

The test rig's own CPU (emulator, exporter, Prometheus) is reported apart (``rig_cpu_cores``).

Modules: :mod:`scale_workload` (budgets, Deployments, series), :mod:`scale_rig` (starting and
stopping the components), :mod:`scale_measure` (the window and its figures),
:mod:`scale_report` (the JSON result and the table); this file is the command.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from scale_measure import figures, measure_window  # noqa: E402
from scale_report import print_result, result, table, write_json  # noqa: E402
from scale_rig import (  # noqa: E402
    Rig,
    start_emulator,
    start_exporter,
    start_operators,
    start_prometheus,
    teardown,
    wait_first_statuses,
)
from scale_workload import Config, history_origin, zone_offset_hours  # noqa: E402

__all__ = ["Config", "main", "parse_args", "run", "table"]


def run(cfg: Config) -> dict[str, Any]:
    """Run the benchmark; returns the result dict (see the module docstring)."""
    work = Path(tempfile.mkdtemp(prefix="tokenscale-scale-"))
    rig = Rig(cfg, work)
    try:
        return _run(rig)
    finally:
        teardown(rig)
        if cfg.keep is not None:
            shutil.copytree(work, cfg.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)


def _run(rig: Rig) -> dict[str, Any]:
    """Start the rig, wait for every budget's first status, measure the window."""
    cfg = rig.cfg
    started = time.monotonic()
    now = time.time()
    cfg.utc_offset_hours = zone_offset_hours(now, cfg.hours_into_period)
    origin = history_origin(cfg, now)
    blocks = start_exporter(rig, origin, now)
    prom = start_prometheus(rig, blocks)
    kubeconfig = start_emulator(rig, origin, now)
    ops = start_operators(rig, kubeconfig, prom)
    first_status = wait_first_statuses(rig, origin, now)
    rig.say(f"all {cfg.budgets} TokenBudgets planned once {first_status:.1f}s after start")
    if cfg.measure_after > 0:
        rig.say(f"waiting {cfg.measure_after:g}s before the window")
        time.sleep(cfg.measure_after)  # the run's own schedule: nothing to await but time
    fig = figures(measure_window(rig, ops), ops)
    return result(cfg, fig, first_status, time.monotonic() - started)


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
    p.add_argument("--shards", type=int, default=1,
                   help="operator processes, each serving one shard (TOKENSCALE_SHARDS)")
    p.add_argument("--profile", type=Path, help="py-spy raw (collapsed) profile of the window")
    p.add_argument("--memory-profile", type=Path,
                   help="tracemalloc snapshot of every operator at the window's end into this "
                        "directory (slows the operators; read with memory_summary.py)")
    p.add_argument("--hours-into-period", type=float, default=12.0,
                   help="the run starts within the hour after this many whole hours (0-23) "
                   "into the budgets' day (a fixed-offset time zone is chosen for it), so the "
                   "figures do not depend on the time of day")
    p.add_argument("--measure-after", type=float, default=0.0,
                   help="seconds to wait after every budget's first status before the window "
                   "(the status heartbeat is 300 s: 270 puts the first heartbeat wave of the "
                   "budgets, created together, in a window of 4 intervals)")
    p.add_argument("--keep", type=Path, help="copy the work dir (logs) here")
    p.add_argument("--no-latency", action="store_true",
                   help="the pods export no latency histograms (token counters and queue only, "
                   "as before 2026-12-02)")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.budgets < 1 or a.intervals < 1 or a.interval_seconds < 5 or a.shards < 1:
        p.error("--budgets >= 1, --intervals >= 1, --interval-seconds >= 5, --shards >= 1")
    if not 0 <= a.hours_into_period <= 24:
        p.error("--hours-into-period must be within 0 .. 24")
    if not 0 <= a.measure_after <= 86400:
        p.error("--measure-after must be within 0 .. 86400 seconds")
    cfg = Config(budgets=a.budgets, intervals=a.intervals, interval_seconds=a.interval_seconds,
                 budgets_per_namespace=a.budgets_per_namespace,
                 scrape_interval=a.scrape_interval, rate_window=a.rate_window,
                 forecast_window_seconds=a.forecast_window, step_targets=a.step_targets,
                 shards=a.shards,
                 profile=a.profile, memory_profile=a.memory_profile, keep=a.keep,
                 quiet=a.quiet, hours_into_period=a.hours_into_period,
                 measure_after=a.measure_after, latency=not a.no_latency)
    return cfg, a.json


def main(argv: list[str] | None = None) -> int:
    cfg, out = parse_args(argv)
    res = run(cfg)
    if out is not None:
        write_json(res, out)
    print_result(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
