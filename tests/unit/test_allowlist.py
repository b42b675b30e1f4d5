"""The Prometheus allowlist (issue 18), the answer limits and how a refused spec is kept."""

from __future__ import annotations

import json

import pytest
from core_world import target
from pydantic import ValidationError

from tokenscale import api
from tokenscale.adapters.prometheus import (
    AnswerLimits,
    MetricFailure,
    decode_answer,
    parse_result,
)
from tokenscale.allowlist import SETTING, PrometheusAllowlist, canonical
from tokenscale.metrics import OperatorMetrics
from tokenscale.registry import BudgetRegistry
from tokenscale.settings import OperatorSettings

OWN = "http://prometheus.monitoring:9090"


@pytest.mark.parametrize(("url", "expected"), [
    ("http://Prometheus.Monitoring:9090/", "http://prometheus.monitoring:9090"),
    ("HTTPS://thanos/q/", "https://thanos:443/q"),
    ("http://[fd00::1]:9090", "http://[fd00::1]:9090"),
    ("http://169.254.169.254", "http://169.254.169.254:80"),
    ("http://user:pw@prometheus.monitoring:9090", None),  # userinfo
    ("http://prometheus.monitoring:9090@evil.example", None),
    ("http://evil.example#@prometheus.monitoring:9090", None),
    ("http://prometheus.monitoring:9090/?x=1", None),
    ("http://prometheus.monitoring:9090/a/../b", None),
    ("http://prometheus.monitoring:9090/a/%2e%2e/b", None),
    ("http://prometheus.monitoring:9090//evil.example", None),
    ("http://prometheus.monitoring:9090\\@evil.example", None),
    ("http://prometheus.monitoring:99999", None),
    ("http://prometheus.monitoring:", None),
    ("http://prom\u202e.evil", None),
    ("file:///etc/passwd", None),
    ("gopher://prometheus.monitoring:9090", None),
    ("", None),
])
def test_canonical(url: str, expected: str | None) -> None:
    assert canonical(url) == expected


def test_only_the_operators_own_prometheus_by_default() -> None:
    allow = PrometheusAllowlist(OWN)
    assert allow.resolve(None) == allow.resolve("") == OWN
    assert allow.resolve("http://PROMETHEUS.monitoring:9090/") == OWN
    for url in ("http://169.254.169.254", "http://kubernetes.default:443",
                "http://prometheus.monitoring:9091", "http://prometheus.monitoring:9090/x"):
        assert allow.resolve(url) is None, url
        problem = allow.problem(url)
        assert problem is not None and SETTING in problem and "spec.prometheus.url" in problem
        assert OWN in problem  # says which ones are allowed
    assert allow.problem(OWN) is None


def test_listed_urls_prefixes_and_any() -> None:
    allow = PrometheusAllowlist(OWN, ["http://thanos:9090", "http://mimir:8080/prometheus/*"])
    assert allow.resolve("http://thanos:9090/") == "http://thanos:9090"
    assert allow.resolve("http://thanos:9090/x") is None
    assert allow.resolve("http://mimir:8080/prometheus") == "http://mimir:8080/prometheus"
    assert allow.resolve("http://mimir:8080/prometheus/t1") == "http://mimir:8080/prometheus/t1"
    assert allow.resolve("http://mimir:8080/prometheusx") is None
    assert allow.resolve("http://mimir:8080/prometheus/../admin") is None
    anything = PrometheusAllowlist(OWN, ["*"])
    assert anything.resolve("http://169.254.169.254") == "http://169.254.169.254:80"
    assert anything.resolve("http://a@b") is None  # still only plain base URLs


def test_the_setting_is_comma_separated_and_checked() -> None:
    s = OperatorSettings(prometheus_allowed_urls=" http://Thanos:9090/ , http://m/p/* ,")
    assert s.prometheus_allowed_urls == ["http://thanos:9090", "http://m:80/p/*"]
    assert OperatorSettings().prometheus_allowed_urls == []
    with pytest.raises(ValidationError, match="not an http"):
        OperatorSettings(prometheus_allowed_urls="thanos:9090")


