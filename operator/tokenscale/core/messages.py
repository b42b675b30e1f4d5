"""The message of every decision: the reason's numbers, in words (DESIGN.md step 8, Output).

Messages are rendered from the numbers the steps decided on, once per decision. Status,
Kubernetes Events and tests read them, so their wording and number formats are part of the
interface: money with two decimals and thousands separators, token rates as whole tokens/s.
"""

from __future__ import annotations

import math

from tokenscale.api import PlanningSpec, SloSpec, TokenBudgetSpec
from tokenscale.core.budget import Accounts
from tokenscale.core.capacity import Demand, Recommendation
from tokenscale.core.outage import Hold, Seen
from tokenscale.core.pacing import Allocation, Outcome, Proposal
from tokenscale.core.types import TargetObservation


def money(x: float) -> str:
    """An amount of currency (or currency/h): ``1,234.50``."""
    return f"{x:,.2f}"


def rate(x: float) -> str:
    """A token count or rate: ``12,345``."""
    return f"{x:,.0f}"


def decision_message(o: Outcome, spec: TokenBudgetSpec, accounts: Accounts,
                     allocation: Allocation) -> str:
    """Why ``o`` got its replicas (before DryRun, see :func:`dry_run_message`)."""
    if o.reason == "BudgetExhausted":
        return exhausted_message(o, spec, accounts)
    if o.reason == "BudgetCapped":
        return capped_message(o, spec, accounts, allocation)
    return wanted_message(o, spec)


def dry_run_message(o: Outcome, message: str) -> str:
    """The message of a DryRun decision: what would be set, the reason it would have."""
    return f"would set {o.final} (now {o.proposal.seen.current}); {o.reason}: {message}"


def wanted_message(o: Outcome, spec: TokenBudgetSpec) -> str:
    """Why the target wants ``o.cap`` replicas (the proposal, or minMarginalValue's cut)."""
    p = o.proposal
    if o.next_value is None or not isinstance(p.wants, Recommendation):
        return proposal_message(p, spec)
    mmv = spec.planning.min_marginal_value
    return (
        f"need {p.behaviour}, stopping at {o.cap}: replica {o.cap + 1} adds "
        f"{o.next_value:.3g} quality per {spec.budget.currency}/h, below minMarginalValue "
        f"{mmv:g}; {demand_text(p.seen, spec.planning, p.wants)}"
    )


def proposal_message(p: Proposal, spec: TokenBudgetSpec) -> str:
    """Why the target asks for ``p.behaviour`` replicas before the budget."""
    if isinstance(p.wants, Recommendation):
        return recommendation_message(p.seen, spec.planning, p.wants)
    if isinstance(p.wants, Hold):
        return hold_message(p.seen, p.wants, spec)
    return conflict_message(p.seen)


def demand_text(seen: Seen, planning: PlanningSpec, r: Recommendation) -> str:
    """The demand and the replicas it needs, with every term."""
    t, d = seen.target, r.demand
    extra = f", queue growth +{rate(d.growth)}" if d.growth > 0 else ""
    if d.censored:
        extra += ", censored: served at the admission rate, so at least one replica more"
    return (
        f"demand {rate(d.total)} tok/s ({d.source} {rate(d.observed)}, forecast "
        f"{rate(d.forecast)} in {t.cold_start_seconds}s{forecast_method(d)}{extra}, queue "
        f"{seen.obs.queue_length:g} -> "
        f"+{rate(d.drain)}) at {rate(t.capacity)} tok/s/replica x "
        f"{d.utilization:.3g} utilization{band_text(planning, d)}, margin +{rate(d.margin)} "
        f"(z x spread; headroom floor {planning.headroom:.0%}) "
        f"needs {d.raw_need:.2f} replicas"
    )


def band_text(planning: PlanningSpec, d: Demand) -> str:
    """How the band and the utilization follow from the user's pair, when they differ."""
    if d.band >= planning.tolerance:
        return ""
    ceiling = (f"a replica is still added at {planning.target_utilization:g} x "
               f"(1 + {planning.tolerance:g})")
    if d.utilization >= 1.0 - 1e-9:
        return (f" (band {d.band:.1%}, within tolerance {planning.tolerance:.0%}: the demand is "
                f"quieter, the plan at the full capacity within the SLO, so {ceiling})")
    return (f" (band {d.band:.1%}: the demand's noise, within tolerance "
            f"{planning.tolerance:.0%}; utilization raised so that {ceiling})")


def forecast_method(d: Demand) -> str:
    """Which estimate is in use (the trend's or the level of now) and why, once scored."""
    s = d.score
    if s is None or not s.scored:
        return ""
    errors = f"recent error {rate(s.level_error)} vs the trend's {rate(s.trend_error)}"
    if d.method == "level":
        return f" = the level of now ({errors})"
    return f" by trend (level of now: {errors})"


def latency_text(obs: TargetObservation, slo: SloSpec) -> str:
    """The latency seen now against the SLO, e.g. ``ITL 62 ms of 50 ms, TTFT 0.40 s of 2 s``."""
    itl = f"{obs.recent_itl_seconds * 1000:.0f} ms" if obs.recent_itl_seconds else "n/a"
    ttft = f"{obs.recent_ttft_seconds:.2f} s" if obs.recent_ttft_seconds else "n/a"
    return (f"ITL {itl} of {slo.inter_token_latency_seconds * 1000:.0f} ms, TTFT {ttft} of "
            f"{slo.ttft_seconds:g} s")


