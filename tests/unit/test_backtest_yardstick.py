"""The yardstick's parts on plain inputs: the engine's latency, the per-request SLO, ServeGen
interpolation, replication of request traces and the HPA family's windows."""

from __future__ import annotations

import numpy as np
import pytest

from tokenscale.api import SloSpec
from tokenscale.sim.latency import EngineModel, Requests, request_outcome, requests_of
from tokenscale.sim.policies import FamilyBank, HpaSettings
from tokenscale.sim.traces import Trace

ENGINE = EngineModel(decode_tokens_per_s=1000.0, prefill_tokens_per_s=10000.0,
                     itl_floor_s=0.01, max_batch=100)
SLO = SloSpec(ttft_seconds=2.0, inter_token_latency_seconds=0.05, attainment=0.99)


def test_latency_grows_with_load_and_caps_at_a_full_batch() -> None:
    itl = ENGINE.itl(np.array([0.0, 0.5, 0.8, 0.95, 1.0]))
    assert itl.tolist() == pytest.approx([0.01, 0.02, 0.05, 0.11, 0.11])  # cap: 0.01 + 0.1
    assert ENGINE.utilization_within(SLO) == pytest.approx(0.8)  # 0.01 / (1 - u) = 0.05
    assert ENGINE.capacity_within_slo(SLO) == pytest.approx(800.0)
    kv = ENGINE.kv_usage(np.array([0.1, 0.5, 0.9, 1.0]))
    assert np.all(np.diff(kv) > 0) and kv[-1] == 1.0
    assert ENGINE.prefill_weight == pytest.approx(0.1)


def _one_second_requests(n: int, inp: float, out: float, second: int) -> Requests:
    return Requests(np.full(n, second + 0.5), np.full(n, inp), np.full(n, out), np.ones(n))


def test_requests_meet_the_slo_at_moderate_load_and_miss_it_when_run_hot() -> None:
    seconds = 60
    req = _one_second_requests(10, 1000.0, 50.0, 10)
    ready = np.full(seconds, 2, dtype=np.int64)
    for load, expected in ((0.5, 1.0), (0.95, 0.0)):  # ITL 20 ms vs 200 ms (capped 110)
        arrivals = np.full(seconds, 2 * 1000.0 * load)  # every second, at that utilisation
        queue = np.zeros(seconds)
        out = request_outcome(req, arrivals, ready, queue, ENGINE, SLO)
        assert out.attainment == expected, load
        assert out.requests == 10 and out.shed_share == 0.0
        assert out.goodput_tokens == pytest.approx(expected * 10 * 1050)


def test_queue_wait_counts_in_ttft_and_shed_requests_are_not_late() -> None:
    seconds = 30
    req = _one_second_requests(4, 100.0, 10.0, 5)
    ready = np.ones(seconds, dtype=np.int64)
    arrivals = np.full(seconds, 500.0)
    queue = np.zeros(seconds)
    queue[4:7] = 2500.0  # 2.5 s of work ahead: TTFT > 2 s
    late = request_outcome(req, arrivals, ready, queue, ENGINE, SLO)
    assert late.attainment == 0.0 and late.ttft_p50_s > 2.0
    admitted = np.ones(seconds)
    admitted[5] = 0.25  # three of the four were turned away at admission
    shed = request_outcome(req, arrivals, ready, np.zeros(seconds), ENGINE, SLO,
                           admitted=admitted)
    assert shed.shed_share == pytest.approx(0.75) and shed.attainment == pytest.approx(0.25)
    warm = request_outcome(req, arrivals, ready, queue, ENGINE, SLO, warmup_s=10)
    assert warm.requests == 0 and warm.attainment == 1.0  # before the warm-up: not counted


