"""The observation builder, table-driven: one cycle's Prometheus answers and the namespace's
workloads in, what the planner sees of each target out. Pure: plain values, no mocks, no I/O.

Times in the rows are seconds before the cycle (``AT``); rates are tokens/s, queues waiting
requests, increases tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from core_world import NOW, spec, target

from tokenscale.adapters.kube import Autoscaler, KubeError, Workload
from tokenscale.adapters.prometheus import MetricFailure, Series, TargetSeries, group_by_target
from tokenscale.adapters.promql import WorkloadRef
from tokenscale.core.types import Observation, TargetObservation
from tokenscale.observation import build_observation, latency_samples
from tokenscale.prometheus_reads import FitHistory, UrlAnswers, group_answer, latency_series

NS = "inference"
AT = NOW.timestamp()  # the cycle's time (unix s): Wednesday noon UTC
DAY_SO_FAR = 12 * 3600  # s from the start of the Day period (UTC midnight) to AT
STALE_AFTER = 120.0  # s
LLAMA = WorkloadRef(NS, "Deployment", "llama")
MISTRAL = WorkloadRef(NS, "Deployment", "mistral")
POD_A, POD_B = "llama-7d9f8c6b5-x2k4p", "llama-7d9f8c6b5-q9w8e"
MISTRAL_POD = "mistral-5c8d7b9f4-abcde"
RATE_QUERY = 'sum by (namespace, pod) (rate(my_tokens_total[1m]))'
QUEUE_QUERY = "sum by (namespace, pod) (my_waiting_requests)"
TIMEOUT = MetricFailure("Timeout", "no answer within 5 s")
HTTP_500 = MetricFailure("HTTPError", "500 Internal Server Error")
UNREACHABLE = MetricFailure("Unreachable", "connection refused")
NAN, INF = math.nan, math.inf

Answer = list[Series] | MetricFailure


def pod(name: str, *points: tuple[float, float]) -> Series:
    """One pod's series; ``points`` are (seconds before AT, value), oldest first."""
    return Series({"namespace": NS, "pod": name}, tuple((AT - ago, v) for ago, v in points))


def samples(*points: tuple[float, float]) -> tuple[tuple[datetime, float], ...]:
    """Expected ``token_rate_samples`` from (seconds before AT, tokens/s) pairs."""
    return tuple((datetime.fromtimestamp(AT - ago, UTC), v) for ago, v in points)


def answers(rate: Answer | None = None, queue: Answer | None = None,
            increase: dict[int, Answer] | None = None,
            overrides: dict[tuple[str, str], Answer] | None = None,
            fits: dict[str, FitHistory] | None = None,
            itl: list[Series] | None = None, itl_rate: list[Series] | None = None) -> UrlAnswers:
    """The cycle's answers, the default ones grouped to llama and mistral as a cycle does."""
    refs = [LLAMA, MISTRAL]
    return UrlAnswers(
        at=AT, window=600.0,
        rate=group_answer(rate if rate is not None else [], refs),
        queue=group_answer(queue if queue is not None else [], refs),
        increase={span: group_answer(a, refs) for span, a in (increase or {}).items()},
        overrides=dict(overrides or {}), fits=dict(fits or {}),
        itl=group_by_target(itl or [], refs), itl_rate=group_by_target(itl_rate or [], refs),
    )


def deployments(**replicas: int) -> dict[tuple[str, str], Workload]:
    """Deployments by name with ``replicas`` (all ready)."""
    return {("Deployment", name): Workload("Deployment", name, n, n)
            for name, n in replicas.items()}


def observe(got: UrlAnswers, targets: list[dict[str, Any]] | None = None,
            workloads: dict[tuple[str, str], Workload] | None = None,
            autoscalers: list[Autoscaler] | KubeError | None = None) -> Observation:
    return build_observation(
        spec(targets=targets, planning={"forecastWindowSeconds": 600}), NS, got,
        workloads if workloads is not None else deployments(llama=2),
        autoscalers if autoscalers is not None else [], STALE_AFTER)


# ------------------------------------------------------------------ metrics of one target


