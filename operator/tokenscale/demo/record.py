"""What the demo observes, sample by sample, and the summary built from it.

A :class:`Recorder` reads, once per sample, the TokenBudgets (status written by the operator),
the workloads (spec.replicas as the operator set it, readyReplicas as the fleet reports) and
the Events from the API emulator, plus the offered and served tokens/s from the simulated
fleet. Times are real seconds since the demo started; ``sim_hours`` converts them into the
simulated clock.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from tokenscale.api import parse_spec
from tokenscale.demo.budgets import AdaptedBudget
from tokenscale.demo.workloads import WorkloadDemand
from tokenscale.status import parse_time
from tokenscale_testbed.apiserver import ApiServer
from tokenscale_testbed.fleet import ModelState
from tokenscale_testbed.truth import relative_error, truth_cost

TB_API = "tokenscale.dev/v1alpha1"


@dataclass
class TargetTrack:
    """Time series of one target (one workload)."""

    budget: str
    name: str  # target name == workload name in the samples
    kind: str
    source: str
    capacity: float  # tokens/s one ready replica serves (fleet, prompt + generation)
    t: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    demand: list[float] = field(default_factory=list)  # offered tokens/s (fleet)
    served: list[float] = field(default_factory=list)  # served tokens/s (fleet)
    observed: list[float | None] = field(default_factory=list)  # operator's tokens/s
    desired: list[int | None] = field(default_factory=list)
    reason: str = ""
    message: str = ""
    backlog: float = 0.0  # tokens waiting (fleet)
    #: the operator's service model ("Spec 3,192" / "Fitted 2,870") and admitted tokens/s
    service: str = ""
    #: the latency the operator reports the requests see now ("ITL 32 ms, TTFT 0.41 s")
    latency: str = ""
    admission: float | None = None
    #: requests within the SLO / all (shed ones included) since the start, and the share of
    #: the offered tokens shed at the gateway (None: not known)
    attainment: float | None = None
    shed_share: float = 0.0


def latency_text(latency: dict[str, Any]) -> str:
    """A status' ``latency`` in words: ``ITL 32 ms, TTFT 0.41 s`` (what is known of it)."""
    parts = []
    itl, ttft = latency.get("interTokenLatencySeconds"), latency.get("ttftSeconds")
    if isinstance(itl, int | float):
        parts.append(f"ITL {1000 * itl:.0f} ms")
    if isinstance(ttft, int | float):
        parts.append(f"TTFT {ttft:.2f} s")
    return ", ".join(parts)


@dataclass
class BudgetTrack:
    """Time series of one TokenBudget."""

    adapted: AdaptedBudget
    targets: list[str]
    t: list[float] = field(default_factory=list)
    phase: list[str] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    projected_cost: list[float] = field(default_factory=list)
    projected_tokens: list[float] = field(default_factory=list)
    cost_rate: list[float] = field(default_factory=list)  # currency/h (status.spend)
    token_rate: list[float] = field(default_factory=list)  # tokens/s (status)
    wall: list[float] = field(default_factory=list)  # unix time of each sample
    #: status.lastReconcileTime and status.period.start of each sample (unix s, None: unset)
    reconciled: list[float | None] = field(default_factory=list)
    period_start: list[float | None] = field(default_factory=list)
    scale_events: int = 0
    last_reason: str = ""
    last_message: str = ""

    @property
    def name(self) -> str:
        return self.adapted.name

    @property
    def namespace(self) -> str:
        return self.adapted.namespace

    @property
    def max_cost(self) -> float | None:
        value = self.adapted.manifest["spec"]["budget"].get("maxCost")
        return float(value) if value is not None else None

    @property
    def max_tokens(self) -> float | None:
        value = self.adapted.manifest["spec"]["budget"].get("maxTokens")
        return float(value) if value is not None else None

    @property
    def currency(self) -> str:
        return str(self.adapted.manifest["spec"]["budget"].get("currency", "USD"))

    def affordable(self, i: int = -1) -> float | None:
        """The pace the operator allows at sample ``i``: remaining budget / time left in the
        period, in currency/h for a cost budget, else tokens/s (None before any sample)."""
        if not self.t:
            return None
        left = max(1.0, self.adapted.period_end.timestamp() - self.wall[i])
        if self.max_cost is not None:
            return max(0.0, self.max_cost - self.cost[i]) * 3600 / left
        if self.max_tokens is not None:
            return max(0.0, self.max_tokens - self.tokens[i]) / left
        return None

    def rate(self, i: int = -1) -> float:
        """Current spend rate: currency/h for a cost budget, else tokens/s."""
        if not self.t:
            return 0.0
        return self.cost_rate[i] if self.max_cost is not None else self.token_rate[i]

    def phases_seen(self) -> list[str]:
        seen: list[str] = []
        for p in self.phase:
            if p and p not in seen:
                seen.append(p)
        return seen


