"""TokenBudget API (`tokenbudgets.tokenscale.dev/v1alpha1`) as pydantic v2 models.

Field names are camelCase on the wire (aliases) and snake_case in Python. The CRD in
``crds/`` is generated from these models (see :mod:`tokenscale.crd`), and a test keeps the
committed file equal to the generated one.

Units: costs are in the budget's currency (``budget.currency``), rates per hour
(``costPerReplicaHour``: currency/h per replica); token rates in tokens/s; durations in
seconds; timestamps are RFC 3339 strings in status.
"""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "tokenscale.dev"
VERSION = "v1alpha1"
KIND = "TokenBudget"
PLURAL = "tokenbudgets"
SINGULAR = "tokenbudget"
SHORT_NAMES = ["tb"]

#: Upper bound on targets per TokenBudget; bounds validation cost and status size.
MAX_TARGETS = 32
#: Upper bound on replicas of one target.
MAX_REPLICAS = 10_000
#: Upper bound on kept recommendations (all targets together).
MAX_RECOMMENDATIONS = 512

Mode = Literal["Active", "DryRun"]
Period = Literal["Hour", "Day", "Week", "Month"]
OnExhausted = Literal["ScaleToMinimum", "Hold"]
Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
WEEKDAYS: tuple[Weekday, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
Phase = Literal["Active", "DryRun", "BudgetAtRisk", "BudgetExhausted", "Degraded", "Invalid"]
ConditionType = Literal[
    "Ready",
    "SpecValid",
    "MetricsAvailable",
    "BudgetAtRisk",
    "BudgetExhausted",
    "ScalingLimited",
    "Conflict",
]
Reason = Literal[
    "DemandDriven",
    "WithinTolerance",
    "ScaleUpLimited",
    "StabilizingScaleDown",
    "BudgetCapped",
    "BudgetExhausted",
    "DiminishingReturns",
    "MinReplicas",
    "MaxReplicas",
    "MetricsUnavailableHold",
    "SloBreach",
    "FallbackReplicas",
    "DryRun",
    "Conflict",
]
REASONS: tuple[str, ...] = Reason.__args__  # type: ignore[attr-defined]
ModelSource = Literal["Spec", "Fitted", "Default"]
#: The serving engine whose metric names a target is read with (README, "Engines").
Engine = Literal["vllm", "sglang", "tgi", "custom"]
#: Where a target's price per replica-hour comes from.
CostSource = Literal["Spec", "OpenCost"]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CLOCK_TIME = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
CURRENCY = r"^[A-Z]{3}$"
#: Printable ASCII without spaces or quotes: no unicode/bidi spoofing in `kubectl describe`.
HTTP_URL = r"^https?://[!#-&(-_a-~]+$"


def _camel(name: str) -> str:
    return to_camel(name)


class _Model(BaseModel):
    """Base: camelCase aliases, population by either name, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=_camel),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        strict=True,  # JSON types as sent: "1" is not an integer (the CRD agrees)
    )


# ----------------------------------------------------------------------------------- spec


class BudgetSpec(_Model):
    """How much may be spent per calendar period."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "has(self.maxCost) || has(self.maxTokens)",
        "message": "at least one of maxCost or maxTokens must be set",
    }]})

    period: Period = Field("Day", description="Calendar period the budget renews on.")
    time_zone: str = Field(
        "UTC",
        max_length=64,
        description="IANA time zone that periods and price windows are computed in.",
    )
    max_cost: float | None = Field(
        None, gt=0, le=1e9, description="Currency units per period (maxCost and/or maxTokens)."
    )
    max_tokens: int | None = Field(
        None, gt=0, le=10**15, description="Tokens (input + output) per period."
    )
    currency: str = Field("USD", pattern=CURRENCY, description="ISO 4217 currency code.")
    on_exhausted: OnExhausted = Field(
        "ScaleToMinimum", description="What to do with the targets once the budget is spent."
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetSpec:
        if self.max_cost is None and self.max_tokens is None:
            raise ValueError("at least one of maxCost or maxTokens must be set")
        return self


class PlanningSpec(_Model):
    """Capacity-planning knobs."""

    interval_seconds: int = Field(30, ge=5, le=3600, description="Seconds between decisions.")
    target_utilization: float = Field(
        0.8, gt=0, le=1,
        description="Planned share of the capacity within the SLO in use; with tolerance it "
        "sets the load at which a replica is added, targetUtilization x (1 + tolerance) (where "
        "the demand is quieter than the tolerance the plan moves up toward it).")
    headroom: float = Field(
        0.0, ge=0, le=10,
        description="Optional floor under the learned margin: at least this share of the "
        "demand is provisioned on top of it (the margin is z x the demand's spread, z from "
        "slo.attainment).")
    forecast_window_seconds: int = Field(
        600, ge=60, le=86400, description="Window (s) the demand trend is fitted over."
    )
    tolerance: float = Field(
        0.1, ge=0, lt=1,
        description="Relative change of need below which nothing is scaled, at most: the band "
        "in force narrows to the demand's noise (its margin relative to the demand) when that "
        "is smaller.")
    scale_down_stabilization_seconds: int = Field(
        300, ge=0, le=86400, description="Scale down only to the highest recent recommendation."
    )
    min_marginal_value: float = Field(
        0,
        ge=0,
        le=1e6,
        description="Stop adding replicas whose quality gain per currency unit is below this.",
    )


class PriceWindow(_Model):
    """A weekly time window with a price multiplier (e.g. cheaper weekends)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "self.start < self.end",
        "message": "start must be before end",
    }]})

    days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS), min_length=1, max_length=7,
        description="Weekdays the window applies to.",
    )
    start: str = Field("00:00", pattern=CLOCK_TIME, description="Local start time HH:MM.")
    end: str = Field("24:00", pattern=CLOCK_TIME, description="Local end time HH:MM (24:00 ok).")
    multiplier: float = Field(..., gt=0, le=100, description="Factor on costPerReplicaHour.")

    @model_validator(mode="after")
    def _ordered(self) -> PriceWindow:
        if self.start >= self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        return self


class PricingSpec(_Model):
    """Time-of-day price multipliers; the first matching window wins, otherwise 1."""

    schedule: list[PriceWindow] = Field(default_factory=list, max_length=32)


class FallbackSpec(_Model):
    """What to do when metrics are missing for longer than afterSeconds."""

    after_seconds: int = Field(120, ge=0, le=86400, description="Seconds of holding first.")
    replicas: int | None = Field(
        None, ge=0, le=MAX_REPLICAS,
        description="Replicas per target after the hold (clamped to [min, max] and the budget); "
        "unset keeps holding.",
    )


class PrometheusSpec(_Model):
    """Optional per-budget Prometheus override."""

    url: str | None = Field(None, max_length=2048, pattern=HTTP_URL, description="Base URL.")
    timeout_seconds: float = Field(5, gt=0, le=60, description="Per-query timeout (s).")


class ScaleTargetRef(_Model):
    """The workload to scale; must be in the TokenBudget's namespace."""

    api_version: Literal["apps/v1"] = Field("apps/v1", description="API version of the target.")
    kind: Literal["Deployment", "StatefulSet"] = Field("Deployment")
    name: str = Field(..., min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)


class PerformanceSpec(_Model):
    """Log-linear quality model P = a + b·ln(tokens/s)."""

    a: float | None = Field(None, ge=-1e6, le=1e6, description="Intercept (quality units).")
    b: float | None = Field(None, ge=0, le=1e6, description="Quality per e-fold of tokens.")
    query: str = Field(
        "", max_length=4096, description="PromQL of a quality signal to fit a and b from."
    )


class MetricsSpec(_Model):
    """Overrides of the engine preset's queries (PromQL; must keep a `pod` label); with
    engine custom, tokenRateQuery is required and these are the whole read."""

    token_rate_query: str = Field("", max_length=4096, description="tokens/s by pod.")
    queue_query: str = Field("", max_length=4096, description="Waiting requests by pod.")
    arrival_rate_query: str = Field(
        "", max_length=4096,
        description="Optional: a gateway's arriving tokens/s for this target (summed over the "
        "series it returns), the demand before admission sheds or the engine queues any of "
        "it. Without it the arrivals are estimated from the served rate and the queue.")


class SloSpec(_Model):
    """The service level a target buys, counted per request as serving benchmarks do: a
    request meets it when its time to first token and its mean inter-token latency are both
    within bounds; ``attainment`` is the share of requests that must meet it."""

    ttft_seconds: float = Field(
        2.0, gt=0, le=600, description="Time to first token (s), queueing included."
    )
    inter_token_latency_seconds: float = Field(
        0.05, gt=0, le=10, description="Mean time between output tokens of a request (s)."
    )
    attainment: float = Field(
        0.99, gt=0, le=1, description="Share of requests that must meet both bounds."
    )


class TargetSpec(_Model):
    """One inference workload under the budget."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "self.minReplicas <= self.maxReplicas",
        "message": "minReplicas must not exceed maxReplicas",
        "fieldPath": ".minReplicas",
    }, {
        "rule": "!has(self.engine) || self.engine != 'custom' || (has(self.metrics) && "
                "has(self.metrics.tokenRateQuery) && self.metrics.tokenRateQuery != '')",
        "message": "engine custom needs metrics.tokenRateQuery",
        "fieldPath": ".engine",
    }]})

    name: str = Field(..., min_length=1, max_length=63, pattern=DNS_LABEL)
    scale_target_ref: ScaleTargetRef
    min_replicas: int = Field(1, ge=0, le=MAX_REPLICAS)
    max_replicas: int = Field(..., ge=1, le=MAX_REPLICAS)
    tokens_per_replica_per_second: float | None = Field(
        None, gt=0, le=1e7,
        description="Throughput of one ready replica within the SLO (tokens/s). Optional: "
        "without it the capacity is fitted from the engine's latency histograms "
        "(status.targets[].serviceModel); until a fit is good, the highest load per replica "
        "seen within the SLO is used, and with no latency seen yet the target is held.")

    @property
    def capacity(self) -> float:
        """tokensPerReplicaPerSecond, 0 when not set (the planner resolves it first)."""
        return self.tokens_per_replica_per_second or 0.0
    cost_per_replica_hour: float = Field(
        ..., gt=0, le=1e5, description="Price of one replica (currency/h)."
    )
    cold_start_seconds: int = Field(60, ge=0, le=7200, description="Request to Ready (s).")
    slo: SloSpec = Field(default_factory=SloSpec, description="The service level bought.")
    weight: float = Field(1, gt=0, le=1000, description="Relative value of this model.")
    performance: PerformanceSpec = Field(default_factory=PerformanceSpec)
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    engine: Engine = Field(
        "vllm", description="Serving engine whose metric names are read: vllm, sglang, tgi, "
        "or custom (metrics.tokenRateQuery and queueQuery).")
    cost_source: CostSource = Field(
        "Spec", description="Spec: costPerReplicaHour; OpenCost: the node prices OpenCost "
        "exports to Prometheus times what one replica requests (costPerReplicaHour when "
        "they are missing).")

    @model_validator(mode="after")
    def _bounds(self) -> TargetSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must not exceed maxReplicas "
                f"({self.max_replicas})"
            )
        if self.engine == "custom" and not self.metrics.token_rate_query:
            raise ValueError("engine custom needs metrics.tokenRateQuery")
        return self


class TokenBudgetSpec(_Model):
    """`spec` of a TokenBudget."""

    mode: Mode = Field("Active", description="DryRun decides and reports, never patches.")
    budget: BudgetSpec
    planning: PlanningSpec = Field(default_factory=PlanningSpec)
    pricing: PricingSpec = Field(default_factory=PricingSpec)
    fallback: FallbackSpec = Field(default_factory=FallbackSpec)
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec)
    targets: list[TargetSpec] = Field(..., min_length=1, max_length=MAX_TARGETS)

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, targets: list[TargetSpec]) -> list[TargetSpec]:
        names = [t.name for t in targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate target name(s) {dupes}")
        refs = [(t.scale_target_ref.kind, t.scale_target_ref.name) for t in targets]
        dref = sorted({f"{k}/{n}" for k, n in refs if refs.count((k, n)) > 1})
        if dref:
            raise ValueError(f"several targets scale the same workload {dref}")
        return targets


# --------------------------------------------------------------------------------- status


class Condition(_Model):
    """A Kubernetes-style condition."""

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(..., max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: str = Field(..., description="RFC 3339.")
    observed_generation: int | None = Field(None, ge=0)


class PeriodStatus(_Model):
    """Current budget period [start, end) as RFC 3339 timestamps."""

    start: str
    end: str


class SpendStatus(_Model):
    """Spending so far in the period and where it is heading."""

    cost: float = Field(0, description="Spent this period (currency).")
    tokens: float = Field(0, description="Tokens served this period.")
    projected_cost: float = Field(
        0, description="Cost at period end: the demand forecast at the planned replicas and "
                       "prices, paced by the budget.")
    projected_tokens: float = Field(
        0, description="Tokens at period end: the demand forecast up to the planned capacity, "
                       "paced by the budget.")
    cost_per_hour: float = Field(0, description="Current cost rate (currency/h).")
    cost_per_million_tokens: float | None = Field(
        None, description="Cost per 1e6 tokens this period."
    )


class ModelStatus(_Model):
    """The quality model in use for a target."""

    a: float
    b: float
    r2: float | None = None
    samples: int = 0
    source: ModelSource = "Default"


class ServiceModelStatus(_Model):
    """What one ready replica of a target serves within its SLO, and where that comes from."""

    capacity_within_slo: float = Field(
        ..., ge=0, description="Tokens/s one ready replica serves within the SLO."
    )
    r2: float | None = Field(None, description="r squared of the fit (Fitted).")
    samples: int = Field(0, ge=0, description="(tokens/s, latency) samples of the fit.")
    source: Literal["Spec", "Fitted", "Observed", "Unknown"] = Field(
        "Spec", description="Spec: tokensPerReplicaPerSecond; Fitted: the latency histograms; "
        "Observed: no spec and no good fit yet, the highest load per replica seen within the "
        "SLO (a lower bound); Unknown: nothing seen yet (the target is held)."
    )


class LatencyStatus(_Model):
    """The latency a target's requests see now, to read against its slo: the means of the
    engines' histograms over the operator's rate window, averaged over the pods."""

    inter_token_latency_seconds: float | None = Field(
        None, ge=0, description="Mean inter-token latency (s); none while no request decodes.")
    ttft_seconds: float | None = Field(
        None, ge=0, description="Mean time to first token (s); none while no request starts, "
        "or for an engine without the histogram (TGI).")


class AdmissionStatus(_Model):
    """What a gateway should let through to a target the budget holds below its need."""

    tokens_per_second: float = Field(
        ..., ge=0, description="Token rate the affordable replicas serve within the SLO."
    )
    reason: str = Field(..., description="Why admission is limited (the decision's reason).")


class TargetMetricsStatus(_Model):
    """Which engine preset and metric names a target was read with."""

    engine: Engine
    series: list[str] = Field(
        default_factory=list, max_length=16,
        description="The metric names (or spec fields of the target's own queries) read.")
    missing: list[str] = Field(
        default_factory=list, max_length=16,
        description="Expected series none of the target's pods exports (the token series).")


class PriceStatus(_Model):
    """The price per replica-hour a target is planned and charged with."""

    source: CostSource = Field(..., description="Spec or OpenCost.")
    cost_per_replica_hour: float = Field(..., ge=0, description="Currency/h per replica.")
    detail: str = Field("", max_length=1024,
                        description="How it was derived, or why the spec's price is used.")


class ForecastScoreStatus(_Model):
    """How a target's trend forecast and the level of now (its newest demand sample) have done
    lately: the memory of the rule that picks one (the lower recent error)."""

    due: str | None = Field(None, description="Instant the pending pair of forecasts is for "
                                              "(RFC 3339).")
    trend: float = Field(0, description="The pending trend forecast, tokens/s.")
    level: float = Field(0, description="The pending level of now, tokens/s.")
    trend_error: float = Field(0, description="The trend's recent mean absolute error, "
                                              "tokens/s.")
    level_error: float = Field(0, description="The level's recent mean absolute error, "
                                              "tokens/s.")
    scored: int = Field(0, ge=0, description="Pairs of forecasts scored so far.")


class TargetStatus(_Model):
    """What the operator sees and decides for one target."""

    name: str
    current_replicas: int | None = None
    ready_replicas: int | None = None
    desired_replicas: int | None = None
    reason: str | None = None
    message: str | None = None
    tokens_per_second: float | None = None
    forecast_tokens_per_second: float | None = None
    queue_length: float | None = None
    cost_per_hour: float | None = None
    last_scale_time: str | None = None
    model: ModelStatus | None = None
    admission: AdmissionStatus | None = None
    service_model: ServiceModelStatus | None = None
    latency: LatencyStatus | None = Field(
        None, description="The latency the requests see now (means over the rate window).")
    metrics: TargetMetricsStatus | None = None
    price: PriceStatus | None = None
    forecast_score: ForecastScoreStatus | None = Field(
        None, description="The trend's and the level of now's recent errors (which one the "
                          "demand estimate uses).")


class BudgetStatus(_Model):
    """The limit that binds, in its unit: what the Spend, Budget and Projected columns show."""

    binding: Literal["Cost", "Tokens"] = Field(
        ..., description="The limit projected to be used the most (Cost on a tie).")
    limit: float = Field(..., description="maxCost or maxTokens.")
    unit: str = Field(..., max_length=64, description="The currency, or tokens.")
    spent: float = Field(0, description="Spent (or served) this period, in the unit.")
    projected: float = Field(0, description="Projected at period end, in the unit.")
    display: str = Field(..., max_length=128,
                         description="The limit and its unit, e.g. 480 USD or 2G tokens.")


class DemandProfileStatus(_Model):
    """A target's learned demand by local half hour: the memory of the projection."""

    target: str
    tokens_per_second: list[float] = Field(
        default_factory=list, max_length=48,
        description="Mean served tokens/s per local half hour from 00:00 in budget.timeZone "
                    "(negative: not yet observed).")
    level: float = Field(1.0, description="Today's demand relative to the profile.")
    slot_start: str | None = Field(None, description="Start of the half hour being observed "
                                                     "(RFC 3339).")
    slot_tokens: float = Field(0, description="Tokens served in it so far.")
    slot_seconds: float = Field(0, description="Seconds of it observed so far.")
    overhead: float = Field(1.0, description="Replicas run / the need of the mean demand "
                                             "(the ratio of their sums over about a day).")
    overhead_need: float = Field(0, description="The need's sum behind overhead "
                                 "(replica-seconds, fading over a day; 0: none yet).")


class Recommendation(_Model):
    """One past recommendation, kept for scale-down stabilization across restarts."""

    target: str
    time: str = Field(..., description="RFC 3339.")
    replicas: int


class TokenBudgetStatus(_Model):
    """`status` of a TokenBudget: what `kubectl get/describe tb` shows, and the memory."""

    observed_generation: int | None = None
    phase: Phase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    period: PeriodStatus | None = None
    spend: SpendStatus | None = None
    targets: list[TargetStatus] = Field(default_factory=list)
    replicas: int | None = Field(None, description="Sum of current replicas (printer column).")
    desired_replicas: int | None = Field(None, description="Sum of desired replicas.")
    tokens_per_second: float | None = Field(None, description="Sum of observed tokens/s.")
    last_scale_time: str | None = None
    last_reconcile_time: str | None = None
    metrics_unavailable_since: str | None = Field(
        None, description="Start of the current metric outage (RFC 3339), if any."
    )
    recommendations: list[Recommendation] = Field(
        default_factory=list, max_length=MAX_RECOMMENDATIONS
    )
    budget: BudgetStatus | None = Field(
        None, description="The binding limit in its unit (printer columns).")
    demand_profiles: list[DemandProfileStatus] = Field(
        default_factory=list, max_length=MAX_TARGETS,
        description="Per target, the learned demand by time of day (memory).")


class ObjectMeta(BaseModel):
    """The part of metadata the models look at."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    namespace: str | None = None


class TokenBudget(_Model):
    """A whole TokenBudget object."""

    api_version: Literal["tokenscale.dev/v1alpha1"] = "tokenscale.dev/v1alpha1"
    kind: Literal["TokenBudget"] = "TokenBudget"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: TokenBudgetSpec
    status: TokenBudgetStatus | None = None


# ------------------------------------------------------------------------------ helpers


class SpecError(ValueError):
    """An invalid TokenBudget spec, with one human line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + _camel(str(part))
    return out


def format_errors(exc: ValidationError, prefix: str = "spec") -> list[str]:
    """Turn pydantic errors into `spec.targets[0].minReplicas: message` lines."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        where = _loc(loc)
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{prefix}.{where}: {msg}" if where else f"{prefix}: {msg}")
    return lines


def parse_spec(raw: Any) -> TokenBudgetSpec:
    """Validate a raw (camelCase) spec; raises :class:`SpecError` naming each bad field."""
    if not isinstance(raw, dict):
        raise SpecError(["spec: must be an object"])
    try:
        return TokenBudgetSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(format_errors(exc)) from None


def parse_status(raw: Any) -> TokenBudgetStatus:
    """Read status leniently: unknown or broken status never blocks the operator."""
    if not isinstance(raw, dict):
        return TokenBudgetStatus()
    try:
        return TokenBudgetStatus.model_validate(raw)
    except ValidationError:
        known = {k: v for k, v in raw.items() if k in TokenBudgetStatus.model_fields or
                 any(f.alias == k for f in TokenBudgetStatus.model_fields.values())}
        for key in list(known):
            try:
                TokenBudgetStatus.model_validate({key: known[key]})
            except ValidationError:
                known.pop(key)
        return TokenBudgetStatus.model_validate(known)


def dump(model: BaseModel) -> dict[str, Any]:
    """Wire form: camelCase, no unset optionals."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")
