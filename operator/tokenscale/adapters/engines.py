"""What each serving engine publishes on /metrics, as the operator reads it (presets).

A target names its engine (``targets[].engine``); the preset maps the signals the operator
reads to that engine's metric names:

* ``prompt`` and ``generation``: the tokens processed, as counters (or, for TGI, the
  ``_sum`` of per-request histograms, which grows by a request's tokens when it ends);
  the sum of their rates is the target's tokens/s.
* ``queue``: a gauge of requests waiting in the engine.
* ``itl``: histograms of the inter-token latency (s), newest name first; the mean
  ``rate(_sum) / rate(_count)`` feeds the service model's fit and, over the rate window,
  the latency seen now.
* ``ttft``: histograms of the time to first token (s); its mean over the rate window is read
  with the ITL's (the latency seen now, the planner's SLO-breach signal).

The others (``running``, ``kv_usage``) are mapped and documented so a status and the README
name them, but the planner does not read them yet.

Names are written as each engine's documentation spells them (``vllm:…``, ``sglang:…``).
Python engines export through prometheus-client, which since 0.23 writes ``:`` as ``_``
in OpenMetrics output; the queries accept both spellings (:func:`name_regex`).
``custom`` has no preset: its target's own ``metrics.tokenRateQuery`` (and optional
``queueQuery``) are the whole read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class EnginePreset:
    """The metric names of one engine (see the module docstring for each field)."""

    name: str
    versions: str
    prompt: str
    generation: str
    queue: str
    itl: tuple[str, ...]
    ttft: tuple[str, ...] = ()
    running: str = ""
    kv_usage: tuple[str, ...] = ()
    #: how the token counters are derived, when the engine has none (README, status)
    derived: str = ""

    def token_series(self) -> tuple[str, str]:
        """The two series whose rates sum to tokens/s."""
        return self.prompt, self.generation

    def series_read(self) -> tuple[str, ...]:
        """Every metric name the operator reads for a target of this engine (status)."""
        return (self.prompt, self.generation, self.queue, *self.itl, *self.ttft)


VLLM = EnginePreset(
    name="vllm",
    versions="vLLM, V0 and V1 engine names (series renamed in V1 are read under both)",
    prompt="vllm:prompt_tokens_total",
    generation="vllm:generation_tokens_total",
    queue="vllm:num_requests_waiting",
    itl=("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    ttft=("vllm:time_to_first_token_seconds",),
    running="vllm:num_requests_running",
    kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
)

SGLANG = EnginePreset(
    name="sglang",
    versions="SGLang with --enable-metrics (inter_token_latency_seconds of newer releases, "
             "time_per_output_token_seconds of older ones)",
    prompt="sglang:prompt_tokens_total",
    generation="sglang:generation_tokens_total",
    queue="sglang:num_queue_reqs",
    itl=("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    ttft=("sglang:time_to_first_token_seconds",),
    running="sglang:num_running_reqs",
    kv_usage=("sglang:token_usage",),
)

TGI = EnginePreset(
    name="tgi",
    versions="Text Generation Inference 2.x and 3.x (the router's /metrics)",
    prompt="tgi_request_input_length_sum",
    generation="tgi_request_generated_tokens_sum",
    queue="tgi_queue_size",
    itl=("tgi_request_mean_time_per_token_duration",),
    running="tgi_batch_current_size",
    derived="TGI has no token counters: tokens are the _sum of the per-request histograms "
            "tgi_request_input_length and tgi_request_generated_tokens, counted when a "
            "request ends",
)

PRESETS: dict[str, EnginePreset] = {p.name: p for p in (VLLM, SGLANG, TGI)}
#: Every value of ``targets[].engine``.
ENGINES = ("vllm", "sglang", "tgi", "custom")


def preset(engine: str) -> EnginePreset | None:
    """The preset of ``engine``; None for ``custom`` (the target's own queries)."""
    return PRESETS.get(engine)


def name_regex(name: str) -> str:
    """A regex (RE2, for ``__name__=~``) matching ``name`` in both spellings: ``a:b`` and
    ``a_b`` (prometheus-client >= 0.23 in OpenMetrics output)."""
    return "[:_]".join(re.escape(part) for part in name.split(":"))
