"""Prometheus adapter on prometheus-api-client: instant and range queries, failure kinds.

Every failure is one of :data:`tokenscale.core.types.METRIC_FAILURES`, raised as
:class:`MetricFailure` (query-wide: Unreachable, Timeout, HTTPError, BadResponse, and for
a reader with :class:`AnswerLimits`: TooManySeries, TooManyPoints, TooLarge) or reported per
target by :func:`group_by_target` (Empty, NotANumber, Infinite, MultipleSeries, Stale). The
client is synchronous (requests); calls run in a thread so the event loop never blocks.
Retries are off: the planning loop holds on failures and tries again next interval.
Redirects are refused (HTTPError): a base URL that was allowed cannot send the operator on
to another host.

A failure's ``kind`` is what a TokenBudget's status shows; its ``detail`` (the URL, the
client's exception, the first bytes of an answer) is for the operator's own log only.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
import urllib3
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from tokenscale.adapters.promql import ENGINE_LABEL, PodIndex, WorkloadRef

Sample = tuple[float, float]  # (unix time s, value)


class MetricFailure(Exception):
    """A query that gave no usable answer; ``kind`` is one of METRIC_FAILURES, the only part
    a status may show;
    ``detail`` may quote the URL and the answer: logs only."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Series:
    """One series of an answer: its labels and samples (oldest first)."""

    labels: Mapping[str, str]
    samples: tuple[Sample, ...]


def _number(raw: Any) -> float:
    if not isinstance(raw, str | int | float):
        raise MetricFailure("BadResponse", f"sample value {raw!r} is not a number")
    try:
        return float(raw)  # Prometheus sends "NaN", "+Inf", "-Inf" as strings
    except ValueError:
        raise MetricFailure("BadResponse", f"sample value {raw!r} is not a number") from None


def _pair(raw: Any) -> Sample:
    if not (isinstance(raw, list | tuple) and len(raw) == 2):
        raise MetricFailure("BadResponse", f"sample {raw!r} is not [time, value]")
    return _number(raw[0]), _number(raw[1])


@dataclass(frozen=True)
class AnswerLimits:
    """Bounds on one answer (for queries a TokenBudget wrote): at most ``max_series``
    series and ``max_points`` samples over all of them; the body is read up to
    :attr:`max_bytes` only."""

    max_series: int
    max_points: int

    @property
    def max_bytes(self) -> int:
        """Bytes read of a body at most: 200 per sample and 4 KiB per series (labels), far
        above what a Prometheus answer within both limits takes."""
        return 200 * self.max_points + 4096 * self.max_series


def _decode_samples(obj: dict[str, Any]) -> dict[str, Any]:
    """``json.loads`` object hook: a series' ``values`` become (time s, value) tuples as
    soon as its object is decoded, so the raw ``[time, "value"]`` lists of a large range
    answer (about 150 bytes per sample) never all exist at once beside the parsed ones; the
    first cycle's three range answers made most of an operator's peak memory."""
    values = obj.get("values")
    if "metric" in obj and isinstance(values, list):
        obj["values"] = tuple(_pair(v) for v in values)
    return obj


def decode_answer(body: bytes | bytearray | str) -> Any:
    """The ``data.result`` of a Prometheus API answer ``body`` (JSON), with each series'
    samples already parsed (:func:`_decode_samples`); a sample that is not [time, number]
    is BadResponse, as in :func:`parse_result`."""
    return json.loads(body, object_hook=_decode_samples)["data"]["result"]


def parse_result(result: Any, limits: AnswerLimits | None = None) -> list[Series]:
    """Turn the `data.result` of a vector or matrix answer into :class:`Series`, refusing
    more series (TooManySeries) or samples (TooManyPoints) than ``limits``."""
    if not isinstance(result, list):
        raise MetricFailure("BadResponse", "result is not a list")
    if limits is not None and len(result) > limits.max_series:
        raise MetricFailure("TooManySeries", f"{len(result)} series or more, "
                                             f"limit {limits.max_series}")
    points = 0
    out = []
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("metric", {}), dict):
            raise MetricFailure("BadResponse", f"series {item!r:.200} has no metric labels")
        labels = {str(k): str(v) for k, v in item.get("metric", {}).items()}
        if "value" in item:
            samples: tuple[Sample, ...] = (_pair(item["value"]),)
        elif isinstance(item.get("values"), tuple):  # parsed while decoding (decode_answer)
            samples = item["values"]
        elif "values" in item and isinstance(item["values"], list):
            samples = tuple(_pair(v) for v in item["values"])
        else:
            raise MetricFailure("BadResponse", f"series {labels} has neither value nor values")
        points += len(samples)
        if limits is not None and points > limits.max_points:
            raise MetricFailure("TooManyPoints", f"more than {limits.max_points} samples")
        out.append(Series(labels, samples))
    return out


