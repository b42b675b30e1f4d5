"""Trace loaders: every format parses (real files and tiny hand-made ones), series add up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokenscale.sim.traces import TraceError, detect_format, load_trace

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "traces"
REAL = sorted([*SHARED.glob("*.csv"), *SHARED.glob("*.jsonl")]) if SHARED.is_dir() else []
EXPECTED = {
    "azure2023_AzureLLMInferenceTrace_code.csv": ("azure", 8819),
    "azure2023_AzureLLMInferenceTrace_conv.csv": ("azure", 19366),
    "mooncake_fast25_conversation_trace.jsonl": ("mooncake", 12031),
    "servegen_m-large_aggregate_10min.csv": ("servegen", 2016),
    "servegen_m-mid_aggregate_10min.csv": ("servegen", 2016),
    "servegen_m-small_aggregate_10min.csv": ("servegen", 2016),
    "servegen_deepseek-r1_aggregate_10min.csv": ("servegen", 144),
}


@pytest.mark.skipif(not REAL, reason="../shared/traces not present")
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_every_real_trace_parses(path: Path) -> None:
    trace = load_trace(path)
    fmt, rows = EXPECTED[path.name]
    assert trace.format == fmt
    if trace.kind == "requests":
        assert trace.time_s is not None and len(trace.time_s) == rows
        assert np.all(np.diff(trace.time_s) >= 0) and trace.time_s[0] == 0
        assert 50 * 60 < trace.duration_s < 61 * 60  # the ~1 h request traces
    else:
        assert trace.window_start_s is not None and len(trace.window_start_s) == rows
        assert trace.window_s == 600
        assert trace.duration_s == rows * 600
    arrivals = trace.arrivals(1.0)
    assert len(arrivals) == trace.steps(1.0) and np.all(arrivals >= 0)
    assert trace.tokens_per_request() > 0


@pytest.mark.skipif(not REAL, reason="../shared/traces not present")
def test_real_azure_code_shape_matches_readme() -> None:
    trace = load_trace(SHARED / "azure2023_AzureLLMInferenceTrace_code.csv")
    assert trace.input_tokens is not None and trace.output_tokens is not None
    assert trace.input_tokens.mean() == pytest.approx(2048, abs=1)
    assert trace.output_tokens.mean() == pytest.approx(28, abs=1)
    per_minute = trace.rate_series(60.0)
    assert per_minute.max() / per_minute.mean() == pytest.approx(4.26, abs=0.1)


def test_azure_detected_by_content_and_times_relative(tmp_path: Path) -> None:
    p = tmp_path / "weird-name.jsonl"  # the extension lies: content decides
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.5000000,100,10\n"
        "2023-11-16 18:17:03.9799600,200,20\n"
        "2023-11-16 18:17:05.2500000,300,30\n"
    )
    assert detect_format(p) == "azure"
    t = load_trace(p)
    assert t.time_s is not None
    assert t.time_s.tolist() == pytest.approx([0.0, 0.47996, 1.75])
    assert t.duration_s == pytest.approx(2.75)
    # work tokens per 1 s step: all three in seconds 0, 0, 1
    assert t.arrivals(1.0).tolist() == [330.0, 330.0, 0.0]
    assert t.arrivals(1.0, prefill_weight=0.0).tolist() == [30.0, 30.0, 0.0]
    assert t.tokens_per_request() == pytest.approx(220.0)


def test_mooncake_and_generic(tmp_path: Path) -> None:
    m = tmp_path / "a.txt"
    lines = [{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1]},
             {"timestamp": 3000, "input_length": 20, "output_length": 5, "hash_ids": []}]
    m.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    t = load_trace(m)
    assert t.format == "mooncake" and t.kind == "requests"
    assert t.rate_series(1.0).tolist() == [15.0, 0.0, 0.0, 25.0]
    g = tmp_path / "b.csv"
    g.write_text("timestamp_s,input_tokens,output_tokens\n5,1,2\n5.5,3,4\n7,0,1\n")
    t = load_trace(g)
    assert t.format == "generic"
    assert t.arrivals(1.0).tolist() == [10.0, 0.0, 1.0]  # re-based to the first request
    assert t.rate_series(2.0).tolist() == [5.0, 0.5]


def test_servegen_windows_and_poisson_synthesis(tmp_path: Path) -> None:
    p = tmp_path / "sg.csv"
    p.write_text(
        "window_start_s,total_rps,est_input_tok_per_s,est_output_tok_per_s,rps_with_token_pmf\n"
        "0,10,500,100,5\n"  # 100 in + 20 out per covered request -> 1200 tok/s at 10 rps
        "600,20,0,0,0\n"  # no coverage: the trace-wide mean per request (100 + 20)
    )
    t = load_trace(p)
    assert t.format == "servegen" and t.kind == "windows" and t.window_s == 600
    assert t.rate_series(600.0).tolist() == pytest.approx([1200.0, 2400.0])
    assert t.requests == pytest.approx(18000.0)
    a = t.arrivals(1.0, seed=3)
    assert len(a) == 1200
    assert np.all(np.mod(a[:600], 120.0) == 0)  # whole requests of 120 work tokens
    assert a[:600].mean() == pytest.approx(1200.0, rel=0.05)
    assert a[600:].mean() == pytest.approx(2400.0, rel=0.05)
    assert np.array_equal(a, t.arrivals(1.0, seed=3))  # fixed seed: reproducible
    assert not np.array_equal(a, t.arrivals(1.0, seed=4))
    fast = t.compressed(600.0)
    assert fast.duration_s == pytest.approx(2.0)
    assert fast.rate_series(1.0).tolist() == pytest.approx([720000.0, 1440000.0])
    assert t.scaled(0.5).rate_series(600.0).tolist() == pytest.approx([600.0, 1200.0])
    part = t.sliced(300.0, 600.0)
    assert part.rate_series(300.0).tolist() == pytest.approx([1200.0, 2400.0])


def test_transforms_of_request_traces(tmp_path: Path) -> None:
    g = tmp_path / "g.csv"
    g.write_text("timestamp_s,input_tokens,output_tokens\n0,10,0\n4,10,10\n9,0,5\n")
    t = load_trace(g)
    assert t.scaled(2).total_tokens() == 2 * t.total_tokens() == 70
    fast = t.compressed(2)
    assert fast.time_s is not None and fast.time_s.tolist() == [0, 2, 4.5]
    part = t.sliced(3, 5)
    assert part.time_s is not None and part.time_s.tolist() == [1.0]
    assert part.duration_s == 5


@pytest.mark.parametrize("text", [
    "a,b,c\n1,2,3\n",
    "",
    '{"foo": 1}\n',
])
def test_unknown_formats_are_refused(tmp_path: Path, text: str) -> None:
    p = tmp_path / "x.csv"
    p.write_text(text)
    with pytest.raises(TraceError):
        load_trace(p)


def test_broken_rows_name_the_line(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("timestamp_s,input_tokens,output_tokens\n0,1,1\n1,two,1\n")
    with pytest.raises(TraceError, match=":3:"):
        load_trace(p)
