"""Validation of the objects the stand-in stores: metadata for every kind, plus the rules for the
fields Sluice depends on (NetworkPolicy peers and ports, Service ports, Pod containers, addresses).

It is deliberately smaller than the real API server's validation: it rejects what would make
Sluice's tests meaningless (bad ports, bad CIDRs, bad selectors, bad names) with the same field
paths and wording, and accepts fields it does not know.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from lab.apiserver.errors import ErrorType, FieldError, JsonObj
from lab.apiserver.resources import ResourceType
from lab.apiserver.selectors import label_key_errors, label_map_errors, selector_object_errors

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_SUPPORTED_PROTOCOLS = 'supported values: "SCTP", "TCP", "UDP"'
MAX_ANNOTATIONS_BYTES = 256 * 1024

Errors = list[FieldError]


def _name_errors(value: str, max_len: int, pattern: re.Pattern[str], explanation: str) -> list[str]:
    """Return why `value` is longer than `max_len` or does not match `pattern`; [] if neither."""
    if len(value) > max_len:
        return [f"must be no more than {max_len} characters"]
    return [] if pattern.match(value) else [explanation]


def dns1123_label_errors(value: str) -> list[str]:
    """Return why `value` is not an RFC 1123 label (namespace names); [] if it is."""
    return _name_errors(
        value,
        63,
        _DNS1123_LABEL,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
        "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc')",
    )


def dns1123_subdomain_errors(value: str) -> list[str]:
    """Return why `value` is not an RFC 1123 subdomain (most object names); [] if it is."""
    return _name_errors(
        value,
        253,
        _DNS1123_SUBDOMAIN,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
        "or '.', and must start and end with an alphanumeric character (e.g. 'example.com')",
    )


def dns1035_label_errors(value: str) -> list[str]:
    """Return why `value` is not an RFC 1035 label (Service names); [] if it is."""
    return _name_errors(
        value,
        63,
        _DNS1035_LABEL,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
        "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123')",
    )


def port_name_errors(value: str) -> list[str]:
    """Return why `value` is not an IANA service name (named ports); [] if it is."""
    errs = []
    if len(value) > 15:
        errs.append("must be no more than 15 characters")
    if not _IANA_SVC_NAME.match(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if not any(c.isalpha() for c in value):
        errs.append("must contain at least one letter (a-z)")
    return errs


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _port_number(errs: Errors, value: Any, path: str, *, required: bool = True, low: int = 1) -> None:
    if value is None:
        if required:
            errs.append(FieldError(path, ErrorType.REQUIRED))
        return
    if not _is_int(value) or not low <= value <= 65535:
        errs.append(FieldError(path, ErrorType.INVALID, value, f"must be between {low} and 65535, inclusive"))


def _protocol(errs: Errors, value: Any, path: str) -> None:
    if value is not None and value not in _PROTOCOLS:
        errs.append(FieldError(path, ErrorType.NOT_SUPPORTED, value, _SUPPORTED_PROTOCOLS))


def _int_or_name_port(errs: Errors, value: Any, path: str) -> None:
    if isinstance(value, str):
        errs.extend(FieldError(path, ErrorType.INVALID, value, e) for e in port_name_errors(value))
    else:
        _port_number(errs, value, path)


def _ip(
    errs: Errors, value: Any, path: str, *, required: bool = True
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if value is None or value == "":
        if required:
            errs.append(FieldError(path, ErrorType.REQUIRED))
        return None
    try:
        return ipaddress.ip_address(value)
    except (ValueError, TypeError):
        errs.append(
            FieldError(
                path,
                ErrorType.INVALID,
                value,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )
        )
        return None


def _cidr(errs: Errors, value: Any, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not isinstance(value, str) or not value:
        errs.append(
            FieldError(path, ErrorType.REQUIRED)
            if not value
            else FieldError(path, ErrorType.INVALID, value, "must be a string")
        )
        return None
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        errs.append(
            FieldError(
                path,
                ErrorType.INVALID,
                value,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )
        )
        return None


def _obj(errs: Errors, value: Any, path: str) -> JsonObj:
    """Return `value` if it is a map (or absent: {}); otherwise record an error and return {}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        errs.append(FieldError(path, ErrorType.INVALID, value, "must be an object"))
        return {}
    return value


