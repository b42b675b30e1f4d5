"""The backtest command: read the budget and traces, run, print, write JSON and PNG."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tokenscale.api import SpecError, TokenBudgetSpec, parse_spec
from tokenscale.backtest.report import table, to_json
from tokenscale.sim.engine import Backtest, FloatArray, Settings, run_backtest
from tokenscale.sim.latency import EngineModel
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


def prepare_traces(spec: TokenBudgetSpec, args: argparse.Namespace,
                   seed: int = 0) -> dict[str, Trace]:
    """Load, scale, compress and slice the traces of ``--trace TARGET=PATH``. The engine model
    scales request traces by request rate (:meth:`Trace.replicated`, seeded), the fluid model
    by tokens per request."""
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
        tr = (tr.scaled(factors[n]) if args.fluid
              else tr.replicated(factors[n], seed=seed)).compressed(args.speedup)
        if args.offset or args.duration is not None:
            duration = args.duration if args.duration is not None else tr.duration_s
            tr = tr.sliced(args.offset, duration)
        out[n] = tr
    return out


#: the most history before ``--offset`` that seeds tokenscale's demand profiles (s)
HISTORY_SECONDS = 7 * 86400


def prepare_history(spec: TokenBudgetSpec, args: argparse.Namespace,
                    seed: int = 0) -> dict[str, FloatArray]:
    """Per target, the mean work tokens/s per minute of the trace before ``--offset`` (at
    most :data:`HISTORY_SECONDS`), scaled and compressed like the replayed part: what an
    operator that ran before the replay learned its demand profiles from. Empty without an
    offset."""
    if not args.offset:
        return {}
    weight = args.prefill_weight if args.fluid else EngineModel().prefill_weight
    out = {}
    for name, path in _pairs(args.trace, "--trace"):
        name = name or spec.targets[0].name
        factor = 1.0
        for target, value in _pairs(args.scale, "--scale"):
            if target in (None, name):
                factor = float(value)
        try:
            tr = load_trace(path)
        except (OSError, TraceError) as exc:
            raise UsageError(str(exc)) from None
        tr = (tr.scaled(factor) if args.fluid
              else tr.replicated(factor, seed=seed)).compressed(args.speedup)
        length = min(float(args.offset), float(HISTORY_SECONDS))
        before = tr.sliced(args.offset - length, length)
        if before.duration_s >= 60:
            out[name] = before.rate_series(60.0, weight)
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
    if not 1 <= args.seeds <= 100 or args.warmup < 0:
        raise UsageError("--seeds must be 1..100 and --warmup >= 0")
    if min(args.decode_tokens_per_second, args.prefill_tokens_per_second,
           args.itl_floor_ms, args.max_batch) <= 0:
        raise UsageError("the engine's throughputs, ITL floor and batch must be > 0")
    engine = None if args.fluid else EngineModel(
        decode_tokens_per_s=args.decode_tokens_per_second,
        prefill_tokens_per_s=args.prefill_tokens_per_second,
        itl_floor_s=args.itl_floor_ms / 1000.0, max_batch=args.max_batch)
    return Settings(slo_s=args.slo_seconds, scrape_s=args.scrape_seconds,
                    engine=engine, warmup_s=0 if args.fluid else int(args.warmup),
                    hpa_utilizations=utils, prefill_weight=args.prefill_weight, seed=args.seed,
                    start=start, progress=args.progress,
                    hpa=HpaSettings(metric=args.hpa_metric),
                    hpa_other_metric=args.hpa_both_metrics,
                    arrival_counter=args.arrival_counter)


def _slice(traces: dict[str, Trace], k: int, n: int) -> dict[str, Trace]:
    """Slice ``k`` of ``n``: half the trace long, starts spread evenly over its first half
    (so every slice is long enough for cold starts and scale-down windows to matter)."""
    duration = max(t.duration_s for t in traces.values())
    length = duration / 2
    start = k * (duration - length) / max(n - 1, 1)
    return {name: t.sliced(start, length) for name, t in traces.items()}


def _run_seed(spec: TokenBudgetSpec, args: argparse.Namespace, k: int,
              base: Settings) -> tuple[Backtest, dict[str, Any], dict[str, Trace]]:
    """Seed ``k`` of ``--seeds``: window traces get Poisson seed ``seed + k``, request traces
    the k-th of ``--seeds`` overlapping half-length slices (their arrivals are real, not
    drawn; a scaled trace's replication is seeded with ``seed + k`` too)."""
    traces = prepare_traces(spec, args, seed=args.seed + k)
    if args.seeds > 1 and all(t.kind == "requests" for t in traces.values()):
        traces = _slice(traces, k, args.seeds)
    history = prepare_history(spec, args, seed=args.seed + k)
    bt = run_backtest(spec, traces, replace(base, seed=base.seed + k), history)
    return bt, to_json(bt), traces


#: two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom (then ~normal)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def interval95(values: list[float]) -> tuple[float, float, float]:
    """Mean and the 95 % confidence interval of the mean (Student's t)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 6) if known else None


def _averaged(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One policy summary for several seeds: every figure any seed has, the mean over the
    seeds (a count, an int, its rounded mean); a figure some seed lacks (``quality_value``,
    where a target served nothing within the SLO) is left out, not averaged over the others;
    what is not a number (a name) is the first seed's."""
    out: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for s in summaries for k in s))
    for key in keys:
        values = [s.get(key) for s in summaries]
        numbers = [v for v in values
                   if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) == len(values):
            mean = sum(numbers) / len(numbers)
            out[key] = round(mean) if all(isinstance(v, int) for v in numbers) else mean
        elif not numbers:
            out[key] = next((v for v in values if v is not None), None)
    return out


