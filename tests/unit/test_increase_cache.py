"""IncreaseCache and Bridge: what they ask for, keep and answer (pure: series as values)."""

from __future__ import annotations

import math

from tokenscale.adapters.prometheus import MetricFailure, Series
from tokenscale.bridging import Bridge
from tokenscale.increase_cache import FULL_READ_SECONDS, IncreaseCache, Read

Q, START = "increase", 86_400.0


def _tokens(**pods: float) -> list[Series]:
    return [Series({"pod": pod}, ((0.0, value),)) for pod, value in pods.items()]


def _totals(series: list[Series]) -> dict[str, float]:
    return {s.labels["pod"]: s.samples[-1][1] for s in series}


def test_a_full_read_then_only_the_news_added_to_the_kept_totals() -> None:
    cache = IncreaseCache()
    first = cache.read_for(Q, START, START + 3600)
    assert first == Read(3600, True)  # nothing kept: since the period's start
    assert _totals(cache.merge(Q, START, START + 3600, first, _tokens(a=1000, b=500))) == {
        "a": 1000, "b": 500}
    news = cache.read_for(Q, START, START + 3630)
    assert news == Read(30, False, START + 3600)  # the 30 s since the last read
    got = _totals(cache.merge(Q, START, START + 3630, news, _tokens(a=20, c=7)))
    assert got == {"a": 1020, "b": 500, "c": 7}  # b stopped: its tokens stay counted


def test_a_full_read_again_for_another_query_or_period_and_every_full_read_period() -> None:
    cache = IncreaseCache()
    cache.merge(Q, START, START + 100, cache.read_for(Q, START, START + 100), _tokens(a=10))
    assert cache.read_for("other namespaces", START, START + 130).full
    assert cache.read_for(Q, START + 86_400, START + 86_430).full  # the next day
    assert cache.read_for(Q, START, START + 100).full  # not newer than the kept read
    cache.merge(Q, START, START + 130, cache.read_for(Q, START, START + 130), _tokens(a=3))
    late = START + 100 + FULL_READ_SECONDS
    assert cache.read_for(Q, START, late) == Read(int(late - START), True)
    # a full read replaces the totals (authoritative: resets, late scrapes)
    assert _totals(cache.merge(Q, START, late, cache.read_for(Q, START, late),
                               _tokens(a=50))) == {"a": 50}


def test_overlapping_cycles_never_count_an_interval_twice() -> None:
    cache = IncreaseCache()
    cache.merge(Q, START, START + 60, cache.read_for(Q, START, START + 60), _tokens(a=100))
    slow = cache.read_for(Q, START, START + 90)  # a cycle that answers late
    fast = cache.read_for(Q, START, START + 95)
    assert _totals(cache.merge(Q, START, START + 95, fast, _tokens(a=35))) == {"a": 135}
    # the slow one's 30 s lie within the fast one's 35 s: nothing added
    assert _totals(cache.merge(Q, START, START + 90, slow, _tokens(a=30))) == {"a": 135}
    assert cache.end == START + 95


def test_a_non_finite_value_is_passed_on_and_the_next_read_is_full() -> None:
    cache = IncreaseCache()
    cache.merge(Q, START, START + 60, cache.read_for(Q, START, START + 60), _tokens(a=100))
    got = _totals(cache.merge(Q, START, START + 90, cache.read_for(Q, START, START + 90),
                              _tokens(a=math.nan)))
    assert math.isnan(got["a"])
    assert cache.read_for(Q, START, START + 120).full


def test_one_failed_read_in_a_row_is_bridged_the_second_is_not() -> None:
    bridge = Bridge()
    good = _tokens(a=1)
    timeout = MetricFailure("Timeout", "no answer within 5s")
    assert not bridge.bridges("queue", timeout)  # nothing good seen yet: an outage
    assert not bridge.bridges("queue", good)
    assert bridge.bridges("queue", timeout)  # right after a good read: bridged
    assert not bridge.bridges("queue", timeout)  # the second in a row is told
    assert not bridge.bridges("queue", good)
    assert bridge.bridges("queue", MetricFailure("HTTPError", "503"))
    assert not bridge.bridges("queue", good)
    # what Prometheus holds is never bridged, only failures to ask it
    assert not bridge.bridges("queue", MetricFailure("NaN", "a NaN sample"))
    assert not bridge.bridges("queue", good)
    bridge.keep_only({"token rate"})
    assert not bridge.bridges("queue", timeout)  # forgotten
