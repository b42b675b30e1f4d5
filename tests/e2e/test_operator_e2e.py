"""End to end: `tokenscale run` as a real subprocess against the API emulator, the real
Prometheus, the simulated vLLM fleet and the real kubectl.

Time is compressed: planning every 5 s, cold starts of 2 s, a 5 s rate window on a 1 s
scrape. One stack (emulator, Prometheus, fleet) serves the whole module; each test starts
its own operator process and deletes its TokenBudgets at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import objects
import testclock
from tokenscale.adapters.promql import token_rate_query
from tokenscale.crd import crd
from tokenscale_testbed.apiserver import ApiServer, ApiServerThread, write_kubeconfig
from tokenscale_testbed.fleet import FleetThread, ModelConfig
from tokenscale_testbed.kubectl import Kubectl
from tokenscale_testbed.prometheus import PrometheusServer, free_port
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.e2e

NS = "inference"
CAPACITY = 1000.0  # tokens/s per replica
INTERVAL = 5


class Level:
    """A demand curve the test sets: tokens/s, whatever the simulated time."""

    def __init__(self, rate: float):
        self.rate = rate

    def __call__(self, t: float) -> float:
        return self.rate


DEMAND = {
    "step": Level(300.0),
    "exhaust": Level(300.0),
    "dry": Level(3000.0),
    "restart": Level(500.0),
}


@contextmanager
def fleet_stack(tmp: Path, demands: Mapping[str, Callable[[float], float]], replicas: int
                ) -> Iterator[dict[str, Any]]:
    """Emulator + fleet (a model per entry of ``demands``, each a Deployment of ``replicas``,
    CAPACITY tokens/s per replica, 2 s cold start) + Prometheus scraping the fleet every
    second, once it holds a series of every model."""
    with ApiServerThread(crds=[crd()], namespaces=["default", NS]) as api:
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", api.url)
        kubectl = Kubectl(kubeconfig, cache_dir=tmp / "kubectl-cache")
        for name in demands:
            kubectl.apply_text(deployment(name, replicas))
        models = [
            ModelConfig(namespace=NS, name=name, tokens_per_replica_per_second=CAPACITY,
                        cold_start_seconds=2.0, demand=demand)
            for name, demand in demands.items()
        ]
        with FleetThread(api.url, models, tick_seconds=0.2) as fleet, \
                PrometheusServer(targets=[fleet.metrics_target], scrape_interval=1.0) as prom:
            for name in demands:
                prom.wait_for_series(f'vllm:generation_tokens_total{{pod=~"{name}-.*"}}',
                                     timeout=60)
            yield {"api": api, "kubeconfig": kubeconfig, "kubectl": kubectl,
                   "prometheus": prom, "fleet": fleet, "tmp": tmp}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The fleet stack with one model per test, each starting at one replica."""
    with fleet_stack(tmp_path_factory.mktemp("e2e"), DEMAND, replicas=1) as built:
        yield built


def deployment(name: str, replicas: int) -> str:
    return objects.manifest(objects.deployment(NS, name, replicas))


def budget(name: str, target: str, *, mode: str = "Active", max_cost: float = 10_000,
           cost_per_hour: float = 3.6, min_replicas: int = 1, max_replicas: int = 8,
           stabilization: int = 0, period: str | None = None) -> str:
    """A Day budget in the test clock's zone; unless ``period`` is given, one whose period
    does not end within ten minutes (another zone's day, or a week, at a day's last minute)."""
    zone = testclock.current().zone
    if period is None:
        zone, period = testclock.zone_and_period_lasting(
            600, periods=("Day", "Week", "Month", "Hour"))
    return f"""
apiVersion: tokenscale.dev/v1alpha1
kind: TokenBudget
metadata: {{name: {name}, namespace: {NS}}}
spec:
  mode: {mode}
  budget: {{period: {period}, timeZone: {zone}, maxCost: {max_cost}, currency: USD,
            onExhausted: ScaleToMinimum}}
  planning: {{intervalSeconds: {INTERVAL}, targetUtilization: 0.8, headroom: 0.1,
              forecastWindowSeconds: 60, tolerance: 0.1,
              scaleDownStabilizationSeconds: {stabilization}}}
  fallback: {{afterSeconds: 60}}
  targets:
    - name: {target}
      scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {target}}}
      minReplicas: {min_replicas}
      maxReplicas: {max_replicas}
      tokensPerReplicaPerSecond: {CAPACITY}
      costPerReplicaHour: {cost_per_hour}
      coldStartSeconds: 2
"""


