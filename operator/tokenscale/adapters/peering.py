"""Which operator replica may act: kopf's peering record, read by the planning loop.

kopf pauses its own watch streams when a live peer with a higher priority (or, as a
conflict, the same priority) exists in the ``ClusterKopfPeering`` object; it does not know
about the operator's own planning loop. :class:`PeeringGate` applies kopf's rule to the same
record before every cycle, so a paused replica neither scales nor writes status.

The record (``status`` of the peering object) maps each operator identity to
``{"priority": int, "lastseen": RFC 3339, "lifetime": seconds}``; a peer is dead once
``lastseen + lifetime`` has passed. Replicas must have distinct priorities: with equal ones
kopf pauses all of them (``tokenscale run`` picks a random priority unless
``TOKENSCALE_PEERING_PRIORITY`` is set).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("tokenscale")

PEERING_GROUP, PEERING_VERSION, PEERING_PLURAL = "kopf.dev", "v1", "clusterkopfpeerings"


def _parse(stamp: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def may_act(peers: Mapping[str, Any], identity: str, priority: int, now: datetime) -> bool:
    """kopf's rule: act unless a live other peer has a higher or the same priority."""
    for peer_id, info in peers.items():
        if peer_id == identity or not isinstance(info, Mapping):
            continue
        seen = _parse(info.get("lastseen"))
        try:
            lifetime = float(info.get("lifetime", 60))
            other = int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if seen is None or seen + timedelta(seconds=lifetime) <= now:
            continue  # dead (kopf cleans it up)
        if other >= priority:
            return False
    return True


class PeeringGate:
    """Reads the cluster-wide peering object ``name`` and applies :func:`may_act`."""

    def __init__(self, client: kubernetes.client.ApiClient, name: str, identity: str,
                 priority: int, timeout_seconds: float = 10.0) -> None:
        self._api = kubernetes.client.CustomObjectsApi(client)
        self.name = name
        self.identity = identity
        self.priority = priority
        self._timeout = timeout_seconds
        self.active = False  # the last answer

    def _read(self) -> dict[str, Any]:
        obj = self._api.get_cluster_custom_object(
            PEERING_GROUP, PEERING_VERSION, PEERING_PLURAL, self.name,
            _request_timeout=self._timeout)
        return obj if isinstance(obj, dict) else {}

    async def check(self, now: datetime | None = None) -> bool:
        """True when this replica may act now; unreadable record: False (never two act)."""
        try:
            obj = await asyncio.to_thread(self._read)
        except (ApiException, OSError, ValueError) as exc:
            log.warning("peering %s unreadable, not acting this cycle: %s", self.name, exc)
            self.active = False
            return False
        status = obj.get("status") if isinstance(obj, dict) else None
        active = may_act(status if isinstance(status, dict) else {}, self.identity,
                         self.priority, now or datetime.now(UTC))
        if active != self.active:
            log.info("peering %s: %s (priority %d)", self.name,
                     "acting" if active else "standing by", self.priority)
        self.active = active
        return active