def _aggregate(docs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """One document for several seeds: the first seed's, with the policies' figures and the
    comparisons averaged, and each seed's row under ``seeds``."""
    doc = dict(docs[0])
    doc["policies"] = {p: _averaged([d["policies"][p] for d in docs])
                       for p in docs[0]["policies"]}
    rows = []
    for seed, d in zip(seeds, docs, strict=True):
        ts = d["policies"]["tokenscale"]
        rows.append({"seed": seed, "cost_ratio_vs_hpa_at_equal_slo":
                     d["cost_ratio_vs_hpa_at_equal_slo"], "gap_captured": d.get("gap_captured"),
                     "frontier_member": d.get("frontier_member"),
                     "tokenscale_cost": ts["cost"], "tokenscale_slo_attainment":
                     ts["slo_attainment"], "oracle_lower_bound_cost":
                     d.get("oracle_lower_bound_cost")})
    doc["seeds"] = rows
    for key in ("cost_ratio_vs_hpa_at_equal_slo", "gap_captured", "cost_ratio_vs_oracle",
                "oracle_lower_bound_cost", "hpa_frontier_cost_at_tokenscale_slo",
                "oracle_cost_at_tokenscale_slo", "goodput_vs_budget_oracle",
                "goodput_vs_budget_oracle_same_split"):
        values = [d[key] for d in docs if d.get(key) is not None]
        if values:
            mean, lo, hi = interval95(values)
            doc[key] = round(mean, 6)
            if key == "cost_ratio_vs_hpa_at_equal_slo":
                doc["cost_ratio_ci95"] = [round(lo, 6), round(hi, 6)]
            if key == "gap_captured":
                doc["gap_captured_ci95"] = [round(lo, 6), round(hi, 6)]
    for key in ("projection_error", "projection_abs_error", "projection_error_run_rate",
                "projection_abs_error_run_rate"):
        if all(key in d for d in docs):
            doc[key] = {f: _mean([d[key][f] for d in docs]) for f in docs[0][key]}
    for oracle_key in ("budget_oracle", "budget_oracle_same_split"):
        budget_oracles = [d[oracle_key] for d in docs if d.get(oracle_key)]
        if budget_oracles:
            doc[oracle_key] = _averaged(budget_oracles)
    members = [d.get("frontier_member") for d in docs]
    doc["frontier_member"] = max(set(members), key=members.count)
    doc["wall_seconds"] = round(sum(d["wall_seconds"] for d in docs), 3)
    return doc


def execute(args: argparse.Namespace) -> tuple[Backtest, dict[str, Any]]:
    """Run the backtest of ``args`` (over ``--seeds``); returns the first seed's run and the
    JSON document."""
    try:
        spec = load_budget(args.budget)
    except SpecError as exc:
        raise UsageError(f"{args.budget}: invalid TokenBudget: {exc}") from None
    base = settings_from(args)
    runs = [_run_seed(spec, args, k, base) for k in range(args.seeds)]
    bt, _, traces = runs[0]
    doc = runs[0][1] if args.seeds == 1 else _aggregate([r[1] for r in runs],
                                                        [args.seed + k for k in range(args.seeds)])
    if args.seeds == 1:
        doc["seeds"] = [{"seed": args.seed,
                         "cost_ratio_vs_hpa_at_equal_slo": doc["cost_ratio_vs_hpa_at_equal_slo"],
                         "gap_captured": doc.get("gap_captured")}]
    doc.update({"traces": {n: {"path": p, "format": traces[n].format,
                               "requests": round(traces[n].requests, 1),
                               "duration_s": round(traces[n].duration_s, 3)}
                           for n, p in ((n or spec.targets[0].name, p)
                                        for n, p in _pairs(args.trace, "--trace"))},
                "scale": args.scale, "speedup": args.speedup})
    return bt, doc


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
