"""Synthetic vLLM metrics for thousands of pods from one HTTP endpoint (scale benchmark).

One process serves, for every pod of a list, the counters ``vllm:prompt_tokens_total`` and
``vllm:generation_tokens_total``, the gauge ``vllm:num_requests_waiting`` and (unless
``--no-latency``) the ``_sum`` and ``_count`` of the inter-token latency and TTFT histograms
(:data:`ITL_SECONDS` per generation token, :data:`TTFT_SECONDS` per request of
:data:`TOKENS_PER_REQUEST` tokens; the operator reads their means), with labels ``namespace``
and ``pod`` (Prometheus scrapes it with ``honor_labels: true``, as a
ServiceMonitor with honorLabels keeps a vLLM pod's own labels). A pod's token counters grow
at its constant rate (tokens/s, split evenly between prompt and generation) plus any *load
steps* added at run time (``POST /step``), so ``rate()`` over them is exactly the offered load.

The same formula writes an OpenMetrics history (:func:`write_history`) for
``promtool tsdb create-blocks-from openmetrics``, so Prometheus holds a full forecast window of
samples from its first second and the operator's range queries have their steady-state size.

Run: ``python benchmarks/synthetic_vllm.py --pods pods.json --port 9400 --origin 1700000000``
where pods.json is ``[[namespace, pod, tokens_per_second], ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aiohttp import web

from tokenscale.adapters.engines import VLLM

#: the names a vLLM V1 pod exports, as the operator's vLLM preset reads them
PROMPT = VLLM.prompt
GENERATION = VLLM.generation
WAITING = VLLM.queue
ITL = VLLM.itl[0]
TTFT = VLLM.ttft[0]
#: the synthetic engine's latencies (s): well within the default SLO (50 ms, 2 s)
ITL_SECONDS = 0.02
TTFT_SECONDS = 0.2
#: prompt + generation tokens per request (the TTFT histogram counts requests)
TOKENS_PER_REQUEST = 1000.0


@dataclass(frozen=True)
class PodLoad:
    """One pod and its base load (tokens/s, prompt + generation)."""

    namespace: str
    pod: str
    tokens_per_second: float


@dataclass
class SyntheticFleet:
    """Counter values of all pods as a function of unix time ``t`` (seconds).

    ``origin`` is the unix time where every counter is 0; steps are ``(at, extra tokens/s)``
    per pod index.
    """

    pods: Sequence[PodLoad]
    origin: float
    steps: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    #: also the latency histograms' _sum and _count (a real vLLM pod exports them)
    latency: bool = True

    def __post_init__(self) -> None:
        self._labels = [f'{{namespace="{p.namespace}",pod="{p.pod}"}}' for p in self.pods]
        self._index = {(p.namespace, p.pod): i for i, p in enumerate(self.pods)}

    def add_step(self, pods: Iterable[tuple[str, str]], at: float, extra: float) -> int:
        """From unix time ``at`` on, ``pods`` serve ``extra`` more tokens/s; returns how many
        pods were found."""
        found = 0
        for key in pods:
            i = self._index.get((key[0], key[1]))
            if i is not None:
                self.steps.setdefault(i, []).append((at, extra))
                found += 1
        return found

    def tokens(self, i: int, t: float) -> float:
        """Tokens served by pod ``i`` from ``origin`` until ``t`` (prompt + generation)."""
        total = self.pods[i].tokens_per_second * max(0.0, t - self.origin)
        for at, extra in self.steps.get(i, ()):
            total += extra * max(0.0, t - at)
        return total

    def counter_names(self) -> list[str]:
        """The counter series each pod exports, in exposition order: tokens, and the latency
        histograms' ``_sum`` and ``_count`` when :attr:`latency` is set."""
        names = [PROMPT, GENERATION]
        if self.latency:
            names += [f"{ITL}_count", f"{ITL}_sum", f"{TTFT}_count", f"{TTFT}_sum"]
        return names

    def counters(self, i: int, t: float) -> dict[str, float]:
        """Every counter of pod ``i`` at ``t`` by :meth:`counter_names`: tokens, the latency
        histograms' ``_sum`` (s) and ``_count``."""
        tokens = self.tokens(i, t)
        out = {PROMPT: tokens / 2, GENERATION: tokens / 2}
        if self.latency:
            requests = tokens / TOKENS_PER_REQUEST
            out |= {f"{ITL}_count": tokens / 2, f"{ITL}_sum": tokens / 2 * ITL_SECONDS,
                    f"{TTFT}_count": requests, f"{TTFT}_sum": requests * TTFT_SECONDS}
        return out

    def series_per_pod(self) -> int:
        """Series each pod exports (the counters and the queue gauge)."""
        return len(self.counter_names()) + 1

    def exposition(self, t: float) -> str:
        """Prometheus text format (0.0.4) of all pods at ``t``."""
        values = [self.counters(i, t) for i in range(len(self.pods))]
        lines: list[str] = []
        for name in self.counter_names():
            lines.append(f"# TYPE {name} counter")
            lines += [f"{name}{lab} {v[name]:.3f}" for lab, v in zip(self._labels, values,
                                                                     strict=True)]
        lines.append(f"# TYPE {WAITING} gauge")
        lines += [f"{WAITING}{lab} 0" for lab in self._labels]
        lines.append("")
        return "\n".join(lines)

    def write_history(self, out: IO[str], times: Sequence[float],
                      target_labels: str = "") -> int:
        """OpenMetrics samples of the token counters at ``times`` (ascending, unix s);
        returns the number of samples written. Families and series are contiguous, samples
        oldest first (as promtool wants them). ``target_labels`` (e.g.
        ``job="testbed",instance="127.0.0.1:9400"``) are the labels Prometheus' scrape adds,
        so history and live samples form one series."""
        count = 0
        extra = f",{target_labels}}}" if target_labels else "}"
        values = [[self.counters(i, ts) for ts in times] for i in range(len(self.pods))]
        for name in self.counter_names():
            for i, lab in enumerate(self._labels):
                lab = lab[:-1] + extra
                out.write("".join(f"{name}{lab} {v[name]:.3f} {ts:.3f}\n"
                                  for v, ts in zip(values[i], times, strict=True)))
                count += len(times)
        out.write("# EOF\n")
        return count