def _list(errs: Errors, value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        errs.append(FieldError(path, ErrorType.INVALID, value, "must be a list"))
        return []
    return value


# ---------------------------------------------------------------------------------------------
# metadata


def name_errors(rt: ResourceType, name: str) -> list[str]:
    """Return why `name` is not a valid name for this kind; [] if it is."""
    if rt.kind == "Namespace":
        return dns1123_label_errors(name)
    if rt.kind == "Service":
        return dns1035_label_errors(name)
    if name in (".", "..") or "/" in name or "%" in name:
        return ["may not be '.' or '..' and may not contain '/' or '%'"]
    return dns1123_subdomain_errors(name)


def validate_metadata(rt: ResourceType, meta: Any) -> Errors:
    """Validate metadata: name, labels, annotations (keys, types, total size)."""
    errs: Errors = []
    if not isinstance(meta, dict):
        return [FieldError("metadata", ErrorType.REQUIRED)]
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        errs.append(FieldError("metadata.name", ErrorType.REQUIRED, None, "name or generateName is required"))
    else:
        errs.extend(FieldError("metadata.name", ErrorType.INVALID, name, e) for e in name_errors(rt, name))
    if "labels" in meta and meta["labels"] is not None:
        errs.extend(label_map_errors(meta["labels"], "metadata.labels"))
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict):
            errs.append(
                FieldError(
                    "metadata.annotations",
                    ErrorType.INVALID,
                    annotations,
                    "must be a map of string keys to string values",
                )
            )
        else:
            total = 0
            for key, value in annotations.items():
                errs.extend(
                    FieldError("metadata.annotations", ErrorType.INVALID, key, e)
                    for e in label_key_errors(key.lower())
                )
                if not isinstance(value, str):
                    errs.append(
                        FieldError(
                            f"metadata.annotations[{key}]", ErrorType.INVALID, value, "must be a string"
                        )
                    )
                    continue
                total += len(key) + len(value)
            if total > MAX_ANNOTATIONS_BYTES:
                errs.append(
                    FieldError(
                        "metadata.annotations",
                        ErrorType.TOO_LONG,
                        None,
                        f"may not be more than {MAX_ANNOTATIONS_BYTES} bytes",
                    )
                )
    for field_name in ("finalizers",):
        value = meta.get(field_name)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            errs.append(
                FieldError(f"metadata.{field_name}", ErrorType.INVALID, value, "must be a list of strings")
            )
    return errs


# ---------------------------------------------------------------------------------------------
# per kind


def _containers(errs: Errors, containers: Any, path: str, *, required: bool) -> None:
    items = _list(errs, containers, path)
    if required and not items:
        errs.append(FieldError(path, ErrorType.REQUIRED))
    seen: set[str] = set()
    for i, c in enumerate(items):
        cpath = f"{path}[{i}]"
        c = _obj(errs, c, cpath)
        name = c.get("name")
        if not isinstance(name, str) or not name:
            errs.append(FieldError(f"{cpath}.name", ErrorType.REQUIRED))
        else:
            errs.extend(
                FieldError(f"{cpath}.name", ErrorType.INVALID, name, e) for e in dns1123_label_errors(name)
            )
            if name in seen:
                errs.append(FieldError(f"{cpath}.name", ErrorType.DUPLICATE, name))
            seen.add(name)
        image = c.get("image")
        if not isinstance(image, str) or not image.strip():
            errs.append(FieldError(f"{cpath}.image", ErrorType.REQUIRED))
        for j, port in enumerate(_list(errs, c.get("ports"), f"{cpath}.ports")):
            ppath = f"{cpath}.ports[{j}]"
            port = _obj(errs, port, ppath)
            _port_number(errs, port.get("containerPort"), f"{ppath}.containerPort")
            if port.get("hostPort") not in (None, 0):
                _port_number(errs, port.get("hostPort"), f"{ppath}.hostPort")
            _protocol(errs, port.get("protocol"), f"{ppath}.protocol")
            if port.get("name") is not None:
                pname = port["name"]
                if not isinstance(pname, str):
                    errs.append(FieldError(f"{ppath}.name", ErrorType.INVALID, pname, "must be a string"))
                else:
                    errs.extend(
                        FieldError(f"{ppath}.name", ErrorType.INVALID, pname, e)
                        for e in port_name_errors(pname)
                    )


