"""Replicas that behave like continuous-batching engines, and the SLO counted per request.

**Engine model** (one replica of vLLM serving an 8B model on one H100; every figure is a
setting). A replica spends ``1 / prefill_tokens_per_s`` engine-seconds per prompt token and
``1 / decode_tokens_per_s`` per output token, so its work in *decode-equivalent tokens* is
``output + input × decode/prefill`` (the simulator's work tokens, ``prefill_weight`` =
decode/prefill) and its raw capacity is ``decode_tokens_per_s`` work tokens/s. Continuous
batching makes latency grow with the load: at utilisation ``u`` (work served ÷ ready capacity
in a second) the decode batch holds more sequences and each step takes longer,

    inter-token latency  ITL(u) = itl_floor / (1 - u),  capped at itl_floor + max_batch / decode

(the cap is a full batch: beyond it requests wait in the engine's queue). So a replica cannot
run near 100 % within an ITL target: it delivers ``u_slo = 1 - itl_floor / ITL_target`` of its
raw capacity within the SLO (``capacity_within_slo``).

Calibration (BENCHMARKS.md cites the sources): ``decode_tokens_per_s`` = 3,800 gives 3,400
output tokens/s at a full batch of 256, the published vLLM 0.5.4 throughput of Llama-3.1-8B on
one H100 (traces README, LambdaLabsML/vllm-benchmark); ``itl_floor_s`` = 8 ms (an 8B decode step
at batch 1 on an H100: 16 GB of weights read at ~2-3 TB/s); ``prefill_tokens_per_s`` = 16,000
(an assumption: 2 × 8e9 FLOP per token at ~30 % of the H100's 989 dense BF16 TFLOP/s).

**Per-request SLO.** A request arriving at ``t`` waits for the work queued ahead of it
(``q / (ready × decode)``, FIFO, fluid), then its prompt is prefilled (``input / prefill``) and its
first token comes one decode step later: ``TTFT = wait + input/prefill + ITL``. Its mean ITL is
the mean ITL of the seconds it is decoded in (``output × ITL target`` seconds from its start of
service, 1 to 120 s). It meets the SLO when
``TTFT ≤ ttftSeconds`` and ``ITL ≤ interTokenLatencySeconds``. Requests rejected at admission are
*shed*: they count against attainment, never as late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tokenscale.api import SloSpec
from tokenscale.sim.traces import Trace

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class EngineModel:
    """One continuous-batching replica. Rates in tokens/s, times in s."""

    decode_tokens_per_s: float = 3800.0
    prefill_tokens_per_s: float = 16000.0
    itl_floor_s: float = 0.008
    max_batch: int = 256

    @property
    def prefill_weight(self) -> float:
        """Decode-equivalent work of one prompt token."""
        return self.decode_tokens_per_s / self.prefill_tokens_per_s

    @property
    def itl_max_s(self) -> float:
        """The inter-token latency of a full batch (s)."""
        return self.itl_floor_s + self.max_batch / self.decode_tokens_per_s

    def itl(self, utilization: FloatArray) -> FloatArray:
        """Inter-token latency (s) at utilisation ``u`` in [0, 1] (1: saturated, full batch)."""
        u = np.clip(utilization, 0.0, 1.0)
        with np.errstate(divide="ignore"):
            raw = self.itl_floor_s / np.maximum(1.0 - u, 1e-12)
        return np.asarray(np.minimum(raw, self.itl_max_s), dtype=np.float64)

    def kv_usage(self, utilization: FloatArray) -> FloatArray:
        """Share of the KV cache in use: running sequences (Little: throughput × ITL) over a
        full batch; 1 once saturated."""
        u = np.clip(utilization, 0.0, 1.0)
        running = u * self.decode_tokens_per_s * self.itl(u)
        return np.asarray(np.minimum(running / self.max_batch, 1.0), dtype=np.float64)

    def utilization_within(self, slo: SloSpec) -> float:
        """The highest utilisation whose ITL meets the SLO (a share of raw capacity)."""
        if slo.inter_token_latency_seconds >= self.itl_max_s:
            return 1.0
        return max(0.0, 1.0 - self.itl_floor_s / slo.inter_token_latency_seconds)

    def capacity_within_slo(self, slo: SloSpec) -> float:
        """Work tokens/s one replica serves within the SLO's inter-token latency."""
        return self.decode_tokens_per_s * self.utilization_within(slo)


@dataclass(frozen=True)
class Requests:
    """Requests of one target: arrival (s), prompt and output tokens, and a weight (how many
    identical requests the row stands for: 1 for request traces, a Poisson count for the
    synthesised seconds of a window trace)."""

    arrival_s: FloatArray
    input_tokens: FloatArray
    output_tokens: FloatArray
    weight: FloatArray

    @property
    def count(self) -> float:
        """Number of requests."""
        return float(self.weight.sum())

    def work(self, prefill_weight: float) -> FloatArray:
        """Work tokens per row (all the requests it stands for)."""
        return np.asarray(self.weight * (self.output_tokens + prefill_weight * self.input_tokens),
                          dtype=np.float64)

    def arrivals(self, seconds: int, prefill_weight: float) -> FloatArray:
        """Work tokens arriving in each second of ``[0, seconds)``."""
        idx = np.minimum(self.arrival_s.astype(np.int64), seconds - 1)
        return np.bincount(idx, weights=self.work(prefill_weight),
                           minlength=seconds).astype(np.float64)


