"""The live terminal view (redrawn on a TTY) and the plain progress lines (headless)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from tokenscale.demo.record import BudgetTrack, Recorder, TargetTrack

CLEAR = "\x1b[H\x1b[2J"
_COLOURS = {"Active": "32", "DryRun": "36", "BudgetAtRisk": "33", "BudgetExhausted": "31",
            "Degraded": "31", "Invalid": "31"}


@dataclass
class Header:
    """Everything the view shows besides the recorded samples."""

    api_url: str
    prometheus_url: str
    operator: str  # "pid 123, /metrics on :port"
    kubectl: str  # the kubectl command prefix to print
    demo_dir: str
    speedup: float
    day_seconds: float
    duration: float | None
    notes: list[str]
    warning: str = ""  # shown in the header, e.g. operator errors


def sim_clock(t: float, speedup: float) -> str:
    """Simulated time of day (``day 1 13:05``) at ``t`` real seconds."""
    sim = t * speedup
    day, rest = divmod(sim, 86_400)
    return f"day {int(day) + 1} {int(rest // 3600):02d}:{int(rest % 3600 // 60):02d}"


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1e9:
        return f"{x / 1e9:.2f}G"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f}M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"


def spend_text(b: BudgetTrack) -> str:
    """``0.41 / 13.33 USD (3%, proj 12.90)`` or the token equivalent."""
    if b.max_cost is not None:
        cost = b.cost[-1] if b.cost else 0.0
        proj = b.projected_cost[-1] if b.projected_cost else 0.0
        share = 100 * cost / b.max_cost if b.max_cost else 0.0
        return (f"{cost:.2f} / {b.max_cost:.2f} {b.currency} ({share:.0f}%, "
                f"proj {proj:.2f})")
    tokens = b.tokens[-1] if b.tokens else 0.0
    proj = b.projected_tokens[-1] if b.projected_tokens else 0.0
    limit = b.max_tokens or 0.0
    share = 100 * tokens / limit if limit else 0.0
    return f"{_num(tokens)} / {_num(limit)} tokens ({share:.0f}%, proj {_num(proj)})"


def pace_text(b: BudgetTrack) -> str:
    """``19.50 of 20.00 USD/h`` (spend rate against the affordable pace)."""
    pace = b.affordable()
    if pace is None:
        return "-"
    unit = f"{b.currency}/h" if b.max_cost is not None else "tok/s"
    return f"{_num(b.rate())} of {_num(pace)} {unit}"


def _colour_phase(line: str, phase: str) -> str:
    code = _COLOURS.get(phase)
    if not code or not phase:
        return line
    if line.startswith("WARNING"):
        return f"\x1b[{code}m{line}\x1b[0m"
    return line.replace(phase, f"\x1b[{code}m{phase}\x1b[0m", 1)


def _target_line(t: TargetTrack) -> str:
    if not t.t:
        return f"    {t.name:<16} (no samples yet)"
    desired = t.desired[-1]
    reps = f"{t.ready[-1]}/{t.replicas[-1]}"
    if desired is not None and desired != t.replicas[-1]:
        reps += f" -> {desired}"
    extra = f"  capacity/replica {t.service}" if t.service else ""
    if t.latency:
        extra += f"  {t.latency}"
    if t.attainment is not None:
        extra += f"  SLO {100 * t.attainment:.1f}%"
    if t.admission is not None:
        extra += f"  admit {_num(t.admission)} tok/s"
    if t.shed_share > 0:
        extra += f" (shed {100 * t.shed_share:.0f}%)"
    return (f"    {t.name:<16}{t.kind:<12}{reps:<11}{_num(t.demand[-1]):>9}"
            f"{_num(t.served[-1]):>9}{_num(t.observed[-1]):>10}{_num(t.backlog):>9}  "
            f"{t.reason or '-'}{extra}")


def render(header: Header, rec: Recorder, elapsed: float, colour: bool = True) -> str:
    """The full screen as text (lines cut at the terminal width)."""
    width = shutil.get_terminal_size((120, 40)).columns
    until = f" of {header.duration:.0f}" if header.duration else ""
    lines: list[tuple[str, str]] = [  # (text, phase to colour)
        (f"tokenscale demo — {elapsed:.0f}{until} s; simulated {sim_clock(elapsed, header.speedup)}"
         f" (24 h in {header.day_seconds:.0f} s, {header.speedup:.0f}x); Ctrl-C stops", ""),
        (f"API emulator {header.api_url}   Prometheus {header.prometheus_url}   "
         f"operator {header.operator}", ""),
        ("tokens/s: DEMAND offered and SERVED by the simulated fleet, OPERATOR as read from "
         "Prometheus; QUEUED tokens", ""),
    ]
    if header.warning:
        lines.append((f"WARNING: {header.warning}", "Invalid"))
    lines.append(("", ""))
    for b in rec.budgets:
        phase = b.phase[-1] if b.phase else ""
        lines.append((f"  TokenBudget {b.namespace}/{b.name} ({b.adapted.mode})  phase "
                      f"{phase or 'pending'}  scale events {b.scale_events}", phase))
        lines.append((f"    spend {spend_text(b)}; rate {pace_text(b)} affordable", ""))
        if b.last_reason:
            lines.append((f"    why: {b.last_reason}: {b.last_message}", ""))
        lines.append((f"    {'TARGET':<16}{'KIND':<12}{'READY/SET':<11}{'DEMAND':>9}"
                      f"{'SERVED':>9}{'OPERATOR':>10}{'QUEUED':>9}  REASON", ""))
        lines += [(_target_line(rec.targets[n]), "") for n in b.targets if n in rec.targets]
        lines.append(("", ""))
    k = header.kubectl
    lines += [("Inspect the same state from another terminal:", ""),
              (f"  {k} get tb -A", ""), (f"  {k} describe tb chat", ""),
              (f"  {k} get deploy,sts,pods", ""),
              (f"  {k} get events --sort-by=.lastTimestamp", ""),
              (f"  curl -s '{header.prometheus_url}/api/v1/query?query="
               "sum+by+(pod)(rate(vllm:generation_tokens_total[10s]))'", ""), ("", "")]
    lines += [(f"note: {n}", "") for n in header.notes]
    out = []
    for text, phase in lines:
        text = text[:width]
        out.append(_colour_phase(text, phase) if colour else text)
    return "\n".join(out)


def progress_line(rec: Recorder, elapsed: float, speedup: float) -> str:
    """One plain line for headless runs."""
    parts = [f"[{elapsed:5.0f}s {sim_clock(elapsed, speedup)}]"]
    for b in rec.budgets:
        phase = b.phase[-1] if b.phase else "pending"
        reps = ",".join(f"{n}={rec.targets[n].replicas[-1]}" for n in b.targets
                        if n in rec.targets and rec.targets[n].replicas)
        parts.append(f"{b.name}: {phase} {spend_text(b)} rate {pace_text(b)}; replicas {reps}")
    return " | ".join(parts)
