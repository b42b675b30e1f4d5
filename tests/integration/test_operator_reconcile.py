"""The reconciler in-process against the API emulator (its CRD schema enforced on writes),
cycles driven with explicit times: invalid specs, other autoscalers (HPA, KEDA), the status
patch policy, Events and owner-free scaling.

Prometheus is a closed port here (metrics Unreachable): these tests are about what the
operator writes to Kubernetes; the metric paths run against the real Prometheus in
test_prometheus_adapter.py and tests/e2e.
"""

from __future__ import annotations

import copy
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import objects
import testclock
from tokenscale.adapters.kube import KubeAdapter, load_client
from tokenscale.metrics import OperatorMetrics
from tokenscale.reconcile import Reconciler
from tokenscale.settings import OperatorSettings
from tokenscale_testbed.apiserver import ApiServer, ApiServerThread
from tokenscale_testbed.kubectl import Kubectl
from tokenscale_testbed.prometheus import free_port
from tokenscale_testbed.resources import keda_scaledobject_crd

pytestmark = pytest.mark.integration

NS = "inference"
SAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "chat-cost-budget.yaml"


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return objects.deployment(NS, name, replicas, image="vllm")


def tokenbudget(name: str = "chat", **spec_changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    body["metadata"]["name"] = name
    body["spec"]["planning"]["intervalSeconds"] = 5
    body["spec"]["fallback"] = {"afterSeconds": 3600}
    # a period that does not end within the test (whatever the test clock's day)
    sample = body["spec"]["budget"]
    zone, period = testclock.zone_and_period_lasting(
        600, periods=(sample.get("period", "Day"), "Week", "Month"))
    body["spec"]["budget"] = {**sample, "timeZone": zone, "period": period}
    body["spec"].update(spec_changes)
    return body


class Harness:
    """A Reconciler wired to the emulator; cycles at chosen times."""

    def __init__(self, server: ApiServer, api: ApiServerThread, reconciler: Reconciler,
                 kubectl: Kubectl, start: float):
        self.kubectl = kubectl
        self.server = server
        self.api = api
        self.reconciler = reconciler
        self.t = start  # the operator's clock (unix s): moved by cycle(), read by it

    def create(self, api_version: str, plural: str, body: dict[str, Any]) -> None:
        self.api.call(lambda s: s.create_object(api_version, plural, copy.deepcopy(body)))

    def get(self, api_version: str, plural: str, name: str) -> dict[str, Any]:
        obj = self.api.call(lambda s: s.get_object(api_version, plural, NS, name))
        assert obj is not None
        return copy.deepcopy(obj)  # type: ignore[no-any-return]

    def budget(self, name: str = "chat") -> dict[str, Any]:
        return self.get("tokenscale.dev/v1alpha1", "tokenbudgets", name)

    def events(self, name: str = "chat") -> list[dict[str, Any]]:
        items = self.api.call(lambda s: s.list_objects("v1", "events", NS))
        return [e for e in items if e["involvedObject"]["name"] == name]

    async def observe(self, name: str = "chat") -> None:
        """What kopf's watch would deliver: the object as stored."""
        entry = self.reconciler.on_event(None, self.budget(name))
        if entry is not None and entry.spec is None:
            await self.reconciler.report_invalid(entry)

    async def cycle(self, seconds: float = 5) -> None:
        self.t += seconds
        entries = [e for e in self.reconciler.entries.values() if e.spec is not None]
        await self.reconciler.run_cycle(entries, self.t)


def paced(**changes: Any) -> OperatorSettings:
    """The operator's settings here, with ``changes``."""
    return OperatorSettings(prometheus_url=f"http://127.0.0.1:{free_port()}",
                            status_heartbeat_seconds=3600, rate_window="5s", **changes)


@pytest.fixture
def settings() -> OperatorSettings:
    """The operator's settings (tests override this fixture's values by parametrizing)."""
    return paced()


@pytest.fixture
async def harness(apiserver: ApiServerThread, emulator: ApiServer, kubeconfig: Path,
                  kubectl: Kubectl, monkeypatch: pytest.MonkeyPatch,
                  test_clock: testclock.TestClock,
                  settings: OperatorSettings) -> AsyncIterator[Harness]:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    kube = KubeAdapter(load_client(5), workers=4, timeout_seconds=5)
    reconciler = Reconciler(settings, kube, OperatorMetrics(), wall_clock=lambda: h.t)
    h = Harness(emulator, apiserver, reconciler, kubectl,
                start=math.floor(test_clock.now().timestamp()))
    h.create("apps/v1", "deployments", deployment("llama-8b", 3))
    yield h
    reconciler.close()
    kube.close()


def condition(body: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == ctype)


def replicas(h: Harness, name: str = "llama-8b") -> int:
    return int(h.get("apps/v1", "deployments", name)["spec"]["replicas"])


async def test_invalid_spec_is_reported_per_field_and_nothing_is_scaled(h: Harness) -> None:
    body = tokenbudget()
    body["spec"]["budget"]["timeZone"] = "Mars/Olympus_Mons"  # passes the CRD, not the model
    h.create("tokenscale.dev/v1alpha1", "tokenbudgets", body)
    await h.observe()
    await h.cycle()
    stored = h.budget()
    assert stored["status"]["phase"] == "Invalid"
    spec_valid = condition(stored, "SpecValid")
    assert spec_valid["status"] == "False" and spec_valid["reason"] == "InvalidSpec"
    assert "spec.budget.timeZone" in spec_valid["message"]
    assert "Mars/Olympus_Mons" in spec_valid["message"]
    assert condition(stored, "Ready")["status"] == "False"
    assert replicas(h) == 3
    assert h.server.request_count("PATCH", r"deployments/llama-8b/scale$") == 0
    assert [e["type"] for e in h.events() if e["reason"] == "SpecValid"] == ["Warning"]

    h.kubectl.run("patch", "tokenbudget", "chat", "--type=merge", "-p",
                  '{"spec": {"budget": {"timeZone": "Europe/Berlin"}}}', namespace=NS)
    await h.observe()
    await h.cycle()
    stored = h.budget()
    assert condition(stored, "SpecValid")["status"] == "True"
    assert stored["status"]["phase"] != "Invalid"


async def test_an_hpa_on_the_target_is_a_conflict_and_blocks_scaling(h: Harness) -> None:
    h.create("autoscaling/v2", "horizontalpodautoscalers", {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "llama-hpa", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "llama-8b"},
                 "minReplicas": 1, "maxReplicas": 5}})
    h.create("tokenscale.dev/v1alpha1", "tokenbudgets", tokenbudget())
    await h.observe()
    await h.cycle()
    stored = h.budget()
    conflict = condition(stored, "Conflict")
    assert conflict["status"] == "True" and "llama-hpa" in conflict["message"]
    assert stored["status"]["targets"][0]["reason"] == "Conflict"
    assert h.server.request_count("PATCH", r"deployments/llama-8b/scale$") == 0
    assert any(e["reason"] == "Conflict" and e["type"] == "Warning" for e in h.events())


