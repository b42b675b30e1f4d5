"""Backtest results as a table (text), a JSON document and the HPA frontier comparison.

Units: cost in the budget's currency, GPU-hours in replica-hours, slo_attainment in [0, 1]
(share of work tokens served within the SLO), budget_overrun ≥ 0 in currency (sum over budget
periods of spend above maxCost), token_overrun in tokens (over maxTokens).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from tokenscale.sim.engine import ATTAINMENT_TOLERANCE, POLICIES, Backtest, lower_bound_cost


def frontier(points: list[dict[str, float]]) -> list[dict[str, float]]:
    """The Pareto-efficient points (no other point is both cheaper and better), by attainment."""
    ordered = sorted(points, key=lambda p: (-p["slo_attainment"], p["cost"]))
    out: list[dict[str, float]] = []
    best_cost = float("inf")
    for p in ordered:  # from the best attainment down, keep points that are cheaper still
        if p["cost"] < best_cost:
            out.append(p)
            best_cost = p["cost"]
    return sorted(out, key=lambda p: p["slo_attainment"])


def cost_at_attainment(points: list[dict[str, float]], attainment: float) -> tuple[float, str]:
    """Frontier cost at ``attainment`` by linear interpolation, and how it was obtained:
    ``interpolated``, ``beyond_frontier`` (better than every point: the best point's cost) or
    ``below_frontier`` (worse than every point: the cheapest point's cost)."""
    front = frontier(points)
    if not front:
        return float("nan"), "no_frontier"
    if attainment >= front[-1]["slo_attainment"]:
        exact = attainment == front[-1]["slo_attainment"]
        return front[-1]["cost"], "interpolated" if exact else "beyond_frontier"
    if attainment < front[0]["slo_attainment"]:
        return front[0]["cost"], "below_frontier"
    for lo, hi in pairwise(front):
        if lo["slo_attainment"] <= attainment <= hi["slo_attainment"]:
            span = hi["slo_attainment"] - lo["slo_attainment"]
            w = 0.0 if span <= 0 else (attainment - lo["slo_attainment"]) / span
            return lo["cost"] + w * (hi["cost"] - lo["cost"]), "interpolated"
    return front[-1]["cost"], "beyond_frontier"  # pragma: no cover - covered by the ifs above


def envelope_at(points: list[dict[str, Any]], attainment: float) -> tuple[float, str, str]:
    """The lower envelope's cost at ``attainment`` (see :func:`cost_at_attainment`), how it was
    obtained, and the ``member`` of the point that bounds it from above (the cheapest point
    reaching the attainment)."""
    cost, how = cost_at_attainment(points, attainment)
    front = frontier(points)
    reaching = [p for p in front if p["slo_attainment"] >= attainment - 1e-12]
    bound = reaching[0] if reaching else (front[-1] if front else {})
    return cost, how, str(bound.get("member", ""))


def _family_points(bt: Backtest) -> list[dict[str, Any]]:
    out = []
    for member, runs in bt.family.items():
        s = bt.policy_summary(runs)
        out.append({"member": member.name, "cost": round(s["cost"], 6),
                    "slo_attainment": round(s["slo_attainment"], 6)})
    return out


def yardstick(bt: Backtest, tokenscale: dict[str, Any]) -> dict[str, Any]:
    """Engine mode: tokenscale against the HPA/KEDA family's lower envelope and the oracle,
    at tokenscale's attainment (DESIGN.md, "Benchmarks")."""
    att = tokenscale["slo_attainment"] - ATTAINMENT_TOLERANCE
    cost = tokenscale["cost"]
    points = _family_points(bt)
    env, how, member = envelope_at(points, att)
    oracle_points = [{"member": f"oracle#{k}", "cost": s["cost"],
                      "slo_attainment": s["slo_attainment"]}
                     for k, s in enumerate(bt.oracle_summaries)]
    oracle_env, oracle_how, _ = envelope_at(oracle_points, att)
    gap = env - oracle_env
    return {
        "hpa_frontier": frontier(points),
        "hpa_family": points,
        "cost_ratio_vs_hpa_at_equal_slo": round(cost / env, 6) if env > 0 else None,
        "hpa_frontier_cost_at_tokenscale_slo": round(env, 6),
        "hpa_frontier_comparison": how,
        "frontier_member": member,
        "oracle_cost_at_tokenscale_slo": round(oracle_env, 6),
        "oracle_comparison": oracle_how,
        "oracle_lower_bound_cost": round(lower_bound_cost(bt), 6),
        "gap_captured": round((env - cost) / gap, 6) if gap > 0 else None,
    }


def _round(d: dict[str, float]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}


def to_json(bt: Backtest, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result document (see the ``tokenscale backtest --json`` contract)."""
    policies = {p: _round(bt.policy_summary(bt.runs[p])) for p in POLICIES}
    hpa_frontier = []
    for u, runs in sorted(bt.sweep.items()):
        s = bt.policy_summary(runs)
        hpa_frontier.append({
            "target_utilization": u,
            "cost": round(s["cost"], 6),
            "gpu_hours": round(s["gpu_hours"], 6),
            "slo_attainment": round(s["slo_attainment"], 6),
        })
    ts = policies["tokenscale"]
    ref, how = cost_at_attainment(hpa_frontier, ts["slo_attainment"])
    other: dict[str, Any] = {}
    if bt.other_sweep:
        points = []
        for u, runs in sorted(bt.other_sweep.items()):
            s = bt.policy_summary(runs)
            points.append({"target_utilization": u, "cost": round(s["cost"], 6),
                           "slo_attainment": round(s["slo_attainment"], 6)})
        o_ref, o_how = cost_at_attainment(points, ts["slo_attainment"])
        other = {"hpa_other_metric": {
            "metric": bt.other_metric, "frontier": points,
            "cost_ratio_vs_hpa_at_equal_slo": round(ts["cost"] / o_ref, 6) if o_ref > 0 else None,
            "comparison": o_how}}
    oracle_cost = policies["oracle"]["cost"]
    targets: dict[str, Any] = {}
    for i, t in enumerate(bt.targets):
        targets[t.name] = {
            p: _round(bt.target_summary(bt.runs[p][t.name], i)) for p in POLICIES
        }
    doc: dict[str, Any] = {
        "policies": policies,
        "hpa_frontier": hpa_frontier,
        "cost_ratio_vs_hpa_at_equal_slo": round(ts["cost"] / ref, 6) if ref > 0 else None,
        "hpa_frontier_cost_at_tokenscale_slo": round(ref, 6),
        "hpa_frontier_comparison": how,
        "cost_ratio_vs_oracle": round(ts["cost"] / oracle_cost, 6) if oracle_cost > 0 else None,
        "hpa_metric": bt.settings.hpa.metric,
        **other,
        "targets": targets,
        "currency": bt.spec.budget.currency,
        "budget": {
            "period": bt.spec.budget.period,
            "time_zone": bt.spec.budget.time_zone,
            "max_cost": bt.spec.budget.max_cost,
            "max_tokens": bt.spec.budget.max_tokens,
            "periods": len(bt.period_starts),
        },
        "settings": {
            "slo_seconds": bt.settings.slo_s,
            "scrape_seconds": bt.settings.scrape_s,
            "rate_window_seconds": bt.settings.rate_window_s,
            "prefill_weight": bt.settings.prefill_weight,
            "seed": bt.settings.seed,
            "start": bt.settings.start.isoformat(),
            "simulated_seconds": bt.horizon,
            "trace_seconds": bt.trace_seconds,
        },
        "tokenscale_reasons": {
            f"{target}/{reason}": n for (target, reason), n in sorted(bt.reasons.items())
        },
        "wall_seconds": round(bt.wall_seconds, 3),
    }
    if bt.family:
        doc.update(yardstick(bt, ts))
        for key, oracle_runs in (("budget_oracle", bt.budget_oracle),
                                 ("budget_oracle_same_split",
                                  bt.budget_oracle_same_split)):
            if oracle_runs is not None:
                oracle = _round(bt.policy_summary(oracle_runs))
                doc[key] = oracle
                doc[f"goodput_vs_{key}"] = (
                    round(ts["goodput_tokens"] / oracle["goodput_tokens"], 6)
                    if oracle.get("goodput_tokens") else None)
        doc["service_models"] = bt.service_models
        engine = bt.settings.engine
        assert engine is not None
        doc["settings"].update({
            "engine": {"decode_tokens_per_s": engine.decode_tokens_per_s,
                       "prefill_tokens_per_s": engine.prefill_tokens_per_s,
                       "itl_floor_s": engine.itl_floor_s, "max_batch": engine.max_batch},
            "warmup_seconds": bt.settings.warmup_s,
            "slo": {t.name: t.slo.model_dump(by_alias=True) for t in bt.spec.targets},
        })
    doc.update(bt.projections)  # projection_error{,_run_rate}: {"25": x, "50": y, "75": z}
    if extra:
        doc.update(extra)
    return doc


def _fmt_tokens(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}"


def table(doc: dict[str, Any]) -> str:
    """A plain-text report of a :func:`to_json` document."""
    cur = doc["currency"]
    head = (f"{'policy':<12} {'GPU-h':>9} {'cost ' + cur:>12} {'SLO att.':>9} "
            f"{'tokens late':>12} {'scale ev.':>9} {'peak':>5} {'overrun ' + cur:>12} "
            f"{'goodput':>9} {'shed':>6}")
    lines = [head, "-" * len(head)]

    def row(name: str, s: dict[str, Any]) -> str:
        return (f"{name:<12} {s['gpu_hours']:>9.2f} {s['cost']:>12.2f} "
                f"{s['slo_attainment']:>9.2%} {_fmt_tokens(s['tokens_late']):>12} "
                f"{s['scale_events']:>9d} {s['peak_replicas']:>5d} "
                f"{s.get('budget_overrun', 0):>12.2f} "
                f"{_fmt_tokens(s.get('goodput_tokens', s['tokens'] - s['tokens_late'])):>9} "
                f"{s.get('shed_share', 0.0):>6.1%}")

    for name, s in doc["policies"].items():
        lines.append(row(name, s))
    if len(doc["targets"]) > 1:
        for target, per in doc["targets"].items():
            lines.append("")
            lines.append(f"target {target}")
            for name, s in per.items():
                lines.append(row(name, s))
    lines.append("")
    if "frontier_member" in doc:
        lines.append("hpa/keda family: lower envelope (member: cost, SLO attainment)")
    else:
        lines.append(f"hpa sweep on {doc['hpa_metric']} tokens/s "
                     "(target utilization: cost, SLO attainment)")
    for p in doc["hpa_frontier"]:
        label = p.get("member") or f"{p['target_utilization']:.2f}"
        lines.append(f"  {label}: {p['cost']:>12.2f} {cur}  {p['slo_attainment']:.2%}")
    ratio = doc["cost_ratio_vs_hpa_at_equal_slo"]
    how = doc["hpa_frontier_comparison"]
    note = {
        "interpolated": "frontier interpolated at tokenscale's attainment",
        "beyond_frontier": "tokenscale serves better than every hpa point: vs the best one",
        "below_frontier": "tokenscale serves worse than every hpa point: vs the cheapest one",
    }.get(how, how)
    if ratio is not None:
        lines.append(f"cost ratio vs hpa at equal SLO: {ratio:.3f} ({note})")
    alt = doc.get("hpa_other_metric")
    if alt and alt["cost_ratio_vs_hpa_at_equal_slo"] is not None:
        lines.append(f"cost ratio vs hpa on {alt['metric']} tokens/s at equal SLO: "
                     f"{alt['cost_ratio_vs_hpa_at_equal_slo']:.3f} ({alt['comparison']})")
    if doc["cost_ratio_vs_oracle"] is not None:
        lines.append(f"cost ratio vs oracle: {doc['cost_ratio_vs_oracle']:.3f}")
    if "frontier_member" in doc:
        lines.append(f"envelope at tokenscale's attainment: {doc['frontier_member']}; oracle "
                     f"there {doc['oracle_cost_at_tokenscale_slo']:.2f} {cur}, lower bound "
                     f"{doc['oracle_lower_bound_cost']:.2f} {cur}; gap captured: "
                     + (f"{doc['gap_captured']:.2f}" if doc["gap_captured"] is not None
                        else "n/a"))
    if "cost_ratio_ci95" in doc:
        lo, hi = doc["cost_ratio_ci95"]
        lines.append(f"over {len(doc['seeds'])} seeds/slices: cost ratio vs envelope mean "
                     f"{doc['cost_ratio_vs_hpa_at_equal_slo']:.3f}, 95 % interval "
                     f"[{lo:.3f}, {hi:.3f}]")
    err, run = doc.get("projection_abs_error"), doc.get("projection_abs_error_run_rate")
    if err and run:
        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.1%}"
        lines.append("period-end projection, mean |error| at 25/50/75 % of the period: "
                     + " / ".join(pct(err[k]) for k in ("25", "50", "75"))
                     + " (run rate: " + " / ".join(pct(run[k]) for k in ("25", "50", "75"))
                     + ")")
    budget = doc["budget"]
    limit = []
    if budget["max_cost"] is not None:
        limit.append(f"maxCost {budget['max_cost']:g} {cur}")
    if budget["max_tokens"] is not None:
        limit.append(f"maxTokens {budget['max_tokens']:g}")
    lines.append(f"budget: {', '.join(limit)} per {budget['period']} ({budget['time_zone']}), "
                 f"{budget['periods']} period(s) simulated")
    return "\n".join(lines) + "\n"
