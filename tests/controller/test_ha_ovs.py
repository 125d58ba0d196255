"""Two `sluice-controller` replicas, one Lease: one OpenFlow master per switch, failover without churn.

Each bridge is configured with both controllers (through one relay per replica, see harness.py);
OVSDB's Controller rows say which connection holds which role.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from kubernetes import client

from controller import annotations as ann
from flows.cluster import PodSpec
from flows.identity import mac_for_ip
from lab.apiserver import ApiServer
from lab.pods import PodPort, attach_veth_pod
from lab.traffic import PingResult, ping
from tests.conftest import NetnsFactory, OvsNodeFactory
from tests.controller.harness import (
    RELAY_PORT,
    ControllerProcess,
    LabNode,
    connect_underlay,
    expected,
    setup_node,
    wait_for,
    warm_tunnel,
)
from tests.support import body

pytestmark = pytest.mark.ovs

LEASE_SECONDS = 4
CONVERGE = 30.0


@dataclass
class HaLab:
    api: ApiServer
    core: client.CoreV1Api
    nodes: list[LabNode]
    a: ControllerProcess
    b: ControllerProcess

    def converged(self, pods: list[PodSpec] | None = None) -> None:
        for node in self.nodes:
            want = expected(self.nodes, pods or [], node.name)
            wait_for(lambda node=node, want=want: node.flows() == want, CONVERGE, f"{node.name}'s flows")  # type: ignore[misc]

    def masters(self, port: int) -> bool:
        """True when every bridge has exactly one master, the replica behind relay `port`."""
        for node in self.nodes:
            roles = node.controller_roles()
            if [p for p, role in roles.items() if role == "master"] != [port]:
                return False
        return True


@pytest.fixture
def ha(ovs_node_factory: OvsNodeFactory, tmp_path: Path) -> Iterator[HaLab]:
    api = ApiServer("127.0.0.1", 0).start()
    replicas: list[ControllerProcess] = []
    nodes: list[LabNode] = []
    try:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        core = client.CoreV1Api(api.api_client())
        core.create_namespace(body({"metadata": {"name": "apps"}}))
        replicas = [
            ControllerProcess(tmp_path, kubeconfig, identity=name, lease_duration=LEASE_SECONDS)
            for name in ("replica-a", "replica-b")
        ]
        ports = [r.openflow_port for r in replicas]
        for index, name in ((1, "node-1"), (2, "node-2")):
            nodes.append(setup_node(ovs_node_factory(name), name, index, ports))
        for node in nodes:
            core.create_node(body(node.node_object()))
        yield HaLab(api, core, nodes, replicas[0], replicas[1])
    finally:
        for replica in replicas:
            replica.kill()
        for node in nodes:
            node.close()
        api.stop()


def create_pod(ha: HaLab, node: LabNode, name: str, ip: str, port_name: str) -> None:
    status = json.dumps([{"name": "sluice", "interface": "eth0", "ips": [ip], "default": True}])
    annotations = {ann.POD_PORT_NAME: port_name, ann.NETWORK_STATUS: status}
    ha.core.create_namespaced_pod(
        "apps",
        body(
            {
                "metadata": {"name": name, "annotations": annotations},
                "spec": {"nodeName": node.name, "containers": [{"name": "c", "image": "busybox"}]},
            }
        ),
    )


def test_both_up_exactly_one_master_per_switch_and_only_it_sends(ha: HaLab) -> None:
    ha.a.start()
    ha.converged()
    ha.b.start()
    wait_for(
        lambda: all(len(n.controller_roles()) == 2 for n in ha.nodes), CONVERGE, "both replicas connected"
    )
    wait_for(lambda: ha.masters(RELAY_PORT), CONVERGE, "replica-a master everywhere")
    wait_for(
        lambda: all(sorted(n.controller_roles().values()) == ["master", "slave"] for n in ha.nodes),
        CONVERGE,
        "replica-b slave everywhere",
        lambda: "\n".join(f"{n.name}: {n.controller_roles()}" for n in ha.nodes) + ha.b.log_text(),
    )
    assert ha.a.metric("sluice_controller_leader") == 1
    assert ha.b.metric("sluice_controller_leader") == 0
    # A pod change: programmed by the leader only.
    node1 = ha.nodes[0]
    node1.add_pod_port("p-web", 3)
    create_pod(ha, node1, "web", "100.64.1.10", "p-web")
    ha.converged([PodSpec("apps", "web", "node-1", ipaddress.IPv4Address("100.64.1.10"), 3)])
    time.sleep(2.5)  # a resync on both replicas
    assert ha.b.flow_mods() == 0
    assert ha.a.flow_mods() > 0


def test_killing_the_leader_fails_over_within_the_lease_without_a_flow_mod(
    ha: HaLab, netns: NetnsFactory
) -> None:
    node1, node2 = ha.nodes
    connect_underlay(node1, node2)
    pods: dict[str, PodPort] = {}
    specs: list[PodSpec] = []
    for node, name, ip in ((node1, "a", "100.64.1.10"), (node2, "b", "100.64.2.10")):
        pods[name] = attach_veth_pod(
            node.ovs, netns().name, host_ifname=f"veth-{name}", ip=f"{ip}/24", mac=mac_for_ip(ip),
            ofport=3, gateway=node.spec.gateway_ip, mtu=1400,
        )  # fmt: skip
        create_pod(ha, node, name, ip, f"veth-{name}")
        specs.append(PodSpec("apps", name, node.name, ipaddress.IPv4Address(ip), 3))
    ha.a.start()
    ha.converged(specs)
    warm_tunnel(pods["a"].pod_netns, "100.64.2.10", ha.nodes)
    ha.b.start()
    wait_for(lambda: ha.masters(RELAY_PORT), CONVERGE, "replica-a master everywhere")
    wait_for(
        lambda: all(len(n.controller_roles()) == 2 for n in ha.nodes), CONVERGE, "both replicas connected"
    )
    result: list[PingResult] = []
    pinger = threading.Thread(
        target=lambda: result.append(ping(pods["a"].pod_netns, "100.64.2.10", count=240, interval=0.05))
    )
    pinger.start()
    assert ha.a.proc is not None
    ha.a.proc.send_signal(signal.SIGKILL)  # no chance to release the Lease
    killed = time.monotonic()
    # The dead leader's Lease runs out at most LEASE_SECONDS after its last renewal; replica-b
    # tries every renew period (1 s) and, once it holds the Lease, claims master on every switch.
    leads = lambda: ha.b.metric("sluice_controller_leader") == 1  # noqa: E731
    wait_for(leads, LEASE_SECONDS + 6, "replica-b leads", ha.b.log_text)
    took_over = time.monotonic() - killed
    assert took_over < LEASE_SECONDS + 1 + 1.5, f"replica-b led {took_over:.1f}s after the kill"
    # OVSDB's Controller.role trails the OpenFlow role change by up to a few seconds.
    wait_for(lambda: ha.masters(RELAY_PORT + 1), CONVERGE, "replica-b master everywhere", ha.b.log_text)
    for node in ha.nodes:
        wait_for(
            partial(ha.b.reconciled, node.name),
            CONVERGE,
            f"replica-b reconciled {node.name}",
            ha.b.log_text,
        )
    assert ha.b.flow_mods() == 0  # the new master read back, diffed, found nothing to do
    ha.converged(specs)
    pinger.join(30)
    assert result and result[0].transmitted == 240 and result[0].received == 240, result
    ha.a.kill()


def test_a_clean_stop_of_the_leader_hands_over_at_once(ha: HaLab) -> None:
    ha.a.start()
    ha.converged()
    ha.b.start()
    wait_for(
        lambda: all(len(n.controller_roles()) == 2 for n in ha.nodes), CONVERGE, "both replicas connected"
    )
    code, _ = ha.a.stop(signal.SIGTERM)
    assert code == 0
    stopped = time.monotonic()
    leads = lambda: ha.b.metric("sluice_controller_leader") == 1  # noqa: E731
    wait_for(leads, CONVERGE, "replica-b leads", ha.b.log_text)
    took_over = time.monotonic() - stopped
    # released at the stop, not expired: well within one lease
    assert took_over < LEASE_SECONDS, f"replica-b led {took_over:.1f}s after the stop"
    # OVSDB's Controller.role trails the OpenFlow role change by up to a few seconds.
    wait_for(lambda: ha.masters(RELAY_PORT + 1), CONVERGE, "replica-b master everywhere", ha.b.log_text)
    assert ha.b.flow_mods() == 0