@dataclass(frozen=True)
class Case:
    """One row: the answers, the llama target's spec fields and replicas, what it gets."""

    rate: Answer
    expect: dict[str, Any]  # TargetObservation field -> value
    queue: Answer = field(default_factory=list)
    overrides: dict[tuple[str, str], Answer] = field(default_factory=dict)
    target_fields: dict[str, Any] = field(default_factory=dict)
    replicas: int = 2


def _case(id: str, rate: Answer, expect: dict[str, Any], **rest: Any) -> Any:
    return pytest.param(Case(rate, expect, **rest), id=id)


FRESH = [pod(POD_A, (60, 400), (30, 500), (0, 600)), pod(POD_B, (60, 100), (30, 100), (0, 100))]

METRIC_CASES = [
    _case("fresh-samples-summed-per-timestamp", FRESH,
          {"token_rate_samples": samples((60, 500), (30, 600), (0, 700)),
           "metrics_error": None, "current_replicas": 2, "ready_replicas": 2}),
    _case("samples-before-forecast-window-dropped",
          [pod(POD_A, (900, 9999), (601, 9999), (600, 400), (0, 600))],
          {"token_rate_samples": samples((600, 400), (0, 600)), "metrics_error": None}),
    _case("stale-newest-sample", [pod(POD_A, (400, 500), (300, 500))],
          {"token_rate_samples": samples((400, 500), (300, 500)), "metrics_error": "Stale"}),
    _case("newest-sample-at-the-stale-limit-is-fresh", [pod(POD_A, (180, 500), (120, 500))],
          {"metrics_error": None}),
    _case("missing-series-is-empty", [pod(MISTRAL_POD, (0, 900))],
          {"token_rate_samples": (), "metrics_error": "Empty"}),
    _case("scaled-to-zero-without-series-serves-nothing", [],
          {"token_rate_samples": samples((0, 0.0)), "metrics_error": None,
           "current_replicas": 0}, replicas=0),
    _case("query-wide-failure", TIMEOUT,
          {"token_rate_samples": (), "metrics_error": "Timeout", "queue_length": 0.0}),
    _case("nan-newest-sample", [pod(POD_A, (30, 500), (0, NAN))],
          {"metrics_error": "NotANumber"}),
    _case("infinite-newest-sample", [pod(POD_A, (30, 500), (0, INF))],
          {"metrics_error": "Infinite"}),
    _case("same-pod-twice-is-multiple-series", [pod(POD_A, (0, 500)), pod(POD_A, (0, 600))],
          {"metrics_error": "MultipleSeries"}),
    _case("queue-newest-value-summed-over-pods", FRESH,
          {"queue_length": 7.0, "metrics_error": None},
          queue=[pod(POD_A, (30, 9), (0, 3)), pod(POD_B, (15, 4))]),
    _case("queue-of-another-workload-ignored", FRESH, {"queue_length": 3.0},
          queue=[pod(POD_A, (0, 3)), pod(MISTRAL_POD, (0, 50))]),
    _case("no-queue-series-is-zero-and-usable", FRESH,
          {"queue_length": 0.0, "metrics_error": None}, queue=[]),
    _case("queue-nan-is-an-error-and-zero", FRESH,
          {"queue_length": 0.0, "metrics_error": "NotANumber"},
          queue=[pod(POD_A, (0, NAN)), pod(POD_B, (0, 4))]),
    _case("queue-infinite-is-an-error-and-zero", FRESH,
          {"queue_length": 0.0, "metrics_error": "Infinite"}, queue=[pod(POD_A, (0, INF))]),
    _case("queue-failure-with-a-good-rate", FRESH,
          {"token_rate_samples": samples((60, 500), (30, 600), (0, 700)),
           "queue_length": 0.0, "metrics_error": "HTTPError"}, queue=HTTP_500),
    _case("rate-failure-named-before-queue-failure", TIMEOUT,
          {"metrics_error": "Timeout"}, queue=HTTP_500),
    _case("rate-override-query-replaces-the-default", [pod(POD_A, (0, 9999))],
          {"token_rate_samples": samples((0, 250)), "metrics_error": None},
          overrides={("rate", RATE_QUERY): [pod(POD_A, (0, 250))]},
          target_fields={"metrics": {"tokenRateQuery": RATE_QUERY}}),
    _case("rate-override-failure", FRESH, {"token_rate_samples": (),
                                           "metrics_error": "Unreachable"},
          overrides={("rate", RATE_QUERY): UNREACHABLE},
          target_fields={"metrics": {"tokenRateQuery": RATE_QUERY}}),
    _case("queue-override-query-replaces-the-default", FRESH,
          {"queue_length": 2.0, "metrics_error": None},
          queue=[pod(POD_A, (0, 50))],
          overrides={("queue", QUEUE_QUERY): [pod(POD_A, (0, 2))]},
          target_fields={"metrics": {"queueQuery": QUEUE_QUERY}}),
]


