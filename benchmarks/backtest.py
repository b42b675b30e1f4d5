"""Decision-quality benchmark: `tokenscale backtest` over every trace in ../shared/traces.

    .venv/bin/python benchmarks/backtest.py [--out DIR] [--jobs 2] [--write-md BENCHMARKS.md]

For each case it writes ``DIR/<case>.budget.yaml`` (a TokenBudget as a user would apply it),
runs exactly what ``tokenscale backtest --budget ... --trace ... --scale ... --json ... --plot
...`` runs (same parser, same code), and keeps ``DIR/<case>.json`` and ``DIR/<case>.png``. The
summary table (markdown) goes to stdout, ``DIR/backtest.md`` and, with ``--write-md``, between
the ``<!-- backtest:begin -->`` / ``<!-- backtest:end -->`` markers of that file.

Settings (calibration figures of the traces README): an 8B model on one H100 serves
3,400 tokens/s per replica (prompt and output tokens alike, ``--prefill-weight 1``, the unit of the
operator's default token-rate query), costs 3.9 USD per replica-hour and starts in 90 s. Each
trace is scaled so that its busiest minute needs 16 replicas' full capacity (about 20-25
replicas at the 0.8 utilisation target). The planning section is the DESIGN.md sample
(30 s interval, utilisation 0.8, headroom 0.1, 600 s forecast window, tolerance 0.1, 300 s
scale-down stabilisation). SLO: every token within 10 s.

Cases:
- ``ample``: one target per trace, budget 5,000 USD/day (never binding).
- ``tight``: two targets sharing one daily budget set to half the cost of their mean demand:
  ``chat`` (ServeGen m-large, 8B as above, weight 1, P = 0.738 + 0.026 ln T) and ``coder``
  (ServeGen m-mid, a 32B model on 2 GPUs: 2,000 tokens/s, 7.8 USD/h, 180 s cold start,
  weight 2, P = 0.159 + 0.073 ln T). The value per cost of a replica, w·b/c, is 0.0067 for chat
  and 0.0187 for coder, so the continuous optimum puts w·b-proportional spend, 85 %, on coder
  (as far as its demand can use it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "traces"
sys.path.insert(0, str(REPO / "operator"))

from tokenscale.backtest import add_arguments  # noqa: E402
from tokenscale.backtest.command import execute  # noqa: E402
from tokenscale.backtest.plot import write_plot  # noqa: E402
from tokenscale.sim.traces import load_trace  # noqa: E402

PEAK_REPLICAS = 16  # the busiest minute needs this many replicas' full capacity
H100_8B = {"tokensPerReplicaPerSecond": 3400, "costPerReplicaHour": 3.9, "coldStartSeconds": 90}
CODER_32B = {"tokensPerReplicaPerSecond": 2000, "costPerReplicaHour": 7.8,
             "coldStartSeconds": 180}
PLANNING = {"intervalSeconds": 30, "targetUtilization": 0.8, "headroom": 0.1,
            "forecastWindowSeconds": 600, "tolerance": 0.1, "scaleDownStabilizationSeconds": 300}
SINGLE = [
    ("azure-code", "azure2023_AzureLLMInferenceTrace_code.csv"),
    ("azure-conv", "azure2023_AzureLLMInferenceTrace_conv.csv"),
    ("mooncake-conv", "mooncake_fast25_conversation_trace.jsonl"),
    ("servegen-deepseek-r1", "servegen_deepseek-r1_aggregate_10min.csv"),
    ("servegen-m-large", "servegen_m-large_aggregate_10min.csv"),
    ("servegen-m-mid", "servegen_m-mid_aggregate_10min.csv"),
    ("servegen-m-small", "servegen_m-small_aggregate_10min.csv"),
]


def _target(name: str, hw: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": name},
            "minReplicas": 1, "maxReplicas": 64, **hw, **extra}


def _manifest(name: str, max_cost: float, targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "tokenscale.dev/v1alpha1", "kind": "TokenBudget",
            "metadata": {"name": name, "namespace": "inference"},
            "spec": {"mode": "Active",
                     "budget": {"period": "Day", "timeZone": "UTC", "maxCost": max_cost,
                                "currency": "USD", "onExhausted": "ScaleToMinimum"},
                     "planning": PLANNING, "targets": targets}}


def _scale_for(path: Path, capacity: float) -> tuple[float, float]:
    """(scale, mean demand in replicas after scaling) so the busiest minute = PEAK_REPLICAS."""
    trace = load_trace(path)
    per_minute = trace.rate_series(60.0)
    scale = float(f"{PEAK_REPLICAS * capacity / per_minute.max():.3g}")
    mean_replicas = trace.total_tokens() / trace.duration_s * scale / capacity
    return scale, mean_replicas


def cases() -> list[dict[str, Any]]:
    """Every benchmark case: name, kind, manifest, traces and scales."""
    out = []
    for name, file in SINGLE:
        scale, _ = _scale_for(TRACES / file, H100_8B["tokensPerReplicaPerSecond"])
        out.append({"name": name, "kind": "ample",
                    "manifest": _manifest(name, 5000, [_target("llama-8b", H100_8B)]),
                    "traces": {"llama-8b": file}, "scales": {"llama-8b": scale}})
    chat_file = "servegen_m-large_aggregate_10min.csv"
    coder_file = "servegen_m-mid_aggregate_10min.csv"
    chat_scale, chat_mean = _scale_for(TRACES / chat_file, H100_8B["tokensPerReplicaPerSecond"])
    coder_scale, coder_mean = _scale_for(TRACES / coder_file,
                                         CODER_32B["tokensPerReplicaPerSecond"])
    demand_cost_per_day = 24 * (chat_mean * H100_8B["costPerReplicaHour"]
                                + coder_mean * CODER_32B["costPerReplicaHour"])
    budget = float(f"{0.5 * demand_cost_per_day:.3g}")
    out.append({
        "name": "tight-two-targets", "kind": "tight",
        "manifest": _manifest("shared", budget, [
            _target("chat", H100_8B, weight=1, performance={"a": 0.738, "b": 0.026}),
            _target("coder", CODER_32B, weight=2, performance={"a": 0.159, "b": 0.073}),
        ]),
        "traces": {"chat": chat_file, "coder": coder_file},
        "scales": {"chat": chat_scale, "coder": coder_scale},
        "demand_cost_per_day": demand_cost_per_day,
    })
    return out


def _work(case: dict[str, Any]) -> float:
    """Rough relative run time of a case: simulated seconds × targets."""
    return float(sum(load_trace(TRACES / f).duration_s for f in case["traces"].values()))


def command_line(case: dict[str, Any], out: Path) -> list[str]:
    """The ``tokenscale backtest`` arguments of a case (paths as given)."""
    argv = ["backtest", "--budget", str(out / f"{case['name']}.budget.yaml")]
    for target, file in case["traces"].items():
        argv += ["--trace", f"{target}=../shared/traces/{file}"]
    for target, k in case["scales"].items():
        argv += ["--scale", f"{target}={k:g}"]
    argv += ["--hpa-both-metrics", "--json", str(out / f"{case['name']}.json"),
             "--plot", str(out / f"{case['name']}.png")]
    return argv


def run_case(case: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run one case through the command's own parser and code; returns its JSON document."""
    (out / f"{case['name']}.budget.yaml").write_text(yaml.safe_dump(case["manifest"],
                                                                    sort_keys=False))
    parser = argparse.ArgumentParser(prog="tokenscale backtest")
    add_arguments(parser)
    argv = command_line(case, out)[1:]
    argv = [a.replace("../shared/traces/", f"{TRACES}/") for a in argv]
    args = parser.parse_args([*argv, "--no-progress", "--quiet"])
    began = time.perf_counter()
    bt, doc = execute(args)
    Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    write_plot(bt, args.plot, title=f"tokenscale backtest — {case['name']}")
    doc["case"] = {k: v for k, v in case.items() if k != "manifest"}
    doc["case"]["seconds"] = round(time.perf_counter() - began, 1)
    doc["case"]["budget_max_cost"] = case["manifest"]["spec"]["budget"]["maxCost"]
    if case["kind"] == "tight":
        doc["allocation"] = allocation(bt, case)
    return doc


