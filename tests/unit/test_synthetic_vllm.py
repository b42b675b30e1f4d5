"""The scale benchmark's synthetic vLLM pods: token counters, queue and, unless left out, the
latency histograms' _sum and _count whose means the operator reads."""

from __future__ import annotations

import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from synthetic_vllm import (
    GENERATION,
    ITL,
    ITL_SECONDS,
    PROMPT,
    TTFT,
    TTFT_SECONDS,
    WAITING,
    PodLoad,
    SyntheticFleet,
)

PODS = [PodLoad("team-1", "chat-0", 1000.0), PodLoad("team-1", "code-0", 500.0)]


def _values(text: str) -> dict[tuple[str, str], float]:
    """(series name, pod) -> value of a text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, labels = series.split("{", 1)
        pod = labels.split('pod="', 1)[1].split('"', 1)[0]
        out[(name, pod)] = float(value)
    return out


def test_the_pods_latency_means_and_token_rates_are_the_synthetic_engines() -> None:
    fleet = SyntheticFleet(PODS, origin=0.0)
    early, late = _values(fleet.exposition(100.0)), _values(fleet.exposition(160.0))

    def rate(name: str, pod: str) -> float:
        return (late[(name, pod)] - early[(name, pod)]) / 60.0

    for pod in PODS:
        tokens = rate(PROMPT, pod.pod) + rate(GENERATION, pod.pod)
        assert abs(tokens - pod.tokens_per_second) < 1e-6
        itl = rate(f"{ITL}_sum", pod.pod) / rate(f"{ITL}_count", pod.pod)
        ttft = rate(f"{TTFT}_sum", pod.pod) / rate(f"{TTFT}_count", pod.pod)
        assert abs(itl - ITL_SECONDS) < 1e-6
        assert abs(ttft - TTFT_SECONDS) < 1e-3
        assert late[(WAITING, pod.pod)] == 0
    assert fleet.series_per_pod() == 7


def test_without_latency_the_pods_export_tokens_and_queue_only() -> None:
    fleet = SyntheticFleet(PODS, origin=0.0, latency=False)
    names = {name for name, _ in _values(fleet.exposition(100.0))}
    assert names == {PROMPT, GENERATION, WAITING}
    assert fleet.series_per_pod() == 3


def test_the_history_holds_every_counter_family_contiguously() -> None:
    fleet = SyntheticFleet(PODS, origin=0.0)
    out = io.StringIO()
    written = fleet.write_history(out, [15.0, 30.0], 'job="testbed"')
    lines = out.getvalue().splitlines()
    assert lines[-1] == "# EOF"
    assert written == len(lines) - 1 == 6 * len(PODS) * 2
    families = [line.split("{", 1)[0] for line in lines[:-1]]
    order = list(dict.fromkeys(families))
    assert families == sorted(families, key=order.index)  # each family in one run
    assert {f"{ITL}_sum", f"{TTFT}_count"} <= set(order)
