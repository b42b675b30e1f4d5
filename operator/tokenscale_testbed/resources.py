"""The resource types the API emulator serves: built-ins, and those a CRD declares.

A :class:`ResourceType` carries what discovery announces (kind, plural, short names, verbs,
subresources) and what the request handlers need (scope, scale paths, schema, printer columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ScalePaths:
    """JSON paths (dotted, leading dot) of the scale subresource inside the parent object."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = ".spec.selector"


@dataclass(frozen=True)
class ResourceType:
    """One served resource: ``group/version`` + ``plural``."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    singular: str = ""
    status: bool = False
    scale: ScalePaths | None = None
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    from_crd: str | None = None

    @property
    def group_version(self) -> str:
        """``apps/v1``, or ``v1`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        """The storage key (group, version, plural)."""
        return (self.group, self.version, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def discovery(self) -> list[dict[str, Any]]:
        """The APIResource entries of this type and its subresources."""
        main = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": VERBS,
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        out: list[dict[str, Any]] = [main]
        if self.status:
            out.append({"name": f"{self.plural}/status", "singularName": "",
                        "namespaced": self.namespaced, "kind": self.kind,
                        "verbs": ["get", "patch", "update"]})
        if self.scale is not None:
            out.append({"name": f"{self.plural}/scale", "singularName": "",
                        "namespaced": self.namespaced, "group": "autoscaling",
                        "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
        return out


def _rt(gv: str, plural: str, kind: str, **kw: Any) -> ResourceType:
    group, _, version = gv.rpartition("/")
    return ResourceType(group=group, version=version, plural=plural, kind=kind, **kw)


def builtin_types() -> list[ResourceType]:
    """The built-in resources a tokenscale cluster needs (a small subset of Kubernetes)."""
    scale = ScalePaths()
    return [
        _rt("v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",), status=True),
        _rt("v1", "pods", "Pod", short_names=("po",), status=True, categories=("all",)),
        _rt("v1", "services", "Service", short_names=("svc",), status=True, categories=("all",)),
        _rt("v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
        _rt("v1", "configmaps", "ConfigMap", short_names=("cm",)),
        _rt("v1", "secrets", "Secret"),
        _rt("v1", "endpoints", "Endpoints", short_names=("ep",)),
        _rt("v1", "events", "Event", short_names=("ev",)),
        _rt("v1", "nodes", "Node", namespaced=False, short_names=("no",), status=True),
        _rt("apps/v1", "deployments", "Deployment", short_names=("deploy",), status=True,
            scale=scale, categories=("all",)),
        _rt("apps/v1", "statefulsets", "StatefulSet", short_names=("sts",), status=True,
            scale=scale, categories=("all",)),
        _rt("apps/v1", "replicasets", "ReplicaSet", short_names=("rs",), status=True,
            scale=scale, categories=("all",)),
        _rt("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
            short_names=("hpa",), status=True, categories=("all",)),
        _rt("autoscaling/v1", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
            short_names=("hpa",), status=True),
        _rt("events.k8s.io/v1", "events", "Event", short_names=("ev",)),
        _rt("coordination.k8s.io/v1", "leases", "Lease"),
        _rt("rbac.authorization.k8s.io/v1", "roles", "Role"),
        _rt("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
        _rt("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", namespaced=False),
        _rt("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding",
            namespaced=False),
        _rt("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", short_names=("pdb",),
            status=True),
        _rt("monitoring.coreos.com/v1", "servicemonitors", "ServiceMonitor"),
        _rt("monitoring.coreos.com/v1", "prometheusrules", "PrometheusRule"),
        _rt("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition",
            namespaced=False, short_names=("crd", "crds"), status=True),
    ]


def _scale_paths(raw: dict[str, Any]) -> ScalePaths:
    return ScalePaths(
        spec_replicas=raw.get("specReplicasPath", ".spec.replicas"),
        status_replicas=raw.get("statusReplicasPath", ".status.replicas"),
        label_selector=raw.get("labelSelectorPath"),
    )


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition, as resource types."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    out: list[ResourceType] = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        out.append(ResourceType(
            group=spec["group"],
            version=version["name"],
            plural=names["plural"],
            kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames", ())),
            categories=tuple(names.get("categories", ())),
            singular=names.get("singular", names["kind"].lower()),
            status="status" in subresources,
            scale=_scale_paths(subresources["scale"]) if "scale" in subresources else None,
            schema=schema,
            printer_columns=tuple(version.get("additionalPrinterColumns", ())),
            from_crd=crd.get("metadata", {}).get("name"),
        ))
    return out


def schemaless_crd(
    group: str, version: str, plural: str, kind: str, scope: str = "Namespaced"
) -> dict[str, Any]:
    """A CRD that accepts any object (``x-kubernetes-preserve-unknown-fields``)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group, "scope": scope,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind,
                      "listKind": f"{kind}List"},
            "versions": [{
                "name": version, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }],
        },
    }


def kopf_peering_crds() -> list[dict[str, Any]]:
    """The kopf.dev peering CRDs (cluster-wide and namespaced), for kopf without --standalone."""
    return [schemaless_crd("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering",
                           "Cluster"),
            schemaless_crd("kopf.dev", "v1", "kopfpeerings", "KopfPeering")]


def keda_scaledobject_crd() -> dict[str, Any]:
    """KEDA's ScaledObject CRD (keda.sh/v1alpha1), enough to create and list ScaledObjects."""
    return schemaless_crd("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
