"""The API emulator's storage: what a write does on a real API server, without HTTP.

One :class:`Resource` per (group, plural) holds the objects of all versions of a resource, a
bounded event history (replayed by watches, see :mod:`.watch`) and the live watchers.
:class:`Store` applies the API server's write rules:

- objects get ``uid``, ``creationTimestamp``, ``resourceVersion`` (one global counter) and
  ``generation`` (bumped when anything outside metadata and status changes);
  no-op writes change nothing;
- 409 on a stale ``resourceVersion`` (updates, delete preconditions) and on create of an
  existing name; 422 for invalid patches and schema violations of custom resources
  (see :mod:`.validation`);
- the ``status`` and ``scale`` subresources, finalizers and ``deletionTimestamp``;
- CRDs install (and on delete remove) the resource types they declare; deleting a namespace
  deletes its objects.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tokenscale_testbed import patching, selectors, validation
from tokenscale_testbed.errors import ApiError, Obj
from tokenscale_testbed.resources import ResourceType, builtin_types, types_from_crd

if TYPE_CHECKING:
    from tokenscale_testbed.watch import Watcher

StoreKey = tuple[str, str]  # (group, plural): all versions of a resource share storage
ObjKey = tuple[str, str]  # (namespace or "", name)
TypeKey = tuple[str, str, str]  # (group, version, plural)
#: A read-modify-write step: the object (or Scale) as stored -> the object to write.
Change = Callable[[Obj], Obj]

CRD_KEY: StoreKey = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY: StoreKey = ("", "namespaces")
_REPLICATED: tuple[StoreKey, ...] = (("apps", "deployments"), ("apps", "statefulsets"),
                                     ("apps", "replicasets"))


@dataclass
class Resource:
    """Storage of one (group, plural): objects, a bounded event history and live watchers."""

    objects: dict[ObjKey, Obj] = field(default_factory=dict)
    history: collections.deque[tuple[int, str, Obj]] = field(default_factory=collections.deque)
    dropped_rv: int = 0  # events at or below this resourceVersion are gone from history
    watchers: set[Watcher] = field(default_factory=set)
    #: workloads only: every change of spec.replicas with its (unix) time, 0 on deletion; the
    #: ground truth of what was paid for (unbounded, unlike the watch history)
    replica_log: dict[ObjKey, list[tuple[float, int]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """A resource addressed by a request: the type, and namespace, name, subresource if given."""

    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def now() -> str:
    """The current time as a Kubernetes timestamp (``2024-05-01T12:00:00Z``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_replicas(res: Resource, kind: str, obj: Obj) -> None:
    """Append a workload's spec.replicas to its replica log when it changed (0: deleted)."""
    meta = obj.get("metadata") or {}
    key = (meta.get("namespace") or "", str(meta.get("name", "")))
    replicas = 0 if kind == "DELETED" else int((obj.get("spec") or {}).get("replicas", 1))
    log = res.replica_log.setdefault(key, [])
    if not log or log[-1][1] != replicas:
        log.append((time.time(), replicas))


def meta_of(obj: Obj) -> Obj:
    """``obj["metadata"]``, made a dict if it is missing or not one."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def dig(obj: Any, path: str) -> Any:
    """A value at a simple JSONPath (``.status.replicas``, ``.spec.items[0].name``)."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path.lstrip(".").removeprefix("{").rstrip("}")):
        if part.startswith("["):
            index = int(part[1:-1])
            obj = obj[index] if isinstance(obj, list) and index < len(obj) else None
        else:
            obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _set_path(obj: Obj, path: str, value: Any) -> Obj:
    parts = path.lstrip(".").split(".")
    out = copy.deepcopy(obj)
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def qualified(rtype: ResourceType) -> str:
    """``deployments.apps``, or ``pods`` for the core group (as in API messages)."""
    return f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural


def served(rtype: ResourceType, obj: Obj) -> Obj:
    """The stored object as served in ``rtype``'s version (its ``apiVersion``)."""
    if obj.get("apiVersion") == rtype.group_version:
        return obj
    return {**obj, "apiVersion": rtype.group_version}


def _spec_part(obj: Obj, rtype: ResourceType) -> Obj:
    skip = {"metadata", "status"} if rtype.status else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skip}


