"""Planner step 2, the service model: capacity within the SLO fitted from (load per replica,
mean inter-token latency) pairs, and used by the planner when the fit is good."""

from __future__ import annotations

import pytest
from core_world import NOW, running, seen, spec, target, world

from tokenscale.api import SloSpec
from tokenscale.core.planner import plan
from tokenscale.core.service import fit_service

SLO = SloSpec(ttft_seconds=2.0, inter_token_latency_seconds=0.05, attainment=0.99)


def curve(loads: list[float], floor: float = 0.01, raw: float = 4000.0,
          wobble: float = 0.0) -> list[tuple[float, float]]:
    """Pairs on ITL = floor / (1 - x / raw), with an alternating relative wobble."""
    return [(x, floor / (1 - x / raw) * (1 + (wobble if i % 2 else -wobble)))
            for i, x in enumerate(loads)]


LOADS = [float(x) for x in range(400, 3400, 150)]  # 20 load levels up to 85 % of raw


@pytest.mark.parametrize(
    ("case", "pairs", "source", "capacity"),
    [
        # exact curve: capacity where ITL = 50 ms is 4000 x (1 - 10/50) = 3200 tokens/s
        ("exact-curve", curve(LOADS), "Fitted", 3200.0),
        ("noisy-curve", curve(LOADS, wobble=0.03), "Fitted", 3200.0),
        ("slower-engine", curve(LOADS, floor=0.02, raw=5000.0), "Fitted", 3000.0),
        # too few pairs, one load level, latency falling with load, far extrapolation
        ("too-few", curve(LOADS[:8]), "Spec", 1000.0),
        ("one-load-level", [(1500.0, 0.02)] * 30, "Spec", 1000.0),
        ("wrong-shape", [(x, 0.05 - x / 1e5) for x in LOADS], "Spec", 1000.0),
        ("light-load-only", curve([float(x) for x in range(100, 700, 25)]), "Spec", 1000.0),
        ("garbage-dropped", [*curve(LOADS), (float("nan"), 0.1), (100.0, 0.0)], "Fitted",
         3200.0),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_fit_service(case: str, pairs: list[tuple[float, float]], source: str,
                     capacity: float) -> None:
    fit = fit_service(pairs, SLO, spec_capacity=1000.0)
    assert fit.source == source, fit
    assert fit.capacity_within_slo == pytest.approx(capacity, rel=0.05)
    if source == "Fitted":
        assert fit.r2 is not None and fit.r2 >= 0.5 and fit.samples >= 12


def test_the_planner_sizes_with_the_fitted_capacity_and_reports_it() -> None:
    s = spec([target()])  # the spec says 1,000 tokens/s per replica
    fitted = world(llama=seen(4, 6000, latency_samples=tuple(curve(LOADS))))
    spec_only = world(llama=seen(4, 6000))
    with_fit = plan(s, fitted, running(), NOW).decisions["llama"]
    without = plan(s, spec_only, running(), NOW).decisions["llama"]
    assert without.needed_replicas == 6  # 6,000 / 1,000
    assert with_fit.needed_replicas == 2  # 6,000 / 3,200
    assert with_fit.service_model is not None and with_fit.service_model.source == "Fitted"
    assert with_fit.service_model.capacity_within_slo == pytest.approx(3200, rel=0.01)
    assert "3,200 tok/s/replica" in with_fit.message
    assert without.service_model is not None and without.service_model.source == "Spec"


def test_a_spec_close_to_the_fit_is_kept() -> None:
    """Within 25 % the spec stands (mean latencies bias the fit low); the fit is reported."""
    s = spec([target(tokensPerReplicaPerSecond=2800)])  # fit says 3,200: 14 % off
    d = plan(s, world(llama=seen(4, 6000, latency_samples=tuple(curve(LOADS)))), running(),
             NOW).decisions["llama"]
    assert d.needed_replicas == 3  # 6,000 / 2,800, not 6,000 / 3,200 = 2
    assert d.service_model is not None and d.service_model.source == "Spec"
    assert d.service_model.capacity_within_slo == 2800 and d.service_model.samples == 20


# --------------------------------------------- tokensPerReplicaPerSecond is optional

def _no_spec(**fields: object) -> dict[str, object]:
    raw = target(**fields)
    raw.pop("tokensPerReplicaPerSecond")
    return raw


@pytest.mark.parametrize(
    ("case", "pairs", "source", "capacity"),
    [
        ("fitted", curve(LOADS), "Fitted", 3200.0),
        # too few pairs for a fit: the highest load seen within the 50 ms ITL (a lower bound)
        ("observed-lower-bound", curve(LOADS[:8]), "Observed", LOADS[7]),
        # only loads above the SLO seen: nothing known
        ("all-late", [(3500.0, 0.2)] * 5, "Unknown", 0.0),
        ("nothing", [], "Unknown", 0.0),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_without_a_spec_capacity_the_fit_then_the_observed_bound(
        case: str, pairs: list[tuple[float, float]], source: str, capacity: float) -> None:
    fit = fit_service(pairs, SLO, None)
    assert fit.source == source
    assert fit.capacity_within_slo == pytest.approx(capacity, rel=0.02)


def test_a_target_without_spec_capacity_is_sized_by_its_fit() -> None:
    obs = seen(2, 6400.0, latency_samples=tuple(curve(LOADS)))
    d = plan(spec([_no_spec()]), world(llama=obs), running(), NOW).decisions["llama"]
    assert d.service_model is not None and d.service_model.source == "Fitted"
    assert d.replicas == 2, d.message  # 6,400 tok/s at the fitted 3,200 per replica
    assert d.reason == "DemandDriven"


def test_a_target_without_spec_capacity_or_latency_is_held_never_scaled_down() -> None:
    result = plan(spec([_no_spec()]), world(llama=seen(4, 100.0)), running(), NOW)
    d = result.decisions["llama"]
    assert d.reason == "MetricsUnavailableHold" and d.replicas == 4
    assert "NoServiceModel" in d.message
    available = {c.type: c for c in result.conditions}["MetricsAvailable"]
    assert available.status == "False" and "NoServiceModel" in available.message
