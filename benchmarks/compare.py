"""Before and after: two runs of ``benchmarks/backtest.py`` side by side, case by case.

    .venv/bin/python benchmarks/compare.py BEFORE_DIR AFTER_DIR

Reads ``<case>.json`` from both ``--out`` directories and prints a markdown table: the cost
ratio against the HPA/KEDA envelope at equal attainment (with its 95 % interval over seeds),
tokenscale's attainment and cost, the share of the envelope-to-oracle gap captured, goodput
against the budget-aware oracle (binding budgets), and the service model's fit against the
simulator's truth (median over cycles, after). Cases present in only one run show n/a.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def load(directory: Path) -> dict[str, dict[str, Any]]:
    """The JSON document of every case in ``directory``, by case name."""
    out = {}
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if "policies" in doc:
            out[path.stem] = doc
    return out


def _ratio(d: dict[str, Any] | None) -> str:
    if d is None or d.get("cost_ratio_vs_hpa_at_equal_slo") is None:
        return "n/a"
    lo_hi = d.get("cost_ratio_ci95")
    text = f"{d['cost_ratio_vs_hpa_at_equal_slo']:.3f}"
    return text + (f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else "")


def _field(d: dict[str, Any] | None, pick: str) -> str:
    if d is None:
        return "n/a"
    ts = d["policies"]["tokenscale"]
    if pick == "attainment":
        return f"{100 * ts['slo_attainment']:.2f} %"
    if pick == "cost":
        return f"{ts['cost']:,.1f}"
    value = d.get(pick)
    if value is None:
        return "n/a"
    return f"{100 * value:.0f} %" if pick.startswith("goodput") else f"{value:.2f}"


def _fit(d: dict[str, Any] | None) -> str:
    models = (d or {}).get("service_models") or {}
    parts = [f"{name} {100 * m['median_fit_error']:+.1f} %" for name, m in models.items()
             if m.get("median_fit_error") is not None]
    return "; ".join(parts) or "n/a"


def table(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> str:
    """The markdown table, one row per case of either run."""
    lines = [
        "| case | ratio vs envelope before | after | attainment before / after | "
        "cost before / after | gap captured before / after | goodput vs budget-aware oracle "
        "before / after | fit error after (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in sorted(set(before) | set(after)):
        b, a = before.get(case), after.get(case)
        lines.append(
            f"| {case} | {_ratio(b)} | {_ratio(a)} | "
            f"{_field(b, 'attainment')} / {_field(a, 'attainment')} | "
            f"{_field(b, 'cost')} / {_field(a, 'cost')} | "
            f"{_field(b, 'gap_captured')} / {_field(a, 'gap_captured')} | "
            f"{_field(b, 'goodput_vs_budget_oracle')} / "
            f"{_field(a, 'goodput_vs_budget_oracle')} | {_fit(a)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="--out directory of the earlier run")
    parser.add_argument("after", type=Path, help="--out directory of the later run")
    args = parser.parse_args(argv)
    for directory in (args.before, args.after):
        if not directory.is_dir():
            print(f"compare: {directory} is not a directory", file=sys.stderr)
            return 2
    sys.stdout.write(table(load(args.before), load(args.after)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
