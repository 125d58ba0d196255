"""The compiler: from a cluster description to each node's complete, deterministic FlowSet."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flows.arp_responder import (
    arp_responder_default_flows,
    gateway_arp_flows,
    pod_arp_flows,
    remote_gateway_arp_flows,
)
from flows.classifier import classifier_default_flows, node_classifier_flows, pod_classifier_flows
from flows.cluster import Cluster, NodeSpec, PodSpec
from flows.conntrack import conntrack_flows
from flows.flowset import FlowSet
from flows.forwarding import local_pod_delivery_flows, node_forwarding_flows, remote_node_flows
from flows.model import Flow
from flows.output import output_flows
from flows.policy import policy_default_flows
from flows.spoof_guard import spoof_guard_default_flows, spoof_guard_flows


def pipeline_flows() -> list[Flow]:
    """Return the flows every node has, whatever its pods: table defaults and conntrack."""
    return [
        *classifier_default_flows(),
        *spoof_guard_default_flows(),
        *arp_responder_default_flows(),
        *conntrack_flows(),
        *policy_default_flows(),
        *output_flows(),
    ]


def node_flows(node: NodeSpec) -> list[Flow]:
    """Return the flows of the node itself: its gateway and tunnel ports, its fixed routes."""
    return [*node_classifier_flows(node), *gateway_arp_flows(node), *node_forwarding_flows(node)]


def local_pod_flows(node: NodeSpec, pod: PodSpec) -> list[Flow]:
    """Return a local pod's flows; none until its ofport is known (the pod is not attached yet)."""
    if pod.ofport is None:
        return []
    return [
        *pod_classifier_flows(pod, pod.ofport),
        *spoof_guard_flows(pod, pod.ofport),
        *pod_arp_flows(pod),
        *local_pod_delivery_flows(node, pod, pod.ofport),
    ]


def remote_flows(node: NodeSpec, remote: NodeSpec) -> list[Flow]:
    """Return the flows `node` needs to reach `remote`'s pods and gateway."""
    return [*remote_node_flows(node, remote), *remote_gateway_arp_flows(remote)]


def compile_node(cluster: Cluster, node_name: str, cache: CompileCache | None = None) -> FlowSet:
    """Return every flow `node_name`'s br-int should hold. Raises KeyError for an unknown node.

    With a `cache`, pieces whose inputs did not change since that node was last compiled are
    reused; the result is the same FlowSet either way.
    """
    if cache is not None:
        return cache.compile_node(cluster, node_name)
    return _compile_node(cluster, node_name, _Shared())


def compile_cluster(cluster: Cluster, cache: CompileCache | None = None) -> dict[str, FlowSet]:
    """Return the FlowSet of every node, by node name."""
    if cache is not None:
        return {node.name: cache.compile_node(cluster, node.name) for node in cluster.nodes}
    shared = _Shared()  # pieces every node has alike are built once per call
    return {node.name: _compile_node(cluster, node.name, shared) for node in cluster.nodes}


class _Shared:
    """Flows that are the same on every node, built once per compile: the pipeline defaults,
    and each remote node's gateway ARP answer (it depends on the remote node only).
    Shared by threads (a race only builds a piece twice)."""

    def __init__(self) -> None:
        self.pipeline = tuple(pipeline_flows())
        self._remote_arp: dict[NodeSpec, tuple[Flow, ...]] = {}

    def remote_arp(self, remote: NodeSpec) -> tuple[Flow, ...]:
        flows = self._remote_arp.get(remote)
        if flows is None:
            if len(self._remote_arp) >= 65536:  # a long-lived cache: forget departed nodes
                self._remote_arp.clear()
            flows = self._remote_arp[remote] = tuple(remote_gateway_arp_flows(remote))
        return flows

    def remote(self, node: NodeSpec, remote: NodeSpec) -> list[Flow]:
        """Return `remote_flows(node, remote)`."""
        return [*remote_node_flows(node, remote), *self.remote_arp(remote)]


def _compile_node(cluster: Cluster, node_name: str, shared: _Shared) -> FlowSet:
    node = cluster.node(node_name)
    flows = [*shared.pipeline, *node_flows(node)]
    for pod in cluster.pods_on(node.name):
        flows.extend(local_pod_flows(node, pod))
    for remote in cluster.nodes:
        if remote.name != node.name:
            flows.extend(shared.remote(node, remote))
    return FlowSet.of(flows)


@dataclass(frozen=True, slots=True)
class _NodePieces:
    """One node's last compile: its inputs, the flows built from each, and the result."""

    node: NodeSpec
    pods: tuple[PodSpec, ...]
    remotes: tuple[NodeSpec, ...]
    own: tuple[Flow, ...]
    pod_flows: dict[PodSpec, tuple[Flow, ...]]
    remote_flows: dict[NodeSpec, tuple[Flow, ...]]
    result: FlowSet


class CompileCache:
    """Memo for `compile_node`: per node, the flows of each input value, reused while it is unchanged.

    Every piece is keyed by the frozen values it is built from (the node's NodeSpec, a PodSpec, a
    remote NodeSpec), so a reused piece is exactly what a fresh build would return, and the result
    equals a from-scratch compile. A node whose inputs did not change at all gets its previous
    FlowSet back; after a pod event only that pod's flows are built. Only the inputs of each
    node's latest compile are kept (deleted pods and nodes drop out; `forget` drops a node).
    Safe to share between threads compiling different nodes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, _NodePieces] = {}
        self._shared = _Shared()
        self._pipeline = self._shared.pipeline

    def compile_node(self, cluster: Cluster, node_name: str) -> FlowSet:
        """Return `compile_node(cluster, node_name)`, reusing what is unchanged. Raises KeyError."""
        node = cluster.node(node_name)
        pods = cluster.pods_on(node_name)
        remotes = tuple(n for n in cluster.nodes if n.name != node_name)
        with self._lock:
            last = self._nodes.get(node_name)
        if last is not None and last.node == node and last.pods == pods and last.remotes == remotes:
            return last.result
        same_node = last is not None and last.node == node
        own = last.own if last is not None and same_node else tuple(node_flows(node))
        old_pods = last.pod_flows if last is not None and same_node else {}
        old_remotes = last.remote_flows if last is not None and same_node else {}
        pod_flows = {}
        for pod in pods:
            built = old_pods.get(pod)
            pod_flows[pod] = built if built is not None else tuple(local_pod_flows(node, pod))
        remote_pieces = {}
        for remote in remotes:
            built = old_remotes.get(remote)
            remote_pieces[remote] = built if built is not None else tuple(self._shared.remote(node, remote))
        flows: list[Flow] = [*self._pipeline, *own]
        for pod in pods:
            flows.extend(pod_flows[pod])
        for remote in remotes:
            flows.extend(remote_pieces[remote])
        result = FlowSet.of(flows)
        with self._lock:
            self._nodes[node_name] = _NodePieces(node, pods, remotes, own, pod_flows, remote_pieces, result)
        return result

    def forget(self, node_name: str) -> None:
        """Drop what is kept for `node_name` (it left the cluster)."""
        with self._lock:
            self._nodes.pop(node_name, None)
