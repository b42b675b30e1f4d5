"""The operator's own metrics (prometheus-client), served on /metrics.

Names are prefixed ``tokenscale_``; per-budget series carry ``namespace`` and ``tokenbudget``
labels (per-target ones also ``target``) and are removed when the TokenBudget is deleted.
Units: replicas, currency (``currency`` label), seconds.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUDGET = ("namespace", "tokenbudget")
_TARGET = ("namespace", "tokenbudget", "target")


class OperatorMetrics:
    """All metrics of one operator instance, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.desired_replicas = Gauge(
            "tokenscale_desired_replicas", "Replicas decided for a target.", _TARGET, registry=r
        )
        self.current_replicas = Gauge(
            "tokenscale_current_replicas", "Replicas a target has (spec.replicas).", _TARGET,
            registry=r,
        )
        self.admission = Gauge(
            "tokenscale_admission_tokens_per_second",
            "Token rate a gateway should admit to a target the budget caps below its need "
            "(tokens/s); absent while no limit applies.", _TARGET, registry=r,
        )
        self.spend_cost = Gauge(
            "tokenscale_spend_cost", "Spent this period (currency).", (*_BUDGET, "currency"),
            registry=r,
        )
        self.spend_tokens = Gauge(
            "tokenscale_spend_tokens", "Tokens served this period.", _BUDGET, registry=r
        )
        self.budget_remaining = Gauge(
            "tokenscale_budget_remaining",
            "What is left of the budget this period (unit: currency or tokens).",
            (*_BUDGET, "unit"), registry=r,
        )
        self.projected_cost = Gauge(
            "tokenscale_projected_cost",
            "Cost at period end from the demand forecast and the planned replicas (currency).",
            (*_BUDGET, "currency"), registry=r,
        )
        self.cost_per_hour = Gauge(
            "tokenscale_cost_per_hour", "Current cost rate (currency/h).",
            (*_BUDGET, "currency"), registry=r,
        )
        self.reconcile_duration = Histogram(
            "tokenscale_reconcile_duration_seconds",
            "Time to observe, plan, act and report one TokenBudget (s).", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.cycle_duration = Histogram(
            "tokenscale_cycle_duration_seconds",
            "Time of one planning cycle over all due TokenBudgets (s).", registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.cycles = Counter(
            "tokenscale_cycles", "Planning cycles run.", registry=r
        )
        self.budgets = Gauge(
            "tokenscale_tokenbudgets", "TokenBudgets served (valid and invalid).", registry=r
        )
        self.budgets_yielded = Gauge(
            "tokenscale_tokenbudgets_yielded",
            "TokenBudgets of this shard still served by an older shard of another shard "
            "configuration (while the shard count changes).", registry=r,
        )
        self.prometheus_queries = Counter(
            "tokenscale_prometheus_queries", "Queries sent to Prometheus.", ("kind",), registry=r
        )
        self.prometheus_errors = Counter(
            "tokenscale_prometheus_errors", "Failed Prometheus queries by failure kind.",
            ("kind",), registry=r,
        )
        self.prometheus_bridged = Counter(
            "tokenscale_prometheus_bridged",
            "Failed reads of a batched query bridged (the first in a row: its budgets skip "
            "that cycle), by query.", ("query",), registry=r,
        )
        self.scale_actions = Counter(
            "tokenscale_scale_actions", "Replica changes patched, by decision reason.",
            ("reason",), registry=r,
        )
        self.scale_errors = Counter(
            "tokenscale_scale_errors", "Scale patches that failed.", registry=r
        )
        self.status_patches = Counter(
            "tokenscale_status_patches",
            "Status patches by outcome (sent | skipped | deferred: a heartbeat or drift "
            "write past the cycle's allowance, still due | failed).",
            ("outcome",), registry=r,
        )
        self.events = Counter(
            "tokenscale_events",
            "Events by outcome (posted | failed | deferred: condition Events left waiting at "
            "the end of a cycle, counted per cycle | dropped: past the waiting limit).",
            ("outcome",), registry=r,
        )

    def forget_budget(self, namespace: str, name: str, targets: list[str], currency: str) -> None:
        """Drop the series of a deleted TokenBudget."""
        for target in targets:
            for gauge in (self.desired_replicas, self.current_replicas, self.admission):
                with contextlib.suppress(KeyError):
                    gauge.remove(namespace, name, target)
        for g in (self.spend_cost, self.projected_cost, self.cost_per_hour):
            with contextlib.suppress(KeyError):
                g.remove(namespace, name, currency)
        for unit in ("currency", "tokens"):
            with contextlib.suppress(KeyError):
                self.budget_remaining.remove(namespace, name, unit)
        with contextlib.suppress(KeyError):
            self.spend_tokens.remove(namespace, name)