def test_servegen_windows_are_interpolated_not_stepped() -> None:
    rates = np.array([10.0, 30.0, 10.0])
    trace = Trace(name="w", format="servegen", kind="windows", duration_s=1800.0,
                  window_start_s=np.array([0.0, 600.0, 1200.0]), window_s=600.0,
                  request_rate=rates, input_rate=rates * 100, output_rate=rates * 10)
    req = requests_of(trace, seed=1)
    per_second = np.bincount(req.arrival_s.astype(np.int64), weights=req.weight,
                             minlength=1800)
    edge = per_second[590:610].mean()  # at the first window edge: halfway, no jump
    assert 15 < edge < 25
    assert per_second[880:920].mean() == pytest.approx(30, rel=0.15)  # the middle window's centre
    assert np.allclose(req.input_tokens, 100.0) and np.allclose(req.output_tokens, 10.0)
    again = requests_of(trace, seed=1)
    assert np.array_equal(again.weight, req.weight)  # seeded


def test_replicating_a_request_trace_multiplies_the_rate_and_keeps_the_requests() -> None:
    times = np.arange(0.0, 1000.0, 1.0)
    trace = Trace(name="r", format="generic", kind="requests", duration_s=1000.0,
                  time_s=times, input_tokens=np.full(1000, 7.0), output_tokens=np.full(1000, 3.0))
    more = trace.replicated(2.5, seed=3)
    assert more.time_s is not None and more.input_tokens is not None
    assert len(more.time_s) == pytest.approx(2500, rel=0.05)
    assert np.all(np.diff(more.time_s) >= 0) and set(more.input_tokens.tolist()) == {7.0}
    assert more.time_s.max() < 1000.0


def test_the_90s_member_scales_down_before_the_300s_member() -> None:
    bank = FamilyBank(np.array([90, 300], dtype=np.int64), np.ones(2, dtype=np.int64),
                      np.full(2, 50, dtype=np.int64), np.full(2, 10, dtype=np.int64),
                      HpaSettings())
    current = np.full(2, 10, dtype=np.int64)
    steps = []
    for _sync in range(25):  # demand fell to 2 replicas' worth
        current = bank.decide(np.full(2, 2.0), current)
        steps.append(current.tolist())
    first_down = [next(k for k, s in enumerate(steps) if s[row] < 10) for row in (0, 1)]
    assert first_down[0] * 15 >= 90 - 15 and first_down[1] * 15 >= 300 - 15
    assert first_down[0] < first_down[1] and steps[-1] == [2, 2]


def test_under_a_binding_budget_the_oracle_within_it_never_overruns_and_sheds() -> None:
    """A demand of ~8 replicas within the SLO against a budget for ~3: tokenscale admits what
    it can pay, and the budget-aware oracle keeps every hour within maxCost too."""
    from test_backtest_sim import constant_trace, spec_for

    from tokenscale.sim.engine import Settings, run_backtest

    spec = spec_for(budget={"period": "Hour", "maxCost": 10.8},
                    target={"tokensPerReplicaPerSecond": 3000, "costPerReplicaHour": 3.6})
    bt = run_backtest(spec, {"m": constant_trace(20000.0, 3600)},
                      Settings(progress=False, warmup_s=120))
    assert bt.budget_oracle is not None
    oracle = bt.policy_summary(bt.budget_oracle)
    tokenscale = bt.policy_summary(bt.runs["tokenscale"])
    assert oracle["budget_overrun"] == 0.0 and tokenscale["budget_overrun"] <= 0.01
    assert 0 < oracle["shed_share"] < 1 and tokenscale["shed_share"] > 0
    assert oracle["goodput_tokens"] > 0


