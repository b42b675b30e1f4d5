"""Trace loaders: real LLM request traces as per-request arrays or aggregate rate windows.

``load_trace(path) -> Trace`` detects the format by content (not by file name):

- **Azure 2023** CSV, header ``TIMESTAMP,ContextTokens,GeneratedTokens`` (timestamps without a
  zone, made relative to the first row);
- **Mooncake** JSON lines ``{"timestamp": ms, "input_length", "output_length", ...}``;
- **ServeGen aggregate** CSV ``window_start_s,total_rps,est_input_tok_per_s,
  est_output_tok_per_s,rps_with_token_pmf`` (600 s windows of rates);
- **generic** CSV with header ``timestamp_s,input_tokens,output_tokens``.

A request trace (``kind == "requests"``) holds per-request ``time_s`` (s since trace start),
``input_tokens`` and ``output_tokens``. A window trace (``kind == "windows"``) holds per-window
start (s), length (s), request rate (req/s) and input/output token rates (tokens/s).

ServeGen token columns are estimates covering only part of the requests (see the traces README):
we take the tokens *per request* of the covered part (``est_*_tok_per_s / rps_with_token_pmf``)
and apply them to the exact ``total_rps``; so the token rate of a window is ``total_rps`` ×
estimated tokens per request.

**Work tokens.** How tokens count against replica capacity is one knob, ``prefill_weight``:
work = output tokens + ``prefill_weight`` × input tokens. The default 1.0 counts every token
once, which is what the operator's default token-rate query (prompt + generation tokens of vLLM)
reports, so the planner's tokens/s and ``tokensPerReplicaPerSecond`` are in the same unit.

**Per-second arrivals.** :meth:`Trace.arrivals` gives work tokens per step. A request trace is
binned exactly. A window trace has no per-request data, so arrivals are synthesised: request
counts per step are Poisson with the window's mean (numpy ``default_rng(seed)``, fixed seed ⇒
reproducible), each request carrying the window's mean work tokens.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
GENERIC_HEADER = ("timestamp_s", "input_tokens", "output_tokens")
SERVEGEN_HEADER = (
    "window_start_s",
    "total_rps",
    "est_input_tok_per_s",
    "est_output_tok_per_s",
    "rps_with_token_pmf",
)
TraceFormat = Literal["azure", "mooncake", "servegen", "generic"]


class TraceError(ValueError):
    """A file that is not one of the supported trace formats, or a broken row."""


@dataclass(frozen=True)
class Trace:
    """A workload trace. Times in s since trace start; rates in req/s and tokens/s."""

    name: str
    format: TraceFormat
    kind: Literal["requests", "windows"]
    duration_s: float
    # kind == "requests"
    time_s: FloatArray | None = None
    input_tokens: FloatArray | None = None
    output_tokens: FloatArray | None = None
    # kind == "windows"
    window_start_s: FloatArray | None = None
    window_s: float = 0.0
    request_rate: FloatArray | None = None  # req/s per window
    input_rate: FloatArray | None = None  # input tokens/s per window
    output_rate: FloatArray | None = None  # output tokens/s per window

    # ------------------------------------------------------------------ summaries

    @property
    def requests(self) -> float:
        """Number of requests (expected number for a window trace)."""
        if self.kind == "requests":
            assert self.time_s is not None
            return float(len(self.time_s))
        assert self.request_rate is not None
        return float(self.request_rate.sum() * self.window_s)

    def total_tokens(self, prefill_weight: float = 1.0) -> float:
        """Work tokens of the whole trace (output + prefill_weight × input)."""
        if self.kind == "requests":
            assert self.input_tokens is not None and self.output_tokens is not None
            return float(self.output_tokens.sum() + prefill_weight * self.input_tokens.sum())
        assert self.input_rate is not None and self.output_rate is not None
        return float((self.output_rate + prefill_weight * self.input_rate).sum() * self.window_s)

    def tokens_per_request(self, prefill_weight: float = 1.0) -> float:
        """Mean work tokens per request."""
        n = self.requests
        return self.total_tokens(prefill_weight) / n if n > 0 else 0.0

    # ------------------------------------------------------------------ transforms

    def scaled(self, factor: float) -> Trace:
        """Demand × ``factor`` (token volume per request for request traces, request rate for
        window traces); arrival times unchanged, so second-scale burstiness is kept."""
        if factor <= 0:
            raise ValueError("scale factor must be > 0")
        if self.kind == "requests":
            assert self.input_tokens is not None and self.output_tokens is not None
            return replace(
                self,
                input_tokens=self.input_tokens * factor,
                output_tokens=self.output_tokens * factor,
            )
        assert self.request_rate is not None
        assert self.input_rate is not None and self.output_rate is not None
        return replace(
            self,
            request_rate=self.request_rate * factor,
            input_rate=self.input_rate * factor,
            output_rate=self.output_rate * factor,
        )

    def replicated(self, factor: float, seed: int = 0) -> Trace:
        """Demand × ``factor`` by request rate, requests unchanged: each request of a request
        trace arrives ``factor`` times on average (floor(factor) copies, one more with the
        fractional probability), the copies jittered uniformly within ±1 s, so the load curve
        and the prompt/output lengths (hence the latencies) are kept. Window traces scale their
        rates (their requests are synthesised anyway)."""
        if factor <= 0:
            raise ValueError("scale factor must be > 0")
        if self.kind != "requests" or factor == 1:
            return self.scaled(factor) if self.kind != "requests" else self
        assert self.time_s is not None
        assert self.input_tokens is not None and self.output_tokens is not None
        rng = np.random.default_rng(seed)
        whole = math.floor(factor)
        copies = whole + (rng.random(len(self.time_s)) < factor - whole)
        idx = np.repeat(np.arange(len(self.time_s)), copies)
        jitter = np.where(np.arange(len(idx)) == np.searchsorted(idx, idx), 0.0,
                          rng.uniform(-1.0, 1.0, len(idx)))  # the first copy keeps its time
        times = np.clip(self.time_s[idx] + jitter, 0.0, max(self.duration_s - 1e-6, 0.0))
        order = np.argsort(times, kind="stable")
        return replace(self, time_s=times[order], input_tokens=self.input_tokens[idx][order],
                       output_tokens=self.output_tokens[idx][order])

    def compressed(self, speedup: float) -> Trace:
        """Time compressed ``speedup``-fold: the same requests arrive ``speedup`` × faster."""
        if speedup <= 0:
            raise ValueError("speedup must be > 0")
        if speedup == 1:
            return self
        if self.kind == "requests":
            assert self.time_s is not None
            return replace(self, time_s=self.time_s / speedup, duration_s=self.duration_s / speedup)
        assert self.window_start_s is not None
        assert self.request_rate is not None
        assert self.input_rate is not None and self.output_rate is not None
        return replace(
            self,
            duration_s=self.duration_s / speedup,
            window_start_s=self.window_start_s / speedup,
            window_s=self.window_s / speedup,
            request_rate=self.request_rate * speedup,
            input_rate=self.input_rate * speedup,
            output_rate=self.output_rate * speedup,
        )

    def sliced(self, start_s: float, duration_s: float) -> Trace:
        """The part ``[start_s, start_s + duration_s)``, re-based to start at 0."""
        end = start_s + duration_s
        if self.kind == "requests":
            assert self.time_s is not None
            assert self.input_tokens is not None and self.output_tokens is not None
            keep = (self.time_s >= start_s) & (self.time_s < end)
            return replace(
                self,
                duration_s=min(duration_s, max(0.0, self.duration_s - start_s)),
                time_s=self.time_s[keep] - start_s,
                input_tokens=self.input_tokens[keep],
                output_tokens=self.output_tokens[keep],
            )
        assert self.window_start_s is not None and self.request_rate is not None
        assert self.input_rate is not None and self.output_rate is not None
        keep = (self.window_start_s + self.window_s > start_s) & (self.window_start_s < end)
        starts = np.maximum(self.window_start_s[keep] - start_s, 0.0)
        # a window cut at the slice start keeps its rates; only the grid shifts
        return replace(
            self,
            duration_s=min(duration_s, max(0.0, self.duration_s - start_s)),
            window_start_s=starts,
            request_rate=self.request_rate[keep],
            input_rate=self.input_rate[keep],
            output_rate=self.output_rate[keep],
        )

    # ------------------------------------------------------------------ series

    def steps(self, step_s: float) -> int:
        """Number of steps of ``step_s`` seconds covering the trace."""
        return max(1, math.ceil(self.duration_s / step_s - 1e-9))

    def _window_work_rate(self, prefill_weight: float) -> FloatArray:
        assert self.input_rate is not None and self.output_rate is not None
        return self.output_rate + prefill_weight * self.input_rate

    def _window_index(self, steps: int, step_s: float) -> npt.NDArray[np.int64]:
        """For each step, the window containing the step's start."""
        assert self.window_start_s is not None
        t = np.arange(steps, dtype=np.float64) * step_s
        idx = np.searchsorted(self.window_start_s, t, side="right") - 1
        return np.clip(idx, 0, len(self.window_start_s) - 1).astype(np.int64)

    def rate_series(self, step_s: float, prefill_weight: float = 1.0) -> FloatArray:
        """Mean demand in work tokens/s per step of ``step_s`` seconds (deterministic)."""
        n = self.steps(step_s)
        if self.kind == "requests":
            assert self.time_s is not None
            assert self.input_tokens is not None and self.output_tokens is not None
            work = self.output_tokens + prefill_weight * self.input_tokens
            idx = np.minimum((self.time_s / step_s).astype(np.int64), n - 1)
            return np.bincount(idx, weights=work, minlength=n).astype(np.float64) / step_s
        if self.window_start_s is None or len(self.window_start_s) == 0:
            return np.zeros(n)
        rates = self._window_work_rate(prefill_weight)
        return rates[self._window_index(n, step_s)].astype(np.float64)

    def arrivals(
        self, step_s: float = 1.0, prefill_weight: float = 1.0, seed: int = 0
    ) -> FloatArray:
        """Work tokens arriving in each step; window traces get Poisson-synthesised requests."""
        n = self.steps(step_s)
        if self.kind == "requests":
            return self.rate_series(step_s, prefill_weight) * step_s
        if self.window_start_s is None or len(self.window_start_s) == 0:
            return np.zeros(n)
        assert self.request_rate is not None
        idx = self._window_index(n, step_s)
        req_rate = self.request_rate
        work_rate = self._window_work_rate(prefill_weight)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_request = np.where(req_rate > 0, work_rate / req_rate, 0.0)
        counts = np.random.default_rng(seed).poisson(req_rate[idx] * step_s)
        return counts.astype(np.float64) * per_request[idx]


