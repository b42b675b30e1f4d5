"""The scale benchmark's measurements over the window of K planning intervals.

:func:`measure_window` takes a :class:`Snapshot` just before a planning tick and another just
before the K-th tick after it, applies the load step 30% into the window and watches the
stepped Deployments (:class:`LagWatcher`); :func:`figures` turns that into per-cycle rates,
CPU cores, RSS and scale lags (:class:`Figures`, unrounded).
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from scale_rig import Rig, http_get, start_profiler, step_load
from scale_workload import (
    STEP_TOKENS,
    TB,
    rfc3339,
    sampled_budgets,
    step_deployments,
)
from tokenscale.sharding import shard_of
from tokenscale.status import differs, significant
from tokenscale_testbed.apiserver import ApiServer
from tokenscale_testbed.waiting import wait_for

# ------------------------------------------------------------------------- probes


def operator_metrics(port: int) -> dict[str, float]:
    """The operator's counters and histogram sums we need, by sample name + labels."""
    text = http_get(f"http://127.0.0.1:{port}/metrics")
    out: dict[str, float] = {}
    wanted = ("tokenscale_cycle", "tokenscale_prometheus", "tokenscale_status_patches",
              "tokenscale_scale", "tokenscale_tokenbudgets", "tokenscale_reconcile_duration")
    for family in text_string_to_metric_families(
            "\n".join(line for line in text.splitlines() if line.startswith(wanted)
                      or line.startswith(tuple("# HELP " + w for w in wanted))
                      or line.startswith(tuple("# TYPE " + w for w in wanted)))):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if s.name.endswith("_bucket"):
                labels += f",le={s.labels.get('le')}"
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def metric_sum(metrics: dict[str, float], prefix: str) -> float:
    """The sum of the samples whose ``name{labels}`` key starts with ``prefix``."""
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    t = proc.cpu_times()
    return float(t.user + t.system)


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


_KINDS = [
    ("list_deployments", "GET", re.compile(r"/deployments$")),
    ("list_hpas", "GET", re.compile(r"/horizontalpodautoscalers$")),
    ("list_scaledobjects", "GET", re.compile(r"/scaledobjects$")),
    ("patch_status", "PATCH", re.compile(r"/tokenbudgets/[^/]+/status$")),
    ("patch_scale", "PATCH", re.compile(r"/scale$")),
    ("post_event", "POST", re.compile(r"/events$")),
]


def classify(counts: Counter[tuple[str, str]]) -> dict[str, int]:
    """Request counts by kind (``other``: watches, discovery, the rest)."""
    out: dict[str, int] = {name: 0 for name, _, _ in _KINDS}
    out["other"] = 0
    for (method, path), n in counts.items():
        for name, m, pattern in _KINDS:
            if method == m and pattern.search(path):
                out[name] += n
                break
        else:
            out["other"] += n
    return out


@dataclass
class Snapshot:
    """Counters at one instant: unix time ``at``, each shard's operator metrics and CPU
    seconds, CPU seconds of each rig process, requests the emulator served by (method, path).
    """

    at: float
    metrics: list[dict[str, float]]
    op_cpu: list[float]
    rig_cpu: dict[str, float]
    requests: Counter[tuple[str, str]]


def snapshot(rig: Rig, ops: list[psutil.Process], metrics_first: bool) -> Snapshot:
    """A :class:`Snapshot`; the /metrics scrapes (which cost the operators CPU) are taken
    before the CPU readings at the window's start and after them at its end."""
    metrics = [operator_metrics(port) for port in rig.metrics_ports] if metrics_first else []
    op_cpu = [cpu_seconds(op) for op in ops]
    rig_cpu = {name: cpu_seconds(p) for name, p in rig.rig_processes().items()}
    requests: Counter[tuple[str, str]] = Counter(rig.api.call(lambda s: dict(s.counts))
                                                 if rig.api else {})
    at = time.time()
    if not metrics_first:
        metrics = [operator_metrics(port) for port in rig.metrics_ports]
    return Snapshot(at, metrics, op_cpu, rig_cpu, requests)


