"""kopf 1.45 runs a trivial operator against the emulator: handlers fire, status and events land."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from tokenscale_testbed.apiserver import ApiServer, ApiServerThread
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "chat-cost-budget.yaml"


def trivial_operator(url: str) -> kopf.OperatorRegistry:
    """A registry with the settings the emulator needs and two handlers that patch status."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, token="testbed")

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.peering.standalone = True
        settings.watching.server_timeout = 10
        settings.watching.client_timeout = 15
        settings.posting.level = logging.INFO

    @kopf.on.create("tokenscale.dev", "v1alpha1", "tokenbudgets", registry=registry)
    def created(patch: kopf.Patch, body: kopf.Body, **_: Any) -> None:
        patch.status["phase"] = "Active"
        kopf.info(body, reason="Accepted", message="budget accepted")

    @kopf.timer("tokenscale.dev", "v1alpha1", "tokenbudgets", interval=0.2, registry=registry)
    def tick(patch: kopf.Patch, **_: Any) -> None:
        patch.status["lastReconcileTime"] = "2026-01-01T00:00:00Z"

    return registry


def test_kopf_handlers_patch_status_and_post_events(apiserver: ApiServerThread,
                                                    emulator: ApiServer) -> None:
    stop = threading.Event()
    registry = trivial_operator(apiserver.url)
    thread = threading.Thread(target=lambda: asyncio.run(kopf.operator(
        registry=registry, clusterwide=True, standalone=True, stop_flag=stop)), daemon=True)
    thread.start()
    try:
        body = yaml.safe_load(SAMPLE.read_text())
        apiserver.call(lambda s: s.create_object("tokenscale.dev/v1alpha1", "tokenbudgets", body))

        def status() -> dict[str, Any]:
            obj = emulator.get_object("tokenscale.dev/v1alpha1", "tokenbudgets", "inference",
                                      "chat") or {}
            return obj.get("status") or {}

        wait_for(lambda: status().get("phase") == "Active" and status().get("lastReconcileTime"),
                 timeout=20, message="kopf to patch the status")
        events = wait_for(lambda: [e for e in emulator.list_objects("v1", "events", "inference")
                                   if e.get("reason") == "Accepted"],
                          timeout=10, message="the event")
        assert events[0]["involvedObject"]["name"] == "chat"
        assert "kopf" not in status()  # pruned by the structural schema, as on a real server
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()
