"""The demo's PNG: per target demand and replicas, per TokenBudget spend against its budget.

Layout: one row per target. Left: offered and served tokens/s (left axis) and replicas as set
by the operator plus ready replicas (right axis). Right: the TokenBudget of those targets
(spanning their rows): its spend rate (currency/h, or tokens/s for a token budget) against
the affordable pace (remaining budget / time left in the period), phases as coloured bands.
The bottom axis is real demo seconds, the top one the simulated time of day.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenscale.demo.record import BudgetTrack, Recorder, TargetTrack

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec

PHASE_COLOURS = {"BudgetAtRisk": "#f5c26b", "BudgetExhausted": "#e8776f",
                 "Degraded": "#c9c9c9", "Invalid": "#c9c9c9"}


def _phase_bands(ax: object, b: BudgetTrack) -> None:
    """Shade the spans where the phase was one of :data:`PHASE_COLOURS`."""
    if not b.t:
        return
    start = 0
    for i in range(1, len(b.t) + 1):
        if i == len(b.t) or b.phase[i] != b.phase[start]:
            colour = PHASE_COLOURS.get(b.phase[start])
            if colour:
                end = b.t[i] if i < len(b.t) else b.t[-1]
                ax.axvspan(b.t[start], end, color=colour, alpha=0.45, lw=0,  # type: ignore[attr-defined]
                           label=b.phase[start])
            start = i


def write_plot(rec: Recorder, path: Path, speedup: float, title: str) -> Path:
    """Render the figure to ``path`` (PNG) and return it (``speedup``: simulated s per
    real s, for the top axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [name for b in rec.budgets for name in b.targets if name in rec.targets]
    n = max(1, len(rows))
    fig = plt.figure(figsize=(15, 2.7 * n + 1.0), dpi=110)
    grid = fig.add_gridspec(n, 2, width_ratios=[2.2, 1], hspace=0.55, wspace=0.28)
    _budget_rows(fig, grid, rec, speedup, n)
    fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _budget_rows(fig: Figure, grid: GridSpec, rec: Recorder, speedup: float, n: int) -> None:
    """Per budget: one target panel per row (left), its budget panel spanning them (right)."""
    row = 0
    for b in rec.budgets:
        names = [name for name in b.targets if name in rec.targets]
        if not names:
            continue
        for name in names:
            ax = fig.add_subplot(grid[row, 0])
            _target_panel(ax, b, rec.targets[name], speedup, first=row == 0, last=row == n - 1)
            row += 1
        _budget_panel(fig.add_subplot(grid[row - len(names):row, 1]), b)


def _target_panel(ax: Axes, b: BudgetTrack, t: TargetTrack, speedup: float, first: bool,
                  last: bool) -> None:
    """Offered and served k tokens/s (left axis), replicas set and ready (right axis) against
    demo seconds, simulated hours on top; the legend on the ``first`` row, the x label on
    the ``last``."""
    from matplotlib.ticker import MaxNLocator

    def to_hours(x: Any) -> Any:
        return x * speedup / 3600

    def from_hours(h: Any) -> Any:
        return h * 3600 / speedup

    ax.plot(t.t, [d / 1000 for d in t.demand], color="#4c72b0", lw=1.0,
            label="demand (offered)")
    ax.plot(t.t, [s / 1000 for s in t.served], color="#55a868", lw=1.0, alpha=0.8,
            label="served")
    ax.set_ylabel("k tokens/s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{b.name} / {t.name} ({t.kind}) — {t.source}", fontsize=9, loc="left")
    ax2 = ax.twinx()
    ax2.step(t.t, t.replicas, where="post", color="#c44e52", lw=1.6, label="replicas (set)")
    ax2.step(t.t, t.ready, where="post", color="#8172b2", lw=1.0, ls="--", label="ready")
    ax2.set_ylabel("replicas")
    ax2.set_ylim(0, max([*t.replicas, *t.ready, 1]) * 1.25 + 0.5)
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    top = ax.secondary_xaxis("top", functions=(to_hours, from_hours))
    top.tick_params(labelsize=7)
    if first:
        top.set_xlabel("simulated hours", fontsize=8)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left", ncol=4)
    if last:
        ax.set_xlabel("demo time (s)")


def _budget_panel(bx: Axes, b: BudgetTrack) -> None:
    """The budget's spend rate (currency/h, or k tokens/s for a token budget) against the
    affordable pace, phases as bands, against demo seconds."""
    _phase_bands(bx, b)
    pace = [b.affordable(i) for i in range(len(b.t))]
    if b.max_cost is not None:
        unit = f"{b.currency}/h"
        bx.plot(b.t, b.cost_rate, color="#c44e52", lw=1.6, label=f"spend rate ({unit})")
        bx.plot(b.t, [p or 0.0 for p in pace], color="black", lw=1.0, ls="--",
                label="affordable pace (remaining / time left)")
        spent = f"spent {b.cost[-1]:.2f} of {b.max_cost:.2f} {b.currency}" if b.cost else ""
    else:
        unit = "k tokens/s"
        bx.plot(b.t, [r / 1000 for r in b.token_rate], color="#c44e52", lw=1.6,
                label=f"token rate ({unit})")
        bx.plot(b.t, [(p or 0.0) / 1000 for p in pace], color="black", lw=1.0, ls="--",
                label="affordable pace (remaining / time left)")
        spent = (f"used {b.tokens[-1] / 1e6:.1f}M of {(b.max_tokens or 0) / 1e6:.1f}M tokens"
                 if b.tokens else "")
    bx.set_ylabel(unit)
    bx.set_ylim(0, max([*(p or 0.0 for p in pace), 1.0]) * (1.6 if b.max_cost else 1.6e-3))
    bx.set_title(f"TokenBudget {b.name} ({b.adapted.mode}): {spent}", fontsize=9, loc="left")
    handles, labels = bx.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    bx.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left")
    bx.set_xlabel("demo time (s)")
