"""Shards: several `tokenscale run` deployments, each serving a disjoint share of the budgets.

A TokenBudget belongs to shard ``shard_of(namespace, shards)``: a stable hash (SHA-256, not
Python's salted ``hash``) of its namespace modulo the shard count. All budgets of a namespace
are served by one shard, so the per-namespace reads (workloads, autoscalers) and a team's
budgets stay together. Every replica of every shard computes the same answer from the same
two numbers (``TOKENSCALE_SHARDS``, ``TOKENSCALE_SHARD``), so no coordination is needed while
the shard count stays the same.

Within a shard, replicas use kopf peering under the shard's own peering object
(:func:`shard_peering_name`: ``<name>-shard-<i>-of-<n>``, or ``<name>`` itself unsharded):
the standby of shard *i* takes over shard *i*'s budgets only.

**Changing the shard count** (:class:`Handoff`). While shards of two configurations run at
once (a rollout from 4 to 5 shards), a namespace can hash to a shard of each. The rule that
keeps a budget with exactly one of them: a shard serves a namespace only if no *live* shard
of another configuration that owns it (by that configuration's hash) has an older peering
object. The older configuration keeps its namespaces until its shard stops (its peers leave
the peering record or their lifetime runs out), then the newer one takes them, after reading
their status again. Pure: the peering records are read by :mod:`tokenscale.adapters.peering`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

_SHARD_NAME = re.compile(r"^(?P<base>.+)-shard-(?P<index>[0-9]+)-of-(?P<count>[0-9]+)$")


def shard_of(namespace: str, shards: int) -> int:
    """The shard (0 .. shards-1) that serves the budgets of ``namespace``."""
    if shards <= 1:
        return 0
    digest = hashlib.sha256(namespace.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def shard_peering_name(base: str, index: int, shards: int) -> str:
    """The kopf peering object of shard ``index`` of ``shards`` (``base`` unsharded)."""
    return base if shards <= 1 else f"{base}-shard-{index}-of-{shards}"


def parse_peering_name(name: str, base: str) -> tuple[int, int] | None:
    """(index, count) of a shard's peering object named after ``base``; None for others."""
    if name == base:
        return 0, 1
    m = _SHARD_NAME.match(name)
    if m is None or m.group("base") != base:
        return None
    index, count = int(m.group("index")), int(m.group("count"))
    return (index, count) if 0 <= index < count else None


@dataclass(frozen=True)
class Shard:
    """This operator's share: shard ``index`` of ``count``."""

    index: int = 0
    count: int = 1

    def owns(self, namespace: str) -> bool:
        """Whether budgets of ``namespace`` belong to this shard."""
        return shard_of(namespace, self.count) == self.index


@dataclass(frozen=True)
class PeeringObject:
    """One peering object as the handoff rule needs it: its name, creation time, and whether
    any of its peers is alive."""

    name: str
    created: datetime
    alive: bool


@dataclass(frozen=True)
class Handoff:
    """The shards of *other* configurations that keep their namespaces before this one: live,
    with a peering object older than this shard's (creation time, then name)."""

    older: tuple[Shard, ...] = ()

    def yields(self, namespace: str) -> bool:
        """True when an older live shard of another configuration owns ``namespace``."""
        return any(s.owns(namespace) for s in self.older)


def handoff(objects: Iterable[PeeringObject], base: str, me: Shard) -> Handoff:
    """The :class:`Handoff` of shard ``me`` from the peering objects named after ``base``.
    Without its own object (not yet created) it yields to every live configuration."""
    parsed = [(o, parse_peering_name(o.name, base)) for o in objects]
    own_name = shard_peering_name(base, me.index, me.count)
    own = next((o for o, _ in parsed if o.name == own_name), None)
    older: list[Shard] = []
    for obj, shard in parsed:
        if shard is None or not obj.alive or shard[1] == me.count:
            continue
        if own is None or (obj.created, obj.name) < (own.created, own.name):
            older.append(Shard(*shard))
    return Handoff(tuple(sorted(set(older), key=lambda s: (s.count, s.index))))

