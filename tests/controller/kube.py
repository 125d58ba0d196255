"""Builders of Kubernetes Node and Pod objects (plain dicts, as the API server sends them)."""

from __future__ import annotations

import json
from typing import Any

from controller import annotations as ann
from flows.example import GATEWAY_OFPORT, TUNNEL_OFPORT


def node_obj(
    name: str,
    pod_cidr: str | None,
    tunnel_ip: str | None,
    *,
    gateway_ofport: int | str | None = GATEWAY_OFPORT,
    tunnel_ofport: int | str | None = TUNNEL_OFPORT,
    datapath_id: str | None = None,
    created: str = "2024-01-01T00:00:00Z",
    extra_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return a Node object with Sluice's annotations (None leaves one out)."""
    annotations: dict[str, str] = dict(extra_annotations or {})
    for key, value in (
        (ann.NODE_TUNNEL_IP, tunnel_ip),
        (ann.NODE_GATEWAY_OFPORT, gateway_ofport),
        (ann.NODE_TUNNEL_OFPORT, tunnel_ofport),
        (ann.NODE_DATAPATH_ID, datapath_id),
    ):
        if value is not None:
            annotations[key] = str(value)
    spec: dict[str, Any] = {}
    if pod_cidr is not None:
        spec = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "resourceVersion": "1",
            "annotations": annotations,
        },
        "spec": spec,
        "status": {},
    }


def network_status(ip: str, *, default: bool = True) -> str:
    """Return a network-status annotation with one (default) network holding `ip`."""
    return json.dumps(
        [
            {
                "name": "sluice",
                "interface": "eth0",
                "ips": [ip],
                "mac": "0a:58:00:00:00:00",
                "default": default,
            }
        ]
    )


def pod_obj(
    namespace: str,
    name: str,
    node: str | None,
    ip: str | None,
    *,
    port_name: str | None = "auto",
    status_annotation: str | None = None,
    phase: str = "Running",
    host_network: bool = False,
    created: str = "2024-01-01T00:00:00Z",
    deleting: bool = False,
) -> dict[str, Any]:
    """Return a Pod object; `ip` None publishes no network-status, `port_name` None no port name."""
    annotations: dict[str, str] = {}
    if ip is not None or status_annotation is not None:
        annotations[ann.NETWORK_STATUS] = status_annotation or network_status(str(ip))
    if port_name == "auto":
        port_name = f"p-{name}"[:15]
    if port_name is not None:
        annotations[ann.POD_PORT_NAME] = port_name
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{namespace}-{name}",
        "creationTimestamp": created,
        "annotations": annotations,
    }
    if deleting:
        meta["deletionTimestamp"] = "2024-06-01T00:00:00Z"
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if node is not None:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    return {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": {"phase": phase}}


def example_objects() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, int]]]:
    """Return the Node and Pod objects and switch port maps equivalent to flows.example."""
    nodes = [
        node_obj("node-1", "100.64.1.0/24", "198.18.0.11", datapath_id="0000000000000001"),
        node_obj("node-2", "100.64.2.0/24", "198.18.0.12", datapath_id="0x2"),
    ]
    pods = [
        pod_obj("default", "web-1", "node-1", "100.64.1.10"),
        pod_obj("default", "db-1", "node-1", "100.64.1.11"),
        pod_obj("default", "web-2", "node-2", "100.64.2.10"),
        pod_obj("default", "db-2", "node-2", "100.64.2.11"),
    ]
    ports = {
        "node-1": {"p-web-1": 3, "p-db-1": 4},
        "node-2": {"p-web-2": 3, "p-db-2": 4},
    }
    return nodes, pods, ports
