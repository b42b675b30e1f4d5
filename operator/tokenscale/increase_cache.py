"""The tokens served since the period's start, kept between cycles, so each cycle asks
Prometheus for the tokens of the last interval only.

Accounting reads the tokens each pod served since the budget's period started (DESIGN.md step
1: ``increase()`` of the token counters since period start). Asked every cycle, that query
makes Prometheus read every sample since the period's start: at a 15 s scrape, 5,760 samples
per series per cycle for a Day, 172,800 for a Month, for every pod of the shard. An
:class:`IncreaseCache` keeps each series' total and asks only for ``increase()`` over the
time since its last read, adding it on; a full read since the period's start every
:data:`FULL_READ_SECONDS` keeps it authoritative (counter resets, late scrapes, the small
extrapolation differences between one long window and many short ones: measured against a
full read in the tests).

A full read is also made on the first cycle, for another query (another namespace set, other
engines), after a failed read (so nothing is counted twice or missed: a failed short read's
interval is covered by the next full one), and when a cycle is older than the last read. A
series missing from a short read keeps its total (a pod that stopped still served its tokens,
as the full ``increase()`` over the period still shows it while its samples are in range).
Pure: no I/O, no clock; times are unix seconds of the operator's clock, tokens are counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from tokenscale.adapters.prometheus import Series
from tokenscale.range_cache import LabelKey, label_key

#: A full read of the period so far at least this often (s).
FULL_READ_SECONDS = 3600.0


class Read(NamedTuple):
    """One read to make: the ``increase()`` range (whole seconds, at least 1), whether it
    counts from the period's start (``full``), else the kept read's end it counts from."""

    span: int
    full: bool
    after: float | None = None


@dataclass
class IncreaseCache:
    """Per series, the tokens served from ``period_start`` to ``end`` (unix s)."""

    query: str = ""
    period_start: float = 0.0
    end: float | None = None  # the newest read (None: nothing kept, read in full)
    full_at: float = 0.0  # the newest full read
    totals: dict[LabelKey, Series] = field(default_factory=dict)

    def read_for(self, query: str, period_start: float, at: float) -> Read:
        """The read to make at ``at``: since the last read when one of the same query and
        period is kept, newer than the last full read by less than FULL_READ_SECONDS; else
        since ``period_start``."""
        full = max(1, int(at - period_start))
        if (self.end is None or query != self.query or period_start != self.period_start
                or at <= self.end or at - self.full_at >= FULL_READ_SECONDS):
            return Read(full, True)
        return Read(min(full, max(1, int(at - self.end))), False, self.end)

    def merge(self, query: str, period_start: float, at: float, read: Read,
              answer: list[Series]) -> list[Series]:
        """Put the answer of ``read`` made at ``at`` in; returns each series' tokens since
        ``period_start`` as one sample. A non-finite value is passed on as read and forces a
        full read next time. A read overtaken by a newer one (cycles overlap) changes
        nothing: a short one returns the kept totals (at their own time), a full one its
        own answer."""
        if read.full and self.end is not None and at < self.end and query == self.query:
            return answer
        if not read.full and read.after != self.end:
            return self.kept()
        if read.full or query != self.query or period_start != self.period_start:
            self.totals = {}
            self.full_at = at
        self.query, self.period_start, self.end = query, period_start, at
        broken = False
        for series in answer:
            if not series.samples:
                continue
            value = series.samples[-1][1]
            key = label_key(series.labels)
            if not math.isfinite(value):
                broken = True
                self.totals[key] = Series(series.labels, ((at, value),))
                continue
            kept = self.totals.get(key)
            before = kept.samples[-1][1] if kept is not None else 0.0
            self.totals[key] = Series(series.labels, ((at, before + value),))
        out = self.kept()
        if broken:
            self.clear()
        return out

    def kept(self) -> list[Series]:
        """Each kept series' tokens since the period's start (one sample at ``end``)."""
        return list(self.totals.values())

    def clear(self) -> None:
        """Forget everything (the next read is a full one)."""
        self.end = None
        self.totals = {}
