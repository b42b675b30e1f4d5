"""The options of `tokenscale demo` (argparse only: importing this needs no extra)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenscale.extras import EXTRA_MODULES, require

DEFAULT_API_PORT = 16443
DEFAULT_PROMETHEUS_PORT = 19090
DEFAULT_DAY_SECONDS = 240.0


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser`` (the ``demo`` sub-command)."""
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop after S seconds (default: run until Ctrl-C)")
    parser.add_argument("--day-seconds", type=float, default=None, metavar="S",
                        help="real seconds one simulated day takes (default: 240, or the "
                             "duration if shorter)")
    parser.add_argument("--summary-json", type=Path, default=None, metavar="OUT.json",
                        help="write the summary as JSON (for scripts)")
    parser.add_argument("--plot", type=Path, default=None, metavar="OUT.png",
                        help="the PNG to write (default: <demo-dir>/demo.png)")
    parser.add_argument("--demo-dir", type=Path, default=Path(".demo"),
                        help="kubeconfig, applied manifests and operator log (default .demo)")
    parser.add_argument("--api-port", type=int, default=DEFAULT_API_PORT,
                        help=f"port of the Kubernetes API emulator (default {DEFAULT_API_PORT})")
    parser.add_argument("--prometheus-port", type=int, default=DEFAULT_PROMETHEUS_PORT,
                        help=f"port of Prometheus (default {DEFAULT_PROMETHEUS_PORT})")
    parser.add_argument("--traces", type=Path, default=None, metavar="DIR",
                        help="trace directory (default $TOKENSCALE_TRACES or ../shared/traces "
                             "next to the repo)")
    parser.add_argument("--refresh", type=float, default=2.0, metavar="S",
                        help="seconds between screen refreshes (default 2)")
    parser.add_argument("--no-color", action="store_true", help="no ANSI colours")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    require("demo", "the demo", EXTRA_MODULES["demo"])
    from tokenscale.demo.main import run

    return run(args)
