"""`tokenscale demo`: the whole system on one machine, live, then a summary and a PNG.

Order: check ports and binaries; start the Kubernetes API emulator (in-process thread) and
write ``<demo-dir>/kubeconfig``; ``kubectl apply`` the namespaces and the CRD; ``kubectl
apply`` the workloads the samples target and start the simulated vLLM fleet (in-process);
start real Prometheus (child process) scraping the fleet; start the operator (``tokenscale
run``, child process) and wait for /readyz; ``kubectl apply`` the adapted sample TokenBudgets
(see :mod:`tokenscale.demo.budgets`). Then sample every second and redraw every
``--refresh`` seconds until ``--duration`` or Ctrl-C / SIGTERM; stop everything; print a
summary; write the PNG and (``--summary-json``) the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from tokenscale.demo import budgets as budgets_mod
from tokenscale.demo.options import DEFAULT_DAY_SECONDS
from tokenscale.demo.plot import write_plot
from tokenscale.demo.record import Recorder
from tokenscale.demo.stack import PROMPT_FRACTION, DemoError, Stack, port_is_free, repo_root
from tokenscale.demo.view import CLEAR, Header, progress_line, render, sim_clock, spend_text
from tokenscale.demo.workloads import WORKLOADS, select_workloads


def default_traces_dir(root: Path | None) -> Path:
    """$TOKENSCALE_TRACES, else ``../shared/traces`` relative to the repo (or the cwd)."""
    env = os.environ.get("TOKENSCALE_TRACES")
    if env:
        return Path(env)
    return (root or Path.cwd()).resolve().parent / "shared" / "traces"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


class _Stop:
    """Set by SIGINT/SIGTERM/SIGHUP; the main loop waits on it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name
        self.event.set()


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tokenscale demo``; the exit code."""
    out = sys.stdout
    tty = out.isatty()
    colour = tty and not args.no_color and "NO_COLOR" not in os.environ
    root = repo_root()
    demo_dir: Path = args.demo_dir
    duration: float | None = args.duration
    day_seconds = args.day_seconds or (min(DEFAULT_DAY_SECONDS, duration) if duration
                                       else DEFAULT_DAY_SECONDS)
    speedup = 86_400.0 / day_seconds
    traces_dir = args.traces or default_traces_dir(root)
    plot_path: Path = args.plot or demo_dir / "demo.png"
    summary: dict[str, Any] = {"ok": False, "error": None, "speedup": speedup,
                               "daySeconds": day_seconds, "demoDir": str(demo_dir.resolve())}
    stop = _Stop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    stack = Stack(demo_dir=demo_dir, api_port=args.api_port,
                  prometheus_port=args.prometheus_port, speedup=speedup, log=say)
    recorder: Recorder | None = None
    code = 0
    try:
        if root is None or not (root / "manifests" / "samples").is_dir():
            raise DemoError("manifests/samples not found: run the demo from a checkout of the "
                            "repository (make demo)")
        samples = budgets_mod.load_samples(root / "manifests" / "samples")
        now = datetime.now(UTC)
        adapted = [budgets_mod.adapt(doc, speedup, now) for doc in samples]
        by_name = {b.name: b for b in adapted}
        selection = select_workloads(traces_dir, WORKLOADS)
        demands = [d for d in selection.demands if d.spec.budget in by_name]
        capacity: dict[str, tuple[float, float]] = {}
        initial: dict[str, int] = {}
        for d in demands:
            doc = by_name[d.spec.budget].original
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
        notes = [selection.note if not selection.fallback else "FALLBACK: " + selection.note,
                 f"time is compressed {speedup:.0f}x for demand and cold starts; the operator "
                 "runs on the real clock, so the samples are applied with these changes "
                 f"(see {_rel(demo_dir / 'tokenbudgets.yaml')}):"]
        for b in adapted:
            notes += [f"  {b.name}: {c}" for c in b.changes[:2]]
        common = adapted[0].changes[2:] if adapted else []
        notes += [f"  all: {c}" for c in common[:1]]
        notes.append("demand levels are rescaled so each target's daily peak needs "
                     + ", ".join(f"{d.spec.name} {d.spec.peak_replicas:.0f}" for d in demands)
                     + " replicas; costs are real (per real hour)")
        if selection.fallback:
            print(f"tokenscale demo: {selection.note}", file=sys.stderr, flush=True)
        summary.update({"tracesDir": str(traces_dir), "tracesFallback": selection.fallback,
                        "tracesNote": selection.note, "notes": notes})

        say(f"tokenscale demo: starting (24 h of demand in {day_seconds:.0f} s; "
            f"files in {_rel(demo_dir)})")
        stack.preflight()
        crd_path = root / "crds" / "tokenbudgets.tokenscale.dev.yaml"
        if not crd_path.is_file():
            from tokenscale.crd import render as render_crd

            demo_dir.mkdir(parents=True, exist_ok=True)
            crd_path = demo_dir / "crd.yaml"
            crd_path.write_text(render_crd())
        stack.start_api(crd_path, [b.namespace for b in adapted])
        say(f"  Kubernetes API emulator on {stack.api.url if stack.api else ''}; "
            f"kubeconfig {_rel(stack.kubeconfig)}; CRD applied with kubectl")
        stack.start_fleet(demands, capacity, initial)
        listed = ", ".join(f"{d.spec.kind} {d.spec.name} ({d.source})" for d in demands)
        say(f"  simulated vLLM fleet: {listed}")
        stack.start_prometheus()
        say(f"  Prometheus on {stack.prometheus.url if stack.prometheus else ''}")
        stack.start_operator()
        say(f"  operator (tokenscale run) pid {stack.operator.pid if stack.operator else ''}, "
            f"log {_rel(stack.operator_log_path)}")
        stack.apply_budgets(adapted)
        say(f"  applied {', '.join(b.name for b in adapted)} with kubectl "
            f"({_rel(demo_dir / 'tokenbudgets.yaml')})")
        if stop.event.is_set():
            raise DemoError(f"interrupted by {stop.signal} during start")

        recorder = Recorder(adapted, demands, {k: v[0] for k, v in capacity.items()})
        from tokenscale_testbed.kubectl import find_kubectl

        kubectl = f"{_rel(Path(find_kubectl()))} --kubeconfig {_rel(stack.kubeconfig)}"
        header = Header(
            api_url=stack.api.url if stack.api else "", prometheus_url=
            stack.prometheus.url if stack.prometheus else "",
            operator=f"pid {stack.operator.pid if stack.operator else '?'}, /metrics on "
                     f":{stack.operator_metrics_port}",
            kubectl=kubectl, demo_dir=_rel(demo_dir), speedup=speedup,
            day_seconds=day_seconds, duration=duration, notes=notes)
        if not tty:
            say("kubectl commands for another terminal:")
            say(f"  {kubectl} get tb -A")
            say(f"  {kubectl} describe tb chat")
        t0 = time.monotonic()
        fleet = stack.fleet.fleet if stack.fleet else None
        for d in demands:  # the simulated day starts now
            d.origin = fleet.clock.now() if fleet else 0.0
        period_end = min(b.period_end for b in adapted)
        next_draw = next_line = 0.0
        while True:
            elapsed = time.monotonic() - t0
            if duration is not None and elapsed >= duration:
                break
            if not stack.operator_alive():
                raise DemoError("the operator exited unexpectedly; its log ends with:\n"
                                + stack.operator_log_tail())
            if datetime.now(UTC) >= period_end:
                adapted = [budgets_mod.adapt(b.original, speedup, datetime.now(UTC))
                           for b in adapted]
                stack.apply_budgets(adapted)
                for track, new in zip(recorder.budgets, adapted, strict=True):
                    track.adapted = new
                period_end = min(b.period_end for b in adapted)
                notes.append(f"the hour period ended at {elapsed:.0f} s: budgets re-applied "
                             "for the next hour")
            snap = stack.call(Recorder.snapshot)
            header.warning = _operator_warning(stack, recorder, elapsed)
            if header.warning and not tty and elapsed >= next_line:
                say(f"WARNING: {header.warning}")
            rates = {s.config.name: (s.demand_rate, s.served_rate, s.backlog)
                     for s in (fleet.states if fleet else [])}
            recorder.add(round(elapsed, 2), time.time(), snap, rates)
            if tty and elapsed >= next_draw:
                out.write(CLEAR + render(header, recorder, elapsed, colour) + "\n")
                out.flush()
                next_draw = elapsed + args.refresh
            elif not tty and elapsed >= next_line:
                say(progress_line(recorder, elapsed, speedup))
                next_line = elapsed + max(args.refresh, 10.0)
            if stop.event.wait(1.0):
                break
        summary["durationSeconds"] = round(time.monotonic() - t0, 1)
        errors, last_error = stack.operator_errors()
        summary["operatorErrors"] = errors
        if not any(b.phases_seen() for b in recorder.budgets):
            raise DemoError("the operator wrote no TokenBudget status during the demo; "
                            f"see {_rel(stack.operator_log_path)}"
                            + (f" (last error: {last_error})" if last_error else ""))
        summary["ok"] = True
        if stop.signal:
            summary["stoppedBy"] = stop.signal
    except DemoError as e:
        summary["error"] = str(e)
        print(f"tokenscale demo: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if tty and recorder is not None:
            out.write("\n")
        say("tokenscale demo: stopping the operator, Prometheus, the fleet and the emulator ...")
        ports = stack.ports()
        problems = stack.stop()
        free = _wait_ports_free(ports)
        summary["processes"] = [{"name": c.name, "pid": c.pid, "createTime": c.create_time}
                                for c in stack.children]
        summary["ports"] = ports
        summary["portsFree"] = free
        summary["stopProblems"] = problems
        for problem in problems:
            print(f"tokenscale demo: {problem}", file=sys.stderr)
        if not free:
            print(f"tokenscale demo: ports still bound after stop: {ports}", file=sys.stderr)
            code = code or 1
    if recorder is not None and recorder.budgets and recorder.budgets[0].t:
        summary["tokenBudgets"] = recorder.summary()
        title = (f"tokenscale demo — {summary.get('durationSeconds', 0):.0f} s, one simulated "
                 f"day in {day_seconds:.0f} s ({speedup:.0f}x)")
        summary["plot"] = str(write_plot(recorder, plot_path, speedup, title).resolve())
        say(final_summary(recorder, summary, speedup))
    else:
        summary.setdefault("tokenBudgets", [])
    if args.summary_json is not None:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(summary, indent=2) + "\n")
        say(f"summary JSON: {args.summary_json}")
    return code


def _operator_warning(stack: Stack, rec: Recorder, elapsed: float) -> str:
    """A warning for the screen when the operator logs errors or writes no status."""
    errors, last = stack.operator_errors()
    log = _rel(stack.operator_log_path)
    if errors and elapsed > 10:
        return f"the operator logged {errors} errors (see {log}); last: {last[:200]}"
    if elapsed > 20 and not any(b.phase and b.phase[-1] for b in rec.budgets):
        return f"the operator has written no TokenBudget status yet; see {log}"
    return ""


def _wait_ports_free(ports: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if all(port_is_free(p) for p in ports):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def final_summary(rec: Recorder, summary: dict[str, Any], speedup: float) -> str:
    """The text printed at the end."""
    elapsed = float(summary.get("durationSeconds", 0.0))
    lines = ["", f"tokenscale demo summary — {elapsed:.0f} s real, "
             f"{elapsed * speedup / 3600:.1f} simulated hours (until "
             f"{sim_clock(elapsed, speedup)})"]
    for b in rec.budgets:
        phase = b.phase[-1] if b.phase else "-"
        lines.append(f"  {b.namespace}/{b.name} ({b.adapted.mode}): final phase {phase}; "
                     f"phases seen {', '.join(b.phases_seen()) or '-'}; "
                     f"{b.scale_events} scale events")
        lines.append(f"      spend {spend_text(b)}")
        if b.last_reason:
            lines.append(f"      last reason {b.last_reason}: {b.last_message[:150]}")
        for name in b.targets:
            t = rec.targets.get(name)
            if t is None or not t.replicas:
                continue
            lines.append(f"      {name:<16} replicas {t.replicas[0]} -> {t.replicas[-1]} "
                         f"(min {min(t.replicas)}, max {max(t.replicas)}); "
                         f"peak demand {max(t.demand) / 1000:.1f}k tokens/s; {t.source}")
    if summary.get("plot"):
        lines.append(f"  plot: {_rel(Path(summary['plot']))}")
    ports = summary.get("ports", [])
    lines.append(f"  stopped {len(summary.get('processes', []))} child processes "
                 f"and 2 threads; ports {', '.join(map(str, ports))} "
                 f"{'free' if summary.get('portsFree') else 'STILL BOUND'}")
    return "\n".join(lines)
