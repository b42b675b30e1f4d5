"""Planner speed: microseconds per ``plan()`` call of one target (DESIGN.md: < 1 ms).

Three inputs built like the core's unit tests (``tests/unit/core_world.py``): a target with a
forecast window of samples (41, every 15 s over 600 s, noisy), the same with 400 latency pairs
to fit and a learned time-of-day profile, and two targets capped by the budget with one
censored by its admission rate. Reported: the fastest of ``--repeat`` runs of ``--calls``
calls, per call (the fastest run is the least disturbed by other work on the machine).

    .venv/bin/python benchmarks/planner_speed.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))

from core_world import NOW, noisy, running, seen, spec, target, world

from tokenscale.core.planner import plan
from tokenscale.core.types import PROFILE_SLOTS, DemandProfile


def _inputs() -> dict[str, Callable[[], object]]:
    samples = noisy(4000.0, 0.05, span=600, step=15)
    single = (spec(), world(llama=seen(4, token_rate_samples=samples)), running(), NOW)
    pairs = tuple((x, 0.008 / (1 - x / 3800)) for x in (500.0 + 6.25 * i for i in range(400)))
    profile = DemandProfile(slots=tuple(4000.0 if 16 <= j < 40 else 800.0
                                        for j in range(PROFILE_SLOTS)))
    fitted = (spec([target(tokensPerReplicaPerSecond=None)]),
              world(llama=seen(4, token_rate_samples=samples, latency_samples=pairs)),
              running(demand_profiles={"llama": profile}), NOW)
    capped_spec = spec([target("a"), target("b")], budget={"maxCost": 48})
    memory = running()
    first = plan(capped_spec, world(a=seen(2, 6000), b=seen(2, 2100)), memory, NOW)
    later = NOW + timedelta(seconds=30)
    capped = (capped_spec,
              world(a=seen(2, token_rate_samples=noisy(1900.0, 0.01, now=later)),
                    b=seen(2, 2100)),
              replace(first.memory, last_accounted=NOW), later)
    cases = {"single target, 41 samples": single,
             "400 latency pairs to fit, learned profile": fitted,
             "two targets capped, one censored": capped}
    out: dict[str, Callable[[], object]] = {}
    for name, (s, obs, mem, now) in cases.items():
        out[name] = lambda s=s, obs=obs, mem=mem, now=now: plan(s, obs, mem, now)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for name, call in _inputs().items():
        best = float("inf")
        for _ in range(args.repeat):
            began = time.perf_counter()
            for _ in range(args.calls):
                call()
            best = min(best, (time.perf_counter() - began) / args.calls)
        print(f"{name}: {best * 1e6:.0f} µs per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
