"""The bounds on a TokenBudget's own queries, on real HTTP: the real Prometheus (which
accepts the ``limit`` parameter, or ignores it before 3.x, either way answers), a server
that redirects, one that answers too much, one that trickles its answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import pytest

from exposition import serving
from tokenscale.adapters.prometheus import AnswerLimits, MetricFailure, PrometheusReader
from tokenscale_testbed.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

TWO_SERIES = 'vector(1) or label_replace(vector(2), "x", "a", "", "")'
LIMITS = AnswerLimits(max_series=2, max_points=100)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer() as prom:
        yield prom


class _Handler(BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Handler.paths.append(self.path)
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "/elsewhere/api/v1/query?query=up")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if self.path.startswith("/huge/"):
            self.wfile.write(b'{"status":"success","data":{"resultType":"vector","result":['
                             + b'{"metric":{},"value":[1,"1"]},' * 50_000 + b"]}}")
        elif self.path.startswith("/trickle/"):
            for _ in range(30):  # a byte every 0.1 s: no single read waits long
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.1)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(_Handler) as address:
        yield f"http://{address}"


async def _kind(reader: PrometheusReader, query: str = "up") -> str:
    with pytest.raises(MetricFailure) as info:
        await reader.instant(query, datetime.now(UTC))
    return info.value.kind


async def test_the_real_prometheus_answers_within_the_limits_and_is_refused_beyond(
    prometheus: PrometheusServer,
) -> None:
    now = datetime.now(UTC)
    bounded = PrometheusReader(prometheus.url, 5, limits=LIMITS)
    assert len(await bounded.instant(TWO_SERIES, now)) == 2  # `limit=3` was sent along
    one = PrometheusReader(prometheus.url, 5, limits=AnswerLimits(1, 100))
    assert await _kind(one, TWO_SERIES) == "TooManySeries"
    with pytest.raises(MetricFailure) as info:  # 2 series x 61 steps > 100 samples
        await bounded.range(TWO_SERIES, now - timedelta(seconds=60), now, 1)
    assert info.value.kind == "TooManyPoints"
    assert len(await bounded.range(TWO_SERIES, now - timedelta(seconds=40), now, 1)) == 2


async def test_a_redirect_is_refused_and_not_followed(server: str) -> None:
    for limits in (None, LIMITS):  # the operator's own reader and the bounded one
        _Handler.paths.clear()
        reader = PrometheusReader(f"{server}/redirect", 5, limits=limits)
        assert await _kind(reader) == "HTTPError"
        assert not any(p.startswith("/elsewhere") for p in _Handler.paths), _Handler.paths


async def test_an_answer_too_large_is_not_read_to_its_end(server: str) -> None:
    reader = PrometheusReader(f"{server}/huge", 5, limits=AnswerLimits(1, 1))
    assert await _kind(reader) == "TooLarge"


async def test_a_trickling_answer_ends_at_the_timeout(server: str) -> None:
    reader = PrometheusReader(f"{server}/trickle", 1.0, limits=LIMITS)
    started = time.monotonic()
    assert await _kind(reader) == "Timeout"
    assert time.monotonic() - started < 2.0
