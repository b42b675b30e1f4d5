"""Measured accounting, end to end: ``status.spend`` against the ground truth
(tokenscale_testbed/truth.py) across an hour rollover, a price-window edge and an operator
restart, with replicas changing on the way.

The test lives on its own clock (a Monday, 14 s before 10:00 UTC), whatever
``TOKENSCALE_TEST_CLOCK`` says: budget ``roll`` (Hour, UTC) rolls over at 10:00; budget
``edge`` (Day, Asia/Kathmandu, where 10:00 UTC is 15:45 and the day goes on) leaves a 3x price
window at that instant. The demand rises after the operator's first cycle (a scale-up), the
operator stops at 10:00:02 and a new one scales both down after its first cycle. No demand
before the test, so every token served is one Prometheus saw from its first scrape on. The
figures are printed (``-s``) for RELIABILITY.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_operator_e2e import CAPACITY, INTERVAL, NS, Level, Operator, fleet_stack

import testclock
from tokenscale.api import parse_spec
from tokenscale.status import parse_time
from tokenscale_testbed.truth import relative_error, truth_cost
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.e2e

START = "2027-01-04T09:59:46@UTC"  # a Monday: the UTC hour ends 14 s later
PRICE = 360.0  # USD per replica-hour: 0.1 USD/s
DEMAND = {"roll": Level(0.0), "edge": Level(0.0)}  # tokens/s; 1,000 per replica


def budget(name: str, period: str, zone: str, schedule: str = "[]") -> str:
    return f"""
apiVersion: tokenscale.dev/v1alpha1
kind: TokenBudget
metadata: {{name: {name}, namespace: {NS}}}
spec:
  budget: {{period: {period}, timeZone: {zone}, maxCost: 1000000, currency: USD}}
  planning: {{intervalSeconds: {INTERVAL}, targetUtilization: 0.8, headroom: 0.1,
              forecastWindowSeconds: 60, tolerance: 0.1, scaleDownStabilizationSeconds: 0}}
  pricing: {{schedule: {schedule}}}
  targets:
    - name: {name}
      scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
      minReplicas: 2
      maxReplicas: 8
      tokensPerReplicaPerSecond: {CAPACITY}
      costPerReplicaHour: {PRICE}
      coldStartSeconds: 2
"""


BUDGETS = {
    "roll": budget("roll", "Hour", "UTC"),
    # 15:00-15:45 local is 09:15-10:00 UTC
    "edge": budget("edge", "Day", "Asia/Kathmandu",
                   '[{start: "15:00", end: "15:45", multiplier: 3}]'),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The e2e fleet stack with a model per budget, each starting at three replicas."""
    with fleet_stack(tmp_path_factory.mktemp("truth"), DEMAND, replicas=3) as built:
        yield built


def status(stack: dict[str, Any], name: str) -> dict[str, Any]:
    obj = stack["api"].call(lambda s: s.get_object("tokenscale.dev/v1alpha1", "tokenbudgets",
                                                   NS, name))
    return dict((obj or {}).get("status") or {})


def replicas(stack: dict[str, Any], name: str) -> int:
    obj = stack["api"].call(lambda s: s.get_object("apps/v1", "deployments", NS, name))
    return int(obj["spec"]["replicas"])


def unix(text: str, clock: testclock.TestClock) -> float:
    """An operator timestamp as a real unix time."""
    when = parse_time(text)
    assert when is not None
    return when.timestamp() - clock.offset_seconds


def test_spend_matches_the_ground_truth_across_rollover_price_edge_and_restart(
        stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    clock = testclock.start(START)
    monkeypatch.setattr(testclock, "_current", clock)
    for name in DEMAND:
        DEMAND[name].rate = 1500.0  # 3 replicas at 0.8 with 10 % headroom
        stack["kubectl"].apply_text(BUDGETS[name])
    op = Operator(stack)
    op.start()
    try:
        firsts = {n: wait_for(lambda n=n: status(stack, n).get("lastReconcileTime") and
                              status(stack, n), timeout=20, interval=0.1,
                              message=f"the first status of {n}") for n in DEMAND}
        for name in DEMAND:
            DEMAND[name].rate = 4500.0  # 7 or more
        wait_for(lambda: all(replicas(stack, n) >= 6 for n in DEMAND), timeout=20,
                 message="both scaled up")
        # past 10:00 (the rollover and the price edge), then stop
        wait_for(lambda: clock.now().minute == 0 and clock.now().second >= 2, timeout=40,
                 interval=0.2, message="10:00:02 on the test clock")
    finally:
        op.stop()
    time.sleep(1)  # the operator is down; the replicas keep running (and costing)
    restarted = time.time()
    op = Operator(stack)
    op.start()
    try:
        wait_for(lambda: all(unix(status(stack, n)["lastReconcileTime"], clock) > restarted
                             for n in DEMAND), timeout=20, interval=0.2,
                 message="a cycle of the new operator")
        for name in DEMAND:
            DEMAND[name].rate = 1500.0
        # the step down widens the demand's spread (the learned margin) until it leaves the
        # forecast window (60 s)
        wait_for(lambda: all(replicas(stack, n) <= 4 for n in DEMAND), timeout=90,
                 message="both scaled down after the restart")
        # a minute of the new hour: Prometheus' view of the tokens lags the fleet by about a
        # scrape, which over the ~25 s reached so far is several per cent of the period
        wait_for(lambda: clock.now().minute >= 1 or clock.now().second >= 55, timeout=60,
                 interval=0.2, message="10:00:55 on the test clock")
        scaled = time.time()
        finals = {n: wait_for(lambda n=n: (s := status(stack, n)).get("lastReconcileTime") and
                              unix(s["lastReconcileTime"], clock) > scaled and s,
                              timeout=30, interval=0.2, message=f"a later status of {n}")
                  for n in DEMAND}
    finally:
        op.stop()

    fleet = stack["fleet"]
    figures = {}
    for name in DEMAND:
        first, final = firsts[name], finals[name]
        spec = parse_spec(objects_spec(BUDGETS[name]))
        end = unix(final["lastReconcileTime"], clock)
        period_start = unix(final["period"]["start"], clock)
        rolled = final["period"]["start"] != first["period"]["start"]
        start = period_start if rolled else unix(first["lastReconcileTime"], clock)
        spent = final["spend"]["cost"] - (0.0 if rolled else first["spend"]["cost"])
        log = stack["api"].call(lambda s, n=name: s.replica_log("apps/v1", "deployments", NS, n))
        cost = truth_cost(spec, {name: log}, start, end, clock.offset_seconds)
        served = fleet.state(NS, name).served_between(period_start, end)
        figures[name] = {
            "rolled": rolled, "seconds": round(end - start, 1), "status_cost": spent,
            "truth_cost": cost, "cost_error": relative_error(spent, cost),
            "status_tokens": final["spend"]["tokens"], "truth_tokens": served,
            "tokens_error": relative_error(final["spend"]["tokens"], served)}
    print("\nspend vs ground truth:", figures)
    assert figures["roll"]["rolled"] and not figures["edge"]["rolled"]
    for name, f in figures.items():
        assert f["cost_error"] is not None and abs(f["cost_error"]) < 0.005, (name, f)
        assert f["tokens_error"] is not None and abs(f["tokens_error"]) < 0.05, (name, f)
    stack["kubectl"].run("delete", "tokenbudget", "--all", namespace=NS)


def objects_spec(manifest: str) -> dict[str, Any]:
    import yaml

    doc: dict[str, Any] = yaml.safe_load(manifest)
    return dict(doc["spec"])
