"""Spoof-guard flows: a pod may send IP and ARP only with its own MAC and IP."""

from __future__ import annotations

from flows import cookies
from flows.cluster import PodSpec
from flows.cookies import Category
from flows.identity import mac_for_ip
from flows.model import Flow, GotoTable, Match
from flows.tables import SPOOF_GUARD

POD_PRIORITY = 200
DEFAULT_PRIORITY = 0


def spoof_guard_default_flows() -> list[Flow]:
    """Return the flow dropping whatever a pod sends that no pod flow allowed."""
    return [Flow(SPOOF_GUARD, DEFAULT_PRIORITY, Match(), (), cookies.make(Category.PIPELINE))]


def spoof_guard_flows(pod: PodSpec, ofport: int) -> list[Flow]:
    """Return the two flows letting a pod's own IP and ARP traffic through."""
    mac = mac_for_ip(pod.ip)
    cookie = cookies.pod_cookie(pod.namespace, pod.name)
    return [
        Flow(
            SPOOF_GUARD,
            POD_PRIORITY,
            Match.of(proto="ip", in_port=ofport, dl_src=mac, nw_src=pod.ip),
            (GotoTable("conntrack"),),
            cookie,
        ),
        Flow(
            SPOOF_GUARD,
            POD_PRIORITY,
            Match.of(proto="arp", in_port=ofport, dl_src=mac, arp_spa=pod.ip, arp_sha=mac),
            (GotoTable("arp_responder"),),
            cookie,
        ),
    ]