@pytest.mark.parametrize("case", METRIC_CASES)
def test_target_metrics(case: Case) -> None:
    got = observe(answers(rate=case.rate, queue=case.queue, overrides=case.overrides),
                  targets=[target(**case.target_fields)],
                  workloads=deployments(llama=case.replicas))
    seen = got.targets["llama"]
    assert {name: getattr(seen, name) for name in case.expect} == case.expect


# -------------------------------------------------------------- workloads and autoscalers


HPA = Autoscaler("HorizontalPodAutoscaler", "llama-hpa", "Deployment", "llama")
KEDA_ON_STATEFULSET = Autoscaler("ScaledObject", "llama-keda", "StatefulSet", "llama")

WORKLOAD_CASES = [
    pytest.param(deployments(llama=3), [], {"current_replicas": 3, "target_error": None,
                                            "conflict": None}, id="workload-found"),
    pytest.param({("Deployment", "llama"): Workload("Deployment", "llama", 4, 1)}, [],
                 {"current_replicas": 4, "ready_replicas": 1}, id="ready-fewer-than-desired"),
    pytest.param(deployments(mistral=2), [],
                 {"current_replicas": 0, "ready_replicas": 0, "token_rate_samples": (),
                  "target_error": "Deployment llama not found in inference"},
                 id="workload-missing"),
    pytest.param(deployments(llama=2), [HPA],
                 {"conflict": "HorizontalPodAutoscaler llama-hpa", "current_replicas": 2},
                 id="hpa-on-the-workload-is-a-conflict"),
    pytest.param(deployments(llama=2), [KEDA_ON_STATEFULSET], {"conflict": None},
                 id="autoscaler-of-another-kind-is-no-conflict"),
    pytest.param(deployments(llama=2), KubeError(403, "Forbidden"), {"conflict": None},
                 id="unreadable-autoscalers-are-no-conflict"),
    pytest.param({}, [HPA], {"target_error": "Deployment llama not found in inference",
                             "conflict": "HorizontalPodAutoscaler llama-hpa"},
                 id="missing-workload-keeps-its-conflict"),
]


@pytest.mark.parametrize(("workloads", "autoscalers", "expect"), WORKLOAD_CASES)
def test_target_workload(workloads: dict[tuple[str, str], Workload],
                         autoscalers: list[Autoscaler] | KubeError,
                         expect: dict[str, Any]) -> None:
    got = observe(answers(rate=FRESH), workloads=workloads, autoscalers=autoscalers)
    seen = got.targets["llama"]
    assert {name: getattr(seen, name) for name in expect} == expect


# ------------------------------------------------------------- tokens since period start


TOKENS_CASES = [
    pytest.param({DAY_SO_FAR: [pod(POD_A, (0, 1e6)), pod(POD_B, (0, 2e6))]}, 3e6,
                 id="summed-over-the-targets-pods"),
    pytest.param({DAY_SO_FAR: [pod(POD_A, (60, 5e5), (0, 1e6))]}, 1e6,
                 id="newest-value-of-each-pod"),
    pytest.param({DAY_SO_FAR: [pod(POD_A, (0, 1e6)), pod(POD_B, (0, NAN))]}, 1e6,
                 id="non-finite-pod-left-out"),
    pytest.param({DAY_SO_FAR: [pod(POD_A, (0, 1e6)), pod(MISTRAL_POD, (0, 5e6))]}, 1e6,
                 id="untargeted-workloads-not-counted"),
    pytest.param({DAY_SO_FAR: []}, 0.0, id="no-series-is-zero-tokens"),
    pytest.param({DAY_SO_FAR: TIMEOUT}, None, id="query-failure-is-unknown"),
    pytest.param({DAY_SO_FAR - 3600: [pod(POD_A, (0, 1e6))]}, None,
                 id="increase-over-another-span-is-not-used"),
]


