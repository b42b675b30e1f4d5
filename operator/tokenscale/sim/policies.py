"""Online policies of the backtest: HPA/KEDA on token rate, static peak, and tokenscale.

All see the cluster only as Prometheus would (:class:`~tokenscale.sim.cluster.Group` rates at
the latest scrape) plus the replica counts the Kubernetes API reports.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from tokenscale.api import TokenBudgetSpec
from tokenscale.core.budget import period_bounds
from tokenscale.core.planner import plan
from tokenscale.core.service import fit_service
from tokenscale.core.types import Memory, Observation, Plan, TargetObservation
from tokenscale.sim.cluster import Group, latest_scrape
from tokenscale.sim.latency import EngineModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class HpaSettings:
    """HPA/KEDA semantics of DESIGN.md: 15 s sync, tolerance 0.1, 300 s scale-down
    stabilization, scale-up at most max(+4, +100%) per sync."""

    #: "demand": the arriving token rate (a gateway/router counter; never capped by capacity);
    #: "served": vLLM's token counters, which cannot exceed ready capacity, so a saturated HPA
    #: sees ratio ready/(current·util) and stalls within its tolerance.
    metric: str = "served"
    sync_s: int = 15
    tolerance: float = 0.1
    stabilization_s: int = 300
    scale_up_pods: int = 4
    scale_up_percent: float = 100.0


class FamilyBank:
    """Many independent HPAs (one per row) with per-row scale-down windows, decided together
    with numpy. :meth:`decide` takes the (fractional) replicas each row's metric asks for; a
    row keeps its count when that is within the tolerance, a scale-down goes to the highest
    recommendation of its window, a scale-up is limited per sync; then
    ``[max(1, minReplicas), maxReplicas]`` (an HPA cannot scale to zero)."""

    def __init__(self, window_s: IntArray, low: IntArray, high: IntArray, initial: IntArray,
                 settings: HpaSettings) -> None:
        self.low = np.maximum(low, 1)
        self.high = high
        self.settings = settings
        slots = int(window_s.max()) // settings.sync_s + 1
        self._slots = window_s // settings.sync_s + 1  # per row: slots in its window
        self._recs = np.repeat(initial.astype(np.int64)[:, None], slots, axis=1)
        self._k = 0

    def decide(self, desired: FloatArray, current: IntArray) -> IntArray:
        """New replica counts from each row's desired (fractional) replicas."""
        s = self.settings
        want = np.ceil(np.maximum(desired, 0.0) - 1e-9).astype(np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(current > 0, desired / np.maximum(current, 1), np.inf)
        rec = np.where(np.abs(ratio - 1.0) <= s.tolerance, current, want)
        rec = np.clip(rec, self.low, self.high)
        n = self._recs.shape[1]
        slot = self._k % n
        self._recs[:, slot] = rec
        self._k += 1
        # slot j was written (slot - j) mod n syncs ago; a row sees the last _slots of them
        age = (slot - np.arange(n)) % n
        inside = age[None, :] < self._slots[:, None]
        window_max = np.where(inside, self._recs, np.iinfo(np.int64).min).max(axis=1)
        up_limit = np.maximum(current + s.scale_up_pods,
                              np.ceil(current * (1 + s.scale_up_percent / 100.0))).astype(np.int64)
        new = np.where(rec > current, np.minimum(rec, up_limit), np.minimum(current, window_max))
        return np.asarray(np.clip(new, self.low, self.high), dtype=np.int64)


class HpaBank:
    """Many independent HPAs (one per row) on a token rate, decided together with numpy.

    Desired replicas = ``ceil(tokens/s ÷ (tokensPerReplicaPerSecond × utilization))``, then
    the rules of :class:`FamilyBank` with the one stabilization window of ``settings``.
    """

    def __init__(
        self,
        utilization: FloatArray,
        capacity: FloatArray,
        min_replicas: IntArray,
        max_replicas: IntArray,
        settings: HpaSettings,
        initial: IntArray | None = None,
    ) -> None:
        self.utilization = utilization
        self.capacity = capacity
        rows = len(capacity)
        # as if it had been running at the initial counts for the stabilization window
        seed = initial if initial is not None else np.full(rows, -1, dtype=np.int64)
        self._bank = FamilyBank(np.full(rows, settings.stabilization_s, dtype=np.int64),
                                min_replicas, max_replicas, np.asarray(seed, dtype=np.int64),
                                settings)

    def decide(self, rate: FloatArray, current: IntArray) -> IntArray:
        """New replica counts from the observed token rate (tokens/s) and current replicas."""
        return self._bank.decide(np.maximum(rate, 0.0) / (self.capacity * self.utilization),
                                 current)


def initial_replicas(
    arrivals: FloatArray, capacity: float, utilization: float, low: int, high: int,
    headroom: float = 0.0,
) -> int:
    """Replicas a running policy would have at t = 0: first minute's mean demand at target use."""
    first = float(arrivals[:60].mean()) if len(arrivals) else 0.0
    need = math.ceil(first * (1 + headroom) / (capacity * utilization) - 1e-9)
    return max(low, min(high, need))


def static_replicas(arrivals: FloatArray, capacity: float, utilization: float, low: int) -> int:
    """Static peak provisioning: the busiest minute's mean demand at the target utilization
    (not clamped to maxReplicas: static is the 'no autoscaler' baseline)."""
    n = len(arrivals) // 60 * 60
    if n == 0:
        peak = float(arrivals.mean()) if len(arrivals) else 0.0
    else:
        peak = float(arrivals[:n].reshape(-1, 60).mean(axis=1).max())
    return max(low, 1, math.ceil(peak / (capacity * utilization) - 1e-9))


class TokenscaleController:
    """Calls the operator's planner (``tokenscale.core.planner.plan``) at every interval.

    The observation is what the operator's Prometheus adapter would read: per target the served
    token rate (``rate[window]`` at each scrape within ``forecastWindowSeconds``), the waiting
    requests at the latest scrape (queued work tokens ÷ mean tokens per request), and the
    replica counts; ``tokens_in_period`` is the served-token counter's increase since period
    start. The Memory of each Plan is fed to the next cycle, starting empty.
    """

    def __init__(
        self,
        spec: TokenBudgetSpec,
        start: datetime,
        tokens_per_request: list[float],
        scrape_s: int,
        rate_window_s: int,
        engine: EngineModel | None = None,
        arrival_counter: bool = False,
        prefill_seconds: list[float] | None = None,
    ) -> None:
        self.spec = spec
        #: per target, a request's mean prefill time (s): part of the TTFT the engine reports
        self.prefill_seconds = prefill_seconds or [0.0] * len(spec.targets)
        #: also read a gateway's arrival counter (the demand before admission and queueing)
        self.arrival_counter = arrival_counter
        self._arrivals: list[deque[tuple[datetime, float]]] = [deque() for _ in spec.targets]
        self.start = start
        self.names = [t.name for t in spec.targets]
        self.tokens_per_request = tokens_per_request
        self.scrape_s = scrape_s
        self.rate_window_s = rate_window_s
        self.memory = Memory()
        #: (target, reason) -> number of cycles, for the report
        self.reasons: Counter[tuple[str, str]] = Counter()
        self.last_plan: Plan | None = None
        self._samples: list[deque[tuple[datetime, float]]] = [deque() for _ in self.names]
        #: (tokens/s per ready replica, mean ITL s) per scrape, the last hour
        self._latency: list[deque[tuple[float, float]]] = [
            deque(maxlen=3600 // scrape_s) for _ in self.names]
        self.engine = engine
        #: per target, each cycle's fitted capacity within the SLO (None: the spec's used)
        self.fits: dict[str, list[float | None]] = {}
        self._last_scrape = 0  # scrapes up to this time (s) are in _samples
        #: per target (mean ITL s, TTFT s) at the latest scrape; empty: not seen yet
        self.recent: list[tuple[float, float]] = []

    def _record_latency(self, group: Group, scrapes: IntArray, rates: FloatArray) -> None:
        """What the engine's ITL histogram shows at each scrape: the load per ready replica
        (tokens/s) and the mean ITL over the rate window (engine mode only)."""
        if self.engine is None:
            return
        engine = self.engine
        cap_per_replica = engine.decode_tokens_per_s
        for k, at in enumerate(scrapes.tolist()):
            lo, hi = max(at - self.rate_window_s, 0), max(at, 1)
            ready = group.ready[:, lo:hi].astype(np.float64)
            arrived = group.arrivals[group.rows_target, lo:hi] - group.shed[:, lo:hi]
            queue = group.queue[:, lo:hi]
            before = group.queue[:, lo - 1:hi - 1] if lo > 0 else np.concatenate(
                [np.zeros((len(ready), 1)), queue[:, :-1]], axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                util = np.where(ready > 0, (arrived + before - queue)
                                / (ready * cap_per_replica), 1.0)
            itl = np.where(queue > 0, engine.itl_max_s, engine.itl(util)).mean(axis=1)
            # what the requests see now: the mean ITL, and the TTFT as the engine's histogram
            # has it: the queue's wait at the scrape + a request's mean prefill + one ITL
            with np.errstate(divide="ignore", invalid="ignore"):
                wait = np.where(queue[:, -1] <= 0, 0.0,
                                np.where(ready[:, -1] > 0,
                                         queue[:, -1] / (ready[:, -1] * cap_per_replica), np.inf))
            self.recent = [(float(i), float(w + p + i)) for i, w, p
                           in zip(itl, wait, self.prefill_seconds, strict=True)]
            mean_ready = ready.mean(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                load = np.where(mean_ready > 0, rates[:, k] / mean_ready, 0.0)
            for row, dq in enumerate(self._latency):
                if load[row] > 0:
                    dq.append((float(load[row]), float(itl[row])))

    def admission(self) -> FloatArray:
        """The token rate (tokens/s) the last plan admits per target; inf where unlimited."""
        out = np.full(len(self.names), np.inf)
        if self.last_plan is not None:
            for i, name in enumerate(self.names):
                d = self.last_plan.decisions.get(name)
                if d is not None and d.admission_tokens_per_second is not None:
                    out[i] = d.admission_tokens_per_second
        return out

    def _when(self, second: int) -> datetime:
        return self.start + timedelta(seconds=second)

    def decide(self, group: Group, t: int) -> IntArray:
        """Plan at second ``t`` (the start of the next interval); returns replicas per target."""
        s = latest_scrape(t, self.scrape_s)
        window = self.spec.planning.forecast_window_seconds
        if s > self._last_scrape:
            first = max(self._last_scrape + self.scrape_s, s - window)
            first = max(first, self.scrape_s)
            scrapes = np.arange(first, s + 1, self.scrape_s, dtype=np.int64)
            if len(scrapes):
                rates = group.rates_at(scrapes, self.rate_window_s)
                stamps = [self._when(int(x)) for x in scrapes]
                for row, dq in enumerate(self._samples):
                    dq.extend(zip(stamps, rates[row].tolist(), strict=True))
                if self.arrival_counter:
                    arrived = group.demand_rates_at(scrapes, self.rate_window_s)
                    for row, dq in enumerate(self._arrivals):
                        dq.extend(zip(stamps, arrived[row].tolist(), strict=True))
                self._record_latency(group, scrapes, rates)
            self._last_scrape = s
        now = self._when(t)
        oldest = now - timedelta(seconds=window)
        for dq in (*self._samples, *self._arrivals):
            while dq and dq[0][0] < oldest:
                dq.popleft()
        queue = group.queue_at(np.array([s], dtype=np.int64))[:, 0] if s > 0 else None
        p_start, _ = period_bounds(self.spec.budget, now)
        p_second = int((p_start - self.start).total_seconds())
        served = group.served_cumulative(np.array([s - 1, p_second - 1], dtype=np.int64))
        tokens_in_period = float(np.sum(served[:, 0] - served[:, 1])) if s > 0 else 0.0
        if t > 0:
            current, ready = group.paid[:, t - 1], group.ready[:, t - 1]
        else:  # the operator starts with the trace: replicas already running, no metrics yet
            current, ready = group.initial, group.initial
        targets = {}
        for row, name in enumerate(self.names):
            tpr = self.tokens_per_request[row]
            waiting = float(queue[row]) / tpr if queue is not None and tpr > 0 else 0.0
            targets[name] = TargetObservation(
                current_replicas=int(current[row]),
                ready_replicas=int(ready[row]),
                token_rate_samples=tuple(self._samples[row]),
                queue_length=waiting,
                tokens_per_request=tpr if tpr > 0 else None,
                latency_samples=tuple(self._latency[row]),
                arrival_rate_samples=tuple(self._arrivals[row]),
                recent_itl_seconds=self.recent[row][0] if self.recent else None,
                recent_ttft_seconds=self.recent[row][1] if self.recent else None,
            )
        result = plan(self.spec, Observation(targets, tokens_in_period), self.memory, now)
        self.memory = result.memory
        self.last_plan = result
        for name, decision in result.decisions.items():
            self.reasons[(name, decision.reason)] += 1
        for row, spec_target in enumerate(self.spec.targets):  # the raw fit, for the report
            if self.engine is not None:
                fit = fit_service(tuple(self._latency[row]), spec_target.slo,
                                  spec_target.tokens_per_replica_per_second)
                self.fits.setdefault(spec_target.name, []).append(
                    fit.capacity_within_slo if fit.source == "Fitted" else None)
        return np.array(
            [result.decisions[n].replicas if n in result.decisions else int(current[i])
             for i, n in enumerate(self.names)],
            dtype=np.int64,
        )
