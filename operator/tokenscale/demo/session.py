"""The demo's settings (from the command line, read once), its output and its stop signal."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from tokenscale.demo.options import DEFAULT_DAY_SECONDS
from tokenscale.demo.stack import repo_root


def default_traces_dir(root: Path | None) -> Path:
    """$TOKENSCALE_TRACES, else ``../shared/traces`` relative to the repo (or the cwd)."""
    env = os.environ.get("TOKENSCALE_TRACES")
    if env:
        return Path(env)
    return (root or Path.cwd()).resolve().parent / "shared" / "traces"


def rel(path: Path) -> str:
    """``path`` relative to the cwd if it is below it, else absolute (for messages)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


@dataclass
class Session:
    """What one ``tokenscale demo`` run was asked to do, and where it writes.

    Times are real seconds; ``speedup`` is simulated seconds per real second (one simulated
    day takes ``day_seconds``).
    """

    out: TextIO
    tty: bool  # redraw the screen (else: plain progress lines)
    colour: bool
    root: Path | None  # the repository checkout, if found
    demo_dir: Path
    api_port: int
    prometheus_port: int
    duration: float | None  # None: until Ctrl-C / SIGTERM
    day_seconds: float
    speedup: float
    traces_dir: Path
    plot_path: Path
    refresh: float  # s between redraws
    summary_json: Path | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Session:
        """The settings of ``tokenscale demo`` (see :mod:`tokenscale.demo.options`)."""
        out = sys.stdout
        tty = out.isatty()
        root = repo_root()
        demo_dir: Path = args.demo_dir
        duration: float | None = args.duration
        day_seconds = args.day_seconds or (min(DEFAULT_DAY_SECONDS, duration) if duration
                                           else DEFAULT_DAY_SECONDS)
        return cls(
            out=out, tty=tty, colour=tty and not args.no_color and "NO_COLOR" not in os.environ,
            root=root, demo_dir=demo_dir, api_port=args.api_port,
            prometheus_port=args.prometheus_port, duration=duration, day_seconds=day_seconds,
            speedup=86_400.0 / day_seconds, traces_dir=args.traces or default_traces_dir(root),
            plot_path=args.plot or demo_dir / "demo.png", refresh=args.refresh,
            summary_json=args.summary_json)

    def say(self, text: str) -> None:
        """One line to the demo's output."""
        print(text, file=self.out, flush=True)

    def initial_summary(self) -> dict[str, Any]:
        """The JSON summary before anything ran (``ok`` false until the end)."""
        return {"ok": False, "error": None, "speedup": self.speedup,
                "daySeconds": self.day_seconds, "demoDir": str(self.demo_dir.resolve())}


class StopSignal:
    """Set by SIGINT/SIGTERM/SIGHUP; the main loop waits on it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name
        self.event.set()

    @classmethod
    def install(cls) -> StopSignal:
        """A new one, handling SIGINT, SIGTERM and SIGHUP from now on."""
        stop = cls()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, stop)
        return stop
