"""A 3-node lab with 2 pods per node: all-pairs TCP and UDP, Geneve on the fabric, pod deletion
leaving nothing behind, controller/agent restarts under continuous cross-node traffic, and a
node's br-int deleted and rebuilt with its pods."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab import cluster, kubelet
from lab import netns as netns_lib
from lab.components import LabPaths
from lab.kubeapi import KubeClient, KubeError
from lab.state import LabState, StateStore
from ovsagent.naming import port_name
from tests.e2e.helpers import PingRun, flows, ofports, ovs, probe, tcpdump, unreachable, warm_up
from tests.support import wait_until

pytestmark = pytest.mark.ovs

Lab = tuple[StateStore, LabState]


def test_every_pod_reaches_every_pod_over_tcp_and_udp(lab3x2: Lab) -> None:
    store, _ = lab3x2
    pods = store.load().pods
    assert len(pods) == 6 and len({p.node for p in pods}) == 3
    for src in pods:
        targets = [(proto, dst.ip, 80 if proto == "TCP" else 53) for dst in pods if dst.key != src.key
                   for proto in ("TCP", "UDP")]  # fmt: skip
        answers = probe(src.netns, targets)
        expected = [f"{dst.key} probe-{dst.ip}" for dst in pods if dst.key != src.key for _ in (0, 1)]
        assert answers == expected, f"from {src.key}"


def test_cross_node_traffic_is_geneve_on_the_fabric(lab3x2: Lab) -> None:
    _, state = lab3x2
    a = next(p for p in state.pods if p.node == "node-1")
    b = next(p for p in state.pods if p.node == "node-2")
    port = state.node("node-1").fabric_port  # node-1's port on the fabric bridge
    geneve = tcpdump(
        state.fabric_netns, port, f"udp port 6081 and host {state.node('node-2').underlay_ip}", 4, 20
    )
    plain = tcpdump(state.fabric_netns, port, f"icmp or host {b.ip}", 1, 6)
    assert probe(a.netns, [("UDP", b.ip, 53)]) == [f"{b.key} probe-{b.ip}"]
    netns_lib.Netns(a.netns).exec("ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", b.ip)
    out, _ = geneve.communicate(timeout=30)
    assert geneve.returncode == 0, f"fewer than 4 Geneve packets seen:\n{out}"
    assert out.count("Geneve") >= 4 or out.count(".6081") >= 4, out
    plain_out, _ = plain.communicate(timeout=30)
    assert plain_out.strip() == "", f"unencapsulated pod traffic on the fabric:\n{plain_out}"


def test_pod_delete_leaves_nothing(lab3x2: Lab) -> None:
    store, state = lab3x2
    node = state.node("node-2")
    pod = kubelet.create_pod(store, "doomed", node="node-2", serve=["TCP:80"])
    port = port_name(pod.namespace, pod.name)
    ipam_file = LabPaths(store.dir).node_dir(node.name) / "agent" / "ipam" / "allocations" / pod.ip
    mac = "0a:58:" + ":".join(f"{int(o):02x}" for o in pod.ip.split("."))
    assert port in ofports(node) and ipam_file.exists() and netns_lib.netns_exists(pod.netns)
    # Only the pod's own node has flows naming it (the others route node-2's whole podCIDR).
    assert pod.ip in flows(node) and mac in flows(node)
    others = [p for p in store.load().pods if p.key != pod.key]

    kubelet.delete_pod(store, pod.name)

    def gone() -> bool:
        return all(pod.ip not in text and mac not in text for text in map(flows, state.nodes))

    wait_until(gone, 10, f"{pod.ip}'s flows gone from every bridge")
    assert port not in ofports(node)
    assert not ipam_file.exists()
    assert not netns_lib.netns_exists(pod.netns) and netns_lib.read_entry(pod.netns) is None
    assert not netns_lib.link_exists(node.netns, port)
    assert all(not s.alive() for s in pod.servers)
    api = KubeClient.from_kubeconfig(LabPaths(store.dir).host_kubeconfig)
    with pytest.raises(KubeError) as err:
        api.get("/api/v1/namespaces/default/pods/doomed")
    assert err.value.status == 404
    assert store.load().pod("default", "doomed") is None
    # the others are unaffected
    src = others[0]
    answers = probe(src.netns, [("TCP", p.ip, 80) for p in others[1:]])
    assert answers == [f"{p.key} probe-{p.ip}" for p in others[1:]]


@pytest.mark.parametrize("component", ["controller/node-1", "agent/node-1", "agent/node-2"])
def test_restart_during_traffic_loses_nothing(lab3x2: Lab, component: str) -> None:
    store, state = lab3x2
    a = next(p for p in state.pods if p.node == "node-1")
    b = next(p for p in state.pods if p.node == "node-2")
    before_ports = {n.name: ofports(n) for n in state.nodes}
    before_ips = {p.key: p.ip for p in store.load().pods}
    warm_up(a, b)
    run = PingRun(a.netns, b.ip)
    run2 = PingRun(b.netns, a.ip)
    try:
        time.sleep(0.5)
        cluster.restart_component(store, component)
        time.sleep(0.5)
    finally:
        sent, lost, out = run.stop()
        sent2, lost2, out2 = run2.stop()
    assert sent > 20 and lost == [], (lost, out)
    assert sent2 > 20 and lost2 == [], (lost2, out2)
    assert {n.name: ofports(n) for n in state.nodes} == before_ports
    assert {p.key: p.ip for p in store.load().pods} == before_ips
    # and the cluster still works: a new pod on the other node
    name = "after-" + component.replace("/", "-")
    pod = kubelet.create_pod(store, name, node="node-3")
    try:
        assert (
            netns_lib.Netns(a.netns)
            .exec("ping", "-n", "-c", "1", "-w", "3", "-i", "0.2", pod.ip, check=False)
            .returncode
            == 0
        )
    finally:
        kubelet.delete_pod(store, name)


def test_node_add_and_remove(lab3x2: Lab) -> None:
    store, state = lab3x2
    node = cluster.add_node(store)
    pod = kubelet.create_pod(store, "newcomer", node=node.name, serve=["TCP:80"])
    others = [p for p in store.load().pods if p.key != pod.key]
    for other in others:
        assert probe(other.netns, [("TCP", pod.ip, 80)]) == [f"{pod.key} probe-{pod.ip}"], other.key
    assert all(node.underlay_ip in flows(n) for n in state.nodes)

    cluster.remove_node(store, node.name)

    def gone() -> bool:
        return all(node.underlay_ip not in flows(n) for n in state.nodes)

    wait_until(gone, 10, f"{node.name}'s flows gone from the other bridges")
    assert not netns_lib.netns_exists(node.netns)
    assert store.load().pod("default", "newcomer") is None
    assert len(store.load().nodes) == 3


def test_burst_of_100_pods(lab3x2: Lab) -> None:
    store, state = lab3x2
    paths = LabPaths(store.dir)
    first = {p.node: p for p in store.load().pods}  # one existing pod per node, to ping from

    def snapshot() -> dict[str, object]:
        return {
            n.name: (
                sorted(ofports(n)),
                len(flows(n).splitlines()),
                sorted(p.name for p in (paths.node_dir(n.name) / "agent" / "ipam" / "allocations").iterdir()),
            )
            for n in state.nodes
        }

    before = snapshot()
    names = [f"burst-{i}" for i in range(100)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        pods = list(
            pool.map(lambda i: kubelet.create_pod(store, names[i], node=f"node-{i % 3 + 1}"), range(100))
        )
    ips = [p.ip for p in pods]
    assert len(set(ips)) == 100
    for src in first.values():
        assert unreachable(src.netns, ips) == [], f"from {src.key}"
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda name: kubelet.delete_pod(store, name), names))
    wait_until(lambda: snapshot() == before, 15, "every bridge, port and address back as before the burst")
    assert not [n for n in os.listdir("/run/netns") if "burst-" in n]
    api = KubeClient.from_kubeconfig(paths.host_kubeconfig)
    left = [p["metadata"]["name"] for p in api.get("/api/v1/namespaces/default/pods")["items"]]
    assert not [n for n in left if n.startswith("burst-")]


@pytest.mark.parametrize("bridge", ["br-int", "br-phy"])
def test_bridge_deleted_under_a_node_comes_back_with_its_pods(lab3x2: Lab, bridge: str) -> None:
    """br-int deleted on node-2 (an operator's slip, or OVSDB losing its database): its agent
    builds br-int again at once and restores the node's pods with their addresses, the controller
    programs the new bridge, and every pod reaches every pod again. br-phy deleted: the node's
    underlay address goes with it (and with it the API server, the controllers and the tunnels);
    its agent builds br-phy again with the address and routes it recorded."""
    store, state = lab3x2
    node = state.node("node-2")
    pods = store.load().pods
    ips = {p.key: p.ip for p in pods}
    names = [port_name(p.namespace, p.name) for p in pods if p.node == "node-2"]
    ovs(node).vsctl("del-br", bridge)
    if bridge == "br-int":
        wait_until(lambda: set(names) <= set(ofports(node)), 15, "node-2's pods back on a new br-int")

    def every_pod_reaches_every_pod() -> bool:
        return all(not unreachable(src.netns, [p.ip for p in pods if p.key != src.key]) for src in pods)

    wait_until(every_pod_reaches_every_pod, 30, "every pod reaching every pod over the rebuilt br-int")
    assert {p.key: p.ip for p in store.load().pods} == ips
    src = next(p for p in pods if p.node == "node-1")
    targets = [p for p in pods if p.node == "node-2"]
    answers = probe(src.netns, [("TCP", p.ip, 80) for p in targets])
    assert answers == [f"{p.key} probe-{p.ip}" for p in targets]
