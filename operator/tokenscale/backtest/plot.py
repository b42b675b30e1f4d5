"""PNG of a backtest: demand vs ready capacity per policy over time, and spend vs the budget.

One panel per target (demand as the 1-min mean of arriving work tokens/s, shaded; each policy's
ready capacity = ready replicas × tokensPerReplicaPerSecond, tokens/s) and a last panel with the
cumulative spend within each budget period per policy (currency) against the budget line
(maxCost). Long runs are down-sampled to bucket means (≤ ~2,000 points per line).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from tokenscale.sim.engine import Backtest

COLORS = {"tokenscale": "#1f77b4", "hpa": "#d62728", "static": "#7f7f7f", "oracle": "#2ca02c"}
STYLES = {"tokenscale": "-", "hpa": "-", "static": "--", "oracle": ":"}
_MAX_POINTS = 2000


def _bucket(values: npt.NDArray[np.float64], size: int) -> npt.NDArray[np.float64]:
    n = len(values) // size * size
    if n == 0:
        return values.astype(np.float64)
    return np.asarray(values[:n].reshape(-1, size).mean(axis=1), dtype=np.float64)


def write_plot(bt: Backtest, path: str | Path, title: str = "") -> None:
    """Render ``bt`` to a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = bt.trace_seconds
    size = max(60, int(np.ceil(seconds / _MAX_POINTS / 60.0)) * 60)
    hours = seconds > 3 * 3600
    days = seconds > 3 * 86400
    unit, div = ("days", 86400.0) if days else ("hours", 3600.0) if hours else ("minutes", 60.0)
    rows = len(bt.targets) + 1
    fig, axes = plt.subplots(rows, 1, figsize=(13, 3.2 * rows + 0.6), sharex=True, squeeze=False)
    x = (np.arange(seconds // size) * size + size / 2) / div
    for i, t in enumerate(bt.targets):
        ax = axes[i, 0]
        demand = _bucket(bt.arrivals[i, :seconds], size)[: len(x)]
        ax.fill_between(x, 0, demand / 1e3, color="#ffbb78", alpha=0.7, lw=0,
                        label=f"demand ({size // 60} min mean)")
        top = float(demand.max(initial=0.0))
        for p in ("static", "hpa", "tokenscale", "oracle"):
            ready = bt.runs[p][t.name].ready[:seconds].astype(np.float64) * t.capacity
            line = _bucket(ready, size)[: len(x)]
            top = max(top, float(line.max(initial=0.0)))
            ax.plot(x, line / 1e3, STYLES[p], color=COLORS[p],
                    lw=1.3, label=f"{p} ready capacity")
        ax.set_ylabel("k tokens/s")
        ax.set_title(f"target {t.name}: demand vs ready capacity "
                     f"({t.capacity:g} tok/s per replica, cold start {t.cold_start_s}s)",
                     fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, top / 1e3 * 1.3 + 1e-9)  # room for the legend above the lines
        if i == 0:
            ax.legend(loc="upper left", fontsize=8, ncol=5, framealpha=0.9)
    ax = axes[-1, 0]
    cur = bt.spec.budget.currency
    full = np.arange(seconds)
    starts = np.r_[0, np.flatnonzero(np.diff(bt.period_index[:seconds])) + 1]
    top = 0.0
    for p in ("static", "hpa", "tokenscale", "oracle"):
        per_second = np.zeros(seconds)
        for t in bt.targets:
            per_second += (bt.runs[p][t.name].paid[:seconds] * bt.price[:seconds]
                           * t.cost_per_hour / 3600.0)
        cum = np.cumsum(per_second)
        base = np.repeat(np.r_[0.0, cum[starts[1:] - 1]],
                         np.diff(np.r_[starts, seconds]))  # spend resets each period
        spend = cum - base
        if p != "static":  # static can dwarf the rest; it may run off the top of the panel
            top = max(top, float(spend.max(initial=0.0)))
        step = max(1, seconds // (_MAX_POINTS * 2))
        ax.plot(full[::step] / div, spend[::step], STYLES[p], color=COLORS[p], lw=1.3,
                label=p)
    max_cost = bt.spec.budget.max_cost
    if max_cost is not None and max_cost <= 3 * top:
        ax.axhline(max_cost, color="black", lw=1.2,
                   label=f"budget {max_cost:g} {cur}/{bt.spec.budget.period}")
        top = max(top, max_cost)
    elif max_cost is not None:
        ax.plot([], [], " ", label=f"budget {max_cost:g} {cur}/{bt.spec.budget.period} "
                "(off scale)")
    for s in starts[1:]:
        ax.axvline(s / div, color="#999999", lw=0.6, alpha=0.6)
    ax.set_ylabel(f"spend this period ({cur})")
    ax.set_xlabel(f"time since trace start ({unit}; start {bt.settings.start:%Y-%m-%d %H:%M %Z})")
    ax.set_title("cumulative spend within each budget period", fontsize=10, loc="left")
    ax.grid(alpha=0.3)
    ax.set_ylim(0, top * 1.35 + 1e-9)
    ax.legend(loc="upper left", fontsize=8, ncol=5, framealpha=0.9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
