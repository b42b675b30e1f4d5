"""The Prometheus adapter against the real Prometheus server.

An exporter in this process serves linear token counters (value = rate × seconds since
start) for pods of two Deployments, one with vLLM's own ``vllm:`` names and one with the
``vllm_`` names prometheus-client >= 0.23 writes in OpenMetrics; Prometheus scrapes it every
second. Failure kinds come from real conditions: a closed port, a server that never
answers, an invalid query, a non-JSON answer, NaN/Inf/duplicate series from PromQL.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler

import pytest

from exposition import exposition, serving
from tokenscale.adapters import promql
from tokenscale.adapters.prometheus import (
    MetricFailure,
    PrometheusReader,
    Series,
    check_samples,
    group_by_target,
    sum_by_time,
)
from tokenscale.adapters.promql import WorkloadRef
from tokenscale.increase_cache import IncreaseCache, Read
from tokenscale.range_cache import RangeCache, label_key
from tokenscale_testbed.prometheus import PrometheusServer, free_port

pytestmark = pytest.mark.integration

NS = "inference"
# (metric prefix, pod, prompt tokens/s, generation tokens/s, waiting requests)
PODS = [
    ("vllm:", "llama-8b-7d9f8c6b5-x2k4p", 100.0, 300.0, 2),
    ("vllm:", "llama-8b-7d9f8c6b5-q9w8e", 50.0, 150.0, 1),
    ("vllm_", "llama-70b-5c4b3a2-aaaaa", 20.0, 80.0, 0),
    ("vllm_", "other-abc12-zzzzz", 999.0, 999.0, 9),  # not a target
]
START = time.time()


def _exposition() -> list[str]:
    elapsed = time.time() - START
    lines = []
    for prefix, pod, prompt, gen, waiting in PODS:
        labels = f'namespace="{NS}",pod="{pod}",model_name="m"'
        lines.append(f"{prefix}prompt_tokens_total{{{labels}}} {prompt * elapsed}")
        lines.append(f"{prefix}generation_tokens_total{{{labels}}} {gen * elapsed}")
        lines.append(f"{prefix}num_requests_waiting{{{labels}}} {waiting}")
    return lines


class _NotJson(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>not prometheus</html>")

    do_POST = do_GET  # the operator POSTs its own queries as forms, as Prometheus allows

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with serving(exposition(_exposition)) as address, \
            PrometheusServer(targets=[address], scrape_interval=1.0) as prom:
        prom.wait_for_series('{__name__=~"vllm[:_]generation_tokens_total"}', timeout=30)
        # rate() over 5s is exact only once the whole window holds samples (~12 s of data)
        full = 'min(count_over_time({__name__=~"vllm[:_]prompt_tokens_total"}[12s])) >= 11'
        prom.wait_for_series(full, timeout=40)
        yield prom


LLAMA8 = WorkloadRef(NS, "Deployment", "llama-8b")
LLAMA70 = WorkloadRef(NS, "Deployment", "llama-70b")
MISSING = WorkloadRef(NS, "Deployment", "nothing")
SET = WorkloadRef(NS, "StatefulSet", "llama-8b")


async def test_token_rate_grouped_by_target_for_both_metric_spellings(
    prometheus: PrometheusServer,
) -> None:
    reader = PrometheusReader(prometheus.url, 5)
    at = datetime.now(UTC)
    series = await reader.range(
        promql.token_rate_query([NS], "5s"), at - timedelta(seconds=20), at, 2
    )
    groups = group_by_target(series, [LLAMA8, LLAMA70, MISSING, SET])
    assert sorted(groups[LLAMA8].pods) == sorted(p[1] for p in PODS[:2])
    assert list(groups[LLAMA70].pods) == [PODS[2][1]]
    assert groups[MISSING].pods == {} and groups[SET].pods == {}
    rate8 = sum_by_time(groups[LLAMA8].pods)[-1][1]
    rate70 = sum_by_time(groups[LLAMA70].pods)[-1][1]
    assert rate8 == pytest.approx(600.0, rel=0.05)
    assert rate70 == pytest.approx(100.0, rel=0.05)
    assert check_samples(sum_by_time(groups[LLAMA8].pods), at.timestamp(), 60) is None
    assert check_samples([], at.timestamp(), 60) == ("Empty", "no series for this target")


async def test_a_shifted_operator_clock_still_reads_prometheus_in_its_own_time(
    prometheus: PrometheusServer,
) -> None:
    """An operator whose calendar runs 40 days ahead (TOKENSCALE_CLOCK_OFFSET_SECONDS) asks
    at its own "now" and gets today's samples, stamped in its own clock."""
    shift = 40 * 86400.0
    shifted = PrometheusReader(prometheus.url, 5, clock_offset_seconds=shift)
    plain = PrometheusReader(prometheus.url, 5)
    at = datetime.now(UTC) + timedelta(seconds=shift)
    series = await shifted.range(promql.token_rate_query([NS], "5s"),
                                 at - timedelta(seconds=20), at, 2)
    rate8 = sum_by_time(group_by_target(series, [LLAMA8])[LLAMA8].pods)
    assert rate8 and rate8[-1][1] == pytest.approx(600.0, rel=0.05)
    assert check_samples(rate8, at.timestamp(), 60) is None  # fresh in the shifted clock
    queue = await shifted.instant(promql.queue_query([NS]), at)
    assert queue and all(abs(s.samples[-1][0] - at.timestamp()) < 1 for s in queue)
    # the same instant asked without the shift is 40 days in Prometheus' future: nothing
    assert await plain.instant(promql.queue_query([NS]), at) == []


