"""Generate the TokenBudget CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema (draft 2020-12) with ``$ref``/``$defs`` and ``anyOf`` for
optionals; a CRD needs a *structural* OpenAPI v3.0 schema. :func:`structural` converts one
into the other: references inlined, optionals unwrapped, ``const`` to ``enum``, numeric
exclusive bounds to the v3.0 boolean form, titles dropped.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from tokenscale import api

_DROP = {"title", "additionalProperties"}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
    {"name": "Tokens/s", "type": "number", "jsonPath": ".status.tokensPerSecond"},
    # in the unit of the binding limit (cost, or tokens for a token-only budget)
    {"name": "Spend", "type": "number", "jsonPath": ".status.budget.spent"},
    {"name": "Budget", "type": "string", "jsonPath": ".status.budget.display"},
    {"name": "Projected", "type": "number", "jsonPath": ".status.budget.projected"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            return _resolve({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "default" and value is None:
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
            continue
        if key == "properties":
            out[key] = {k: _resolve(v, defs) for k, v in value.items()}
            continue
        out[key] = _resolve(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def structural(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3.0 schema of a model (camelCase field names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    return schema


def _spec_schema() -> dict[str, Any]:
    schema = structural(api.TokenBudgetSpec)
    targets = schema["properties"]["targets"]
    targets["x-kubernetes-list-type"] = "map"
    targets["x-kubernetes-list-map-keys"] = ["name"]
    targets["x-kubernetes-validations"] = [
        {
            "rule": "self.all(t, self.filter(u, u.scaleTargetRef.name == t.scaleTargetRef.name"
            " && u.scaleTargetRef.kind == t.scaleTargetRef.kind).size() == 1)",
            "message": "several targets scale the same workload",
        }
    ]
    return schema


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    status = structural(api.TokenBudgetStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["tokenscale"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A budget for LLM inference spending, and the "
                            "Deployments it scales.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _spec_schema(),
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    """The CRD as YAML text, exactly as committed in crds/."""
    header = "# Generated by `tokenscale crd` from operator/tokenscale/api.py; do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)
