"""`tokenscale backtest` end to end on a slice of a real trace: table, JSON shape, PNG."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tokenscale.cli import main

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "traces"
BUDGET = """\
apiVersion: tokenscale.dev/v1alpha1
kind: TokenBudget
metadata: {name: chat, namespace: inference}
spec:
  budget: {period: Hour, timeZone: Europe/Berlin, maxCost: 40, currency: EUR}
  planning: {intervalSeconds: 30, targetUtilization: 0.8, headroom: 0.1}
  targets:
    - name: llama-8b
      scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: llama-8b}
      minReplicas: 1
      maxReplicas: 32
      tokensPerReplicaPerSecond: 3400
      costPerReplicaHour: 3.9
      coldStartSeconds: 60
"""
POLICY_KEYS = {"cost", "gpu_hours", "slo_attainment", "budget_overrun", "scale_events"}


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/traces not present")
def test_the_yardstick_over_seeds_on_a_real_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default model (engines, per-request SLO, the HPA/KEDA family, the oracle family)
    over three overlapping slices: the JSON contract of the yardstick."""
    budget = tmp_path / "budget.yaml"
    budget.write_text(BUDGET.replace("maxCost: 40", "maxCost: 4000"))
    out = tmp_path / "out.json"
    code = main([
        "backtest", "--budget", str(budget),
        "--trace", f"llama-8b={SHARED / 'azure2023_AzureLLMInferenceTrace_conv.csv'}",
        "--scale", "8", "--duration", "1800", "--seeds", "3", "--warmup", "120",
        "--json", str(out), "--no-progress",
    ])
    assert code == 0
    table = capsys.readouterr().out
    assert "lower envelope" in table and "95 % interval" in table
    doc = json.loads(out.read_text())
    for summary in doc["policies"].values():
        assert set(summary) >= POLICY_KEYS | {"goodput_tokens", "shed_share"}
        assert 0.0 <= summary["slo_attainment"] <= 1.0 and summary["shed_share"] == 0.0
        assert 0 < summary["goodput_tokens"] <= summary["request_tokens"]
    members = {p["member"] for p in doc["hpa_family"]}
    assert {m.split("@")[0] for m in members} == {
        f"hpa-{m}-{w}s" for m in ("served", "demand", "waiting", "kv") for w in (90, 300)}
    front = doc["hpa_frontier"]  # the envelope: cheaper only with less attainment
    assert all(a["cost"] < b["cost"] and a["slo_attainment"] < b["slo_attainment"]
               for a, b in itertools.pairwise(front))
    assert {p["member"] for p in front} <= members and doc["frontier_member"] in members
    assert len(doc["seeds"]) == 3
    ratios = [s["cost_ratio_vs_hpa_at_equal_slo"] for s in doc["seeds"]]
    low, high = doc["cost_ratio_ci95"]
    assert low <= doc["cost_ratio_vs_hpa_at_equal_slo"] <= high
    assert doc["cost_ratio_vs_hpa_at_equal_slo"] == pytest.approx(sum(ratios) / 3, abs=1e-5)
    assert 0 < doc["oracle_lower_bound_cost"] <= doc["oracle_cost_at_tokenscale_slo"]
    assert "gap_captured" in doc
    assert doc["settings"]["slo"]["llama-8b"] == {
        "ttftSeconds": 2.0, "interTokenLatencySeconds": 0.05, "attainment": 0.99}


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/traces not present")
def test_backtest_json_shape_on_a_real_trace_slice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    budget = tmp_path / "budget.yaml"
    budget.write_text(BUDGET)
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    code = main([
        "backtest", "--budget", str(budget),
        "--trace", f"llama-8b={SHARED / 'azure2023_AzureLLMInferenceTrace_conv.csv'}",
        "--scale", "3", "--duration", "900", "--slo-seconds", "10", "--fluid",
        "--hpa-utilizations", "0.5,0.7,0.9", "--json", str(out), "--plot", str(png),
    ])
    assert code == 0
    table = capsys.readouterr().out
    assert "tokenscale" in table and "cost ratio vs hpa at equal SLO" in table
    doc = json.loads(out.read_text())
    assert set(doc["policies"]) == {"tokenscale", "hpa", "static", "oracle"}
    for summary in doc["policies"].values():
        assert set(summary) >= POLICY_KEYS
        assert 0.0 <= summary["slo_attainment"] <= 1.0
        assert summary["budget_overrun"] >= 0.0 and summary["cost"] > 0
    assert doc["policies"]["oracle"]["slo_attainment"] == pytest.approx(1.0)
    assert [p["target_utilization"] for p in doc["hpa_frontier"]] == [0.5, 0.7, 0.9]
    for p in doc["hpa_frontier"]:
        assert {"target_utilization", "cost", "slo_attainment"} <= set(p)
    assert doc["cost_ratio_vs_hpa_at_equal_slo"] > 0
    assert set(doc["targets"]) == {"llama-8b"}
    assert set(doc["targets"]["llama-8b"]) == {"tokenscale", "hpa", "static", "oracle"}
    assert {"cost", "gpu_hours", "slo_attainment"} <= set(doc["targets"]["llama-8b"]["hpa"])
    assert doc["currency"] == "EUR" and doc["settings"]["trace_seconds"] == 900
    # the tight hourly budget holds for tokenscale only
    assert doc["policies"]["tokenscale"]["budget_overrun"] == pytest.approx(0.0, abs=0.05)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backtest_refuses_unknown_targets_and_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    budget = tmp_path / "budget.yaml"
    budget.write_text(BUDGET)
    trace = tmp_path / "t.csv"
    trace.write_text("timestamp_s,input_tokens,output_tokens\n0,10,10\n")
    assert main(["backtest", "--budget", str(budget), "--trace", f"nope={trace}"]) == 2
    assert "no target 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    assert main(["backtest", "--budget", str(budget), "--trace", f"llama-8b={bad}"]) == 2
    assert "unknown trace format" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text(BUDGET.replace("maxReplicas: 32", "maxReplicas: 0"))
    assert main(["backtest", "--budget", str(broken), "--trace", f"llama-8b={trace}"]) == 2
    assert "maxReplicas" in capsys.readouterr().err
