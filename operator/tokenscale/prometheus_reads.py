"""One cycle's Prometheus reads, batched per URL for all due budgets.

Every default query covers the engines the due targets name in one expression
(:mod:`tokenscale.adapters.promql`), so the count below holds for mixed fleets. While some
due target takes its price from OpenCost, one more instant query joins the node prices to
the pods (:func:`tokenscale.adapters.promql.node_prices_query`).

Per Prometheus URL and cycle: one range query of the token rate (tokens/s; window = the
longest ``forecastWindowSeconds`` among the due budgets; only the points since the last
cycle are asked, the rest is kept, :mod:`tokenscale.range_cache`), one instant query of the
queue (waiting requests), one instant query of the mean inter-token latency and time to
first token per pod over the rate window (what requests see now: above the SLO it is the
planner's urgent signal; both in one expression, told apart by a ``latency`` label), one
``increase()`` of tokens per distinct period start (budgets on the same
calendar period share it), and one query per distinct user override. The count does not grow
with the number of budgets. The model-fit history of each ``performance.query`` is cached and
re-read every :data:`FIT_REFRESH_SECONDS`, not every cycle; so is the service model's latency
history (per URL: the mean inter-token latency and the token rate per pod, one hour at 60 s
steps, two range queries for all budgets).

Failures never escape: a query that fails is kept as its :class:`MetricFailure` in the
answers, and the observation of each target says which kind it was.

The queries a TokenBudget writes (``targets[].metrics`` overrides and
``performance.query``) are *user queries*: each runs on its own thread pool
(``TOKENSCALE_USER_QUERY_WORKERS``) with its own deadline (``TOKENSCALE_USER_QUERY_TIMEOUT_
SECONDS`` at most) and bounded answers (:class:`AnswerLimits`). :meth:`PrometheusReads.read`
returns once the operator's own queries are answered, with the user queries still running;
each budget waits only for its own (:meth:`PrometheusReads.settle`), so one tenant's slow or
huge query cannot hold up the budgets that do not use it. Their failures are logged with
their details here; a status shows the kind only. A URL that is not allowed
(:mod:`tokenscale.allowlist`) is never asked: its budgets read NotAllowed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tokenscale import api
from tokenscale.adapters import promql
from tokenscale.adapters.prometheus import (
    AnswerLimits,
    MetricFailure,
    PrometheusReader,
    Series,
    TargetSeries,
    group_by_engine,
    group_by_target,
)
from tokenscale.adapters.promql import WorkloadRef
from tokenscale.allowlist import SETTING as ALLOWLIST_SETTING
from tokenscale.allowlist import PrometheusAllowlist
from tokenscale.bridging import Bridge
from tokenscale.core.budget import period_bounds
from tokenscale.increase_cache import FULL_READ_SECONDS, IncreaseCache
from tokenscale.metrics import OperatorMetrics
from tokenscale.range_cache import RangeCache
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
#: Timeout of a *full* read (the token rate over the whole forecast window, the period's
#: tokens since its start, the latency history) as a multiple of the budgets' per-query
#: timeout, at most MAX_FULL_READ_TIMEOUT_SECONDS. A full window is about 12x the points of
#: the news a cycle reads (61 against 5 per pod at the defaults) and is asked once, at a
#: start or when a cache is lost; under the news read's timeout it could time out in every
#: cycle, and nothing is cached until it succeeds (2,500 budgets, BENCHMARKS.md).
FULL_READ_TIMEOUT_FACTOR = 4.0
MAX_FULL_READ_TIMEOUT_SECONDS = 60.0
#: How long past its timeout a user query may wait for a thread of the pool (s).
USER_QUERY_GRACE_SECONDS = 1.0
#: The spec field of each kind of override (in the operator's log).
_QUERY_FIELD = {"rate": "tokenRateQuery", "queue": "queueQuery",
                "arrival": "arrivalRateQuery"}
#: user queries asked as range queries over the forecast window (the others: instant)
_RANGE_KINDS = ("rate", "arrival")

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
    ``overrides`` the raw answers of user queries keyed by ("rate" | "queue" | "arrival",
    query), and
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
    #: mean inter-token latency and time to first token (s) per pod over the rate window:
    #: what requests see now
    recent_itl: Grouped = field(default_factory=dict)
    recent_ttft: Grouped = field(default_factory=dict)
    #: OpenCost's node prices per resource (gpu | cpu | ram; currency/h per unit) for the
    #: pods of targets priced by OpenCost, grouped like the default answers; None when no
    #: due target is, a failure when the query failed
    prices: dict[str, dict[WorkloadRef, TargetSeries]] | MetricFailure | None = None
    #: user queries still running, moved to ``overrides`` / ``fits`` by ``settle``
    pending: dict[tuple[str, str], asyncio.Task[list[Series] | MetricFailure]] = field(
        default_factory=dict)
    pending_fits: dict[str, asyncio.Task[FitHistory]] = field(default_factory=dict)
    #: the default queries that failed right after a good read: the cycle is skipped for
    #: the budgets of this Prometheus (:mod:`tokenscale.bridging`)
    bridged: tuple[str, ...] = ()


def group_answer(
    answer: list[Series] | MetricFailure, refs: Mapping[WorkloadRef, str] | Iterable[WorkloadRef]
) -> Grouped:
    """An answer grouped to the workloads ``refs`` (workload -> engine: each takes its own
    engine's series; a plain iterable: every series); a failed query stays its failure."""
    if isinstance(answer, MetricFailure):
        return answer
    if isinstance(refs, Mapping):
        return group_by_engine(answer, refs)
    return group_by_target(answer, refs)


def latency_series(answer: list[Series] | MetricFailure, kind: str
                   ) -> list[Series] | MetricFailure:
    """The series of one latency (``itl`` or ``ttft``) of the recent-latency answer
    (:func:`promql.recent_latency_query`); a failed query stays its failure."""
    if isinstance(answer, MetricFailure):
        return answer
    return [s for s in answer if s.labels.get(promql.LATENCY_LABEL) == kind]


def group_prices(
    answer: list[Series] | MetricFailure, refs: Iterable[WorkloadRef]
) -> dict[str, dict[WorkloadRef, TargetSeries]] | MetricFailure:
    """The node prices answer (:func:`promql.node_prices_query`) grouped per resource to the
    workloads ``refs``; a failed query stays its failure."""
    if isinstance(answer, MetricFailure):
        return answer
    by_resource: dict[str, list[Series]] = {}
    for s in answer:
        by_resource.setdefault(s.labels.get(promql.RESOURCE_LABEL, ""), []).append(s)
    refs = list(refs)
    return {resource: group_by_target(members, refs)
            for resource, members in by_resource.items() if resource}


def engines_in_use(specs: Iterable[api.TokenBudgetSpec]) -> tuple[str, ...]:
    """The engine presets the targets of ``specs`` name, sorted (custom has none)."""
    return tuple(sorted({t.engine for s in specs for t in s.targets if t.engine != "custom"}))


def target_engines(entries: Iterable[BudgetEntry]) -> dict[WorkloadRef, str]:
    """Each target's workload and the engine it is read with (the first target naming a
    workload wins: budgets that share one should agree)."""
    out: dict[WorkloadRef, str] = {}
    for e in entries:
        if e.spec is not None:
            for t in e.spec.targets:
                out.setdefault(e.ref(t), t.engine)
    return out


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
    """The distinct user queries, as sorted ("rate" | "queue" | "arrival", query) pairs."""
    overrides: set[tuple[str, str]] = set()
    for s in specs:
        for t in s.targets:
            if t.metrics.token_rate_query:
                overrides.add(("rate", t.metrics.token_rate_query))
            if t.metrics.queue_query:
                overrides.add(("queue", t.metrics.queue_query))
            if t.metrics.arrival_rate_query:
                overrides.add(("arrival", t.metrics.arrival_rate_query))
    return sorted(overrides)


class PrometheusReads:
    """The Prometheus side of each cycle: one reader per (URL, timeout), the fit cache."""

    def __init__(self, settings: OperatorSettings, metrics: OperatorMetrics,
                 served_namespaces: Callable[[], Iterable[str]] | None = None):
        self._settings = settings
        self._served_namespaces = served_namespaces
        self._metrics = metrics
        self.allowlist = PrometheusAllowlist(settings.prometheus_url,
                                             settings.prometheus_allowed_urls)
        self._readers: dict[tuple[str, float], PrometheusReader] = {}
        self._user_readers: dict[str, PrometheusReader] = {}
        self._user_pool = ThreadPoolExecutor(settings.user_query_workers,
                                             thread_name_prefix="tokenscale-user-query")
        self._limits = AnswerLimits(settings.user_query_max_series,
                                    settings.user_query_max_points)
        #: (url, what, query) -> the failure kind last logged (logged again on a change)
        self._failures: dict[tuple[str, str, str], str] = {}
        #: (url, quality query) -> the fit history read in progress
        self._fit_tasks: dict[tuple[str, str], asyncio.Task[FitHistory]] = {}
        #: (url, quality query) -> (unix time read, quality series, token rate series)
        self._fit_cache: dict[tuple[str, str], tuple[float, list[Series], list[Series]]] = {}
        #: url -> the token rate over the last window (each cycle reads only what is new)
        self._rate_history: dict[str, RangeCache] = {}
        #: (url, period start) -> the tokens per pod since that start (read: the news)
        self._period_tokens: dict[tuple[str, float], IncreaseCache] = {}
        #: url -> which batched queries answered on their last read (bridges one failure)
        self._bridges: dict[str, Bridge] = {}
        #: (url, engines) -> (unix time read, mean ITL series, token rate series)
        self._latency_cache: dict[tuple[str, tuple[str, ...]],
                                  tuple[float, list[Series], list[Series]]] = {}

    def namespaces(self) -> list[str]:
        """The namespaces the batched queries are restricted to (``namespace=~``; empty: all):
        ``TOKENSCALE_NAMESPACES``; a shard (``TOKENSCALE_SHARDS`` > 1) adds no more than the
        namespaces of the budgets it serves, so its answers cover its own pods only."""
        if self._settings.shards <= 1 or self._served_namespaces is None:
            return list(self._settings.namespaces)
        return sorted(set(self._served_namespaces())) or list(self._settings.namespaces)

    def url_for(self, spec: api.TokenBudgetSpec) -> str:
        """The Prometheus a budget reads (its own, else the operator's default), in the
        allowlist's canonical form; a URL that is not allowed as written."""
        allowed = self.allowlist.resolve(spec.prometheus.url)
        return allowed if allowed is not None else str(spec.prometheus.url).rstrip("/")

    def close(self) -> None:
        """Close the Prometheus sessions and the user query threads."""
        for reader in [*self._readers.values(), *self._user_readers.values()]:
            reader.close()
        self._user_pool.shutdown(wait=False, cancel_futures=True)

    async def read(self, due: list[BudgetEntry], at_unix: float) -> dict[str, UrlAnswers]:
        """The answers for the ``due`` budgets at ``at_unix`` (unix s), by Prometheus URL."""
        by_url: dict[str, list[BudgetEntry]] = {}
        for entry in due:
            assert entry.spec is not None
            by_url.setdefault(self.url_for(entry.spec), []).append(entry)
        results = await asyncio.gather(
            *(self._read_url(url, entries, at_unix)
              if self.allowlist.resolve(url) == url else self._refused(url, entries, at_unix)
              for url, entries in by_url.items())
        )
        return dict(zip(by_url, results, strict=True))

    async def settle(self, answers: UrlAnswers, spec: api.TokenBudgetSpec) -> None:
        """Wait for the answers to ``spec``'s own queries (each ends by its deadline) and
        put them with the others; a query not asked this cycle (the spec was edited
        meanwhile) reads Empty."""
        for t in spec.targets:
            for key in (("rate", t.metrics.token_rate_query), ("queue", t.metrics.queue_query),
                        ("arrival", t.metrics.arrival_rate_query)):
                if key[1] and key not in answers.overrides:
                    task = answers.pending.get(key)
                    answers.overrides[key] = (
                        await asyncio.shield(task) if task is not None
                        else MetricFailure("Empty", "not asked this cycle"))
            query = t.performance.query
            if query and query not in answers.fits and query in answers.pending_fits:
                answers.fits[query] = await asyncio.shield(answers.pending_fits[query])

    async def _refused(
        self, url: str, entries: list[BudgetEntry], at_unix: float
    ) -> UrlAnswers:
        """Answers for a URL that is not allowed, without a request: every query NotAllowed
        (the registry refuses such specs first: this is the second line)."""
        log.error("refusing to query %s: not on %s", url[:200], ALLOWLIST_SETTING)
        specs = [e.spec for e in entries if e.spec is not None]
        failure = MetricFailure("NotAllowed", f"{url[:200]} is not on {ALLOWLIST_SETTING}")
        return UrlAnswers(
            at=at_unix, window=float(max(s.planning.forecast_window_seconds for s in specs)),
            rate=failure, queue=failure,
            increase={period_span_seconds(s.budget, at_unix): failure for s in specs},
            overrides=dict.fromkeys(override_queries(specs), failure),
        )

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

    def _user_reader(self, url: str) -> PrometheusReader:
        """The reader of user queries on ``url``: bounded answers, its own threads."""
        if url not in self._user_readers:
            self._user_readers[url] = PrometheusReader(
                url, self._settings.user_query_timeout_seconds,
                on_query=lambda kind: self._metrics.prometheus_queries.labels(kind).inc(),
                on_failure=lambda kind: self._metrics.prometheus_errors.labels(kind).inc(),
                clock_offset_seconds=self._settings.clock_offset_seconds,
                limits=self._limits, executor=self._user_pool,
            )
        return self._user_readers[url]

    def _user_timeout(self, specs: list[api.TokenBudgetSpec]) -> float:
        """A user query's timeout (s): the budgets' own, at most the operator's limit."""
        return min(self._settings.user_query_timeout_seconds,
                   max(s.prometheus.timeout_seconds for s in specs))

    async def _user_answer(
        self, url: str, what: str, query: str, call: Awaitable[list[Series]], timeout: float
    ) -> list[Series] | MetricFailure:
        """A user query's answer or failure by its deadline (its timeout plus a short wait
        for a free thread); failures are logged here, with their details, when they
        change."""
        try:
            answer = await asyncio.wait_for(self._attempt(call),
                                            timeout + USER_QUERY_GRACE_SECONDS)
        except TimeoutError:
            self._metrics.prometheus_errors.labels("Timeout").inc()
            answer = MetricFailure("Timeout", f"no answer within {timeout:g}s (a thread of "
                                              "the user query pool was busy)")
        self._note(url, what, query, answer)
        return answer

    def _note(self, url: str, what: str, query: str, answer: object) -> None:
        """Log a query's failure with its details (the operator's log is the only place
        they go) when its kind changes, and its recovery."""
        key = (url, what, query)
        if isinstance(answer, MetricFailure):
            if self._failures.get(key) != answer.kind:
                if len(self._failures) > 10_000:
                    self._failures.clear()
                self._failures[key] = answer.kind
                log.warning("%s query %r on %s failed: %s", what, query[:200], url[:200],
                            answer)
        elif self._failures.pop(key, None) is not None:
            log.info("%s query %r on %s answers again", what, query[:200], url[:200])

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
        ns = self.namespaces()
        span_list = sorted({period_span_seconds(s.budget, at_unix) for s in specs})
        user_reader, user_timeout = self._user_reader(url), self._user_timeout(specs)
        pending = {
            (kind, q): asyncio.create_task(self._user_answer(
                url, _QUERY_FIELD[kind], q,
                user_reader.range(q, start, at, step, timeout=user_timeout)
                if kind in _RANGE_KINDS
                else user_reader.instant(q, at, timeout=user_timeout),
                user_timeout))
            for kind, q in override_queries(specs)
        }
        engines = engines_in_use(specs)
        starts = sorted({at_unix - span for span in span_list})
        increase_query = promql.tokens_increase_query(1, ns, engines)  # the caches' key
        self._forget_period_tokens(at_unix)
        tokens = [self._period_tokens.setdefault((url, since), IncreaseCache())
                  for since in starts]
        reads = [cache.read_for(increase_query, since, at_unix)
                 for cache, since in zip(tokens, starts, strict=True)]
        own = [
            ("token rate", promql.token_rate_query(ns, self._settings.rate_window, engines)),
            ("queue", promql.queue_query(ns, engines)),
            ("recent latency", promql.recent_latency_query(
                ns, self._settings.rate_window, engines)),
            *(("tokens in period", promql.tokens_increase_query(read.span, ns, engines))
              for read in reads),
        ]
        history = self._rate_history.setdefault(url, RangeCache())
        rate_start = history.start_for(own[0][1], step, window, at_unix)
        long_wait = full_read_timeout(reader.timeout_seconds)
        first_read = history.end is None or rate_start <= at_unix - window
        timeouts = [long_wait if first_read else None,
                    None, None, *(long_wait if read.full else None for read in reads)]
        jobs = [self._attempt(reader.range(q, datetime.fromtimestamp(rate_start, UTC), at, step,
                                           timeout=timeouts[0])
                              if i == 0 else reader.instant(q, at, timeout=timeouts[i]))
                for i, (_, q) in enumerate(own)]
        priced = {e.ref(t) for e in entries if e.spec is not None for t in e.spec.targets
                  if t.cost_source == "OpenCost"}
        if priced:
            own.append(("node prices", promql.node_prices_query(ns)))
            jobs.append(self._attempt(reader.instant(own[-1][1], at)))
        fits, pending_fits = self._fit_history(url, reader, specs, at_unix, user_timeout)
        out = await asyncio.gather(*jobs)
        if isinstance(out[0], list):  # the news since the last cycle, with the cached rest
            out[0] = history.merge(own[0][1], step, window, rate_start, at_unix, out[0])
        elif out[0].kind == "Unreachable":  # maybe a new server with other data; a slow or
            history.clear()  # failing one keeps it (the next read catches up on the gap)
        else:
            history.failed(at_unix)
        for i, (cache, since, read) in enumerate(zip(tokens, starts, reads, strict=True)):
            answer = out[3 + i]
            if isinstance(answer, list):  # the period's tokens: kept total + the news
                out[3 + i] = cache.merge(increase_query, since, at_unix, read, answer)
            else:  # the failed interval is covered by the next (full) read
                cache.clear()
        for (what, query), answer in zip(own, out, strict=True):
            self._note(url, what, query, answer)
        keys = ["token rate", "queue", "recent latency",
                *(f"tokens in period since {since:.0f}" for since in starts),
                *(["node prices"] if priced else [])]
        bridged = self._bridge(url, keys, out)
        itl, itl_rate = await self._latency_history(url, reader, at_unix, engines)
        refs = target_engines(entries)
        return UrlAnswers(
            fits=fits,
            pending=pending,
            pending_fits=pending_fits,
            itl=group_by_engine(itl, refs),
            itl_rate=group_by_engine(itl_rate, refs),
            at=at_unix,
            window=window,
            rate=group_answer(out[0], refs),
            queue=group_answer(out[1], refs),
            recent_itl=group_answer(latency_series(out[2], "itl"), refs),
            recent_ttft=group_answer(latency_series(out[2], "ttft"), refs),
            increase={int(at_unix - since): group_answer(answer, refs)
                      for since, answer in zip(starts, out[3:3 + len(starts)], strict=True)},
            overrides={},
            prices=group_prices(out[-1], priced) if priced else None,
            bridged=bridged,
        )

    def _forget_period_tokens(self, at_unix: float) -> None:
        """Drop the period totals no cycle has read for a full-read period (a period that
        ended, a budget deleted or edited to another period) and those cleared."""
        for key, cache in list(self._period_tokens.items()):
            if cache.end is None or at_unix - cache.end > FULL_READ_SECONDS:
                del self._period_tokens[key]

    def _bridge(self, url: str, keys: list[str],
                answers: list[list[Series] | MetricFailure]) -> tuple[str, ...]:
        """The queries whose failure this cycle is bridged (:mod:`tokenscale.bridging`: the
        budgets of ``url`` skip the cycle), counted by query."""
        bridge = self._bridges.setdefault(url, Bridge())
        bridged = tuple(key for key, answer in zip(keys, answers, strict=True)
                        if bridge.bridges(key, answer))
        for key in bridged:
            self._metrics.prometheus_bridged.labels(key.split(" since ")[0]).inc()
        bridge.keep_only(set(keys))
        return bridged

    def _fit_history(
        self, url: str, reader: PrometheusReader, specs: list[api.TokenBudgetSpec], at: float,
        timeout: float,
    ) -> tuple[dict[str, FitHistory], dict[str, asyncio.Task[FitHistory]]]:
        """Quality and token-rate history for each ``performance.query`` (24 h, 5 min
        steps), re-read every FIT_REFRESH_SECONDS, not every cycle: the cached ones, and
        the reads started for the others (a budget waits for its own in ``settle``)."""
        wanted = {t.performance.query for s in specs for t in s.targets if t.performance.query}
        ready: dict[str, FitHistory] = {}
        pending: dict[str, asyncio.Task[FitHistory]] = {}
        for query in sorted(wanted):
            cached = self._fit_cache.get((url, query))
            if cached is not None and at - cached[0] < FIT_REFRESH_SECONDS:
                ready[query] = (cached[1], cached[2])
                continue
            task = self._fit_tasks.get((url, query))
            if task is None or task.done():
                task = asyncio.create_task(self._read_fit(url, reader, query, at, timeout,
                                                          engines_in_use(specs)))
                self._fit_tasks[(url, query)] = task
            pending[query] = task
        return ready, pending

    async def _read_fit(
        self, url: str, reader: PrometheusReader, query: str, at: float, timeout: float,
        engines: tuple[str, ...],
    ) -> FitHistory:
        """Read and cache one fit history; a failure caches none (the fit falls back to
        the spec's a, b until the next read)."""
        end = datetime.fromtimestamp(at, UTC)
        start = end - timedelta(seconds=FIT_HISTORY_SECONDS)
        quality, rates = await asyncio.gather(
            self._user_answer(url, "performance.query", query, self._user_reader(url).range(
                query, start, end, FIT_STEP_SECONDS, timeout=timeout), timeout),
            self._attempt(reader.range(
                promql.token_rate_query(self.namespaces(), "5m", engines),
                start, end, FIT_STEP_SECONDS)),
        )
        if isinstance(rates, MetricFailure):
            log.warning("token rate history for performance query %r failed: %s",
                        query[:200], rates)
        fit: FitHistory = (
            (quality, rates) if isinstance(quality, list) and isinstance(rates, list)
            else ([], []))
        self._fit_cache[(url, query)] = (at, fit[0], fit[1])
        self._fit_tasks.pop((url, query), None)
        return fit

    async def _latency_history(
        self, url: str, reader: PrometheusReader, at: float, engines: tuple[str, ...]
    ) -> tuple[list[Series], list[Series]]:
        """Mean inter-token latency and tokens/s per pod over the last hour (60 s steps) for
        every budget of ``url``: two range queries, re-read every FIT_REFRESH_SECONDS (so the
        cycle that reads them asks two more queries). Failures leave both empty until the
        next read: the service model falls back to the spec, the cycle goes on."""
        cached = self._latency_cache.get((url, engines))
        if cached is None or at - cached[0] >= FIT_REFRESH_SECONDS:
            end = datetime.fromtimestamp(at, UTC)
            start = end - timedelta(seconds=LATENCY_HISTORY_SECONDS)
            ns = self.namespaces()
            long_wait = full_read_timeout(reader.timeout_seconds)
            itl, rates = await asyncio.gather(
                self._attempt(reader.range(
                    promql.inter_token_latency_query(ns, LATENCY_RATE_WINDOW, engines),
                    start, end, LATENCY_STEP_SECONDS, timeout=long_wait)),
                self._attempt(reader.range(
                    promql.token_rate_query(ns, LATENCY_RATE_WINDOW, engines),
                    start, end, LATENCY_STEP_SECONDS, timeout=long_wait)),
            )
            if isinstance(itl, list) and isinstance(rates, list):
                cached = (at, itl, rates)
            else:
                log.warning("latency history from %s failed, no service model fit until the "
                            "next read: %s", url, itl if isinstance(itl, MetricFailure) else rates)
                cached = (at, [], [])
            self._latency_cache[(url, engines)] = cached
        return cached[1], cached[2]


def full_read_timeout(timeout_seconds: float) -> float:
    """The timeout (s) of a full read, for queries whose news read waits ``timeout_seconds``:
    :data:`FULL_READ_TIMEOUT_FACTOR` times it, at most :data:`MAX_FULL_READ_TIMEOUT_SECONDS`
    (never shorter than ``timeout_seconds``)."""
    return max(timeout_seconds,
               min(timeout_seconds * FULL_READ_TIMEOUT_FACTOR, MAX_FULL_READ_TIMEOUT_SECONDS))
