"""Operator settings, read from the environment (prefix ``TOKENSCALE_``).

Every field maps to one variable, e.g. ``TOKENSCALE_PROMETHEUS_URL``. Lists accept a
comma-separated string (``TOKENSCALE_NAMESPACES=inference,batch``). Durations are seconds.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tokenscale.allowlist import parse_entry
from tokenscale.sharding import Shard, shard_peering_name

_PROMQL_DURATION = re.compile(r"^[0-9]+(ms|s|m|h)$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class OperatorSettings(BaseSettings):
    """How `tokenscale run` connects, listens and paces itself."""

    model_config = SettingsConfigDict(env_prefix="TOKENSCALE_", extra="ignore", frozen=True)

    prometheus_url: str = Field(
        "http://prometheus.monitoring:9090",
        description="Default Prometheus base URL (a TokenBudget's spec.prometheus.url wins).",
    )
    prometheus_timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="Default per-query timeout (s)."
    )
    prometheus_allowed_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Prometheus base URLs a TokenBudget's spec.prometheus.url may name, "
        "besides prometheus_url (always allowed); an entry ending in /* allows the paths "
        "below it, * allows any URL. Empty: only prometheus_url. A budget naming another "
        "URL gets SpecValid=False and no request is made to it (tokenscale.allowlist).",
    )
    user_query_timeout_seconds: float = Field(
        5.0, gt=0, le=60,
        description="Per-query timeout (s) of the queries a TokenBudget writes "
        "(targets[].metrics overrides, performance.query): at most this, whatever its "
        "spec.prometheus.timeoutSeconds says. Budgets without them never wait for them.",
    )
    user_query_max_series: int = Field(
        1000, ge=1, le=1_000_000,
        description="Most series one answer to a TokenBudget's own query may hold (sent as "
        "Prometheus' `limit` too, which newer servers honour); more: TooManySeries.",
    )
    user_query_max_points: int = Field(
        100_000, ge=1, le=100_000_000,
        description="Most samples (over all series) one answer to a TokenBudget's own query "
        "may hold; more: TooManyPoints.",
    )
    user_query_workers: int = Field(
        8, ge=1, le=256,
        description="Threads for TokenBudgets' own queries, apart from the operator's "
        "(slow user queries cannot hold up the default ones).",
    )
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to serve; empty serves the whole cluster.",
    )
    shards: int = Field(
        1, ge=1, le=4096,
        description="How many shards serve the cluster's TokenBudgets (1: this operator "
        "serves all). Each shard is its own `tokenscale run` deployment with the same value "
        "here and its own TOKENSCALE_SHARD; a budget belongs to shard "
        "sha256(namespace) mod TOKENSCALE_SHARDS (tokenscale.sharding).",
    )
    shard: int = Field(
        0, ge=0, le=4095, description="This operator's shard, 0 .. TOKENSCALE_SHARDS - 1."
    )
    workload_watch: bool = Field(
        True,
        description="Read workloads (Deployments, StatefulSets) and autoscalers (HPAs, KEDA "
        "ScaledObjects) from watches (an informer cache: no request per cycle) instead of "
        "LISTs per namespace and cycle. Needs list and watch on them: cluster-wide, or in "
        "each namespace of TOKENSCALE_NAMESPACES (four watches per namespace).",
    )
    allocator_tuning: bool = Field(
        True,
        description="On glibc, share two malloc arenas among the operator's threads, map "
        "allocations of 128 KiB and more on their own, and return free memory after each "
        "cycle (tokenscale.memory): peak RSS stays near the live heap. No-op elsewhere.",
    )
    metrics_port: int = Field(8080, ge=0, le=65535, description="Port of /metrics (0: off).")
    health_port: int = Field(8081, ge=0, le=65535, description="Port of /healthz (0: off).")
    bind_address: str = Field("0.0.0.0", description="Address the HTTP endpoints listen on.")
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    peering_name: str | None = Field(
        None, description="kopf peering object name; unset runs standalone (one replica). "
        "With TOKENSCALE_SHARDS > 1 each shard uses <name>-shard-<i>-of-<n> "
        "(effective_peering_name).",
    )
    peering_priority: int | None = Field(
        None, ge=0, le=2**31 - 1,
        description="kopf peering priority; unset: a random one per process, so replicas "
        "never tie (kopf pauses every replica of a tie).",
    )
    peering_lifetime_seconds: int = Field(
        60, ge=2, le=3600,
        description="How long a silent peer counts as alive (s): a killed active replica is "
        "replaced after about this long.",
    )
    rate_window: str = Field("1m", description="PromQL range of rate()/the token rate.")
    stale_after_seconds: float = Field(
        120.0, gt=0, description="A target whose newest sample is older than this is Stale."
    )
    tick_seconds: float = Field(
        1.0, gt=0, le=60, description="Granularity of the planning loop (s)."
    )
    status_heartbeat_seconds: float = Field(
        300.0, ge=0,
        description="Patch status at least this often even if nothing changed (s); between "
                    "heartbeats only changed values are written (1,000 budgets at a 30 s "
                    "interval: 60 s here meant 500 status writes per cycle).",
    )
    status_heartbeat_burst: float = Field(
        2.0, ge=1, le=100,
        description="Heartbeat status writes (and those where only token rates and queue "
        "lengths moved) per cycle, as a multiple of the heartbeats' steady rate (the due "
        "budgets x interval / heartbeat): beyond it the rest wait for the next cycle, so "
        "budgets created together do not all rewrite their status in one cycle every "
        "heartbeat. First writes and other changes are never held back.",
    )
    events_per_cycle: int = Field(
        100, ge=1, le=100_000,
        description="Condition-change Events posted per cycle; beyond it they wait, oldest "
        "first, for the next cycles (a Prometheus outage flips MetricsAvailable on every "
        "budget at once). At most ten cycles' worth wait; older ones are dropped and counted.",
    )
    concurrency: int = Field(16, ge=1, le=1024, description="Budgets reconciled at once.")
    api_workers: int = Field(8, ge=1, le=256, description="Threads for Kubernetes API calls.")
    api_timeout_seconds: float = Field(10.0, gt=0, description="Kubernetes request timeout.")
    instance: str = Field("", description="Reporting instance in Events (default hostname).")
    clock_offset_seconds: float = Field(
        0.0, ge=-10 * 366 * 86400, le=10 * 366 * 86400,
        description="Shift of the operator's calendar clock (s) against the system clock: "
        "budget periods, price windows, spend and status times follow the shifted clock, "
        "while Prometheus is still asked in its own time. For rehearsing a period end or a "
        "DST change (and for the tests); 0 in production.",
    )

    @model_validator(mode="after")
    def _shard_in_range(self) -> OperatorSettings:
        if self.shard >= self.shards:
            raise ValueError(f"TOKENSCALE_SHARD={self.shard} is not below "
                             f"TOKENSCALE_SHARDS={self.shards}")
        return self

    @property
    def shard_spec(self) -> Shard:
        """This operator's share of the budgets."""
        return Shard(self.shard, self.shards)

    @property
    def effective_peering_name(self) -> str | None:
        """The kopf peering object of this operator's shard (None: standalone)."""
        if self.peering_name is None:
            return None
        return shard_peering_name(self.peering_name, self.shard, self.shards)

    @field_validator("namespaces", "prometheus_allowed_urls", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("namespaces")
    @classmethod
    def _valid_namespaces(cls, value: list[str]) -> list[str]:
        bad = [ns for ns in value if not _NAMESPACE.match(ns)]
        if bad:
            raise ValueError(f"not namespace names: {bad}")
        return value

    @field_validator("rate_window")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not _PROMQL_DURATION.match(value):
            raise ValueError(f"not a PromQL duration like 1m or 30s: {value!r}")
        return value

    @field_validator("prometheus_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://\S+$", value):
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value.rstrip("/")

    @field_validator("prometheus_allowed_urls")
    @classmethod
    def _allowed_urls(cls, value: list[str]) -> list[str]:
        return [parse_entry(entry) for entry in value]

    def rate_window_seconds(self) -> float:
        """`rate_window` in seconds."""
        m = _PROMQL_DURATION.match(self.rate_window)
        assert m is not None
        unit = m.group(1)
        number = float(self.rate_window[: -len(unit)])
        return number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
