"""The `tokenscale` command: run | crd | shard | backtest | demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _crd(args: argparse.Namespace) -> int:
    from tokenscale.crd import render

    sys.stdout.write(render())
    return 0


def _shard(args: argparse.Namespace) -> int:
    from tokenscale.sharding import shard_of

    for namespace in args.namespace:
        print(f"{namespace}\t{shard_of(namespace, args.shards)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="tokenscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("crd", help="print the TokenBudget CRD (YAML)").set_defaults(func=_crd)
    shard = sub.add_parser("shard", help="which shard serves the TokenBudgets of a namespace")
    shard.add_argument("namespace", nargs="+")
    shard.add_argument("--shards", type=int, required=True, help="TOKENSCALE_SHARDS")
    shard.set_defaults(func=_shard)
    sub.add_parser("run", help="run the operator (settings: TOKENSCALE_* env)").set_defaults(
        func=lambda args: __import__("tokenscale.runner").runner.run())
    from tokenscale.backtest import add_arguments as add_backtest  # argparse only: cheap

    add_backtest(sub.add_parser("backtest", help="replay traces: tokenscale vs hpa/static/oracle"))
    from tokenscale.demo.options import configure as add_demo  # argparse only: cheap

    add_demo(sub.add_parser(
        "demo", help="local demo: emulator, Prometheus, simulated vLLM fleet, operator, live"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
