"""What a real API server does with a custom resource's openAPIV3Schema on every write.

In order: drop ``null`` values of non-nullable fields, prune unknown fields (structural
schemas), apply ``default`` values, validate types/enums/bounds/required/patterns with
jsonschema (Draft 4 understands the OpenAPI v3.0 boolean ``exclusiveMinimum``), then evaluate
the ``x-kubernetes-validations`` CEL rules with a real CEL evaluator
(:mod:`tokenscale_testbed.crdschema`).
"""

from __future__ import annotations

import copy
from typing import Any

from tokenscale_testbed.crdschema import FieldError, field_errors

_ROOT_KEEP = {"apiVersion", "kind", "metadata"}
_PRESERVE = "x-kubernetes-preserve-unknown-fields"


def normalize(obj: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Drop nulls, prune unknown fields and apply defaults (a copy of ``obj``)."""
    out = copy.deepcopy(obj)
    _walk(out, schema, root=True)
    return out


def _walk(value: Any, schema: dict[str, Any], root: bool = False) -> None:
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key in list(value):
            if root and key in _ROOT_KEEP:
                continue
            sub = props.get(key, additional if isinstance(additional, dict) else None)
            if value[key] is None and not (sub or {}).get("nullable", False):
                del value[key]
            elif sub is not None:
                _walk(value[key], sub)
            elif props and not schema.get(_PRESERVE, False):
                del value[key]
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
                _walk(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _walk(item, schema["items"])


def validate(obj: dict[str, Any], schema: dict[str, Any]) -> list[FieldError]:
    """All schema and CEL violations of a (normalized) object; empty if valid."""
    body = {k: v for k, v in obj.items() if k not in _ROOT_KEEP}
    return field_errors(schema, body)
