"""`sluice-controller` end to end: the lab API server, two real OVS bridges, the real program.

The bridges connect to the controller process over TCP (through a relay into each node's
namespace, see harness.py). What the bridges hold is judged by `ovs-ofctl dump-flows`, and
what the controller sent by its own flow-mod counter on /metrics.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller import annotations as ann
from flows.cluster import PodSpec
from flows.compiler import local_pod_flows
from flows.identity import mac_for_ip
from flows.ofctl import render_strict_key
from lab.apiserver import ApiServer
from lab.pods import PodPort, attach_veth_pod
from lab.traffic import PingResult, ping, tcp_exchange
from tests.conftest import NetnsFactory, OvsNodeFactory
from tests.controller.harness import (
    BRIDGE,
    RELAY_PORT,
    ControllerProcess,
    LabNode,
    connect_underlay,
    expected,
    make_pki,
    setup_node,
    wait_for,
    warm_tunnel,
)
from tests.controller.kube import node_obj
from tests.support import body

pytestmark = pytest.mark.ovs

NAMESPACE = "apps"
CONVERGE = 30.0


@dataclass
class Lab:
    """The API server, two nodes and the controller process."""

    api: ApiServer
    core: client.CoreV1Api
    nodes: list[LabNode]
    controller: ControllerProcess
    pods: list[PodSpec]

    def node(self, name: str) -> LabNode:
        return next(n for n in self.nodes if n.name == name)

    def converged(self, *names: str) -> None:
        """Wait until the named bridges (default: all) hold exactly their compiled flows."""
        for node in [self.node(n) for n in names] if names else self.nodes:
            want = expected(self.nodes, self.pods, node.name)
            wait_for(
                lambda node=node, want=want: node.flows() == want,  # type: ignore[misc]
                CONVERGE,
                f"{node.name}'s bridge to hold its compiled flows",
                self.controller.log_text,
            )

    def create_node(self, node: LabNode, *, with_datapath_id: bool = True) -> None:
        self.core.create_node(body(node.node_object(with_datapath_id=with_datapath_id)))

    def create_pod(self, name: str, node: LabNode, ip: str, port_name: str) -> dict[str, Any]:
        status = [{"name": "sluice", "interface": "eth0", "ips": [ip], "mac": "", "default": True}]
        pod = {
            "metadata": {
                "name": name,
                "annotations": {ann.POD_PORT_NAME: port_name, ann.NETWORK_STATUS: json.dumps(status)},
            },
            "spec": {"nodeName": node.name, "containers": [{"name": "c", "image": "busybox"}]},
        }
        created: dict[str, Any] = self.core.api_client.sanitize_for_serialization(
            self.core.create_namespaced_pod(NAMESPACE, body(pod))
        )
        return created


@pytest.fixture
def lab(ovs_node_factory: OvsNodeFactory, tmp_path: Path) -> Iterator[Lab]:
    api = ApiServer("127.0.0.1", 0).start()
    controller: ControllerProcess | None = None
    nodes: list[LabNode] = []
    try:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        core = client.CoreV1Api(api.api_client())
        core.create_namespace(body({"metadata": {"name": NAMESPACE}}))
        controller = ControllerProcess(tmp_path, kubeconfig)
        for index, name in ((1, "node-1"), (2, "node-2")):
            nodes.append(setup_node(ovs_node_factory(name), name, index, [controller.openflow_port]))
        yield Lab(api, core, nodes, controller, [])
    finally:
        if controller is not None:
            controller.kill()
        for node in nodes:
            node.close()
        api.stop()


def start_cluster(lab: Lab) -> None:
    for node in lab.nodes:
        lab.create_node(node)
    lab.controller.start()
    lab.converged()


def test_each_bridge_gets_exactly_its_compiled_flows(lab: Lab) -> None:
    start_cluster(lab)
    for node in lab.nodes:
        want = expected(lab.nodes, [], node.name)
        assert node.flows() == want
        # One bundle of adds from an empty bridge: nothing more, nothing less.
        assert lab.controller.flow_mods(node.name) == len(want)
        # ...and the time from asking for it to the commit reply was recorded.
        assert lab.controller.metric("sluice_controller_reconcile_lag_seconds_count", node=node.name) >= 1
    assert lab.controller.metric("sluice_controller_switches_connected") == 2
    want = expected(lab.nodes, [], "node-1")
    assert lab.controller.metric("sluice_controller_node_flows", node="node-1") == len(want)
    classifier = sum(1 for f in want if f.table.name == "classifier")
    assert (
        lab.controller.metric("sluice_controller_table_flows", node="node-1", table="classifier")
        == classifier
    )


def test_a_pod_created_or_deleted_changes_only_its_own_flows(lab: Lab) -> None:
    start_cluster(lab)
    node1 = lab.node("node-1")
    node1.add_pod_port("p-web-1", 3)
    before = {n.name: lab.controller.flow_mods(n.name) for n in lab.nodes}
    cached = lab.controller.metric("sluice_controller_flowmod_cache_entries")
    lab.create_pod("web-1", node1, "100.64.1.10", "p-web-1")
    pod = PodSpec(NAMESPACE, "web-1", "node-1", ipaddress.IPv4Address("100.64.1.10"), 3)
    lab.pods.append(pod)
    lab.converged()
    pod_flows = local_pod_flows(node1.spec, pod)
    assert pod_flows and all(f in node1.flows() for f in pod_flows)
    assert lab.controller.flow_mods("node-1") - before["node-1"] == len(pod_flows)
    assert lab.controller.flow_mods("node-2") == before["node-2"]  # routes by podCIDR: untouched
    assert lab.controller.metric("sluice_controller_flowmod_cache_entries") == cached + len(pod_flows)

    lab.core.delete_namespaced_pod("web-1", NAMESPACE)
    lab.pods.remove(pod)
    lab.converged()
    assert not any(f in node1.flows() for f in pod_flows)
    assert lab.controller.flow_mods("node-1") - before["node-1"] == 2 * len(pod_flows)
    assert lab.controller.flow_mods("node-2") == before["node-2"]
    # The pod's flow-mods, added and deleted, are not kept once the switch has dropped them
    # (forgotten just after the commit reply, which may come a moment after the flows are gone).
    wait_for(
        lambda: lab.controller.metric("sluice_controller_flowmod_cache_entries") == cached,
        CONVERGE,
        "the deleted pod's flow-mods to leave the cache",
        lab.controller.log_text,
    )


def test_restart_against_an_unchanged_cluster_sends_no_flow_mod(lab: Lab) -> None:
    start_cluster(lab)
    code, took = lab.controller.stop(signal.SIGTERM)
    assert code == 0 and took < 5, f"exit {code} after {took:.1f}s"
    lab.controller.start()
    for node in lab.nodes:
        wait_for(
            partial(lab.controller.reconciled, node.name),
            CONVERGE,
            f"{node.name} reconciled after the restart",
            lab.controller.log_text,
        )
    assert lab.controller.flow_mods() == 0
    lab.converged()


def test_sigint_stops_the_controller_cleanly(lab: Lab) -> None:
    start_cluster(lab)
    code, took = lab.controller.stop(signal.SIGINT)
    assert code == 0 and took < 5, f"exit {code} after {took:.1f}s"
    assert "stopped" in lab.controller.log_text()
    lab.converged()  # the bridges keep their flows while the controller is away


def test_drift_made_by_hand_is_repaired_by_the_next_resync(lab: Lab) -> None:
    start_cluster(lab)
    node = lab.node("node-2")
    want = expected(lab.nodes, [], "node-2")
    victim = want.sorted()[len(want) // 2]
    # Counted before the drift is made: a resync (every 2 s) may repair it at any moment after.
    # The two flow-mods below are the proof that it saw the drift.
    before = lab.controller.flow_mods("node-2")
    node.ovs.ofctl("--strict", "del-flows", BRIDGE, render_strict_key(victim))
    node.ovs.ofctl("add-flow", BRIDGE, "table=0,priority=7,ip,nw_src=100.64.99.1,actions=drop")
    lab.converged("node-2")
    assert lab.controller.flow_mods("node-2") - before == 2  # the missing flow back, the foreign one gone


def test_a_switch_matching_no_node_waits_until_its_node_names_it(lab: Lab) -> None:
    node1, node2 = lab.nodes
    lab.create_node(node1)
    lab.create_node(node2, with_datapath_id=False)
    lab.controller.start()
    lab.converged("node-1")
    wait_for(
        lambda: lab.controller.metric("sluice_controller_switches_waiting") == 1,
        CONVERGE,
        "node-2's switch to be connected and waiting",
        lab.controller.log_text,
    )
    assert node2.flows().sorted() == []
    assert lab.controller.flow_mods("node-2") == 0
    assert f"switch {node2.datapath_id} matches no Node" in lab.controller.log_text()
    # The agent publishes the datapath id: now node-2's switch is programmed.
    lab.core.patch_node("node-2", {"metadata": {"annotations": {ann.NODE_DATAPATH_ID: node2.datapath_id}}})
    lab.converged()
    assert lab.controller.metric("sluice_controller_switches_waiting") == 0


def test_malformed_objects_are_skipped_with_one_log_line_each(lab: Lab) -> None:
    lab.core.create_node(body({"metadata": {"name": "node-bad", "annotations": {}}, "spec": {}}))
    lab.core.create_node(body(node_obj("node-no-tunnel", "100.64.9.0/24", None)))
    start_cluster(lab)
    bad = {
        "metadata": {
            "name": "bad-1",
            "annotations": {ann.POD_PORT_NAME: "p-bad-1", ann.NETWORK_STATUS: "not json{"},
        },
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]},
    }
    lab.core.create_namespaced_pod(NAMESPACE, body(bad))
    node1 = lab.node("node-1")
    node1.add_pod_port("p-web-1", 3)
    lab.create_pod("web-1", node1, "100.64.1.10", "p-web-1")
    lab.pods.append(PodSpec(NAMESPACE, "web-1", "node-1", ipaddress.IPv4Address("100.64.1.10"), 3))
    lab.converged()
    # Let a few resyncs (2s each) relist the bad objects: they are still reported once.
    resyncs = lab.controller.metric("sluice_controller_informer_relists_total", resource="nodes")
    wait_for(
        lambda: (
            lab.controller.metric("sluice_controller_informer_relists_total", resource="nodes") >= resyncs + 2
        ),
        CONVERGE,
        "two more resyncs",
    )
    text = lab.controller.log_text()
    node_lines = [line for line in text.splitlines() if "skipping Node node-bad" in line]
    pod_lines = [line for line in text.splitlines() if f"skipping Pod {NAMESPACE}/bad-1" in line]
    tunnel_lines = [line for line in text.splitlines() if "skipping Node node-no-tunnel" in line]
    assert len(node_lines) == 1 and "podCIDR" in node_lines[0], node_lines
    assert len(tunnel_lines) == 1 and ann.NODE_TUNNEL_IP in tunnel_lines[0], tunnel_lines
    assert len(pod_lines) == 1 and "network-status" in pod_lines[0], pod_lines
    lab.converged()


def test_a_stalled_switch_delays_only_itself_and_converges_after_reconnecting(lab: Lab) -> None:
    start_cluster(lab)
    node1, node2 = lab.nodes
    node1.add_pod_port("p-a", 3)
    node2.add_pod_port("p-b", 3)
    lab.converged()
    node1.relay.pause()  # node-1's switch stops answering, mid-conversation
    lab.create_pod("a", node1, "100.64.1.10", "p-a")
    lab.create_pod("b", node2, "100.64.2.10", "p-b")
    lab.pods += [
        PodSpec(NAMESPACE, "a", "node-1", ipaddress.IPv4Address("100.64.1.10"), 3),
        PodSpec(NAMESPACE, "b", "node-2", ipaddress.IPv4Address("100.64.2.10"), 3),
    ]
    lab.converged("node-2")  # programmed while node-1's session waits
    assert node1.flows() == expected(lab.nodes, [], "node-1")
    # The connection dies in the middle of node-1's push; the bridge reconnects and converges.
    node1.relay.drop_connections()
    node1.relay.resume()
    lab.converged()
    wait_for(
        lambda: f"switch {node1.datapath_id} (node node-1) disconnected" in lab.controller.log_text(),
        15,
        "the old connection to be noticed dead",
        lab.controller.log_text,
    )
    assert lab.controller.metric("sluice_controller_switches_connected") == 2


def test_openflow_over_tls_with_client_certificates(lab: Lab, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    rogue = make_pki(tmp_path / "rogue")  # another CA: node-2's certificate is not from ours
    node1, node2 = lab.nodes
    node1.ovs.vsctl("set-ssl", str(pki["switch.key"]), str(pki["switch.crt"]), str(pki["ca.crt"]))
    node2.ovs.vsctl("set-ssl", str(rogue["switch.key"]), str(rogue["switch.crt"]), str(pki["ca.crt"]))
    for node in lab.nodes:
        node.use_controllers(f"ssl:127.0.0.1:{RELAY_PORT}")
    lab.controller.add_settings(
        tls_key=str(pki["controller.key"]), tls_cert=str(pki["controller.crt"]), tls_ca=str(pki["ca.crt"])
    )
    for node in lab.nodes:
        lab.create_node(node)
    lab.controller.start()
    assert "(TLS)" in lab.controller.log_text()
    lab.converged("node-1")
    # OVSDB's connection status lags a few seconds behind (ovs-vswitchd updates it periodically).
    wait_for(
        lambda: node1.controller_roles() == {RELAY_PORT: "master"}, CONVERGE, "node-1 connected over TLS"
    )
    assert lab.controller.metric("sluice_controller_switches_connected") == 1
    assert node2.controller_roles() == {}
    assert node2.flows().sorted() == []  # the controller refused its certificate


def cross_node_pods(lab: Lab, netns: NetnsFactory) -> dict[str, PodPort]:
    """Pod a on node-1 and pod b on node-2, with an underlay between the nodes."""
    node1, node2 = lab.nodes
    connect_underlay(node1, node2)
    pods = {}
    for node, name, ip in ((node1, "a", "100.64.1.10"), (node2, "b", "100.64.2.10")):
        pods[name] = attach_veth_pod(
            node.ovs, netns().name, host_ifname=f"veth-{name}", ip=f"{ip}/24", mac=mac_for_ip(ip),
            ofport=3, gateway=node.spec.gateway_ip, mtu=1400,
        )  # fmt: skip
        lab.create_pod(name, node, ip, f"veth-{name}")
        lab.pods.append(PodSpec(NAMESPACE, name, node.name, ipaddress.IPv4Address(ip), 3))
    start_cluster(lab)
    warm_tunnel(pods["a"].pod_netns, "100.64.2.10", lab.nodes)
    return pods


def test_pods_on_two_nodes_reach_each_other_through_geneve(lab: Lab, netns: NetnsFactory) -> None:
    pods = cross_node_pods(lab, netns)
    result = ping(pods["a"].pod_netns, "100.64.2.10", count=5, interval=0.1)
    assert result.ok, result
    exchange = tcp_exchange(pods["b"].pod_netns, pods["a"].pod_netns, "100.64.2.10", size=256 << 10)
    assert exchange.size == 256 << 10


def test_a_cross_node_ping_loses_nothing_while_the_controller_restarts(lab: Lab, netns: NetnsFactory) -> None:
    pods = cross_node_pods(lab, netns)
    result: list[PingResult] = []
    pinger = threading.Thread(
        target=lambda: result.append(ping(pods["a"].pod_netns, "100.64.2.10", count=160, interval=0.05))
    )
    pinger.start()
    lab.controller.stop(signal.SIGTERM)
    lab.controller.start()
    pinger.join(30)
    assert result and result[0].transmitted == 160 and result[0].received == 160, result
    assert lab.controller.flow_mods() == 0
