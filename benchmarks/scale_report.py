"""The scale benchmark's output: the result dict (the ``--json`` file) and a Markdown table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scale_measure import Figures
from scale_workload import Config, namespaces


def result(cfg: Config, fig: Figures, first_status: float, total: float) -> dict[str, Any]:
    """The result dict, rounded for reading (keys documented in ``scale.py``).

    ``first_status``: s from the operators' start until every budget was planned once;
    ``total``: s the whole run took.
    """
    by_kind = fig.api_requests_per_cycle_by_kind
    lag = fig.scale_lag_seconds
    return {
        "budgets": cfg.budgets,
        "targets": 2 * cfg.budgets,
        "namespaces": len(namespaces(cfg)),
        "interval_seconds": cfg.interval_seconds,
        "intervals": cfg.intervals,
        "hours_into_period": cfg.hours_into_period,
        "measure_after_seconds": cfg.measure_after,
        "cycles": fig.cycles,
        "window_seconds": round(fig.wall_seconds, 2),
        "cycle_seconds": round(fig.cycle_seconds, 3),
        "prometheus_queries_per_cycle": round(fig.prometheus_queries_per_cycle, 2),
        "api_requests_per_cycle": round(sum(by_kind.values()), 1),
        "api_requests_per_cycle_by_kind": {k: round(v, 2) for k, v in by_kind.items()},
        "status_patches_per_cycle": round(fig.status_patches_per_cycle, 1),
        "status_skipped_per_cycle": round(fig.status_skipped_per_cycle, 1),
        "status_deferred_per_cycle": round(fig.status_deferred_per_cycle, 1),
        "cpu_cores": round(fig.cpu_cores, 4),
        "peak_rss_mb": round(fig.peak_rss_mb, 1),
        "rss_mb_end": round(fig.rss_mb_end, 1),
        "scale_lag_seconds": round(lag, 2) if lag is not None else None,
        "scale_lags": [round(v, 2) for v in fig.scale_lags],
        "scale_lag_missing": fig.scale_lag_missing,
        "first_status_seconds": round(first_status, 1),
        "events_in_window_by_reason": fig.events,
        "status_significant_changes": dict(fig.status_changes.most_common(12)),
        "rig_cpu_cores": {k: round(v, 3) for k, v in fig.rig_cpu_cores.items()},
        "scrape_interval_seconds": cfg.scrape_interval,
        "rate_window": cfg.rate_window,
        "forecast_window_seconds": cfg.forecast_window_seconds,
        "budgets_per_namespace": cfg.budgets_per_namespace,
        "total_seconds": round(total, 1),
        "prometheus_errors_per_cycle": round(fig.prometheus_errors_per_cycle, 2),
        "shards": cfg.shards,
        "latency_histograms": cfg.latency,
        "per_shard": [{
            "budgets": int(s.budgets),
            "cycles": s.cycles,
            "planned_share": round(s.planned_share, 3),
            "cycle_seconds": round(s.cycle_seconds, 3),
            "prometheus_queries_per_cycle": round(s.prometheus_queries_per_cycle, 2),
            "prometheus_errors_per_cycle": round(s.prometheus_errors_per_cycle, 2),
            "status_patches_per_cycle": round(s.status_patches_per_cycle, 1),
            "cpu_cores": round(s.cpu_cores, 4),
            "peak_rss_mb": round(s.peak_rss_mb, 1),
            "rss_mb_end": round(s.rss_mb_end, 1),
            "prometheus_errors_by_kind": s.prometheus_errors_by_kind,
        } for s in fig.per_shard],
    }


COLUMNS = [
    ("budgets", "TokenBudgets", "{:,}"),
    ("shards", "shards", "{}"),
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


def write_json(res: dict[str, Any], out: Path) -> None:
    """The result as indented JSON."""
    out.write_text(json.dumps(res, indent=2) + "\n")


def print_result(res: dict[str, Any]) -> None:
    """The table, then the details that do not fit in it as one JSON line (stdout)."""
    print(table([res]))
    print(json.dumps({k: res[k] for k in ("api_requests_per_cycle_by_kind", "rig_cpu_cores",
                                           "scale_lags", "first_status_seconds",
                                           "prometheus_errors_per_cycle", "per_shard")}))
