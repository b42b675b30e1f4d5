"""The log-linear cost model: fit, marginal value, and budget allocation between targets.

Quality grows as ``P = a + b·ln(T)`` in the tokens (or tokens/s) ``T`` spent, so every doubling
of ``T`` buys the same ``b·ln 2`` of quality while its cost doubles. Replicas are the unit of
spending; with ``n`` replicas of a target serving ``n`` times the tokens, the quality gain of
replica ``n+1`` is ``b·ln((n+1)/n)``, and its value per currency unit (the *marginal value*) is

    v(n) = weight · b · ln((n+1)/n) / costPerReplicaHour        [quality per (currency/h)]

which falls like ``1/n``. Going from 0 to 1 replica has infinite value (ln of 1/0).

Allocation (DESIGN.md "The decision", step 5): when the replicas the targets need do not fit
the affordable cost rate (currency/h) or token rate (tokens/s), every target starts at its
floor (``minReplicas``, which the budget never breaks) and replicas are added one at a time
where the marginal value is highest, up to each target's cap (its need), while they fit. A
allocation stops at the first replica (in falling value) that does not fit: replicas are
never traded for cheaper, less valuable ones, so every target's count only grows with the
budget (more budget never yields fewer replicas; up to one replica's price of the rate may
stay unused). Ties go to the target listed first.

The continuous optimum of ``max Σ w_i·b_i·ln(x_i)`` subject to ``Σ c_i·x_i = R`` is
``x_i = (w_i·b_i / c_i) · R / Σ_j w_j·b_j``, i.e. ``x_i ∝ w_i·b_i / c_i``; the greedy result
tracks it within about one replica per target (a property test checks it).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from tokenscale.core.types import ModelFit

#: Default quality model when neither a fit nor the spec gives one (a = 0, b = 1).
DEFAULT_MODEL = ModelFit(a=0.0, b=1.0, r2=None, samples=0, source="Default")
#: A fit is used only with at least this many samples ...
MIN_FIT_SAMPLES = 12
#: ... and at least this coefficient of determination.
MIN_FIT_R2 = 0.5


def fit_log_linear(points: Sequence[tuple[float, float]]) -> ModelFit:
    """Least-squares fit of ``P = a + b·ln(T)`` to ``(T, P)`` points.

    ``T`` must be > 0 (tokens, tokens/s or samples); points with ``T <= 0`` or non-finite values
    are ignored. Returns ``a``, ``b``, ``r²`` and the number of points used, with source
    ``Fitted``. With fewer than two distinct ``T`` the slope is undefined: ``b = 0``,
    ``a = mean(P)`` and ``r² = 0`` (so :func:`select_model` never uses it).
    """
    xs: list[float] = []
    ys: list[float] = []
    for t, p in points:
        if t > 0 and math.isfinite(t) and math.isfinite(p):
            xs.append(math.log(t))
            ys.append(p)
    n = len(xs)
    if n == 0:
        return ModelFit(a=0.0, b=0.0, r2=0.0, samples=0, source="Fitted")
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    syy = sum((y - mean_y) ** 2 for y in ys)
    if sxx <= 1e-12 * max(1.0, mean_x * mean_x):
        return ModelFit(a=mean_y, b=0.0, r2=0.0, samples=n, source="Fitted")
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx
    a = mean_y - b * mean_x
    # r² = explained / total; a flat P is explained perfectly by b = 0.
    r2 = 1.0 if syy <= 0 else max(0.0, min(1.0, (sxy * sxy) / (sxx * syy)))
    return ModelFit(a=a, b=b, r2=r2, samples=n, source="Fitted")


def select_model(
    spec_a: float | None, spec_b: float | None, fit: ModelFit | None
) -> ModelFit:
    """The model a target uses: a good fit, else the spec's ``a``/``b``, else the default.

    A fit is good with ≥ :data:`MIN_FIT_SAMPLES` samples and ``r² ≥`` :data:`MIN_FIT_R2`; a
    negative fitted slope (quality falling with tokens) is not used either. The spec model needs
    ``b``; a missing ``a`` is 0 (``a`` never changes a decision, only the reported quality).
    """
    if (
        fit is not None
        and fit.samples >= MIN_FIT_SAMPLES
        and fit.r2 is not None
        and fit.r2 >= MIN_FIT_R2
        and fit.b >= 0
    ):
        return fit
    if spec_b is not None:
        return ModelFit(a=spec_a if spec_a is not None else 0.0, b=spec_b, source="Spec")
    return DEFAULT_MODEL


def marginal_value(weight: float, b: float, cost_per_hour: float, replicas: int) -> float:
    """Quality gained per currency/h by replica ``replicas + 1``: ``w·b·ln((n+1)/n)/c``.

    Infinite for the first replica (``n = 0``) when ``w·b > 0``.
    """
    value = weight * b
    if replicas <= 0:
        return math.inf if value > 0 else 0.0
    return value * math.log1p(1.0 / replicas) / cost_per_hour


def value_cap(weight: float, b: float, cost_per_hour: float, min_value: float) -> int | None:
    """Largest replica count whose last replica still has marginal value ≥ ``min_value``.

    Replica ``n`` (going from ``n-1`` to ``n``) is worth ``w·b·ln(n/(n-1))/c``; it is at least
    ``min_value`` while ``n ≤ 1/(1 - e^(-k))`` with ``k = min_value·c/(w·b)``. ``None`` when
    ``min_value <= 0`` (no cut-off). At least 1: the first replica is always worth having.
    """
    if min_value <= 0:
        return None
    value = weight * b
    if value <= 0:
        return 1
    k = min_value * cost_per_hour / value
    if k < 1e-9:
        return 10**9
    cap = math.floor(1.0 / -math.expm1(-k) + 1e-9)
    return max(1, cap)


@dataclass(frozen=True)
class AllocationItem:
    """One target in an allocation.

    ``floor``/``cap``: replica bounds (floor ≤ cap); ``cost_per_hour``: price of one replica
    (currency/h, multiplier applied); ``tokens_per_second``: served rate of one replica counted
    against a token budget (tokens/s); ``value``: ``weight·b``.
    """

    floor: int
    cap: int
    cost_per_hour: float
    tokens_per_second: float
    value: float


def allocate(
    items: Sequence[AllocationItem],
    cost_rate: float = math.inf,
    token_rate: float = math.inf,
) -> list[int]:
    """Greedy allocation of replicas under a cost rate (currency/h) and token rate (tokens/s).

    Every item gets at least its floor (even when the floors alone exceed the rates) and at
    most its cap. When all caps fit both rates the caps are returned unchanged. Otherwise
    replicas are added one at a time to the item with the highest marginal value (ties: the
    earlier item) until the most valuable next replica does not fit. Each item's count is
    non-decreasing in both rates.
    """
    total_cost = 0.0
    total_tokens = 0.0
    for it in items:
        total_cost += it.cap * it.cost_per_hour
        total_tokens += it.cap * it.tokens_per_second
    if total_cost <= cost_rate * (1 + 1e-12) and total_tokens <= token_rate * (1 + 1e-12):
        return [it.cap for it in items]

    counts = [it.floor for it in items]
    cost_left = cost_rate - sum(it.floor * it.cost_per_hour for it in items)
    tokens_left = token_rate - sum(it.floor * it.tokens_per_second for it in items)
    if cost_left <= 0 and tokens_left <= 0:
        return counts
    _jump_start(items, counts, cost_left, tokens_left)
    cost_left = cost_rate - sum(n * it.cost_per_hour for n, it in zip(counts, items, strict=True))
    tokens_left = token_rate - sum(
        n * it.tokens_per_second for n, it in zip(counts, items, strict=True)
    )

    heap: list[tuple[float, int]] = []
    for i, it in enumerate(items):
        if counts[i] < it.cap:
            heap.append((-marginal_value(it.value, 1.0, it.cost_per_hour, counts[i]), i))
    heapq.heapify(heap)
    eps = 1e-9
    while heap:
        _, i = heapq.heappop(heap)
        it = items[i]
        if it.cost_per_hour > cost_left + eps * max(1.0, abs(cost_rate)) or (
            it.tokens_per_second > tokens_left + eps * max(1.0, abs(token_rate))
        ):
            break  # the most valuable next replica does not fit: the rate is used
        counts[i] += 1
        cost_left -= it.cost_per_hour
        tokens_left -= it.tokens_per_second
        if counts[i] < it.cap:
            v = marginal_value(it.value, 1.0, it.cost_per_hour, counts[i])
            heapq.heappush(heap, (-v, i))
    return counts


def _level(it: AllocationItem, threshold: float) -> int:
    """Replicas the greedy gives ``it`` once it has taken every replica worth ≥ ``threshold``."""
    if it.value <= 0:
        return it.floor
    k = threshold * it.cost_per_hour / it.value
    n = it.cap if k < 1e-12 else math.floor(1.0 / -math.expm1(-k))
    return max(it.floor, min(it.cap, n))


def _jump_start(
    items: Sequence[AllocationItem], counts: list[int], cost_left: float, tokens_left: float
) -> None:
    """Skip the greedy ahead to a point it would pass anyway (speed only, same result).

    The greedy takes replicas in falling marginal value and, while everything fits, has taken
    exactly the replicas worth ≥ some threshold λ after processing them. Replica ``n`` of an
    item is worth ≥ λ while ``n ≤ 1/(1 - e^(-λ·c/(w·b)))``, so the state at λ has a closed form;
    bisection finds a λ whose state still fits and the greedy finishes from there. Only used
    when many replicas are to be handed out.
    """
    spare = sum(it.cap - n for it, n in zip(items, counts, strict=True))
    if spare <= 64:
        return
    floor_cost = sum(n * it.cost_per_hour for n, it in zip(counts, items, strict=True))
    floor_tokens = sum(n * it.tokens_per_second for n, it in zip(counts, items, strict=True))
    cost_rate = cost_left + floor_cost
    token_rate = tokens_left + floor_tokens

    def fits(threshold: float) -> list[int] | None:
        levels = [_level(it, threshold) for it in items]
        cost = sum(n * it.cost_per_hour for n, it in zip(levels, items, strict=True))
        tokens = sum(n * it.tokens_per_second for n, it in zip(levels, items, strict=True))
        return levels if cost <= cost_rate and tokens <= token_rate else None

    hi = max((it.value / it.cost_per_hour for it in items if it.value > 0), default=0.0)
    if hi <= 0:
        return
    best = fits(hi)
    if best is None:
        return
    lo = hi * 1e-12
    for _ in range(60):  # geometric bisection: fits(hi) holds, fits(lo) does not
        mid = math.sqrt(lo * hi)
        levels = fits(mid)
        if levels is None:
            lo = mid
        else:
            hi, best = mid, levels
        if hi <= lo * (1 + 1e-9):
            break
    counts[:] = best


def continuous_optimum(
    values: Sequence[float], costs: Sequence[float], cost_rate: float
) -> list[float]:
    """Continuous optimum ``x_i = (v_i/c_i)·R/Σ v_j`` of ``Σ v_i ln x_i`` s.t. ``Σ c_i x_i = R``.

    ``values`` are ``w_i·b_i``, ``costs`` currency/h per replica, ``cost_rate`` R in currency/h.
    For comparison with :func:`allocate` only (floors and caps are ignored).
    """
    total = sum(values)
    if total <= 0:
        return [0.0 for _ in values]
    return [v / c * cost_rate / total for v, c in zip(values, costs, strict=True)]
