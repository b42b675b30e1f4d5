"""The backtest command: read the budget and traces, run, print, write JSON and PNG."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tokenscale.api import SpecError, TokenBudgetSpec, parse_spec
from tokenscale.backtest.report import table, to_json
from tokenscale.sim.engine import Backtest, Settings, run_backtest
from tokenscale.sim.policies import HpaSettings
from tokenscale.sim.traces import Trace, TraceError, load_trace


class UsageError(ValueError):
    """A bad command line or input file, reported in one line."""


def load_budget(path: str | Path) -> TokenBudgetSpec:
    """The spec of the (first) TokenBudget in a YAML file (a bare spec is accepted too)."""
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "TokenBudget":
            return parse_spec(doc.get("spec"))
    if docs and isinstance(docs[0], dict) and "targets" in docs[0]:
        return parse_spec(docs[0])
    raise UsageError(f"{path}: no TokenBudget found")


def _pairs(items: list[str], what: str) -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    for item in items:
        name, sep, value = item.partition("=")
        out.append((name, value) if sep else (None, item))
        if sep and not name:
            raise UsageError(f"{what} {item!r}: empty target name")
    return out


def prepare_traces(spec: TokenBudgetSpec, args: argparse.Namespace) -> dict[str, Trace]:
    """Load, scale, compress and slice the traces of ``--trace TARGET=PATH``."""
    names = [t.name for t in spec.targets]
    traces: dict[str, Trace] = {}
    for name, path in _pairs(args.trace, "--trace"):
        if name is None:
            if len(names) != 1:
                raise UsageError("--trace needs TARGET=PATH when the budget has several targets")
            name = names[0]
        if name not in names:
            raise UsageError(f"--trace {name}=...: the budget has no target {name!r} ({names})")
        if name in traces:
            raise UsageError(f"--trace {name}=... given twice")
        try:
            traces[name] = load_trace(path)
        except (OSError, TraceError) as exc:
            raise UsageError(str(exc)) from None
    missing = [n for n in names if n not in traces]
    if missing:
        raise UsageError(f"no --trace for target(s) {missing}")
    factors = dict.fromkeys(names, 1.0)
    for name, value in _pairs(args.scale, "--scale"):
        try:
            k = float(value)
        except ValueError:
            raise UsageError(f"--scale {value!r} is not a number") from None
        if k <= 0:
            raise UsageError("--scale must be > 0")
        for n in ([name] if name is not None else names):
            if n not in factors:
                raise UsageError(f"--scale {n}=...: no such target")
            factors[n] = k
    if args.speedup <= 0:
        raise UsageError("--speedup must be > 0")
    out = {}
    for n, tr in traces.items():
        tr = tr.scaled(factors[n]).compressed(args.speedup)
        if args.offset or args.duration is not None:
            duration = args.duration if args.duration is not None else tr.duration_s
            tr = tr.sliced(args.offset, duration)
        out[n] = tr
    return out


def settings_from(args: argparse.Namespace) -> Settings:
    """Engine settings from the command line."""
    try:
        start = datetime.fromisoformat(args.start)
    except ValueError:
        raise UsageError(f"--start {args.start!r} is not an ISO 8601 time") from None
    if start.tzinfo is None:
        raise UsageError("--start needs a UTC offset, e.g. 2024-01-01T00:00:00+00:00")
    try:
        utils = tuple(float(u) for u in args.hpa_utilizations.split(",") if u.strip())
    except ValueError:
        raise UsageError("--hpa-utilizations must be numbers, e.g. 0.5,0.7,0.9") from None
    if not utils or any(not 0 < u <= 1 for u in utils):
        raise UsageError("--hpa-utilizations must be in (0, 1]")
    if args.slo_seconds < 0 or args.scrape_seconds <= 0 or args.prefill_weight < 0:
        raise UsageError("--slo-seconds >= 0, --scrape-seconds > 0, --prefill-weight >= 0")
    return Settings(slo_s=args.slo_seconds, scrape_s=args.scrape_seconds,
                    hpa_utilizations=utils, prefill_weight=args.prefill_weight, seed=args.seed,
                    start=start, progress=args.progress,
                    hpa=HpaSettings(metric=args.hpa_metric),
                    hpa_other_metric=args.hpa_both_metrics)


def execute(args: argparse.Namespace) -> tuple[Backtest, dict[str, Any]]:
    """Run the backtest of ``args``; returns the run and the JSON document."""
    try:
        spec = load_budget(args.budget)
    except SpecError as exc:
        raise UsageError(f"{args.budget}: invalid TokenBudget: {exc}") from None
    traces = prepare_traces(spec, args)
    bt = run_backtest(spec, traces, settings_from(args))
    extra = {"traces": {n: {"path": p, "format": traces[n].format,
                            "requests": round(traces[n].requests, 1),
                            "duration_s": round(traces[n].duration_s, 3)}
                        for n, p in ((n or spec.targets[0].name, p)
                                     for n, p in _pairs(args.trace, "--trace"))},
             "scale": args.scale, "speedup": args.speedup}
    return bt, to_json(bt, extra)


def run(args: argparse.Namespace) -> int:
    """Entry of ``tokenscale backtest``: 0 on success, 2 on bad input."""
    try:
        bt, doc = execute(args)
    except UsageError as exc:
        print(f"tokenscale backtest: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        sys.stdout.write(table(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if args.plot:
        from tokenscale.backtest.plot import write_plot

        names = ", ".join(f"{n}: {Path(p).name}" for n, p in
                          ((n or "", p) for n, p in _pairs(args.trace, "--trace")))
        write_plot(bt, args.plot, title=f"tokenscale backtest — {names}")
    return 0
