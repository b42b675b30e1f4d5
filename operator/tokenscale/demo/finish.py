"""The end of the demo: its outcome, stopping the stack, the printed summary, PNG and JSON."""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tokenscale.demo.plot import write_plot
from tokenscale.demo.record import Recorder
from tokenscale.demo.session import Session, StopSignal, rel
from tokenscale.demo.stack import DemoError, Stack, port_is_free
from tokenscale.demo.view import sim_clock, spend_text


def record_outcome(stack: Stack, rec: Recorder, stop: StopSignal,
                   summary: dict[str, Any]) -> None:
    """Mark ``summary`` ok (with the operator's error count and the stopping signal);
    raises :class:`DemoError` if the operator wrote no TokenBudget status at all."""
    errors, last_error = stack.operator_errors()
    summary["operatorErrors"] = errors
    if not any(b.phases_seen() for b in rec.budgets):
        raise DemoError("the operator wrote no TokenBudget status during the demo; "
                        f"see {rel(stack.operator_log_path)}"
                        + (f" (last error: {last_error})" if last_error else ""))
    summary["ok"] = True
    if stack.api is not None:  # the ground truth, before the emulator and the fleet stop
        fleet = stack.fleet.fleet if stack.fleet is not None else None
        models = fleet.states if fleet is not None else []
        stack.call(lambda server: rec.keep_truth(server, models))
        if stack.prometheus is not None and rec.budgets and rec.budgets[0].wall:
            rec.first_scrape = first_scrape(stack.prometheus.url, rec.budgets[0].wall[0] - 600)
    if stop.signal:
        summary["stoppedBy"] = stop.signal


def first_scrape(url: str, since: float) -> float | None:
    """When Prometheus first scraped the fleet (unix s; None if unknown): the tokens served
    before it are in no counter increase(), so the ground truth of tokens starts there."""
    query = urllib.parse.urlencode({"query": "min(timestamp(up))", "start": f"{since:.0f}",
                                    "end": f"{time.time():.0f}", "step": "1"})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query_range?{query}", timeout=10) as rsp:
            result = json.loads(rsp.read())["data"]["result"]
        return float(result[0]["values"][0][1]) if result else None
    except (OSError, ValueError, KeyError, IndexError):
        return None


def wait_ports_free(ports: list[int], timeout: float = 10.0) -> bool:
    """Wait up to ``timeout`` s until every port can be bound; False if one cannot."""
    deadline = time.monotonic() + timeout
    while True:
        if all(port_is_free(p) for p in ports):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def stop_stack(session: Session, stack: Stack, rec: Recorder | None, summary: dict[str, Any],
               code: int) -> int:
    """Stop everything, record the children, ports and problems in ``summary``; returns the
    exit code (``code``, or 1 if a port is still bound)."""
    if session.tty and rec is not None:
        session.out.write("\n")
    session.say("tokenscale demo: stopping the operator, Prometheus, the fleet and the "
                "emulator ...")
    ports = stack.ports()
    problems = stack.stop()
    free = wait_ports_free(ports)
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
    return code


def write_outputs(session: Session, rec: Recorder | None, summary: dict[str, Any]) -> None:
    """If anything was recorded: the PNG and the printed summary; then ``--summary-json``."""
    if rec is not None and rec.budgets and rec.budgets[0].t:
        summary["tokenBudgets"] = rec.summary()
        title = (f"tokenscale demo — {summary.get('durationSeconds', 0):.0f} s, one simulated "
                 f"day in {session.day_seconds:.0f} s ({session.speedup:.0f}x)")
        summary["plot"] = str(write_plot(rec, session.plot_path, session.speedup,
                                         title).resolve())
        session.say(final_summary(rec, summary, session.speedup))
    else:
        summary.setdefault("tokenBudgets", [])
    if session.summary_json is not None:
        session.summary_json.parent.mkdir(parents=True, exist_ok=True)
        session.summary_json.write_text(json.dumps(summary, indent=2) + "\n")
        session.say(f"summary JSON: {session.summary_json}")


def _target_lines(rec: Recorder, names: list[str]) -> list[str]:
    """One line per recorded target: replicas first -> last (min, max), peak demand."""
    lines = []
    for name in names:
        t = rec.targets.get(name)
        if t is None or not t.replicas:
            continue
        lines.append(f"      {name:<16} replicas {t.replicas[0]} -> {t.replicas[-1]} "
                     f"(min {min(t.replicas)}, max {max(t.replicas)}); "
                     f"peak demand {max(t.demand) / 1000:.1f}k tokens/s; {t.source}")
    return lines


def final_summary(rec: Recorder, summary: dict[str, Any], speedup: float) -> str:
    """The text printed at the end (``speedup``: simulated s per real s)."""
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
        truth = rec.truth(b)
        if truth.get("costTruthError") is not None:
            tokens = truth.get("tokensTruthError")
            lines.append(f"      status vs ground truth: cost {truth['costTruthError']:+.3%}"
                         + (f", tokens {tokens:+.2%}" if tokens is not None else ""))
        if b.last_reason:
            lines.append(f"      last reason {b.last_reason}: {b.last_message[:150]}")
        lines += _target_lines(rec, b.targets)
    if summary.get("plot"):
        lines.append(f"  plot: {rel(Path(summary['plot']))}")
    ports = summary.get("ports", [])
    lines.append(f"  stopped {len(summary.get('processes', []))} child processes "
                 f"and 2 threads; ports {', '.join(map(str, ports))} "
                 f"{'free' if summary.get('portsFree') else 'STILL BOUND'}")
    return "\n".join(lines)
