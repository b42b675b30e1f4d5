"""PromQL text for the batched queries, label escaping, and pod-to-target grouping.

The operator asks Prometheus one query per metric per cycle for all budgets it serves and
groups the answer client-side: a series belongs to a target when its ``namespace`` label is
the TokenBudget's namespace and its ``pod`` label is a pod name of the target's workload
(``<deployment>-<pod-template-hash>-<suffix>`` or ``<statefulset>-<ordinal>``).

Every query covers the engines the due targets name (:mod:`tokenscale.adapters.engines`)
in one PromQL expression: one sub-expression per engine, each tagged with an ``engine`` label
(``label_replace``) and joined by ``or``, so targets of several engines still cost one query
per metric family and cycle; :func:`tokenscale.adapters.prometheus.group_by_engine` gives a
target only the series of its own engine. Both spellings of the names are accepted:
``vllm:…`` (the engine's own exposition) and ``vllm_…`` (what prometheus-client >= 0.23
writes in OpenMetrics output).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tokenscale.adapters.engines import PRESETS, EnginePreset, name_regex

#: The engines whose presets the queries cover when no target names one.
DEFAULT_ENGINES: tuple[str, ...] = ("vllm",)
#: The label that tells which engine's preset a series of a batched answer came from.
ENGINE_LABEL = "engine"

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


def _per_engine(build: Callable[[EnginePreset], str], engines: Iterable[str]) -> str:
    """One expression for ``engines``: each preset's ``build`` tagged with its engine's name
    (``label_replace``), joined by ``or`` (the tags keep pods of different engines apart).
    Engines without a preset (custom) add nothing; none at all reads vLLM's names."""
    names = sorted({e for e in engines if e in PRESETS}) or list(DEFAULT_ENGINES)
    parts = [f'label_replace({build(PRESETS[e])}, "{ENGINE_LABEL}", "{e}", "", "")'
             for e in names]
    return parts[0] if len(parts) == 1 else " or ".join(f"({p})" for p in parts)


def _both_counters(
    function: str, window: str, namespaces: Sequence[str], engine: EnginePreset
) -> str:
    # One function call per counter: rate() drops __name__, and Prometheus 2.x refuses a
    # vector with two equal label sets (prompt and generation of one pod). `or` keeps pods
    # that export only one of the two.
    prompt_sel = _selector(name_regex(engine.prompt), namespaces)
    gen_sel = _selector(name_regex(engine.generation), namespaces)
    prompt = f"sum by ({_GROUP}) ({function}({prompt_sel}[{window}]))"
    gen = f"sum by ({_GROUP}) ({function}({gen_sel}[{window}]))"
    return f"({prompt} + {gen}) or {prompt} or {gen}"


def token_rate_query(
    namespaces: Sequence[str] = (), rate_window: str = "1m",
    engines: Iterable[str] = DEFAULT_ENGINES,
) -> str:
    """tokens/s (prompt + generation) per (namespace, pod, engine)."""
    return _per_engine(lambda p: _both_counters("rate", rate_window, namespaces, p), engines)


def queue_query(namespaces: Sequence[str] = (), engines: Iterable[str] = DEFAULT_ENGINES) -> str:
    """Waiting requests per (namespace, pod, engine)."""
    return _per_engine(
        lambda p: f"sum by ({_GROUP}) ({_selector(name_regex(p.queue), namespaces)})", engines)


def inter_token_latency_query(
    namespaces: Sequence[str] = (), rate_window: str = "5m",
    engines: Iterable[str] = DEFAULT_ENGINES,
) -> str:
    """Mean inter-token latency (s) per (namespace, pod, engine) over ``rate_window``: the
    rate of the histogram's ``_sum`` over the rate of its ``_count``.

    One ratio per histogram name of an engine, joined by ``or``: a pod with the newer name
    uses it, else the older one (engines that export both observe the same latencies in
    both; summing the two names in one ``rate()`` would also trip Prometheus 2.x over equal
    label sets). No request in the window gives 0/0 = NaN, which the observation leaves out.
    """
    return _per_engine(
        lambda p: " or ".join(f"({r})" for r in _mean_of(p.itl, rate_window, namespaces)),
        engines)


#: The label that tells which latency a series of :func:`recent_latency_query` is.
LATENCY_LABEL = "latency"


def _mean_of(names: Iterable[str], rate_window: str, namespaces: Sequence[str]) -> list[str]:
    """``rate(_sum) / rate(_count)`` per (namespace, pod) for each histogram name."""
    return [f"sum by ({_GROUP}) (rate({_selector(name_regex(n) + '_sum', namespaces)}"
            f"[{rate_window}])) / sum by ({_GROUP}) "
            f"(rate({_selector(name_regex(n) + '_count', namespaces)}[{rate_window}]))"
            for n in names]


def recent_latency_query(
    namespaces: Sequence[str] = (), rate_window: str = "5m",
    engines: Iterable[str] = DEFAULT_ENGINES,
) -> str:
    """What requests see now, in one query: the mean inter-token latency and the mean time to
    first token (s) per (namespace, pod, engine) over ``rate_window``, each series tagged
    ``latency="itl"`` or ``latency="ttft"`` (:data:`LATENCY_LABEL`). As in
    :func:`inter_token_latency_query`, each name of a latency is one ratio joined by ``or``;
    an engine without a TTFT histogram (TGI) gives the ITL only."""
    def tagged(p: EnginePreset) -> str:
        parts = [f'label_replace({ratio}, "{LATENCY_LABEL}", "{kind}", "", "")'
                 for kind, names in (("itl", p.itl), ("ttft", p.ttft))
                 for ratio in _mean_of(names, rate_window, namespaces)]
        return " or ".join(f"({r})" for r in parts)

    return _per_engine(tagged, engines)


def tokens_increase_query(
    seconds: int, namespaces: Sequence[str] = (), engines: Iterable[str] = DEFAULT_ENGINES
) -> str:
    """Tokens served in the last ``seconds`` per (namespace, pod, engine) (``increase()``)."""
    window = f"{max(1, int(seconds))}s"
    return _per_engine(lambda p: _both_counters("increase", window, namespaces, p), engines)


#: OpenCost's (and Kubecost's) node prices, per resource: currency/h per GPU, per vCPU and
#: per GiB of memory, labelled with the ``node``.
NODE_PRICES = {"gpu": "node_gpu_hourly_cost", "cpu": "node_cpu_hourly_cost",
               "ram": "node_ram_hourly_cost"}
#: kube-state-metrics' series that places a pod on its node.
POD_NODE = "kube_pod_info"
#: The label that tells which resource's price a series of :func:`node_prices_query` is.
RESOURCE_LABEL = "resource"


def node_prices_query(namespaces: Sequence[str] = ()) -> str:
    """Per (namespace, pod, node, resource): the hourly price of one unit of ``resource``
    (gpu | cpu | ram) on the node the pod runs on, OpenCost's node prices joined to
    kube-state-metrics' ``kube_pod_info`` by ``node``; one query for every resource and
    pod."""
    pods = f"max by ({_GROUP}, node) ({_selector(POD_NODE, namespaces)})"
    parts = [
        f'label_replace({pods} * on (node) group_left () max by (node) ({metric}), '
        f'"{RESOURCE_LABEL}", "{resource}", "", "")'
        for resource, metric in NODE_PRICES.items()
    ]
    return " or ".join(f"({p})" for p in parts)


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