def _validate_pod(obj: JsonObj) -> Errors:
    errs: Errors = []
    spec = _obj(errs, obj.get("spec"), "spec")
    _containers(errs, spec.get("containers"), "spec.containers", required=True)
    _containers(errs, spec.get("initContainers"), "spec.initContainers", required=False)
    node = spec.get("nodeName")
    if node not in (None, ""):
        if not isinstance(node, str):
            errs.append(FieldError("spec.nodeName", ErrorType.INVALID, node, "must be a string"))
        else:
            errs.extend(
                FieldError("spec.nodeName", ErrorType.INVALID, node, e)
                for e in dns1123_subdomain_errors(node)
            )
    restart = spec.get("restartPolicy")
    if restart is not None and restart not in ("Always", "OnFailure", "Never"):
        errs.append(
            FieldError(
                "spec.restartPolicy",
                ErrorType.NOT_SUPPORTED,
                restart,
                'supported values: "Always", "OnFailure", "Never"',
            )
        )
    if spec.get("hostNetwork") is not None and not isinstance(spec["hostNetwork"], bool):
        errs.append(
            FieldError("spec.hostNetwork", ErrorType.INVALID, spec["hostNetwork"], "must be a boolean")
        )
    errs.extend(_validate_pod_status(obj))
    return errs


def _validate_pod_status(obj: JsonObj) -> Errors:
    errs: Errors = []
    status = _obj(errs, obj.get("status"), "status")
    phase = status.get("phase")
    if phase is not None and phase not in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
        errs.append(
            FieldError(
                "status.phase",
                ErrorType.NOT_SUPPORTED,
                phase,
                'supported values: "Pending", "Running", "Succeeded", "Failed", "Unknown"',
            )
        )
    pod_ip = _ip(errs, status.get("podIP"), "status.podIP", required=False)
    ips = _list(errs, status.get("podIPs"), "status.podIPs")
    for i, entry in enumerate(ips):
        entry = _obj(errs, entry, f"status.podIPs[{i}]")
        parsed = _ip(errs, entry.get("ip"), f"status.podIPs[{i}].ip")
        if i == 0 and pod_ip is not None and parsed is not None and parsed != pod_ip:
            errs.append(
                FieldError(
                    "status.podIPs[0].ip", ErrorType.INVALID, entry.get("ip"), "must match status.podIP"
                )
            )
    _conditions(errs, status.get("conditions"), "status.conditions")
    return errs


def _conditions(errs: Errors, conditions: Any, path: str) -> None:
    for i, cond in enumerate(_list(errs, conditions, path)):
        cpath = f"{path}[{i}]"
        cond = _obj(errs, cond, cpath)
        if not isinstance(cond.get("type"), str) or not cond.get("type"):
            errs.append(FieldError(f"{cpath}.type", ErrorType.REQUIRED))
        if cond.get("status") not in ("True", "False", "Unknown"):
            errs.append(
                FieldError(
                    f"{cpath}.status",
                    ErrorType.NOT_SUPPORTED,
                    cond.get("status"),
                    'supported values: "True", "False", "Unknown"',
                )
            )


def _validate_node(obj: JsonObj) -> Errors:
    errs: Errors = []
    spec = _obj(errs, obj.get("spec"), "spec")
    first = None
    if spec.get("podCIDR"):
        first = _cidr(errs, spec["podCIDR"], "spec.podCIDR")
    cidrs = _list(errs, spec.get("podCIDRs"), "spec.podCIDRs")
    for i, cidr in enumerate(cidrs):
        parsed = _cidr(errs, cidr, f"spec.podCIDRs[{i}]")
        if i == 0 and first is not None and parsed is not None and parsed != first:
            errs.append(FieldError("spec.podCIDRs[0]", ErrorType.INVALID, cidr, "must match spec.podCIDR"))
    for i, taint in enumerate(_list(errs, spec.get("taints"), "spec.taints")):
        taint = _obj(errs, taint, f"spec.taints[{i}]")
        if taint.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            errs.append(
                FieldError(
                    f"spec.taints[{i}].effect",
                    ErrorType.NOT_SUPPORTED,
                    taint.get("effect"),
                    'supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"',
                )
            )
    status = _obj(errs, obj.get("status"), "status")
    for i, addr in enumerate(_list(errs, status.get("addresses"), "status.addresses")):
        addr = _obj(errs, addr, f"status.addresses[{i}]")
        if addr.get("type") not in ("Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS"):
            errs.append(
                FieldError(
                    f"status.addresses[{i}].type",
                    ErrorType.NOT_SUPPORTED,
                    addr.get("type"),
                    'supported values: "Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS"',
                )
            )
        if not isinstance(addr.get("address"), str) or not addr.get("address"):
            errs.append(FieldError(f"status.addresses[{i}].address", ErrorType.REQUIRED))
        elif addr.get("type") in ("InternalIP", "ExternalIP"):
            _ip(errs, addr["address"], f"status.addresses[{i}].address")
    _conditions(errs, status.get("conditions"), "status.conditions")
    return errs


