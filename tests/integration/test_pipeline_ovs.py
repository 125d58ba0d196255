"""node-1's compiled flows on a real userspace bridge: traces, read-back, and real pod traffic."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest

from flows.compiler import compile_node
from flows.diff import diff
from flows.example import example_cluster
from flows.flowset import FlowSet
from flows.identity import mac_for_ip
from flows.ofctl import parse_dump, render_flows, render_plan
from flows.trace import Trace, parse_trace
from lab.ovs import OvsNode
from lab.pods import PodPort, attach_veth_pod
from lab.traffic import ping, tcp_exchange
from tests.conftest import NetnsFactory, OvsNodeFactory

STRAY_OFPORT = 20  # a port on the bridge that no pod owns


@dataclass
class Bed:
    """A bridge loaded with node-1's flows, and the pods plumbed onto it."""

    node: OvsNode
    flows: FlowSet
    pods: dict[str, PodPort]

    def trace(self, packet: str) -> Trace:
        return parse_trace(self.node.trace("br-int", packet))


@pytest.fixture
def bed(ovs_node_factory: OvsNodeFactory, netns: NetnsFactory) -> Bed:
    cluster = example_cluster()
    me = cluster.node("node-1")
    node = ovs_node_factory("node-1")
    node.vsctl(
        "add-port",
        "br-int",
        "sluice-gw0",
        "--",
        "set",
        "Interface",
        "sluice-gw0",
        "type=internal",
        f"ofport_request={me.gateway_ofport}",
        f'mac="{mac_for_ip(me.gateway_ip)}"',
    )
    node.vsctl(
        "add-port",
        "br-int",
        "sluice-tun0",
        "--",
        "set",
        "Interface",
        "sluice-tun0",
        "type=geneve",
        "options:remote_ip=flow",
        "options:key=flow",
        f"ofport_request={me.tunnel_ofport}",
    )
    pods: dict[str, PodPort] = {}
    for i, pod in enumerate(cluster.pods_on("node-1")):
        assert pod.ofport is not None
        pods[pod.name] = attach_veth_pod(
            node,
            netns().name,
            host_ifname=f"veth{i}",
            ip=ipaddress.IPv4Interface(f"{pod.ip}/{me.pod_cidr.prefixlen}"),
            mac=mac_for_ip(pod.ip),
            ofport=pod.ofport,
            gateway=me.gateway_ip,
        )
    pods["stray"] = attach_veth_pod(
        node,
        netns().name,
        host_ifname="vethstray",
        ip="100.64.1.99/24",
        mac=mac_for_ip("100.64.1.99"),
        ofport=STRAY_OFPORT,
        gateway=me.gateway_ip,
    )
    flows = compile_node(cluster, "node-1")
    node.add_flows("br-int", render_flows(flows))
    return Bed(node, flows, pods)


WEB1 = "in_port=3,dl_src=0a:58:64:40:01:0a,dl_dst=0a:58:64:40:01:01"


def test_pod_to_local_pod_reaches_its_port_with_the_right_macs(bed: Bed) -> None:
    t = bed.trace(f"{WEB1},tcp,nw_src=100.64.1.10,nw_dst=100.64.1.11,tp_dst=80,nw_ttl=64")
    assert t.output_ports == (4,)
    assert t.final_flow["dl_dst"] == mac_for_ip("100.64.1.11")
    assert t.final_flow["dl_src"] == mac_for_ip("100.64.1.1")
    assert "conntrack_commit" in t.tables  # a new connection is committed


def test_pod_to_remote_pod_leaves_on_the_tunnel_to_the_remote_node(bed: Bed) -> None:
    t = bed.trace(f"{WEB1},ip,nw_src=100.64.1.10,nw_dst=100.64.2.10,nw_ttl=64")
    assert t.output_ports == (10,)
    assert t.final_flow["tun_dst"] == "198.18.0.12"


