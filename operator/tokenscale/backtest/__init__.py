"""`tokenscale backtest`: replay real traces through the operator's planner and the baselines.

This module only defines the command line (cheap to import); the work is in
:mod:`tokenscale.backtest.command`, :mod:`tokenscale.backtest.report` and
:mod:`tokenscale.backtest.plot`, on top of :mod:`tokenscale.sim`.
"""

from __future__ import annotations

import argparse

DEFAULT_HPA_SWEEP = "0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9,0.95"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the backtest options to ``parser`` and make it run :func:`command.run`."""
    parser.description = (
        "Replay traces through tokenscale (the operator's planner), an HPA/KEDA on token rate "
        "(swept over target utilizations), static peak provisioning and the offline oracle, "
        "on a simulated cluster with cold starts and a FIFO queue."
    )
    parser.add_argument("--budget", required=True, metavar="BUDGET.yaml",
                        help="a TokenBudget manifest as for kubectl apply (its spec is used)")
    parser.add_argument("--trace", action="append", required=True, metavar="TARGET=PATH",
                        help="trace for a target of the budget (Azure CSV, Mooncake JSONL, "
                        "ServeGen aggregate CSV or timestamp_s,input_tokens,output_tokens CSV); "
                        "repeat per target")
    parser.add_argument("--speedup", type=float, default=1.0, metavar="K",
                        help="compress trace time K-fold (default 1)")
    parser.add_argument("--scale", action="append", default=[], metavar="[TARGET=]K",
                        help="multiply demand by K (all targets, or one); default 1")
    parser.add_argument("--slo-seconds", type=int, default=10, metavar="S",
                        help="a token is on time when it waits at most S seconds (default 10)")
    parser.add_argument("--json", metavar="OUT.json", help="write the result document")
    parser.add_argument("--plot", metavar="OUT.png", help="write demand/capacity/spend plot")
    parser.add_argument("--start", default="2024-01-01T00:00:00+00:00", metavar="ISO8601",
                        help="wall-clock time of trace time 0 (default Monday 2024-01-01 "
                        "00:00 UTC); budget periods and price windows follow it")
    parser.add_argument("--offset", type=float, default=0.0, metavar="SECONDS",
                        help="skip this much of each trace (after --speedup)")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="replay only this much of each trace (after --speedup)")
    parser.add_argument("--prefill-weight", type=float, default=1.0, metavar="W",
                        help="work tokens = output + W x input (default 1: all tokens count, "
                        "as the default vLLM token-rate query sees them)")
    parser.add_argument("--scrape-seconds", type=int, default=15, metavar="S",
                        help="Prometheus scrape interval (default 15)")
    parser.add_argument("--hpa-utilizations", default=DEFAULT_HPA_SWEEP, metavar="U,U,...",
                        help=f"HPA target utilizations to sweep (default {DEFAULT_HPA_SWEEP})")
    parser.add_argument("--hpa-metric", choices=("served", "demand"), default="served",
                        help="what the HPA scales on: served tokens/s from vLLM's counters "
                        "(default; the metric tokenscale sees too) or the arriving token rate")
    parser.add_argument("--hpa-both-metrics", action="store_true",
                        help="also sweep an HPA on the other metric (reported separately)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the Poisson arrivals synthesised for window traces")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="repeat over N seeds (window traces: Poisson seeds) or N overlapping "
                        "half-length slices (request traces); reports the ratio's mean and "
                        "95 %% interval")
    parser.add_argument("--warmup", type=float, default=300.0, metavar="SECONDS",
                        help="exclude the first SECONDS of each run from cost and attainment, "
                        "for every policy alike (default 300)")
    parser.add_argument("--fluid", action="store_true",
                        help="version 1's fluid model: fixed capacity per replica, a token "
                        "meets the SLO when it waits at most --slo-seconds (no engine model)")
    parser.add_argument("--arrival-counter", action="store_true",
                        help="tokenscale reads the shedding gateway's arrival counter "
                        "(metrics.arrivalRateQuery) instead of estimating the arrivals from "
                        "the served rate, the queue's growth and the admission it published")
    parser.add_argument("--decode-tokens-per-second", type=float, default=3800.0, metavar="D",
                        help="engine: asymptotic decode throughput of a replica (default 3800)")
    parser.add_argument("--prefill-tokens-per-second", type=float, default=16000.0,
                        metavar="P", help="engine: prefill throughput of a replica "
                        "(default 16000)")
    parser.add_argument("--itl-floor-ms", type=float, default=8.0, metavar="MS",
                        help="engine: inter-token latency at batch 1 (default 8)")
    parser.add_argument("--max-batch", type=int, default=256, metavar="N",
                        help="engine: running sequences per replica at most (default 256)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar on stderr (default: when stderr is a terminal)")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    from tokenscale.extras import require

    needs = ("numpy", "matplotlib") if args.plot else ("numpy",)
    require("backtest", "tokenscale backtest" + (" --plot" if args.plot else ""), needs)
    from tokenscale.backtest.command import run

    return run(args)
