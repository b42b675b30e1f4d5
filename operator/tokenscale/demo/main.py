"""`tokenscale demo`: the whole system on one machine, live, then a summary and a PNG.

Order: check ports and binaries; start the Kubernetes API emulator (in-process thread) and
write ``<demo-dir>/kubeconfig``; ``kubectl apply`` the namespaces and the CRD; ``kubectl
apply`` the workloads the samples target and start the simulated vLLM fleet (in-process);
start real Prometheus (child process) scraping the fleet; start the operator (``tokenscale
run``, child process) and wait for /readyz; ``kubectl apply`` the adapted sample TokenBudgets
(see :mod:`tokenscale.demo.budgets`). Then sample every second and redraw every
``--refresh`` seconds until ``--duration`` or Ctrl-C / SIGTERM; stop everything; print a
summary; write the PNG and (``--summary-json``) the JSON.

Steps: :mod:`.session` (settings, signals), :mod:`.plan` (adapted budgets, workloads),
:mod:`.start` (stack, budgets), :mod:`.live` (the loop), :mod:`.finish` (stop, summary).
"""

from __future__ import annotations

import argparse
import sys

from tokenscale.demo.finish import final_summary, record_outcome, stop_stack, write_outputs
from tokenscale.demo.live import live_loop, make_header
from tokenscale.demo.plan import note_traces, plan_demo
from tokenscale.demo.record import Recorder
from tokenscale.demo.session import Session, StopSignal, default_traces_dir
from tokenscale.demo.stack import DemoError, Stack
from tokenscale.demo.start import apply_budgets, start_stack

__all__ = ["default_traces_dir", "final_summary", "run"]


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tokenscale demo``; the exit code (0, or 1 on a failure to start,
    an operator that exits or writes no status, or a port left bound)."""
    session = Session.from_args(args)
    summary = session.initial_summary()
    stop = StopSignal.install()
    stack = Stack(demo_dir=session.demo_dir, api_port=session.api_port,
                  prometheus_port=session.prometheus_port, speedup=session.speedup,
                  log=session.say)
    recorder: Recorder | None = None
    code = 0
    try:
        plan = plan_demo(session)
        note_traces(session, plan, summary)
        start_stack(session, stack, plan)
        apply_budgets(session, stack, plan, stop)
        recorder = Recorder(plan.adapted, plan.demands,
                            {k: v[0] for k, v in plan.capacity.items()})
        header = make_header(session, stack, plan)
        seconds = live_loop(session, stack, plan, recorder, header, stop)
        summary["durationSeconds"] = round(seconds, 1)
        record_outcome(stack, recorder, stop, summary)
    except DemoError as e:
        summary["error"] = str(e)
        print(f"tokenscale demo: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        code = stop_stack(session, stack, recorder, summary, code)
    write_outputs(session, recorder, summary)
    return code
