"""RangeCache: what it asks for and what it keeps (pure: series as values)."""

from __future__ import annotations

from tokenscale.adapters.prometheus import Series
from tokenscale.range_cache import OVERLAP_STEPS, RangeCache

Q, STEP, WINDOW = "rate", 10.0, 60.0


def _series(pod: str, times: range, value: float) -> Series:
    return Series({"pod": pod}, tuple((float(t), value) for t in times))


def _by_pod(series: list[Series]) -> dict[str, list[tuple[float, float]]]:
    return {s.labels["pod"]: list(s.samples) for s in series}


def test_news_replace_the_overlap_and_the_window_slides() -> None:
    cache = RangeCache()
    cache.merge(Q, STEP, WINDOW, 940, 1000, [_series("a", range(940, 1001, 10), 1.0),
                                             _series("gone", range(940, 971, 10), 5.0)])
    start = cache.start_for(Q, STEP, WINDOW, 1030)
    assert start == 1000 - OVERLAP_STEPS * STEP
    got = _by_pod(cache.merge(Q, STEP, WINDOW, start, 1030,
                              [_series("a", range(980, 1031, 10), 2.0),
                               _series("new", range(1020, 1031, 10), 3.0)]))
    assert got["a"] == [(970.0, 1.0)] + [(float(t), 2.0) for t in range(980, 1031, 10)]
    assert got["new"] == [(1020.0, 3.0), (1030.0, 3.0)]  # a new pod: from its first point
    assert got["gone"] == [(970.0, 5.0)]  # a silent pod keeps its points inside the window
    cache.merge(Q, STEP, WINDOW, 1040 - 20, 1040, [_series("a", range(1020, 1041, 10), 2.0)])
    assert "gone" not in _by_pod(list(cache.series.values()))  # aged out


def test_when_the_whole_window_is_read_again() -> None:
    cache = RangeCache()
    assert cache.start_for(Q, STEP, WINDOW, 1000) == 940  # empty
    cache.merge(Q, STEP, WINDOW, 940, 1000, [_series("a", range(940, 1001, 10), 1.0)])
    assert cache.start_for("other", STEP, WINDOW, 1030) == 970  # another query
    assert cache.start_for(Q, 5.0, WINDOW, 1030) == 970  # another step
    assert cache.start_for(Q, STEP, 120.0, 1030) == 910  # a longer window
    assert cache.start_for(Q, STEP, WINDOW, 1000) == 940  # not after the cached end
    assert cache.start_for(Q, STEP, WINDOW, 1060) == 1000  # a gap of a whole window
    assert cache.start_for(Q, STEP, 30.0, 1030) == 1000  # a shorter one: news only
    # A slow cycle's full read older than the cache leaves the cache alone.
    old = [_series("a", range(900, 961, 10), 9.0)]
    assert cache.merge(Q, STEP, WINDOW, 900, 960, old) == old
    assert cache.end == 1000
    cache.clear()
    assert cache.start_for(Q, STEP, WINDOW, 1030) == 970


def test_an_empty_answer_is_empty_and_the_next_read_is_full() -> None:
    cache = RangeCache()
    cache.merge(Q, STEP, WINDOW, 940, 1000, [_series("a", range(940, 1001, 10), 1.0)])
    assert cache.merge(Q, STEP, WINDOW, 980, 1030, []) == []
    assert cache.start_for(Q, STEP, WINDOW, 1060) == 1000


def test_an_answer_with_the_same_labels_twice_passes_uncached() -> None:
    cache = RangeCache()
    twice = [_series("a", range(940, 1001, 10), 1.0), _series("a", range(940, 1001, 10), 2.0)]
    assert cache.merge(Q, STEP, WINDOW, 940, 1000, twice) == twice
    assert cache.end is None


def test_a_failed_first_read_is_asked_again_shorter_and_the_window_fills() -> None:
    cache = RangeCache()
    window = 600.0
    assert cache.start_for(Q, STEP, window, 1000) == 400  # a start: the whole window
    cache.failed(1000)
    assert cache.start_for(Q, STEP, window, 1030) == 1030 - 150  # a quarter
    cache.failed(1030)
    assert cache.start_for(Q, STEP, window, 1060) == 1060 - 50  # at least 5 steps
    got = _by_pod(cache.merge(Q, STEP, window, 1010, 1060,
                              [_series("a", range(1010, 1061, 10), 1.0)]))
    assert got["a"][0] == (1010.0, 1.0)  # what it got: the newest minute
    assert cache.failed_first_reads == 0
    # From there on each cycle asks its news; the window fills as they arrive.
    at = 1060
    while at < 1700:
        at += 30
        start = cache.start_for(Q, STEP, window, at)
        assert start == at - 30 - OVERLAP_STEPS * STEP
        got = _by_pod(cache.merge(Q, STEP, window, start, at,
                                  [_series("a", range(int(start), at + 1, 10), 1.0)]))
    assert got["a"][0][0] == at - window  # a whole window again
    cache.failed(at + 30)  # a failure with something cached: news as before, cache kept
    assert cache.start_for(Q, STEP, window, at + 60) == at - OVERLAP_STEPS * STEP
    assert cache.failed_first_reads == 0
    # An outage longer than the window: the cache holds nothing of it any more, so failed
    # reads shrink as after a start.
    assert cache.start_for(Q, STEP, window, at + 700) == at + 700 - window
    cache.failed(at + 700)
    assert cache.end is None
    assert cache.start_for(Q, STEP, window, at + 730) == at + 730 - 150
