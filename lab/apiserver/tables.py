"""Server-side printing: the `meta.k8s.io/v1` Table and PartialObjectMetadata forms kubectl asks for.

`kubectl get` sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`; the columns here follow
the real server's printers (pkg/printers/internalversion) for the kinds the stand-in serves.
Columns with priority 1 appear only in `-o wide`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lab.apiserver.errors import JsonObj
from lab.apiserver.resources import ResourceType

Cell = Callable[[JsonObj], Any]

_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically."
)
_AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created."
)


@dataclass(frozen=True, slots=True)
class Column:
    """One printed column: header, type and how to compute the cell."""

    name: str
    cell: Cell
    type: str = "string"
    priority: int = 0
    description: str = ""
    format: str = ""


def human_duration(seconds: float) -> str:
    """Format an age the way kubectl does (apimachinery duration.HumanDuration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = divmod(hours // 24, 365)
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def _age(obj: JsonObj) -> str:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not isinstance(stamp, str):
        return "<unknown>"
    try:
        created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return "<unknown>"
    return human_duration(time.time() - created)


def _get(obj: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _selector_text(selector: Any) -> str:
    if not isinstance(selector, dict) or not selector:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in _list(selector.get("matchExpressions")):
        op, key, values = expr.get("operator"), expr.get("key"), ",".join(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts) if parts else "<none>"


def _pod_ready(obj: JsonObj) -> str:
    total = len(_list(_get(obj, "spec", "containers")))
    ready = sum(
        1 for c in _list(_get(obj, "status", "containerStatuses")) if isinstance(c, dict) and c.get("ready")
    )
    return f"{ready}/{total}"


def _pod_status(obj: JsonObj) -> str:
    if _get(obj, "metadata", "deletionTimestamp"):
        return "Terminating"
    reason = _get(obj, "status", "reason")
    return str(reason or _get(obj, "status", "phase") or "Unknown")


def _pod_restarts(obj: JsonObj) -> int:
    return sum(
        int(c.get("restartCount") or 0)
        for c in _list(_get(obj, "status", "containerStatuses"))
        if isinstance(c, dict)
    )


def _node_status(obj: JsonObj) -> str:
    state = "Unknown"
    for cond in _list(_get(obj, "status", "conditions")):
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            state = {"True": "Ready", "False": "NotReady"}.get(str(cond.get("status")), "Unknown")
    if _get(obj, "spec", "unschedulable"):
        state += ",SchedulingDisabled"
    return state


def _node_roles(obj: JsonObj) -> str:
    labels = _get(obj, "metadata", "labels") or {}
    roles = sorted(
        k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k
    )
    return ",".join(r for r in roles if r) or "<none>"


def _node_address(kind: str) -> Cell:
    def cell(obj: JsonObj) -> str:
        for addr in _list(_get(obj, "status", "addresses")):
            if isinstance(addr, dict) and addr.get("type") == kind:
                return str(addr.get("address"))
        return "<none>"

    return cell


def _service_ports(obj: JsonObj) -> str:
    out = []
    for port in _list(_get(obj, "spec", "ports")):
        text = f"{port.get('port')}"
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        out.append(f"{text}/{port.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _service_external(obj: JsonObj) -> str:
    ingress = _list(_get(obj, "status", "loadBalancer", "ingress"))
    ips = [str(i.get("ip") or i.get("hostname")) for i in ingress if isinstance(i, dict)]
    ips += [str(ip) for ip in _list(_get(obj, "spec", "externalIPs"))]
    if ips:
        return ",".join(ips)
    if _get(obj, "spec", "type") == "LoadBalancer":
        return "<pending>"
    if _get(obj, "spec", "type") == "ExternalName":
        return str(_get(obj, "spec", "externalName"))
    return "<none>"


def _few(items: list[str]) -> str:
    if not items:
        return "<none>"
    if len(items) <= 3:
        return ",".join(items)
    return ",".join(items[:3]) + f" + {len(items) - 3} more..."


def _endpoints(obj: JsonObj) -> str:
    items: list[str] = []
    for subset in _list(obj.get("subsets")):
        ports = [p.get("port") for p in _list(subset.get("ports"))] or [None]
        for addr in _list(subset.get("addresses")):
            for port in ports:
                items.append(f"{addr.get('ip')}:{port}" if port is not None else str(addr.get("ip")))
    return _few(items)


def _slice_endpoints(obj: JsonObj) -> str:
    return _few([str(a) for ep in _list(obj.get("endpoints")) for a in _list(ep.get("addresses"))])


def _slice_ports(obj: JsonObj) -> str:
    ports = [
        str(p.get("port"))
        for p in _list(obj.get("ports"))
        if isinstance(p, dict) and p.get("port") is not None
    ]
    return ",".join(ports) or "<unset>"


def _text(*path: str, empty: str = "<none>") -> Cell:
    def cell(obj: JsonObj) -> str:
        value = _get(obj, *path)
        return empty if value in (None, "") else str(value)

    return cell


_NAME = Column("Name", lambda o: o["metadata"]["name"], format="name", description=_NAME_DESCRIPTION)
_AGE = Column("Age", _age, description=_AGE_DESCRIPTION)

COLUMNS: dict[str, tuple[Column, ...]] = {
    "Namespace": (_NAME, Column("Status", _text("status", "phase", empty="")), _AGE),
    "Node": (
        _NAME,
        Column("Status", _node_status),
        Column("Roles", _node_roles),
        _AGE,
        Column("Version", _text("status", "nodeInfo", "kubeletVersion", empty="")),
        Column("Internal-IP", _node_address("InternalIP"), priority=1),
        Column("External-IP", _node_address("ExternalIP"), priority=1),
        Column("OS-Image", _text("status", "nodeInfo", "osImage", empty="<unknown>"), priority=1),
        Column("Kernel-Version", _text("status", "nodeInfo", "kernelVersion", empty="<unknown>"), priority=1),
    ),
    "Pod": (
        _NAME,
        Column("Ready", _pod_ready),
        Column("Status", _pod_status),
        Column("Restarts", _pod_restarts, type="integer"),
        _AGE,
        Column("IP", _text("status", "podIP"), priority=1),
        Column("Node", _text("spec", "nodeName"), priority=1),
    ),
    "Service": (
        _NAME,
        Column("Type", _text("spec", "type", empty="")),
        Column("Cluster-IP", _text("spec", "clusterIP")),
        Column("External-IP", _service_external),
        Column("Port(s)", _service_ports),
        _AGE,
        Column(
            "Selector",
            lambda o: _selector_text({"matchLabels": _get(o, "spec", "selector") or {}}),
            priority=1,
        ),
    ),
    "Endpoints": (_NAME, Column("Endpoints", _endpoints), _AGE),
    "EndpointSlice": (
        _NAME,
        Column("AddressType", _text("addressType", empty="")),
        Column("Ports", _slice_ports),
        Column("Endpoints", _slice_endpoints),
        _AGE,
    ),
    "NetworkPolicy": (
        _NAME,
        Column("Pod-Selector", lambda o: _selector_text(_get(o, "spec", "podSelector"))),
        _AGE,
    ),
    "Lease": (_NAME, Column("Holder", _text("spec", "holderIdentity", empty="")), _AGE),
}


def partial_metadata(obj: JsonObj) -> JsonObj:
    """Return the PartialObjectMetadata form of an object."""
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def to_table(
    rt: ResourceType,
    objects: list[JsonObj],
    *,
    resource_version: str,
    include_object: str = "Metadata",
    continue_token: str = "",
    remaining: int | None = None,
    with_headers: bool = True,
) -> JsonObj:
    """Return a meta.k8s.io/v1 Table of `objects` with this kind's columns."""
    columns = COLUMNS.get(rt.kind, (_NAME, _AGE))
    rows = []
    for obj in objects:
        row: JsonObj = {"cells": [c.cell(obj) for c in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_metadata(obj)
        rows.append(row)
    meta: JsonObj = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    table: JsonObj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
    table["columnDefinitions"] = (
        [
            {
                "name": c.name,
                "type": c.type,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            }
            for c in columns
        ]
        if with_headers
        else None
    )
    table["rows"] = rows
    return table
