"""Acting on a plan: replicas patched through the scale subresource, one Event per attempt.

Only in Active mode, only for decisions that ask to scale, never on a target with another
autoscaler (Conflict) or a target error, and never to the replicas it already has. A failed
patch is counted, logged and reported as a ScaleFailed Warning; the next cycle tries again.
"""

from __future__ import annotations

import logging
from datetime import datetime

from tokenscale import api
from tokenscale.adapters.kube import KubeAdapter, KubeError
from tokenscale.core.types import Decision, Observation, Plan, TargetObservation
from tokenscale.metrics import OperatorMetrics
from tokenscale.registry import BudgetEntry
from tokenscale.reporting import Reporter

log = logging.getLogger("tokenscale")


def should_patch(decision: Decision, seen: TargetObservation) -> bool:
    """Whether a decision is to be applied to the workload as observed."""
    if not decision.scale or seen.conflict or seen.target_error:
        return False
    return decision.replicas != seen.current_replicas


async def apply_plan(
    kube: KubeAdapter, metrics: OperatorMetrics, reporter: Reporter, entry: BudgetEntry,
    spec: api.TokenBudgetSpec, plan: Plan, observation: Observation, at: datetime,
) -> None:
    """Patch the replicas of every target whose decision says so (Active mode only)."""
    if spec.mode != "Active":
        return  # DryRun: decide and report only
    for t in spec.targets:
        decision = plan.decisions.get(t.name)
        seen = observation.targets.get(t.name)
        if decision is None or seen is None or not should_patch(decision, seen):
            continue
        ref = t.scale_target_ref
        try:
            await kube.patch_scale(entry.namespace, ref.kind, ref.name, decision.replicas)
        except KubeError as exc:
            metrics.scale_errors.inc()
            log.warning("%s/%s: scaling %s %s failed: %s", entry.namespace, entry.name,
                        ref.kind, ref.name, exc)
            await reporter.event(entry, "ScaleFailed",
                                 f"{ref.kind} {ref.name}: {seen.current_replicas} -> "
                                 f"{decision.replicas} failed: {exc}", "Warning", at)
            continue
        metrics.scale_actions.labels(decision.reason).inc()
        log.info("%s/%s: scaled %s %s %d -> %d (%s)", entry.namespace, entry.name, ref.kind,
                 ref.name, seen.current_replicas, decision.replicas, decision.reason)
        await reporter.event(
            entry, "Scaled",
            f"{ref.kind} {ref.name}: {seen.current_replicas} -> {decision.replicas} "
            f"replicas ({decision.reason}: {decision.message})", "Normal", at,
        )
