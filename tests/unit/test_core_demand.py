"""Planner step 3: demand is the arrival rate, not only the served rate (plain inputs).

Without a gateway's arrival counter, what the served rate hides is recovered from the queue's
growth since the last cycle and from censoring (a served rate at the admission rate published
last cycle); with the counter, its samples are the demand."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from core_world import NOW, flat, running, seen, spec, target, world

from tokenscale.core.capacity import Previous, censored_floor, queue_growth_rate
from tokenscale.core.planner import ADMISSION_SHARE, plan

LAST = NOW - timedelta(seconds=30)


@pytest.mark.parametrize(
    ("queue", "previous", "expected"),
    [
        (40.0, Previous(queue=10.0, seconds=30.0), 30 * 100 / 30),  # 30 more waiting in 30 s
        (10.0, Previous(queue=40.0, seconds=30.0), 0.0),  # the queue shrank: nothing hidden
        (40.0, Previous(queue=None, seconds=30.0), 0.0),  # first cycle: unknown
        (40.0, Previous(queue=10.0, seconds=0.0), 0.0),  # no time passed
    ],
)
def test_queue_growth_is_arrivals_the_served_rate_does_not_show(
        queue: float, previous: Previous, expected: float) -> None:
    assert queue_growth_rate(queue, previous, 100.0) == pytest.approx(expected)


def test_a_growing_queue_raises_the_demand_by_its_growth() -> None:
    obs = seen(3, 2000, queue_length=40.0, tokens_per_request=100.0)
    grown = plan(spec(), world(llama=obs), running(last_accounted=LAST,
                                                  queues={"llama": 10.0}), NOW)
    steady = plan(spec(), world(llama=obs), running(last_accounted=LAST,
                                                   queues={"llama": 40.0}), NOW)
    # growth 30 requests x 100 tokens / 30 s = +100 tok/s on top of the same drain
    assert grown.decisions["llama"].replicas >= steady.decisions["llama"].replicas
    assert "queue growth +100" in grown.decisions["llama"].message
    assert "growth" not in steady.decisions["llama"].message


def test_censored_floor_leaves_the_tolerance_band_and_adds_a_replica() -> None:
    assert censored_floor(3000.0, 3, 0.1) == pytest.approx(4000.0)  # one replica (1000) more
    assert censored_floor(20000.0, 20, 0.1) == pytest.approx(24000.0)  # 2 x tolerance more


def test_a_served_rate_at_the_published_admission_is_censored_and_probes_upwards() -> None:
    limit = 3 * 1000 * ADMISSION_SHARE
    memory = running(last_accounted=LAST, admissions={"llama": limit})
    result = plan(spec(), world(llama=seen(3, limit)), memory, NOW)
    d = result.decisions["llama"]
    assert d.replicas > 3, d.message  # the demand above the limit is unknown: ask for more
    assert "censored" in d.message
    # the new replicas are not ready yet: admission stays at what the ready ones serve
    assert d.admission_tokens_per_second == pytest.approx(limit)
    # the same served rate without a published admission is just the demand
    plain = plan(spec(), world(llama=seen(3, limit)), running(last_accounted=LAST), NOW)
    assert plain.decisions["llama"].replicas == 3
    assert plain.decisions["llama"].admission_tokens_per_second is None


def test_a_served_rate_below_the_admission_releases_it() -> None:
    memory = running(last_accounted=LAST, admissions={"llama": 2850.0})
    result = plan(spec(), world(llama=seen(3, 1500)), memory, NOW)
    assert result.decisions["llama"].admission_tokens_per_second is None
    assert result.memory.admissions == {}


def test_a_gateway_arrival_counter_is_the_demand() -> None:
    obs = seen(3, 2850, arrival_rate_samples=flat(5200))
    memory = running(last_accounted=LAST, admissions={"llama": 2850.0})
    d = plan(spec(), world(llama=obs), memory, NOW).decisions["llama"]
    assert d.forecast_tokens_per_second == pytest.approx(5200)
    assert d.replicas == 6, d.message  # 5,200 tok/s at 1,000 per replica
    assert "arrivals" in d.message and "censored" not in d.message


def test_the_queue_and_admission_of_a_cycle_are_remembered() -> None:
    s = spec([target()], budget={"maxCost": 36})
    result = plan(s, world(llama=seen(3, 5000, queue_length=7.0)), running(), NOW)
    d = result.decisions["llama"]
    assert d.reason == "BudgetCapped"
    assert result.memory.queues == {"llama": 7.0}
    assert result.memory.admissions == {"llama": d.admission_tokens_per_second}


# ------------------------------------------------------------------ latency above the SLO

@pytest.mark.parametrize(
    ("case", "itl", "ttft", "queue", "ready", "expected", "reason"),
    [
        ("itl-over", 0.08, 0.3, 0.0, 3, 4, "SloBreach"),  # demand fits 3, latency says not
        ("ttft-over-requests-wait", 0.02, 5.0, 1.0, 3, 4, "SloBreach"),
        # nobody waits: a TTFT above the target is the prompts' prefill, not the load's
        ("ttft-over-nobody-waits", 0.02, 5.0, 0.0, 3, 3, "DemandDriven"),
        ("within", 0.03, 0.3, 0.0, 3, 3, "DemandDriven"),
        ("not-read", None, None, 0.0, 3, 3, "DemandDriven"),
        # a replica is already starting: it is the answer, no second one for the same breach
        ("replica-starting", 0.08, 0.3, 0.0, 2, 3, "DemandDriven"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_latency_above_the_slo_adds_a_replica_at_once(
        case: str, itl: float | None, ttft: float | None, queue: float, ready: int,
        expected: int, reason: str) -> None:
    obs = seen(3, 2500, recent_itl_seconds=itl, recent_ttft_seconds=ttft, queue_length=queue)
    obs = replace(obs, ready_replicas=ready)
    d = plan(spec(), world(llama=obs), running(), NOW).decisions["llama"]
    assert (d.replicas, d.reason) == (expected, reason), d.message
    if case == "ttft-over-nobody-waits":
        assert "not one more replica's to fix: no request waits" in d.message


#: 2,500 tok/s on 3 replicas: one more leaves 625 tok/s per replica. Twelve windows (pods x
#: steps) at or below that load with the ITL above 50 ms: the engine is slow at any load
SLOW = tuple((300.0 + 25.0 * i, 0.07 + 0.001 * i) for i in range(12))


@pytest.mark.parametrize(
    ("case", "pairs", "own_query", "expected", "reason"),
    [
        ("slow-at-every-lighter-load", SLOW, False, 3, "DemandDriven"),
        # one window at a lighter load met the SLO: the load is the cause
        ("one-lighter-window-fast", (*SLOW, (280.0, 0.04)), False, 4, "SloBreach"),
        # eleven are not the evidence a fit needs; heavier windows do not count
        ("too-few-lighter-windows", (*SLOW[:11], (700.0, 0.09), (900.0, 0.1)), False, 4,
         "SloBreach"),
        ("no-history", (), False, 4, "SloBreach"),
        # with its own tokenRateQuery the history's loads are in that query's tokens too
        # (the observation converts them): the same evidence
        ("own-token-query", SLOW, True, 3, "DemandDriven"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_an_itl_above_the_slo_at_every_lighter_load_is_not_scaled_for(
        case: str, pairs: tuple[tuple[float, float], ...], own_query: bool, expected: int,
        reason: str) -> None:
    query = {"metrics": {"tokenRateQuery": "sum by (pod) (rate(tokens_total[1m]))"}} \
        if own_query else {}
    obs = replace(seen(3, 2500, recent_itl_seconds=0.08), latency_samples=pairs)
    d = plan(spec([target(**query)]), world(llama=obs), running(), NOW).decisions["llama"]
    assert (d.replicas, d.reason) == (expected, reason), d.message
    if reason == "DemandDriven":
        assert "ITL 80 ms of 50 ms" in d.message and "all 12 windows" in d.message
        assert "625 tok/s per replica" in d.message


@pytest.mark.parametrize(
    ("case", "fields", "expected"),
    [
        # the engine is slow at any load: no replica added for it, and none removed either
        ("itl-not-the-load", {"recent_itl_seconds": 0.09,
                              "latency_samples": tuple((x / 3, v) for x, v in SLOW)}, 3),
        # nobody waits: the prompts' prefill; held, not scaled down
        ("ttft-nobody-waits", {"recent_ttft_seconds": 5.0}, 3),
        # the queue series is missing: a TTFT above the target may be the load's
        ("ttft-queue-unknown", {"recent_ttft_seconds": 5.0, "queue_known": False}, 4),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_latency_above_the_slo_is_never_a_scale_down(
        case: str, fields: dict[str, object], expected: int) -> None:
    # 1,000 tok/s on 3 replicas would scale down to 1 without the latency above the SLO
    obs = replace(seen(3, 1000), **fields)
    d = plan(spec(), world(llama=obs), running(), NOW).decisions["llama"]
    assert (d.replicas, d.reason) == (expected, "SloBreach"), d.message
    if expected == 3:
        assert "not one more replica's to fix" in d.message
        assert "the demand's count kept at 3 while it lasts" in d.message


@pytest.mark.parametrize(
    ("case", "current", "ready", "rate", "expected", "says"),
    [
        # above maxReplicas (10): down to it, no lower
        ("above-max", 12, 12, 1000.0, 10, "down to maxReplicas 10 only"),
        ("at-max", 10, 10, 1000.0, 10, "maxReplicas 10 reached"),
        ("replica-starting", 4, 3, 1000.0, 4, "a replica is starting"),
        # the demand alone needs 6: more than one replica at once, and said so
        ("demand-needs-more", 3, 3, 5500.0, 6, "at once, the tolerance band skipped, 3 -> 6"),
        ("one-more", 3, 3, 2500.0, 4, "one replica more at once, 3 -> 4"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_slo_breach_says_what_it_does(case: str, current: int, ready: int, rate: float,
                                           expected: int, says: str) -> None:
    obs = replace(seen(current, rate, recent_itl_seconds=0.09), ready_replicas=ready)
    d = plan(spec([target(maxReplicas=10)]), world(llama=obs), running(), NOW
             ).decisions["llama"]
    assert d.replicas == expected, d.message
    assert says in d.message, d.message


def test_a_breach_is_not_a_scale_down_and_skips_the_tolerance_band() -> None:
    # 2,950 tok/s on 3 replicas is within tolerance, and 1,000 tok/s would scale down:
    # with the latency above the SLO neither holds
    for rate in (2950.0, 1000.0):
        obs = seen(3, rate, recent_itl_seconds=0.09)
        d = plan(spec(), world(llama=obs), running(), NOW).decisions["llama"]
        assert (d.replicas, d.reason) == (4, "SloBreach"), d.message
        assert "ITL 90 ms of 50 ms" in d.message
