"""The offline oracle: the cheapest schedule we can find with perfect foresight that serves
every token within the SLO, with the same cold starts and prices as the online policies.

Construction (all steps vectorised over the horizon):

1. **Minimum ready schedule per block.** Going forward in blocks of B seconds, each block gets
   the fewest constant ready replicas that serve every token whose deadline (arrival + SLO)
   falls in the block, given the FIFO queue carried in; tokens that may still wait are left to
   the next block (lazy, so no capacity is spent early). Block lengths B ∈ {60, 300, 900} s
   trade reacting to bursts against changing replicas often.
2. **Smoothing candidates.** Replica counts that go up and down within a cold start cost more
   than keeping them, so each block schedule is also smoothed by a sliding maximum over
   {1, 4} cold starts; and the minimum *constant* schedule that meets the SLO (binary search)
   is a candidate too. More ready capacity never delays a token in a FIFO queue (the Lindley
   queue is monotone in capacity), so every smoothed candidate stays feasible.
3. **Cheapest requests for a ready schedule.** Replicas are interchangeable, so a ready schedule
   decomposes into layers ``{t : ready(t) ≥ k}``. For each layer and each gap between two runs we
   keep the replica if keeping it costs less than requesting it again ``coldStart`` before the
   next run (prices weighted by the time-of-day multiplier); the first run is requested
   ``coldStart`` before it starts, or held from t = 0 if it starts sooner. Release right after
   the last run. This is optimal for a given ready schedule, and the layer masks are nested, so
   the result is a valid requested-replica series whose LIFO ready count covers the schedule.
4. **Greedy lowering.** The cheapest candidate's requests are then lowered one replica at a
   time, cell by cell (15 s; shorter on short traces), wherever every token still meets the
   SLO (checked by simulating the affected stretch). Each step saves money, so the result is at
   most the cheapest candidate.

It is a *reference*, not a proven global optimum of the integer problem; it is guaranteed no
more expensive than the cheapest constant schedule that meets the SLO, and the tests check it is
never more expensive than any simulated policy that served every token within the SLO.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from tokenscale.sim.cluster import (
    SimTarget,
    forward_window,
    lindley,
    on_time_tokens,
    ready_from_paid,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_BLOCKS_S = (60, 300, 900)
_SMOOTHING = (0.0, 1.0, 4.0)


def _late(arrivals: FloatArray, ready: IntArray, capacity: float, slo_s: int) -> FloatArray:
    cap = (ready * capacity).astype(np.float64)[None, :]
    q = lindley(arrivals[None, :], cap, np.zeros(1))[0]
    return arrivals - on_time_tokens(arrivals, q, slo_s)


def _is_late(late: FloatArray, arrivals: FloatArray) -> npt.NDArray[np.bool_]:
    return late > 1e-6 * np.maximum(arrivals, 1.0)


def feasible(arrivals: FloatArray, ready: IntArray, capacity: float, slo_s: int) -> bool:
    """True when ``ready`` replicas per second serve every token within ``slo_s``."""
    return not bool(_is_late(_late(arrivals, ready, capacity, slo_s), arrivals).any())


def minimal_ready(
    arrivals: FloatArray, target: SimTarget, slo_s: int, block_s: int
) -> IntArray:
    """Step 1: per block of ``block_s`` seconds, in time order, the fewest constant ready
    replicas that serve every token whose deadline falls in the block (given the queue carried
    in from the previous block). Tokens arriving late in a block are left to the next one."""
    n = len(arrivals)
    cap = target.capacity
    cum = np.concatenate([[0.0], np.cumsum(arrivals)])
    ready = np.empty(n, dtype=np.int64)
    q_in = 0.0
    prev = target.min_replicas
    low = target.min_replicas
    tol = 1e-3  # tokens of float slack
    for b in range(0, n, block_s):
        e = min(n, b + block_s)
        a = arrivals[b:e]
        t = np.arange(b, e)
        # queue allowed at the end of second t: the arrivals of (t - slo, t]; 0 at the end
        allowed = cum[t + 1] - cum[np.maximum(t + 1 - slo_s, 0)]
        if e == n:
            allowed[-1] = 0.0
        allowed = allowed * (1 + 1e-12) + tol

        def ok(
            r: int, a: FloatArray = a, allowed: FloatArray = allowed, q_in: float = q_in
        ) -> bool:
            s = np.cumsum(a - r * cap)
            q = s - np.minimum(-q_in, np.minimum.accumulate(s))
            return bool(np.all(q <= allowed))

        r = max(prev, low)
        if ok(r):
            while r > low and ok(r - 1):
                r -= 1
        else:
            lo_r, step = r + 1, 1
            while not ok(r + step):
                lo_r = r + step + 1
                step *= 2
            hi_r = r + step
            while lo_r < hi_r:
                mid = (lo_r + hi_r) // 2
                if ok(mid):
                    hi_r = mid
                else:
                    lo_r = mid + 1
            r = hi_r
        ready[b:e] = r
        s_run = np.cumsum(a - r * cap)
        q_in = float(s_run[-1] - min(-q_in, float(s_run.min())))
        prev = r
    return ready


def minimal_constant(arrivals: FloatArray, target: SimTarget, slo_s: int) -> int:
    """The fewest constant ready replicas that serve every token within ``slo_s``."""
    lo = target.min_replicas
    hi = max(lo, math.ceil(float(arrivals.max(initial=0.0)) / target.capacity))
    while lo < hi:
        mid = (lo + hi) // 2
        if feasible(arrivals, np.full(len(arrivals), mid), target.capacity, slo_s):
            hi = mid
        else:
            lo = mid + 1
    return hi


def _queue_limit(arrivals: FloatArray, slo_s: int) -> FloatArray:
    """Most work (tokens) that may wait at the end of each second with no token late: the
    arrivals of the last ``slo_s`` seconds, and nothing at the horizon's end."""
    cum = np.concatenate([[0.0], np.cumsum(arrivals)])
    t = np.arange(len(arrivals))
    limit = cum[t + 1] - cum[np.maximum(t + 1 - slo_s, 0)]
    limit[-1] = 0.0
    return np.asarray(limit * (1 + 1e-12) + 1e-3, dtype=np.float64)


