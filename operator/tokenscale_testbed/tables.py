"""Server-side ``Table`` rendering (``Accept: ...;as=Table``), what ``kubectl get`` prints.

Custom resources get their CRD's printer columns; Deployments, StatefulSets, ReplicaSets,
Pods and Namespaces get kubectl's usual columns; anything else NAME and AGE.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from tokenscale_testbed.errors import Obj
from tokenscale_testbed.resources import ResourceType
from tokenscale_testbed.store import NS_KEY, dig, served

Cell = Callable[[Obj], Any]


def table(rtype: ResourceType, items: list[Obj], query: Mapping[str, str],
          resource_version: int) -> Obj:
    """The ``meta.k8s.io/v1`` Table of ``items``; ``includeObject`` (query) picks what each
    row carries: ``Metadata`` (default), ``Object`` or ``None``."""
    columns, cells = columns_of(rtype)
    include = query.get("includeObject", "Metadata")
    rows = []
    for obj in items:
        row: Obj = {"cells": [fn(obj) for fn in cells]}
        if include == "Object":
            row["object"] = served(rtype, obj)
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata",
                             "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(resource_version)},
            "columnDefinitions": columns, "rows": rows}


def human_age(seconds: float) -> str:
    """Kubernetes' short human duration (``45s``, ``3m12s``, ``5h``, ``2d3h``)."""
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    return f"{d}d{h % 24}h" if d < 8 and h % 24 else f"{d}d"


def _age(timestamp: Any) -> str:
    try:
        then = dt.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    return human_age((dt.datetime.now(dt.UTC) - then).total_seconds())


def _col(name: str, ctype: str = "string", fmt: str = "", priority: int = 0) -> Obj:
    return {"name": name, "type": ctype, "format": fmt, "description": "", "priority": priority}


def columns_of(rtype: ResourceType) -> tuple[list[Obj], list[Cell]]:
    """The column definitions of ``rtype`` and, for each, the function giving its cell."""
    name_col = _col("Name", fmt="name")
    age: Cell = lambda o: _age(o["metadata"].get("creationTimestamp"))  # noqa: E731
    name: Cell = lambda o: o["metadata"]["name"]  # noqa: E731
    if rtype.printer_columns:
        cols, cells = [name_col], [name]
        for pc in rtype.printer_columns:
            cols.append(_col(pc["name"], pc.get("type", "string"), pc.get("format", ""),
                             pc.get("priority", 0)))
            path = pc["jsonPath"]
            cells.append(_cell(path, pc.get("type") == "date"))
        return cols, cells
    key = (rtype.group, rtype.plural)
    if key in (("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets")):
        ready: Cell = lambda o: (  # noqa: E731
            f"{(o.get('status') or {}).get('readyReplicas', 0)}/"
            f"{(o.get('spec') or {}).get('replicas', 0)}")
        if key == ("apps", "deployments"):
            return ([name_col, _col("Ready"), _col("Up-to-date", "integer"),
                     _col("Available", "integer"), _col("Age")],
                    [name, ready,
                     lambda o: (o.get("status") or {}).get("updatedReplicas", 0),
                     lambda o: (o.get("status") or {}).get("availableReplicas", 0), age])
        return [name_col, _col("Ready"), _col("Age")], [name, ready, age]
    if key == ("", "pods"):
        return ([name_col, _col("Ready"), _col("Status"), _col("Restarts", "integer"),
                 _col("Age")],
                [name, lambda o: "1/1" if _pod_ready(o) else "0/1",
                 lambda o: (o.get("status") or {}).get("phase", "Pending"), lambda o: 0, age])
    if key == NS_KEY:
        return ([name_col, _col("Status"), _col("Age")],
                [name, lambda o: (o.get("status") or {}).get("phase"), age])
    return [name_col, _col("Age")], [name, age]


def _cell(path: str, is_date: bool) -> Cell:
    def cell(obj: Obj) -> Any:
        value = dig(obj, path)
        return _age(value) if is_date and value else value
    return cell


def _pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])
