"""The compiler's input: the plain facts about nodes and pods that the flows depend on."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


class ClusterError(ValueError):
    """The cluster description is inconsistent (overlapping podCIDRs, a pod outside its node, ...)."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node as the flows see it: where its pods live and how to reach it."""

    name: str
    pod_cidr: ipaddress.IPv4Network
    tunnel_ip: ipaddress.IPv4Address
    gateway_ofport: int
    tunnel_ofport: int

    @property
    def gateway_ip(self) -> ipaddress.IPv4Address:
        """Return the gateway address: the first host address of the podCIDR."""
        return self.pod_cidr.network_address + 1


@dataclass(frozen=True, slots=True)
class PodSpec:
    """A pod attached to a node; `ofport` is None until the pod's port is known on the switch."""

    namespace: str
    name: str
    node: str
    ip: ipaddress.IPv4Address
    ofport: int | None


@dataclass(frozen=True, slots=True)
class Cluster:
    """All nodes and pods. Validated on construction."""

    nodes: tuple[NodeSpec, ...]
    pods: tuple[PodSpec, ...]

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ClusterError("two nodes share a name")
        for i, a in enumerate(self.nodes):
            if a.pod_cidr.prefixlen > 30:
                raise ClusterError(f"node {a.name}: podCIDR {a.pod_cidr} is too small")
            for b in self.nodes[i + 1 :]:
                if a.pod_cidr.overlaps(b.pod_cidr):
                    raise ClusterError(
                        f"nodes {a.name} and {b.name} have overlapping podCIDRs "
                        f"{a.pod_cidr} and {b.pod_cidr}"
                    )
                if a.tunnel_ip == b.tunnel_ip:
                    raise ClusterError(f"nodes {a.name} and {b.name} share tunnel IP {a.tunnel_ip}")
        by_name = {n.name: n for n in self.nodes}
        seen_ips: dict[ipaddress.IPv4Address, str] = {}
        seen_pods: set[tuple[str, str]] = set()
        for pod in self.pods:
            ref = f"{pod.namespace}/{pod.name}"
            if (pod.namespace, pod.name) in seen_pods:
                raise ClusterError(f"pod {ref} is listed twice")
            seen_pods.add((pod.namespace, pod.name))
            node = by_name.get(pod.node)
            if node is None:
                raise ClusterError(f"pod {ref} is on unknown node {pod.node}")
            if pod.ip not in node.pod_cidr or pod.ip in (
                node.pod_cidr.network_address,
                node.pod_cidr.broadcast_address,
                node.gateway_ip,
            ):
                raise ClusterError(f"pod {ref}: {pod.ip} is not a pod address of {node.pod_cidr}")
            if pod.ip in seen_ips:
                raise ClusterError(f"pods {seen_ips[pod.ip]} and {ref} share IP {pod.ip}")
            seen_ips[pod.ip] = ref

    def node(self, name: str) -> NodeSpec:
        """Return the node called `name`; raise KeyError if it is not in the cluster."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r}")

    def pods_on(self, node: str) -> tuple[PodSpec, ...]:
        """Return the pods bound to `node`."""
        return tuple(p for p in self.pods if p.node == node)