def requests_of(trace: Trace, seed: int = 0) -> Requests:
    """The requests of ``trace``. Window traces (ServeGen) get Poisson counts per second at a
    rate interpolated linearly between window centres (no steps at window edges), each
    request carrying its window's mean prompt and output tokens (interpolated too)."""
    if trace.kind == "requests":
        assert trace.time_s is not None
        assert trace.input_tokens is not None and trace.output_tokens is not None
        return Requests(trace.time_s.astype(np.float64), trace.input_tokens.astype(np.float64),
                        trace.output_tokens.astype(np.float64), np.ones(len(trace.time_s)))
    assert trace.window_start_s is not None and trace.request_rate is not None
    assert trace.input_rate is not None and trace.output_rate is not None
    n = max(1, math.ceil(trace.duration_s - 1e-9))
    if len(trace.window_start_s) == 0:
        empty = np.zeros(0)
        return Requests(empty, empty, empty, empty)
    centres = trace.window_start_s + trace.window_s / 2.0
    t = np.arange(n, dtype=np.float64) + 0.5
    rps = np.interp(t, centres, trace.request_rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_in = np.where(trace.request_rate > 0, trace.input_rate / trace.request_rate, 0.0)
        per_out = np.where(trace.request_rate > 0, trace.output_rate / trace.request_rate, 0.0)
    counts = np.random.default_rng(seed).poisson(np.maximum(rps, 0.0)).astype(np.float64)
    keep = counts > 0
    return Requests(t[keep], np.interp(t, centres, per_in)[keep],
                    np.interp(t, centres, per_out)[keep], counts[keep])


@dataclass(frozen=True)
class Outcome:
    """Per-request service of one target's run (requests after the warm-up only)."""

    requests: float
    met: float  # requests within the SLO
    shed: float  # requests rejected at admission
    goodput_tokens: float  # prompt + output tokens of the requests within the SLO
    tokens: float  # prompt + output tokens of all requests
    ttft_p50_s: float
    ttft_p99_s: float
    itl_p50_s: float

    @property
    def attainment(self) -> float:
        """Share of requests within the SLO (1 without requests)."""
        return self.met / self.requests if self.requests > 0 else 1.0

    @property
    def shed_share(self) -> float:
        """Share of requests shed at admission."""
        return self.shed / self.requests if self.requests > 0 else 0.0


def _weighted_quantile(x: FloatArray, w: FloatArray, q: float) -> float:
    if len(x) == 0 or w.sum() <= 0:
        return 0.0
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    i = int(np.searchsorted(cum, q * cum[-1]))
    return float(x[order][min(i, len(x) - 1)])


def request_outcome(
    req: Requests, arrivals: FloatArray, ready: IntArray, queue: FloatArray,
    engine: EngineModel, slo: SloSpec, warmup_s: float = 0.0,
    admitted: FloatArray | None = None,
) -> Outcome:
    """Count the requests of one run within the SLO (see the module docstring).

    ``arrivals``, ``ready`` and ``queue`` are the run's per-second work arrivals (admitted
    work only), ready replicas and queued work at the end of each second; ``admitted`` is the
    share of each second's requests let in (None: all).
    """
    n = len(queue)
    cap = ready.astype(np.float64) * engine.decode_tokens_per_s
    prev = np.concatenate([[0.0], queue[:-1]])
    served = arrivals + prev - queue
    with np.errstate(divide="ignore", invalid="ignore"):
        util = np.where(cap > 0, served / cap, 1.0)
    itl_s = np.where(queue > 1e-6 * np.maximum(cap, 1.0), engine.itl_max_s, engine.itl(util))
    keep = req.arrival_s >= warmup_s
    sec = np.minimum(req.arrival_s[keep].astype(np.int64), n - 1)
    w = req.weight[keep]
    ahead = (prev[sec] + queue[sec]) / 2.0  # work queued ahead, mean over the second
    with np.errstate(divide="ignore", invalid="ignore"):
        wait = np.where(cap[sec] > 0, ahead / cap[sec], np.inf)
    start = np.minimum(sec + np.ceil(np.nan_to_num(wait, posinf=n)).astype(np.int64), n - 1)
    # its mean ITL: over the seconds it is decoded in (output × ITL target, 1-120 s)
    span = np.clip(np.ceil(req.output_tokens[keep] * slo.inter_token_latency_seconds),
                   1, 120).astype(np.int64)
    end = np.minimum(start + span, n)
    running = np.concatenate([[0.0], np.cumsum(itl_s)])
    itl = (running[end] - running[start]) / np.maximum(end - start, 1)
    ttft = wait + req.input_tokens[keep] / engine.prefill_tokens_per_s + itl_s[start]
    share = np.ones(len(sec)) if admitted is None else admitted[sec]
    ok = (ttft <= slo.ttft_seconds) & (itl <= slo.inter_token_latency_seconds)
    tokens = req.input_tokens[keep] + req.output_tokens[keep]
    finite = np.isfinite(ttft)
    return Outcome(
        requests=float(w.sum()),
        met=float((w * share * ok).sum()),
        shed=float((w * (1.0 - share)).sum()),
        goodput_tokens=float((w * share * ok * tokens).sum()),
        tokens=float((w * tokens).sum()),
        ttft_p50_s=_weighted_quantile(ttft[finite], (w * share)[finite], 0.5),
        ttft_p99_s=_weighted_quantile(ttft[finite], (w * share)[finite], 0.99),
        itl_p50_s=_weighted_quantile(itl, w * share, 0.5),
    )