def lower_greedily(
    paid: IntArray, arrivals: FloatArray, target: SimTarget, slo_s: int, cell_s: int,
    price: FloatArray,
) -> IntArray:
    """Step 4: request one replica fewer, cell by cell (``cell_s`` seconds, in time order),
    wherever every token still meets the SLO; repeat per cell while it works. Each success
    lowers the cost by the cell's price, so this only improves a feasible schedule.

    Feasibility is checked locally: fewer requested replicas in ``[s, e)`` mean fewer ready ones
    in ``[s, e + coldStart)`` (LIFO sliding minimum); from ``s`` on the queue is at least the
    old one, and once the two are equal again the rest is unchanged."""
    n = len(arrivals)
    cap = target.capacity
    cold = target.cold_start_s
    low = target.min_replicas
    paid = paid.copy()
    ready = ready_from_paid(paid, cold, int(paid[0]))
    limit = _queue_limit(arrivals, slo_s)
    q = lindley(arrivals[None, :], (ready * cap)[None, :].astype(np.float64), np.zeros(1))[0]
    for s in range(0, n, cell_s):
        e = min(n, s + cell_s)
        while price[s:e].sum() > 0:
            trial = paid[s:e] - (paid[s:e] > low)
            if np.array_equal(trial, paid[s:e]):
                break
            # ready over [s, f) under the trial (window reaches back cold seconds)
            f = min(n, e + cold)
            back = max(0, s - cold)
            local = paid[back:f].copy()
            local[s - back : e - back] = trial
            initial = int(paid[0]) if back == 0 else int(local[0])
            if back == 0 and s == 0:
                initial = int(trial[0])
            new_ready = _window_min(local, cold, initial, back == 0)[s - back :]
            q0 = q[s - 1 : s] if s > 0 else np.zeros(1)
            new_q = lindley(arrivals[None, s:f],
                            (new_ready * cap)[None, :].astype(np.float64), q0)[0]
            if np.any(new_q > limit[s:f]):
                break
            tail_q: list[FloatArray] = []
            pos, carry, width, ok = f, new_q[-1:], 32, True
            while pos < n and carry[0] > q[pos - 1] + 1e-9:
                stop = min(n, pos + width)
                seg = lindley(arrivals[None, pos:stop],
                              (ready[pos:stop] * cap)[None, :].astype(np.float64), carry)[0]
                if np.any(seg > limit[pos:stop]):
                    ok = False
                    break
                tail_q.append(seg)
                carry = seg[-1:]
                pos = stop
                width *= 2
            if not ok:
                break
            paid[s:e] = trial
            ready[s:f] = new_ready
            q[s:f] = new_q
            if tail_q:
                joined = np.concatenate(tail_q)
                q[f : f + len(joined)] = joined
    return paid


