"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): where the CPU samples go.

    python benchmarks/profile_summary.py PROFILE.txt [--top 25] [--match tokenscale/]

Prints samples per thread, the functions with the most *inclusive* samples (the function is
anywhere on the stack) among those whose location contains ``--match``, and the top *self*
frames (the innermost frame). py-spy records only active (non-idle) samples by default.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_THREAD = re.compile(r"^thread \((?:0x)?[0-9a-fA-F]+\): ?([^;]*);?")


def parse(path: Path) -> list[tuple[str, list[str], int]]:
    """(thread name, frames outermost first, samples) per line."""
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith("thread") else ""
        if thread:
            frames = frames[1:]
        out.append((thread, frames, int(count)))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", default="tokenscale/", help="inclusive view: only these frames")
    a = p.parse_args(argv)
    stacks = parse(a.profile)
    total = sum(n for _, _, n in stacks)
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    for thread, frames, n in stacks:
        threads[re.sub(r"\(.*?\)", "", thread).strip() or "?"] += n
        for frame in set(frames):
            if a.match in frame:
                inclusive[frame] += n
        if frames:
            self_time[frames[-1]] += n
    print(f"{total} samples")
    for name, n in threads.most_common(10):
        print(f"  {100 * n / total:5.1f}%  thread {name}")
    print(f"\ninclusive (frames matching {a.match!r}):")
    for frame, n in inclusive.most_common(a.top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("\nself:")
    for frame, n in self_time.most_common(a.top):
        print(f"  {100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