@pytest.mark.parametrize(("increase", "tokens"), TOKENS_CASES)
def test_tokens_in_period(increase: dict[int, Answer], tokens: float | None) -> None:
    assert observe(answers(rate=FRESH, increase=increase)).tokens_in_period == tokens


# ------------------------------------------------------------------------------ the rest


def test_each_target_sees_only_its_own_pods() -> None:
    got = observe(
        answers(rate=[*FRESH, pod(MISTRAL_POD, (0, 900))],
                queue=[pod(POD_A, (0, 1)), pod(MISTRAL_POD, (0, 5))],
                increase={DAY_SO_FAR: [pod(POD_A, (0, 1e6)), pod(MISTRAL_POD, (0, 4e6))]}),
        targets=[target("llama"), target("mistral")],
        workloads=deployments(llama=2, mistral=1))
    assert got.targets == {
        "llama": TargetObservation(2, 2, samples((60, 500), (30, 600), (0, 700)), 1.0),
        "mistral": TargetObservation(1, 1, samples((0, 900)), 5.0),
    }
    assert got.tokens_in_period == 5e6


def test_performance_query_history_gives_quality_samples() -> None:
    quality = [Series({"model": "llama"}, ((AT - 300, 0.7), (AT, 0.75)))]
    rates = [pod(POD_A, (300, 200), (0, 400))]
    fitted = target(performance={"query": "avg(my_quality_score)"})
    got = observe(answers(rate=FRESH, fits={"avg(my_quality_score)": (quality, rates)}),
                  targets=[fitted])
    assert got.targets["llama"].quality_samples == ((200.0, 0.7), (400.0, 0.75))
    assert observe(answers(rate=FRESH)).targets["llama"].quality_samples == ()


# ------------------------------------------------------- latency history (service model)

#: (tokens/s, mean inter-token latency s) of llama's two pods, three 60 s steps
RATES = [pod(POD_A, (120, 1000), (60, 2000), (0, 3000)), pod(POD_B, (120, 500), (60, 500))]
ITLS = [pod(POD_A, (120, 0.010), (60, 0.020), (0, 0.040)), pod(POD_B, (120, 0.008), (60, 0.009))]

LATENCY_CASES = [
    pytest.param(ITLS, RATES, ((500.0, 0.008), (1000.0, 0.010), (500.0, 0.009),
                               (2000.0, 0.020), (3000.0, 0.040)),
                 id="paired-per-pod-and-timestamp-oldest-first-pods-by-name"),
    pytest.param([pod(POD_A, (60, 0.02), (30, 0.03))], [pod(POD_A, (60, 2000), (0, 3000))],
                 ((2000.0, 0.02),), id="timestamps-in-only-one-history-left-out"),
    pytest.param([pod(POD_A, (0, 0.02))], [pod(POD_B, (0, 2000))], (),
                 id="pods-in-only-one-history-left-out"),
    pytest.param([pod(POD_A, (180, 0.01), (120, NAN), (60, 0.02), (0, INF))],
                 [pod(POD_A, (180, 1000), (120, 1000), (60, NAN), (0, 1000))],
                 ((1000.0, 0.01),), id="non-finite-values-left-out"),
    pytest.param([pod(POD_A, (120, 0.01), (60, 0.02), (0, 0.0))],
                 [pod(POD_A, (120, 0.0), (60, -5.0), (0, 1000))], (),
                 id="no-traffic-and-zero-latency-left-out"),
    pytest.param([pod(POD_A, (0, 0.02)), pod(MISTRAL_POD, (0, 0.5))],
                 [pod(POD_A, (0, 2000)), pod(MISTRAL_POD, (0, 9000))], ((2000.0, 0.02),),
                 id="other-workloads-pods-left-out"),
    pytest.param([pod(POD_A, (0, 0.02)), pod(POD_A, (0, 0.03))], [pod(POD_A, (0, 2000))], (),
                 id="same-pod-twice-gives-none"),
    pytest.param([], RATES, (), id="no-latency-history-gives-none"),
    pytest.param(ITLS, [], (), id="no-rate-history-gives-none"),
]