async def test_a_fractional_timeout_is_a_timeout_prometheus_accepts(
    prometheus: PrometheusServer,
) -> None:
    # spec.prometheus.timeoutSeconds may be 2.5; "2.5s" is not a Prometheus duration
    reader = PrometheusReader(prometheus.url, 2.5)
    queue = await reader.instant(promql.queue_query([NS]), datetime.now(UTC))
    assert queue
    assert await reader.instant(promql.queue_query([NS]), datetime.now(UTC), timeout=0.75)


async def test_queue_and_increase_since_period_start(prometheus: PrometheusServer) -> None:
    reader = PrometheusReader(prometheus.url, 5)
    at = datetime.now(UTC)
    queue = group_by_target(await reader.instant(promql.queue_query([NS]), at), [LLAMA8])
    assert sum(s[-1][1] for s in queue[LLAMA8].pods.values()) == 3
    increase = await reader.instant(promql.tokens_increase_query(10, [NS]), at)
    tokens = group_by_target(increase, [LLAMA8])[LLAMA8]
    total = sum(s[-1][1] for s in tokens.pods.values())
    assert total == pytest.approx(600.0 * 10, rel=0.2)


async def test_namespace_filter_is_escaped_and_excludes_other_namespaces(
    prometheus: PrometheusServer,
) -> None:
    reader = PrometheusReader(prometheus.url, 5)
    at = datetime.now(UTC)
    assert await reader.instant(promql.queue_query(['we"ird\\ns.*']), at) == []
    selector = f'up{{job="{promql.escape_label_value(chr(34) + "x" + chr(92))}"}}'
    assert await reader.instant(selector, at) == []


async def test_user_override_with_two_series_per_pod_is_multiple_series(
    prometheus: PrometheusServer,
) -> None:
    reader = PrometheusReader(prometheus.url, 5)
    raw = await reader.instant('{__name__=~"vllm[:_](prompt|generation)_tokens_total"}',
                               datetime.now(UTC))
    assert group_by_target(raw, [LLAMA8])[LLAMA8].failure == "MultipleSeries"


@pytest.mark.parametrize(("expr", "kind"), [("0/0", "NotANumber"), ("1/0", "Infinite"),
                                             ("-1/0", "Infinite")])
async def test_nan_and_inf_samples_are_their_own_failure_kinds(
    prometheus: PrometheusServer, expr: str, kind: str
) -> None:
    reader = PrometheusReader(prometheus.url, 5)
    at = datetime.now(UTC)
    q = f'label_replace(vector({expr}), "pod", "{PODS[0][1]}", "", "")'
    series = await reader.instant(q, at)
    group = group_by_target(series, [LLAMA8])[LLAMA8]
    problem = check_samples(sum_by_time(group.pods), at.timestamp(), 60)
    assert problem is not None and problem[0] == kind


async def test_stale_when_the_newest_sample_is_too_old(prometheus: PrometheusServer) -> None:
    reader = PrometheusReader(prometheus.url, 5)
    at = datetime.now(UTC)
    old = at - timedelta(seconds=3)
    series = await reader.range(promql.token_rate_query([NS], "5s"), old - timedelta(seconds=4),
                                old, 1)
    summed = sum_by_time(group_by_target(series, [LLAMA8])[LLAMA8].pods)
    problem = check_samples(summed, at.timestamp(), 1.0)
    assert problem is not None and problem[0] == "Stale"


async def test_invalid_promql_is_an_http_error(prometheus: PrometheusServer) -> None:
    failures: list[str] = []
    reader = PrometheusReader(prometheus.url, 5, on_failure=failures.append)
    with pytest.raises(MetricFailure) as info:
        await reader.instant("sum by (pod (", datetime.now(UTC))
    assert info.value.kind == "HTTPError" and "400" in info.value.detail
    assert failures == ["HTTPError"]