def _validate_service(obj: JsonObj) -> Errors:
    errs: Errors = []
    spec = _obj(errs, obj.get("spec"), "spec")
    svc_type = spec.get("type", "ClusterIP")
    if svc_type not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errs.append(
            FieldError(
                "spec.type",
                ErrorType.NOT_SUPPORTED,
                svc_type,
                'supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
            )
        )
    headless = spec.get("clusterIP") == "None"
    ports = _list(errs, spec.get("ports"), "spec.ports")
    if not ports and not headless and svc_type != "ExternalName":
        errs.append(FieldError("spec.ports", ErrorType.REQUIRED))
    names: set[str] = set()
    keys: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        ppath = f"spec.ports[{i}]"
        port = _obj(errs, port, ppath)
        name = port.get("name")
        if len(ports) > 1 and not name:
            errs.append(FieldError(f"{ppath}.name", ErrorType.REQUIRED))
        if name:
            if not isinstance(name, str):
                errs.append(FieldError(f"{ppath}.name", ErrorType.INVALID, name, "must be a string"))
            else:
                errs.extend(
                    FieldError(f"{ppath}.name", ErrorType.INVALID, name, e)
                    for e in dns1123_label_errors(name)
                )
                if name in names:
                    errs.append(FieldError(f"{ppath}.name", ErrorType.DUPLICATE, name))
                names.add(name)
        _port_number(errs, port.get("port"), f"{ppath}.port")
        _protocol(errs, port.get("protocol"), f"{ppath}.protocol")
        key = (port.get("port"), port.get("protocol", "TCP"))
        if key in keys:
            errs.append(FieldError(ppath, ErrorType.DUPLICATE, {"port": key[0], "protocol": key[1]}))
        keys.add(key)
        if port.get("targetPort") is not None:
            _int_or_name_port(errs, port["targetPort"], f"{ppath}.targetPort")
        if port.get("nodePort") not in (None, 0):
            _port_number(errs, port["nodePort"], f"{ppath}.nodePort")
    selector = spec.get("selector")
    if selector is not None:
        errs.extend(label_map_errors(selector, "spec.selector"))
    for field_name in ("clusterIP",):
        value = spec.get(field_name)
        if value not in (None, "", "None"):
            _ip(errs, value, f"spec.{field_name}")
    status = _obj(errs, obj.get("status"), "status")
    _meta_conditions(errs, status.get("conditions"), "status.conditions")
    return errs


_CONDITION_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def _meta_conditions(errs: Errors, conditions: Any, path: str) -> None:
    """Validate metav1.Condition entries (Service status): type, status, reason, lastTransitionTime."""
    for i, cond in enumerate(_list(errs, conditions, path)):
        cpath = f"{path}[{i}]"
        cond = _obj(errs, cond, cpath)
        if not isinstance(cond.get("type"), str) or not cond.get("type"):
            errs.append(FieldError(f"{cpath}.type", ErrorType.REQUIRED))
        if cond.get("status") not in ("True", "False", "Unknown"):
            errs.append(
                FieldError(
                    f"{cpath}.status",
                    ErrorType.NOT_SUPPORTED,
                    cond.get("status"),
                    'supported values: "False", "True", "Unknown"',
                )
            )
        if not cond.get("lastTransitionTime"):
            errs.append(FieldError(f"{cpath}.lastTransitionTime", ErrorType.REQUIRED, None, "must be set"))
        reason = cond.get("reason")
        if not isinstance(reason, str) or not reason:
            errs.append(FieldError(f"{cpath}.reason", ErrorType.REQUIRED))
        elif not _CONDITION_REASON.match(reason):
            errs.append(
                FieldError(
                    f"{cpath}.reason",
                    ErrorType.INVALID,
                    reason,
                    "a condition reason must start with alphabetic character, optionally followed "
                    "by a string of alphanumeric characters or '_,:', and must end with an "
                    "alphanumeric character or '_'",
                )
            )
        if cond.get("message") is not None and not isinstance(cond.get("message"), str):
            errs.append(
                FieldError(f"{cpath}.message", ErrorType.INVALID, cond.get("message"), "must be a string")
            )


