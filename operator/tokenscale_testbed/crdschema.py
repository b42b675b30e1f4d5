"""Validate an object against a CRD's openAPIV3Schema the way an API server does.

Two layers, as in kube-apiserver: the structural schema (types, enums, bounds, patterns,
required; OpenAPI v3.0 semantics, which JSON Schema draft 4 shares, including the boolean
``exclusiveMinimum``) and, only when that passes, the CEL rules in
``x-kubernetes-validations`` (evaluated with cel-python, a real CEL implementation) plus the
uniqueness of ``x-kubernetes-list-type: map`` keys. Used by the API emulator of the test bed
and by the tests of the CRD.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema

_CEL_KEY = "x-kubernetes-validations"
_VALIDATORS: dict[int, Any] = {}  # Draft4Validator by id() of long-lived schema dicts


@dataclass(frozen=True)
class FieldError:
    """One invalid field: a Kubernetes-style path (``spec.targets[0].minReplicas``)."""

    field: str
    value: Any
    message: str

    def __str__(self) -> str:
        if isinstance(self.value, dict | list):
            shown = '"object"' if isinstance(self.value, dict) else '"array"'
        else:
            shown = json.dumps(self.value, default=str)
        return f"{self.field or '<root>'}: Invalid value: {shown}: {self.message}"


@lru_cache(maxsize=256)
def _compiled(rule: str) -> Any:
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(rule))


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _rule_errors(schema: dict[str, Any], value: Any, where: str) -> Iterator[FieldError]:
    """CEL rules and list-map keys of this schema node and its children, depth first."""
    from celpy.adapter import json_to_cel
    from celpy.evaluation import CELEvalError

    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                yield from _rule_errors(sub, value[key], f"{where}.{key}" if where else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from _rule_errors(schema["items"], item, f"{where}[{i}]")
        if schema.get("x-kubernetes-list-type") == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            seen: set[str] = set()
            for i, item in enumerate(value):
                key = json.dumps([item.get(k) for k in keys] if isinstance(item, dict) else item)
                if key in seen:
                    yield FieldError(f"{where}[{i}]", item, f"Duplicate value: {key}")
                seen.add(key)
    for rule in schema.get(_CEL_KEY, []):
        try:
            ok = _compiled(rule["rule"]).evaluate({"self": json_to_cel(value)})
        except CELEvalError as exc:  # a rule that cannot evaluate fails closed
            yield FieldError(where, value, f"rule {rule['rule']!r} could not be evaluated: {exc}")
            continue
        if not bool(ok):
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            yield FieldError(where + rule.get("fieldPath", ""), value, message)


def field_errors(schema: dict[str, Any], obj: Any) -> list[FieldError]:
    """All problems of ``obj`` against ``schema``; rules run only if the structure is valid."""
    validator = _VALIDATORS.get(id(schema))
    if validator is None:
        validator = _VALIDATORS[id(schema)] = jsonschema.Draft4Validator(schema)
    errors = [
        FieldError(_path(e.absolute_path), e.instance, e.message)
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
    ]
    return errors or list(_rule_errors(schema, obj, ""))


def schema_errors(schema: dict[str, Any], obj: Any) -> list[str]:
    """:func:`field_errors` as ``field: message`` lines."""
    return [f"{e.field or '<root>'}: {e.message}" for e in field_errors(schema, obj)]


def crd_schema(crd: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """The openAPIV3Schema of a CRD (the storage version unless ``version`` is given)."""
    for ver in crd["spec"]["versions"]:
        if (version is None and ver.get("storage")) or ver["name"] == version:
            schema: dict[str, Any] = ver["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"CRD {crd['metadata']['name']} has no version {version!r}")
