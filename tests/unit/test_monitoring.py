"""Alert rules and the dashboard: valid PromQL (real promtool) on metrics the operator exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tokenscale.metrics import OperatorMetrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
RULES = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
DASHBOARD = json.loads((MONITORING / "tokenscale-dashboard.json").read_text())


def _exported_names() -> set[str]:
    names: set[str] = set()
    for metric in OperatorMetrics().registry.collect():
        names.add(metric.name)
        if metric.type == "counter":
            names.add(metric.name + "_total")
        if metric.type == "histogram":
            names.update(metric.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def _expressions() -> list[str]:
    exprs = [r["expr"] for g in RULES["spec"]["groups"] for r in g["rules"]]
    exprs += [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]
    return exprs


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with prometheus")
def test_rules_pass_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": RULES["spec"]["groups"]}))
    result = subprocess.run(["promtool", "check", "rules", str(rules)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_referenced_metric_is_exported() -> None:
    exported = _exported_names()
    referenced = {m for e in _expressions() for m in re.findall(r"\btokenscale_[a-z_]+", e)}
    assert referenced, "no tokenscale metric referenced"
    assert referenced <= exported, sorted(referenced - exported)


def test_dashboard_panels_are_distinct_and_placed() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] and p["gridPos"]["w"] > 0 for p in DASHBOARD["panels"])
