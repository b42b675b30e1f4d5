"""One failed read of a batched query is bridged: its budgets skip that cycle.

Each batched query answers for every budget of a shard at once, so one timeout of a loaded
Prometheus used to flip MetricsAvailable on all of them, and back on the next cycle: a status
write and an Event per budget, twice (at 10,000 budgets on 4 shards, 1,787 status patches and
3,289 Events per cycle, BENCHMARKS.md), which loaded the API server and the operator while
Prometheus was already slow. A single failed read among good ones is load, not an outage: the
budgets that read that Prometheus skip the cycle (their replicas, status and memory stay as
they are; the next cycle accounts the whole time since the last one), the failure is logged
and counted (``tokenscale_prometheus_errors_total``, ``tokenscale_prometheus_bridged_total``).
A second failure in a row is reported as before (MetricsAvailable=False, the targets held,
the fallback clock started): an outage is announced at most one interval later than before.
Only failures of the query itself are bridged (Timeout, HTTPError, BadResponse, Unreachable),
never an answer's content (NaN, duplicate series, Empty), which is what Prometheus holds.

Planning the bridged cycle on the last good answers instead was tried and dropped: the
one-interval-old samples, read from a later ``now``, extrapolate a rising trend further, so a
target could scale up on data it had already been planned on. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenscale.adapters.prometheus import MetricFailure, Series

#: The failure kinds of a query (not of its answer's content) that one good read bridges.
BRIDGED_KINDS = frozenset({"Timeout", "HTTPError", "BadResponse", "Unreachable"})


@dataclass
class Bridge:
    """Which batched queries (by a key naming the query, e.g. "queue") answered on their
    last read."""

    good: set[str] = field(default_factory=set)

    def bridges(self, key: str, answer: list[Series] | MetricFailure) -> bool:
        """Record this read of ``key``; whether it is a failure to bridge (a failure to ask,
        right after a good read)."""
        if isinstance(answer, list):
            self.good.add(key)
            return False
        bridged = answer.kind in BRIDGED_KINDS and key in self.good
        self.good.discard(key)
        return bridged

    def keep_only(self, keys: set[str]) -> None:
        """Forget the queries not asked any more (another period start, no OpenCost price)."""
        self.good &= keys