# ---------------------------------------------------------------------- loading


def _first_line(path: Path) -> str:
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                return line.strip()
    raise TraceError(f"{path}: empty file")


def detect_format(path: str | Path) -> TraceFormat:
    """The trace format of ``path``, read from its first non-empty line."""
    first = _first_line(Path(path))
    if first.startswith("{"):
        try:
            obj = json.loads(first)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{path}: first line is not JSON: {exc}") from None
        if isinstance(obj, dict) and {"timestamp", "input_length", "output_length"} <= set(obj):
            return "mooncake"
        raise TraceError(f"{path}: JSON lines without timestamp/input_length/output_length")
    header = tuple(h.strip() for h in first.lstrip("\ufeff").split(","))
    if header[:3] == AZURE_HEADER:
        return "azure"
    if header[:5] == SERVEGEN_HEADER:
        return "servegen"
    if header[:3] == GENERIC_HEADER:
        return "generic"
    raise TraceError(
        f"{path}: unknown trace format (header {first[:80]!r}); expected Azure, Mooncake, "
        "ServeGen aggregate or 'timestamp_s,input_tokens,output_tokens'"
    )


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for lineno, row in enumerate(reader, start=2):
            if row and any(cell.strip() for cell in row):
                yield lineno, row


def _requests_trace(
    name: str, fmt: TraceFormat, times: list[float], inp: list[float], out: list[float]
) -> Trace:
    t = np.asarray(times, dtype=np.float64)
    i = np.asarray(inp, dtype=np.float64)
    o = np.asarray(out, dtype=np.float64)
    if len(t) == 0:
        raise TraceError(f"{name}: no requests")
    if np.any(i < 0) or np.any(o < 0) or not np.all(np.isfinite(t)):
        raise TraceError(f"{name}: negative token counts or non-finite times")
    order = np.argsort(t, kind="stable")
    t, i, o = t[order], i[order], o[order]
    t = t - t[0]
    # the last request still takes one second of the trace
    return Trace(name=name, format=fmt, kind="requests", duration_s=float(t[-1]) + 1.0,
                 time_s=t, input_tokens=i, output_tokens=o)


