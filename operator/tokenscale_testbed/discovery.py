"""API discovery of the emulator: ``/api``, ``/apis``, ``/apis/<group>`` and the resource lists
of a group/version, from the served resource types (so CRDs applied at runtime appear, with
their short names and subresources), and ``/version``."""

from __future__ import annotations

import re
from collections.abc import Mapping

from tokenscale_testbed.errors import ApiError, Obj
from tokenscale_testbed.resources import ResourceType

#: Served types by (group, version, plural).
Types = Mapping[tuple[str, str, str], ResourceType]

VERSION: Obj = {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}


def core_versions(server_address: str) -> Obj:
    """``/api``: the core group's versions (``host:port`` as the server address)."""
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def group_list(types: Types) -> Obj:
    """``/apis``: every named group with its versions."""
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(types, g) for g in groups(types)]}


def api_group(types: Types, group: str) -> Obj:
    """``/apis/<group>`` (404 if no type of the group is served)."""
    if group not in groups(types):
        raise ApiError(404, f"the server could not find the group {group}")
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(types, group)}


def groups(types: Types) -> dict[str, list[str]]:
    """The named groups (not the core group) and their versions, in first-served order."""
    out: dict[str, list[str]] = {}
    for group, version, _ in types:
        if group and version not in out.setdefault(group, []):
            out[group].append(version)
    return out


def _group(types: Types, group: str) -> Obj:
    versions = [{"groupVersion": f"{group}/{v}", "version": v}
                for v in sorted(groups(types)[group], key=version_rank)]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def resource_list(types: Types, group: str, version: str) -> Obj:
    """``/api/v1`` or ``/apis/<group>/<version>``: the APIResourceList (404 if empty)."""
    resources = [entry for rtype in types.values()
                 if (rtype.group, rtype.version) == (group, version)
                 for entry in rtype.discovery()]
    if not resources:
        raise ApiError(404, f"the server could not find {group}/{version}")
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": resources}


def version_rank(version: str) -> tuple[int, int, int]:
    """Sort key of Kubernetes versions, preferred first: v2 < v1 < v1beta2 < v1alpha1 < other."""
    m = re.match(r"v(\d+)(?:(alpha|beta)(\d+))?$", version)
    if not m:
        return (3, 0, 0)
    stage = {"alpha": 2, "beta": 1, None: 0}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0))
