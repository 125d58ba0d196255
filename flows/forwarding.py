"""L3-forwarding flows: local pods by IP, remote podCIDRs through the tunnel, the rest to the gateway."""

from __future__ import annotations

from flows import cookies
from flows.cluster import NodeSpec, PodSpec
from flows.cookies import Category
from flows.fields import OUT_PORT, PKT_SOURCE, PacketSource
from flows.identity import mac_for_ip
from flows.model import Flow, GotoTable, LoadReg, Match, SetField
from flows.tables import L3_FORWARDING

LOCAL_POD_PRIORITY = 200
TUNNEL_HAIRPIN_PRIORITY = 180
REMOTE_NODE_PRIORITY = 170
GATEWAY_PRIORITY = 165
UNALLOCATED_PRIORITY = 160
DEFAULT_PRIORITY = 0


def local_pod_delivery_flows(node: NodeSpec, pod: PodSpec, ofport: int) -> list[Flow]:
    """Return the flow delivering to a local pod: gateway MAC as source, the pod's MAC, its port."""
    return [
        Flow(
            L3_FORWARDING,
            LOCAL_POD_PRIORITY,
            Match.of(proto="ip", nw_dst=pod.ip),
            (
                SetField("eth_src", mac_for_ip(node.gateway_ip)),
                SetField("eth_dst", mac_for_ip(pod.ip)),
                LoadReg(OUT_PORT, ofport),
                GotoTable("ingress_policy"),
            ),
            cookies.pod_cookie(pod.namespace, pod.name),
        )
    ]


def remote_node_flows(node: NodeSpec, remote: NodeSpec) -> list[Flow]:
    """Return the flow sending traffic for `remote`'s podCIDR into the tunnel, to its tunnel IP."""
    return [
        Flow(
            L3_FORWARDING,
            REMOTE_NODE_PRIORITY,
            Match.of(proto="ip", nw_dst=remote.pod_cidr),
            (
                SetField("eth_src", mac_for_ip(node.gateway_ip)),
                SetField("eth_dst", mac_for_ip(remote.gateway_ip)),
                SetField("tun_dst", str(remote.tunnel_ip)),
                LoadReg(OUT_PORT, node.tunnel_ofport),
                GotoTable("ingress_policy"),
            ),
            cookies.make(Category.REMOTE_NODE, cookies.node_key(remote.name)),
        )
    ]


def node_forwarding_flows(node: NodeSpec) -> list[Flow]:
    """Return the node's fixed flows: no tunnel hairpin, the gateway IP, no unallocated IPs, else gateway."""
    cookie = cookies.make(Category.NODE, cookies.node_key(node.name))
    return [
        # A packet from the tunnel is only ever for a local pod; anything else would bounce
        # between nodes.
        Flow(
            L3_FORWARDING,
            TUNNEL_HAIRPIN_PRIORITY,
            Match.of(proto="ip").with_reg(PKT_SOURCE, PacketSource.TUNNEL),
            (),
            cookie,
        ),
        # The gateway's own address is inside the podCIDR but is not a pod: it must win over
        # the unallocated-address drop below, or pods could not reach their node.
        Flow(
            L3_FORWARDING,
            GATEWAY_PRIORITY,
            Match.of(proto="ip", nw_dst=node.gateway_ip),
            (
                SetField("eth_dst", mac_for_ip(node.gateway_ip)),
                LoadReg(OUT_PORT, node.gateway_ofport),
                GotoTable("ingress_policy"),
            ),
            cookie,
        ),
        # An address of the local podCIDR with no pod: the host routes the podCIDR to the
        # gateway port, so sending it there would loop until the TTL runs out.
        Flow(
            L3_FORWARDING,
            UNALLOCATED_PRIORITY,
            Match.of(proto="ip", nw_dst=node.pod_cidr),
            (),
            cookie,
        ),
        Flow(
            L3_FORWARDING,
            DEFAULT_PRIORITY,
            Match.of(proto="ip"),
            (
                SetField("eth_dst", mac_for_ip(node.gateway_ip)),
                LoadReg(OUT_PORT, node.gateway_ofport),
                GotoTable("ingress_policy"),
            ),
            cookie,
        ),
    ]