def _unix(text: Any) -> float | None:
    when = parse_time(text) if isinstance(text, str) else None
    return when.timestamp() if when is not None else None


def truth_window(b: BudgetTrack) -> tuple[int, int, float] | None:
    """The samples that bound the status's accounting: ``(first, last, start)``: the last
    sample, the first one of its period and the instant (unix s) from which the status counts
    (the period start if an earlier sample was in another period, a rollover, else the first
    sample's lastReconcileTime; a budget's first cycle accounts nothing). None without a
    reconciled sample."""
    last = next((i for i in range(len(b.t) - 1, -1, -1) if b.reconciled[i] is not None), None)
    if last is None:
        return None
    period = b.period_start[last]
    first = last
    while first > 0 and b.reconciled[first - 1] is not None \
            and b.period_start[first - 1] == period:
        first -= 1
    rolled = any(p is not None and p != period for p in b.period_start[:first])
    start = b.reconciled[first]
    assert start is not None
    if rolled and period is not None:
        return first, last, period
    return first, last, start


def _status_reason(status: dict[str, Any]) -> tuple[str, str]:
    """The condition that explains the phase best: (reason, message)."""
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    order = ["BudgetExhausted", "Conflict", "MetricsAvailable", "BudgetAtRisk",
             "ScalingLimited", "Ready"]
    bad = {"BudgetExhausted": "True", "Conflict": "True", "MetricsAvailable": "False",
           "BudgetAtRisk": "True", "ScalingLimited": "True", "Ready": "False"}
    for kind in order:
        c = conditions.get(kind)
        if c is not None and c.get("status") == bad[kind]:
            return str(c.get("reason", "")), str(c.get("message", ""))
    ready = conditions.get("Ready")
    if ready is not None:
        return str(ready.get("reason", "")), str(ready.get("message", ""))
    return "", ""