def test_a_spec_naming_another_prometheus_is_invalid_and_never_planned() -> None:
    allow = PrometheusAllowlist(OWN)

    def problems(spec: api.TokenBudgetSpec) -> list[str]:
        found = allow.problem(spec.prometheus.url)
        return [found] if found else []

    registry = BudgetRegistry(OperatorMetrics(), lambda: 1000.0, problems)
    spec = {"budget": {"period": "Day", "maxCost": 100}, "targets": [target()],
            "prometheus": {"url": "http://169.254.169.254"}}
    body = {"metadata": {"namespace": "ns", "name": "b"}, "spec": spec}
    entry = registry.on_event("ADDED", body)
    assert entry is not None and entry.spec is None
    assert SETTING in entry.problems[0]
    assert registry.valid() == [] and registry.due(10**12) == []
    body["spec"] = {**spec, "prometheus": {"url": OWN}}
    entry = registry.on_event("MODIFIED", body)
    assert entry is not None and entry.spec is not None and entry.problems == []


def _series(n: int, points: int) -> list[dict[str, object]]:
    return [{"metric": {"pod": f"p{i}"}, "values": [[t, "1"] for t in range(points)]}
            for i in range(n)]


def test_answer_limits() -> None:
    limits = AnswerLimits(max_series=3, max_points=10)
    assert len(parse_result(_series(3, 3), limits)) == 3
    assert len(parse_result(_series(100, 100))) == 100  # the operator's own: unbounded
    for result, kind in ((_series(4, 1), "TooManySeries"), (_series(2, 6), "TooManyPoints")):
        with pytest.raises(MetricFailure) as info:
            parse_result(result, limits)
        assert info.value.kind == kind
    assert limits.max_bytes >= 10 * 200


def test_samples_are_parsed_while_the_answer_is_decoded() -> None:
    """decode_answer turns each series' samples into (time, value) tuples inside the JSON
    decoder (the raw lists of a large answer never all exist at once) and gives the same
    series as parsing the plain answer; a bad sample is still BadResponse."""
    result = [*_series(3, 4), {"metric": {"pod": "q"}, "value": [5, "+Inf"]}]
    body = json.dumps({"status": "success", "data": {"resultType": "matrix",
                                                      "result": result}})
    decoded = decode_answer(body.encode())
    assert decoded[0]["values"] == ((0.0, 1.0), (1.0, 1.0), (2.0, 1.0), (3.0, 1.0))
    assert parse_result(decoded) == parse_result(result)
    limits = AnswerLimits(max_series=10, max_points=10)
    with pytest.raises(MetricFailure) as too_many:
        parse_result(decode_answer(body), limits)
    assert too_many.value.kind == "TooManyPoints"
    bad = body.replace('[2, "1"]', '[2, "one"]')
    with pytest.raises(MetricFailure) as info:
        decode_answer(bad)
    assert info.value.kind == "BadResponse"


async def test_the_reads_never_query_a_url_off_the_allowlist() -> None:
    """The second line: a spec that got past the registry is answered NotAllowed at once."""
    from tokenscale.prometheus_reads import PrometheusReads
    from tokenscale.registry import BudgetEntry

    metrics = OperatorMetrics()
    reads = PrometheusReads(OperatorSettings(prometheus_url=OWN), metrics)
    spec = api.parse_spec({"budget": {"period": "Day", "maxCost": 100},
                           "targets": [target(metrics={"queueQuery": "up"})],
                           "prometheus": {"url": "http://169.254.169.254"}})
    entry = BudgetEntry(namespace="ns", name="b", body={}, spec=spec)
    try:
        answers = (await reads.read([entry], 1000.0))["http://169.254.169.254"]
        await reads.settle(answers, spec)
    finally:
        reads.close()
    for answer in (answers.rate, answers.queue, *answers.overrides.values()):
        assert isinstance(answer, MetricFailure) and answer.kind == "NotAllowed"
    assert metrics.prometheus_queries.labels("instant")._value.get() == 0
    assert metrics.prometheus_queries.labels("range")._value.get() == 0
