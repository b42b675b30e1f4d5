"""Projection benchmark: the period-end projection against the final spend.

    .venv/bin/python benchmarks/projection.py [--days 14] [--only CASE] [--json OUT]

At 25 %, 50 % and 75 % of a period the projection of its spend is compared with what
tokenscale's replicas cost over the whole period (sim/projections.py): the operator's
projection (demand forecast, planned replicas, prices, pacing) next to the run rate of version
1 (spend so far + the planned cost rate x the time left). Only the tokenscale policy runs (the
projections do not depend on the others), on the yardstick's engine model.

- **Every backtest case** (benchmarks/backtest.py, seed 0, one slice): the window the backtest
  replays, with the history before it (ServeGen's first day) seeding the demand profile, as
  ``tokenscale backtest`` does (the same code: ``projection_error`` in its JSON). A trace
  shorter than its Day period is one window, projected to its own end.
- **Day after day**: the 14-day ServeGen traces replayed in full, the operator's memory (spend,
  recommendations, the learned time-of-day demand) carried from each day to the next as in a
  cluster. Day 0 has no history; the mean absolute relative error is over days 1 to the last.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backtest import TRACES, cases, command_line  # noqa: E402
from tokenscale.api import parse_spec  # noqa: E402
from tokenscale.backtest import add_arguments  # noqa: E402
from tokenscale.backtest.command import (  # noqa: E402
    prepare_history,
    prepare_traces,
    settings_from,
)
from tokenscale.sim import engine  # noqa: E402
from tokenscale.sim.projections import FRACTIONS, ProjectionProbe, windows  # noqa: E402
from tokenscale.sim.traces import load_trace  # noqa: E402

DAY = 86400
MULTI_DAY = ("servegen-m-large", "servegen-m-mid", "servegen-m-small")


class _Quiet:
    def update(self, steps: int) -> None:
        """No progress bar."""


def run_case(case: dict[str, Any], days: int) -> dict[str, Any]:
    """The case's trace day after day; per day the checkpoints of :class:`ProjectionProbe`."""
    spec = parse_spec(case["manifest"]["spec"])
    (name, file), = case["traces"].items()
    full = load_trace(TRACES / file).replicated(case["scales"][name], seed=0)
    memory = None
    rows = []
    for day in range(min(days, int(full.duration_s // DAY))):
        cfg = replace(engine.Settings(progress=False, seed=day),
                      start=engine.DEFAULT_START + timedelta(days=day))
        w = engine._world(spec, {name: full.sliced(day * DAY, DAY)}, cfg)
        w.bar = _Quiet()
        probe = ProjectionProbe(spec, cfg.start, windows(spec, cfg.start, DAY))
        runs, controller = engine._run_tokenscale(w, probe, memory=memory)
        memory = controller.memory
        final = [engine._window_cost(w, runs, a, b) for a, b in probe.windows]
        for row in probe.report(final)["projection_checkpoints"]:
            rows.append({"day": day, **row})
    return {"case": case["name"], "checkpoints": rows}


def replay_case(case: dict[str, Any]) -> dict[str, Any]:
    """The backtest's replay of a case (seed 0), tokenscale only: its projection report."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = command_line(case, Path("/tmp"), 1)[1:]
    argv = [a.replace("../shared/traces/", f"{TRACES}/") for a in argv]
    args = parser.parse_args([*argv, "--no-progress", "--quiet"])
    spec = parse_spec(case["manifest"]["spec"])
    traces = prepare_traces(spec, args, seed=args.seed)
    history = prepare_history(spec, args, seed=args.seed)
    cfg = settings_from(args)
    w = engine._world(spec, traces, cfg)
    w.bar = _Quiet()
    probe = ProjectionProbe(spec, cfg.start, windows(spec, cfg.start, w.trace_seconds))
    runs, _ = engine._run_tokenscale(w, probe, history)
    report = probe.report([engine._window_cost(w, runs, a, b) for a, b in probe.windows])
    return {"case": case["name"], "history_days": round(
        max((len(h) for h in history.values()), default=0) / 1440, 2), **report}


def replay_markdown(docs: list[dict[str, Any]]) -> str:
    lines = ["| case | history | window | projection error 25 / 50 / 75 % | run-rate error "
             "25 / 50 / 75 % |", "|---|---|---|---|---|"]
    for d in docs:
        w = d["projection_windows"][0]
        length = (w["end_second"] - w["first_second"]) / 3600

        def cells(key: str, d: dict[str, Any] = d) -> str:
            return " / ".join("n/a" if d[key][k] is None else f"{100 * d[key][k]:+.1f} %"
                              for k in ("25", "50", "75"))

        lines.append(f"| {d['case']} | {d['history_days']:g} d | {length:g} h | "
                     f"{cells('projection_error')} | {cells('projection_error_run_rate')} |")
    return "\n".join(lines) + "\n"


def summary(doc: dict[str, Any], first: int = 1) -> dict[str, Any]:
    """Mean |error| per fraction over days >= ``first``, for both projections."""
    out: dict[str, Any] = {}
    for key in ("error", "run_rate_error"):
        out[key] = {}
        for f in FRACTIONS:
            values = [abs(r[key]) for r in doc["checkpoints"]
                      if r["fraction"] == f and r["day"] >= first]
            out[key][f"{round(100 * f)}"] = float(np.mean(values)) if values else None
    out["days"] = len({r["day"] for r in doc["checkpoints"] if r["day"] >= first})
    return out


def markdown(docs: list[dict[str, Any]]) -> str:
    lines = ["| trace | days | projection \\|error\\| 25 / 50 / 75 % | run rate \\|error\\| "
             "25 / 50 / 75 % | day 0 (no history): projection / run rate at 25 % |",
             "|---|---|---|---|---|"]
    for d in docs:
        s = summary(d)
        zero = [r for r in d["checkpoints"] if r["day"] == 0 and r["fraction"] == 0.25]

        def cells(key: str, s: dict[str, Any] = s) -> str:
            return " / ".join(f"{100 * s[key][k]:.1f} %" for k in ("25", "50", "75"))

        first = (f"{100 * zero[0]['error']:+.1f} % / {100 * zero[0]['run_rate_error']:+.1f} %"
                 if zero else "n/a")
        lines.append(f"| {d['case']} | {s['days']} | {cells('error')} | "
                     f"{cells('run_rate_error')} | {first} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    chosen = [c for c in cases() if not args.only or c["name"] in args.only]
    replays = [replay_case(c) for c in chosen]
    sys.stdout.write(replay_markdown(replays) + "\n")
    docs = [run_case(c, args.days) for c in chosen if c["name"] in MULTI_DAY and args.days > 0]
    if docs:
        sys.stdout.write(markdown(docs))
    if args.json:
        args.json.write_text(json.dumps({"replays": replays, "days": docs}, indent=2) + "\n",
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