def _validate_endpoints(obj: JsonObj) -> Errors:
    errs: Errors = []
    for i, subset in enumerate(_list(errs, obj.get("subsets"), "subsets")):
        spath = f"subsets[{i}]"
        subset = _obj(errs, subset, spath)
        for field_name in ("addresses", "notReadyAddresses"):
            for j, addr in enumerate(_list(errs, subset.get(field_name), f"{spath}.{field_name}")):
                addr = _obj(errs, addr, f"{spath}.{field_name}[{j}]")
                _ip(errs, addr.get("ip"), f"{spath}.{field_name}[{j}].ip")
        for j, port in enumerate(_list(errs, subset.get("ports"), f"{spath}.ports")):
            port = _obj(errs, port, f"{spath}.ports[{j}]")
            _port_number(errs, port.get("port"), f"{spath}.ports[{j}].port")
            _protocol(errs, port.get("protocol"), f"{spath}.ports[{j}].protocol")
    return errs


def _validate_endpointslice(obj: JsonObj) -> Errors:
    errs: Errors = []
    family = obj.get("addressType")
    if family not in ("IPv4", "IPv6", "FQDN"):
        errs.append(
            FieldError("addressType", ErrorType.REQUIRED)
            if family is None
            else FieldError(
                "addressType", ErrorType.NOT_SUPPORTED, family, 'supported values: "FQDN", "IPv4", "IPv6"'
            )
        )
    for i, ep in enumerate(_list(errs, obj.get("endpoints"), "endpoints")):
        epath = f"endpoints[{i}]"
        ep = _obj(errs, ep, epath)
        addrs = _list(errs, ep.get("addresses"), f"{epath}.addresses")
        if not addrs:
            errs.append(FieldError(f"{epath}.addresses", ErrorType.REQUIRED))
        for j, addr in enumerate(addrs):
            if family in ("IPv4", "IPv6"):
                parsed = _ip(errs, addr, f"{epath}.addresses[{j}]")
                if parsed is not None and parsed.version != (4 if family == "IPv4" else 6):
                    errs.append(
                        FieldError(
                            f"{epath}.addresses[{j}]", ErrorType.INVALID, addr, f"must be an {family} address"
                        )
                    )
        conditions = _obj(errs, ep.get("conditions"), f"{epath}.conditions")
        for cond in ("ready", "serving", "terminating"):
            if conditions.get(cond) is not None and not isinstance(conditions[cond], bool):
                errs.append(
                    FieldError(
                        f"{epath}.conditions.{cond}", ErrorType.INVALID, conditions[cond], "must be a boolean"
                    )
                )
    for i, port in enumerate(_list(errs, obj.get("ports"), "ports")):
        port = _obj(errs, port, f"ports[{i}]")
        if port.get("port") is not None:
            _port_number(errs, port["port"], f"ports[{i}].port", low=0)
        _protocol(errs, port.get("protocol"), f"ports[{i}].protocol")
    return errs


def _validate_networkpolicy(obj: JsonObj) -> Errors:
    errs: Errors = []
    spec = _obj(errs, obj.get("spec"), "spec")
    errs.extend(selector_object_errors(spec.get("podSelector"), "spec.podSelector"))
    types = _list(errs, spec.get("policyTypes"), "spec.policyTypes")
    seen: set[str] = set()
    for i, ptype in enumerate(types):
        if ptype not in ("Ingress", "Egress"):
            errs.append(
                FieldError(
                    f"spec.policyTypes[{i}]",
                    ErrorType.NOT_SUPPORTED,
                    ptype,
                    'supported values: "Ingress", "Egress"',
                )
            )
        elif ptype in seen:
            errs.append(FieldError(f"spec.policyTypes[{i}]", ErrorType.DUPLICATE, ptype))
        seen.add(str(ptype))
    for direction, peers_field in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(_list(errs, spec.get(direction), f"spec.{direction}")):
            rpath = f"spec.{direction}[{i}]"
            rule = _obj(errs, rule, rpath)
            for j, port in enumerate(_list(errs, rule.get("ports"), f"{rpath}.ports")):
                _netpol_port(errs, _obj(errs, port, f"{rpath}.ports[{j}]"), f"{rpath}.ports[{j}]")
            for j, peer in enumerate(_list(errs, rule.get(peers_field), f"{rpath}.{peers_field}")):
                _netpol_peer(
                    errs, _obj(errs, peer, f"{rpath}.{peers_field}[{j}]"), f"{rpath}.{peers_field}[{j}]"
                )
    return errs