async def test_closed_port_is_unreachable() -> None:
    reader = PrometheusReader(f"http://127.0.0.1:{free_port()}", 2)
    with pytest.raises(MetricFailure) as info:
        await reader.instant("up", datetime.now(UTC))
    assert info.value.kind == "Unreachable"


async def test_silent_server_is_a_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    try:
        reader = PrometheusReader(f"http://127.0.0.1:{listener.getsockname()[1]}", 0.3)
        with pytest.raises(MetricFailure) as info:
            await reader.range("up", datetime.now(UTC) - timedelta(seconds=10),
                               datetime.now(UTC), 1)
        assert info.value.kind == "Timeout"
    finally:
        listener.close()


async def test_non_json_answer_is_a_bad_response() -> None:
    with serving(_NotJson) as address:
        reader = PrometheusReader(f"http://{address}", 2)
        with pytest.raises(MetricFailure) as info:
            await reader.instant("up", datetime.now(UTC))
        assert info.value.kind == "BadResponse"


async def test_queries_run_concurrently_without_blocking_the_loop(
    prometheus: PrometheusServer,
) -> None:
    queries: list[str] = []
    reader = PrometheusReader(prometheus.url, 5, on_query=queries.append)
    at = datetime.now(UTC)
    results = await asyncio.gather(*(reader.instant("up", at) for _ in range(4)))
    assert all(r for r in results) and queries == ["instant"] * 4


async def test_the_rate_history_read_in_steps_equals_a_full_read(
    prometheus: PrometheusServer,
) -> None:
    """RangeCache: a window read once, then only its news (from the newest point less two
    steps), holds the same points as the whole window read again."""
    reader = PrometheusReader(prometheus.url, 5)
    query, step, window = promql.token_rate_query([NS], "5s"), 2.0, 12.0
    first = float(int(time.time()) // 2 * 2 - 8)  # on the step grid, ingested
    later = first + 6
    cache = RangeCache()
    assert cache.start_for(query, step, window, first) == first - window  # nothing cached
    cache.merge(query, step, window, first - window, first, await reader.range(
        query, _utc(first - window), _utc(first), step))
    start = cache.start_for(query, step, window, later)
    assert start == first - 2 * step  # only the news, two steps back
    news = await reader.range(query, _utc(start), _utc(later), step)
    assert max(len(s.samples) for s in news) <= 6  # not the window's 7 points
    merged = {label_key(s.labels): s.samples for s in cache.merge(
        query, step, window, start, later, news)}
    full = {label_key(s.labels): s.samples for s in await reader.range(
        query, _utc(later - window), _utc(later), step)}
    assert merged.keys() == full.keys() and len(full) == len(PODS)
    for key, samples in full.items():
        assert [t for t, _ in merged[key]] == [t for t, _ in samples]
        assert [v for _, v in merged[key]] == pytest.approx([v for _, v in samples])
    # Another query (e.g. the shard's namespaces changed) reads the whole window again.
    assert cache.start_for(promql.token_rate_query([], "5s"), step, window, later + 2) == (
        later + 2 - window)


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


async def test_the_period_tokens_read_in_steps_equal_a_full_read(
    prometheus: PrometheusServer,
) -> None:
    """IncreaseCache: the tokens since the period's start read once in full, then only the
    increase since the last read added on, equal a full read of the same instant."""
    reader = PrometheusReader(prometheus.url, 5)
    period_start = float(int(START))  # the counters start here
    first = float(int(time.time()) - 8)  # ingested
    later = first + 6
    query = promql.tokens_increase_query(1, [NS])  # the cache's key

    async def read(span: int, at: float) -> list[Series]:
        return await reader.instant(promql.tokens_increase_query(span, [NS]), _utc(at))

    cache = IncreaseCache()
    full = cache.read_for(query, period_start, first)
    assert full.full and full.span == int(first - period_start)
    cache.merge(query, period_start, first, full, await read(full.span, first))
    news = cache.read_for(query, period_start, later)
    assert news == Read(6, False, first)
    stepped = {label_key(s.labels): s.samples[-1][1] for s in cache.merge(
        query, period_start, later, news, await read(news.span, later))}
    whole = {label_key(s.labels): s.samples[-1][1]
             for s in await read(int(later - period_start), later)}
    assert stepped.keys() == whole.keys() and len(whole) == len(PODS)
    print("stepped / full:", sorted(round(stepped[k] / v, 4) for k, v in whole.items()))
    for key, tokens in whole.items():
        assert stepped[key] == pytest.approx(tokens, rel=0.05), key