# ------------------------------------------------------------------ emulator queries


def events_by_reason(server: ApiServer, since: float) -> dict[str, int]:
    """Events the operator posted at or after unix time ``since``, by reason."""
    stamp = rfc3339(since)
    out: Counter[str] = Counter()
    for event in server.list_objects("v1", "events"):
        if str(event.get("lastTimestamp") or "") >= stamp:
            out[str(event.get("reason"))] += 1
    return dict(out.most_common())


def sample_statuses(server: ApiServer, names: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Copies of the statuses of the TokenBudgets ``names`` ((namespace, name))."""
    return [copy.deepcopy((server.get_object(TB, "tokenbudgets", ns, n) or {}).get("status")
                          or {}) for ns, n in names]


def changed_paths(before: Any, after: Any, prefix: str = "", key: str = "") -> list[str]:
    """Dotted paths whose values differ by the operator's patch policy (lists by index)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in sorted(set(before) | set(after)):
            out += changed_paths(before.get(k), after.get(k), f"{prefix}.{k}", k)
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            out += changed_paths(b, a, f"{prefix}[{i}]", key)
        return out
    return [prefix or "."] if differs(before, after, key) else []


def significant_changes(before: list[dict[str, Any]],
                        after: list[dict[str, Any]]) -> Counter[str]:
    """How many sampled statuses changed each path significantly (list indices as ``[]``)."""
    changes: Counter[str] = Counter()
    for b, a in zip(before, after, strict=True):
        changes.update(re.sub(r"\[\d+\]", "[]", p) for p in changed_paths(
            significant(b), significant(a)))
    return changes


def replicas_of(server: ApiServer, keys: list[tuple[str, str]]) -> list[int]:
    """spec.replicas of the Deployments ``keys`` ((namespace, name)); 0 if missing."""
    out = []
    for ns, name in keys:
        obj = server.get_object("apps/v1", "deployments", ns, name) or {}
        out.append(int((obj.get("spec") or {}).get("replicas") or 0))
    return out


# ------------------------------------------------------------------- the window


def next_tick(now: float, interval: float) -> float:
    """The first multiple of ``interval`` (s) after unix time ``now``."""
    return (math.floor(now / interval) + 1) * interval


def sleep_until(t: float) -> None:
    """Sleep until unix time ``t`` (no-op if it has passed)."""
    time.sleep(max(0.0, t - time.time()))


class LagWatcher:
    """Polls the stepped Deployments every 0.1 s from a thread; ``lags`` holds, per
    (namespace, deployment), the seconds from its ``step_at`` (unix s) to the first replica
    count other than 1."""

    def __init__(self, rig: Rig, steps: list[tuple[str, str]],
                 step_at: dict[tuple[str, str], float]) -> None:
        self.rig, self.steps, self.step_at = rig, steps, step_at
        self.lags: dict[tuple[str, str], float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._done.is_set():
            now = time.time()
            current = self.rig.call(lambda s: replicas_of(s, self.steps))
            for key, value in zip(self.steps, current, strict=True):
                if value != 1 and key not in self.lags and now >= self.step_at[key]:
                    self.lags[key] = now - self.step_at[key]
            time.sleep(0.1)

    def start(self) -> None:
        self._thread.start()

    def finish(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for every stepped target to scale, then stop watching."""
        deadline = time.time() + timeout
        while len(self.lags) < len(self.steps) and time.time() < deadline:
            time.sleep(0.2)
        self._done.set()
        self._thread.join(5)


@dataclass
class Window:
    """What :func:`measure_window` observed."""

    start: Snapshot
    end: Snapshot
    events: dict[str, int]  # Events posted in the window, by reason
    status_changes: Counter[str]  # significant changes of sampled statuses, by path
    lags: dict[tuple[str, str], float]  # s from the load step to the scale-up, per target
    steps: list[tuple[str, str]]  # the stepped (namespace, deployment)
    interval: float = 30.0  # the budgets' planning interval (s)


def measure_window(rig: Rig, ops: list[psutil.Process]) -> Window:
    """From just before a tick (one full cycle after now) to just before the K-th tick after
    it, with the load step 30% into the window and py-spy (``--profile``) over the rest."""
    cfg = rig.cfg
    interval = float(cfg.interval_seconds)
    lead = min(1.0, 0.05 * interval)
    begin = next_tick(time.time() + interval, interval) - lead
    sleep_until(begin)
    s0 = snapshot(rig, ops, metrics_first=True)
    sampled = sampled_budgets(cfg)
    status0 = rig.call(lambda s: sample_statuses(s, sampled), timeout=60)
    end = begin + cfg.intervals * interval

    steps = step_deployments(cfg)
    # Each target's step lands 30 % into its own shard's interval (shard i ticks i/n of the
    # interval later), counted from the tick (not from the snapshot, which takes seconds at
    # 10,000 budgets), so every shard's lag is measured as one operator's is.
    at = {key: begin + lead + 0.3 * interval
          + round(shard_of(key[0], cfg.shards) / cfg.shards * interval) for key in steps}
    for when in sorted(set(at.values())):
        step_load(rig, [k for k in steps if at[k] == when], when, STEP_TOKENS)
    watcher = LagWatcher(rig, steps, at)
    sleep_until(min(at.values()))
    watcher.start()
    if cfg.profile is not None:
        start_profiler(rig, ops[0].pid, end - time.time(), cfg.profile)
    rig.say(f"measuring {cfg.intervals} intervals of {interval:g}s; load step on "
            f"{len(steps)} targets")
    sleep_until(end)
    s1 = snapshot(rig, ops, metrics_first=False)
    if cfg.memory_profile is not None:  # each operator writes its tracemalloc snapshot
        for op in ops:
            op.send_signal(signal.SIGUSR2)
        snaps = [cfg.memory_profile / f"{op.pid}.snap" for op in ops]
        wait_for(lambda: all(p.exists() for p in snaps),
                 timeout=300, interval=1.0, message="the operators' memory snapshots")
    events = rig.call(lambda s: events_by_reason(s, s0.at), timeout=60)
    status1 = rig.call(lambda s: sample_statuses(s, sampled), timeout=60)
    changes = significant_changes(status0, status1)
    watcher.finish(4 * interval)
    if rig.profiler is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            rig.profiler.wait(60)
    return Window(s0, s1, events, changes, watcher.lags, steps, interval)


# ------------------------------------------------------------------- the figures


@dataclass
class ShardFigures:
    """One shard's figures over the window: per its own cycles, CPU in cores, MB."""

    budgets: float
    cycles: float
    cycle_seconds: float
    prometheus_queries_per_cycle: float
    prometheus_errors_per_cycle: float
    status_patches_per_cycle: float
    status_skipped_per_cycle: float
    #: heartbeat and drift writes past the cycle's allowance (0 before it existed)
    status_deferred_per_cycle: float
    cpu_cores: float
    peak_rss_mb: float
    rss_mb_end: float
    prometheus_errors_by_kind: dict[str, float]
    #: budgets planned in the window / (budgets x intervals in the window): 1.0 = every
    #: budget planned every interval
    planned_share: float = 0.0


@dataclass
class Figures:
    """The window's figures, unrounded: per-cycle means over ``cycles`` (at least 1 in the
    divisor), CPU in cores (CPU s / wall s), memory in MB, lags in s. With shards the
    top-level figures combine ``per_shard`` (see ``scale.py``)."""

    cycles: float
    wall_seconds: float
    cycle_seconds: float
    prometheus_queries_per_cycle: float
    prometheus_errors_per_cycle: float
    api_requests_per_cycle_by_kind: dict[str, float]
    status_patches_per_cycle: float
    status_skipped_per_cycle: float
    #: heartbeat and drift writes past the cycle's allowance (0 before it existed)
    status_deferred_per_cycle: float
    cpu_cores: float
    peak_rss_mb: float
    rss_mb_end: float
    scale_lag_seconds: float | None  # the median; None if no target scaled
    scale_lags: list[float]  # sorted
    scale_lag_missing: int
    rig_cpu_cores: dict[str, float]
    events: dict[str, int]  # Events posted in the window, by reason
    status_changes: Counter[str]  # significant changes of sampled statuses, by path
    per_shard: list[ShardFigures]


def shard_figures(m0: dict[str, float], m1: dict[str, float], cpu: float, wall: float,
                  op: psutil.Process, interval: float) -> ShardFigures:
    """One shard's figures from its two metric snapshots and CPU seconds in the window."""

    def delta(prefix: str) -> float:
        return metric_sum(m1, prefix) - metric_sum(m0, prefix)

    cycles = delta("tokenscale_cycles_total")
    per = max(cycles, 1.0)
    budgets = metric_sum(m1, "tokenscale_tokenbudgets{")
    return ShardFigures(
        budgets=budgets,
        planned_share=delta("tokenscale_reconcile_duration_seconds_count")
        / max(1.0, budgets * round(wall / interval)),
        cycles=cycles,
        cycle_seconds=delta("tokenscale_cycle_duration_seconds_sum") / per,
        prometheus_queries_per_cycle=delta("tokenscale_prometheus_queries_total") / per,
        prometheus_errors_per_cycle=delta("tokenscale_prometheus_errors_total") / per,
        status_patches_per_cycle=delta("tokenscale_status_patches_total{outcome=sent") / per,
        status_skipped_per_cycle=delta("tokenscale_status_patches_total{outcome=skipped")
        / per,
        status_deferred_per_cycle=delta("tokenscale_status_patches_total{outcome=deferred")
        / per,
        cpu_cores=cpu / wall,
        peak_rss_mb=peak_rss_mb(op.pid),
        rss_mb_end=op.memory_info().rss / 2**20,
        prometheus_errors_by_kind={
            k.split("kind=", 1)[1].rstrip("}"): v - m0.get(k, 0.0) for k, v in m1.items()
            if k.startswith("tokenscale_prometheus_errors_total{") and v > m0.get(k, 0.0)},
    )


def figures(w: Window, ops: list[psutil.Process]) -> Figures:
    """Differences of the window's two snapshots, per cycle or per wall second, per shard and
    combined; the operators' memory now."""
    wall = w.end.at - w.start.at
    shards = [shard_figures(m0, m1, c1 - c0, wall, op, w.interval) for m0, m1, c0, c1, op in zip(
        w.start.metrics, w.end.metrics, w.start.op_cpu, w.end.op_cpu, ops, strict=True)]
    cycles = statistics.mean(s.cycles for s in shards)  # planning intervals, as one shard
    per = max(cycles, 1.0)
    by_kind_0, by_kind_1 = classify(w.start.requests), classify(w.end.requests)
    lags = sorted(w.lags.values())
    return Figures(
        cycles=cycles,
        wall_seconds=wall,
        cycle_seconds=max(s.cycle_seconds for s in shards),
        prometheus_queries_per_cycle=max(s.prometheus_queries_per_cycle for s in shards),
        prometheus_errors_per_cycle=sum(s.prometheus_errors_per_cycle for s in shards),
        api_requests_per_cycle_by_kind={k: (by_kind_1[k] - by_kind_0[k]) / per
                                        for k in by_kind_1},
        status_patches_per_cycle=sum(s.status_patches_per_cycle * s.cycles for s in shards)
        / per,
        status_skipped_per_cycle=sum(s.status_skipped_per_cycle * s.cycles for s in shards)
        / per,
        status_deferred_per_cycle=sum(s.status_deferred_per_cycle * s.cycles for s in shards)
        / per,
        cpu_cores=sum(s.cpu_cores for s in shards),
        peak_rss_mb=max(s.peak_rss_mb for s in shards),
        rss_mb_end=max(s.rss_mb_end for s in shards),
        scale_lag_seconds=statistics.median(lags) if lags else None,
        scale_lags=lags,
        scale_lag_missing=len(w.steps) - len(lags),
        rig_cpu_cores={k: (w.end.rig_cpu[k] - w.start.rig_cpu.get(k, 0.0)) / wall
                       for k in w.end.rig_cpu},
        events=w.events,
        status_changes=w.status_changes,
        per_shard=shards,
    )