async def test_a_keda_scaledobject_is_a_conflict_and_absent_keda_is_none(h: Harness) -> None:
    h.create("tokenscale.dev/v1alpha1", "tokenbudgets", tokenbudget())
    await h.observe()
    await h.cycle()  # no KEDA CRD: the lookup answers 404, which means no conflict
    assert condition(h.budget(), "Conflict")["status"] == "False"

    other = Reconciler(h.reconciler.settings, KubeAdapter(load_client(5)), OperatorMetrics())
    h.create("apiextensions.k8s.io/v1", "customresourcedefinitions", keda_scaledobject_crd())
    h.create("keda.sh/v1alpha1", "scaledobjects", {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "llama-keda", "namespace": NS},
        "spec": {"scaleTargetRef": {"name": "llama-8b"}}})
    h.reconciler = other  # a fresh operator finds KEDA installed
    await h.observe()
    await h.cycle()
    conflict = condition(h.budget(), "Conflict")
    assert conflict["status"] == "True" and "ScaledObject llama-keda" in conflict["message"]
    other.close()


def idle_budget(h: Harness, name: str) -> None:
    """A budget on a Deployment of zero replicas, with no metrics: nothing it reports moves."""
    h.create("apps/v1", "deployments", deployment(name, 0))
    body = tokenbudget(name)
    body["spec"]["targets"][0].update(name=name, minReplicas=0,
                                      scaleTargetRef={"apiVersion": "apps/v1",
                                                      "kind": "Deployment", "name": name})
    h.create("tokenscale.dev/v1alpha1", "tokenbudgets", body)


