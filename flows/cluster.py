"""The compiler's input: the plain facts about nodes and pods that the flows depend on."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field


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


def _check_pod(pod: PodSpec, node: NodeSpec | None) -> None:
    ref = f"{pod.namespace}/{pod.name}"
    if node is None:
        raise ClusterError(f"pod {ref} is on unknown node {pod.node}")
    if pod.ip not in node.pod_cidr or pod.ip in (
        node.pod_cidr.network_address,
        node.pod_cidr.broadcast_address,
        node.gateway_ip,
    ):
        raise ClusterError(f"pod {ref}: {pod.ip} is not a pod address of {node.pod_cidr}")


@dataclass(frozen=True, slots=True)
class Cluster:
    """All nodes and pods. Validated on construction.

    Equality looks at `nodes` and `pods` only. Lookups by node (`node`, `pods_on`) use indexes
    built once at construction; `with_node_pods` derives a cluster in which one node's pods
    changed, validating only those pods (what a controller does after a pod event).
    """

    nodes: tuple[NodeSpec, ...]
    pods: tuple[PodSpec, ...]
    _by_name: dict[str, NodeSpec] = field(init=False, repr=False, compare=False, hash=False)
    _by_node: dict[str, tuple[PodSpec, ...]] = field(init=False, repr=False, compare=False, hash=False)
    _pod_node: dict[tuple[str, str], str] = field(init=False, repr=False, compare=False, hash=False)

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
                        f"nodes {a.name} and {b.name} have overlapping podCIDRs {a.pod_cidr} and {b.pod_cidr}"
                    )
                if a.tunnel_ip == b.tunnel_ip:
                    raise ClusterError(f"nodes {a.name} and {b.name} share tunnel IP {a.tunnel_ip}")
        by_name = {n.name: n for n in self.nodes}
        by_node: dict[str, list[PodSpec]] = {}
        pod_node: dict[tuple[str, str], str] = {}
        seen_ips: dict[ipaddress.IPv4Address, str] = {}
        for pod in self.pods:
            ref = f"{pod.namespace}/{pod.name}"
            if (pod.namespace, pod.name) in pod_node:
                raise ClusterError(f"pod {ref} is listed twice")
            pod_node[(pod.namespace, pod.name)] = pod.node
            _check_pod(pod, by_name.get(pod.node))
            if pod.ip in seen_ips:
                raise ClusterError(f"pods {seen_ips[pod.ip]} and {ref} share IP {pod.ip}")
            seen_ips[pod.ip] = ref
            by_node.setdefault(pod.node, []).append(pod)
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_by_node", {n: tuple(p) for n, p in by_node.items()})
        object.__setattr__(self, "_pod_node", pod_node)

    def node(self, name: str) -> NodeSpec:
        """Return the node called `name`; raise KeyError if it is not in the cluster."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no node named {name!r}") from None

    def pods_on(self, node: str) -> tuple[PodSpec, ...]:
        """Return the pods bound to `node`, in the order of `pods`."""
        return self._by_node.get(node, ())

    def with_node_pods(self, node: str, pods: Iterable[PodSpec]) -> Cluster:
        """Return this cluster with the pods of `node` replaced by `pods` (same nodes).

        Validates only the new pods: they must be on `node`, inside its podCIDR, with distinct
        IPs, and not listed elsewhere; pods of other nodes were validated already (their IPs
        cannot clash with these: podCIDRs do not overlap). Costs O(pods of the cluster) in
        tuple copying, not O(pods x validation). The result's `pods` are grouped by node in the
        order of `nodes` (each node's in its given order), and it equals (`==`) a cluster built
        from scratch with that tuple. Raises ClusterError, KeyError (unknown node).
        """
        spec = self.node(node)
        new = tuple(pods)
        pod_node = dict(self._pod_node)
        for pod in self._by_node.get(node, ()):
            del pod_node[(pod.namespace, pod.name)]
        seen_ips: dict[ipaddress.IPv4Address, str] = {}
        for pod in new:
            ref = f"{pod.namespace}/{pod.name}"
            if pod.node != node:
                raise ClusterError(f"pod {ref} is on node {pod.node}, not {node}")
            if (pod.namespace, pod.name) in pod_node:
                raise ClusterError(f"pod {ref} is listed twice")
            pod_node[(pod.namespace, pod.name)] = node
            _check_pod(pod, spec)
            if pod.ip in seen_ips:
                raise ClusterError(f"pods {seen_ips[pod.ip]} and {ref} share IP {pod.ip}")
            seen_ips[pod.ip] = ref
        by_node = dict(self._by_node)
        if new:
            by_node[node] = new
        else:
            by_node.pop(node, None)
        result = object.__new__(Cluster)
        object.__setattr__(result, "nodes", self.nodes)
        pods = tuple(itertools.chain.from_iterable(by_node.get(n.name, ()) for n in self.nodes))
        object.__setattr__(result, "pods", pods)
        object.__setattr__(result, "_by_name", self._by_name)
        object.__setattr__(result, "_by_node", by_node)
        object.__setattr__(result, "_pod_node", pod_node)
        return result
