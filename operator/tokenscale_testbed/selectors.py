"""Label and field selectors of list and watch requests (labelSelector, fieldSelector)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]
_SET = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
# A parsed term: (operator, key, values); operators: in, notin, exists, absent.
Term = tuple[str, str, frozenset[str]]


def _split(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _terms(text: str) -> list[Term]:
    out: list[Term] = []
    for term in _split(text):
        if m := _SET.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(","))
            out.append((m.group(2), m.group(1), values))
        elif "!=" in term:
            key, value = term.split("!=", 1)
            out.append(("notin", key.strip(), frozenset([value.strip()])))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            out.append(("in", key.strip(), frozenset([value.strip()])))
        elif term.startswith("!"):
            out.append(("absent", term[1:].strip(), frozenset()))
        else:
            out.append(("exists", term, frozenset()))
    return out


def _holds(term: Term, value: str | None) -> bool:
    op, _, values = term
    if op == "in":
        return value in values
    if op == "notin":
        return value not in values
    if op == "exists":
        return value is not None
    return value is None


def label_selector(text: str | None) -> Predicate:
    """A predicate on objects for a label selector string (equality, set, existence)."""
    terms = _terms(text or "")

    def predicate(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(_holds(t, labels.get(t[1])) for t in terms)
    return predicate


def _dig(obj: Any, dotted: str) -> str:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return "" if obj is None else str(obj)


def field_selector(text: str | None) -> Predicate:
    """A predicate for a field selector (``a.b=v``, ``a.b==v``, ``a.b!=v``; comma means and)."""
    terms = [t for t in _terms(text or "") if t[0] in ("in", "notin")]
    return lambda obj: all(_holds(t, _dig(obj, t[1])) for t in terms)


def selector_string(match_labels: dict[str, str] | None) -> str:
    """``spec.selector.matchLabels`` as the string a Scale's ``status.selector`` carries."""
    return ",".join(f"{k}={v}" for k, v in sorted((match_labels or {}).items()))