def recommendation_message(seen: Seen, planning: PlanningSpec, r: Recommendation) -> str:
    """Demand, need and behaviour of a Control target; a latency above the SLO that one more
    replica would not relieve is said too (why the planner does not add one for it)."""
    t = seen.target
    text = demand_text(seen, planning, r)
    latency = (f"latency above the SLO now ({latency_text(seen.obs, t.slo)})"
               if r.reason == "SloBreach" or r.unrelieved is not None else "")
    if r.reason == "SloBreach":
        if r.need > r.current:
            step = ("one replica more at once" if r.need == r.current + 1
                    else "at once, the tolerance band skipped")
            return f"{latency}: {step}, {r.current} -> {r.need}; {text}"
        high = t.max_replicas
        if r.current > high:
            why = f"down to maxReplicas {high} only"
        elif r.unrelieved is not None:
            why = f"not one more replica's to fix ({r.unrelieved})"
        elif r.current >= high:
            why = f"maxReplicas {high} reached"
        else:
            why = "a replica is starting"
        return (f"{latency}, {why}: the demand's count kept at {r.recommendation} while it "
                f"lasts (no scale-down for lower demand); {text}")
    if r.unrelieved is not None:
        text = f"{text}; {latency}, not one more replica's to fix: {r.unrelieved}"
    if r.reason == "MinReplicas":
        return f"{text}; minReplicas is {t.min_replicas}"
    if r.reason == "MaxReplicas":
        return f"{text}; maxReplicas is {t.max_replicas}"
    if r.reason == "WithinTolerance":
        return (f"need {r.demand.raw_need:.2f} is within {r.demand.band:.1%} of current "
                f"{r.current}; {text}")
    if r.reason == "ScaleUpLimited":
        return (f"need {r.recommendation}, scale-up limited to {r.behaviour} from {r.current} "
                f"per interval (max(+4, 100%)); {text}")
    if r.reason == "StabilizingScaleDown":
        return (f"need {r.recommendation}, keeping {r.behaviour}: highest recommendation in the "
                f"last {r.window}s (one cold start, or the whole "
                f"scaleDownStabilizationSeconds {planning.scale_down_stabilization_seconds}s "
                f"after rises of a replica within a cold start); "
                f"{text}")
    return text


def hold_message(seen: Seen, h: Hold, spec: TokenBudgetSpec) -> str:
    """A target without usable metrics: holding, or on the fallback."""
    fallback = spec.fallback
    if h.reason == "FallbackReplicas":
        return (f"metrics unavailable ({h.error}) for {h.outage_seconds:.0f}s, over "
                f"fallback.afterSeconds {fallback.after_seconds}: {h.replicas} replicas "
                f"(fallback.replicas {fallback.replicas}, never fewer than current "
                f"{seen.current})")
    then = (f"; fallback to {fallback.replicas} after {fallback.after_seconds}s"
            if fallback.replicas is not None else "")
    return (f"metrics unavailable ({h.error}) for {h.outage_seconds:.0f}s: holding "
            f"{h.held} replicas{then}")


def conflict_message(seen: Seen) -> str:
    """A target that is not scaled: the other autoscaler, or the workload's problem."""
    ref = seen.target.scale_target_ref
    if seen.obs.conflict is not None:
        return (f"{seen.obs.conflict} also scales {ref.kind}/{ref.name}; not scaling, keeping "
                f"{seen.current}")
    return f"cannot scale {ref.kind}/{ref.name}: {seen.obs.target_error}"


def exhausted_message(o: Outcome, spec: TokenBudgetSpec, accounts: Accounts) -> str:
    """BudgetExhausted: which limit, until when, and what onExhausted does."""
    budget = spec.budget
    what = (f"cost ({money(accounts.spent)} of {money(budget.max_cost or 0)} "
            f"{budget.currency})"
            if accounts.cost_exhausted else
            f"token ({rate(accounts.tokens)} of {rate(budget.max_tokens or 0)} tokens)")
    return (f"{what} budget exhausted until {accounts.period_end.isoformat()}; "
            f"onExhausted={budget.on_exhausted}: {o.final} replicas (demand/hold wants "
            f"{o.cap})")


def capped_message(o: Outcome, spec: TokenBudgetSpec, accounts: Accounts,
                   allocation: Allocation) -> str:
    """BudgetCapped: the floors overrun the budget, or the affordable rates and the reason the
    target wanted more."""
    currency = spec.budget.currency
    if allocation.floors_over:
        limit = (f"minReplicas floors cost {money(allocation.floors_cost)} {currency}/h, above "
                 f"the affordable {money(accounts.affordable)} {currency}/h"
                 if allocation.floors_cost > accounts.affordable else
                 f"minReplicas floors serve {rate(allocation.floors_tokens)} tok/s, above the "
                 f"affordable {rate(accounts.token_cap)} tok/s")
        return f"wants {max(o.cap, o.proposal.behaviour)}, kept at minReplicas {o.final}: {limit}"
    parts = []
    if math.isfinite(accounts.affordable):
        left = (spec.budget.max_cost or 0) - accounts.spent
        parts.append(f"affordable {money(accounts.affordable)} {currency}/h "
                     f"({money(left)} {currency} left for {accounts.hours_left:.1f} h)")
    if math.isfinite(accounts.token_cap):
        parts.append(f"affordable {rate(accounts.token_cap)} tok/s of served capacity")
    return (f"wants {o.cap}, budget allows {o.final}: " + ", ".join(parts)
            + f"; {wanted_message(o, spec)}")
