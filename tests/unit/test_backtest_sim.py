"""Simulated cluster and accounting on hand-computed tiny cases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from tokenscale.api import parse_spec
from tokenscale.sim.cluster import Group, SimTarget, lindley, on_time_tokens, ready_from_paid
from tokenscale.sim.engine import Settings, TargetRun, run_backtest
from tokenscale.sim.policies import HpaBank, HpaSettings
from tokenscale.sim.traces import Trace


def spec_for(**over: Any) -> Any:
    target = {
        "name": "m", "scaleTargetRef": {"name": "m"}, "minReplicas": 1, "maxReplicas": 50,
        "tokensPerReplicaPerSecond": 10, "costPerReplicaHour": 3.6, "coldStartSeconds": 20,
    }
    target.update(over.pop("target", {}))
    raw = {
        "budget": {"period": "Hour", "maxCost": 0.3},
        "planning": {"intervalSeconds": 30, "targetUtilization": 0.8, "headroom": 0.1},
        "targets": [target],
    }
    raw.update(over)
    return parse_spec(raw)


def constant_trace(rate: float, seconds: int) -> Trace:
    """One request per second with ``rate`` work tokens (half input, half output)."""
    t = np.arange(seconds, dtype=np.float64)
    half = np.full(seconds, rate / 2)
    return Trace(name="c", format="generic", kind="requests", duration_s=float(seconds),
                 time_s=t, input_tokens=half, output_tokens=half.copy())


def test_lindley_queue_by_hand() -> None:
    a = np.array([[5.0, 0.0, 10.0, 0.0, 0.0]])
    c = np.full((1, 5), 3.0)
    assert lindley(a, c, np.zeros(1))[0].tolist() == [2.0, 0.0, 7.0, 4.0, 1.0]
    assert lindley(a, c, np.array([4.0]))[0].tolist() == [6.0, 3.0, 10.0, 7.0, 4.0]
    # long horizons go in blocks; same answer as the plain recursion
    rng = np.random.default_rng(1)
    long_a = rng.exponential(3.0, size=(2, 9000))
    long_c = np.full((2, 9000), 3.0)
    q, ref = lindley(long_a, long_c, np.zeros(2)), np.zeros(2)
    expect = np.empty_like(long_a)
    for i in range(9000):
        ref = np.maximum(0.0, ref + long_a[:, i] - long_c[:, i])
        expect[:, i] = ref
    assert np.allclose(q, expect, atol=1e-6)


def test_on_time_tokens_by_hand() -> None:
    # capacity 3/s: second 0's 5 tokens: 3 served at 0, 2 at 1; second 2's 10 tokens finish at 5
    a = np.array([5.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0])
    q = lindley(a[None, :], np.full((1, 7), 3.0), np.zeros(1))[0]
    assert on_time_tokens(a, q, 0).tolist() == [3.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    assert on_time_tokens(a, q, 1).tolist() == [5.0, 0.0, 6.0, 0.0, 0.0, 0.0, 0.0]
    assert on_time_tokens(a, q, 3).tolist() == [5.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0]


def test_ready_follows_requests_after_cold_start_and_scale_down_is_lifo() -> None:
    paid = np.array([2, 2, 4, 4, 4, 4, 3, 1, 1, 5, 5], dtype=np.int64)
    # +2 requested at t=2 are ready at t=4 (cold start 2); scale-down takes effect at once
    assert ready_from_paid(paid, 2, 2).tolist() == [2, 2, 2, 2, 4, 4, 3, 1, 1, 1, 1]
    assert ready_from_paid(paid, 0, 2).tolist() == paid.tolist()


def test_group_matches_the_per_second_reference() -> None:
    rng = np.random.default_rng(7)
    targets = [SimTarget("a", 10.0, 1.0, 37, 0, 99), SimTarget("b", 5.0, 1.0, 0, 0, 99)]
    arrivals = rng.exponential(20.0, size=(2, 300))
    group = Group(arrivals, np.cumsum(arrivals, axis=1), targets, [0, 1, 0], [3, 2, 1], 15)
    group.advance(np.array([3, 2, 1]))
    while not group.done:
        group.advance(rng.integers(0, 6, size=3))
    for row, (ti, init) in enumerate(zip([0, 1, 0], [3, 2, 1], strict=True)):
        ready = ready_from_paid(group.paid[row], targets[ti].cold_start_s, init)
        assert group.ready[row].tolist() == ready.tolist()
        capacity = (ready * targets[ti].capacity)[None, :].astype(np.float64)
        q = lindley(arrivals[ti][None, :], capacity, np.zeros(1))[0]
        assert np.allclose(group.queue[row], q)
    # what Prometheus sees: served counter rate over 60 s at scrape 150 = (D(149) - D(89)) / 60
    served = np.cumsum(arrivals[0]) - group.queue[0]
    rate = group.rates_at(np.array([150]), 60)[0, 0]
    assert rate == pytest.approx((served[149] - served[89]) / 60)
    demand = group.demand_rates_at(np.array([150]), 60)[0, 0]
    assert demand == pytest.approx(arrivals[0, 90:150].sum() / 60)


def test_hpa_rules_by_hand() -> None:
    cap = np.full(4, 100.0)
    bank = HpaBank(np.full(4, 0.5), cap, np.ones(4, dtype=np.int64),
                   np.full(4, 100, dtype=np.int64), HpaSettings(stabilization_s=30),
                   initial=np.array([10, 10, 1, 10]))
    current = np.array([10, 10, 1, 10])
    # 520 tok/s -> 10.4 within tolerance; 2000 -> 40 but +100% cap -> 20; 1 -> 300 tok/s needs
    # 6, limited to +4 -> 5; 100 tok/s -> 2 but stabilized at the window's max 10
    got = bank.decide(np.array([520.0, 2000.0, 300.0, 100.0]), current)
    assert got.tolist() == [10, 20, 5, 10]
    bank.decide(np.array([520.0, 2000.0, 300.0, 100.0]), current)
    bank.decide(np.array([520.0, 2000.0, 300.0, 100.0]), current)
    # after the 30 s window only low recommendations remain: scale down to 2
    assert bank.decide(np.array([520.0, 2000.0, 300.0, 100.0]), current)[3] == 2


def test_static_cost_attainment_and_overrun_by_hand() -> None:
    spec = spec_for(target={"minReplicas": 0})
    bt = run_backtest(spec, {"m": constant_trace(10.0, 120)},
                      Settings(progress=False, engine=None, hpa_utilizations=(0.5, 0.9)))
    # horizon: 120 s trace + 10 s SLO + 60 s rate window, rounded up to 30 s -> 210 s
    assert bt.horizon == 210
    static = bt.policy_summary(bt.runs["static"])
    # ceil(10 tok/s / (10 tok/s x 0.8)) = 2 replicas for 210 s at 3.6/h = 0.001/s each
    assert static["gpu_hours"] == pytest.approx(2 * 210 / 3600)
    assert static["cost"] == pytest.approx(0.42)
    assert static["slo_attainment"] == 1.0
    assert static["tokens"] == pytest.approx(1200.0)
    assert static["budget_overrun"] == pytest.approx(0.42 - 0.3)
    assert static["scale_events"] == 0
    # the oracle needs 1 replica (10 tok/s = capacity), from t = 0 until the trace ends
    oracle = bt.policy_summary(bt.runs["oracle"])
    assert oracle["slo_attainment"] == 1.0
    assert oracle["cost"] == pytest.approx(0.12, abs=0.002)


def test_periods_and_price_windows_are_calendar_based() -> None:
    spec = spec_for(pricing={"schedule": [
        {"days": ["Mon"], "start": "00:00", "end": "00:30", "multiplier": 0.5}]})
    start = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)  # a Monday
    bt = run_backtest(spec, {"m": constant_trace(5.0, 3700)},
                      Settings(progress=False, engine=None, start=start, hpa_utilizations=(0.8,)))
    assert len(bt.period_starts) == 2  # hour periods: 00:00 and 01:00
    assert bt.period_index[3599] == 0 and bt.period_index[3600] == 1
    assert bt.price[:1800].tolist() == [0.5] * 1800 and bt.price[1800] == 1.0
    run = TargetRun(np.ones(bt.horizon, dtype=np.int64), np.ones(bt.horizon, dtype=np.int64),
                    np.zeros(bt.horizon))
    costs = bt.period_costs({"m": run})
    assert costs.tolist() == pytest.approx([1800 * 0.0005 + 1800 * 0.001,
                                            (bt.horizon - 3600) * 0.001])


def test_tokenscale_runs_the_planner_and_keeps_the_cost_budget() -> None:
    # demand needs ~4 replicas (30 tok/s at 10 tok/s x 0.8); the budget pays ~2 per hour
    spec = spec_for(budget={"period": "Hour", "maxCost": 7.2})
    bt = run_backtest(spec, {"m": constant_trace(30.0, 3000)},
                      Settings(progress=False, engine=None, hpa_utilizations=(0.8,)))
    ts = bt.policy_summary(bt.runs["tokenscale"])
    hpa = bt.policy_summary(bt.runs["hpa"])
    assert ts["budget_overrun"] == pytest.approx(0.0, abs=0.01)
    assert ts["cost"] <= 7.2 + 0.01
    assert hpa["cost"] > 7.2  # the HPA ignores the budget
    assert ts["slo_attainment"] < hpa["slo_attainment"]
    assert any(reason == "BudgetCapped" for _, reason in bt.reasons)


def test_sliding_windows_match_their_definitions() -> None:
    """ready_from_paid is a trailing minimum, sliding_max an asymmetric window maximum."""
    from tokenscale.sim.cluster import ready_from_paid
    from tokenscale.sim.oracle import sliding_max

    rng = np.random.default_rng(1)
    for _ in range(300):
        values = rng.integers(0, 9, size=int(rng.integers(1, 60))).astype(np.int64)
        cold, initial = int(rng.integers(0, 12)), int(rng.integers(0, 9))
        padded = np.concatenate([np.full(cold, initial), values])
        trailing_min = [padded[i : i + cold + 1].min() for i in range(len(values))]
        assert ready_from_paid(values, cold, initial).tolist() == trailing_min
        before, after = int(rng.integers(0, 7)), int(rng.integers(0, 7))
        window_max = [values[max(0, i - before) : i + after + 1].max()
                      for i in range(len(values))]
        assert sliding_max(values, before, after).tolist() == window_max


def test_the_planner_in_the_backtest_sees_the_ttft_with_the_prompts_prefill() -> None:
    """As the engine's TTFT histogram has it: the queue's wait + a request's prefill + one ITL.
    Long prompts at a light load (3 s of prefill, nobody waiting) are no SloBreach."""
    from datetime import UTC, datetime

    from tokenscale.sim.latency import EngineModel
    from tokenscale.sim.policies import TokenscaleController

    engine = EngineModel()
    spec = spec_for(target={"tokensPerReplicaPerSecond": 3000})
    arrivals = np.full((1, 300), 500.0)
    targets = [SimTarget("m", engine.decode_tokens_per_s, 3.6, 20, 1, 50)]

    def recent(prefill: list[float] | None) -> tuple[TokenscaleController, int]:
        group = Group(arrivals, np.cumsum(arrivals, axis=1), targets, [0], [2], 30)
        controller = TokenscaleController(spec, datetime(2026, 3, 4, tzinfo=UTC), [1000.0], 15,
                                          60, engine, prefill_seconds=prefill)
        replicas = np.array([2])
        while group.t < 240:
            replicas = controller.decide(group, group.t)
            group.advance(replicas)
        return controller, int(controller.decide(group, group.t)[0])

    plain, _ = recent(None)
    itl, ttft = plain.recent[0]
    assert ttft == pytest.approx(itl)  # no queue: no wait, no prefill counted
    long_prompts, replicas = recent([3.0])
    assert long_prompts.recent[0][1] == pytest.approx(3.0 + itl)
    assert ("m", "SloBreach") not in long_prompts.reasons and replicas <= 2


def test_the_backtest_gives_its_planner_each_targets_mean_prefill() -> None:
    """The wiring: run as the backtest runs it, the planner's TTFT signal carries each
    target's mean prefill (input tokens per request / the engine's prefill rate)."""
    from tokenscale.sim import engine as engine_mod
    from tokenscale.sim.latency import EngineModel

    model = EngineModel()
    spec = spec_for(target={"tokensPerReplicaPerSecond": 3000})
    cfg = engine_mod.Settings(progress=False, engine=model, warmup_s=60)
    w = engine_mod._world(spec, {"m": constant_trace(4000.0, 600)}, cfg)
    w.bar = engine_mod._progress(1, False, "")
    _, controller = engine_mod._run_tokenscale(w)
    # one request a second of 2,000 input tokens
    assert controller.prefill_seconds == [pytest.approx(2000.0 / model.prefill_tokens_per_s)]
    itl, ttft = controller.recent[0]
    assert ttft >= 2000.0 / model.prefill_tokens_per_s + itl - 1e-9