@pytest.mark.parametrize(("itl", "rates", "expect"), LATENCY_CASES)
def test_latency_samples(itl: list[Series], rates: list[Series],
                         expect: tuple[tuple[float, float], ...]) -> None:
    got = observe(answers(rate=FRESH, itl=itl, itl_rate=rates),
                  targets=[target("llama"), target("mistral")],
                  workloads=deployments(llama=2, mistral=1))
    assert got.targets["llama"].latency_samples == expect


def test_latency_samples_keep_the_newest_up_to_the_limit() -> None:
    itl = TargetSeries({POD_A: tuple((float(t), 0.01 + t / 1e4) for t in range(10))})
    rate = TargetSeries({POD_A: tuple((float(t), 100.0 + t) for t in range(10))})
    assert latency_samples(itl, rate, limit=3) == ((107.0, 0.0107), (108.0, 0.0108),
                                                   (109.0, 0.0109))
    assert latency_samples(itl, rate, limit=0) == ()
    assert len(latency_samples(itl, rate)) == 10


def test_latency_samples_capped_by_default() -> None:
    points = tuple((float(t), 1.0) for t in range(1500))
    both = TargetSeries({POD_A: points, POD_B: points})
    got = latency_samples(both, both)
    assert len(got) == 2000


# ----------------------------------------------- arrivals at a gateway, latency seen now

GATEWAY = 'sum(rate(gateway_tokens_total{model="llama"}[1m]))'


def test_a_gateway_arrival_query_is_summed_over_its_series_within_the_window() -> None:
    got = answers(rate=[pod(POD_A, (60, 1000.0))],
                  overrides={("arrival", GATEWAY): [
                      Series({"route": "a"}, ((AT - 900, 50.0), (AT - 60, 700.0))),
                      Series({"route": "b"}, ((AT - 60, 800.0), (AT - 30, NAN)))]})
    llama = observe(got, [target("llama", metrics={"arrivalRateQuery": GATEWAY})]
                    ).targets["llama"]
    assert llama.arrival_rate_samples == samples((60, 1500.0))  # 900 s ago: outside 600 s
    assert llama.metrics_error is None


@pytest.mark.parametrize("answer", [TIMEOUT, []], ids=["failed", "empty"])
def test_a_failed_arrival_query_leaves_the_served_estimate_never_a_hold(answer: Answer) -> None:
    got = answers(rate=[pod(POD_A, (60, 1000.0))], overrides={("arrival", GATEWAY): answer})
    llama = observe(got, [target("llama", metrics={"arrivalRateQuery": GATEWAY})]
                    ).targets["llama"]
    assert llama.arrival_rate_samples == ()
    assert llama.metrics_error is None and llama.token_rate_samples


def test_the_latency_seen_now_is_the_mean_of_the_pods_newest_values() -> None:
    got = answers(rate=[pod(POD_A, (60, 1000.0))])
    recent = group_answer([pod(POD_A, (5, 0.04)), pod(POD_B, (5, 0.08)),
                           pod(MISTRAL_POD, (5, 0.5))], [LLAMA, MISTRAL])
    llama = observe(UrlAnswers(**{**got.__dict__, "recent_itl": recent})).targets["llama"]
    assert llama.recent_itl_seconds == pytest.approx(0.06)
    quiet = group_answer([pod(POD_A, (5, NAN))], [LLAMA, MISTRAL])  # no request: 0/0
    assert observe(UrlAnswers(**{**got.__dict__, "recent_itl": quiet})
                   ).targets["llama"].recent_itl_seconds is None
    assert observe(UrlAnswers(**{**got.__dict__, "recent_itl": TIMEOUT})
                   ).targets["llama"].recent_itl_seconds is None