def _netpol_port(errs: Errors, port: JsonObj, path: str) -> None:
    _protocol(errs, port.get("protocol"), f"{path}.protocol")
    value = port.get("port")
    if value is not None:
        _int_or_name_port(errs, value, f"{path}.port")
    end = port.get("endPort")
    if end is None:
        return
    if value is None:
        errs.append(
            FieldError(
                f"{path}.port", ErrorType.REQUIRED, None, "must be specified when endPort is specified"
            )
        )
    elif not _is_int(value):
        errs.append(
            FieldError(
                f"{path}.endPort",
                ErrorType.FORBIDDEN,
                None,
                "may not be specified when `port` is non-numeric",
            )
        )
    elif not _is_int(end) or not 1 <= end <= 65535:
        errs.append(
            FieldError(f"{path}.endPort", ErrorType.INVALID, end, "must be between 1 and 65535, inclusive")
        )
    elif end < value:
        errs.append(
            FieldError(f"{path}.endPort", ErrorType.INVALID, end, "must be greater than or equal to `port`")
        )


def _netpol_peer(errs: Errors, peer: JsonObj, path: str) -> None:
    present = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None]
    if not present:
        errs.append(
            FieldError(
                path,
                ErrorType.REQUIRED,
                None,
                "must specify a peer (podSelector, namespaceSelector or ipBlock)",
            )
        )
        return
    if "ipBlock" in present and len(present) > 1:
        errs.append(
            FieldError(path, ErrorType.FORBIDDEN, None, "may not specify both ipBlock and another peer")
        )
    for key in ("podSelector", "namespaceSelector"):
        if key in present:
            errs.extend(selector_object_errors(peer[key], f"{path}.{key}"))
    if "ipBlock" not in present:
        return
    block = _obj(errs, peer["ipBlock"], f"{path}.ipBlock")
    cidr = _cidr(errs, block.get("cidr"), f"{path}.ipBlock.cidr")
    for k, exc in enumerate(_list(errs, block.get("except"), f"{path}.ipBlock.except")):
        epath = f"{path}.ipBlock.except[{k}]"
        parsed = _cidr(errs, exc, epath)
        if cidr is None or parsed is None:
            continue
        if parsed.version != cidr.version or not parsed.subnet_of(cidr) or parsed == cidr:  # type: ignore[arg-type]
            errs.append(FieldError(epath, ErrorType.INVALID, exc, "must be a strict subset of `cidr`"))


def _validate_lease(obj: JsonObj) -> Errors:
    errs: Errors = []
    spec = _obj(errs, obj.get("spec"), "spec")
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not _is_int(duration) or duration <= 0):
        errs.append(
            FieldError("spec.leaseDurationSeconds", ErrorType.INVALID, duration, "must be greater than 0")
        )
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (not _is_int(transitions) or transitions < 0):
        errs.append(
            FieldError(
                "spec.leaseTransitions", ErrorType.INVALID, transitions, "must be greater than or equal to 0"
            )
        )
    holder = spec.get("holderIdentity")
    if holder is not None and not isinstance(holder, str):
        errs.append(FieldError("spec.holderIdentity", ErrorType.INVALID, holder, "must be a string"))
    return errs


def _validate_namespace(obj: JsonObj) -> Errors:
    errs: Errors = []
    status = _obj(errs, obj.get("status"), "status")
    phase = status.get("phase")
    if phase is not None and phase not in ("Active", "Terminating"):
        errs.append(
            FieldError(
                "status.phase", ErrorType.NOT_SUPPORTED, phase, 'supported values: "Active", "Terminating"'
            )
        )
    return errs


_BY_KIND: dict[str, Callable[[JsonObj], Errors]] = {
    "Pod": _validate_pod,
    "Node": _validate_node,
    "Service": _validate_service,
    "Endpoints": _validate_endpoints,
    "EndpointSlice": _validate_endpointslice,
    "NetworkPolicy": _validate_networkpolicy,
    "Lease": _validate_lease,
    "Namespace": _validate_namespace,
}


def validate(rt: ResourceType, obj: JsonObj) -> Errors:
    """Return every validation error of `obj` as kind `rt` ([] when it is valid)."""
    errs = validate_metadata(rt, obj.get("metadata"))
    check = _BY_KIND.get(rt.kind)
    if check is not None:
        errs.extend(check(obj))
    return errs