def test_packet_from_tunnel_is_delivered_to_local_pod(bed: Bed) -> None:
    t = bed.trace(
        "in_port=10,tun_src=198.18.0.12,tun_dst=198.18.0.11,ip,nw_src=100.64.2.10,nw_dst=100.64.1.10"
    )
    assert t.output_ports == (3,)
    assert t.final_flow["dl_dst"] == mac_for_ip("100.64.1.10")
    # ...but never bounced on to another node
    t = bed.trace("in_port=10,tun_src=198.18.0.12,ip,nw_src=100.64.2.10,nw_dst=100.64.2.11")
    assert t.dropped and t.output_ports == ()


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(f"{WEB1},ip,nw_src=100.64.1.77,nw_dst=100.64.1.11", id="spoofed-ip"),
        pytest.param(
            "in_port=3,dl_src=0a:58:64:40:01:99,ip,nw_src=100.64.1.10,nw_dst=100.64.1.11",
            id="spoofed-mac",
        ),
        pytest.param(
            "in_port=3,dl_src=0a:58:64:40:01:0a,arp,arp_op=1,arp_spa=100.64.1.11,"
            "arp_sha=0a:58:64:40:01:0a,arp_tpa=100.64.1.1",
            id="spoofed-arp",
        ),
        pytest.param(
            f"in_port={STRAY_OFPORT},dl_src=0a:58:64:40:01:63,ip,nw_src=100.64.1.99,nw_dst=100.64.1.11",
            id="unknown-in-port",
        ),
        pytest.param(f"{WEB1},ip,nw_src=100.64.1.10,nw_dst=100.64.1.50", id="unallocated-ip"),
    ],
)
def test_spoofed_or_unknown_traffic_is_dropped(bed: Bed, packet: str) -> None:
    t = bed.trace(packet)
    assert t.dropped, f"not dropped: went through {t.tables} to {t.output_ports}"


def test_arp_for_the_gateway_is_answered_by_the_bridge(bed: Bed) -> None:
    t = bed.trace(
        "in_port=3,dl_src=0a:58:64:40:01:0a,dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,"
        "arp_spa=100.64.1.10,arp_sha=0a:58:64:40:01:0a,arp_tpa=100.64.1.1"
    )
    assert t.answered_in_place
    f = t.final_flow
    assert (f["arp_op"], f["arp_sha"], f["arp_spa"]) == ("2", mac_for_ip("100.64.1.1"), "100.64.1.1")
    assert (f["arp_tha"], f["arp_tpa"], f["dl_dst"]) == (
        "0a:58:64:40:01:0a",
        "100.64.1.10",
        "0a:58:64:40:01:0a",
    )


def test_bridge_flows_read_back_equal_the_compiled_set(bed: Bed) -> None:
    assert parse_dump("\n".join(bed.node.dump_flows("br-int"))) == bed.flows
    # and with OpenFlow 1.3 spelling too
    assert parse_dump(bed.node.ofctl("dump-flows", "br-int", protocol="OpenFlow13")) == bed.flows


def test_a_plan_applied_as_one_bundle_turns_the_bridge_into_the_target(bed: Bed) -> None:
    import dataclasses

    cluster = example_cluster()
    target = compile_node(dataclasses.replace(cluster, pods=cluster.pods[1:]), "node-1")
    plan = diff(bed.flows, target)
    assert plan.deletes and not plan.adds
    bed.node.add_flows("br-int", render_plan(plan))
    assert parse_dump("\n".join(bed.node.dump_flows("br-int"))) == target


def test_real_traffic_between_two_pods_on_the_node(bed: Bed) -> None:
    web, db = bed.pods["web-1"], bed.pods["db-1"]
    assert ping(web.pod_netns, db.ip.ip, count=2).ok
    assert ping(db.pod_netns, web.ip.ip, count=2).ok
    # tcp_exchange raises unless the server got every byte (checked by SHA-256)
    exchange = tcp_exchange(db.pod_netns, web.pod_netns, db.ip.ip, size=256 * 1024)
    assert exchange.size == 256 * 1024
    # the stray port has no flows: it reaches nobody
    assert not ping(bed.pods["stray"].pod_netns, str(web.ip.ip), count=1, wait=0.5).ok
