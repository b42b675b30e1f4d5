"""The demo's live loop: sample once a (real) second, redraw or print progress, re-apply the
budgets when their Hour period ends, stop at ``--duration`` or on a signal."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokenscale.demo import budgets as budgets_mod
from tokenscale.demo.plan import DemoPlan
from tokenscale.demo.record import Recorder
from tokenscale.demo.session import Session, StopSignal, rel
from tokenscale.demo.stack import DemoError, Stack
from tokenscale.demo.view import CLEAR, Header, progress_line, render
from tokenscale_testbed.fleet import Fleet, ModelState


def make_header(session: Session, stack: Stack, plan: DemoPlan) -> Header:
    """The view's header; headless, also print the kubectl commands to try."""
    from tokenscale_testbed.kubectl import find_kubectl

    kubectl = f"{rel(Path(find_kubectl()))} --kubeconfig {rel(stack.kubeconfig)}"
    header = Header(
        api_url=stack.api.url if stack.api else "", prometheus_url=
        stack.prometheus.url if stack.prometheus else "",
        operator=f"pid {stack.operator.pid if stack.operator else '?'}, /metrics on "
                 f":{stack.operator_metrics_port}",
        kubectl=kubectl, demo_dir=rel(session.demo_dir), speedup=session.speedup,
        day_seconds=session.day_seconds, duration=session.duration, notes=plan.notes)
    if not session.tty:
        session.say("kubectl commands for another terminal:")
        session.say(f"  {kubectl} get tb -A")
        session.say(f"  {kubectl} describe tb chat")
    return header


def operator_warning(stack: Stack, rec: Recorder, elapsed: float) -> str:
    """A warning for the screen when the operator logs errors (after 10 s) or has written no
    status (after 20 s); ``elapsed`` in real s."""
    errors, last = stack.operator_errors()
    log = rel(stack.operator_log_path)
    if errors and elapsed > 10:
        return f"the operator logged {errors} errors (see {log}); last: {last[:200]}"
    if elapsed > 20 and not any(b.phase and b.phase[-1] for b in rec.budgets):
        return f"the operator has written no TokenBudget status yet; see {log}"
    return ""


def next_period(session: Session, stack: Stack, plan: DemoPlan, rec: Recorder,
                elapsed: float) -> datetime:
    """Re-adapt and re-apply the budgets for the next Hour period; returns its end (UTC)."""
    plan.adapted = [budgets_mod.adapt(b.original, session.speedup, datetime.now(UTC))
                    for b in plan.adapted]
    stack.apply_budgets(plan.adapted)
    for track, new in zip(rec.budgets, plan.adapted, strict=True):
        track.adapted = new
    plan.notes.append(f"the hour period ended at {elapsed:.0f} s: budgets re-applied "
                      "for the next hour")
    return min(b.period_end for b in plan.adapted)


def take_sample(session: Session, stack: Stack, rec: Recorder, header: Header,
                fleet: Fleet | None, elapsed: float, warn: bool) -> None:
    """Record the cluster and the fleet at ``elapsed`` real s; update the header's warning
    (and print it headless if ``warn``)."""
    snap = stack.call(Recorder.snapshot)
    header.warning = operator_warning(stack, rec, elapsed)
    if header.warning and warn:
        session.say(f"WARNING: {header.warning}")
    states = fleet.states if fleet else []
    admit_at_gateway(states, snap)
    rates = {s.config.name: (s.demand_rate, s.served_rate, s.backlog) for s in states}
    service = {s.config.name: (s.requests_within_slo, s.requests_total,
                               s.shed_total / s.offered_total if s.offered_total > 0 else 0.0)
               for s in states}
    rec.add(round(elapsed, 2), time.time(), snap, rates, service)


def admit_at_gateway(states: list[ModelState], snap: dict[str, Any]) -> None:
    """The demo's gateway: each model admits the token rate its TokenBudget publishes in
    status.targets[].admission (target name = workload name), all of it when none is."""
    admitted: dict[str, float] = {}
    for budget in snap["tokenbudgets"]:
        for target in (budget.get("status") or {}).get("targets") or []:
            rate = (target.get("admission") or {}).get("tokensPerSecond")
            if rate is not None:
                admitted[str(target.get("name"))] = float(rate)
    for state in states:
        state.admission = admitted.get(state.config.name)


def live_loop(session: Session, stack: Stack, plan: DemoPlan, rec: Recorder, header: Header,
              stop: StopSignal) -> float:
    """Sample every second and redraw every ``--refresh`` s (headless: a progress line every
    max(refresh, 10) s) until ``--duration`` or a signal; returns the real s it ran.

    Raises :class:`DemoError` if the operator exits.
    """
    t0 = time.monotonic()
    fleet = stack.fleet.fleet if stack.fleet else None
    for d in plan.demands:  # the simulated day starts now
        d.origin = fleet.clock.now() if fleet else 0.0
    period_end = min(b.period_end for b in plan.adapted)
    next_draw = next_line = 0.0
    while True:
        elapsed = time.monotonic() - t0
        if session.duration is not None and elapsed >= session.duration:
            break
        if not stack.operator_alive():
            raise DemoError("the operator exited unexpectedly; its log ends with:\n"
                            + stack.operator_log_tail())
        if datetime.now(UTC) >= period_end:
            period_end = next_period(session, stack, plan, rec, elapsed)
        take_sample(session, stack, rec, header, fleet, elapsed,
                    warn=not session.tty and elapsed >= next_line)
        if session.tty and elapsed >= next_draw:
            session.out.write(CLEAR + render(header, rec, elapsed, session.colour) + "\n")
            session.out.flush()
            next_draw = elapsed + session.refresh
        elif not session.tty and elapsed >= next_line:
            session.say(progress_line(rec, elapsed, session.speedup))
            next_line = elapsed + max(session.refresh, 10.0)
        if stop.event.wait(1.0):
            break
    return time.monotonic() - t0
