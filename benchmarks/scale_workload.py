"""The scale benchmark's workload: N TokenBudgets, their 2N Deployments, the pods' token series.

Budget ``tb-<i>`` lives in namespace ``team-<i // per_ns>`` and targets Deployments
``m<i>-chat`` and ``m<i>-code`` (one pod each, steady :data:`BASE_TOKENS` tokens/s). The
history (:func:`history_times`, :func:`history_blocks`) pre-fills Prometheus from the period
start so the operator's queries have their steady-state size from its first cycle.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthetic_vllm import PodLoad, SyntheticFleet
from tokenscale_testbed.apiserver import ApiServer

BASE_TOKENS = 1000.0  # tokens/s per pod in steady state: needs 1 replica of 3,000 tokens/s
STEP_TOKENS = 9000.0  # extra tokens/s of the load step: needs 5 replicas
TB = "tokenscale.dev/v1alpha1"
DAY = 86400  # s


@dataclass
class Config:
    """The benchmark's knobs (see ``--help``); times in seconds."""

    budgets: int
    intervals: int = 4
    interval_seconds: int = 30
    budgets_per_namespace: int = 10
    scrape_interval: float = 15.0
    rate_window: str = "1m"
    forecast_window_seconds: int = 600
    step_targets: int = 10
    shards: int = 1
    profile: Path | None = None
    memory_profile: Path | None = None  # tracemalloc snapshots of every operator
    keep: Path | None = None
    quiet: bool = False
    hours_into_period: float = 12.0
    #: s after every budget's first status before the window's tick (300: the first
    #: heartbeat wave of budgets created together falls in the window)
    measure_after: float = 0.0
    #: UTC offset (h) of the budgets' time zone, chosen at the start (:func:`zone_offset_hours`)
    utc_offset_hours: int = 0
    #: the pods also export the latency histograms' _sum and _count (as vLLM does)
    latency: bool = True


def zone_offset_hours(now: float, hours_into_period: float) -> int:
    """Whole-hour UTC offset (-12 .. +14) of a time zone whose local time at ``now`` (unix s)
    is within the hour from ``floor(hours_into_period)`` (h, 0 .. 23): the budgets' daily
    period is then that far along whatever the time of day the benchmark runs at (status
    writes and the ``increase()`` since the period start both depend on it)."""
    offset = math.floor(min(hours_into_period, 23.0)) - math.floor((now % DAY) / 3600)
    while offset < -12:
        offset += 24
    while offset > 14:
        offset -= 24
    return offset


def zone_name(offset_hours: int) -> str:
    """The IANA name of the fixed-offset zone UTC+``offset_hours`` (POSIX sign: Etc/GMT-5 is
    UTC+5)."""
    return f"Etc/GMT{-offset_hours:+d}"


def period_start(now: float, offset_hours: int) -> float:
    """Unix time (s) of the local midnight at or before ``now`` in UTC+``offset_hours``."""
    offset = offset_hours * 3600
    return math.floor((now + offset) / DAY) * DAY - offset


def namespace(i: int, per_ns: int) -> str:
    """The namespace of budget ``i`` with ``per_ns`` budgets per namespace."""
    return f"team-{i // per_ns:04d}"


def namespaces(cfg: Config) -> list[str]:
    """Every namespace the benchmark uses, in order."""
    per_ns = cfg.budgets_per_namespace
    return [namespace(i * per_ns, per_ns) for i in range(math.ceil(cfg.budgets / per_ns))]


def targets(i: int) -> list[str]:
    """The two Deployments budget ``i`` scales."""
    return [f"m{i:05d}-chat", f"m{i:05d}-code"]


def pod_name(deployment: str) -> str:
    """A ReplicaSet-style pod name (``<deploy>-<10 hex>-<5 hex>``), stable per deployment."""
    digest = hashlib.sha1(deployment.encode()).hexdigest()
    return f"{deployment}-{digest[:10]}-{digest[10:15]}"


def budget_body(i: int, cfg: Config) -> dict[str, Any]:
    """TokenBudget ``tb-<i>``: a daily cost budget (5,000 USD) over two Deployments."""
    return {
        "apiVersion": TB, "kind": "TokenBudget",
        "metadata": {"name": f"tb-{i:05d}", "namespace": namespace(i, cfg.budgets_per_namespace)},
        "spec": {
            "mode": "Active",
            "budget": {"period": "Day", "timeZone": zone_name(cfg.utc_offset_hours),
                       "maxCost": 5000, "currency": "USD"},
            "planning": {"intervalSeconds": cfg.interval_seconds,
                         "forecastWindowSeconds": cfg.forecast_window_seconds},
            "targets": [
                {"name": name.split("-")[-1],
                 "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": 1, "maxReplicas": 16, "tokensPerReplicaPerSecond": 3000,
                 "costPerReplicaHour": 3.9, "coldStartSeconds": 60}
                for name in targets(i)
            ],
        },
    }


