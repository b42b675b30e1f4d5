"""One failed read of a batched query is bridged with its last good answer.

Each batched query answers for every budget of a shard at once, so one timeout of a loaded
Prometheus used to flip MetricsAvailable on all of them, and back on the next cycle: a status
write and an Event per budget, twice (at 10,000 budgets on 4 shards, 1,787 status patches and
3,289 Events per cycle, BENCHMARKS.md), which loaded the API server and the operator while
Prometheus was already slow. A single failed read among good ones is load, not an outage: the
planner goes on with the previous cycle's answer (one interval old, well within the staleness
limit that marks a pod's samples Stale), the failure is logged and counted
(``tokenscale_prometheus_errors_total``, ``tokenscale_prometheus_bridged_total``). A second
failure in a row is reported as before (MetricsAvailable=False, the targets held): an outage is
never hidden for more than one interval. Only failures of the query itself are bridged
(Timeout, HTTPError, BadResponse, Unreachable), never an answer's content (NaN, duplicate
series, Empty), which is what Prometheus holds. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenscale.adapters.prometheus import MetricFailure, Series

#: The failure kinds of a query (not of its answer's content) that one good answer bridges.
BRIDGED_KINDS = frozenset({"Timeout", "HTTPError", "BadResponse", "Unreachable"})


@dataclass
class LastGood:
    """The last good answer of each batched query (by a key naming the query, e.g. "queue")
    and which ones failed on their last read."""

    answers: dict[str, list[Series]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)

    def answer(self, key: str, answer: list[Series] | MetricFailure
               ) -> tuple[list[Series] | MetricFailure, bool]:
        """This read's answer for ``key``, and whether it is the last good one standing in
        for a failure (only when the read before this one was good)."""
        if isinstance(answer, list):
            self.answers[key] = answer
            self.failing.discard(key)
            return answer, False
        bridged = (answer.kind in BRIDGED_KINDS and key in self.answers
                   and key not in self.failing)
        self.failing.add(key)
        if bridged:
            return self.answers[key], True
        return answer, False

    def keep_only(self, keys: set[str]) -> None:
        """Forget the queries not asked any more (another period start, no OpenCost price)."""
        for key in set(self.answers) - keys:
            del self.answers[key]
        self.failing &= keys
