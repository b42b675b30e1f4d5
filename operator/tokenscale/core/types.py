"""Plain value types the decision core takes and returns.

The core is pure: everything it knows arrives in these values (the parsed spec from
:mod:`tokenscale.api`, an :class:`Observation`, the :class:`Memory` carried in status, and
``now``), and everything it decides leaves in a :class:`Plan`. Times are timezone-aware
``datetime`` values; rates are tokens/s; costs are in the budget's currency; cost rates
currency/h.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple

from tokenscale.api import ConditionType, ModelSource, Phase, Reason

#: Status of a condition, as Kubernetes spells it.
ConditionStatus = Literal["True", "False", "Unknown"]

#: Failure kinds of a metric read, as reported by the Prometheus adapter.
METRIC_FAILURES = (
    "Unreachable",  # connection refused / DNS / TLS
    "Timeout",  # no answer within prometheus.timeoutSeconds
    "HTTPError",  # non-2xx answer
    "BadResponse",  # not JSON / not the Prometheus API shape
    "Empty",  # the query returned no series for this target
    "NotANumber",  # NaN sample
    "Infinite",  # +Inf / -Inf sample
    "MultipleSeries",  # several series where one was expected
    #: no tokensPerReplicaPerSecond and no latency histograms seen yet: the capacity within
    #: the SLO is unknown, so the target cannot be sized (held as in an outage)
    "NoServiceModel",
    "Stale",  # newest sample older than the freshness limit
    "NotAllowed",  # spec.prometheus.url not on TOKENSCALE_PROMETHEUS_ALLOWED_URLS: no request
    "TooManySeries",  # a budget's own query answered more series than allowed
    "TooManyPoints",  # ... more points than allowed
    "TooLarge",  # ... more bytes than allowed
)


@dataclass(frozen=True)
class TargetObservation:
    """What was observed of one target this cycle.

    ``token_rate_samples`` are ``(time, tokens/s)`` pairs over the forecast window, oldest
    first, the last one the current rate. ``metrics_error`` is ``None`` when the metrics are
    usable, else one of :data:`METRIC_FAILURES` (then the samples must not be trusted).
    ``conflict`` names another autoscaler on the same workload (e.g. ``"HorizontalPodAutoscaler
    llama-8b"``), ``target_error`` a problem with the workload itself (missing, wrong kind).
    """

    current_replicas: int
    ready_replicas: int
    token_rate_samples: tuple[tuple[datetime, float], ...] = ()
    queue_length: float = 0.0  # waiting requests (vllm:num_requests_waiting summed)
    #: False when none of the target's pods exports the queue series (it reads as 0 then)
    queue_known: bool = True
    tokens_per_request: float | None = None  # mean tokens per request, to size the queue
    metrics_error: str | None = None
    #: what is behind ``metrics_error`` in words, e.g. the engine series none of the
    #: target's pods exports (conditions quote it)
    metrics_detail: str | None = None
    conflict: str | None = None
    target_error: str | None = None
    quality_samples: tuple[tuple[float, float], ...] = ()  # (tokens/s, quality) for the fit
    #: (tokens/s per ready replica, mean inter-token latency in s) per pod and time step, from
    #: the engine's latency histograms, for the service model's fit; tokens/s counted as the
    #: target's token rate counts them (its own tokenRateQuery's, when it has one)
    latency_samples: tuple[tuple[float, float], ...] = ()
    #: ``(time, tokens/s)`` arriving at a gateway in front of the target (its arrival counter,
    #: when one is configured), oldest first: the demand before admission sheds or the engine
    #: queues any of it. Empty: the demand is estimated from the served rate and the queue.
    arrival_rate_samples: tuple[tuple[datetime, float], ...] = ()
    #: the latency the target's requests see now (mean over the last rate window, s), from
    #: the engine's histograms: above the SLO it is an urgent signal. None: not read
    recent_itl_seconds: float | None = None
    recent_ttft_seconds: float | None = None


@dataclass(frozen=True)
class Observation:
    """Everything read from the world this cycle, per target name."""

    targets: dict[str, TargetObservation]
    #: Tokens served since period start (Prometheus ``increase()``), None if unknown.
    tokens_in_period: float | None = None


@dataclass(frozen=True)
class RecommendationEntry:
    """A past recommendation (for scale-down stabilization)."""

    target: str
    time: datetime
    replicas: int


#: half hours of a day in a :class:`DemandProfile`
PROFILE_SLOTS = 48


@dataclass(frozen=True)
class DemandProfile:
    """The learned demand of one target by local half hour (see :mod:`tokenscale.core.outlook`).

    ``slots``: mean served tokens/s per local half hour (index 0 = 00:00-00:30), negative where
    never observed; ``level``: today's demand / the profile; ``slot_start`` (tz-aware),
    ``slot_tokens`` and ``slot_seconds``: the half hour being accumulated.
    """

    slots: tuple[float, ...] = (-1.0,) * PROFILE_SLOTS
    level: float = 1.0
    slot_start: datetime | None = None
    slot_tokens: float = 0.0
    slot_seconds: float = 0.0
    #: replicas the planner runs / the need of the mean demand (bursts, stabilization), as
    #: the ratio of their sums over about a day (:func:`tokenscale.core.outlook.learn_overhead`)
    overhead: float = 1.0
    #: that ratio's denominator: the need (replicas) x seconds summed, fading over a day;
    #: 0: nothing learned yet
    overhead_need: float = 0.0


@dataclass(frozen=True)
class ForecastScore:
    """How well one target's trend forecast and level of now have done lately, and the pair
    not scored yet (:mod:`tokenscale.core.level`).

    ``due``: the instant the pending forecasts are for (None: none pending); ``trend`` and
    ``level``: their values (tokens/s); ``trend_error`` and ``level_error``: the
    exponential averages of their absolute errors (tokens/s); ``scored``: pairs scored so far
    (at most 1000).
    """

    due: datetime | None = None
    trend: float = 0.0
    level: float = 0.0
    trend_error: float = 0.0
    level_error: float = 0.0
    scored: int = 0


@dataclass(frozen=True)
class Memory:
    """State carried between cycles in the TokenBudget's status (lossless on restart)."""

    period_start: datetime | None = None
    spend_cost: float = 0.0  # currency spent in the current period
    spend_tokens: float = 0.0  # tokens served in the current period
    last_accounted: datetime | None = None  # end of the last cost integration
    recommendations: tuple[RecommendationEntry, ...] = ()
    metrics_unavailable_since: datetime | None = None
    last_scale_time: dict[str, datetime] = field(default_factory=dict)
    #: per target: the learned time-of-day demand, for the projection
    demand_profiles: dict[str, DemandProfile] = field(default_factory=dict)
    #: per target: the waiting requests seen at ``last_accounted`` (queue growth = arrivals
    #: the served rate does not show)
    queues: dict[str, float] = field(default_factory=dict)
    #: per target: the admission rate (tokens/s) published at ``last_accounted``; a served
    #: rate at that limit hides the demand above it (censored)
    admissions: dict[str, float] = field(default_factory=dict)
    #: per target: the price per replica-hour (currency/h, before the multiplier) it was
    #: planned with at ``last_accounted``: the time since is charged at it
    prices: dict[str, float] = field(default_factory=dict)
    #: per target: the trend's and the level's recent errors and the pair of forecasts not
    #: scored yet (:mod:`tokenscale.core.level`)
    forecast_scores: dict[str, ForecastScore] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFit:
    """Quality model P = a + b·ln(tokens/s) used for a target."""

    a: float
    b: float
    r2: float | None = None
    samples: int = 0
    source: ModelSource = "Default"


@dataclass(frozen=True)
class ServiceFit:
    """What one ready replica serves within the target's SLO (tokens/s), and where it comes
    from: the spec's tokensPerReplicaPerSecond, or fitted from the latency histograms."""

    capacity_within_slo: float
    r2: float | None = None
    samples: int = 0
    source: Literal["Spec", "Fitted", "Observed", "Unknown"] = "Spec"
    #: the fitted ITL at no load (s) and raw capacity (tokens/s), for the message
    itl_floor_seconds: float | None = None
    raw_capacity: float | None = None


@dataclass(frozen=True)
class Decision:
    """What to do with one target, why (a CamelCase reason of DESIGN.md), and the numbers."""

    replicas: int
    reason: Reason
    message: str
    scale: bool = False  # True when replicas differ from current and the plan may patch
    tokens_per_second: float | None = None
    forecast_tokens_per_second: float | None = None
    queue_length: float | None = None
    cost_per_hour: float | None = None  # at the decided replicas, currency/h
    model: ModelFit | None = None
    #: Demand-driven replicas within [min, max], before behaviour and budget (None on hold).
    needed_replicas: int | None = None
    #: When the budget caps the target below its need: the token rate (tokens/s) its
    #: affordable ready replicas serve within the SLO, for a gateway to admit (None: no limit).
    admission_tokens_per_second: float | None = None
    service_model: ServiceFit | None = None
    #: The share of the capacity within the SLO the need was sized at (None on hold).
    planned_utilization: float | None = None


@dataclass(frozen=True)
class Spend:
    """Spending figures for status. Projections are at period end: ``projected_*`` from the
    demand forecast and the planned replicas, paced by the budget; ``demand_*`` the same at
    the forecast demand without the budget's caps; ``run_rate_*`` spend so far + the rate of
    now × the time left (the projection of version 1, kept for comparison)."""

    cost: float
    tokens: float
    projected_cost: float
    projected_tokens: float
    cost_per_hour: float
    cost_per_million_tokens: float | None
    demand_cost: float | None = None
    demand_tokens: float | None = None
    run_rate_cost: float | None = None
    run_rate_tokens: float | None = None


class Lane(NamedTuple):
    """One target as the projection (:mod:`tokenscale.core.outlook`) runs it."""

    price: float  # currency/h per replica before the multiplier
    replicas: int  # what runs now: the decision (Active), else the current replicas
    floor: int  # replicas the budget never cuts
    low: int  # minReplicas
    high: int  # maxReplicas
    per_replica: float  # tokens/s one replica is planned for; 0: not steered (keeps replicas)
    capacity: float  # tokens/s one replica serves (caps the served tokens); 0: no cap
    demand: float  # current demand, tokens/s
    profile: DemandProfile | None


@dataclass(frozen=True)
class BindingLimit:
    """The budget limit that binds (the one projected to be used the most, cost on a tie),
    in its unit (the currency or ``tokens``): what the Spend, Budget and Projected columns
    show."""

    kind: Literal["Cost", "Tokens"]
    limit: float
    unit: str
    spent: float
    projected: float


@dataclass(frozen=True)
class ConditionValue:
    """A condition as decided by the core (the adapter adds lastTransitionTime)."""

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """The output of one planning cycle."""

    decisions: dict[str, Decision]
    memory: Memory
    spend: Spend
    period_start: datetime
    period_end: datetime
    phase: Phase
    conditions: tuple[ConditionValue, ...] = ()
    #: Cost rate (currency/h) the rest of the cost budget allows; None without maxCost.
    affordable_cost_per_hour: float | None = None
    #: Token rate (tokens/s) the rest of the token budget allows; None without maxTokens.
    affordable_tokens_per_second: float | None = None
    #: Price multiplier of the pricing schedule at ``now``.
    price_multiplier: float = 1.0
    #: Final cost of the period that closed since the last plan (rollover), else None.
    previous_period_cost: float | None = None
    #: The limit that binds, in its unit (None: the spec sets no limit).
    binding: BindingLimit | None = None
    #: The targets as the projection ran them (to project to another instant).
    lanes: tuple[Lane, ...] = ()