async def test_status_is_patched_only_when_it_changed(h: Harness) -> None:
    # zero replicas and no metrics: nothing moves, so nothing is written after the first
    idle_budget(h, "idle")
    await h.observe("idle")
    await h.cycle()
    path = r"tokenbudgets/idle/status$"
    first = h.server.request_count("PATCH", path)
    assert first == 1
    stamp = h.budget("idle")["status"]["lastReconcileTime"]
    for _ in range(3):
        await h.cycle()
    assert h.server.request_count("PATCH", path) == first
    assert h.budget("idle")["status"]["lastReconcileTime"] == stamp
    sent = h.reconciler.metrics.status_patches.labels("skipped")._value.get()
    assert sent == 3

    h.kubectl.run("scale", "deployment/idle", "--replicas=2", namespace=NS)  # by hand
    await h.cycle()
    assert h.server.request_count("PATCH", path) == first + 1
    assert h.budget("idle")["status"]["replicas"] == 2


async def test_deleting_a_budget_leaves_replicas_and_owners_alone(h: Harness) -> None:
    h.create("tokenscale.dev/v1alpha1", "tokenbudgets", tokenbudget())
    await h.observe()
    await h.cycle()
    before = h.get("apps/v1", "deployments", "llama-8b")
    h.reconciler.on_event("DELETED", h.budget())
    assert h.reconciler.entries == {}
    await h.cycle()
    after = h.get("apps/v1", "deployments", "llama-8b")
    assert after["spec"]["replicas"] == before["spec"]["replicas"] == 3
    assert "ownerReferences" not in after["metadata"]
    assert "finalizers" not in h.budget()["metadata"]


async def test_status_patch_failures_are_retried_next_cycle(h: Harness) -> None:
    h.create("tokenscale.dev/v1alpha1", "tokenbudgets", tokenbudget())
    await h.observe()
    h.server.inject_fault("PATCH", r"tokenbudgets/chat/status$", 500, times=10)
    await h.cycle()
    assert "status" not in h.budget() or not h.budget()["status"].get("phase")
    h.server.clear_faults()
    await h.cycle()
    assert h.budget()["status"]["phase"]


@pytest.mark.parametrize("settings", [paced(status_heartbeat_burst=1.0)])
async def test_heartbeat_writes_are_spread_but_changes_are_not_held(h: Harness) -> None:
    names = [f"idle-{i}" for i in range(6)]
    for name in names:
        idle_budget(h, name)
        await h.observe(name)
    path = r"tokenbudgets/idle-\d/status$"
    await h.cycle()
    assert h.server.request_count("PATCH", path) == 6  # first writes are never held back
    stamp = h.budget(names[0])["status"]["lastReconcileTime"]
    await h.cycle()
    assert h.server.request_count("PATCH", path) == 6  # nothing changed, no heartbeat due
    for entry in h.reconciler.entries.values():  # an hour passes for the heartbeats
        assert entry.last_patch is not None
        entry.last_patch -= 2 * 3600
    # six budgets at a 5 s interval and a 3,600 s heartbeat: 0.008 writes per cycle at the
    # steady rate, so one heartbeat write per cycle
    counts = []
    for _ in range(3):
        await h.cycle()
        counts.append(h.server.request_count("PATCH", path))
    assert counts == [7, 8, 9]
    waiting = [n for n in names if h.budget(n)["status"]["lastReconcileTime"] == stamp]
    assert len(waiting) == 3
    changed = waiting[-1]
    h.kubectl.run("scale", f"deployment/{changed}", "--replicas=2", namespace=NS)  # by hand
    await h.cycle()  # the changed status goes at once, next to this cycle's heartbeat
    assert h.server.request_count("PATCH", path) == 11
    assert h.budget(changed)["status"]["replicas"] == 2
    for _ in range(4):
        await h.cycle()
    # the last heartbeat (the change reset its own budget's), then none: each budget once
    assert h.server.request_count("PATCH", path) == 12
    deferred = h.reconciler.metrics.status_patches.labels("deferred")._value.get()
    assert deferred == 5 + 4 + 3 + 1  # still due after each paced cycle
    stamps = {h.budget(n)["status"]["lastReconcileTime"] for n in names if n != changed}
    assert len(stamps) == 5  # each heartbeat in a cycle of its own


