"""Fixtures of the fault suite (on top of tests/conftest.py: emulator, kubeconfig, kubectl)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faultkit import FaultyPrometheus


@pytest.fixture
def faulty_prometheus() -> Iterator[FaultyPrometheus]:
    """A switchable Prometheus peer (see :class:`faultkit.FaultyPrometheus`)."""
    server = FaultyPrometheus().start()
    yield server
    server.stop()
