"""PromQL text for the batched queries, label escaping, and pod-to-target grouping.

The operator asks Prometheus one query per metric per cycle for all budgets it serves and
groups the answer client-side: a series belongs to a target when its ``namespace`` label is
the TokenBudget's namespace and its ``pod`` label is a pod name of the target's workload
(``<deployment>-<pod-template-hash>-<suffix>`` or ``<statefulset>-<ordinal>``).

Both spellings of the vLLM metric names are accepted: ``vllm:…`` (vLLM's own exposition)
and ``vllm_…`` (what prometheus-client >= 0.23 writes in OpenMetrics output).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Counters of tokens processed (input, output); the sum of their rates is tokens/s.
PROMPT_COUNTER = r"vllm[:_]prompt_tokens_total"
GENERATION_COUNTER = r"vllm[:_]generation_tokens_total"
#: Gauge of requests waiting in the engine queue.
QUEUE_GAUGE = r"vllm[:_]num_requests_waiting"
#: Histograms of the inter-token latency (s): vLLM V1's name first, then V0's.
ITL_HISTOGRAMS = (r"vllm[:_]inter_token_latency_seconds", r"vllm[:_]time_per_output_token_seconds")

_GROUP = "namespace, pod"


def escape_label_value(value: str) -> str:
    """Escape a string for use inside a double-quoted PromQL label value."""
    return (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )


def escape_regex_literal(value: str) -> str:
    """Escape a literal for a PromQL (RE2) regex, then for the quoted label value."""
    return escape_label_value(re.escape(value))


def _selector(name_regex: str, namespaces: Sequence[str]) -> str:
    matchers = [f'__name__=~"{name_regex}"']
    if namespaces:
        alternatives = "|".join(escape_regex_literal(ns) for ns in sorted(set(namespaces)))
        matchers.append(f'namespace=~"{alternatives}"')
    return "{" + ", ".join(matchers) + "}"


def _both_counters(function: str, window: str, namespaces: Sequence[str]) -> str:
    # One function call per counter: rate() drops __name__, and Prometheus 2.x refuses a
    # vector with two equal label sets (prompt and generation of one pod). `or` keeps pods
    # that export only one of the two.
    prompt = f"sum by ({_GROUP}) ({function}({_selector(PROMPT_COUNTER, namespaces)}[{window}]))"
    gen = f"sum by ({_GROUP}) ({function}({_selector(GENERATION_COUNTER, namespaces)}[{window}]))"
    return f"({prompt} + {gen}) or {prompt} or {gen}"


def token_rate_query(namespaces: Sequence[str] = (), rate_window: str = "1m") -> str:
    """tokens/s (prompt + generation) per (namespace, pod)."""
    return _both_counters("rate", rate_window, namespaces)


def queue_query(namespaces: Sequence[str] = ()) -> str:
    """Waiting requests per (namespace, pod)."""
    return f"sum by ({_GROUP}) ({_selector(QUEUE_GAUGE, namespaces)})"


def inter_token_latency_query(namespaces: Sequence[str] = (), rate_window: str = "5m") -> str:
    """Mean inter-token latency (s) per (namespace, pod) over ``rate_window``: the rate of the
    histogram's ``_sum`` over the rate of its ``_count``.

    One ratio per histogram name, joined by ``or``: a pod with V1's name uses it, else V0's
    (vLLM versions that export both observe the same latencies in both; summing the two names
    in one ``rate()`` would also trip Prometheus 2.x over equal label sets). No request in the
    window gives 0/0 = NaN, which the observation leaves out.
    """
    ratios = [
        f"sum by ({_GROUP}) (rate({_selector(name + '_sum', namespaces)}[{rate_window}]))"
        f" / sum by ({_GROUP}) (rate({_selector(name + '_count', namespaces)}[{rate_window}]))"
        for name in ITL_HISTOGRAMS
    ]
    return " or ".join(f"({r})" for r in ratios)


def tokens_increase_query(seconds: int, namespaces: Sequence[str] = ()) -> str:
    """Tokens served in the last ``seconds`` per (namespace, pod) (``increase()``)."""
    return _both_counters("increase", f"{max(1, int(seconds))}s", namespaces)


def validate_user_query(query: str) -> str | None:
    """A problem with a user-supplied PromQL override, or None if it looks usable.

    Prometheus itself checks the syntax (a parse error is an HTTPError failure); the answer
    must carry a ``pod`` label, which the grouping checks.
    """
    if not query.strip():
        return "empty query"
    if any(ch in query for ch in "\x00"):
        return "query contains a NUL character"
    if len(query) > 4096:
        return "query longer than 4096 characters"
    return None


@dataclass(frozen=True)
class WorkloadRef:
    """A scale target: namespace, kind (Deployment | StatefulSet) and name."""

    namespace: str
    kind: str
    name: str

    def pod_pattern(self) -> re.Pattern[str]:
        """The names of this workload's pods."""
        base = re.escape(self.name)
        if self.kind == "StatefulSet":
            return re.compile(rf"^{base}-[0-9]+$")
        return re.compile(rf"^{base}-[a-z0-9]{{1,10}}-[a-z0-9]{{5}}$")


class PodIndex:
    """Assigns pod names to workloads of the same namespace; the longest name wins."""

    def __init__(self, workloads: Iterable[WorkloadRef]):
        self._by_ns: dict[str, list[tuple[WorkloadRef, re.Pattern[str]]]] = {}
        for ref in sorted(set(workloads), key=lambda r: -len(r.name)):
            self._by_ns.setdefault(ref.namespace, []).append((ref, ref.pod_pattern()))
        self._cache: dict[tuple[str, str], WorkloadRef | None] = {}

    def owner(self, namespace: str, pod: str) -> WorkloadRef | None:
        """The workload that owns ``pod`` in ``namespace``, or None."""
        key = (namespace, pod)
        if key not in self._cache:
            found = None
            for ref, pattern in self._by_ns.get(namespace, ()):
                if pattern.match(pod):
                    found = ref
                    break
            self._cache[key] = found
        return self._cache[key]