@pytest.mark.parametrize("stale_by", ["written since", "deleted since", "invalid since"])
async def test_a_held_heartbeat_write_is_dropped_when_its_status_went_stale(
        h: Harness, stale_by: str) -> None:
    idle_budget(h, "idle-0")
    await h.observe("idle-0")
    await h.cycle()
    path = r"tokenbudgets/idle-0/status$"
    assert h.server.request_count("PATCH", path) == 1
    reporter = h.reconciler.reporter
    entry = h.reconciler.entries[(NS, "idle-0")]
    assert entry.written is not None and entry.last_patch is not None
    entry.last_patch -= 2 * 3600  # its heartbeat is due
    writes = reporter.begin_cycle([entry])
    wire = {**entry.written, "lastReconcileTime": "2099-01-01T00:00:00Z"}
    assert not await reporter.write_status(entry, wire, cycle=writes)  # held to the end
    assert len(writes.kept) == 1
    if stale_by == "written since":  # e.g. report_invalid wrote Invalid meanwhile
        entry.written = {**entry.written}
    elif stale_by == "deleted since":
        h.reconciler.forget(NS, "idle-0")
    else:
        entry.spec = None
    await reporter.end_cycle(writes)
    assert h.server.request_count("PATCH", path) == 1
    assert h.budget("idle-0")["status"]["lastReconcileTime"] != "2099-01-01T00:00:00Z"


@pytest.mark.parametrize("settings", [paced(events_per_cycle=2)])
async def test_condition_events_wait_their_turn_oldest_first_and_none_is_lost(
        h: Harness) -> None:
    names = [f"idle-{i}" for i in range(5)]
    for name in names:
        idle_budget(h, name)
        await h.observe(name)

    def posted() -> list[tuple[str, str]]:
        items = h.api.call(lambda s: s.list_objects("v1", "events", NS))
        return [(e["involvedObject"]["name"], e["reason"]) for e in items
                if e["involvedObject"]["name"] in names]

    await h.cycle()  # Prometheus is a closed port: every budget's conditions change at once
    queue = [(item[0]["metadata"]["name"], item[1]) for item in h.reconciler.reporter.backlog]
    assert len(posted()) == 2 and len(queue) >= 3
    before = set(posted())
    for _ in range(len(queue)):  # two per cycle: at most this many cycles
        if not h.reconciler.reporter.backlog:
            break
        await h.cycle()
        now = set(posted())
        assert now - before == set(queue[:2])  # the two that waited longest, no more
        queue, before = queue[2:], now
    assert queue == []
    assert len(posted()) == len(set(posted())) == len(before)  # each once, none lost
    assert {name for name, _ in posted()} == set(names)
    assert h.reconciler.metrics.events.labels("posted")._value.get() == len(posted())


@pytest.mark.parametrize("settings", [paced(events_per_cycle=1)])
async def test_past_ten_cycles_of_waiting_events_the_oldest_are_dropped_and_counted(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    names = [f"idle-{i}" for i in range(12)]
    for name in names:
        idle_budget(h, name)
        await h.observe(name)
    await h.cycle()  # at least one condition Event per budget: more than ten wait
    reporter, metrics = h.reconciler.reporter, h.reconciler.metrics
    dropped = metrics.events.labels("dropped")._value.get()
    assert len(reporter.backlog) == 10 - 1  # ten kept, one of them posted
    assert dropped >= 2 and metrics.events.labels("posted")._value.get() == 1
    assert f"{int(dropped)} condition Events dropped" in caplog.text
    newest = [(item[0]["metadata"]["name"], item[1]) for item in reporter.backlog]
    for _ in range(9):
        await h.cycle()
    items = h.api.call(lambda s: s.list_objects("v1", "events", NS))
    posted = [(e["involvedObject"]["name"], e["reason"]) for e in items
              if e["involvedObject"]["name"] in names]
    assert set(newest) <= set(posted) and len(posted) == len(set(posted)) == 10  # none twice


@pytest.fixture
def h(harness: Harness) -> Harness:
    return harness