class PrometheusReader:
    """Instant and range queries against one Prometheus, with failure kinds.

    ``on_query(kind)`` is called once per HTTP query sent (kind: instant | range) and
    ``on_failure(kind)`` once per failed one; the operator counts both in /metrics. With
    ``limits`` every answer is bounded (Prometheus' own ``limit`` parameter is sent as
    well; servers that predate it ignore it) and a query also ends when its timeout has
    passed while the body is still arriving. ``executor`` runs the blocking calls (None:
    the event loop's default).
    """

    def __init__(
        self,
        url: str,
        timeout_seconds: float,
        on_query: Callable[[str], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
        clock_offset_seconds: float = 0.0,
        limits: AnswerLimits | None = None,
        executor: Executor | None = None,
    ):
        self.url = url.rstrip("/")
        self.limits = limits
        self._executor = executor
        #: the operator's clock minus Prometheus' clock (s): times sent are shifted back by
        #: it and the sample times received forward, so callers see one clock only.
        self.clock_offset_seconds = clock_offset_seconds
        self.timeout_seconds = timeout_seconds
        self._client = PrometheusConnect(
            url=self.url, disable_ssl=False, retry=Retry(total=False)
        )
        self._client._session.max_redirects = 0  # a redirect is refused (TooManyRedirects)
        self._on_query = on_query
        self._on_failure = on_failure

    def close(self) -> None:
        """Release the HTTP session."""
        self._client._session.close()

    async def instant(self, query: str, at: datetime, timeout: float | None = None) -> list[Series]:
        """Evaluate ``query`` at ``at``."""
        params = {"time": self._stamp(at)}
        return await self._run("instant", query, params, timeout)

    async def range(
        self, query: str, start: datetime, end: datetime, step_seconds: float,
        timeout: float | None = None,
    ) -> list[Series]:
        """Evaluate ``query`` from ``start`` to ``end`` every ``step_seconds``."""
        params = {
            "start": self._stamp(start),
            "end": self._stamp(end),
            "step": f"{max(step_seconds, 0.001):g}",
        }
        return await self._run("range", query, params, timeout)

    def _stamp(self, at: datetime) -> str:
        return f"{at.timestamp() - self.clock_offset_seconds:.3f}"

    async def _run(
        self, kind: str, query: str, params: dict[str, str], timeout: float | None
    ) -> list[Series]:
        seconds = self.timeout_seconds if timeout is None else timeout
        if self._on_query is not None:
            self._on_query(kind)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, self._request, kind, query, params, seconds)
        except MetricFailure as failure:
            if self._on_failure is not None:
                self._on_failure(failure.kind)
            raise

    def _request(
        self, kind: str, query: str, params: dict[str, str], seconds: float
    ) -> list[Series]:
        # Prometheus also stops evaluating after its own `timeout` parameter, sent as plain
        # seconds: its duration syntax ("5s") takes whole units only, "2.5s" is bad_data.
        params = {**params, "timeout": f"{seconds:g}"}
        try:
            if self.limits is not None:
                result = self._bounded_request(kind, query, params, seconds, self.limits)
            else:
                result = self._form_request(kind, query, params, seconds)
        except json.JSONDecodeError as exc:  # (a ValueError: check first)
            raise MetricFailure("BadResponse", f"not JSON: {exc}"[:500]) from None
        except requests.TooManyRedirects as exc:  # max_redirects = 0
            raise MetricFailure("HTTPError", f"{self.url}: redirect refused: {exc}"[:500]) \
                from None
        except urllib3.exceptions.NewConnectionError as exc:  # (a ConnectTimeoutError too)
            raise MetricFailure("Unreachable", f"{self.url}: {exc}") from None
        except (requests.Timeout, urllib3.exceptions.TimeoutError) as exc:
            raise MetricFailure("Timeout", f"no answer within {seconds:g}s: {exc}") from None
        except requests.ConnectionError as exc:
            raise MetricFailure("Unreachable", f"{self.url}: {exc}") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise MetricFailure("Unreachable", f"{self.url}: {exc}") from None
        except PrometheusApiClientException as exc:
            raise MetricFailure("HTTPError", str(exc)[:500]) from None
        except (ValueError, KeyError, TypeError) as exc:  # not JSON / not the API shape
            raise MetricFailure("BadResponse", f"{type(exc).__name__}: {exc}"[:500]) from None
        series = parse_result(result, self.limits)
        if self.clock_offset_seconds:
            shift = self.clock_offset_seconds
            series = [Series(s.labels, tuple((t + shift, v) for t, v in s.samples))
                      for s in series]
        return series

    def _form_request(
        self, kind: str, query: str, params: dict[str, str], seconds: float
    ) -> Any:
        # POSTed as a form (Prometheus' API accepts both): a shard's batched queries carry a
        # namespace matcher with hundreds of names, too long for some proxies' URL limits.
        # The raw call keeps float precision and custom_query's error handling.
        endpoint = "query" if kind == "instant" else "query_range"
        response = self._client._session.request(
            method="POST",
            url=f"{self.url}/api/v1/{endpoint}",
            data={"query": query, **params},
            timeout=seconds,
        )
        if response.status_code != 200:
            raise PrometheusApiClientException(
                f"HTTP Status Code {response.status_code} ({response.content[:300]!r})"
            )
        return decode_answer(response.content)

    def _bounded_request(
        self, kind: str, query: str, params: dict[str, str], seconds: float,
        limits: AnswerLimits,
    ) -> Any:
        """One query whose answer is bounded: no redirect, the body read up to
        ``limits.max_bytes`` (TooLarge beyond) and for at most ``seconds`` in all (Timeout:
        ``timeout`` alone bounds each read, not a body that trickles in)."""
        deadline = time.monotonic() + seconds
        endpoint = "query" if kind == "instant" else "query_range"
        response = self._client._session.get(
            f"{self.url}/api/v1/{endpoint}",
            params={"query": query, **params, "limit": str(limits.max_series + 1)},
            timeout=seconds, stream=True, allow_redirects=False,
        )
        try:
            if response.status_code != 200:
                raise PrometheusApiClientException(
                    f"HTTP Status Code {response.status_code} ({response.raw.read(300)!r})")
            body = bytearray()
            read1 = getattr(response.raw, "read1", None)  # urllib3 >= 2: what has arrived
            chunks = (iter(lambda: read1(65536, decode_content=True), b"") if read1
                      else response.iter_content(chunk_size=65536))
            for chunk in chunks:
                body += chunk
                if len(body) > limits.max_bytes:
                    raise MetricFailure("TooLarge", f"answer over {limits.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise MetricFailure("Timeout", f"answer not complete within {seconds:g}s")
        except requests.ConnectionError as exc:  # iter_content wraps a read timeout so
            if any(isinstance(a, urllib3.exceptions.ReadTimeoutError) for a in exc.args):
                raise MetricFailure("Timeout", f"no answer within {seconds:g}s: {exc}") \
                    from None
            raise
        finally:
            response.close()
        return decode_answer(body)  # not JSON: BadResponse in _request


# ----------------------------------------------------------------- grouping to targets


@dataclass
class TargetSeries:
    """The per-pod series of one workload, or the per-target failure kind."""

    pods: dict[str, tuple[Sample, ...]] = field(default_factory=dict)
    failure: str | None = None
    detail: str = ""


def group_by_target(
    series: Iterable[Series], workloads: Iterable[WorkloadRef]
) -> dict[WorkloadRef, TargetSeries]:
    """Group per-pod series to workloads (namespace label + pod name pattern).

    A workload that gets the same pod twice is MultipleSeries; a series without a ``pod``
    label is ignored (it cannot be attributed). Workloads with no series are absent from
    the answer's ``pods`` (the caller decides whether that is Empty).
    """
    refs = list(workloads)
    index = PodIndex(refs)
    out = {ref: TargetSeries() for ref in refs}
    for s in series:
        pod = s.labels.get("pod")
        namespace = s.labels.get("namespace")
        if pod is None:
            continue
        candidates = (
            [index.owner(namespace, pod)]
            if namespace is not None
            else [index.owner(ref.namespace, pod) for ref in refs]
        )
        for ref in {c for c in candidates if c is not None}:
            group = out[ref]
            if pod in group.pods:
                group.failure = "MultipleSeries"
                group.detail = f"several series for pod {pod}"
            group.pods[pod] = s.samples
    return out


def group_by_engine(
    series: Iterable[Series], engines: Mapping[WorkloadRef, str]
) -> dict[WorkloadRef, TargetSeries]:
    """Group a batched answer to workloads, each workload taking only the series tagged with
    its own engine (``engines``: workload -> engine name; see :mod:`.promql`), so a target
    named ``sglang`` never reads a vLLM pod's series. Series without the tag (a query that
    does not set it) go to every workload, as :func:`group_by_target` does."""
    by_engine: dict[str | None, list[Series]] = {}
    for s in series:
        by_engine.setdefault(s.labels.get(ENGINE_LABEL), []).append(s)
    refs_of: dict[str, list[WorkloadRef]] = {}
    for ref, engine in engines.items():
        refs_of.setdefault(engine, []).append(ref)
    out = {ref: TargetSeries() for ref in engines}
    for tag, members in by_engine.items():
        refs = list(engines) if tag is None else refs_of.get(tag, [])
        if refs:
            for ref, group in group_by_target(members, refs).items():
                if group.pods or group.failure:
                    out[ref] = group
    return out


def sum_by_time(pods: Mapping[str, tuple[Sample, ...]]) -> list[Sample]:
    """Sum per-pod samples that share a timestamp (range answers are step-aligned)."""
    total: dict[float, float] = {}
    for samples in pods.values():
        for t, v in samples:
            total[t] = total.get(t, 0.0) + v
    return sorted(total.items())


def check_samples(samples: list[Sample], at: float, stale_after: float) -> tuple[str, str] | None:
    """The failure kind of a target's summed samples, or None if usable."""
    if not samples:
        return "Empty", "no series for this target"
    last_t, last_v = samples[-1]
    if math.isnan(last_v):
        return "NotANumber", "newest sample is NaN"
    if math.isinf(last_v):
        return "Infinite", "newest sample is infinite"
    if at - last_t > stale_after:
        return "Stale", f"newest sample is {at - last_t:.0f}s old (limit {stale_after:.0f}s)"
    return None