def _load_azure(path: Path) -> Trace:
    times, inp, out = [], [], []
    for lineno, row in _csv_rows(path):
        try:
            stamp = row[0].strip()
            head, _, frac = stamp.partition(".")
            base = datetime.fromisoformat(head)
            times.append(base.timestamp() + (float("0." + frac) if frac else 0.0))
            inp.append(float(row[1]))
            out.append(float(row[2]))
        except (ValueError, IndexError) as exc:
            raise TraceError(f"{path}:{lineno}: bad Azure row {row!r}: {exc}") from None
    return _requests_trace(path.name, "azure", times, inp, out)


def _load_generic(path: Path) -> Trace:
    times, inp, out = [], [], []
    for lineno, row in _csv_rows(path):
        try:
            times.append(float(row[0]))
            inp.append(float(row[1]))
            out.append(float(row[2]))
        except (ValueError, IndexError) as exc:
            raise TraceError(f"{path}:{lineno}: bad row {row!r}: {exc}") from None
    return _requests_trace(path.name, "generic", times, inp, out)


def _load_mooncake(path: Path) -> Trace:
    times, inp, out = [], [], []
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                times.append(float(obj["timestamp"]) / 1000.0)
                inp.append(float(obj["input_length"]))
                out.append(float(obj["output_length"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise TraceError(f"{path}:{lineno}: bad Mooncake line: {exc}") from None
    return _requests_trace(path.name, "mooncake", times, inp, out)


def _load_servegen(path: Path) -> Trace:
    rows: list[tuple[float, float, float, float, float]] = []
    for lineno, row in _csv_rows(path):
        try:
            start, rps, est_in, est_out, rps_pmf = (float(x) for x in row[:5])
        except ValueError as exc:
            raise TraceError(f"{path}:{lineno}: bad ServeGen row {row!r}: {exc}") from None
        if min(rps, est_in, est_out, rps_pmf) < 0:
            raise TraceError(f"{path}:{lineno}: negative rate")
        rows.append((start, rps, est_in, est_out, rps_pmf))
    if not rows:
        raise TraceError(f"{path}: no windows")
    arr = np.asarray(sorted(rows), dtype=np.float64)
    start, rps, est_in, est_out, rps_pmf = arr.T
    start = start - start[0]
    window = float(np.median(np.diff(start))) if len(start) > 1 else 600.0
    # tokens per request of the covered part; windows without coverage use the trace mean
    covered = rps_pmf > 0
    mean_in = est_in[covered].sum() / rps_pmf[covered].sum() if covered.any() else 0.0
    mean_out = est_out[covered].sum() / rps_pmf[covered].sum() if covered.any() else 0.0
    safe = np.where(covered, rps_pmf, 1.0)
    in_per_req = np.where(covered, est_in / safe, mean_in)
    out_per_req = np.where(covered, est_out / safe, mean_out)
    return Trace(
        name=path.name, format="servegen", kind="windows",
        duration_s=float(start[-1]) + window,
        window_start_s=start, window_s=window, request_rate=rps,
        input_rate=rps * in_per_req, output_rate=rps * out_per_req,
    )


def load_trace(path: str | Path) -> Trace:
    """Load a trace file; the format is detected by content (see the module docstring)."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "azure":
        return _load_azure(p)
    if fmt == "mooncake":
        return _load_mooncake(p)
    if fmt == "servegen":
        return _load_servegen(p)
    return _load_generic(p)
