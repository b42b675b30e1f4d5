"""Which trace drives which demo workload, and the demand curves built from them.

Every target of the sample TokenBudgets gets its own trace from ``../shared/traces``:

========================  ============  ==================================================
target (kind)             budget        demand
========================  ============  ==================================================
llama-8b (Deployment)     chat          ServeGen m-mid, 24 h (see _day_shape)
llama-70b-chat (Deploy.)  shared        ServeGen deepseek-r1, the 1-day trace
qwen-coder-32b (StatefS.) shared        ServeGen m-large day shape × Azure code 1 h bursts
mistral-7b (Deployment)   batch-summ.   ServeGen m-small day shape × Mooncake 1 h bursts
========================  ============  ==================================================

Time axis: ``demand(t)`` takes *simulated* seconds since the demo started (the fleet's clock,
see :mod:`tokenscale_testbed.fleet`); a day-shaped source repeats every 86,400 simulated
seconds. A 1 h request trace is stretched over the simulated day (its bursts then last
seconds of real demo time instead of milliseconds) and multiplies the day shape, normalised
to mean 1 and clipped at :data:`MAX_BURST`.

Levels: ServeGen token columns are a *shape*, not absolute volumes (see the traces README),
so every curve is rescaled so that its daily peak needs ``peak_replicas`` replicas of the
target (at the sample's tokensPerReplicaPerSecond × targetUtilization, with headroom). Result
in tokens/s (prompt + generation), as the fleet expects.

Without the traces directory, :func:`select_workloads` falls back to generated day-shaped
curves (a cosine day with deterministic noise) and says so in ``WorkloadSelection.note``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tokenscale.sim.traces import Trace, TraceError, load_trace

DAY_SECONDS = 86_400.0
#: Bins (s of trace time) of the 1 h request traces that modulate the day shape.
BURST_BIN_SECONDS = 60.0
#: Largest burst factor over the day shape (the raw Azure code trace reaches 13× its mean).
MAX_BURST = 4.0

Demand = Callable[[float], float]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class WorkloadSpec:
    """One simulated model workload of the demo (what the fleet and the manifests need)."""

    namespace: str
    name: str  # workload name == scaleTargetRef.name
    kind: str  # Deployment | StatefulSet
    budget: str  # TokenBudget that targets it
    shape: str  # file name of the day-shape trace (ServeGen), or "" for generated
    bursts: str = ""  # file name of the 1 h request trace, or ""
    peak_replicas: float = 4.0  # replicas the daily peak needs
    initial_replicas: int = 1  # DryRun targets only; Active ones start at the first need


#: The demo's workloads, in display order (targets of manifests/samples/*.yaml).
WORKLOADS: tuple[WorkloadSpec, ...] = (
    WorkloadSpec("inference", "llama-8b", "Deployment", "chat",
                 "servegen_m-mid_aggregate_10min.csv", peak_replicas=8.0),
    WorkloadSpec("inference", "llama-70b-chat", "Deployment", "shared",
                 "servegen_deepseek-r1_aggregate_10min.csv", peak_replicas=4.0),
    WorkloadSpec("inference", "qwen-coder-32b", "StatefulSet", "shared",
                 "servegen_m-large_aggregate_10min.csv",
                 "azure2023_AzureLLMInferenceTrace_code.csv", peak_replicas=5.0),
    WorkloadSpec("inference", "mistral-7b", "Deployment", "batch-summarize",
                 "servegen_m-small_aggregate_10min.csv",
                 "mooncake_fast25_conversation_trace.jsonl", peak_replicas=5.0,
                 initial_replicas=2),
)


@dataclass(frozen=True)
class Curve:
    """A demand curve over one simulated day: ``values[i]`` (relative units) at ``i × step``."""

    values: FloatArray
    step: float  # simulated seconds between values

    def at(self, t: float) -> float:
        """Linear interpolation at simulated second ``t`` (wraps around the day)."""
        n = len(self.values)
        x = (t % (n * self.step)) / self.step
        i = int(x) % n
        j = (i + 1) % n
        frac = x - int(x)
        return float(self.values[i] * (1 - frac) + self.values[j] * frac)


@dataclass
class WorkloadDemand:
    """The demand of one workload: shape (relative) × ``scale`` -> tokens/s."""

    spec: WorkloadSpec
    source: str  # human description of where the curve comes from
    shape: Curve
    bursts: Curve | None = None
    scale: float = 1.0  # tokens/s per unit of shape × bursts
    tokens_per_request: float = 1000.0
    origin: float | None = None  # simulated second the day starts; before it: the start level

    def __call__(self, t: float) -> float:
        """Offered tokens/s at simulated second ``t`` of the fleet's clock (the day runs from
        ``origin`` on; until then, and while ``origin`` is unset, the day's first level)."""
        return self.at_day_second(0.0 if self.origin is None else max(0.0, t - self.origin))

    def at_day_second(self, t: float) -> float:
        """Offered tokens/s ``t`` simulated seconds into the demo day (wraps every 24 h)."""
        value = self.shape.at(t)
        if self.bursts is not None:
            # bursts are piecewise constant: no interpolation, so bursts stay sharp
            b = self.bursts
            value *= float(b.values[int((t % DAY_SECONDS) / b.step) % len(b.values)])
        return max(0.0, value * self.scale)

    def peak(self) -> float:
        """Highest tokens/s over the day (at the curve's own resolution)."""
        grid = np.arange(0.0, DAY_SECONDS, min(self.shape.step, 60.0))
        return max(self.at_day_second(float(t)) for t in grid)

    def normalise(self, peak_tokens_per_second: float) -> None:
        """Rescale so the daily peak is ``peak_tokens_per_second``."""
        self.scale = 1.0
        peak = self.peak()
        self.scale = peak_tokens_per_second / peak if peak > 0 else 0.0


