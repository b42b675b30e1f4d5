"""What a TokenBudget author can make the operator do, on the real stack (issue 18).

* The Prometheus a budget names must be on the operator's allowlist
  (``TOKENSCALE_PROMETHEUS_ALLOWED_URLS``); any other gets SpecValid=False naming the setting,
  and no request: the link-local metadata address, the API server's own port, an unlisted
  path of an allowed host, a dot-segment escape from an allowed path. An allowed second
  Prometheus is served.
* A failure in status names its kind, never the URL or the body of the answer.
* The queries a budget writes are bounded: a slow one times out by its own deadline and the
  budget beside it keeps its cycle; one answering 100,000 series is refused as
  TooManySeries. Both are named in their own budget's status only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from faultkit import (
    Channel,
    FaultyPrometheus,
    OperatorProcess,
    budget,
    condition,
    create,
    deployment,
    operators,
    replica_history,
    scale_patches,
    status_of,
    target,
    wait_cycles,
)

import testclock
from tokenscale.status import parse_time
from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.faults
NS = "inference"
SETTING = "TOKENSCALE_PROMETHEUS_ALLOWED_URLS"


def _events(api: ApiServerThread, name: str) -> list[dict[str, Any]]:
    items = api.call(lambda s: s.list_objects("v1", "events", NS))
    return [e for e in items if e["involvedObject"]["name"] == name]


def test_a_budget_reaches_only_the_allowed_prometheus(
    apiserver: ApiServerThread, kubeconfig: Path, faulty_prometheus: FaultyPrometheus
) -> None:
    prom, second = faulty_prometheus, FaultyPrometheus().start()
    try:
        home = prom.add("home", Channel(NS, "home", rate=1000.0))
        broken = prom.add("broken", Channel(NS, "leaky", rate=1000.0, mode="garbage"))
        away = second.add("away", Channel(NS, "away", rate=1000.0))
        unlisted = second.add("unlisted", Channel(NS, "sneak", rate=1000.0))
        refused = {
            "metadata": "http://169.254.169.254/latest/meta-data",
            "apiserver": apiserver.url,
            "sideways": unlisted,
            "dotdot": f"{away}/../unlisted",
        }
        urls: dict[str, str | None] = {"home": None, "away": away, "leaky": broken, **refused}
        for name, url in urls.items():
            create(apiserver, "apps/v1", "deployments", deployment(NS, name, 3))
            create(apiserver, "tokenscale.dev/v1alpha1", "tokenbudgets",
                   budget(NS, name, [target(name)], prometheus_url=url))
        op = OperatorProcess(kubeconfig, home, prometheus_allowed_urls=f"{away}/,{broken}")
        with operators(op):
            for name in ("home", "away"):  # demand 1,000 tok/s needs 1 replica: 3 -> 1
                wait_for(lambda n=name: replica_history(apiserver, NS, n)[-1] == 1,  # type: ignore[misc]
                         timeout=20, message=f"{name} served")
            for name in refused:
                st = status_of(apiserver, NS, name)
                c = condition(st, "SpecValid")
                assert (st["phase"], c["status"], c["reason"]) == (
                    "Invalid", "False", "InvalidSpec"), (name, st)
                assert SETTING in c["message"] and "spec.prometheus.url" in c["message"], c
                assert scale_patches(apiserver, NS, name) == 0, name
                assert replica_history(apiserver, NS, name) == [3], name
            leaky = wait_for(lambda: (c := condition(status_of(apiserver, NS, "leaky"),
                                                     "MetricsAvailable")).get("status") == "False"
                             and c, timeout=20, message="leaky: BadResponse")
            assert "leaky: BadResponse" in leaky["message"], leaky
            wait_cycles(apiserver, NS, "home", cycles=1)

            # No request reached a refused host or path.
            assert apiserver.call(lambda s: s.request_count(path=r"/api/v1/query")) == 0
            assert second.channels["unlisted"].queries == 0
            assert second.channels["away"].queries > 0
            # A request to the metadata address would have failed (Timeout/Unreachable):
            # every query the operator sent went to a healthy channel, or the garbage one.
            assert op.metric("tokenscale_prometheus_errors_total") == op.metric(
                "tokenscale_prometheus_errors_total", kind="BadResponse")
            # What the garbage answer said, and where it came from, stays out of status
            # and Events: only its kind is shown.
            shown = json.dumps([status_of(apiserver, NS, "leaky"), _events(apiserver, "leaky")])
            for secret in ("Bad Gateway", "<html>", "127.0.0.1", str(prom.port)):
                assert secret not in shown, secret
            assert "token rate query" in op.logs()  # the details: in the operator's log only
            assert op.alive and op.healthy()
    finally:
        second.stop()


def _reconcile_lag(api: ApiServerThread, name: str, seen: str | None) -> tuple[str, float] | None:
    """(lastReconcileTime, seconds between that tick and now) once it moved past ``seen``."""
    stamp = status_of(api, NS, name).get("lastReconcileTime")
    if not stamp or stamp == seen:
        return None
    tick = parse_time(stamp)
    assert tick is not None
    return stamp, testclock.current().now().timestamp() - tick.timestamp()


def test_user_queries_are_bounded_and_a_slow_one_delays_only_its_budget(
    apiserver: ApiServerThread, kubeconfig: Path, faulty_prometheus: FaultyPrometheus
) -> None:
    prom = faulty_prometheus
    url = prom.add("shared", Channel(NS, "healthy", rate=1000.0))
    prom.slow_queries["slow_override"] = 30.0
    prom.huge_queries["huge_override"] = 100_000
    queries = {"healthy": None, "slow": 'slow_override{namespace="inference"}',
               "huge": 'huge_override{namespace="inference"}'}
    for name, query in queries.items():
        create(apiserver, "apps/v1", "deployments", deployment(NS, name, 3))
        t = target(name)
        if query:
            t["metrics"] = {"tokenRateQuery": query}
        # all on the operator's own Prometheus: one batch of queries, one cycle each tick;
        # no fallback replicas: a refused answer holds the replicas
        create(apiserver, "tokenscale.dev/v1alpha1", "tokenbudgets",
               budget(NS, name, [t], fallback={"replicas": None}))
    op = OperatorProcess(kubeconfig, url, user_query_timeout_seconds="2")
    with operators(op):
        wait_for(lambda: replica_history(apiserver, NS, "healthy")[-1] == 1, timeout=20,
                 message="the healthy budget served")
        for name, kind in (("slow", "Timeout"), ("huge", "TooManySeries")):
            wait_for(lambda n=name, k=kind: f"{n}: {k}" in condition(  # type: ignore[misc]
                status_of(apiserver, NS, n), "MetricsAvailable").get("message", ""),
                timeout=20, message=f"{name}: {kind} in MetricsAvailable")

        # Three cycles: the healthy budget's status lands within a second of its tick, the
        # slow one's only after its query's 2 s deadline (both ticks are the same).
        lags: dict[str, list[float]] = {"healthy": [], "slow": []}
        seen = {n: status_of(apiserver, NS, n).get("lastReconcileTime") for n in lags}
        deadline = time.monotonic() + 25
        while min(len(v) for v in lags.values()) < 3 and time.monotonic() < deadline:
            for name in lags:
                got = _reconcile_lag(apiserver, name, seen[name])
                if got is not None:
                    seen[name] = got[0]
                    lags[name].append(got[1])
            time.sleep(0.02)
        print(f"reconcile lag after the tick (s): {lags}")
        assert min(len(v) for v in lags.values()) >= 3, lags
        assert max(lags["healthy"]) < 1.5, lags
        assert min(lags["slow"]) >= 2.0, lags

        for name in ("slow", "huge"):  # held, never scaled on a refused answer
            assert replica_history(apiserver, NS, name) == [3], name
            assert condition(status_of(apiserver, NS, name), "SpecValid")["status"] == "True"
        assert condition(status_of(apiserver, NS, "healthy"), "MetricsAvailable")[
            "reason"] == "MetricsFresh"
        # Prometheus' own bounds were asked for too (`limit` is ignored by servers before it)
        huge = [r for r in prom.requests if "huge_override" in r.get("query", "")]
        assert huge and all(r["limit"] == "1001" and r["timeout"] == "2" for r in huge), huge[:1]
        assert op.metric("tokenscale_prometheus_errors_total", kind="TooManySeries") > 0
        assert op.alive and op.healthy()