def test_the_recent_latency_answer_is_split_into_itl_and_ttft_by_its_label() -> None:
    """One query answers both latencies, each series tagged ``latency``; a failure is both's."""
    def tagged(kind: str, name: str, value: float) -> Series:
        series = pod(name, (5, value))
        return Series({**series.labels, "latency": kind}, series.samples)

    answer = [tagged("itl", POD_A, 0.04), tagged("ttft", POD_A, 0.5),
              tagged("itl", POD_B, 0.08), tagged("ttft", POD_B, 1.5)]
    got = answers(rate=[pod(POD_A, (60, 1000.0))])
    llama = observe(UrlAnswers(**{
        **got.__dict__,
        "recent_itl": group_answer(latency_series(answer, "itl"), [LLAMA, MISTRAL]),
        "recent_ttft": group_answer(latency_series(answer, "ttft"), [LLAMA, MISTRAL]),
    })).targets["llama"]
    assert llama.recent_itl_seconds == pytest.approx(0.06)
    assert llama.recent_ttft_seconds == pytest.approx(1.0)
    assert latency_series(TIMEOUT, "ttft") is TIMEOUT


def test_a_queue_no_pod_exports_is_unknown_not_empty() -> None:
    """The queue reads 0 either way; whether a pod exports it tells a TTFT above the SLO
    with nobody waiting (the prompts' prefill) from one whose queue is not seen."""
    exported = answers(rate=[pod(POD_A, (60, 1000.0))], queue=[pod(POD_A, (5, 0.0))])
    missing = answers(rate=[pod(POD_A, (60, 1000.0))])
    for got, known in ((exported, True), (missing, False)):
        llama = observe(got).targets["llama"]
        assert (llama.queue_length, llama.queue_known) == (0.0, known)
        assert llama.metrics_error is None


def test_a_target_with_its_own_token_query_gets_its_latency_loads_in_those_tokens() -> None:
    """The latency history counts the engine's prompt + generation tokens; a target whose own
    tokenRateQuery counts half of them (generation only, say) gets the loads halved, so the
    capacity fitted from them is in the tokens its demand is counted in."""
    own_query = "sum by (pod) (rate(vllm:generation_tokens_total[1m]))"
    itl = [pod(POD_A, (120, 0.02), (60, 0.03))]
    itl_rate = [pod(POD_A, (120, 1000.0), (60, 1600.0))]
    engine = [pod(POD_A, (60, 2000.0), (30, 2000.0))]
    own = [pod(POD_A, (60, 1000.0), (30, 1000.0))]
    got = answers(rate=engine, itl=itl, itl_rate=itl_rate,
                  overrides={("rate", own_query): own})
    plain = observe(got).targets["llama"]
    assert plain.latency_samples == ((1000.0, 0.02), (1600.0, 0.03))
    mine = observe(got, [target("llama", metrics={"tokenRateQuery": own_query})]
                   ).targets["llama"]
    assert mine.token_rate_samples[-1][1] == 1000.0
    assert mine.latency_samples == ((500.0, 0.02), (800.0, 0.03))
    # no ratio this window (the engine's rate not answered for its pods, or the target
    # idle): the pairs stay as they are, never none (no service model: held as an outage)
    alone = answers(itl=itl, itl_rate=itl_rate, overrides={("rate", own_query): own})
    idle = answers(rate=engine, itl=itl, itl_rate=itl_rate,
                   overrides={("rate", own_query): [pod(POD_A, (60, 0.0), (30, 0.0))]})
    for got in (alone, idle):
        assert observe(got, [target("llama", metrics={"tokenRateQuery": own_query})]
                       ).targets["llama"].latency_samples == ((1000.0, 0.02), (1600.0, 0.03))


def test_an_older_sample_that_is_not_a_number_is_left_out_and_the_plan_goes_on() -> None:
    """A NaN in the middle of the window (a user query's 0/0) is dropped; before, the trend
    through it made the need NaN and the plan raised."""
    from tokenscale.core.planner import plan as plan_budget
    from tokenscale.core.types import Memory

    got = answers(rate=[pod(POD_A, (90, 1000.0), (60, NAN), (30, 1100.0), (5, 1200.0))])
    llama = observe(got).targets["llama"]
    assert [v for _, v in llama.token_rate_samples] == [1000.0, 1100.0, 1200.0]
    assert llama.metrics_error is None
    result = plan_budget(spec(planning={"forecastWindowSeconds": 600}), observe(got), Memory(),
                         datetime.fromtimestamp(AT, UTC))
    assert result.decisions["llama"].replicas >= 1
