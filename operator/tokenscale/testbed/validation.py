"""What a real API server does with a custom resource's openAPIV3Schema on every write.

In order: drop ``null`` values of non-nullable fields, prune unknown fields (structural
schemas), apply ``default`` values, validate types/enums/bounds/required/patterns with
jsonschema (Draft 4 understands the OpenAPI v3.0 boolean ``exclusiveMinimum``), then evaluate
the ``x-kubernetes-validations`` CEL rules that the project uses, reimplemented in Python.
Unknown CEL rules are skipped (reported by :func:`unsupported_rules`).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import jsonschema

Rule = Callable[[Any], bool]
_ROOT_KEEP = {"apiVersion", "kind", "metadata"}
_PRESERVE = "x-kubernetes-preserve-unknown-fields"
_VALIDATORS: dict[int, Any] = {}  # by id() of the schema dicts the served types hold


class FieldError:
    """One invalid field: a Kubernetes-style path (``spec.targets[0].minReplicas``)."""

    def __init__(self, field: str, value: Any, message: str) -> None:
        self.field = field
        self.value = value
        self.message = message

    def __str__(self) -> str:
        value = json.dumps(self.value) if not isinstance(self.value, dict | list) else (
            '"object"' if isinstance(self.value, dict) else '"array"')
        return f"{self.field}: Invalid value: {value}: {self.message}"


def _field(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


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


_HAS_OR = re.compile(r"^has\(self\.(\w+)\)\s*\|\|\s*has\(self\.(\w+)\)$")
_COMPARE = re.compile(r"^self\.(\w+)\s*(<=|>=|<|>|==|!=)\s*self\.(\w+)$")
_UNIQUE = re.compile(
    r"^self\.all\((\w+),\s*self\.filter\((\w+),\s*(.+)\)\.size\(\)\s*==\s*1\)$")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def compile_rule(rule: str) -> Rule | None:
    """A Python predicate for the CEL rules of the forms the project uses, or None."""
    rule = " ".join(rule.split())
    if m := _HAS_OR.match(rule):
        a, b = m.groups()
        return lambda s: isinstance(s, dict) and (a in s or b in s)
    if m := _COMPARE.match(rule):
        a, op, b = m.groups()
        return lambda s: not (a in s and b in s) or _OPS[op](s[a], s[b])
    if m := _UNIQUE.match(rule):
        outer, inner, cond = m.groups()
        pairs = re.findall(rf"{inner}\.([\w.]+)\s*==\s*{outer}\.([\w.]+)", cond)
        if not pairs or any(x != y for x, y in pairs):
            return None
        paths = [x for x, _ in pairs]

        def unique(items: Any) -> bool:
            keys = [tuple(_dig(i, p) for p in paths) for i in items or []]
            return len(keys) == len(set(keys))
        return unique
    return None


def unsupported_rules(schema: dict[str, Any]) -> list[str]:
    """The CEL rules in ``schema`` that :func:`compile_rule` cannot evaluate."""
    out: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations", []):
                if compile_rule(rule["rule"]) is None:
                    out.append(rule["rule"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)
    visit(schema)
    return out


def _cel_errors(value: Any, schema: dict[str, Any], path: list[str | int]) -> list[FieldError]:
    errors: list[FieldError] = []
    for rule in schema.get("x-kubernetes-validations", []):
        check = compile_rule(rule["rule"])
        if check is not None and not check(value):
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            errors.append(FieldError(_field(path), value, message))
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += _cel_errors(value[key], sub, [*path, key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += _cel_errors(item, schema["items"], [*path, i])
    return errors


def validate(obj: dict[str, Any], schema: dict[str, Any]) -> list[FieldError]:
    """All schema and CEL violations of a (normalized) object; empty if valid."""
    body = {k: v for k, v in obj.items() if k not in _ROOT_KEEP}
    validator = _VALIDATORS.get(id(schema))
    if validator is None:
        validator = _VALIDATORS[id(schema)] = jsonschema.Draft4Validator(schema)
    errors = [
        FieldError(_field(list(e.absolute_path)), e.instance, e.message)
        for e in validator.iter_errors(body)
    ]
    return errors or _cel_errors(body, schema, [])
