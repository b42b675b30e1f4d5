"""Where an operator's memory went: the tracemalloc snapshots of ``scale.py --memory-profile
DIR``, summed by the innermost frame in tokenscale (else kopf, else the library that
allocated), largest first.

    .venv/bin/python benchmarks/memory_summary.py DIR [--top 25]
"""

from __future__ import annotations

import argparse
import tracemalloc
from collections import Counter
from pathlib import Path

OURS = ("tokenscale/", "kopf/")


def owner(trace: tracemalloc.Traceback) -> str:
    """The allocation's innermost frame in tokenscale, else in kopf, else its innermost
    frame."""
    frames = list(reversed(trace))  # a Traceback lists the oldest frame first
    for want in OURS:
        for frame in frames:
            if want in frame.filename:
                name = frame.filename.split("site-packages/")[-1].split("operator/")[-1]
                return f"{name}:{frame.lineno}"
    frame = frames[0]
    return f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"


def summary(path: Path, top: int) -> str:
    """One snapshot's total and its ``top`` owners (MB)."""
    snap = tracemalloc.Snapshot.load(str(path))
    by_owner: Counter[str] = Counter()
    for stat in snap.statistics("traceback"):
        by_owner[owner(stat.traceback)] += stat.size
    total = sum(by_owner.values())
    lines = [f"{path.name}: {total / 1e6:.1f} MB traced"]
    lines += [f"  {size / 1e6:8.1f} MB  {name}" for name, size in by_owner.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("dir", type=Path)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    for snap in sorted(a.dir.glob("*.snap")):
        print(summary(snap, a.top))


if __name__ == "__main__":
    main()
