"""Classifier flows: record where a packet came from and send it on; drop unknown ports."""

from __future__ import annotations

from flows import cookies
from flows.cluster import NodeSpec, PodSpec
from flows.cookies import Category
from flows.fields import PKT_SOURCE, PacketSource
from flows.model import Flow, GotoTable, LoadReg, Match
from flows.tables import CLASSIFIER

PORT_PRIORITY = 200
DEFAULT_PRIORITY = 0


def _port_flow(ofport: int, source: PacketSource, next_table: str, cookie: int) -> Flow:
    return Flow(
        CLASSIFIER,
        PORT_PRIORITY,
        Match.of(in_port=ofport),
        (LoadReg(PKT_SOURCE, source), GotoTable(next_table)),
        cookie,
    )


def classifier_default_flows() -> list[Flow]:
    """Return the flow dropping packets from ports Sluice does not know."""
    return [Flow(CLASSIFIER, DEFAULT_PRIORITY, Match(), (), cookies.make(Category.PIPELINE))]


def node_classifier_flows(node: NodeSpec) -> list[Flow]:
    """Return the flows classifying the node's gateway (trusted: no spoof guard) and tunnel ports."""
    cookie = cookies.make(Category.NODE, cookies.node_key(node.name))
    return [
        _port_flow(node.gateway_ofport, PacketSource.GATEWAY, "arp_responder", cookie),
        _port_flow(node.tunnel_ofport, PacketSource.TUNNEL, "conntrack", cookie),
    ]


def pod_classifier_flows(pod: PodSpec, ofport: int) -> list[Flow]:
    """Return the flow sending a local pod's packets to the spoof guard."""
    return [_port_flow(ofport, PacketSource.POD, "spoof_guard", cookies.pod_cookie(pod.namespace, pod.name))]