def load_pods(path: Path) -> list[PodLoad]:
    """``[[namespace, pod, tokens_per_second], ...]`` from a JSON file."""
    return [PodLoad(str(ns), str(pod), float(rate)) for ns, pod, rate in
            json.loads(path.read_text())]


def app(fleet: SyntheticFleet) -> web.Application:
    """GET /metrics; POST /step ``{"pods": [[ns, pod], ...], "at": unix, "extra": tok/s}``."""
    import time

    async def metrics(_: web.Request) -> web.Response:
        body = fleet.exposition(time.time())
        return web.Response(text=body, content_type="text/plain",
                            headers={"X-Series": str(fleet.series_per_pod()
                                                     * len(fleet.pods))})

    async def step(request: web.Request) -> web.Response:
        data = await request.json()
        found = fleet.add_step([tuple(p) for p in data["pods"]], float(data["at"]),
                               float(data["extra"]))
        return web.json_response({"found": found})

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    application.router.add_post("/step", step)
    return application


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--pods", type=Path, required=True)
    parser.add_argument("--origin", type=float, required=True, help="unix time counters are 0")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--no-latency", action="store_true",
                        help="token counters and queue only, no latency histograms")
    args = parser.parse_args(argv)
    fleet = SyntheticFleet(load_pods(args.pods), args.origin, latency=not args.no_latency)

    async def serve() -> None:
        runner = web.AppRunner(app(fleet), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        print(f"serving {len(fleet.pods)} pods on {args.host}:{args.port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
