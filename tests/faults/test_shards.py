"""Sharded operators (TOKENSCALE_SHARDS): each shard serves only the budgets of the namespaces
that hash to it, each with its own kopf peering for its standby. SIGKILL one shard's active
replica: its standby takes over that shard's budgets only; and while the shard count
changes, a budget stays with exactly one shard."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from faultkit import (
    Channel,
    FaultyPrometheus,
    OperatorProcess,
    budget,
    create,
    deployment,
    operators,
    replica_history,
    scale_patches,
    target,
    wait_cycles,
)

from tokenscale.sharding import shard_of
from tokenscale_testbed.apiserver import ApiServerThread
from tokenscale_testbed.waiting import wait_for

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
SHARDS = 2


def namespaces_of_shards(per_shard: int) -> dict[int, list[str]]:
    """``per_shard`` namespace names for each of the SHARDS shards."""
    out: dict[int, list[str]] = {i: [] for i in range(SHARDS)}
    n = 0
    while any(len(v) < per_shard for v in out.values()):
        ns = f"team-{n}"
        shard = out[shard_of(ns, SHARDS)]
        if len(shard) < per_shard:
            shard.append(ns)
        n += 1
    return out


def setup_fleet(apiserver: ApiServerThread, prom: FaultyPrometheus,
                peerings: list[str]) -> tuple[dict[int, list[str]], str]:
    """Peering objects, and per shard two namespaces with one budget ("chat") each, scaling
    its Deployment "llama" (2 replicas, demand for 4); returns the namespaces by shard and
    the Prometheus URL of the first channel (the operators' default)."""
    peering_crd = yaml.safe_load((ROOT / "crds" / "clusterkopfpeerings.kopf.dev.yaml").read_text())
    create(apiserver, "apiextensions.k8s.io/v1", "customresourcedefinitions", peering_crd)
    for name in peerings:
        create(apiserver, "kopf.dev/v1", "clusterkopfpeerings",
               {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                "metadata": {"name": name}})
    by_shard = namespaces_of_shards(2)
    first = ""
    for spaces in by_shard.values():
        for ns in spaces:
            create(apiserver, "v1", "namespaces",
                   {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            url = prom.add(ns, Channel(ns, "llama", rate=4000.0))
            first = first or url
            create(apiserver, "apps/v1", "deployments", deployment(ns, "llama", 2))
            create(apiserver, "tokenscale.dev/v1alpha1", "tokenbudgets",
                   budget(ns, "chat", [target("llama", costPerReplicaHour=720.0)],
                          prometheus_url=url))
    return by_shard, first


def events_by(apiserver: ApiServerThread, ns: str) -> set[str]:
    """The reporting instances of the operator's Events in ``ns``."""
    events = apiserver.call(lambda s: s.list_objects("v1", "events", ns))
    return {e.get("reportingInstance", "") for e in events
            if e.get("source", {}).get("component") == "tokenscale"}


def all_at(apiserver: ApiServerThread, spaces: list[str], replicas: int) -> bool:
    return all(replica_history(apiserver, ns, "llama")[-1] == replicas for ns in spaces)


def test_killing_one_shards_active_replica_moves_only_its_budgets_to_its_standby(
    apiserver: ApiServerThread, kubeconfig: Path, faulty_prometheus: FaultyPrometheus
) -> None:
    prom = faulty_prometheus
    names = [f"tokenscale-shard-{i}-of-{SHARDS}" for i in range(SHARDS)]
    by_shard, url = setup_fleet(apiserver, prom, names)
    every = [ns for spaces in by_shard.values() for ns in spaces]

    def shard(i: int, role: str, priority: str) -> OperatorProcess:
        return OperatorProcess(kubeconfig, url, instance=f"s{i}-{role}", peering_name="tokenscale",
                               shards=str(SHARDS), shard=str(i), peering_priority=priority,
                               peering_lifetime_seconds="6")

    s0a, s1a = shard(0, "active", "200"), shard(1, "active", "200")
    s0b, s1b = shard(0, "standby", "100"), shard(1, "standby", "100")
    with operators(s0a, s1a, s0b, s1b):  # the actives first: the only actors from the start
        wait_for(lambda: all_at(apiserver, every, 4), timeout=40,
                 message="every budget served by its shard (2 -> 4)")
        for i, op in ((0, s0a), (1, s1a)):
            assert op.metric("tokenscale_tokenbudgets") == 2  # its own two, not the others
            assert op.metric("tokenscale_scale_actions_total") == 2
            for ns in by_shard[i]:
                assert events_by(apiserver, ns) == {op.instance}
        for op in (s0b, s1b):
            assert op.metric("tokenscale_cycles_total") == 0
            assert op.metric("tokenscale_status_patches_total", outcome="sent") == 0

        s0a.kill()  # SIGKILL: its peering record stays until its lifetime runs out
        for ns in by_shard[0]:  # now needs 6: only a live actor of shard 0 gets there
            prom.channels[ns].rate = 6000.0
        wait_for(lambda: all_at(apiserver, by_shard[0], 6), timeout=40,
                 message="shard 0's standby to take over shard 0's budgets")
        for ns in by_shard[0]:
            wait_for(lambda ns=ns: "s0-standby" in events_by(apiserver, ns), timeout=15,  # type: ignore[misc]
                     message="the standby's scale Event")
        for ns in every:  # every budget goes on being served, shard 1's throughout
            wait_cycles(apiserver, ns, "chat", cycles=1)
        cycles_of_shard_1 = s1a.metric("tokenscale_cycles_total")

        assert s0b.metric("tokenscale_scale_actions_total") == 2  # shard 0's two budgets
        assert s0b.metric("tokenscale_tokenbudgets") == 2  # and not shard 1's
        assert s1a.metric("tokenscale_scale_actions_total") == 2  # nothing more to do
        assert s1b.metric("tokenscale_cycles_total") == 0  # shard 1's standby never acted
        for ns in by_shard[0]:
            assert events_by(apiserver, ns) == {"s0-active", "s0-standby"}
            assert replica_history(apiserver, ns, "llama") == [2, 4, 6]  # once per step
            assert scale_patches(apiserver, ns, "llama") == 2  # never twice, none dropped
        for ns in by_shard[1]:
            assert events_by(apiserver, ns) == {"s1-active"}
            assert replica_history(apiserver, ns, "llama") == [2, 4]
        assert cycles_of_shard_1 > 0


def test_a_new_shard_configuration_takes_over_only_when_the_old_one_stops(
    apiserver: ApiServerThread, kubeconfig: Path, faulty_prometheus: FaultyPrometheus
) -> None:
    prom = faulty_prometheus
    # The old configuration (one operator, peering "tokenscale") has the older object.
    by_shard, url = setup_fleet(apiserver, prom, ["tokenscale"])
    every = [ns for spaces in by_shard.values() for ns in spaces]
    common = {"peering_name": "tokenscale", "peering_lifetime_seconds": "6"}
    old = OperatorProcess(kubeconfig, url, instance="old", **common)
    new = [OperatorProcess(kubeconfig, url, instance=f"new{i}", shards=str(SHARDS),
                           shard=str(i), **common) for i in range(SHARDS)]
    with operators(old):
        wait_for(lambda: all_at(apiserver, every, 4), timeout=30,
                 message="the single operator to serve every budget")
        for i in range(SHARDS):
            create(apiserver, "kopf.dev/v1", "clusterkopfpeerings",
                   {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                    "metadata": {"name": f"tokenscale-shard-{i}-of-{SHARDS}"}})
        with operators(*new):
            # The new shards hold their budgets back while the old operator lives.
            wait_for(lambda: all(op.metric("tokenscale_tokenbudgets_yielded") == 2
                                 for op in new), timeout=30,
                     message="the new shards to yield to the old operator")
            for ns in every:  # the old operator goes on serving every budget
                wait_cycles(apiserver, ns, "chat", cycles=2)
            assert all(op.metric("tokenscale_scale_actions_total") == 0 for op in new)
            assert all(op.metric("tokenscale_status_patches_total", outcome="sent") == 0
                       for op in new)
            assert all(op.metric("tokenscale_cycles_total") == 0 for op in new)

            old.stop()  # the rollout ends the old configuration
            for ns in every:  # now needs 6: only the new shards are there to serve it
                prom.channels[ns].rate = 6000.0
            wait_for(lambda: all_at(apiserver, every, 6), timeout=40,
                     message="the new shards to take over")
            for i, op in enumerate(new):
                assert op.metric("tokenscale_tokenbudgets_yielded") == 0
                assert op.metric("tokenscale_scale_actions_total") == 2  # its own two
                for ns in by_shard[i]:  # Events follow the scale: await them
                    wait_for(lambda ns=ns, op=op: events_by(apiserver, ns)  # type: ignore[misc]
                             == {"old", op.instance}, timeout=15,
                             message=f"the scale Events in {ns} of old and {op.instance}")
            for ns in every:
                assert replica_history(apiserver, ns, "llama") == [2, 4, 6]
