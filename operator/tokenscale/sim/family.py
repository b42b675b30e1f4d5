"""The HPA/KEDA family of baselines: four signals, two scale-down windows, each swept.

Members (DESIGN.md, "Benchmarks"), as platform teams configure them for vLLM:

- ``served``: served tokens/s from vLLM's counters (``rate(prompt + generation tokens)``),
  target = utilisation of ``tokensPerReplicaPerSecond``;
- ``demand``: arriving tokens/s from a gateway's counter (never capped by capacity), same
  target;
- ``waiting``: ``vllm:num_requests_waiting`` per replica (KEDA's common vLLM trigger,
  AverageValue), target = waiting requests per replica;
- ``kv``: ``vllm:gpu_cache_usage_perc`` averaged over replicas (Utilization), target = share.

Each with a 90 s and a 300 s scale-down stabilisation window, HPA semantics otherwise (15 s
sync, tolerance 0.1, scale-up at most max(+4, +100 %) per sync, at least one replica). All rows
(members × targets values × budget targets) are decided together with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tokenscale.sim.cluster import Group
from tokenscale.sim.latency import EngineModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

METRICS = ("served", "demand", "waiting", "kv")
WINDOWS_S = (90, 300)
#: targets swept per signal (utilisation of the spec capacity; waiting requests per replica;
#: KV-cache share)
SWEEPS: dict[str, tuple[float, ...]] = {
    "served": (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1),
    "demand": (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1),
    "waiting": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    "kv": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
}


@dataclass(frozen=True)
class Member:
    """One configuration of the family: signal, scale-down window and target value."""

    metric: str
    window_s: int
    target: float

    @property
    def name(self) -> str:
        """E.g. ``hpa-served-300s@0.8``."""
        return f"hpa-{self.metric}-{self.window_s}s@{self.target:g}"



def members(extra_served: tuple[float, ...] = ()) -> list[Member]:
    """Every member of the family (``extra_served``: more served-rate targets, e.g. the
    budget's targetUtilization for the plain ``hpa`` policy)."""
    out: list[Member] = []
    for metric in METRICS:
        values = sorted({*SWEEPS[metric], *(extra_served if metric == "served" else ())})
        for window in WINDOWS_S:
            out.extend(Member(metric, window, v) for v in values)
    return out


@dataclass(frozen=True)
class Signals:
    """How each row reads its signal: metric per row, the spec capacity (tokens/s) of its
    budget target, and work tokens per request (to count waiting requests)."""

    metric: list[str]
    target: FloatArray
    spec_capacity: FloatArray
    tokens_per_request: FloatArray


def desired_replicas(group: Group, sig: Signals, engine: EngineModel, scrape: int,
                     rate_window_s: int, current: IntArray) -> FloatArray:
    """Each row's desired replicas from what Prometheus shows at ``scrape`` (s)."""
    at = np.array([scrape], dtype=np.int64)
    metric = np.asarray(sig.metric)
    out = np.zeros(len(metric))
    rate_rows = np.isin(metric, ("served", "demand"))
    if rate_rows.any():
        served = group.rates_at(at, rate_window_s)[:, 0]
        demand = group.demand_rates_at(at, rate_window_s)[:, 0]
        rate = np.where(metric == "demand", demand, served)
        out = np.where(rate_rows, rate / (sig.spec_capacity * sig.target), out)
    if (metric == "waiting").any():
        waiting = group.queue_at(at)[:, 0] / np.maximum(sig.tokens_per_request, 1e-9)
        out = np.where(metric == "waiting", waiting / sig.target, out)
    if (metric == "kv").any():
        t = max(scrape - 1, 0)
        ready = group.ready[:, t].astype(np.float64)
        cap = ready * engine.decode_tokens_per_s
        arrived = group.arrivals[group.rows_target, t]
        prev = group.queue[:, t - 1] if t > 0 else np.zeros(len(metric))
        served_now = arrived + prev - group.queue[:, t]
        with np.errstate(divide="ignore", invalid="ignore"):
            util = np.where(cap > 0, served_now / cap, 1.0)
        kv = np.where(group.queue[:, t] > 1e-6 * np.maximum(cap, 1.0), 1.0, engine.kv_usage(util))
        out = np.where(metric == "kv", current * kv / sig.target, out)
    return np.asarray(out, dtype=np.float64)
