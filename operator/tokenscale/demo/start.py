"""Starting the demo: the components in order (telling the user each one), then the budgets."""

from __future__ import annotations

from pathlib import Path

from tokenscale.demo.plan import DemoPlan
from tokenscale.demo.session import Session, StopSignal, rel
from tokenscale.demo.stack import DemoError, Stack


def crd_path(root: Path, demo_dir: Path) -> Path:
    """The checkout's TokenBudget CRD, else one rendered into ``demo_dir``."""
    path = root / "crds" / "tokenbudgets.tokenscale.dev.yaml"
    if not path.is_file():
        from tokenscale.crd import render as render_crd

        demo_dir.mkdir(parents=True, exist_ok=True)
        path = demo_dir / "crd.yaml"
        path.write_text(render_crd())
    return path


def start_stack(session: Session, stack: Stack, plan: DemoPlan) -> None:
    """Preflight, then the API emulator (CRD applied), the simulated fleet, Prometheus and
    the operator; raises :class:`DemoError` when one cannot start."""
    say = session.say
    say(f"tokenscale demo: starting (24 h of demand in {session.day_seconds:.0f} s; "
        f"files in {rel(session.demo_dir)})")
    stack.preflight()
    stack.start_api(crd_path(plan.root, session.demo_dir), [b.namespace for b in plan.adapted])
    say(f"  Kubernetes API emulator on {stack.api.url if stack.api else ''}; "
        f"kubeconfig {rel(stack.kubeconfig)}; CRD applied with kubectl")
    stack.start_fleet(plan.demands, plan.capacity, plan.initial, plan.engines)
    listed = ", ".join(f"{d.spec.kind} {d.spec.name} ({d.source})" for d in plan.demands)
    say(f"  simulated vLLM fleet: {listed}")
    stack.start_prometheus()
    say(f"  Prometheus on {stack.prometheus.url if stack.prometheus else ''}")
    stack.start_operator()
    say(f"  operator (tokenscale run) pid {stack.operator.pid if stack.operator else ''}, "
        f"log {rel(stack.operator_log_path)}")


def apply_budgets(session: Session, stack: Stack, plan: DemoPlan, stop: StopSignal) -> None:
    """``kubectl apply`` the adapted TokenBudgets; raises :class:`DemoError` if a signal came
    while starting."""
    stack.apply_budgets(plan.adapted)
    session.say(f"  applied {', '.join(b.name for b in plan.adapted)} with kubectl "
                f"({rel(session.demo_dir / 'tokenbudgets.yaml')})")
    if stop.event.is_set():
        raise DemoError(f"interrupted by {stop.signal} during start")
