"""The Kubernetes objects the tests create, built in one place: inference Deployments, and
TokenBudget targets and specs (plain dicts, as `kubectl apply` would send them)."""

from __future__ import annotations

from typing import Any

import yaml


def deployment(namespace: str | None, name: str, replicas: int, *,
               image: str = "vllm/vllm-openai:v0.6.3") -> dict[str, Any]:
    """An apps/v1 Deployment of one vLLM container, pods labelled ``app: <name>``
    (``namespace`` None: taken from the request path)."""
    labels = {"app": name}
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace is not None:
        meta["namespace"] = namespace
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "vllm", "image": image}]}}},
    }


def target(name: str, deploy: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A TokenBudget target scaling Deployment ``deploy`` (default: ``name``): 1-16 replicas
    of 1,000 tokens/s at 3.6 USD/h, no cold start, unless overridden."""
    spec = {
        "name": name,
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deploy or name},
        "minReplicas": 1, "maxReplicas": 16,
        "tokensPerReplicaPerSecond": 1000, "costPerReplicaHour": 3.6,
        "coldStartSeconds": 0,
    }
    spec.update(overrides)
    return spec


def tokenbudget(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A TokenBudget object around ``spec``."""
    return {"apiVersion": "tokenscale.dev/v1alpha1", "kind": "TokenBudget",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def manifest(obj: dict[str, Any]) -> str:
    """``obj`` as YAML text for `kubectl apply -f -`."""
    return yaml.safe_dump(obj, sort_keys=False)
