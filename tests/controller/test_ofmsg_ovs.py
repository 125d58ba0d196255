"""ofmsg against a real bridge: cached flow-mods in an atomic bundle program it, the read-back diffs clean.

A tiny socket client (tests/controller/ofclient.py) stands in for the os-ken app: the bytes are
exactly what ofmsg produces, and OVS is the judge (bundle framing, inner xids, the OpenFlow 1.5
action forms, the read-back parser).
"""

from __future__ import annotations

import ipaddress

import pytest

from controller import ofmsg
from controller.ofmsg import Command, FlowModCache, OfProto
from flows.cluster import Cluster, PodSpec
from flows.compiler import compile_node
from flows.diff import diff
from flows.example import example_cluster
from flows.flowset import FlowSet
from flows.model import Flow, GotoTable, Match
from flows.ofctl import parse_dump, render_strict_key
from flows.tables import ARP_RESPONDER, L3_FORWARDING
from lab.ovs import OvsNode
from tests.controller.ofclient import OfClient

pytestmark = pytest.mark.ovs

BRIDGE = "br-int"


def bridge_flows(node: OvsNode) -> FlowSet:
    return parse_dump("\n".join(node.dump_flows(BRIDGE)))


def client(node: OvsNode, version: int = ofmsg.OF15) -> OfClient:
    return OfClient(node.paths.mgmt(BRIDGE), version)


def install(node: OvsNode, cache: FlowModCache, desired: FlowSet) -> None:
    with client(node) as conn:
        plan = diff(conn.read_flows(), desired)
        result = conn.push(cache, list(plan.deletes), [*plan.adds, *plan.modifies], bundle_id=1)
    assert result.committed and result.errors == []
    assert result.flow_mods == len(desired)


def test_a_bundle_of_cached_flow_mods_programs_the_bridge(ovs_node: OvsNode) -> None:
    cache = FlowModCache(OfProto(ofmsg.OF15))
    desired = compile_node(example_cluster(), "node-1")
    install(ovs_node, cache, desired)
    assert bridge_flows(ovs_node) == desired  # what ovs-ofctl sees
    with client(ovs_node) as conn:
        assert conn.read_flows() == desired  # what the controller reads back
        # A restarted controller against an unchanged bridge has nothing to send.
        assert diff(conn.read_flows(), desired).empty


def test_reconcile_repairs_drift_and_follows_the_cluster(ovs_node: OvsNode) -> None:
    cache = FlowModCache(OfProto(ofmsg.OF15))
    cluster = example_cluster()
    install(ovs_node, cache, compile_node(cluster, "node-1"))
    # Drift by hand: a foreign flow (unknown table, unmodelled match), a flow changed, one gone.
    gateway_arp = next(f for f in compile_node(cluster, "node-1") if f.table is ARP_RESPONDER)
    ovs_node.ofctl("add-flow", BRIDGE, "table=50,priority=5,icmp,icmp_type=8,actions=drop")
    ovs_node.ofctl("add-flow", BRIDGE, f"{render_strict_key(gateway_arp)},actions=drop")
    local = next(f for f in compile_node(cluster, "node-1") if f.table is L3_FORWARDING)
    ovs_node.ofctl("--strict", "del-flows", BRIDGE, render_strict_key(local))
    # And the cluster moved on: db-1 is gone, a new pod arrived on port 5.
    newcomer = PodSpec("default", "new-1", "node-1", ipaddress.IPv4Address("100.64.1.12"), 5)
    pods = (*(p for p in cluster.pods if p.name != "db-1"), newcomer)
    desired = compile_node(Cluster(cluster.nodes, pods), "node-1")
    with client(ovs_node) as conn:
        installed = conn.read_flows()
        assert any(f.table.name == "table50" for f in installed)
        plan = diff(installed, desired)
        assert len(plan.modifies) == 1 and plan.modifies[0].table is ARP_RESPONDER
        result = conn.push(cache, list(plan.deletes), [*plan.adds, *plan.modifies], bundle_id=2)
        assert result.committed and result.errors == []
        assert result.flow_mods == len(plan)  # only the difference is sent
        assert conn.read_flows() == desired
    assert bridge_flows(ovs_node) == desired  # the foreign flow was deleted strictly


def test_a_rejected_flow_mod_is_named_and_the_bundle_applies_nothing(ovs_node: OvsNode) -> None:
    cache = FlowModCache(OfProto(ofmsg.OF15))
    cluster = example_cluster()
    before = compile_node(cluster, "node-1")
    install(ovs_node, cache, before)
    # goto_table backwards: OVS refuses it when it is added to the bundle.
    bad = Flow(L3_FORWARDING, 99, Match.of(proto="ip"), (GotoTable("classifier"),), checked=False)
    good = compile_node(cluster, "node-2").sorted()[:5]
    with client(ovs_node) as conn:
        result = conn.push(cache, list(before.sorted()[:3]), [*good, bad], bundle_id=3)
        assert not result.committed
        assert [(command, flow) for command, flow, _ in result.errors] == [(Command.ADD, bad)]
        assert type(result.errors[0][2]).__name__ == "OFPErrorMsg"
        assert conn.read_flows() == before  # atomic: neither the deletes nor the good adds
    assert bridge_flows(ovs_node) == before


def test_openflow_1_3_flow_mods_round_trip_on_the_bridge(ovs_node: OvsNode) -> None:
    cache = FlowModCache(OfProto(ofmsg.OF13))
    desired = compile_node(example_cluster(), "node-2")
    with client(ovs_node, ofmsg.OF13) as conn:
        assert conn.send_flow_mods(cache, [], desired.sorted()) == []
        assert conn.read_flows() == desired
        removed = desired.sorted()[:4]
        assert conn.send_flow_mods(cache, removed, []) == []
        assert conn.read_flows() == FlowSet.of(f for f in desired if f not in removed)
    assert bridge_flows(ovs_node) == FlowSet.of(f for f in desired if f not in removed)
