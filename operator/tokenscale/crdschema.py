"""Validate an object against a CRD's openAPIV3Schema the way an API server does.

Two layers, as in kube-apiserver: the structural schema (types, enums, bounds, patterns,
required; OpenAPI v3.0 semantics, which JSON Schema draft 4 shares, including the boolean
``exclusiveMinimum``) and the CEL rules in ``x-kubernetes-validations`` (evaluated with
cel-python). Used by the API emulator of the test bed and by the tests of the CRD.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import jsonschema

_CEL_KEY = "x-kubernetes-validations"


@lru_cache(maxsize=64)
def _compiled(rule: str) -> Any:
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(rule))


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _cel_errors(schema: dict[str, Any], value: Any, where: str) -> Iterator[str]:
    """CEL rules of this schema node and its children, depth first."""
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                yield from _cel_errors(sub, value[key], f"{where}.{key}" if where else key)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from _cel_errors(schema["items"], item, f"{where}[{i}]")
        if schema.get("x-kubernetes-list-type") == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            seen: set[tuple[Any, ...]] = set()
            for i, item in enumerate(value):
                key = tuple(item.get(k) for k in keys) if isinstance(item, dict) else (item,)
                if key in seen:
                    yield f"{where}[{i}]: Duplicate value: {dict(zip(keys, key, strict=False))}"
                seen.add(key)
    for rule in schema.get(_CEL_KEY, []):
        from celpy.adapter import json_to_cel
        from celpy.evaluation import CELEvalError

        try:
            ok = _compiled(rule["rule"]).evaluate({"self": json_to_cel(value)})
        except CELEvalError as exc:  # a rule that cannot evaluate fails closed
            yield f"{where}: rule {rule['rule']!r} could not be evaluated: {exc}"
            continue
        if not bool(ok):
            field = where + rule.get("fieldPath", "")
            yield f"{field}: {rule.get('message', 'failed rule: ' + rule['rule'])}"


def schema_errors(schema: dict[str, Any], obj: Any) -> list[str]:
    """All problems of ``obj`` against ``schema``, each starting with the field path.

    CEL rules only run when the structural schema passes, as on a real API server.
    """
    validator = jsonschema.Draft4Validator(schema)
    errors = [
        f"{_path(e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
    ]
    if errors:
        return errors
    return list(_cel_errors(schema, obj, ""))


def crd_schema(crd: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """The openAPIV3Schema of a CRD (the storage version unless ``version`` is given)."""
    for ver in crd["spec"]["versions"]:
        if (version is None and ver.get("storage")) or ver["name"] == version:
            schema: dict[str, Any] = ver["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"CRD {crd['metadata']['name']} has no version {version!r}")