def deployment_body(ns: str, name: str) -> dict[str, Any]:
    """A vLLM Deployment with 1 replica, 1 ready."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "vllm",
                                                       "image": "vllm/vllm-openai"}]}}},
        "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1},
    }


def rfc3339(t: float) -> str:
    """Unix time ``t`` (s) as an RFC 3339 UTC timestamp, whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def running_status(cfg: Config, origin: float, now: float) -> dict[str, Any]:
    """The status an operator running since ``origin`` (unix s, this period) would have
    written at ``now``: the spend so far (USD, tokens), so the benchmark sees a budget hours
    into its period, not a new one."""
    midnight = period_start(now, cfg.utc_offset_hours)
    hours = max(0.0, now - max(origin, midnight)) / 3600
    return {
        "phase": "Active",
        "period": {"start": rfc3339(midnight), "end": rfc3339(midnight + DAY)},
        "spend": {"cost": 2 * 3.9 * hours, "tokens": 2 * BASE_TOKENS * hours * 3600},
        "lastReconcileTime": rfc3339(now),
    }


def populate(server: ApiServer, cfg: Config, origin: float, now: float) -> None:
    """Create the Deployments and TokenBudgets (on the emulator's loop), the latter with the
    status of an operator that has served them since the period start."""
    for i in range(cfg.budgets):
        ns = namespace(i, cfg.budgets_per_namespace)
        for name in targets(i):
            server.create_object("apps/v1", "deployments", deployment_body(ns, name))
    status = running_status(cfg, origin, now)
    for i in range(cfg.budgets):
        server.create_object(TB, "tokenbudgets", {**budget_body(i, cfg), "status": status})


def pods(cfg: Config) -> list[PodLoad]:
    """One pod per Deployment at :data:`BASE_TOKENS` tokens/s."""
    return [PodLoad(namespace(i, cfg.budgets_per_namespace), pod_name(d), BASE_TOKENS)
            for i in range(cfg.budgets) for d in targets(i)]


def step_deployments(cfg: Config) -> list[tuple[str, str]]:
    """The (namespace, deployment) that get the load step: spread evenly over the budgets."""
    n = min(cfg.step_targets, cfg.budgets)
    picks = sorted({round(k * (cfg.budgets - 1) / max(1, n - 1)) for k in range(n)})
    return [(namespace(i, cfg.budgets_per_namespace), targets(i)[0]) for i in picks]


def sampled_budgets(cfg: Config) -> list[tuple[str, str]]:
    """(namespace, name) of the last 20 TokenBudgets, whose statuses are compared across the
    window (not stepped unless N is tiny)."""
    return [(namespace(i, cfg.budgets_per_namespace), f"tb-{i:05d}")
            for i in range(cfg.budgets)][-20:]


def history_origin(cfg: Config, now: float) -> float:
    """Unix time (s) the series start: the period start (the budgets' local midnight), or
    earlier so there is at least one forecast window (+2 min) of history at scrape
    resolution."""
    midnight = period_start(now, cfg.utc_offset_hours)
    return min(midnight, now - history_seconds(cfg))


def history_seconds(cfg: Config) -> int:
    """Seconds of history at scrape resolution before ``now``: the forecast window + 2 min."""
    return cfg.forecast_window_seconds + 120


def history_times(origin: float, fine_from: float, end: float, step: float) -> list[float]:
    """Sample times: every 5 min from ``origin`` (the period start) to ``fine_from``, then
    every ``step`` s (the scrape interval) to ``end``: ``increase()`` since the period start
    sees the whole period, range queries over the forecast window see scrape resolution."""
    times = []
    t = origin
    while t < fine_from:
        times.append(t)
        t += 300.0
    t = fine_from
    while t <= end:
        times.append(t)
        t += step
    return times


def history_blocks(fleet: SyntheticFleet, times: list[float], work: Path,
                   target_labels: str) -> Path:
    """promtool TSDB blocks of the fleet's counters at ``times`` (unix s), under ``work``."""
    text = work / "history.om"
    with text.open("w") as out:
        fleet.write_history(out, times, target_labels)
    blocks = work / "blocks"
    blocks.mkdir()
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(text),
                    str(blocks)], check=True, capture_output=True)
    text.unlink()
    return blocks
