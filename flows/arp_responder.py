"""ARP-responder flows: answer ARP in the bridge with MACs derived from IPs, so ARP never floods."""

from __future__ import annotations

import ipaddress

from flows import cookies
from flows.cluster import NodeSpec, PodSpec
from flows.cookies import Category
from flows.identity import mac_for_ip
from flows.model import Flow, GotoTable, InPort, Match, Move, SetField
from flows.tables import ARP_RESPONDER

REPLY_PRIORITY = 200
OTHER_ARP_PRIORITY = 100
IP_PRIORITY = 10
DEFAULT_PRIORITY = 0

ARP_REQUEST = 1
ARP_REPLY = 2


def arp_reply_flow(ip: ipaddress.IPv4Address, cookie: int) -> Flow:
    """Return the flow turning an ARP request for `ip` into the reply, sent back where it came from."""
    mac = mac_for_ip(ip)
    return Flow(
        ARP_RESPONDER,
        REPLY_PRIORITY,
        Match.of(proto="arp", arp_op=ARP_REQUEST, arp_tpa=ip),
        (
            Move("NXM_OF_ETH_SRC[]", "NXM_OF_ETH_DST[]"),
            SetField("eth_src", mac),
            SetField("arp_op", str(ARP_REPLY)),
            Move("NXM_NX_ARP_SHA[]", "NXM_NX_ARP_THA[]"),
            Move("NXM_OF_ARP_SPA[]", "NXM_OF_ARP_TPA[]"),
            SetField("arp_sha", mac),
            SetField("arp_spa", str(ip)),
            InPort(),
        ),
        cookie,
    )


def arp_responder_default_flows() -> list[Flow]:
    """Return the table's fixed flows: drop other ARP, pass IPv4 on, drop everything else."""
    cookie = cookies.make(Category.PIPELINE)
    return [
        Flow(ARP_RESPONDER, OTHER_ARP_PRIORITY, Match.of(proto="arp"), (), cookie),
        Flow(ARP_RESPONDER, IP_PRIORITY, Match.of(proto="ip"), (GotoTable("conntrack"),), cookie),
        Flow(ARP_RESPONDER, DEFAULT_PRIORITY, Match(), (), cookie),
    ]


def gateway_arp_flows(node: NodeSpec) -> list[Flow]:
    """Return the flow answering ARP for this node's gateway IP (pods' default route)."""
    return [arp_reply_flow(node.gateway_ip, cookies.make(Category.NODE, cookies.node_key(node.name)))]


def pod_arp_flows(pod: PodSpec) -> list[Flow]:
    """Return the flow answering ARP for a local pod's IP (asked by other local pods and the host)."""
    return [arp_reply_flow(pod.ip, cookies.pod_cookie(pod.namespace, pod.name))]


def remote_gateway_arp_flows(remote: NodeSpec) -> list[Flow]:
    """Return the flow answering ARP for another node's gateway IP.

    The host reaches a remote podCIDR through a route via that node's gateway IP (on-link on
    the local gateway port), so the host asks for it; pods never do (remote pods are off-link).
    """
    cookie = cookies.make(Category.REMOTE_NODE, cookies.node_key(remote.name))
    return [arp_reply_flow(remote.gateway_ip, cookie)]
