"""What the demo will run: the adapted sample TokenBudgets, the workloads' demand curves, the
fleet's sizes and the notes shown on screen (nothing is started here)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokenscale.demo import budgets as budgets_mod
from tokenscale.demo.budgets import AdaptedBudget
from tokenscale.demo.session import Session, rel
from tokenscale.demo.stack import PROMPT_FRACTION, DemoError
from tokenscale.demo.workloads import (
    WORKLOADS,
    WorkloadDemand,
    WorkloadSelection,
    select_workloads,
)


@dataclass
class DemoPlan:
    """The demo's inputs, decided before anything starts."""

    root: Path  # the repository checkout
    adapted: list[AdaptedBudget]  # re-adapted (replaced) when the Hour period ends
    selection: WorkloadSelection
    demands: list[WorkloadDemand]  # those of a sample budget, rescaled to its targets
    capacity: dict[str, tuple[float, float]]  # target: (tokens/s per replica, cold start s)
    initial: dict[str, int]  # target: replicas at the start
    notes: list[str]  # shown on screen and in the summary (appended to while running)
    #: target: the serving engine its sample names (the fleet speaks its /metrics format)
    engines: dict[str, str] = field(default_factory=dict)


def plan_demo(session: Session) -> DemoPlan:
    """Adapt the samples to compressed time and pick and size the workloads.

    Raises :class:`DemoError` outside a checkout of the repository.
    """
    root = session.root
    if root is None or not (root / "manifests" / "samples").is_dir():
        raise DemoError("manifests/samples not found: run the demo from a checkout of the "
                        "repository (make demo)")
    samples = budgets_mod.load_samples(root / "manifests" / "samples")
    now = datetime.now(UTC)
    adapted = [budgets_mod.adapt(doc, session.speedup, now) for doc in samples]
    by_name = {b.name: b for b in adapted}
    selection = select_workloads(session.traces_dir, WORKLOADS)
    demands = [d for d in selection.demands if d.spec.budget in by_name]
    capacity, initial = size_targets(demands, by_name)
    notes = plan_notes(session, selection, adapted, demands)
    engines = {d.spec.name: str(t.get("engine", "vllm"))
               for d in demands for t in by_name[d.spec.budget].original["spec"]["targets"]
               if t["name"] == d.spec.name}
    return DemoPlan(root, adapted, selection, demands, capacity, initial, notes, engines)


def size_targets(demands: list[WorkloadDemand], by_name: dict[str, AdaptedBudget]
                 ) -> tuple[dict[str, tuple[float, float]], dict[str, int]]:
    """Rescale each demand so its daily peak needs the workload's peak replicas; return the
    fleet's (tokens/s per replica, cold start s) and initial replicas per target."""
    capacity: dict[str, tuple[float, float]] = {}
    initial: dict[str, int] = {}
    for d in demands:
        doc: dict[str, Any] = by_name[d.spec.budget].original
        d.normalise(budgets_mod.peak_tokens_per_second(doc, d.spec.name,
                                                       d.spec.peak_replicas, PROMPT_FRACTION))
        target = next(t for t in doc["spec"]["targets"] if t["name"] == d.spec.name)
        capacity[d.spec.name] = (
            budgets_mod.fleet_capacity(doc, d.spec.name, PROMPT_FRACTION),
            float(target.get("coldStartSeconds", 60)))
        # Active targets start where the day's first level needs them (no start-up
        # backlog); a DryRun target keeps the sample's count, as nobody scales it
        initial[d.spec.name] = (
            d.spec.initial_replicas if by_name[d.spec.budget].mode == "DryRun"
            else budgets_mod.replicas_for(doc, d.spec.name, d(0.0), PROMPT_FRACTION))
    return capacity, initial


def plan_notes(session: Session, selection: WorkloadSelection, adapted: list[AdaptedBudget],
               demands: list[WorkloadDemand]) -> list[str]:
    """The notes on where the demand comes from and how the samples were changed."""
    notes = [selection.note if not selection.fallback else "FALLBACK: " + selection.note,
             f"time is compressed {session.speedup:.0f}x for demand and cold starts; the "
             "operator runs on the real clock, so the samples are applied with these changes "
             f"(see {rel(session.demo_dir / 'tokenbudgets.yaml')}):"]
    for b in adapted:
        notes += [f"  {b.name}: {c}" for c in b.changes[:2]]
    common = adapted[0].changes[2:] if adapted else []
    notes += [f"  all: {c}" for c in common[:1]]
    notes.append("demand levels are rescaled so each target's daily peak needs "
                 + ", ".join(f"{d.spec.name} {d.spec.peak_replicas:.0f}" for d in demands)
                 + " replicas; costs are real (per real hour)")
    return notes


def note_traces(session: Session, plan: DemoPlan, summary: dict[str, Any]) -> None:
    """Warn (stderr) about generated curves; record the traces and notes in ``summary``."""
    selection = plan.selection
    if selection.fallback:
        print(f"tokenscale demo: {selection.note}", file=sys.stderr, flush=True)
    summary.update({"tracesDir": str(session.traces_dir),
                    "tracesFallback": selection.fallback,
                    "tracesNote": selection.note, "notes": plan.notes})