class Store:
    """Served resource types and the objects of all of them.

    ``namespaces`` (and ``kube-system``) exist from the start and ``crds`` are installed;
    each resource keeps the last ``watch_history`` events for watch replay.
    """

    def __init__(self, *, crds: Iterable[Obj] = (), namespaces: Iterable[str] = ("default",),
                 watch_history: int = 10_000) -> None:
        self.watch_history = watch_history
        self.rv = 0  # the last resourceVersion handed out
        self.types: dict[TypeKey, ResourceType] = {}
        self.resources: dict[StoreKey, Resource] = collections.defaultdict(Resource)
        for rtype in builtin_types():
            self.types[rtype.key] = rtype
        for ns in (*namespaces, "kube-system"):
            self.create_object("v1", "namespaces", {"metadata": {"name": ns}})
        for crd in crds:
            self.create_object("apiextensions.k8s.io/v1", "customresourcedefinitions", crd)

    # ------------------------------------------------------------------ direct access

    def resource_type(self, api_version: str, plural: str) -> ResourceType:
        """The served type of ``apps/v1`` + ``deployments`` (KeyError if unknown)."""
        group, _, version = api_version.rpartition("/")
        return self.types[(group, version, plural)]

    def resource(self, rtype: ResourceType) -> Resource:
        """The storage of ``rtype`` (shared by all its versions)."""
        return self.resources[(rtype.group, rtype.plural)]

    def get_object(self, api_version: str, plural: str, namespace: str | None,
                   name: str) -> Obj | None:
        """The stored object (do not mutate), or None."""
        rtype = self.resource_type(api_version, plural)
        return self.resource(rtype).objects.get((namespace or "", name))

    def replica_log(self, api_version: str, plural: str, namespace: str,
                    name: str) -> list[tuple[float, int]]:
        """Every ``(unix time, spec.replicas)`` the workload had, from creation (0 after its
        deletion); empty for one never seen."""
        rtype = self.resource_type(api_version, plural)
        return list(self.resource(rtype).replica_log.get((namespace, name), []))

    def list_objects(self, api_version: str, plural: str,
                     namespace: str | None = None) -> list[Obj]:
        rtype = self.resource_type(api_version, plural)
        objects = list(self.resource(rtype).objects.items())
        return [o for (ns, _), o in objects if namespace is None or ns == namespace]

    def create_object(self, api_version: str, plural: str, body: Obj) -> Obj:
        """Create as a POST would (raises :class:`ApiError`)."""
        rtype = self.resource_type(api_version, plural)
        namespace = body.get("metadata", {}).get("namespace") if rtype.namespaced else None
        return self.create(Target(rtype, namespace, None, None), copy.deepcopy(body), False)

    # ------------------------------------------------------------------ reads

    def select(self, target: Target, query: Mapping[str, str]) -> list[Obj]:
        """The objects of ``target`` (its namespace, if any) matching the query's
        ``labelSelector`` and ``fieldSelector``."""
        res = self.resource(target.rtype)
        labels = selectors.label_selector(query.get("labelSelector"))
        fields = selectors.field_selector(query.get("fieldSelector"))
        return [o for (ns, _), o in res.objects.items()
                if (target.namespace is None or ns == target.namespace) and labels(o)
                and fields(o)]

    def find(self, target: Target) -> Obj | None:
        res = self.resource(target.rtype)
        return res.objects.get((target.namespace or "", target.name or ""))

    def require(self, target: Target) -> Obj:
        """The object ``target`` names (404 if there is none)."""
        obj = self.find(target)
        if obj is None:
            raise ApiError(404, f'{qualified(target.rtype)} "{target.name}" not found',
                           details={"name": target.name, "group": target.rtype.group,
                                    "kind": target.rtype.plural})
        return obj

    # ------------------------------------------------------------------ events

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _emit(self, rtype: ResourceType, kind: str, obj: Obj) -> None:
        res = self.resource(rtype)
        if (rtype.group, rtype.plural) in _REPLICATED:
            _log_replicas(res, kind, obj)
        rv = int(obj["metadata"]["resourceVersion"])
        res.history.append((rv, kind, obj))
        while len(res.history) > self.watch_history:
            res.dropped_rv = res.history.popleft()[0]
        for watcher in list(res.watchers):
            if watcher.match(obj):
                watcher.queue.put_nowait((kind, obj))

    # ------------------------------------------------------------------ create

    def create(self, target: Target, body: Obj, dry_run: bool) -> Obj:
        """Store a new object (``body`` is taken over); 409 if the name exists."""
        rtype = target.rtype
        if not isinstance(body, dict):
            raise ApiError(400, "the body of a create must be an object")
        meta = meta_of(body)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
            else:
                raise ApiError(422, f"{rtype.kind} is invalid: metadata.name: Required value: "
                                    "name or generateName is required")
        self._place(rtype, target.namespace, meta)
        key = (meta.get("namespace", ""), meta["name"])
        res = self.resource(rtype)
        if key in res.objects:
            raise ApiError(409, f'{qualified(rtype)} "{meta["name"]}" already exists',
                           reason="AlreadyExists",
                           details={"name": meta["name"], "group": rtype.group,
                                    "kind": rtype.plural})
        body["apiVersion"], body["kind"] = rtype.group_version, rtype.kind
        for transient in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(transient, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        meta["generation"] = 1
        body = self._defaults(rtype, body)
        body = self._admit(rtype, body, meta["name"])
        if (rtype.group, rtype.plural) == CRD_KEY:
            body = self._install_crd(body, dry_run)
        if dry_run:
            return body
        body["metadata"]["resourceVersion"] = self._next_rv()
        res.objects[key] = body
        self._emit(rtype, "ADDED", body)
        return body

    def _place(self, rtype: ResourceType, url_namespace: str | None, meta: Obj) -> None:
        """Set (or drop) ``metadata.namespace`` of a new object; 404 if it does not exist."""
        if rtype.namespaced:
            namespace = url_namespace or meta.get("namespace") or "default"
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(400, "the namespace of the provided object does not match the "
                                    "namespace sent on the request")
            meta["namespace"] = namespace
            if (("", namespace) not in self.resources[NS_KEY].objects):
                raise ApiError(404, f'namespaces "{namespace}" not found',
                               details={"name": namespace, "kind": "namespaces"})
        else:
            meta.pop("namespace", None)

    def _defaults(self, rtype: ResourceType, body: Obj) -> Obj:
        if (rtype.group, rtype.plural) in _REPLICATED:
            body.setdefault("spec", {}).setdefault("replicas", 1)
            body.setdefault("status", {})
        elif (rtype.group, rtype.plural) == NS_KEY:
            body["status"] = {"phase": "Active"}
            body.setdefault("spec", {"finalizers": ["kubernetes"]})
        elif (rtype.group, rtype.plural) == ("", "pods"):
            body.setdefault("status", {"phase": "Pending"})
        return body

    def _admit(self, rtype: ResourceType, body: Obj, name: str) -> Obj:
        """Schema normalization and validation of custom resources (422 on violations)."""
        if rtype.schema is None:
            return body
        body = validation.normalize(body, rtype.schema)
        errors = validation.validate(body, rtype.schema)
        if errors:
            causes = [{"reason": "FieldValueInvalid", "message": str(e), "field": e.field}
                      for e in errors]
            raise ApiError(
                422, f'{rtype.kind}.{rtype.group} "{name}" is invalid: '
                     + ", ".join(str(e) for e in errors),
                details={"name": name, "group": rtype.group, "kind": rtype.kind,
                         "causes": causes})
        return body

    def _install_crd(self, crd: Obj, dry_run: bool) -> Obj:
        try:
            new_types = types_from_crd(crd)
        except (KeyError, TypeError) as e:
            raise ApiError(422, f"CustomResourceDefinition is invalid: missing {e}") from e
        if dry_run:
            return crd
        for key in [k for k, t in self.types.items() if t.from_crd == crd["metadata"]["name"]]:
            del self.types[key]
        for rtype in new_types:
            self.types[rtype.key] = rtype
        names = crd["spec"]["names"]
        crd["status"] = {
            "acceptedNames": names, "storedVersions": [v.version for v in new_types[:1]],
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now(),
                            "reason": r, "message": ""}
                           for t, r in (("NamesAccepted", "NoConflicts"),
                                        ("Established", "InitialNamesAccepted"))]}
        return crd

    # ------------------------------------------------------------------ update

    def update(self, target: Target, change: Change, dry_run: bool) -> Obj:
        """Read-modify-write of one object or its status/scale subresource."""
        rtype = target.rtype
        current = self.require(target)
        if target.subresource == "scale":
            return self._update_scale(target, current, change, dry_run)
        try:
            candidate = change(copy.deepcopy(current))
        except patching.PatchError as e:
            raise ApiError(422, str(e)) from e
        if not isinstance(candidate, dict):
            raise ApiError(422, "the patched object is not an object")
        new = self._merge_write(rtype, target.subresource, current, candidate)
        return self._store_update(rtype, current, new, dry_run)

    def _merge_write(self, rtype: ResourceType, subresource: str | None, current: Obj,
                     candidate: Obj) -> Obj:
        """The object to store: ``candidate`` checked against ``current`` (409 on a stale
        resourceVersion), with the fields the writer may not change kept from ``current``."""
        cmeta, meta = current["metadata"], meta_of(candidate)
        stated_rv = meta.get("resourceVersion")
        if stated_rv not in (None, "") and str(stated_rv) != cmeta["resourceVersion"]:
            raise ApiError(409, f'Operation cannot be fulfilled on {qualified(rtype)} '
                                f'"{cmeta["name"]}": the object has been modified; please apply '
                                "your changes to the latest version and try again",
                           details={"name": cmeta["name"], "group": rtype.group,
                                    "kind": rtype.plural})
        if meta.get("name", cmeta["name"]) != cmeta["name"]:
            raise ApiError(400, "the name of the object does not match the name on the URL")
        if subresource == "status":
            new = copy.deepcopy(current)
            if "status" in candidate:
                new["status"] = candidate["status"]
            else:
                new.pop("status", None)
            return new
        new = candidate
        new["apiVersion"], new["kind"] = current["apiVersion"], current["kind"]
        for fixed in ("uid", "creationTimestamp", "namespace", "deletionTimestamp",
                      "generation", "resourceVersion", "deletionGracePeriodSeconds"):
            if fixed in cmeta:
                meta[fixed] = cmeta[fixed]
            else:
                meta.pop(fixed, None)
        if rtype.status:
            if "status" in current:
                new["status"] = current["status"]
            else:
                new.pop("status", None)
        return new

    def _store_update(self, rtype: ResourceType, current: Obj, new: Obj, dry_run: bool) -> Obj:
        """Validate and store ``new`` in place of ``current``: generation, resourceVersion and
        the event (none for a no-op); a deleting object without finalizers goes."""
        name = current["metadata"]["name"]
        new = self._admit(rtype, new, name)
        if (rtype.group, rtype.plural) == CRD_KEY:
            new = self._install_crd(new, dry_run)
        if _spec_part(new, rtype) != _spec_part(current, rtype):
            new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if new == current or dry_run:
            return new
        new["metadata"]["resourceVersion"] = self._next_rv()
        key = (new["metadata"].get("namespace", ""), name)
        res = self.resource(rtype)
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del res.objects[key]
            self._emit(rtype, "DELETED", new)
            self._after_delete(rtype, new)
        else:
            res.objects[key] = new
            self._emit(rtype, "MODIFIED", new)
        return new

    # ------------------------------------------------------------------ scale subresource

    def scale_of(self, rtype: ResourceType, obj: Obj) -> Obj:
        """The ``autoscaling/v1`` Scale of ``obj`` (its type declares a scale subresource)."""
        assert rtype.scale is not None
        meta = obj["metadata"]
        status: Obj = {"replicas": dig(obj, rtype.scale.status_replicas) or 0}
        if rtype.scale.label_selector:
            raw = dig(obj, rtype.scale.label_selector)
            if isinstance(raw, dict):
                raw = selectors.selector_string(raw.get("matchLabels"))
            if raw:
                status["selector"] = raw
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                   "creationTimestamp") if k in meta},
                "spec": {"replicas": dig(obj, rtype.scale.spec_replicas) or 0},
                "status": status}

    def _update_scale(self, target: Target, current: Obj, change: Change,
                      dry_run: bool) -> Obj:
        rtype = target.rtype
        assert rtype.scale is not None
        scale = self.scale_of(rtype, current)
        try:
            new_scale = change(copy.deepcopy(scale))
        except patching.PatchError as e:
            raise ApiError(422, str(e)) from e
        replicas = (new_scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(422, f'Scale.autoscaling "{target.name}" is invalid: spec.replicas: '
                                f"Invalid value: {json.dumps(replicas)}: must be greater than or "
                                "equal to 0")
        stated_rv = (new_scale.get("metadata") or {}).get("resourceVersion")
        candidate = _set_path(current, rtype.scale.spec_replicas, replicas)
        candidate["metadata"]["resourceVersion"] = stated_rv
        new = self._merge_write(rtype, None, current, candidate)
        stored = self._store_update(rtype, current, new, dry_run)
        return self.scale_of(rtype, stored)

    # ------------------------------------------------------------------ delete

    def delete(self, target: Target, options: Obj) -> Obj:
        """Delete (409 on failed preconditions), or mark deleting while finalizers remain."""
        rtype = target.rtype
        current = self.require(target)
        pre = (options or {}).get("preconditions") or {}
        meta = current["metadata"]
        if (pre.get("resourceVersion") not in (None, meta["resourceVersion"])
                or pre.get("uid") not in (None, meta["uid"])):
            raise ApiError(409, f'Operation cannot be fulfilled on {qualified(rtype)} '
                                f'"{meta["name"]}": precondition failed')
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return current
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._store_update(rtype, current, new, False)
        res = self.resource(rtype)
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        del res.objects[(meta.get("namespace", ""), meta["name"])]
        self._emit(rtype, "DELETED", gone)
        self._after_delete(rtype, gone)
        return gone

    def _after_delete(self, rtype: ResourceType, obj: Obj) -> None:
        key = (rtype.group, rtype.plural)
        if key == NS_KEY:
            namespace = obj["metadata"]["name"]
            for (group, plural), res in list(self.resources.items()):
                for ns, name in [k for k in res.objects if k[0] == namespace]:
                    owner = next(t for t in self.types.values()
                                 if (t.group, t.plural) == (group, plural))
                    gone = copy.deepcopy(res.objects.pop((ns, name)))
                    gone["metadata"]["resourceVersion"] = self._next_rv()
                    self._emit(owner, "DELETED", gone)
        elif key == CRD_KEY:
            crd_name = obj["metadata"]["name"]
            for tkey in [k for k, t in self.types.items() if t.from_crd == crd_name]:
                rt = self.types.pop(tkey)
                self.resources.pop((rt.group, rt.plural), None)