def test_the_same_split_oracle_keeps_each_target_within_what_tokenscale_spent_on_it() -> None:
    """Two targets under one binding budget: the oracle held to tokenscale's split never
    spends more on a target in an hour than tokenscale did, and reports its goodput."""
    from test_backtest_sim import constant_trace

    from tokenscale.api import parse_spec
    from tokenscale.backtest.report import to_json
    from tokenscale.sim.engine import Settings, run_backtest

    def target(name: str, price: float, weight: float) -> dict[str, object]:
        return {"name": name, "scaleTargetRef": {"name": name}, "minReplicas": 1,
                "maxReplicas": 20, "tokensPerReplicaPerSecond": 3000,
                "costPerReplicaHour": price, "coldStartSeconds": 20, "weight": weight}

    spec = parse_spec({"budget": {"period": "Hour", "maxCost": 21.6},
                       "planning": {"intervalSeconds": 30, "targetUtilization": 0.8},
                       "targets": [target("a", 3.6, 1), target("b", 7.2, 2)]})
    bt = run_backtest(spec, {"a": constant_trace(15000.0, 3600),
                             "b": constant_trace(15000.0, 3600)},
                      Settings(progress=False, warmup_s=120))
    split = bt.budget_oracle_same_split
    assert split is not None and set(split) == {"a", "b"}
    for name in ("a", "b"):
        spent = bt.period_costs({name: bt.runs["tokenscale"][name]})
        assert (bt.period_costs({name: split[name]}) <= spent + 1e-6).all()
    doc = to_json(bt)
    assert doc["goodput_vs_budget_oracle_same_split"] > 0
    assert doc["budget_oracle_same_split"]["budget_overrun"] == 0.0


def test_the_quality_value_is_the_budgets_own_measure_of_the_goodput() -> None:
    """``quality_value`` is ``Σ weight × (a + b × ln(goodput tokens/s))`` over the counted
    seconds, with each target's curve (the default a = 0, b = 1 where the spec has none)."""
    import math

    from test_backtest_sim import constant_trace

    from tokenscale.api import parse_spec
    from tokenscale.sim.engine import Settings, run_backtest

    def target(name: str, weight: float, performance: dict[str, float]) -> dict[str, object]:
        return {"name": name, "scaleTargetRef": {"name": name}, "minReplicas": 1,
                "maxReplicas": 20, "tokensPerReplicaPerSecond": 3000,
                "costPerReplicaHour": 3.6, "coldStartSeconds": 20, "weight": weight,
                "performance": performance}

    spec = parse_spec({"budget": {"period": "Hour", "maxCost": 14.4},
                       "planning": {"intervalSeconds": 30, "targetUtilization": 0.8},
                       "targets": [target("a", 1, {"a": 0.5, "b": 0.03}),
                                   target("b", 2, {})]})
    bt = run_backtest(spec, {"a": constant_trace(9000.0, 1800),
                             "b": constant_trace(9000.0, 1800)},
                      Settings(progress=False, warmup_s=120))
    runs = bt.runs["tokenscale"]
    seconds = bt.horizon - 120
    goodput = [bt.target_summary(runs[n], i)["goodput_tokens"] for i, n in enumerate("ab")]
    assert min(goodput) > 0
    expected = (1 * (0.5 + 0.03 * math.log(goodput[0] / seconds))
                + 2 * (0.0 + 1.0 * math.log(goodput[1] / seconds)))
    assert bt.policy_summary(runs)["quality_value"] == pytest.approx(expected)
    assert bt.quality_value([goodput[0], 0.0]) is None  # nothing in time: no finite value


def test_seeds_average_every_figure_and_leave_out_one_a_seed_lacks() -> None:
    """The policies' figures are means over the seeds (counts as rounded means); a figure a
    seed lacks (a quality value where a target served nothing in time), whichever seed it
    is, is left out rather than averaged over the seeds that have it; names are the first
    seed's."""
    from tokenscale.backtest.command import _averaged

    out = _averaged([{"cost": 1.0, "scale_events": 3, "member": "hpa@0.7"},
                     {"cost": 3.0, "quality_value": 2.0, "scale_events": 5,
                      "member": "hpa@0.8"},
                     {"cost": 5.0, "quality_value": 4.0, "scale_events": 8,
                      "member": "hpa@0.7"}])
    assert out == {"cost": 3.0, "scale_events": 5, "member": "hpa@0.7"}
    every = _averaged([{"quality_value": 2.0, "peak_replicas": 4},
                       {"quality_value": 3.0, "peak_replicas": 5}])
    assert every == {"quality_value": 2.5, "peak_replicas": 4}  # 4.5 rounds to even
