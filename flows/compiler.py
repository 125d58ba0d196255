"""The compiler: from a cluster description to each node's complete, deterministic FlowSet."""

from __future__ import annotations

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


def compile_node(cluster: Cluster, node_name: str) -> FlowSet:
    """Return every flow `node_name`'s br-int should hold. Raises KeyError for an unknown node."""
    node = cluster.node(node_name)
    flows = [*pipeline_flows(), *node_flows(node)]
    for pod in cluster.pods_on(node.name):
        flows.extend(local_pod_flows(node, pod))
    for remote in cluster.nodes:
        if remote.name != node.name:
            flows.extend(remote_flows(node, remote))
    return FlowSet.of(flows)


def compile_cluster(cluster: Cluster) -> dict[str, FlowSet]:
    """Return the FlowSet of every node, by node name."""
    return {node.name: compile_node(cluster, node.name) for node in cluster.nodes}