def _window_min(local: IntArray, cold: int, initial: int, from_zero: bool) -> IntArray:
    """Sliding minimum over ``[t - cold, t]`` of ``local``; before index 0 the value is
    ``initial`` when ``local`` starts at t = 0, else the window is just cut."""
    if from_zero:
        return ready_from_paid(local, cold, initial)
    padded = ready_from_paid(local, cold, int(local.max(initial=0)))
    return padded


def sliding_max(values: IntArray, before: int, after: int) -> IntArray:
    """``max(values[t - before : t + after + 1])`` per t."""
    n = len(values)
    width = before + after + 1
    if width <= 1:
        return values.copy()
    low = np.iinfo(np.int64).min
    padded = np.concatenate([np.full(before, low), values, np.full(after, low)])
    out = forward_window(padded, width, np.maximum)
    return np.asarray(out[:n], dtype=np.int64)


def requests_for_ready(
    ready: IntArray, cold_start_s: int, price: FloatArray
) -> IntArray:
    """Step 3: the cheapest requested-replica series whose ready count covers ``ready``.

    ``price`` is the price weight of each second (e.g. the time-of-day multiplier). Works on the
    change points of ``ready`` (layers of runs), so cost is O(layers × changes).
    """
    n = len(ready)
    cum = np.concatenate([[0.0], np.cumsum(price)])
    seg_start = np.concatenate([[0], np.flatnonzero(np.diff(ready)) + 1])
    seg_value = ready[seg_start]
    seg_end = np.concatenate([seg_start[1:], [n]])
    delta = np.zeros(n + 1, dtype=np.int64)
    top = int(seg_value.max(initial=0))
    for k in range(1, top + 1):
        on = (seg_value >= k).astype(np.int8)
        edges = np.diff(np.concatenate([[0], on, [0]]))
        starts = seg_start[np.flatnonzero(edges == 1)]
        ends = seg_end[np.flatnonzero(edges == -1) - 1]  # exclusive, in seconds
        np.add.at(delta, starts, 1)
        np.add.at(delta, ends, -1)
        # lead of the first run: request cold_start before, or hold from 0
        lead_from = max(0, int(starts[0]) - cold_start_s)
        delta[lead_from] += 1
        delta[starts[0]] -= 1
        # gaps: keep when cheaper than a new cold start, else request cold_start before
        if len(starts) > 1:
            gap_from, gap_to = ends[:-1], starts[1:]
            keep_cost = cum[gap_to] - cum[gap_from]
            lead_start = np.maximum(gap_to - cold_start_s, gap_from)
            restart_cost = cum[gap_to] - cum[lead_start]
            fill_from = np.where(keep_cost <= restart_cost, gap_from, lead_start)
            np.add.at(delta, fill_from, 1)
            np.add.at(delta, gap_to, -1)
    return np.cumsum(delta[:n])


def oracle_schedule(
    arrivals: FloatArray, target: SimTarget, slo_s: int, price: FloatArray
) -> IntArray:
    """The oracle's requested replicas per second (see the module docstring)."""
    cold = target.cold_start_s
    candidates: list[IntArray] = []
    for block in _BLOCKS_S:
        base = minimal_ready(arrivals, target, slo_s, block)
        for factor in _SMOOTHING:
            half = round(factor * cold / 2)
            candidates.append(sliding_max(base, half, half))
    constant = minimal_constant(arrivals, target, slo_s)
    candidates.append(np.full(len(arrivals), constant, dtype=np.int64))
    best: IntArray | None = None
    best_cost = math.inf
    for ready in candidates:
        paid = requests_for_ready(ready, cold, price)
        cost = float((paid * price).sum())
        if cost < best_cost:
            best, best_cost = paid, cost
    assert best is not None
    cell = max(1, min(15, len(arrivals) // 240))
    return lower_greedily(best, arrivals, target, slo_s, cell, price)
