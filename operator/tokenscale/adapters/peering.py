"""Which operator replica may act: kopf's peering record, read by the planning loop.

kopf pauses its own watch streams when a live peer with a higher priority (or, as a
conflict, the same priority) exists in the ``ClusterKopfPeering`` object; it does not know
about the operator's own planning loop. :class:`PeeringGate` applies kopf's rule to the same
record before every cycle, so a paused replica neither scales nor writes status. With shards
(:mod:`tokenscale.sharding`) each shard has its own peering object, and the gate reads all of
them (one LIST per cycle) to hand namespaces over between shard configurations.

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

from tokenscale.sharding import Handoff, PeeringObject, Shard, handoff

log = logging.getLogger("tokenscale")

PEERING_GROUP, PEERING_VERSION, PEERING_PLURAL = "kopf.dev", "v1", "clusterkopfpeerings"


def _parse(stamp: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def alive(info: Any, now: datetime) -> bool:
    """Whether one peer record is alive at ``now`` (``lastseen + lifetime`` not passed)."""
    if not isinstance(info, Mapping):
        return False
    seen = _parse(info.get("lastseen"))
    try:
        lifetime = float(info.get("lifetime", 60))
    except (TypeError, ValueError):
        return False
    return seen is not None and seen + timedelta(seconds=lifetime) > now


def may_act(peers: Mapping[str, Any], identity: str, priority: int, now: datetime) -> bool:
    """kopf's rule: act unless a live other peer has a higher or the same priority."""
    for peer_id, info in peers.items():
        if peer_id == identity or not alive(info, now):
            continue  # itself, or dead (kopf cleans it up)
        try:
            other = int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if other >= priority:
            return False
    return True


def peering_objects(items: list[Any], now: datetime) -> list[PeeringObject]:
    """The peering objects of a LIST answer as the shard handoff needs them."""
    out = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        meta = item.get("metadata") or {}
        created = _parse(meta.get("creationTimestamp")) or now
        status = item.get("status")
        peers = status if isinstance(status, Mapping) else {}
        out.append(PeeringObject(str(meta.get("name", "")), created,
                                 any(alive(info, now) for info in peers.values())))
    return out


class PeeringGate:
    """Reads the cluster-wide peering objects and applies :func:`may_act` to this replica's
    own (``name``), and the shard handoff (:func:`tokenscale.sharding.handoff`) to the
    objects of other shard configurations named after ``base``."""

    def __init__(self, client: kubernetes.client.ApiClient, name: str, identity: str,
                 priority: int, timeout_seconds: float = 10.0, base: str | None = None,
                 shard: Shard | None = None) -> None:
        self._api = kubernetes.client.CustomObjectsApi(client)
        self.name = name
        self.base = base if base is not None else name
        self.shard = shard or Shard()
        self.identity = identity
        self.priority = priority
        self._timeout = timeout_seconds
        self.active = False  # the last answer
        self.handoff = Handoff()  # the last answer's older shards of other configurations

    def _read(self) -> list[Any]:
        obj = self._api.list_cluster_custom_object(
            PEERING_GROUP, PEERING_VERSION, PEERING_PLURAL, _request_timeout=self._timeout)
        items = obj.get("items") if isinstance(obj, dict) else None
        return items if isinstance(items, list) else []

    async def check(self, now: datetime | None = None) -> bool:
        """True when this replica may act now; unreadable record: False (never two act).
        Also refreshes :attr:`handoff`."""
        try:
            items = await asyncio.to_thread(self._read)
        except (ApiException, OSError, ValueError) as exc:
            log.warning("peering %s unreadable, not acting this cycle: %s", self.name, exc)
            self.active = False
            return False
        at = now or datetime.now(UTC)
        own = next((i for i in items if isinstance(i, Mapping)
                    and (i.get("metadata") or {}).get("name") == self.name), {})
        status = own.get("status")
        active = may_act(status if isinstance(status, Mapping) else {}, self.identity,
                         self.priority, at)
        if active != self.active:
            log.info("peering %s: %s (priority %d)", self.name,
                     "acting" if active else "standing by", self.priority)
        handed = handoff(peering_objects(items, at), self.base, self.shard)
        if handed != self.handoff:
            log.info("peering %s: namespaces kept by older shards of another configuration: "
                     "%s", self.name, ", ".join(f"{s.index}-of-{s.count}" for s in handed.older)
                     or "none")
        self.active = active
        self.handoff = handed
        return active
