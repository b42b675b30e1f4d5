"""The API emulator's store on its own, without HTTP: the write rules a real API server keeps
(resourceVersion, 409 on stale writes, generation) and the history watches replay."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tokenscale_testbed.errors import ApiError
from tokenscale_testbed.store import Store, Target
from tokenscale_testbed.watch import Watcher, initial_events, matcher

pytestmark = pytest.mark.integration

NS = "inference"


def deployment(name: str = "llama-8b", replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}}}


def target(store: Store, name: str = "llama-8b", subresource: str | None = None) -> Target:
    return Target(store.resource_type("apps/v1", "deployments"), NS, name, subresource)


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


@pytest.fixture
def store() -> Store:
    return Store(namespaces=["default", NS])


def test_create_fills_metadata_and_refuses_an_existing_name(store: Store) -> None:
    created = store.create_object("apps/v1", "deployments", deployment())
    stored = store.get_object("apps/v1", "deployments", NS, "llama-8b")
    assert stored == created
    meta = created["metadata"]
    assert meta["uid"] and meta["generation"] == 1 and rv(created) == store.rv
    assert created["status"] == {}  # defaulted, as for a real Deployment
    with pytest.raises(ApiError) as exc:
        store.create_object("apps/v1", "deployments", deployment(replicas=7))
    assert (exc.value.code, exc.value.reason) == (409, "AlreadyExists")
    assert store.get_object("apps/v1", "deployments", NS, "llama-8b") == stored
    with pytest.raises(ApiError) as missing:
        store.create_object("apps/v1", "deployments", {**deployment(), "metadata": {
            "name": "x", "namespace": "nowhere"}})
    assert missing.value.code == 404


def test_update_with_a_stale_resource_version_is_a_conflict(store: Store) -> None:
    first = store.create_object("apps/v1", "deployments", deployment())
    stale = str(rv(first))

    def scale_to(n: int) -> Any:
        def change(obj: dict[str, Any]) -> dict[str, Any]:
            obj["metadata"]["resourceVersion"] = stale
            obj["spec"]["replicas"] = n
            return obj
        return change

    second = store.update(target(store), scale_to(3), dry_run=False)
    assert rv(second) > rv(first) and second["spec"]["replicas"] == 3
    with pytest.raises(ApiError) as exc:
        store.update(target(store), scale_to(9), dry_run=False)
    assert exc.value.code == 409 and "has been modified" in exc.value.message
    assert store.get_object("apps/v1", "deployments", NS, "llama-8b") == second
    with pytest.raises(ApiError) as pre:
        store.delete(target(store), {"preconditions": {"resourceVersion": stale}})
    assert pre.value.code == 409


def test_generation_follows_spec_but_not_status_or_no_ops(store: Store) -> None:
    store.create_object("apps/v1", "deployments", deployment())

    def set_status(obj: dict[str, Any]) -> dict[str, Any]:
        obj["status"] = {"readyReplicas": 2}
        obj["spec"]["replicas"] = 50  # ignored on the status subresource
        return obj
    status = store.update(target(store, subresource="status"), set_status, dry_run=False)
    assert status["metadata"]["generation"] == 1
    assert status["status"] == {"readyReplicas": 2} and status["spec"]["replicas"] == 2

    def set_replicas(obj: dict[str, Any]) -> dict[str, Any]:
        obj["spec"]["replicas"] = 4
        obj["status"] = {}  # ignored on the main resource
        return obj
    spec = store.update(target(store), set_replicas, dry_run=False)
    assert spec["metadata"]["generation"] == 2 and spec["status"] == {"readyReplicas": 2}

    again = store.update(target(store), set_replicas, dry_run=False)
    assert again["metadata"]["generation"] == 2 and rv(again) == rv(spec)  # no-op write


def test_history_replays_after_a_resource_version_and_expires(store: Store) -> None:
    deploys = store.resource(store.resource_type("apps/v1", "deployments"))
    store.create_object("apps/v1", "deployments", deployment("other"))
    created = store.create_object("apps/v1", "deployments", deployment())
    store.update(target(store), lambda o: {**o, "spec": {**o["spec"], "replicas": 5}}, False)
    deleted = store.delete(target(store), {})
    assert [(k, o["metadata"]["name"]) for _, k, o in deploys.history] == [
        ("ADDED", "other"), ("ADDED", "llama-8b"), ("MODIFIED", "llama-8b"),
        ("DELETED", "llama-8b")]
    assert [r for r, _, _ in deploys.history] == sorted({r for r, _, _ in deploys.history})

    only_llama = matcher(target(store), {})
    replay = initial_events(deploys, str(rv(created)), only_llama)
    assert [(k, o["spec"]["replicas"]) for k, o in replay] == [("MODIFIED", 5), ("DELETED", 5)]
    assert replay[-1][1]["metadata"]["resourceVersion"] == deleted["metadata"]["resourceVersion"]
    assert initial_events(deploys, str(rv(deleted)), only_llama) == []
    with pytest.raises(ApiError) as bad:
        initial_events(deploys, "yesterday", only_llama)
    assert bad.value.code == 400

    small = Store(namespaces=[NS], watch_history=2)
    first = small.create_object("apps/v1", "deployments", deployment("a"))
    for name in ("b", "c"):
        small.create_object("apps/v1", "deployments", deployment(name))
    res = small.resource(small.resource_type("apps/v1", "deployments"))
    assert len(res.history) == 2 and res.dropped_rv == rv(first)
    (kind, status), = initial_events(res, str(rv(first) - 1), lambda o: True)
    assert kind == "ERROR" and status["code"] == 410 and status["reason"] == "Expired"


def test_writes_reach_the_matching_watchers_only(store: Store) -> None:
    res = store.resource(store.resource_type("apps/v1", "deployments"))
    watcher = Watcher(asyncio.Queue(), matcher(target(store), {}), "apps/v1")
    res.watchers.add(watcher)
    store.create_object("apps/v1", "deployments", deployment("other"))
    store.create_object("apps/v1", "deployments", deployment())
    event = watcher.queue.get_nowait()
    assert event is not None and event[0] == "ADDED"
    assert event[1]["metadata"]["name"] == "llama-8b" and watcher.queue.empty()


def test_the_replica_log_keeps_every_change_with_its_time_until_deletion(store: Store) -> None:
    import time

    before = time.time()
    store.create_object("apps/v1", "deployments", deployment(replicas=2))

    def scale(n: int) -> Any:
        def change(obj: dict[str, Any]) -> dict[str, Any]:
            obj["spec"]["replicas"] = n
            return obj
        return change

    store.update(target(store), scale(5), dry_run=False)
    store.update(target(store, subresource="status"),
                 lambda o: {**o, "status": {"readyReplicas": 5}}, dry_run=False)
    store.update(target(store), scale(5), dry_run=False)  # no change: no entry
    store.delete(target(store), {})
    log = store.replica_log("apps/v1", "deployments", NS, "llama-8b")
    assert [n for _, n in log] == [2, 5, 0]
    times = [t for t, _ in log]
    assert before <= times[0] <= times[1] <= times[2] <= time.time()
    assert store.replica_log("apps/v1", "deployments", NS, "never") == []