class Operator:
    """`tokenscale run` in a subprocess, configured through the environment."""

    def __init__(self, stack: dict[str, Any]):
        self.stack = stack
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.log = stack["tmp"] / f"operator-{self.metrics_port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.stack["kubeconfig"]),
            "TOKENSCALE_PROMETHEUS_URL": self.stack["prometheus"].url,
            "TOKENSCALE_METRICS_PORT": str(self.metrics_port),
            "TOKENSCALE_HEALTH_PORT": str(self.health_port),
            "TOKENSCALE_BIND_ADDRESS": "127.0.0.1",
            "TOKENSCALE_LOG_FORMAT": "text",
            "TOKENSCALE_RATE_WINDOW": "5s",
            "TOKENSCALE_STALE_AFTER_SECONDS": "30",
            "TOKENSCALE_STATUS_HEARTBEAT_SECONDS": "10",
            "TOKENSCALE_TICK_SECONDS": "0.5",
            **testclock.current().env(),
        }
        script = Path(sys.executable).with_name("tokenscale")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([str(script), "run"], env=env, stdout=out,
                                         stderr=subprocess.STDOUT)
        wait_for(self._healthy, timeout=30, interval=0.2, message="operator /readyz")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited: {self.log.read_text()[-3000:]}")
        try:
            url = f"http://127.0.0.1:{self.health_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as rsp:
                return bool(rsp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as rsp:
            text = rsp.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    total += sample.value
        return total


@pytest.fixture
def operator(stack: dict[str, Any], test_clock: testclock.TestClock) -> Iterator[Operator]:
    """An operator per test, on the test's clock (the restart test runs its own)."""
    op = Operator(stack)
    op.start()
    yield op
    op.stop()


def emulator(stack: dict[str, Any]) -> ApiServer:
    server = stack["api"].server
    assert server is not None
    return server


def get(stack: dict[str, Any], api_version: str, plural: str, name: str) -> dict[str, Any]:
    obj = stack["api"].call(lambda s: s.get_object(api_version, plural, NS, name))
    assert obj is not None, f"{plural}/{name} not found"
    return json.loads(json.dumps(obj))


def replicas(stack: dict[str, Any], name: str) -> int:
    return int(get(stack, "apps/v1", "deployments", name)["spec"]["replicas"])


def status(stack: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(get(stack, "tokenscale.dev/v1alpha1", "tokenbudgets", name).get("status") or {})


def condition(st: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == ctype), {})


def events(stack: dict[str, Any], involved: str) -> list[dict[str, Any]]:
    items = stack["api"].call(lambda s: s.list_objects("v1", "events", NS))
    return [e for e in items if e["involvedObject"]["name"] == involved]


def served_rate(stack: dict[str, Any], name: str) -> float:
    """tokens/s Prometheus sees for a Deployment's pods (the operator's own query)."""
    series = stack["prometheus"].query(token_rate_query([NS], "5s"))
    return sum(float(s["value"][1]) for s in series if s["metric"]["pod"].startswith(name + "-"))


def delete_budgets(stack: dict[str, Any], *names: str) -> None:
    stack["kubectl"].run("delete", "tokenbudget", *names, namespace=NS)


@pytest.fixture(autouse=True)
def leaves_no_budget(stack: dict[str, Any]) -> Iterator[None]:
    """Whatever a test's outcome, the next one starts with no TokenBudget and the demand
    levels it was written for."""
    levels = {name: level.rate for name, level in DEMAND.items()}
    yield
    stack["kubectl"].run("delete", "tokenbudget", "--all", "--ignore-not-found", namespace=NS)
    for name, rate in levels.items():
        DEMAND[name].rate = rate


# ------------------------------------------------------------------------------- tests


def test_operator_restart_mid_period_keeps_spend(stack: dict[str, Any]) -> None:
    stack["kubectl"].run("scale", "deployment/restart", "--replicas=2", namespace=NS)
    op = Operator(stack)
    op.start()
    try:
        # 2 replicas × 360/h = 0.2 USD/s
        # a Day in the clock's zone: at "month-end" or "dst-*" the day ends during the test
        stack["kubectl"].apply_text(budget("restart", "restart", cost_per_hour=360,
                                           min_replicas=2, max_replicas=2, period="Day"))
        wait_for(lambda: status(stack, "restart").get("spend", {}).get("cost", 0) > 1.0,
                 timeout=40, message="some spend")
        wait_for(lambda: status(stack, "restart").get("spend", {}).get("tokens", 0) > 0,
                 timeout=30, message="tokens counted")
    finally:
        op.stop()
    before = status(stack, "restart")
    t_before = before["lastReconcileTime"]
    op = Operator(stack)
    op.start()
    try:
        after = wait_for(lambda: (s := status(stack, "restart"))["lastReconcileTime"]
                         != t_before and s, timeout=30, message="a cycle after the restart")
    finally:
        op.stop()
    from tokenscale.status import parse_time

    t0, t1 = parse_time(t_before), parse_time(after["lastReconcileTime"])
    assert t0 is not None and t1 is not None
    gap = (t1 - t0).total_seconds()
    if after["period"] == before["period"]:
        expected = before["spend"]["cost"] + 0.2 * gap  # the downtime is accounted, once
        assert after["spend"]["tokens"] >= before["spend"]["tokens"] * 0.9
    else:  # the day ended while the operator was down: the new day counts from its start
        start = parse_time(after["period"]["start"])
        assert start is not None and t0 <= start <= t1, (before["period"], after["period"])
        expected = 0.2 * (t1 - start).total_seconds()
    assert after["spend"]["cost"] == pytest.approx(expected, abs=0.05)


def test_replicas_follow_a_load_step_up_and_down(
    stack: dict[str, Any], operator: Operator
) -> None:
    kubectl: Kubectl = stack["kubectl"]
    kubectl.apply_text(budget("step", "step"))
    wait_for(lambda: status(stack, "step").get("phase") == "Active", timeout=30,
             message="phase Active")
    assert replicas(stack, "step") == 1  # 300 tokens/s fit one replica

    DEMAND["step"].rate = 4000.0  # needs ceil(4000 × 1.1 / 800) = 6 replicas
    wait_for(lambda: replicas(stack, "step") >= 5, timeout=60, message="scale-up to >= 5")
    table = wait_for(lambda: [r for r in kubectl.get_table("tb", namespace=NS)
                              if r["NAME"] == "step" and r["TOKENS/S"]
                              and float(r["TOKENS/S"]) > 2000], timeout=40,
                     message="kubectl get tb shows the load")[0]
    assert table["MODE"] == "Active"
    assert int(table["REPLICAS"]) >= 5 and int(table["DESIRED"]) >= 5
    assert float(table["SPEND"]) > 0 and float(table["PROJECTED"]) > float(table["SPEND"])
    assert table["BUDGET"] == "10,000 USD"
    assert operator.metric("tokenscale_desired_replicas", tokenbudget="step") >= 5
    assert operator.metric("tokenscale_spend_cost", tokenbudget="step") > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz") as rsp:
        assert json.loads(rsp.read())["ok"] is True
    scaled = [e for e in events(stack, "step") if e["reason"] == "Scaled"]
    assert scaled and "step: 1 -> " in scaled[0]["message"]
    assert any(r in scaled[0]["message"] for r in ("DemandDriven", "ScaleUpLimited"))

    DEMAND["step"].rate = 300.0
    wait_for(lambda: replicas(stack, "step") <= 2, timeout=90, message="scale-down")
    st = status(stack, "step")
    assert st["targets"][0]["name"] == "step" and st["targets"][0]["reason"]
    assert operator.metric("tokenscale_scale_actions_total") >= 2

    delete_budgets(stack, "step")  # owner-free: the Deployment keeps its replicas
    wait_for(lambda: operator.metric("tokenscale_tokenbudgets") == 0, timeout=20,
             message="budget forgotten")
    kept = replicas(stack, "step")
    assert get(stack, "apps/v1", "deployments", "step")["metadata"].get("ownerReferences") \
        is None
    assert kept >= 1


def test_exhausted_budget_scales_to_minimum_with_an_event(
    stack: dict[str, Any], operator: Operator
) -> None:
    # 2500 tokens/s needs 4 replicas; 4 USD a day cannot pay for them: the budget, not the
    # demand, takes the target to its minimum (paced), and the floor's spend of 1440/h =
    # 0.4 USD/s then exhausts the budget within about 10 s.
    DEMAND["exhaust"].rate = 2500.0
    stack["kubectl"].run("scale", "deployment/exhaust", "--replicas=4", namespace=NS)
    wait_for(lambda: served_rate(stack, "exhaust") > 2000, timeout=30, interval=0.5,
             message="Prometheus sees the demand served by 4 replicas")
    stack["kubectl"].apply_text(budget("exhaust", "exhaust", max_cost=4, cost_per_hour=1440,
                                       max_replicas=4, stabilization=300))
    wait_for(lambda: status(stack, "exhaust").get("phase") == "BudgetExhausted", timeout=45,
             message="phase BudgetExhausted")
    wait_for(lambda: replicas(stack, "exhaust") == 1, timeout=20, message="scaled to minimum")
    st = status(stack, "exhaust")
    assert condition(st, "BudgetExhausted")["status"] == "True"
    assert st["targets"][0]["reason"] == "BudgetExhausted"
    assert st["targets"][0]["desiredReplicas"] == 1
    assert st["spend"]["cost"] >= 4
    # the gateway is told what the one affordable replica serves within the SLO:
    # 1 x 1000 tokens/s x the admission share (0.95, a margin for the service model's error)
    admission = st["targets"][0]["admission"]
    assert admission == {"tokensPerSecond": 950.0, "reason": "BudgetExhausted"}
    assert operator.metric("tokenscale_admission_tokens_per_second",
                           target="exhaust") == 950.0
    # Events follow the status write that records the change
    evs = wait_for(lambda: (e := events(stack, "exhaust")) and any(
        x["reason"] == "BudgetExhausted" and x["type"] == "Warning" for x in e) and e,
        timeout=10, message="a BudgetExhausted Warning event")
    scaled = [e["message"] for e in evs if e["reason"] == "Scaled"]
    assert scaled and all("DemandDriven" not in m for m in scaled)
    assert any("4 -> 1" in m for m in scaled)


def test_dry_run_decides_but_never_patches_replicas(
    stack: dict[str, Any], operator: Operator
) -> None:
    server = emulator(stack)
    scale_path = rf"/namespaces/{NS}/deployments/dry(/scale)?$"
    writes_before = server.request_count("PATCH", scale_path) + server.request_count(
        "PUT", scale_path)
    stack["kubectl"].apply_text(budget("dry", "dry", mode="DryRun"))
    # 3000 tokens/s needs ceil(3000 × 1.1 / 800) = 5 replicas; it reports, never scales
    st = wait_for(lambda: (s := status(stack, "dry")).get("desiredReplicas", 0) >= 2 and s,
                  timeout=45, message="a DryRun decision above the current replicas")
    assert st["phase"] == "DryRun"
    first = st["lastReconcileTime"]
    wait_for(lambda: status(stack, "dry")["lastReconcileTime"] != first, timeout=30,
             message="another cycle")
    assert replicas(stack, "dry") == 1
    writes_after = server.request_count("PATCH", scale_path) + server.request_count(
        "PUT", scale_path)
    assert writes_after == writes_before
    assert not [e for e in events(stack, "dry") if e["reason"] == "Scaled"]


def _prometheus_queries(prom: PrometheusServer) -> float:
    """Query API calls Prometheus itself has answered (its own /metrics, not a query)."""
    with urllib.request.urlopen(f"{prom.url}/metrics", timeout=5) as rsp:
        text = rsp.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "prometheus_http_requests_total" and sample.labels.get(
                    "handler") in ("/api/v1/query", "/api/v1/query_range"):
                total += sample.value
    return total


def _queries_per_cycle(operator: Operator, prom: PrometheusServer, cycles: int) -> float:
    wait_for(lambda: operator.metric("tokenscale_cycles_total") >= 1, timeout=20,
             message="a first cycle")
    start_cycles = operator.metric("tokenscale_cycles_total")
    start_ours = operator.metric("tokenscale_prometheus_queries_total")
    start_prom = _prometheus_queries(prom)
    wait_for(lambda: operator.metric("tokenscale_cycles_total") >= start_cycles + cycles,
             timeout=INTERVAL * (cycles + 3), interval=0.2, message=f"{cycles} cycles")
    # read right after the cycle count moved: the next cycle is INTERVAL seconds away
    done = operator.metric("tokenscale_cycles_total") - start_cycles
    ours = operator.metric("tokenscale_prometheus_queries_total") - start_ours
    theirs = _prometheus_queries(prom) - start_prom
    assert ours == theirs, "every query the operator counts reached Prometheus, no others"
    return ours / done


def test_prometheus_queries_per_cycle_do_not_grow_with_budgets(
    stack: dict[str, Any], operator: Operator
) -> None:
    kubectl: Kubectl = stack["kubectl"]
    prom: PrometheusServer = stack["prometheus"]
    kubectl.apply_text(budget("count-0", "restart", mode="DryRun"))
    wait_for(lambda: status(stack, "count-0").get("phase"), timeout=30, message="first status")
    one = _queries_per_cycle(operator, prom, cycles=2)
    names = [f"count-{i}" for i in range(1, 12)]
    kubectl.apply_text("\n---\n".join(budget(n, "restart", mode="DryRun") for n in names))
    wait_for(lambda: all(status(stack, n).get("phase") for n in names), timeout=30,
             message="all budgets planned")
    many = _queries_per_cycle(operator, prom, cycles=2)
    # token rate (range), queue, the latency seen now, increase since period start. The
    # service model's latency
    # history (mean ITL and token rate, two range queries per URL) is read in the first cycle
    # of a budget, before these counts start, and again only every FIT_REFRESH_SECONDS (600 s,
    # longer than this test): not in the cycles counted.
    assert one == many == 4
