"""Memory probe for benchmark runs (never shipped): with ``TOKENSCALE_MEMPROBE_DIR`` set,
SIGUSR1 starts tracemalloc (after the imports: tracing them made the operator's start take
minutes) and SIGUSR2 writes a snapshot of this process to ``<dir>/<pid>.snap``.
``benchmarks/scale.py --memory-profile DIR`` puts this directory on the operators' PYTHONPATH,
starts tracing once each operator serves its metrics and takes the snapshots at the window's
end; ``benchmarks/memory_summary.py DIR`` prints where the memory went."""

from __future__ import annotations

import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

_DIR = os.environ.get("TOKENSCALE_MEMPROBE_DIR")
#: frames kept per allocation (enough to reach tokenscale's or kopf's frame)
FRAMES = 8


def _start(signum: int, frame: FrameType | None) -> None:
    if not tracemalloc.is_tracing():
        tracemalloc.start(FRAMES)


def _dump(signum: int, frame: FrameType | None) -> None:
    if _DIR and tracemalloc.is_tracing():
        out = Path(_DIR) / f"{os.getpid()}.snap"
        tracemalloc.take_snapshot().dump(f"{out}.part")
        os.replace(f"{out}.part", out)  # complete when it appears


if _DIR:
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _dump)
