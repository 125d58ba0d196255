"""A small two-node example cluster, used by the generated pipeline document and by tests."""

from __future__ import annotations

import ipaddress

from flows.cluster import Cluster, NodeSpec, PodSpec

GATEWAY_OFPORT = 2
TUNNEL_OFPORT = 10


def example_cluster() -> Cluster:
    """Return two nodes with two pods each (ofports 3 and 4 on each node)."""
    nodes = (
        NodeSpec(
            "node-1",
            ipaddress.IPv4Network("100.64.1.0/24"),
            ipaddress.IPv4Address("198.18.0.11"),
            GATEWAY_OFPORT,
            TUNNEL_OFPORT,
        ),
        NodeSpec(
            "node-2",
            ipaddress.IPv4Network("100.64.2.0/24"),
            ipaddress.IPv4Address("198.18.0.12"),
            GATEWAY_OFPORT,
            TUNNEL_OFPORT,
        ),
    )
    pods = (
        PodSpec("default", "web-1", "node-1", ipaddress.IPv4Address("100.64.1.10"), 3),
        PodSpec("default", "db-1", "node-1", ipaddress.IPv4Address("100.64.1.11"), 4),
        PodSpec("default", "web-2", "node-2", ipaddress.IPv4Address("100.64.2.10"), 3),
        PodSpec("default", "db-2", "node-2", ipaddress.IPv4Address("100.64.2.11"), 4),
    )
    return Cluster(nodes, pods)
