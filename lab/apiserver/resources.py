"""The resources the stand-in serves, declared once each: group, version, kind, names, scope, status.

Everything else (routing, discovery documents, storage keys, strategic-merge-patch metadata, field
selectors) is derived from this table, so adding a resource is one declaration here plus, if it
needs them, validation rules and table columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lab.apiserver.errors import ApiError, Reason

# Strategic-merge-patch metadata shared by every kind: ObjectMeta's merge lists
# (k8s.io/apimachinery ObjectMeta: finalizers patchStrategy=merge, ownerReferences by uid).
_META_MERGE: dict[str, str] = {"metadata.finalizers": "", "metadata.ownerReferences": "uid"}


def _container_lists() -> dict[str, str]:
    # core/v1 PodSpec and Container patch tags (patchStrategy:"merge" patchMergeKey:...).
    out: dict[str, str] = {}
    for containers in ("spec.containers", "spec.initContainers", "spec.ephemeralContainers"):
        out[containers] = "name"
        out[f"{containers}.ports"] = "containerPort"
        out[f"{containers}.env"] = "name"
        out[f"{containers}.volumeMounts"] = "mountPath"
        out[f"{containers}.volumeDevices"] = "devicePath"
    return out


_POD_MERGE: dict[str, str] = {
    **_container_lists(),
    "spec.volumes": "name",
    "spec.imagePullSecrets": "name",
    "spec.hostAliases": "ip",
    "spec.topologySpreadConstraints": "topologyKey",
    "spec.schedulingGates": "name",
    "spec.resourceClaims": "name",
    "status.conditions": "type",
    "status.podIPs": "ip",
    "status.hostIPs": "ip",
}
_NODE_MERGE: dict[str, str] = {
    "spec.podCIDRs": "",
    "status.conditions": "type",
    "status.addresses": "type",
}
_SERVICE_MERGE: dict[str, str] = {"spec.ports": "port", "status.conditions": "type"}
_NAMESPACE_MERGE: dict[str, str] = {"status.conditions": "type"}

_ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One served resource: how it is named on the wire and how it behaves."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    has_status: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # PUT on a missing object creates it (AllowCreateOnUpdate in the real registry).
    create_on_update: bool = False
    # Field selector labels beyond metadata.name/metadata.namespace, as dotted object paths.
    field_labels: tuple[str, ...] = ()
    # Strategic merge patch: dotted path of a list -> merge key ("" = merge a list of scalars).
    merge_keys: Mapping[str, str] = field(default_factory=dict, compare=False)
    # Top-level fields besides apiVersion/kind/metadata (for fieldValidation=Strict); () = spec (+ status).
    body_fields: tuple[str, ...] = ()

    @property
    def top_level_fields(self) -> frozenset[str]:
        """Return every top-level field an object of this kind may carry."""
        own = self.body_fields or (("spec", "status") if self.has_status else ("spec",))
        return frozenset(("apiVersion", "kind", "metadata", *own))

    @property
    def api_version(self) -> str:
        """Return the apiVersion string ("v1" or "group/version")."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        """Return the kind of the list type ("PodList")."""
        return f"{self.kind}List"

    @property
    def group_resource(self) -> str:
        """Return the resource as error messages name it ("pods", "networkpolicies.networking.k8s.io")."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """Return the kind as validation messages name it ("Pod", "NetworkPolicy.networking.k8s.io")."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def storage_name(self) -> str:
        """Return the stable key this resource's objects are persisted under ("core/pods")."""
        return f"{self.group or 'core'}/{self.plural}"

    def merge_key(self, path: str) -> str | None:
        """Return the merge key of the list at dotted `path`: "" merges scalars as a set, None replaces."""
        if path in _META_MERGE:
            return _META_MERGE[path]
        return self.merge_keys.get(path)


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        namespaced=False,
        has_status=True,
        short_names=("ns",),
        field_labels=("status.phase",),
        merge_keys=_NAMESPACE_MERGE,
    ),
    ResourceType(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        namespaced=False,
        has_status=True,
        short_names=("no",),
        field_labels=("spec.unschedulable",),
        merge_keys=_NODE_MERGE,
    ),
    ResourceType(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        namespaced=True,
        has_status=True,
        short_names=("po",),
        categories=("all",),
        field_labels=(
            "spec.nodeName",
            "status.phase",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.podIP",
            "status.nominatedNodeName",
        ),
        merge_keys=_POD_MERGE,
    ),
    ResourceType(
        "",
        "v1",
        "Service",
        "services",
        "service",
        namespaced=True,
        has_status=True,
        short_names=("svc",),
        categories=("all",),
        merge_keys=_SERVICE_MERGE,
    ),
    ResourceType(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        namespaced=True,
        has_status=False,
        short_names=("ep",),
        create_on_update=True,
        body_fields=("subsets",),
    ),
    ResourceType(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        namespaced=True,
        has_status=False,
        create_on_update=True,
        field_labels=("addressType",),
        body_fields=("addressType", "endpoints", "ports"),
    ),
    ResourceType(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        namespaced=True,
        has_status=False,
        short_names=("netpol",),
    ),
    ResourceType(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        namespaced=True,
        has_status=False,
        create_on_update=True,
    ),
)

_BY_PATH: dict[tuple[str, str, str], ResourceType] = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KIND: dict[str, ResourceType] = {r.kind: r for r in RESOURCES}

NAMESPACES: ResourceType = _BY_KIND["Namespace"]
SERVICES: ResourceType = _BY_KIND["Service"]


def lookup(group: str, version: str, plural: str) -> ResourceType:
    """Return the resource served at group/version/plural; raise a 404 ApiError when there is none."""
    found = _BY_PATH.get((group, version, plural))
    if found is None:
        gv = f"{group}/{version}" if group else version
        raise ApiError(
            404,
            Reason.NOT_FOUND,
            f"the server could not find the requested resource ({plural} in {gv})",
            details={"group": group, "kind": plural},
        )
    return found


def by_kind(kind: str) -> ResourceType:
    """Return the resource with this kind; raise KeyError when it is not served."""
    return _BY_KIND[kind]


def group_versions() -> dict[str, list[str]]:
    """Return {group: [versions]} for every served group, core ("") included, in declaration order."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


def resources_in(group: str, version: str) -> list[ResourceType]:
    """Return the resources served in one group/version, in declaration order."""
    return [r for r in RESOURCES if r.group == group and r.version == version]


def verbs() -> tuple[str, ...]:
    """Return the verbs every resource supports (all of them; the stand-in has no read-only kinds)."""
    return _ALL_VERBS
