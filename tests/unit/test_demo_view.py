"""The demo's live view shows what the operator reports of each target's service."""

from __future__ import annotations

from tokenscale.demo.record import TargetTrack, latency_text
from tokenscale.demo.view import _target_line


def test_the_reported_latency_reads_as_words() -> None:
    assert latency_text({"interTokenLatencySeconds": 0.0321, "ttftSeconds": 0.414}) == \
        "ITL 32 ms, TTFT 0.41 s"
    assert latency_text({"interTokenLatencySeconds": 0.05}) == "ITL 50 ms"
    assert latency_text({}) == ""


def test_a_target_line_shows_service_model_latency_slo_and_admission() -> None:
    track = TargetTrack(budget="b", name="chat", kind="Deployment", source="trace",
                        capacity=3000.0, t=[1.0], replicas=[3], ready=[3], demand=[5000.0],
                        served=[4800.0], observed=[4700.0], desired=[4],
                        service="Fitted 2,870", latency="ITL 32 ms, TTFT 0.41 s",
                        attainment=0.991, admission=4500.0)
    line = _target_line(track)
    for part in ("3/3 -> 4", "capacity/replica Fitted 2,870", "ITL 32 ms, TTFT 0.41 s",
                 "SLO 99.1%", "admit"):
        assert part in line, line
