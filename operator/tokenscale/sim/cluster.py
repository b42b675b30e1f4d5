"""The simulated cluster: replicas with cold starts, per-replica capacity and a FIFO queue.

Time is discrete in 1 s steps; second ``t`` is ``[t, t+1)`` after trace start. Work is counted
in work tokens (see :mod:`tokenscale.sim.traces`); capacities are work tokens/s.

**Replicas.** A policy sets the *requested* (paid) replica count at its decision times; the
count holds until the next decision. Requested replicas are paid from the second they are
requested. A replica is ready ``cold_start_s`` seconds after it was requested; scale-down removes
the newest replicas first (pending ones before ready ones, like a Deployment). With that rule the
ready count is a sliding minimum: ``ready(t) = min(paid(u) for u in [t - cold_start, t])``.
Replicas present at t = 0 (the initial count) are ready at t = 0.

**Queue.** Each ready replica serves ``capacity`` work tokens/s; arrivals beyond that wait in a
FIFO queue (Lindley: ``q(t) = max(0, q(t-1) + a(t) - c(t))``), computed in numpy per decision
interval for all rows at once. Nothing is dropped (no client timeouts): while capacity stays
below demand the queue grows and every later token waits behind it, so SLO attainment collapses
under a binding budget; ``served_share`` (tokens served by the end) is the useful measure then.

**SLO.** A token arriving in second t is served in time when it is served by the end of second
``t + slo``; with FIFO and cumulative arrivals ``A`` and served ``D`` that is the part of
``(A(t-1), A(t)]`` at or below ``D(t + slo)`` (computed once, vectorised, after the run).

**Metrics as Prometheus sees them.** The served-token counter and the waiting-requests gauge are
scraped every ``scrape_s`` seconds; a scrape at time s sees the state at the end of second
``s - 1``; the token rate at time t is ``rate(counter[window])`` at the latest scrape ≤ t
(difference over ``rate_window_s``, divided by the covered seconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_LINDLEY_BLOCK = 4096


@dataclass(frozen=True)
class SimTarget:
    """One simulated Deployment: capacity in work tokens/s per ready replica, cost in currency/h."""

    name: str
    capacity: float
    cost_per_hour: float
    cold_start_s: int
    min_replicas: int
    max_replicas: int


def lindley(arrivals: FloatArray, capacity: FloatArray, q0: FloatArray) -> FloatArray:
    """Queue at the end of each second, rows independent: ``q = max(0, q_prev + a - c)``.

    ``arrivals`` and ``capacity`` are (rows, seconds) in work tokens (per second), ``q0`` the
    queue before the first second (rows,). Closed form ``q(t) = S(t) - min(-q0, min S(≤t))``
    with ``S`` the running sum of ``a - c``.
    """
    n = arrivals.shape[1]
    if n <= _LINDLEY_BLOCK:
        s = np.cumsum(arrivals - capacity, axis=1)
        low = np.minimum.accumulate(s, axis=1)
        return np.asarray(s - np.minimum(-q0[:, None], low), dtype=np.float64)
    # long horizons in blocks, so running sums stay small (float error of a few tokens otherwise)
    out = np.empty(arrivals.shape, dtype=np.float64)
    q = q0
    for b in range(0, n, _LINDLEY_BLOCK):
        e = min(n, b + _LINDLEY_BLOCK)
        out[:, b:e] = lindley(arrivals[:, b:e], capacity[:, b:e], q)
        q = out[:, e - 1]
    return out


def forward_window(
    values: IntArray, width: int, combine: Callable[[IntArray, IntArray], IntArray]
) -> IntArray:
    """``combine`` (np.minimum or np.maximum) over ``values[t : t + width]`` per t.

    Doubling: log2(width) vectorised passes, O(n log w); the tail keeps shorter windows.
    """
    out = values.copy()
    span = 1
    while span * 2 <= width:
        out[: len(out) - span] = combine(out[: len(out) - span], out[span:])
        span *= 2
    if span < width:
        rest = width - span
        out[: len(out) - rest] = combine(out[: len(out) - rest], out[rest:])
    return out


def ready_from_paid(paid: IntArray, cold_start_s: int, initial: int) -> IntArray:
    """Ready replicas per second from requested replicas per second (sliding minimum).

    ``paid`` is one row (seconds,); times before 0 count as ``initial`` (already ready).
    """
    if cold_start_s <= 0:
        return paid.copy()
    padded = np.concatenate([np.full(cold_start_s, initial, dtype=paid.dtype), paid])
    out = forward_window(padded, cold_start_s + 1, np.minimum)
    return np.asarray(out[: len(paid)], dtype=paid.dtype)


class Group:
    """Rows of simulated Deployments that advance together, one decision interval at a time.

    Each row ``r`` serves the arrivals of ``targets[r]``. Call :meth:`advance` with the requested
    replicas per row for the next interval; afterwards read the per-second state in ``paid``,
    ``ready`` and ``queue`` (up to ``self.t``) and metrics with :meth:`scrape_rates`.
    """

    def __init__(
        self,
        arrivals: FloatArray,
        cumulative: FloatArray,
        targets: list[SimTarget],
        rows_target: list[int],
        initial: list[int],
        interval_s: int,
    ) -> None:
        self.arrivals = arrivals  # (targets, seconds) work tokens per second
        self.cumulative = cumulative  # (targets, seconds) A(t) including second t
        self.targets = targets
        self.rows_target = np.asarray(rows_target, dtype=np.int64)
        self.interval = int(interval_s)
        horizon = arrivals.shape[1]
        if horizon % self.interval:
            raise ValueError("horizon must be a multiple of the interval")
        self.horizon = horizon
        rows = len(rows_target)
        self.capacity = np.array([targets[i].capacity for i in rows_target], dtype=np.float64)
        self.paid = np.zeros((rows, horizon), dtype=np.int64)
        self.ready = np.zeros((rows, horizon), dtype=np.int64)
        self.queue = np.zeros((rows, horizon), dtype=np.float64)
        self.t = 0
        #: work tokens turned away at admission per second, and their running sum
        self.shed = np.zeros((rows, horizon), dtype=np.float64)
        self.shed_cumulative = np.zeros((rows, horizon), dtype=np.float64)
        self.initial = np.asarray(initial, dtype=np.int64)  # replicas (ready) before t = 0
        self._q = np.zeros(rows, dtype=np.float64)
        # paid per interval cell; cells before 0 hold the initial (ready) count
        cold = np.array([targets[i].cold_start_s for i in rows_target], dtype=np.int64)
        self._back = math.ceil(int(cold.max()) / self.interval) if rows else 0
        cells = horizon // self.interval + self._back + 1
        self._cells = np.zeros((rows, cells), dtype=np.int64)
        self._cells[:, : self._back] = np.asarray(initial, dtype=np.int64)[:, None]
        # mask[r, o, j]: cell k - j is inside [t - cold, t] for offset o of a chunk
        offsets = np.arange(self.interval)
        n_back = np.ceil((cold[:, None] - offsets[None, :]) / self.interval).astype(np.int64)
        n_back = np.maximum(n_back, 0)
        js = np.arange(self._back + 1)
        self._mask = js[None, None, :] <= n_back[:, :, None]  # (rows, interval, back+1)

    @property
    def done(self) -> bool:
        """True once the whole horizon is simulated."""
        return bool(self.t >= self.horizon)

    def advance(self, replicas: IntArray, admission: FloatArray | None = None) -> None:
        """Hold ``replicas`` (requested, per row) for the next interval and simulate it;
        ``admission`` (work tokens/s per row, inf: no limit) turns away the arrivals above it
        each second, as a gateway does with a token rate limit."""
        t0, t1 = self.t, self.t + self.interval
        k = t0 // self.interval + self._back  # this chunk's cell
        self._cells[:, k] = replicas
        window = self._cells[:, k - self._back : k + 1][:, ::-1]  # (rows, back+1), j = 0 is now
        big = np.iinfo(np.int64).max
        ready = np.where(self._mask, window[:, None, :], big).min(axis=2)  # (rows, interval)
        arr = self.arrivals[self.rows_target, t0:t1]
        if admission is not None:
            admitted = np.minimum(arr, np.maximum(admission, 0.0)[:, None])
            shed = arr - admitted
            arr = admitted
            before = self.shed_cumulative[:, t0 - 1] if t0 > 0 else np.zeros(len(arr))
            self.shed[:, t0:t1] = shed
            self.shed_cumulative[:, t0:t1] = before[:, None] + np.cumsum(shed, axis=1)
        elif t0 > 0:
            self.shed_cumulative[:, t0:t1] = self.shed_cumulative[:, t0 - 1][:, None]
        q = lindley(arr, ready * self.capacity[:, None], self._q)
        self.paid[:, t0:t1] = replicas[:, None]
        self.ready[:, t0:t1] = ready
        self.queue[:, t0:t1] = q
        self._q = q[:, -1].copy()
        self.t = t1

    def served_cumulative(self, at: IntArray) -> FloatArray:
        """Work tokens served by the end of second ``at`` (rows, len(at)); ``at`` < 0 gives 0."""
        idx = np.maximum(at, 0)
        a = (self.cumulative[self.rows_target[:, None], idx[None, :]]
             - self.shed_cumulative[:, idx] - self.queue[:, idx])
        return np.where(at[None, :] >= 0, a, 0.0)

    def rates_at(self, scrapes: IntArray, window_s: int) -> FloatArray:
        """``rate(served[window])`` at scrape times ``scrapes`` (s), tokens/s (rows, n)."""
        now = self.served_cumulative(scrapes - 1)
        before_t = np.maximum(scrapes - window_s, 0)
        before = self.served_cumulative(before_t - 1)
        span = np.maximum(scrapes - before_t, 1)
        return np.asarray((now - before) / span[None, :], dtype=np.float64)

    def demand_rates_at(self, scrapes: IntArray, window_s: int) -> FloatArray:
        """``rate(arrived[window])`` at scrape times (tokens/s, rows × n): the arriving token
        rate as a gateway/router counter would report it (not capped by capacity)."""
        rows = self.rows_target[:, None]
        now_i = scrapes - 1
        before_i = np.maximum(scrapes - window_s, 0) - 1
        now = np.where(now_i >= 0, self.cumulative[rows, np.maximum(now_i, 0)[None, :]], 0.0)
        before = np.where(before_i >= 0, self.cumulative[rows, np.maximum(before_i, 0)[None, :]],
                          0.0)
        span = np.maximum(now_i - before_i, 1)
        return np.asarray((now - before) / span[None, :], dtype=np.float64)

    def queue_at(self, scrapes: IntArray) -> FloatArray:
        """Queued work tokens seen by the scrapes (rows, n)."""
        idx = scrapes - 1
        return np.where(idx[None, :] >= 0, self.queue[:, np.maximum(idx, 0)], 0.0)


def latest_scrape(t: int, scrape_s: int) -> int:
    """The latest scrape time ≤ t (s)."""
    return (t // scrape_s) * scrape_s


def on_time_tokens(arrivals: FloatArray, queue: FloatArray, slo_s: int) -> FloatArray:
    """Per second, the arriving work tokens served within ``slo_s`` seconds (FIFO).

    ``arrivals`` and ``queue`` are one row each (seconds,). Tokens whose deadline falls after the
    horizon count as on time only if served by the horizon's end.
    """
    cum = np.cumsum(arrivals)
    served = cum - queue
    n = len(arrivals)
    deadline = np.minimum(np.arange(n) + slo_s, n - 1)
    before = cum - arrivals
    return np.asarray(np.clip(served[deadline] - before, 0.0, arrivals), dtype=np.float64)