def allocation(bt: Any, case: dict[str, Any]) -> dict[str, Any]:
    """How tokenscale shared the tight budget: spend shares, the w·b/c ranking, and the
    marginal value per cost (w·b·ln((n+1)/n)/c) of each target's last replica, averaged over
    the time the budget capped it."""
    spec = bt.spec
    runs = bt.runs["tokenscale"]
    out: dict[str, Any] = {}
    total = 0.0
    wb_total = sum(t.weight * (t.performance.b or 0) for t in spec.targets)
    for i, t in enumerate(spec.targets):
        paid = runs[t.name].paid[: bt.trace_seconds]
        cost = float(paid.sum() * t.cost_per_replica_hour / 3600)
        total += cost
        n = paid[paid > 0].astype(float)
        marginal = (t.weight * (t.performance.b or 0) * (1.0 / n).clip(max=1e9)
                    / t.cost_per_replica_hour)
        demand = bt.arrivals[i, : bt.trace_seconds].mean() / t.tokens_per_replica_per_second
        out[t.name] = {
            "cost": cost,
            "mean_replicas": float(paid.mean()),
            "mean_demand_replicas": float(demand),
            "value_per_cost_wb_over_c": t.weight * (t.performance.b or 0)
            / t.cost_per_replica_hour,
            "continuous_optimum_spend_share": t.weight * (t.performance.b or 0) / wb_total,
            "approx_marginal_value_per_cost": float(marginal.mean()) if len(n) else None,
        }
    for name in out:
        out[name]["spend_share"] = out[name]["cost"] / total if total > 0 else 0.0
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def markdown(docs: list[dict[str, Any]], out: Path, wall: float, jobs: int) -> str:
    """The benchmark tables in markdown."""
    lines = [
        "Reproduce: `.venv/bin/python benchmarks/backtest.py --out /tmp/tokenscale-backtest "
        f"--jobs {jobs} --write-md BENCHMARKS.md` ({wall:.0f} s wall on 2 cores; JSON, PNG "
        "and budget manifests of every case land in the `--out` directory). Each case is one "
        "`tokenscale backtest` run, e.g.:",
        "",
        "```",
        "tokenscale " + " ".join(command_line(docs[0]["case"] | {"name": docs[0]["case"]["name"]},
                                              out)),
        "```",
        "",
        "### Ample budget (5,000 USD/day, never binding)",
        "",
        "| trace | scale | tokenscale cost | SLO | hpa (util 0.8) cost | SLO | hpa frontier "
        "cost at tokenscale's SLO | **cost ratio vs hpa at equal SLO** | ratio vs hpa on demand "
        "rate | static cost | SLO | oracle cost | **tokenscale / oracle** | run s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in docs:
        if d["case"]["kind"] != "ample":
            continue
        p = d["policies"]
        how = {"interpolated": "", "beyond_frontier": " (beyond: vs best point)",
               "below_frontier": " (below: vs cheapest point)"}[d["hpa_frontier_comparison"]]
        scale = next(iter(d["case"]["scales"].values()))
        other = d.get("hpa_other_metric") or {}
        alt = (f"{other['cost_ratio_vs_hpa_at_equal_slo']:.3f}"
               + {"interpolated": "", "beyond_frontier": " (beyond)",
                  "below_frontier": " (below)"}.get(other.get("comparison", ""), "")
               if other.get("cost_ratio_vs_hpa_at_equal_slo") else "n/a")
        lines.append(
            f"| {d['case']['name']} | {scale:g} | {p['tokenscale']['cost']:,.0f} | "
            f"{_pct(p['tokenscale']['slo_attainment'])} | {p['hpa']['cost']:,.0f} | "
            f"{_pct(p['hpa']['slo_attainment'])} | "
            f"{d['hpa_frontier_cost_at_tokenscale_slo']:,.0f} | "
            f"**{d['cost_ratio_vs_hpa_at_equal_slo']:.3f}**{how} | {alt} | "
            f"{p['static']['cost']:,.0f} | "
            f"{_pct(p['static']['slo_attainment'])} | {p['oracle']['cost']:,.0f} | "
            f"**{d['cost_ratio_vs_oracle']:.2f}** | {d['case']['seconds']:.0f} |"
        )
    lines += ["", "GPU-hours, late tokens and scale events per policy:", "",
              "| trace | policy | GPU-h | cost USD | SLO attainment | tokens late | "
              "scale events | peak replicas |", "|---|---|---|---|---|---|---|---|"]
    for d in docs:
        if d["case"]["kind"] != "ample":
            continue
        for name, s in d["policies"].items():
            lines.append(
                f"| {d['case']['name']} | {name} | {s['gpu_hours']:,.1f} | {s['cost']:,.0f} | "
                f"{_pct(s['slo_attainment'])} | {s['tokens_late']:.3g} | {s['scale_events']} | "
                f"{s['peak_replicas']} |")
    lines += ["", "HPA sweep (cost USD / SLO attainment per target utilisation):", "",
              "| trace | " + " | ".join(
                  f"{p['target_utilization']:.2f}" for p in docs[0]["hpa_frontier"]) + " |",
              "|---|" + "---|" * len(docs[0]["hpa_frontier"])]
    for d in docs:
        if d["case"]["kind"] != "ample":
            continue
        lines.append(f"| {d['case']['name']} | " + " | ".join(
            f"{p['cost']:,.0f} / {100 * p['slo_attainment']:.2f}" for p in d["hpa_frontier"])
            + " |")
    for d in docs:
        if d["case"]["kind"] != "tight":
            continue
        budget = d["case"]["budget_max_cost"]
        days = d["settings"]["trace_seconds"] / 86400
        lines += ["", f"### Tight budget: two targets share {budget:,.0f} USD/day "
                  f"(half the cost of their mean demand, "
                  f"{d['case']['demand_cost_per_day']:,.0f} USD/day), {days:.0f} days", "",
                  "| policy | cost USD | budget overrun USD | SLO attainment | tokens served | "
                  "chat cost / served | coder cost / served |", "|---|---|---|---|---|---|---|"]
        for name, s in d["policies"].items():
            chat, coder = d["targets"]["chat"][name], d["targets"]["coder"][name]
            lines.append(
                f"| {name} | {s['cost']:,.0f} | {s['budget_overrun']:,.2f} | "
                f"{_pct(s['slo_attainment'])} | {_pct(s['served_share'])} | "
                f"{chat['cost']:,.0f} / {_pct(chat['served_share'])} | "
                f"{coder['cost']:,.0f} / {_pct(coder['served_share'])} |")
        a = d["allocation"]
        lines += ["", "Allocation by tokenscale:", "",
                  "| target | w·b/c | spend share | continuous optimum share (∝ w·b) | "
                  "mean replicas | mean demand (replicas at 100 %) | mean w·b/(n·c) of the last "
                  "replica |", "|---|---|---|---|---|---|---|"]
        for name, x in a.items():
            mv = x["approx_marginal_value_per_cost"]
            lines.append(
                f"| {name} | {x['value_per_cost_wb_over_c']:.4f} | {_pct(x['spend_share'])} | "
                f"{_pct(x['continuous_optimum_spend_share'])} | {x['mean_replicas']:.2f} | "
                f"{x['mean_demand_replicas']:.2f} | {mv:.5f} |")
    return "\n".join(lines) + "\n"


def _write_md(path: Path, body: str) -> None:
    begin, end = "<!-- backtest:begin -->", "<!-- backtest:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{begin}\n{body}{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text += ("\n" if text else "") + "## Decision quality (backtest)\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run every case (in ``--jobs`` processes), print and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/tokenscale-backtest"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", action="append", default=[], help="case name(s) to run")
    parser.add_argument("--write-md", type=Path, help="update the backtest section of this file")
    args = parser.parse_args(argv)
    if not TRACES.is_dir():
        print(f"no traces at {TRACES}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [c for c in cases() if not args.only or c["name"] in args.only]
    began = time.perf_counter()
    from tqdm import tqdm

    docs: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        # longest first, so two workers finish together
        order = sorted(todo, key=lambda c: -_work(c))
        futures = {pool.submit(run_case, c, args.out): c["name"] for c in order}
        bar = tqdm(total=len(futures), file=sys.stderr, disable=not sys.stderr.isatty(),
                   desc="backtest cases")
        for fut in as_completed(futures):
            docs[futures[fut]] = fut.result()
            bar.update(1)
        bar.close()
    wall = time.perf_counter() - began
    ordered = [docs[c["name"]] for c in todo]
    body = markdown(ordered, args.out, wall, args.jobs)
    (args.out / "backtest.md").write_text(body, encoding="utf-8")
    sys.stdout.write(body)
    if args.write_md:
        _write_md(args.write_md, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