@dataclass
class WorkloadSelection:
    """The result of :func:`select_workloads`."""

    demands: list[WorkloadDemand]
    fallback: bool  # True if any curve had to be generated
    note: str  # what was used (shown on screen and in the summary)
    missing: list[str] = field(default_factory=list)


def _day_shape(trace: Trace) -> Curve:
    """The most day-shaped 24 h of a window trace, from its quietest hour, as relative
    work tokens/s.

    Among the trace's whole days (all but the last, so the 24 h can run into the next day),
    the one with the highest peak : trough ratio of hourly means and no (near-)empty hour; the curve
    starts at that day's quietest hour, so it rises to the peak and falls again within the
    demo. A trace of a single day wraps around instead.
    """
    step = trace.window_s or 600.0
    rates = trace.rate_series(step).astype(np.float64)
    per_day = max(1, round(DAY_SECONDS / step))
    hour = max(1, round(3600 / step))
    if len(rates) < per_day:  # shorter than a day: repeat
        rates = np.resize(rates, per_day)

    def hourly(day: FloatArray) -> FloatArray:
        usable = len(day) // hour * hour
        return np.asarray(day[:usable].reshape(-1, hour).mean(axis=1), dtype=np.float64)

    days = len(rates) // per_day
    best, best_ratio = 0, -1.0
    for d in range(max(1, days - 1)):
        means = hourly(rates[d * per_day:(d + 1) * per_day])
        if means.min() < 0.15 * float(np.median(means)):
            continue  # an (almost) empty hour is a gap in the data, not a quiet night
        ratio = float(means.max() / means.min())
        if ratio > best_ratio:
            best, best_ratio = d, ratio
    trough = int(np.argmin(hourly(rates[best * per_day:(best + 1) * per_day])))
    start = best * per_day + trough * hour
    if len(rates) >= start + per_day:
        values = rates[start:start + per_day]
    else:
        values = np.roll(rates[best * per_day:(best + 1) * per_day], -trough * hour)
    peak = float(values.max())
    return Curve(values / peak if peak > 0 else values, DAY_SECONDS / per_day)


def _bursts(trace: Trace) -> Curve:
    """A 1 h request trace as burst factors (mean 1, ≤ MAX_BURST), stretched over a day."""
    rates = trace.rate_series(BURST_BIN_SECONDS)
    mean = float(rates.mean())
    factors = np.minimum(rates / mean, MAX_BURST) if mean > 0 else np.ones_like(rates)
    return Curve(factors.astype(np.float64), DAY_SECONDS / len(factors))


def generated_shape(phase_hours: float = 14.0, trough: float = 0.25) -> Curve:
    """A day-shaped curve: cosine from ``trough`` to 1, peak at ``phase_hours``, 10 min steps."""
    t = np.arange(144) * 600.0
    values = trough + (1 - trough) * (1 + np.cos(2 * math.pi * (t / 3600 - phase_hours) / 24)) / 2
    return Curve(values.astype(np.float64), 600.0)


def generated_bursts(seed: int) -> Curve:
    """Deterministic lognormal burst factors (mean about 1, ≤ MAX_BURST), 180 steps a day."""
    rng = np.random.default_rng(seed)
    factors = np.minimum(rng.lognormal(-0.18, 0.6, 180), MAX_BURST)
    return Curve((factors / factors.mean()).astype(np.float64), DAY_SECONDS / 180)


def select_workloads(traces_dir: Path | None,
                     workloads: tuple[WorkloadSpec, ...] = WORKLOADS) -> WorkloadSelection:
    """Build each workload's demand from ``traces_dir`` (or generated curves if missing).

    Levels are not set here: call :meth:`WorkloadDemand.normalise` with the tokens/s the peak
    should have (see :func:`tokenscale.demo.budgets.peak_tokens_per_second`).
    """
    available = traces_dir is not None and traces_dir.is_dir()
    demands: list[WorkloadDemand] = []
    missing: list[str] = []
    cache: dict[str, Trace] = {}

    def load(name: str) -> Trace | None:
        if not available or not name:
            return None
        assert traces_dir is not None
        if name not in cache:
            try:
                cache[name] = load_trace(traces_dir / name)
            except (OSError, TraceError):
                missing.append(name)
                return None
        return cache[name]

    for i, spec in enumerate(workloads):
        shape_trace = load(spec.shape)
        burst_trace = load(spec.bursts) if spec.bursts else None
        shape = _day_shape(shape_trace) if shape_trace else generated_shape(12.0 + 2 * i)
        bursts: Curve | None = None
        if spec.bursts:
            bursts = _bursts(burst_trace) if burst_trace else generated_bursts(seed=i)
        parts = [spec.shape.split("_aggregate")[0] + " day" if shape_trace else "generated day"]
        if spec.bursts:
            parts.append((spec.bursts.split(".")[0] + " 1h bursts") if burst_trace
                         else "generated bursts")
        per_request = 1000.0
        for trace in (burst_trace, shape_trace):
            if trace is not None and trace.tokens_per_request() > 0:
                per_request = trace.tokens_per_request()
                break
        demands.append(WorkloadDemand(spec, " × ".join(parts), shape, bursts,
                                      tokens_per_request=per_request))
    fallback = not available or bool(missing)
    if not available:
        note = (f"traces directory {traces_dir} not found: using generated day-shaped demand "
                "(cosine day with noise) instead of the real traces")
    elif missing:
        note = (f"could not read {', '.join(missing)} in {traces_dir}: generated curves "
                "replace them")
    else:
        note = f"demand replays real traces from {traces_dir}"
    return WorkloadSelection(demands, fallback, note, missing)
