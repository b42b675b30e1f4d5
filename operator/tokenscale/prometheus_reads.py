"""One cycle's Prometheus reads, batched per URL for all due budgets.

Per Prometheus URL and cycle: one range query of the token rate (tokens/s; window = the
longest ``forecastWindowSeconds`` among the due budgets), one instant query of the queue
(waiting requests), one ``increase()`` of tokens per distinct period start (budgets on the same
calendar period share it), and one query per distinct user override. The count does not grow
with the number of budgets. The model-fit history of each ``performance.query`` is cached and
re-read every :data:`FIT_REFRESH_SECONDS`, not every cycle; so is the service model's latency
history (per URL: the mean inter-token latency and the token rate per pod, one hour at 60 s
steps, two range queries for all budgets).

Failures never escape: a query that fails is kept as its :class:`MetricFailure` in the
answers, and the observation of each target says which kind it was.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tokenscale import api
from tokenscale.adapters import promql
from tokenscale.adapters.prometheus import (
    MetricFailure,
    PrometheusReader,
    Series,
    TargetSeries,
    group_by_target,
)
from tokenscale.adapters.promql import WorkloadRef
from tokenscale.core.budget import period_bounds
from tokenscale.metrics import OperatorMetrics
from tokenscale.registry import BudgetEntry
from tokenscale.settings import OperatorSettings

log = logging.getLogger("tokenscale")

#: Points per range query of the token rate (step = window / this, at least 1 s).
RANGE_POINTS = 60
#: Model fit (spec.targets[].performance.query): history (s), step (s), re-read period (s).
FIT_HISTORY_SECONDS = 24 * 3600
FIT_STEP_SECONDS = 300
FIT_REFRESH_SECONDS = 600
#: Service model (mean inter-token latency against tokens/s per pod): history (s), step (s),
#: rate window of both queries; re-read every FIT_REFRESH_SECONDS per URL.
LATENCY_HISTORY_SECONDS = 3600
LATENCY_STEP_SECONDS = 60
LATENCY_RATE_WINDOW = "5m"

#: One answer grouped to workloads, or the failure of the whole query.
Grouped = dict[WorkloadRef, TargetSeries] | MetricFailure
#: The history behind a model fit: (quality series, token rate series in tokens/s).
FitHistory = tuple[list[Series], list[Series]]


@dataclass
class UrlAnswers:
    """The answers of one cycle from one Prometheus.

    ``at`` is the cycle's time (unix s, the operator's clock), ``window`` the range queried
    (s). ``rate`` (tokens/s) and ``queue`` (waiting requests) are the default queries' answers,
    ``increase`` the tokens served since period start keyed by the span (s) to that start,
    ``overrides`` the raw answers of user queries keyed by ("rate" | "queue", query), and
    ``fits`` the fit history per ``performance.query``. ``itl`` (mean inter-token latency,
    s) and ``itl_rate`` (tokens/s) are the per-pod latency history of the service model,
    grouped like the default answers; empty when not read or when the read failed.

    The default queries' answers are grouped to the workloads of all due budgets once per
    cycle: grouping them per budget scanned every series once per budget (O(budgets²), the
    bulk of a cycle's CPU at 1,000 budgets).
    """

    at: float
    window: float
    rate: Grouped
    queue: Grouped
    increase: dict[int, Grouped]
    overrides: dict[tuple[str, str], list[Series] | MetricFailure]
    fits: dict[str, FitHistory] = field(default_factory=dict)
    itl: dict[WorkloadRef, TargetSeries] = field(default_factory=dict)
    itl_rate: dict[WorkloadRef, TargetSeries] = field(default_factory=dict)


def group_answer(answer: list[Series] | MetricFailure, refs: Iterable[WorkloadRef]) -> Grouped:
    """An answer grouped to the workloads ``refs``; a failed query stays its failure."""
    if isinstance(answer, MetricFailure):
        return answer
    return group_by_target(answer, refs)


def unexpected_failure(exc: Exception) -> MetricFailure:
    """A named failure for an exception the Prometheus adapter let through (e.g. urllib3's
    own connection errors): Unreachable for connection problems, Timeout for timeouts,
    else BadResponse."""
    name = type(exc).__name__
    text = f"{name}: {exc}"[:500]
    if isinstance(exc, ConnectionError) or "Connection" in name or "Protocol" in name:
        return MetricFailure("Unreachable", text)
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return MetricFailure("Timeout", text)
    return MetricFailure("BadResponse", text)


def period_span_seconds(budget: api.BudgetSpec, at_unix: float) -> int:
    """Whole seconds (at least 1) from the start of the budget's period to ``at_unix``: the
    range of the ``increase()`` that counts the tokens served in the period so far."""
    period_start, _ = period_bounds(budget, datetime.fromtimestamp(at_unix, UTC))
    return max(1, int(at_unix - period_start.timestamp()))


def override_queries(specs: Iterable[api.TokenBudgetSpec]) -> list[tuple[str, str]]:
    """The distinct user queries, as sorted ("rate" | "queue", query) pairs."""
    overrides: set[tuple[str, str]] = set()
    for s in specs:
        for t in s.targets:
            if t.metrics.token_rate_query:
                overrides.add(("rate", t.metrics.token_rate_query))
            if t.metrics.queue_query:
                overrides.add(("queue", t.metrics.queue_query))
    return sorted(overrides)


class PrometheusReads:
    """The Prometheus side of each cycle: one reader per (URL, timeout), the fit cache."""

    def __init__(self, settings: OperatorSettings, metrics: OperatorMetrics):
        self._settings = settings
        self._metrics = metrics
        self._readers: dict[tuple[str, float], PrometheusReader] = {}
        #: (url, quality query) -> (unix time read, quality series, token rate series)
        self._fit_cache: dict[tuple[str, str], tuple[float, list[Series], list[Series]]] = {}
        #: url -> (unix time read, mean ITL series, token rate series)
        self._latency_cache: dict[str, tuple[float, list[Series], list[Series]]] = {}

    def url_for(self, spec: api.TokenBudgetSpec) -> str:
        """The Prometheus a budget reads (its own, else the operator's default)."""
        return (spec.prometheus.url or self._settings.prometheus_url).rstrip("/")

    def close(self) -> None:
        """Close the Prometheus sessions."""
        for reader in self._readers.values():
            reader.close()

    async def read(self, due: list[BudgetEntry], at_unix: float) -> dict[str, UrlAnswers]:
        """The answers for the ``due`` budgets at ``at_unix`` (unix s), by Prometheus URL."""
        by_url: dict[str, list[BudgetEntry]] = {}
        for entry in due:
            assert entry.spec is not None
            by_url.setdefault(self.url_for(entry.spec), []).append(entry)
        results = await asyncio.gather(
            *(self._read_url(url, entries, at_unix) for url, entries in by_url.items())
        )
        return dict(zip(by_url, results, strict=True))

    def _reader(self, url: str, timeout: float) -> PrometheusReader:
        key = (url, timeout)
        if key not in self._readers:
            self._readers[key] = PrometheusReader(
                url, timeout,
                on_query=lambda kind: self._metrics.prometheus_queries.labels(kind).inc(),
                on_failure=lambda kind: self._metrics.prometheus_errors.labels(kind).inc(),
                clock_offset_seconds=self._settings.clock_offset_seconds,
            )
        return self._readers[key]

    async def _attempt(self, query: Awaitable[list[Series]]) -> list[Series] | MetricFailure:
        """The query's series, or its failure (one odd query must not fail every budget)."""
        try:
            return await query
        except MetricFailure as failure:
            return failure
        except Exception as exc:
            named = unexpected_failure(exc)
            self._metrics.prometheus_errors.labels(named.kind).inc()
            return named

    async def _read_url(
        self, url: str, entries: list[BudgetEntry], at_unix: float
    ) -> UrlAnswers:
        specs = [e.spec for e in entries if e.spec is not None]
        reader = self._reader(url, max(s.prometheus.timeout_seconds for s in specs))
        window = float(max(s.planning.forecast_window_seconds for s in specs))
        step = max(1.0, math.ceil(window / RANGE_POINTS))
        at = datetime.fromtimestamp(at_unix, UTC)
        start = at - timedelta(seconds=window)
        ns = self._settings.namespaces
        span_list = sorted({period_span_seconds(s.budget, at_unix) for s in specs})
        override_list = override_queries(specs)
        jobs = [
            self._attempt(reader.range(promql.token_rate_query(ns, self._settings.rate_window),
                                       start, at, step)),
            self._attempt(reader.instant(promql.queue_query(ns), at)),
            *(self._attempt(reader.instant(promql.tokens_increase_query(span, ns), at))
              for span in span_list),
            *(
                self._attempt(reader.range(q, start, at, step)) if kind == "rate"
                else self._attempt(reader.instant(q, at))
                for kind, q in override_list
            ),
        ]
        out = await asyncio.gather(*jobs)
        n = len(span_list)
        fits = await self._fit_history(url, reader, specs, at_unix)
        itl, itl_rate = await self._latency_history(url, reader, at_unix)
        refs = {e.ref(t) for e in entries if e.spec is not None for t in e.spec.targets}
        return UrlAnswers(
            fits=fits,
            itl=group_by_target(itl, refs),
            itl_rate=group_by_target(itl_rate, refs),
            at=at_unix,
            window=window,
            rate=group_answer(out[0], refs),
            queue=group_answer(out[1], refs),
            increase={span: group_answer(answer, refs)
                      for span, answer in zip(span_list, out[2:2 + n], strict=True)},
            overrides=dict(zip(override_list, out[2 + n:], strict=True)),
        )

    async def _fit_history(
        self, url: str, reader: PrometheusReader, specs: list[api.TokenBudgetSpec], at: float
    ) -> dict[str, FitHistory]:
        """Quality and token-rate history for each ``performance.query`` (24 h, 5 min
        steps), re-read every FIT_REFRESH_SECONDS, not every cycle; failures leave the
        fit to the spec's a, b."""
        wanted = {t.performance.query for s in specs for t in s.targets if t.performance.query}
        out: dict[str, FitHistory] = {}
        for query in sorted(wanted):
            cached = self._fit_cache.get((url, query))
            if cached is None or at - cached[0] >= FIT_REFRESH_SECONDS:
                end = datetime.fromtimestamp(at, UTC)
                start = end - timedelta(seconds=FIT_HISTORY_SECONDS)
                try:
                    quality, rates = await asyncio.gather(
                        reader.range(query, start, end, FIT_STEP_SECONDS),
                        reader.range(promql.token_rate_query(self._settings.namespaces, "5m"),
                                     start, end, FIT_STEP_SECONDS),
                    )
                except MetricFailure as failure:
                    log.warning("performance query %r failed: %s", query[:200], failure)
                    quality, rates = [], []
                cached = (at, quality, rates)
                self._fit_cache[(url, query)] = cached
            out[query] = (cached[1], cached[2])
        return out

    async def _latency_history(
        self, url: str, reader: PrometheusReader, at: float
    ) -> tuple[list[Series], list[Series]]:
        """Mean inter-token latency and tokens/s per pod over the last hour (60 s steps) for
        every budget of ``url``: two range queries, re-read every FIT_REFRESH_SECONDS (so the
        cycle that reads them asks two more queries). Failures leave both empty until the
        next read: the service model falls back to the spec, the cycle goes on."""
        cached = self._latency_cache.get(url)
        if cached is None or at - cached[0] >= FIT_REFRESH_SECONDS:
            end = datetime.fromtimestamp(at, UTC)
            start = end - timedelta(seconds=LATENCY_HISTORY_SECONDS)
            ns = self._settings.namespaces
            itl, rates = await asyncio.gather(
                self._attempt(reader.range(
                    promql.inter_token_latency_query(ns, LATENCY_RATE_WINDOW),
                    start, end, LATENCY_STEP_SECONDS)),
                self._attempt(reader.range(
                    promql.token_rate_query(ns, LATENCY_RATE_WINDOW),
                    start, end, LATENCY_STEP_SECONDS)),
            )
            if isinstance(itl, list) and isinstance(rates, list):
                cached = (at, itl, rates)
            else:
                log.warning("latency history from %s failed, no service model fit until the "
                            "next read: %s", url, itl if isinstance(itl, MetricFailure) else rates)
                cached = (at, [], [])
            self._latency_cache[url] = cached
        return cached[1], cached[2]