class Recorder:
    """Collects samples of every budget and target."""

    def __init__(self, budgets: list[AdaptedBudget], demands: list[WorkloadDemand],
                 capacity: dict[str, float]) -> None:
        self.budgets = [BudgetTrack(b, [t["name"] for t in b.manifest["spec"]["targets"]])
                        for b in budgets]
        self.targets: dict[str, TargetTrack] = {}
        for d in demands:
            self.targets[d.spec.name] = TargetTrack(d.spec.budget, d.spec.name, d.spec.kind,
                                                    d.source, capacity[d.spec.name])
        #: the ground truth (:meth:`keep_truth`): replica logs and the fleet's models by name
        self.replica_logs: dict[str, list[tuple[float, int]]] = {}
        self.models: dict[str, ModelState] = {}
        self.first_scrape: float | None = None  # Prometheus' first sample of the fleet

    def keep_truth(self, server: ApiServer, models: list[ModelState]) -> None:
        """Keep the workloads' replica logs (on the emulator's loop) and the fleet's models,
        what :meth:`summary` measures the status against."""
        for name, t in self.targets.items():
            plural = "statefulsets" if t.kind == "StatefulSet" else "deployments"
            self.replica_logs[name] = server.replica_log("apps/v1", plural, "inference", name)
        self.models = {m.config.name: m for m in models}

    def truth(self, b: BudgetTrack) -> dict[str, Any]:
        """The status's spend against the ground truth over the same window (see
        :mod:`tokenscale_testbed.truth`): cost from the replica logs × prices × multipliers
        since the status started counting, tokens from what the fleet served since the
        period start (what ``increase()`` counts), or since Prometheus' first scrape if that
        came later (tokens served before it are in no counter increase); the relative
        errors."""
        window = truth_window(b)
        if window is None or not self.replica_logs:
            return {}
        first, last, start = window
        end = b.reconciled[last]
        period = b.period_start[last]
        assert end is not None
        base = 0.0 if start != b.reconciled[first] else b.cost[first]
        spec = parse_spec(b.adapted.manifest["spec"])
        cost = truth_cost(spec, self.replica_logs, start, end)
        tokens_from = max(period if period is not None else start, self.first_scrape or 0.0)
        served = sum(m.served_between(tokens_from, end) for name, m in self.models.items()
                     if name in b.targets)
        return {
            "truth": {"windowStart": start, "windowEnd": end, "cost": cost,
                      "statusCost": b.cost[last] - base, "tokensFrom": tokens_from,
                      "tokens": served, "statusTokens": b.tokens[last]},
            "costTruthError": relative_error(b.cost[last] - base, cost),
            "tokensTruthError": relative_error(b.tokens[last], served),
        }

    @staticmethod
    def snapshot(server: ApiServer) -> dict[str, Any]:
        """Copies of what the demo shows, read on the emulator's loop (thread-safe)."""
        events = [e for e in server.list_objects("v1", "events", "inference")
                  if e.get("reason") == "Scaled"]
        scaled: dict[str, int] = {}
        for e in events:
            name = (e.get("involvedObject") or {}).get("name", "")
            scaled[name] = scaled.get(name, 0) + int(e.get("count") or 1)
        try:
            budgets = server.list_objects(TB_API, "tokenbudgets", "inference")
        except KeyError:  # CRD not installed yet
            budgets = []
        return copy.deepcopy({
            "deployments": server.list_objects("apps/v1", "deployments", "inference"),
            "statefulsets": server.list_objects("apps/v1", "statefulsets", "inference"),
            "tokenbudgets": budgets,
            "scaled": scaled,
        })

    def add(self, t: float, wall: float, snap: dict[str, Any],
            fleet_rates: dict[str, tuple[float, float, float]],
            service: dict[str, tuple[float, float, float]] | None = None) -> None:
        """One sample at ``t`` real seconds since the start (``wall``: unix time);
        ``fleet_rates[name] = (demand, served, backlog)`` in tokens/s, tokens/s, tokens;
        ``service[name] = (requests within the SLO, requests, shed share of the tokens)``
        since the start."""
        workloads = {o["metadata"]["name"]: o for o in
                     [*snap["deployments"], *snap["statefulsets"]]}
        statuses = {o["metadata"]["name"]: o.get("status") or {} for o in snap["tokenbudgets"]}
        for track in self.budgets:
            status = statuses.get(track.name, {})
            spend = status.get("spend") or {}
            track.t.append(t)
            track.wall.append(wall)
            track.cost_rate.append(float(spend.get("costPerHour", 0.0) or 0.0))
            track.token_rate.append(float(status.get("tokensPerSecond", 0.0) or 0.0))
            track.phase.append(str(status.get("phase", "")))
            track.cost.append(float(spend.get("cost", 0.0) or 0.0))
            track.tokens.append(float(spend.get("tokens", 0.0) or 0.0))
            track.projected_cost.append(float(spend.get("projectedCost", 0.0) or 0.0))
            track.projected_tokens.append(float(spend.get("projectedTokens", 0.0) or 0.0))
            track.reconciled.append(_unix(status.get("lastReconcileTime")))
            track.period_start.append(_unix((status.get("period") or {}).get("start")))
            track.scale_events = snap["scaled"].get(track.name, 0)
            track.last_reason, track.last_message = _status_reason(status)
            by_target = {x.get("name"): x for x in status.get("targets") or []}
            for name in track.targets:
                target = self.targets.get(name)
                if target is None:
                    continue
                obj = workloads.get(name, {})
                demand, served, backlog = fleet_rates.get(name, (0.0, 0.0, 0.0))
                st = by_target.get(name, {})
                target.t.append(t)
                target.replicas.append(int((obj.get("spec") or {}).get("replicas", 0)))
                target.ready.append(int((obj.get("status") or {}).get("readyReplicas", 0) or 0))
                target.demand.append(demand)
                target.served.append(served)
                target.backlog = backlog
                rate = st.get("tokensPerSecond")
                target.observed.append(float(rate) if rate is not None else None)
                desired = st.get("desiredReplicas")
                target.desired.append(int(desired) if desired is not None else None)
                target.reason = str(st.get("reason", ""))
                target.message = str(st.get("message", ""))
                model = st.get("serviceModel") or {}
                target.service = (f"{model.get('source', '')} {model['capacityWithinSlo']:,.0f}"
                                  if model.get("capacityWithinSlo") is not None else "")
                target.latency = latency_text(st.get("latency") or {})
                admitted = (st.get("admission") or {}).get("tokensPerSecond")
                target.admission = float(admitted) if admitted is not None else None
                within, requests, shed = (service or {}).get(name, (0.0, 0.0, 0.0))
                target.attainment = within / requests if requests > 0 else None
                target.shed_share = shed

    # ------------------------------------------------------------------ summary

    def summary(self) -> list[dict[str, Any]]:
        """Per TokenBudget: final phase, spend, budget, scale events, replicas over time."""
        out = []
        for b in self.budgets:
            unit = "cost" if b.max_cost is not None else "tokens"
            final_phase = b.phase[-1] if b.phase else ""
            entry: dict[str, Any] = {
                "namespace": b.namespace, "name": b.name, "mode": b.adapted.mode,
                "phase": final_phase, "phasesSeen": b.phases_seen(),
                "reason": b.last_reason, "message": b.last_message,
                "unit": b.currency if unit == "cost" else "tokens",
                "spend": (b.cost[-1] if b.cost else 0.0) if unit == "cost"
                else (b.tokens[-1] if b.tokens else 0.0),
                "budget": b.max_cost if unit == "cost" else b.max_tokens,
                "spendCost": b.cost[-1] if b.cost else 0.0,
                "spendTokens": b.tokens[-1] if b.tokens else 0.0,
                "maxCost": b.max_cost, "maxTokens": b.max_tokens,
                "projectedCost": b.projected_cost[-1] if b.projected_cost else 0.0,
                "projectedTokens": b.projected_tokens[-1] if b.projected_tokens else 0.0,
                "periodEnd": b.adapted.period_end.isoformat(),
                "scaleEvents": b.scale_events,
                "adapted": b.adapted.changes,
                **self.truth(b),
                "targets": [],
            }
            for name in b.targets:
                t = self.targets.get(name)
                if t is None:
                    continue
                changes = [[round(t.t[0], 1), t.replicas[0]]] if t.t else []
                for i in range(1, len(t.t)):
                    if t.replicas[i] != t.replicas[i - 1]:
                        changes.append([round(t.t[i], 1), t.replicas[i]])
                entry["targets"].append({
                    "name": name, "kind": t.kind, "demand": t.source,
                    "finalReplicas": t.replicas[-1] if t.replicas else None,
                    "minReplicasSeen": min(t.replicas) if t.replicas else None,
                    "maxReplicasSeen": max(t.replicas) if t.replicas else None,
                    "replicaChanges": len(changes) - 1 if changes else 0,
                    "reason": t.reason, "message": t.message,
                    "sloAttainment": t.attainment, "shedShare": t.shed_share,
                    "replicas": changes,
                })
            out.append(entry)
        return out
