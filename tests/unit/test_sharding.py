"""Shards by a stable hash of the namespace, and the handoff while the shard count changes
(pure: no API; the peering records arrive as values)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from tokenscale.adapters.peering import peering_objects
from tokenscale.settings import OperatorSettings
from tokenscale.sharding import (
    PeeringObject,
    Shard,
    handoff,
    parse_peering_name,
    shard_of,
    shard_peering_name,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAMESPACES = [f"team-{i:04d}" for i in range(1000)]


def test_every_namespace_has_exactly_one_shard() -> None:
    for shards in (1, 2, 3, 4, 7):
        for ns in NAMESPACES[:200]:
            owners = [i for i in range(shards) if Shard(i, shards).owns(ns)]
            assert owners == [shard_of(ns, shards)]


def test_the_hash_is_stable_and_spreads_evenly() -> None:
    # Fixed values: a shard must get the same answer in every process, on every machine
    # (Python's own hash() of a str is salted per process).
    # The values are part of the contract: changing the hash moves every budget.
    assert [shard_of(ns, 4) for ns in ("inference", "team-0000", "batch", "team-0001")] == [
        1, 0, 1, 1]
    counts = Counter(shard_of(ns, 4) for ns in NAMESPACES)
    assert sorted(counts) == [0, 1, 2, 3]
    assert max(counts.values()) < 1.2 * len(NAMESPACES) / 4


def test_peering_names_of_shards() -> None:
    assert shard_peering_name("tokenscale", 0, 1) == "tokenscale"
    assert shard_peering_name("tokenscale", 2, 4) == "tokenscale-shard-2-of-4"
    assert parse_peering_name("tokenscale-shard-2-of-4", "tokenscale") == (2, 4)
    assert parse_peering_name("tokenscale", "tokenscale") == (0, 1)
    assert parse_peering_name("other-shard-2-of-4", "tokenscale") is None
    assert parse_peering_name("tokenscale-shard-4-of-4", "tokenscale") is None
    assert parse_peering_name("tokenscale-x", "tokenscale") is None


def _obj(name: str, created_min: int, alive: bool = True) -> PeeringObject:
    return PeeringObject(name, NOW + timedelta(minutes=created_min), alive)


def test_a_new_configuration_yields_to_the_older_live_one_until_it_stops() -> None:
    old = [_obj(f"tokenscale-shard-{i}-of-2", 0) for i in range(2)]
    new = [_obj(f"tokenscale-shard-{i}-of-3", 10) for i in range(3)]
    for i in range(3):  # every new shard yields what the old live shards own
        h = handoff([*old, *new], "tokenscale", Shard(i, 3))
        assert set(h.older) == {Shard(0, 2), Shard(1, 2)}
        assert all(h.yields(ns) for ns in NAMESPACES[:50])
    for i in range(2):  # the old shards yield nothing
        assert handoff([*old, *new], "tokenscale", Shard(i, 2)).older == ()
    # Old shard 1 stopped (no live peer): its namespaces pass to the new configuration.
    stopped = [old[0], _obj("tokenscale-shard-1-of-2", 0, alive=False), *new]
    for i in range(3):
        h = handoff(stopped, "tokenscale", Shard(i, 3))
        for ns in NAMESPACES[:200]:
            assert h.yields(ns) == (shard_of(ns, 2) == 0)
    # At every moment each namespace has exactly one server among the live shards.
    for objects in ([*old, *new], stopped):
        live = [parse_peering_name(o.name, "tokenscale") for o in objects if o.alive]
        for ns in NAMESPACES[:200]:
            servers = [s for s in live if s is not None and Shard(*s).owns(ns)
                       and not handoff(objects, "tokenscale", Shard(*s)).yields(ns)]
            assert len(servers) == 1, (ns, servers)


def test_unrelated_and_same_configuration_objects_are_ignored() -> None:
    objects = [_obj("tokenscale-shard-0-of-3", 5), _obj("tokenscale-shard-1-of-3", 0),
               _obj("someone-else", 0), _obj("tokenscale-shard-0-of-2", 9)]
    # Shards of the own configuration never count, whatever their age; a newer one neither.
    assert handoff(objects, "tokenscale", Shard(0, 3)).older == ()
    # Without an own object yet, every live other configuration is older.
    assert handoff(objects[1:], "tokenscale", Shard(0, 4)).older == (
        Shard(0, 2), Shard(1, 3))


def test_peering_objects_from_a_list_answer() -> None:
    seen = (NOW - timedelta(seconds=5)).isoformat()
    items = [
        {"metadata": {"name": "a", "creationTimestamp": "2026-03-01T10:00:00Z"},
         "status": {"me": {"priority": 1, "lastseen": seen, "lifetime": 60}}},
        {"metadata": {"name": "b", "creationTimestamp": "2026-03-01T11:00:00Z"},
         "status": {"me": {"priority": 1, "lastseen": seen, "lifetime": 2}}},
        {"metadata": {"name": "c"}},
        "garbage",
    ]
    got = peering_objects(items, NOW)
    assert [(o.name, o.alive) for o in got] == [("a", True), ("b", False), ("c", False)]
    assert got[0].created == datetime(2026, 3, 1, 10, tzinfo=UTC)


def test_settings_of_a_shard() -> None:
    s = OperatorSettings(shards=4, shard=3, peering_name="tokenscale")
    assert s.effective_peering_name == "tokenscale-shard-3-of-4"
    assert s.shard_spec == Shard(3, 4)
    assert OperatorSettings(peering_name="tokenscale").effective_peering_name == "tokenscale"
    assert OperatorSettings(shards=4, shard=1).effective_peering_name is None
    with pytest.raises(ValidationError):
        OperatorSettings(shards=4, shard=4)


def test_the_shard_command_names_each_namespaces_shard(capsys: pytest.CaptureFixture[str]) -> None:
    from tokenscale.cli import main

    assert main(["shard", "inference", "team-0000", "--shards", "4"]) == 0
    assert capsys.readouterr().out == "inference\t1\nteam-0000\t0\n"


def test_a_shards_batched_queries_cover_only_the_namespaces_it_serves() -> None:
    from tokenscale.adapters import promql
    from tokenscale.metrics import OperatorMetrics
    from tokenscale.prometheus_reads import PrometheusReads

    served = ["team-b", "team-a", "team-b"]
    shard = PrometheusReads(OperatorSettings(shards=2, shard=1), OperatorMetrics(),
                            served_namespaces=lambda: served)
    assert shard.namespaces() == ["team-a", "team-b"]
    assert 'namespace=~"team\\\\-a|team\\\\-b"' in promql.queue_query(shard.namespaces())
    single = PrometheusReads(OperatorSettings(namespaces="x,y"), OperatorMetrics(),
                             served_namespaces=lambda: served)
    assert single.namespaces() == ["x", "y"]  # unsharded: the setting (empty: everything)
    shard.close()
    single.close()


def test_shards_tick_at_their_own_phase_of_the_interval() -> None:
    from tokenscale.registry import next_tick

    assert next_tick(1000.0, 30) == 1020.0
    assert next_tick(1000.0, 30, phase=0.25) == 1028.0  # ticks at 998, 1028: 7.5 s -> 8 s
    assert next_tick(1008.0, 30, phase=0.5) == 1035.0
    assert next_tick(1035.0, 30, phase=0.5) == 1065.0  # strictly after now
