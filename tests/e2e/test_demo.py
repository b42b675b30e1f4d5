"""`tokenscale demo` end to end (headless), plus the cheap parts: trace fallback, budget scaling.

The end-to-end test runs the real thing as a subprocess (emulator, real Prometheus, simulated
fleet, the operator as a child process, real kubectl) for about a minute and checks the JSON
summary, the PNG, that every process it started is gone and that its ports are free.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from tokenscale.demo.budgets import adapt, demo_time_zone, load_samples
from tokenscale.demo.workloads import WORKLOADS, select_workloads
from tokenscale_testbed.prometheus import PrometheusMissingError, find_prometheus, free_port

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"
TRACES = REPO.parent / "shared" / "traces"
PHASES = {"Active", "DryRun", "BudgetAtRisk", "BudgetExhausted", "Degraded", "Invalid"}


def _prometheus_or_skip() -> None:
    try:
        find_prometheus()
    except PrometheusMissingError as e:
        pytest.skip(str(e))


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(proc: dict[str, Any]) -> bool:
    """True if the process the demo recorded still runs (same pid *and* start time)."""
    try:
        p = psutil.Process(proc["pid"])
        if proc["createTime"] and abs(p.create_time() - proc["createTime"]) > 0.5:
            return False  # pid reused by someone else
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _demo(tmp_path: Path, *args: str, timeout: float = 170) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenscale.cli", "demo", "--demo-dir", str(tmp_path / "demo"),
         *args],
        cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        check=False)


@pytest.mark.e2e
def test_demo_headless_summary_plot_and_clean_shutdown(tmp_path: Path) -> None:
    _prometheus_or_skip()
    out = tmp_path / "summary.json"
    api_port, prom_port = free_port(), free_port()
    result = _demo(tmp_path, "--duration", "60", "--summary-json", str(out),
                   "--api-port", str(api_port), "--prometheus-port", str(prom_port))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["ok"] and summary["error"] is None

    # every sample TokenBudget is there, with a phase, and the Active ones spent money
    expected = {doc["metadata"]["name"]: doc["spec"].get("mode", "Active")
                for doc in load_samples(SAMPLES)}
    budgets = {b["name"]: b for b in summary["tokenBudgets"]}
    assert set(budgets) == set(expected)
    for name, mode in expected.items():
        b = budgets[name]
        assert b["mode"] == mode
        assert b["phase"] in PHASES, b
        if mode == "Active":
            assert b["spendCost"] > 0, b
            assert b["budget"] > 0
        # the status against the ground truth (replica history x prices; the fleet's tokens):
        # a minute is short (a scale event's patch latency weighs more than over a day)
        assert b["truth"]["cost"] > 0 and abs(b["costTruthError"]) < 0.02, b["truth"]
        assert abs(b["tokensTruthError"]) < 0.05, b["truth"]
    assert sum(b["scaleEvents"] for b in budgets.values()) >= 1
    scaled = [t for b in budgets.values() for t in b["targets"] if t["replicaChanges"] > 0]
    assert scaled, "no target changed replicas"
    # DryRun decides and reports but never touches replicas
    for b in budgets.values():
        if b["mode"] == "DryRun":
            assert b["scaleEvents"] == 0
            for t in b["targets"]:
                assert t["replicaChanges"] == 0 and len(t["replicas"]) == 1, t
                assert t["reason"] == "DryRun"
    # the live output was plain lines (no TTY) and told how to use kubectl
    assert "\x1b[" not in result.stdout
    assert "--kubeconfig" in result.stdout and "get tb -A" in result.stdout
    assert "tokenscale demo summary" in result.stdout

    plot = Path(summary["plot"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000
    assert (tmp_path / "demo" / "kubeconfig").is_file()

    # nothing left behind: the child processes are gone, every port is free again
    assert {p["name"] for p in summary["processes"]} == {"prometheus", "operator"}
    assert not [p for p in summary["processes"] if _alive(p)]
    assert api_port in summary["ports"] and prom_port in summary["ports"]
    assert len(summary["ports"]) == 5  # api, prometheus, fleet, operator metrics and health
    assert [p for p in summary["ports"] if not _port_free(p)] == []


@pytest.mark.e2e
def test_demo_refuses_a_taken_port_with_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _demo(tmp_path, "--duration", "5", "--summary-json", str(out),
                       "--api-port", str(port), "--prometheus-port", str(free_port()),
                       timeout=60)
    assert result.returncode != 0
    assert f"port {port}" in result.stderr and "--api-port" in result.stderr
    summary = json.loads(out.read_text())
    assert summary["ok"] is False and f"port {port}" in summary["error"]
    assert summary["processes"] == []


def test_missing_traces_fall_back_to_generated_day_curves(tmp_path: Path) -> None:
    selection = select_workloads(tmp_path / "no-such-dir")
    assert selection.fallback
    assert "not found" in selection.note and "generated" in selection.note
    assert [d.spec.name for d in selection.demands] == [w.name for w in WORKLOADS]
    for d in selection.demands:
        assert d.source.startswith("generated")
        d.normalise(10_000.0)
        d.origin = 0.0
        day = [d(h * 3600.0) for h in range(24)]
        assert max(day) <= 10_000.0 + 1e-6
        assert min(day) < 0.6 * max(day)  # day-shaped, not flat


@pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/traces not present")
def test_every_workload_replays_its_own_real_trace() -> None:
    selection = select_workloads(TRACES)
    assert not selection.fallback and selection.missing == []
    sources = [d.source for d in selection.demands]
    assert len(set(sources)) == len(sources)
    assert not any("generated" in s for s in sources)
    bursty = [d for d in selection.demands if d.bursts is not None]
    assert bursty and all(0 < max(d.bursts.values) <= 4.0 for d in bursty if d.bursts)


@pytest.mark.parametrize("minute", range(0, 60, 7))
def test_demo_budgets_keep_the_sample_pace_and_no_period_ends_within_30_minutes(
        minute: int) -> None:
    now = datetime(2025, 3, 4, 10, minute, 30, tzinfo=UTC)
    zone, end = demo_time_zone(now)
    left = (end - now).total_seconds()
    assert left >= 30 * 60
    chat = next(d for d in load_samples(SAMPLES) if d["metadata"]["name"] == "chat")
    copy = adapt(chat, speedup=360.0, now=now)
    budget = copy.manifest["spec"]["budget"]
    assert budget["period"] == "Hour" and budget["timeZone"] == zone
    # the same pace: maxCost per hour of the original period, for the time left
    pace = chat["spec"]["budget"]["maxCost"] / 24
    assert budget["maxCost"] == pytest.approx(pace * left / 3600, abs=0.01)
    assert copy.manifest["spec"]["planning"]["intervalSeconds"] == 5
    assert copy.manifest["spec"]["targets"][0]["coldStartSeconds"] == 1  # 90 s / 360
    assert "tokenscale.dev/demo-adapted" in copy.manifest["metadata"]["annotations"]
    assert chat["spec"]["budget"]["period"] == "Day"  # the sample itself is untouched
    assert copy.period_end == end and end - now <= timedelta(hours=1)
