"""What the server does to an object on its way into storage: defaults, system fields, the status
subresource split, Service IP and node-port allocation, and the fields that may not change.

These follow the real registry strategies (PrepareForCreate / PrepareForUpdate) for the kinds the
stand-in serves, reduced to what a CNI controller observes.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable
from typing import Any

from lab.apiserver.errors import ApiError, ErrorType, FieldError, JsonObj, Reason
from lab.apiserver.resources import ResourceType

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
NODE_PORT_RANGE = (30000, 32767)
_POD_MUTABLE_SPEC = (
    "activeDeadlineSeconds",
    "tolerations",
    "schedulingGates",
    "terminationGracePeriodSeconds",
)


def invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    """Return the 422 Invalid error for `errors`, worded as the real server words it."""
    summary = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    details: JsonObj = {
        "name": name,
        "kind": rt.kind,
        "causes": [{"reason": e.type.value, "message": e.body(), "field": e.path} for e in errors],
    }
    if rt.group:
        details["group"] = rt.group
    return ApiError(
        422, Reason.INVALID, f'{rt.qualified_kind} "{name}" is invalid: {summary}', details=details
    )


def _spec_without(obj: JsonObj) -> JsonObj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


def apply_defaults(rt: ResourceType, obj: JsonObj) -> None:
    """Fill in the defaults the real API server sets for the fields Sluice reads (in place)."""
    if rt.kind == "Pod":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            for key in ("containers", "initContainers"):
                for container in spec.get(key) or []:
                    if not isinstance(container, dict):
                        continue
                    image = container.get("image")
                    if isinstance(image, str) and "imagePullPolicy" not in container:
                        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
                        container["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
                    container.setdefault("terminationMessagePath", "/dev/termination-log")
                    container.setdefault("terminationMessagePolicy", "File")
                    _default_protocols(container.get("ports"))
    elif rt.kind == "Service":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec.get("type") != "ExternalName":
                spec.setdefault("internalTrafficPolicy", "Cluster")
            for port in spec.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
                    if "port" in port:
                        port.setdefault("targetPort", port["port"])
    elif rt.kind == "NetworkPolicy":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            if spec.get("podSelector") is None:
                spec["podSelector"] = {}
            if not spec.get("policyTypes"):
                # networking/v1 defaulting: Ingress always, Egress when there are egress rules.
                spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
            for direction in ("ingress", "egress"):
                for rule in spec.get(direction) or []:
                    if isinstance(rule, dict):
                        _default_protocols(rule.get("ports"))
    elif rt.kind == "Endpoints":
        for subset in obj.get("subsets") or []:
            if isinstance(subset, dict):
                _default_protocols(subset.get("ports"))
    elif rt.kind == "EndpointSlice":
        _default_protocols(obj.get("ports"))


def _default_protocols(ports: Any) -> None:
    for port in ports if isinstance(ports, list) else []:
        if isinstance(port, dict) and port.get("protocol") is None:
            port["protocol"] = "TCP"


def prepare_create(rt: ResourceType, obj: JsonObj) -> None:
    """Apply create-time rules (status reset, namespace label, generation) to a new object, in place."""
    meta = obj["metadata"]
    meta["generation"] = 1
    if rt.kind == "Namespace":
        meta.setdefault("labels", {})[NAMESPACE_NAME_LABEL] = meta["name"]
        obj["status"] = {"phase": "Active"}
    elif rt.kind == "Pod":
        # A new Pod starts Pending whatever status it was sent with (podStrategy.PrepareForCreate).
        obj["status"] = {"phase": "Pending"}
    elif rt.kind == "Service":
        obj["status"] = {"loadBalancer": {}}
    apply_defaults(rt, obj)


def prepare_update(rt: ResourceType, new: JsonObj, old: JsonObj, subresource: str | None) -> JsonObj:
    """Return the object to store for an update of `old` with `new` (main resource or /status).

    System fields come from `old`; the main resource cannot change status and /status can change
    nothing else. Raises ApiError (422) for changes to immutable fields.
    """
    old_meta = old["metadata"]
    if subresource == "status":
        result = copy.deepcopy(old)
        if "status" in new:
            result["status"] = new["status"]
        else:
            result.pop("status", None)
        return result
    result = new
    meta = result["metadata"]
    for key in ("uid", "creationTimestamp", "namespace", "name"):
        if key in old_meta:
            meta[key] = old_meta[key]
    meta.pop("deletionTimestamp", None)
    meta.pop("managedFields", None)
    meta.pop("selfLink", None)
    if rt.has_status:
        if "status" in old:
            result["status"] = copy.deepcopy(old["status"])
        else:
            result.pop("status", None)
    if rt.kind == "Namespace":
        meta.setdefault("labels", {})[NAMESPACE_NAME_LABEL] = meta["name"]
    apply_defaults(rt, result)
    if rt.kind == "Pod":
        _check_pod_update(rt, result, old)
    elif rt.kind == "Service":
        _carry_service_allocations(rt, result, old)
    generation = old_meta.get("generation", 1)
    meta["generation"] = generation + 1 if _spec_without(result) != _spec_without(old) else generation
    return result


def _check_pod_update(rt: ResourceType, new: JsonObj, old: JsonObj) -> None:
    # Pod specs are immutable apart from images and a few scheduling fields (ValidatePodUpdate).
    def masked(spec: Any) -> Any:
        if not isinstance(spec, dict):
            return spec
        out = {k: v for k, v in spec.items() if k not in _POD_MUTABLE_SPEC}
        for key in ("containers", "initContainers"):
            if isinstance(out.get(key), list):
                out[key] = [
                    {k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c
                    for c in out[key]
                ]
        return out

    if masked(new.get("spec")) != masked(old.get("spec")):
        raise invalid(
            rt,
            new["metadata"]["name"],
            [
                FieldError(
                    "spec",
                    ErrorType.FORBIDDEN,
                    None,
                    "pod updates may not change fields other than `spec.containers[*].image`, "
                    "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
                    "(only additions to existing tolerations), `spec.terminationGracePeriodSeconds` "
                    "(allow it to be set to 1 if it was previously negative)",
                )
            ],
        )


def _carry_service_allocations(rt: ResourceType, new: JsonObj, old: JsonObj) -> None:
    spec = new.get("spec")
    old_spec = old.get("spec") or {}
    if not isinstance(spec, dict):
        return
    old_ip = old_spec.get("clusterIP")
    if not spec.get("clusterIP"):
        if old_ip:
            spec["clusterIP"] = old_ip
        if old_spec.get("clusterIPs"):
            spec["clusterIPs"] = list(old_spec["clusterIPs"])
    elif old_ip and spec["clusterIP"] != old_ip:
        raise invalid(
            rt,
            new["metadata"]["name"],
            [
                FieldError(
                    "spec.clusterIPs[0]", ErrorType.INVALID, spec["clusterIP"], "may not change once set"
                )
            ],
        )
    for key in ("ipFamilies", "ipFamilyPolicy"):
        if key not in spec and key in old_spec:
            spec[key] = copy.deepcopy(old_spec[key])
    old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in old_spec.get("ports") or []}
    for port in spec.get("ports") or []:
        if isinstance(port, dict) and not port.get("nodePort"):
            previous = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
            if previous and previous.get("nodePort") and spec.get("type") in ("NodePort", "LoadBalancer"):
                port["nodePort"] = previous["nodePort"]


def allocate_service(
    rt: ResourceType, obj: JsonObj, existing: Iterable[JsonObj], service_cidr: ipaddress.IPv4Network
) -> None:
    """Give a new ClusterIP Service its cluster IP (and node ports), as the real allocators do.

    Raises ApiError 422 when a requested IP is outside the range or taken, or the range is full.
    """
    spec = obj.get("spec")
    if not isinstance(spec, dict) or spec.get("type") == "ExternalName":
        return
    name = obj["metadata"]["name"]
    used_ips: set[str] = set()
    used_ports: set[int] = set()
    for svc in existing:
        other = svc.get("spec") or {}
        if other.get("clusterIP") not in (None, "", "None"):
            used_ips.add(other["clusterIP"])
        for port in other.get("ports") or []:
            if port.get("nodePort"):
                used_ports.add(port["nodePort"])
    wanted = spec.get("clusterIP")
    if wanted == "None":
        spec["clusterIPs"] = ["None"]
    elif wanted:
        problem = ""
        if ipaddress.ip_address(wanted) not in service_cidr:
            problem = f"provided IP is not in the valid range. The range of valid IPs is {service_cidr}"
        elif wanted in used_ips:
            problem = "provided IP is already allocated"
        if problem:
            raise invalid(
                rt,
                name,
                [
                    FieldError(
                        "spec.clusterIPs",
                        ErrorType.INVALID,
                        [wanted],
                        f"failed to allocate IP {wanted}: {problem}",
                    )
                ],
            )
        spec["clusterIPs"] = [wanted]
    else:
        # Skip the network address and .1, which a real cluster gives to the `kubernetes` Service.
        for index, host in enumerate(service_cidr.hosts()):
            if index == 0:
                continue
            if str(host) not in used_ips:
                spec["clusterIP"] = str(host)
                spec["clusterIPs"] = [str(host)]
                break
        else:
            raise invalid(
                rt,
                name,
                [
                    FieldError(
                        "spec.clusterIPs",
                        ErrorType.INVALID,
                        None,
                        f"failed to allocate a service IP: range {service_cidr} is full",
                    )
                ],
            )
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        low, high = NODE_PORT_RANGE
        for i, port in enumerate(spec.get("ports") or []):
            if not isinstance(port, dict):
                continue
            node_port = port.get("nodePort")
            if node_port:
                if node_port in used_ports:
                    raise invalid(
                        rt,
                        name,
                        [
                            FieldError(
                                f"spec.ports[{i}].nodePort",
                                ErrorType.INVALID,
                                node_port,
                                "provided port is already allocated",
                            )
                        ],
                    )
                used_ports.add(node_port)
                continue
            free = next((p for p in range(low, high + 1) if p not in used_ports), None)
            if free is None:
                raise invalid(
                    rt,
                    name,
                    [
                        FieldError(
                            f"spec.ports[{i}].nodePort", ErrorType.INVALID, None, "node port range is full"
                        )
                    ],
                )
            port["nodePort"] = free
            used_ports.add(free)
