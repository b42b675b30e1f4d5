"""The token-rate history kept between cycles, so each cycle asks Prometheus for its news only.

The planner needs each target's token rate over the forecast window (600 s at 10 s steps:
61 points per pod). Asking for the whole window every cycle made Prometheus evaluate, and the
operator parse, the same points again and again: at 5,000 budgets (10,000 pods) 610,000
points per cycle, a query that timed out. :class:`RangeCache` keeps the answer of the last
cycle and asks only for the points since it, plus :data:`OVERLAP_STEPS` steps before
(samples scraped just before a cycle may reach Prometheus after it answered: the overlap
re-reads them): at a 30 s interval and 10 s steps, 5 points per pod instead of 61.

The cached samples are what a full read would return, trimmed to the window: each series
keeps its points before the new read's start and takes the new read's points from there on;
a series missing from the new read keeps its old points until they leave the window (as a
full read would show a pod that stopped reporting). A different query (another namespace
set, another rate window), step or a longer window, a cycle older than the cached one, or a
gap longer than the window reads the whole window again; so does the read after an entirely
empty one or an unreachable server (a restarted Prometheus with an empty TSDB, a metric that
is gone: the planner sees what Prometheus holds, not what it held). A Prometheus that times
out or errs keeps the cache: under load, asking it for the whole window again after every
timeout made the next read time out too (10,000 budgets, BENCHMARKS.md). When the cache is
empty (a start) and that first read fails, the next asks for a quarter of the span, and so
on: the window then fills with the cycles' news. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tokenscale.adapters.prometheus import Series

#: Steps before the newest cached point that each cycle reads again.
OVERLAP_STEPS = 2
#: After each failed read into an empty cache, the next one asks for this share of the span
#: before (a whole window, then a quarter, a sixteenth ...), at least MIN_FIRST_READ_STEPS
#: steps; the window then fills as the cycles' news arrive.
FIRST_READ_SHRINK = 0.25
MIN_FIRST_READ_STEPS = OVERLAP_STEPS + 3

LabelKey = tuple[tuple[str, str], ...]


def label_key(labels: Mapping[str, str]) -> LabelKey:
    """A hashable key of a series' labels."""
    return tuple(sorted(labels.items()))


@dataclass
class RangeCache:
    """One query's series over the last window (unix s, the operator's clock)."""

    query: str = ""
    step: float = 0.0
    window: float = 0.0
    end: float | None = None  # the newest cycle read (None: nothing cached)
    series: dict[LabelKey, Series] = field(default_factory=dict)
    failed_first_reads: int = 0  # failed reads in a row while nothing was cached

    def start_for(self, query: str, step: float, window: float, at: float) -> float:
        """Where this cycle's read at ``at`` should start: ``at - window`` (a full read) unless
        the cache holds the same query and step, a window at least as long and a recent
        enough end; then ``OVERLAP_STEPS`` steps before its end. While reads into an empty
        cache fail, each next one asks for a shorter span (:data:`FIRST_READ_SHRINK`): a
        Prometheus too loaded to answer a whole window for every pod still answers its newest
        minutes, and the planner starts on those rather than on nothing."""
        full = at - window
        if self.end is None and self.failed_first_reads:
            span = window * FIRST_READ_SHRINK ** self.failed_first_reads
            return at - min(window, max(span, MIN_FIRST_READ_STEPS * step))
        if (self.end is None or query != self.query or step != self.step
                or window > self.window or at <= self.end or at - self.end >= window):
            return full
        return max(full, self.end - OVERLAP_STEPS * step)

    def failed(self, at: float) -> None:
        """A read at ``at`` failed (timeout, error): the cache stays while it still overlaps
        the window; counted when it held nothing (or nothing of the window any more: after
        a long outage the next reads are as after a start)."""
        if self.end is not None and at - self.end >= self.window:
            self.clear()  # (while something was cached no first read had failed)
        if self.end is None:
            self.failed_first_reads += 1

    def merge(self, query: str, step: float, window: float, start: float, at: float,
              answer: list[Series]) -> list[Series]:
        """Put the answer of a read from ``start`` to ``at`` in the cache; returns the series
        over the window ``[at - window, at]`` (oldest sample first)."""
        full = start <= at - window
        if not answer:  # nothing at all (the metric gone, an emptied Prometheus): as a full
            self.clear()  # read would most likely say; the next read is a full one
            return []
        fresh = {label_key(s.labels): s for s in answer}
        if len(fresh) < len(answer):  # the same labels twice: no real Prometheus says that;
            self.clear()  # pass it on as it came (the grouping names it MultipleSeries)
            return answer
        if full and self.end is not None and at < self.end:
            return answer  # a slow cycle's full read, older than the cache: keep the cache
        if full or query != self.query or step != self.step:
            self.series = {}
        self.query, self.step, self.window, self.end = query, step, window, at
        self.failed_first_reads = 0
        lower = at - window
        merged: dict[LabelKey, Series] = {}
        for key, old in self.series.items():
            if key not in fresh:
                kept = tuple(p for p in old.samples if p[0] >= lower)
                if kept:
                    merged[key] = Series(old.labels, kept)
        for key, new in fresh.items():
            cached = self.series.get(key)
            head = (tuple(p for p in cached.samples if lower <= p[0] < start)
                    if cached is not None else ())
            merged[key] = Series(new.labels, head + tuple(new.samples))
        self.series = merged
        return list(merged.values())

    def clear(self) -> None:
        """Forget everything (the next read is a full one)."""
        self.end = None
        self.series = {}
        self.failed_first_reads = 0
