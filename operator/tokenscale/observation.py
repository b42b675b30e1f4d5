"""The core's :class:`Observation` of one budget, built from the cycle's shared reads.

Pure: no I/O, no clock, no logging. Everything arrives as arguments (the spec, the budget's
namespace, the Prometheus answers with the cycle's time ``answers.at`` in unix s, the
namespace's workloads and autoscalers, the freshness limit), so a cycle can be replayed and
tested from plain values.

Per target:

* ``token_rate_samples``: the target's pods' tokens/s summed per timestamp, over the budget's
  forecast window; a workload scaled to zero with no series serves 0 tokens/s.
* ``queue_length``: the newest waiting-requests value of each pod, summed; ``queue_known``
  False when none of the pods exports the queue series (the length then reads 0).
* ``metrics_error``: the first failure kind (:data:`tokenscale.core.types.METRIC_FAILURES`)
  of the token rate, else of the queue; ``None`` when both are usable.
* ``conflict``: another autoscaler on the workload; ``target_error``: the workload is missing.
* ``latency_samples``: (tokens/s, mean inter-token latency in s) of each pod at each time step
  of the latency history, for the service model's fit; tokens/s in the tokens the target's
  own ``tokenRateQuery`` counts when it has one (:func:`in_own_tokens`).
* ``recent_itl_seconds``, ``recent_ttft_seconds``: the mean inter-token latency and time to
  first token the pods show over the last rate window (the planner's SLO-breach signal);
  ``arrival_rate_samples``: a gateway's arriving tokens/s
  (``metrics.arrivalRateQuery``), when the target names one.

``tokens_in_period`` is the tokens served since period start summed over the targets' pods.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime

from tokenscale import api
from tokenscale.adapters.engines import preset
from tokenscale.adapters.kube import Autoscaler, KubeError, Workload
from tokenscale.adapters.prometheus import (
    MetricFailure,
    Series,
    TargetSeries,
    check_samples,
    group_by_target,
    sum_by_time,
)
from tokenscale.adapters.promql import NODE_PRICES, POD_NODE, WorkloadRef
from tokenscale.core.types import Observation, TargetObservation
from tokenscale.namespace_reads import Workloads
from tokenscale.prometheus_reads import (
    FitHistory,
    Grouped,
    UrlAnswers,
    group_answer,
    period_span_seconds,
)

RateSamples = tuple[tuple[datetime, float], ...]  # (time, tokens/s), oldest first
#: The most (tokens/s, inter-token latency) pairs a target gives the fit (the newest kept):
#: an hour at 60 s steps of about 33 pods.
MAX_LATENCY_SAMPLES = 2000


def build_observation(
    spec: api.TokenBudgetSpec,
    namespace: str,
    answers: UrlAnswers,
    workloads: Workloads,
    autoscalers: list[Autoscaler] | KubeError,
    stale_after_seconds: float,
) -> Observation:
    """What the planner sees of one budget this cycle.

    ``stale_after_seconds``: a target whose newest token-rate sample is older than this
    (relative to ``answers.at``) is Stale. Unreadable ``autoscalers`` mean no conflict is known.
    """
    refs = {t.name: target_ref(namespace, t) for t in spec.targets}
    window_start = answers.at - spec.planning.forecast_window_seconds
    targets: dict[str, TargetObservation] = {}
    for t in spec.targets:
        ref = refs[t.name]
        workload = workloads.get((ref.kind, ref.name))
        conflict = find_conflict(autoscalers, ref)
        if workload is None:
            targets[t.name] = TargetObservation(
                current_replicas=0, ready_replicas=0,
                target_error=f"{ref.kind} {ref.name} not found in {ref.namespace}",
                conflict=conflict,
            )
            continue
        rate = _chosen_answer(answers, "rate", t.metrics.token_rate_query, answers.rate, ref)
        queue = _chosen_answer(answers, "queue", t.metrics.queue_query, answers.queue, ref)
        samples, rate_error = token_rate(rate, ref, workload, window_start, answers.at,
                                         stale_after_seconds)
        queue_length, queue_error = waiting_requests(queue, ref)
        queue_series = queue.get(ref) if not isinstance(queue, MetricFailure) else None
        pairs = latency_samples(answers.itl.get(ref), answers.itl_rate.get(ref))
        if t.metrics.token_rate_query:
            pairs = in_own_tokens(pairs, engine_rate(answers.rate, ref, window_start), samples)
        targets[t.name] = TargetObservation(
            current_replicas=workload.replicas,
            ready_replicas=workload.ready_replicas,
            token_rate_samples=samples,
            queue_length=queue_length,
            queue_known=queue_series is not None and bool(queue_series.pods),
            metrics_error=rate_error or queue_error,
            metrics_detail=missing_detail(t, ref) if rate_error == "Empty" else None,
            conflict=conflict,
            quality_samples=quality_samples(answers.fits.get(t.performance.query), ref),
            latency_samples=pairs,
            arrival_rate_samples=arrival_samples(answers, t.metrics.arrival_rate_query,
                                                 window_start),
            recent_itl_seconds=recent_latency(answers.recent_itl, ref),
            recent_ttft_seconds=recent_latency(answers.recent_ttft, ref),
        )
    return Observation(targets=targets,
                       tokens_in_period=tokens_in_period(spec, answers, refs.values()))


def missing_series(target: api.TargetSpec) -> list[str]:
    """The token series a target's engine preset expects; none for its own tokenRateQuery
    (custom, or an override)."""
    p = preset(target.engine)
    if p is None or target.metrics.token_rate_query:
        return []
    return list(p.token_series())


def missing_detail(target: api.TargetSpec, ref: WorkloadRef) -> str:
    """Why a target's token rate is Empty, in words: the series of its engine that none of
    its pods exports (or its own query that answered nothing for them)."""
    expected = missing_series(target)
    if not expected:
        return (f"metrics.tokenRateQuery answered no series for the pods of "
                f"{ref.kind} {ref.name}")
    return (f"engine {target.engine}: no pod of {ref.kind} {ref.name} exports "
            f"{' or '.join(expected)}")


def metrics_status(
    spec: api.TokenBudgetSpec, observation: Observation
) -> dict[str, api.TargetMetricsStatus]:
    """Per target, the engine and the metric names it was read with (its own queries by
    their spec field), and the expected token series its pods lack while its token rate is
    Empty."""
    out = {}
    for t in spec.targets:
        p = preset(t.engine)
        series = list(p.series_read()) if p is not None else []
        if t.metrics.token_rate_query:
            series = ["metrics.tokenRateQuery",
                      *(n for n in series if p is None or n not in p.token_series())]
        if t.metrics.queue_query:
            series = [n if p is None or n != p.queue else "metrics.queueQuery" for n in series]
            if "metrics.queueQuery" not in series:
                series.append("metrics.queueQuery")
        seen = observation.targets.get(t.name)
        empty = seen is not None and seen.metrics_error == "Empty" \
            and seen.current_replicas > 0
        out[t.name] = api.TargetMetricsStatus(
            engine=t.engine, series=series, missing=missing_series(t) if empty else [])
    return out


def target_ref(namespace: str, target: api.TargetSpec) -> WorkloadRef:
    """The workload of one target (always in the budget's namespace)."""
    return WorkloadRef(namespace, target.scale_target_ref.kind, target.scale_target_ref.name)


def find_conflict(autoscalers: list[Autoscaler] | KubeError, ref: WorkloadRef) -> str | None:
    """The first other autoscaler that scales ``ref`` (e.g. ``"HorizontalPodAutoscaler
    llama"``), None if there is none or the autoscalers could not be listed."""
    if isinstance(autoscalers, KubeError):
        return None
    for a in autoscalers:
        if a.target_kind == ref.kind and a.target_name == ref.name:
            return a.describe()
    return None


def _chosen_answer(
    answers: UrlAnswers, kind: str, override: str, default: Grouped, ref: WorkloadRef
) -> Grouped:
    """The target's user query's answer (``kind`` "rate" | "queue") if it has one, else the
    default query's."""
    if not override:
        return default
    return group_answer(answers.overrides[(kind, override)], [ref])


def token_rate(
    rate: Grouped, ref: WorkloadRef, workload: Workload, window_start: float, at: float,
    stale_after_seconds: float,
) -> tuple[RateSamples, str | None]:
    """The target's tokens/s samples from ``window_start`` (unix s) on, and the failure kind
    (None: usable). Older samples that are not finite numbers are left out; a newest one
    makes the rate unusable (NotANumber, Infinite). A spec edited while the cycle queried
    has refs the answers were not grouped for: no series this cycle (Empty, held), grouped
    next cycle."""
    if isinstance(rate, MetricFailure):
        return (), rate.kind
    group = rate.get(ref) or TargetSeries()
    summed = [(ts, v) for ts, v in sum_by_time(group.pods) if ts >= window_start]
    # an older sample that is not a number says nothing of the trend (a user query's 0/0,
    # say); the newest decides whether the rate is usable at all
    summed = [(ts, v) for ts, v in summed[:-1] if math.isfinite(v)] + summed[-1:]
    error: str | None
    if group.failure:
        error = group.failure
    elif not summed and workload.replicas == 0:
        summed = [(at, 0.0)]  # scaled to zero: serves nothing
        error = None
    else:
        problem = check_samples(summed, at, stale_after_seconds)
        error = problem[0] if problem else None
    return tuple((datetime.fromtimestamp(ts, UTC), v) for ts, v in summed), error


def arrival_samples(answers: UrlAnswers, query: str, window_start: float) -> RateSamples:
    """A gateway's arriving tokens/s for one target (``metrics.arrivalRateQuery``: every
    series it returns, summed per timestamp) from ``window_start`` on; empty without the
    query or when it failed (the planner then estimates the arrivals from the served rate and
    the queue: an optional signal never holds a target)."""
    answer = answers.overrides.get(("arrival", query)) if query else None
    if not isinstance(answer, list):
        return ()
    summed = sum_by_time({str(i): s.samples for i, s in enumerate(answer)})
    return tuple((datetime.fromtimestamp(ts, UTC), v) for ts, v in summed
                 if ts >= window_start and math.isfinite(v) and v >= 0)


def recent_latency(answer: Grouped, ref: WorkloadRef) -> float | None:
    """A mean latency (s; inter-token or first token) the target's pods show now: the mean of
    each pod's newest finite, positive value (pods without requests in the window give
    none); None when unknown."""
    if isinstance(answer, MetricFailure):
        return None
    group = answer.get(ref)
    if group is None or group.failure:
        return None
    values = [samples[-1][1] for samples in group.pods.values()
              if samples and math.isfinite(samples[-1][1]) and samples[-1][1] > 0]
    return sum(values) / len(values) if values else None


def waiting_requests(queue: Grouped, ref: WorkloadRef) -> tuple[float, str | None]:
    """The target's queue length (waiting requests, the newest value of each pod summed; 0
    when unknown) and the failure kind (None: usable)."""
    if isinstance(queue, MetricFailure):
        return 0.0, queue.kind
    group = queue.get(ref) or TargetSeries()
    failure = group.failure or None
    values = [s[-1][1] for s in group.pods.values() if s]
    if any(math.isnan(v) for v in values):
        return 0.0, failure or "NotANumber"
    if any(math.isinf(v) for v in values):
        return 0.0, failure or "Infinite"
    return float(sum(values)), failure


def tokens_in_period(
    spec: api.TokenBudgetSpec, answers: UrlAnswers, refs: Iterable[WorkloadRef]
) -> float | None:
    """Tokens served since the start of the budget's period by the pods of ``refs`` (the
    newest finite ``increase()`` value of each pod, summed); None when the query failed or
    was not asked."""
    result = answers.increase.get(period_span_seconds(spec.budget, answers.at))
    if result is None or isinstance(result, MetricFailure):
        return None
    total = 0.0
    for ref in set(refs):
        group = result.get(ref)
        if group is None:
            continue
        for samples in group.pods.values():
            if samples and math.isfinite(samples[-1][1]):
                total += samples[-1][1]
    return total


def quality_samples(
    fit: FitHistory | None, ref: WorkloadRef
) -> tuple[tuple[float, float], ...]:
    """``(tokens/s, quality)`` pairs at the timestamps both histories share.

    The quality query may answer per pod (then the target's pods are averaged) or with one
    series (a model-wide signal); anything else gives no samples. Points with no traffic
    (tokens/s <= 0) or non-finite values are left out: ln(0) has no place in the fit.
    """
    if fit is None:
        return ()
    quality_series, rate_series = fit
    quality = _quality_by_time(quality_series, ref)
    if quality is None:
        return ()
    rates = dict(sum_by_time(group_by_target(rate_series, [ref])[ref].pods))
    return tuple(
        (rates[ts], q) for ts, q in sorted(quality.items())
        if ts in rates and rates[ts] > 0 and math.isfinite(rates[ts]) and math.isfinite(q)
    )


def _quality_by_time(quality_series: list[Series], ref: WorkloadRef) -> dict[float, float] | None:
    """Quality per timestamp: the mean over the target's pods, else the one model-wide
    series; None when neither fits."""
    per_pod = group_by_target(quality_series, [ref])[ref]
    if per_pod.pods and not per_pod.failure:
        sums: dict[float, list[float]] = {}
        for samples in per_pod.pods.values():
            for ts, v in samples:
                sums.setdefault(ts, []).append(v)
        return {ts: sum(vs) / len(vs) for ts, vs in sums.items()}
    if len(quality_series) == 1:
        return dict(quality_series[0].samples)
    return None


def latency_samples(
    itl: TargetSeries | None, rate: TargetSeries | None, limit: int = MAX_LATENCY_SAMPLES
) -> tuple[tuple[float, float], ...]:
    """``(tokens/s, mean inter-token latency s)`` of each pod at each timestamp where both
    histories have a value, oldest first (pods by name within a timestamp), the newest
    ``limit`` pairs. Left out: non-finite values, no traffic (tokens/s <= 0) and latencies
    <= 0; a target whose pods are ambiguous (MultipleSeries) gives none."""
    if itl is None or rate is None or itl.failure or rate.failure:
        return ()
    pairs: list[tuple[float, str, float, float]] = []
    for pod_name, itl_samples in itl.pods.items():
        rates = dict(rate.pods.get(pod_name, ()))
        for ts, latency in itl_samples:
            served = rates.get(ts)
            if (served is not None and math.isfinite(served) and served > 0
                    and math.isfinite(latency) and latency > 0):
                pairs.append((ts, pod_name, served, latency))
    pairs.sort()
    return tuple((served, latency) for _, _, served, latency in pairs[-limit:]) if limit > 0 else ()


def engine_rate(rate: Grouped, ref: WorkloadRef, window_start: float) -> list[float]:
    """The engine preset's tokens/s of the target's pods (the cycle's batched token-rate
    answer, summed per timestamp) from ``window_start`` on; empty when unknown."""
    if isinstance(rate, MetricFailure):
        return []
    group = rate.get(ref)
    if group is None or group.failure:
        return []
    return [v for ts, v in sum_by_time(group.pods) if ts >= window_start]


def in_own_tokens(pairs: tuple[tuple[float, float], ...], engine: list[float],
                  own: RateSamples) -> tuple[tuple[float, float], ...]:
    """The latency pairs of a target with its own ``tokenRateQuery``, their loads counted in
    that query's tokens. The latency history pairs each pod's ITL with its engine's
    prompt + generation tokens/s, while the planner sizes in the tokens the target's own
    query counts (generation only, say): a capacity fitted in the engine's tokens would
    over-state what a replica serves in the target's by their ratio. The loads are scaled by
    the mean of the target's own rate over the mean of the engine's (``engine``, the same
    pods over the same forecast window, tokens/s; non-finite values left out). When this
    window gives no ratio (the target idle, the engine's rate not answered for its pods) the
    pairs stay in the engine's tokens: dropping them would leave a target without a spec
    capacity with no service model at all, held as in an outage, and with no demand the
    capacity's unit decides nothing."""
    mine = [v for _, v in own if math.isfinite(v)]
    theirs = [v for v in engine if math.isfinite(v)]
    if not pairs or not mine or not theirs:
        return pairs
    engine_mean, own_mean = sum(theirs) / len(theirs), sum(mine) / len(mine)
    if engine_mean <= 0 or own_mean <= 0:
        return pairs
    ratio = own_mean / engine_mean
    return tuple((load * ratio, latency) for load, latency in pairs)


# ------------------------------------------------------------------------------ prices

GIB = 2.0 ** 30


def replica_prices(
    spec: api.TokenBudgetSpec, namespace: str, answers: UrlAnswers, workloads: Workloads
) -> dict[str, api.PriceStatus]:
    """Per target, the price per replica-hour it is planned and charged with this cycle:
    the spec's, or (``costSource: OpenCost``) its pods' nodes' prices times what one
    replica requests, falling back to the spec's with the reason in ``detail``."""
    out = {}
    for t in spec.targets:
        if t.cost_source == "OpenCost":
            ref = target_ref(namespace, t)
            out[t.name] = opencost_price(t, ref, workloads.get((ref.kind, ref.name)),
                                         answers.prices)
        else:
            out[t.name] = api.PriceStatus(source="Spec",
                                          cost_per_replica_hour=t.cost_per_replica_hour)
    return out


def opencost_price(
    target: api.TargetSpec, ref: WorkloadRef, workload: Workload | None,
    prices: dict[str, dict[WorkloadRef, TargetSeries]] | MetricFailure | None,
) -> api.PriceStatus:
    """One replica's price from OpenCost's node prices: for each pod of the target, the
    GPUs, CPU cores and GiB of memory one replica requests times the hourly price of each
    on the pod's node, averaged over the pods whose nodes price everything they request.
    Without such a pod (series missing, query failed, no pod running, nothing requested)
    the spec's costPerReplicaHour, and ``detail`` says why."""
    def fallback(why: str) -> api.PriceStatus:
        return api.PriceStatus(
            source="Spec", cost_per_replica_hour=target.cost_per_replica_hour,
            detail=f"OpenCost price unavailable ({why}): costPerReplicaHour used"[:1024])

    if workload is None:
        return fallback(f"{ref.kind} {ref.name} not found")
    if prices is None:
        return fallback("node prices not read this cycle")
    if isinstance(prices, MetricFailure):
        return fallback(f"node prices query failed: {prices.kind}")
    req = workload.requests
    needed = {r: u for r, u in (("gpu", req.gpus), ("cpu", req.cpu),
                                ("ram", req.memory_bytes / GIB)) if u > 0}
    if not needed:
        return fallback("the pod template requests no GPUs, CPU or memory")
    groups = {r: prices.get(r, {}).get(ref) or TargetSeries() for r in needed}
    pods = sorted({pod for g in groups.values() for pod in g.pods})
    if not pods:
        return fallback(f"no pod of {ref.kind} {ref.name} in {POD_NODE} joined to "
                        f"{' / '.join(NODE_PRICES[r] for r in needed)}")
    per_pod: list[float] = []
    missing: set[str] = set()
    for pod in pods:
        total = 0.0
        for resource, units in needed.items():
            samples = groups[resource].pods.get(pod)
            price = samples[-1][1] if samples else math.nan
            if not (math.isfinite(price) and price >= 0):
                missing.add(NODE_PRICES[resource])
                break
            total += units * price
        else:
            per_pod.append(total)
    if not per_pod:
        return fallback(f"no {', '.join(sorted(missing))} for the nodes of its pods")
    price = sum(per_pod) / len(per_pod)
    if not (math.isfinite(price) and 0 < price <= 1e5):
        return fallback(f"derived price {price:g} is outside (0, 1e5]")
    parts = [f"{needed[r]:g} {'GiB' if r == 'ram' else r.upper()}" for r in needed]
    return api.PriceStatus(
        source="OpenCost", cost_per_replica_hour=float(f"{price:.6g}"),
        detail=(f"{' + '.join(parts)} per replica at the node prices of "
                f"{len(per_pod)} of {len(pods)} pod(s)")[:1024])


def priced_spec(
    spec: api.TokenBudgetSpec, prices: dict[str, api.PriceStatus]
) -> api.TokenBudgetSpec:
    """``spec`` with each target's costPerReplicaHour the price it is planned and charged
    with this cycle (``prices``), so accounting, pacing, allocation and the projection all
    use the same one."""
    if all(p.source == "Spec" for p in prices.values()):
        return spec
    targets = [t.model_copy(update={"cost_per_replica_hour": prices[t.name].cost_per_replica_hour})
               if t.name in prices else t for t in spec.targets]
    return spec.model_copy(update={"targets": targets})
