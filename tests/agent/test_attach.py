"""Pod attachment on real OVS and real namespaces: veth and internal ports, traffic, detach, check."""

from __future__ import annotations

import dataclasses
import ipaddress
import time

import pytest

from flows.cluster import Cluster
from flows.compiler import compile_node
from flows.example import example_cluster
from flows.ofctl import render_flows
from lab import netns as lab_netns
from lab.traffic import ping, tcp_exchange
from ovsagent import netns
from ovsagent.attach import (
    AttachError,
    AttachmentKind,
    AttachSpec,
    InternalAttachment,
    VethAttachment,
    attachment_for,
)
from ovsagent.naming import Key, PodIdentity
from tests.agent.conftest import BRIDGE, AgentNode
from tests.conftest import NetnsFactory

GATEWAY = ipaddress.IPv4Address("100.64.1.1")
MTU = 1442  # 1500 underlay - 58 (Geneve with one option)
KINDS = [AttachmentKind.VETH, AttachmentKind.INTERNAL]


def _spec(pod: PodIdentity, ofport_request: int | None = None) -> AttachSpec:
    return AttachSpec(pod, BRIDGE, GATEWAY, MTU, ofport_request=ofport_request)


def _attachment(agent_node: AgentNode, kind: AttachmentKind) -> VethAttachment | InternalAttachment:
    att = attachment_for(kind, agent_node.ovsdb, host_netns=agent_node.host_netns)
    assert isinstance(att, VethAttachment | InternalAttachment)
    return att


def _ethtool_tx(ns: str, ifname: str) -> str:
    out = lab_netns.Netns(ns).exec("ethtool", "-k", ifname).stdout
    return next(line for line in out.splitlines() if line.startswith("tx-checksumming:"))


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_attach_plumbs_the_pod_and_the_port(agent_node: AgentNode, kind: AttachmentKind) -> None:
    ns, pod = agent_node.pod("web-1", "100.64.1.10")
    att = _attachment(agent_node, kind)
    result = att.attach(_spec(pod))

    # the pod side: name, MAC from the IP, address, MTU, default route, TX checksum off
    state = netns.read_interface(pod.netns, "eth0")
    assert state is not None
    assert (state.mac, state.mtu, state.up) == ("0a:58:64:40:01:0a", MTU, True)
    assert state.addresses == (ipaddress.IPv4Interface("100.64.1.10/24"),)
    assert state.default_gateway == GATEWAY
    assert state.tx_checksum is False
    assert _ethtool_tx(ns, "eth0") == "tx-checksumming: off"
    route = lab_netns.Netns(ns).ip("route", "show", "default").stdout
    assert route.startswith("default via 100.64.1.1 dev eth0")
    assert state.kind == ("veth" if kind is AttachmentKind.VETH else "tun")

    # the OVS side: the port named after the pod, an ofport, the identity in external_ids
    node = agent_node.node
    assert result.port_name == pod.port_name and result.ofport == node.ofport(pod.port_name)
    record = agent_node.ovsdb.port(pod.port_name)
    assert record is not None and record.bridge == BRIDGE
    assert record.external_ids == {**pod.external_ids(), Key.KIND.value: kind.value}
    assert PodIdentity.from_external_ids(record.external_ids) == pod
    if kind is AttachmentKind.VETH:
        # the host end lives in the node's namespace, where vswitchd runs
        assert lab_netns.link_exists(node.netns, pod.port_name)
    else:
        assert not lab_netns.link_exists(node.netns, pod.port_name)  # moved into the pod
    assert att.check(_spec(pod)) == []


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_two_attached_pods_talk_through_the_pipeline(agent_node: AgentNode, kind: AttachmentKind) -> None:
    cluster = example_cluster()
    att = _attachment(agent_node, kind)
    pods = {}
    for spec_pod in cluster.pods_on("node-1"):
        ns, pod = agent_node.pod(spec_pod.name, str(spec_pod.ip), namespace=spec_pod.namespace)
        pods[spec_pod.name] = (ns, pod, att.attach(_spec(pod)))
    # the flows use the ofports the switch gave (as the controller reads them from the Pods)
    placed = tuple(
        dataclasses.replace(p, ofport=pods[p.name][2].ofport) if p.name in pods else p for p in cluster.pods
    )
    agent_node.node.add_flows(BRIDGE, render_flows(compile_node(Cluster(cluster.nodes, placed), "node-1")))
    (web_ns, web, _), (db_ns, db, _) = pods["web-1"], pods["db-1"]
    assert ping(web_ns, db.ip.ip, count=2).ok
    assert ping(db_ns, web.ip.ip, count=2).ok
    # TCP too: broken checksums (TX offload left on with the userspace datapath) would stall it
    assert tcp_exchange(db_ns, web_ns, db.ip.ip, size=128 * 1024).size == 128 * 1024


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_detach_removes_port_and_interfaces_and_may_repeat(
    agent_node: AgentNode, kind: AttachmentKind
) -> None:
    ns, pod = agent_node.pod("web-1", "100.64.1.10")
    att = _attachment(agent_node, kind)
    spec = _spec(pod)
    att.attach(spec)

    att.detach(spec.target())

    assert agent_node.ovsdb.port(pod.port_name) is None
    assert pod.port_name not in agent_node.node.vsctl("list-ports", BRIDGE).split()
    assert not lab_netns.link_exists(agent_node.node.netns, pod.port_name)
    assert not lab_netns.link_exists(ns, "eth0")
    att.detach(spec.target())  # again: nothing left, still fine
    # DEL without a netns (CNI_NETNS empty), for a pod never added
    att.detach(dataclasses.replace(spec.target(), netns=None, port_name="ghost-00000000"))
    problems = att.check(spec)
    assert f"OVS port {pod.port_name} is missing" in problems
    assert any("interface eth0 is missing" in p for p in problems)


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_attach_again_is_idempotent(agent_node: AgentNode, kind: AttachmentKind) -> None:
    _, pod = agent_node.pod("web-1", "100.64.1.10")
    att = _attachment(agent_node, kind)
    first = att.attach(_spec(pod))
    second = att.attach(_spec(pod))
    assert second == first
    assert att.check(_spec(pod)) == []


def test_check_reports_what_drifted(agent_node: AgentNode) -> None:
    ns, pod = agent_node.pod("web-1", "100.64.1.10")
    att = _attachment(agent_node, AttachmentKind.VETH)
    spec = _spec(pod)
    att.attach(spec)
    lab_netns.Netns(ns).ip("link", "set", "dev", "eth0", "mtu", "1400")
    lab_netns.Netns(ns).ip("route", "del", "default")
    lab_netns.Netns(ns).exec("ethtool", "-K", "eth0", "tx", "on")
    problems = att.check(spec)
    assert any("MTU 1400, expected 1442" in p for p in problems), problems
    assert any("default route via None" in p for p in problems), problems
    assert any("TX checksum offload on" in p for p in problems), problems
    other = dataclasses.replace(pod, container_id="another")
    assert any("container-id" in p for p in att.check(_spec(other)))


def test_attach_into_a_missing_namespace_fails_and_leaves_nothing(agent_node: AgentNode) -> None:
    _, pod = agent_node.pod("web-1", "100.64.1.10")
    gone = dataclasses.replace(pod, netns="/run/netns/sluice-test-does-not-exist")
    for kind in KINDS:
        with pytest.raises(AttachError, match="does not exist"):
            _attachment(agent_node, kind).attach(_spec(gone))
        assert agent_node.ovsdb.port(pod.port_name) is None
        assert not lab_netns.link_exists(agent_node.node.netns, pod.port_name)


def test_bad_specs_are_refused_with_a_reason(agent_node: AgentNode) -> None:
    _, pod = agent_node.pod("web-1", "100.64.1.10")
    att = _attachment(agent_node, AttachmentKind.VETH)
    with pytest.raises(AttachError, match=r"outside 100\.64\.1\.0/24"):
        att.attach(AttachSpec(pod, BRIDGE, ipaddress.IPv4Address("100.64.2.1"), MTU))
    with pytest.raises(AttachError, match="invalid MTU"):
        att.attach(AttachSpec(pod, BRIDGE, GATEWAY, 20))
    with pytest.raises(AttachError, match="twice"):
        att.attach_many([_spec(pod), _spec(pod)])
    with pytest.raises(ValueError, match="unknown attachment kind"):
        attachment_for("macvlan", agent_node.ovsdb)


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_twenty_pods_in_one_batch_and_one_by_one(agent_node: AgentNode, kind: AttachmentKind) -> None:
    att = _attachment(agent_node, kind)
    batch = [_spec(agent_node.pod(f"b-{i}", f"100.64.1.{10 + i}")[1]) for i in range(20)]
    single = [_spec(agent_node.pod(f"s-{i}", f"100.64.1.{40 + i}")[1]) for i in range(20)]

    started = time.perf_counter()
    batched = att.attach_many(batch)
    t_batch = time.perf_counter() - started
    started = time.perf_counter()
    one_by_one = [att.attach(s) for s in single]
    t_single = time.perf_counter() - started

    ofports = [r.ofport for r in batched + one_by_one]
    assert len(set(ofports)) == 40 and all(p > 0 for p in ofports)
    assert {r.name for r in agent_node.ovsdb.ports_by_external_ids()} == {s.port_name for s in batch + single}
    for spec in (batch[0], batch[-1], single[-1]):
        assert att.check(spec) == []

    started = time.perf_counter()
    att.detach_many([s.target() for s in batch])
    t_del_batch = time.perf_counter() - started
    started = time.perf_counter()
    for s in single:
        att.detach(s.target())
    t_del_single = time.perf_counter() - started
    assert agent_node.ovsdb.ports_by_external_ids() == []
    print(
        f"\n{kind}: attach 20 batched {t_batch * 1000:.0f} ms ({t_batch * 50:.1f} ms/pod), "
        f"one by one {t_single * 1000:.0f} ms ({t_single * 50:.1f} ms/pod); "
        f"detach batched {t_del_batch * 1000:.0f} ms, one by one {t_del_single * 1000:.0f} ms"
    )


def test_veth_pods_survive_a_vswitchd_restart(agent_node: AgentNode) -> None:
    att = _attachment(agent_node, AttachmentKind.VETH)
    spec = _spec(agent_node.pod("web-1", "100.64.1.10")[1])
    before = att.attach(spec)
    agent_node.node.stop_vswitchd()
    agent_node.node.start_vswitchd()
    assert agent_node.ovsdb.wait_for_ofport(spec.port_name, timeout=10.0) == before.ofport
    assert att.check(spec) == []


def test_internal_ports_are_lost_with_vswitchd_and_attach_again_restores_them(
    agent_node: AgentNode,
) -> None:
    # Userspace internal ports are tap devices that ovs-vswitchd makes persistent: the pod keeps
    # its tap when vswitchd stops, but nobody reads it any more (no carrier), and the restarted
    # vswitchd creates a fresh tap in its own namespace. This is why veth is the default with
    # the netdev datapath; attaching again moves the fresh tap in, replacing the dead one.
    att = _attachment(agent_node, AttachmentKind.INTERNAL)
    spec = _spec(agent_node.pod("web-1", "100.64.1.10")[1])
    att.attach(spec)
    agent_node.node.stop_vswitchd()
    agent_node.node.start_vswitchd()
    agent_node.ovsdb.wait_for_ofport(spec.port_name, timeout=10.0)
    assert any("eth0 in" in p and "has no carrier" in p for p in att.check(spec))
    assert lab_netns.link_exists(agent_node.node.netns, spec.port_name)
    att.attach(spec)
    assert att.check(spec) == []


@pytest.fixture
def netns_factory(request: pytest.FixtureRequest) -> NetnsFactory:
    """The `netns` fixture under another name (in this module `netns` is ovsagent.netns)."""
    factory: NetnsFactory = request.getfixturevalue("netns")
    return factory


def _pod_config(mac: str = "0a:58:64:40:01:0a") -> netns.InterfaceConfig:
    return netns.InterfaceConfig("eth0", mac, MTU, ipaddress.IPv4Interface("100.64.1.10/24"), GATEWAY)


def test_create_veth_replaces_a_stale_host_end_and_isolates_it(netns_factory: NetnsFactory) -> None:
    host, pod = netns_factory(), netns_factory()
    # a leftover of a failed ADD: the host end exists, its peer elsewhere
    host.ip("link", "add", "vstale0", "type", "veth", "peer", "name", "vstale0p")
    netns.create_veth("vstale0", str(pod.path), _pod_config(), host_netns=str(host.path))

    assert not lab_netns.link_exists(host.name, "vstale0p")  # the old pair is gone
    info = lab_netns.link_info(host.name, "vstale0")
    assert info.mtu == MTU and info.up
    sysctl = host.exec(
        "sysctl", "-n", "net.ipv4.conf.vstale0.arp_ignore", "net.ipv6.conf.vstale0.disable_ipv6"
    )
    assert sysctl.stdout.split() == ["8", "1"]
    state = netns.read_interface(str(pod.path), "eth0")
    assert state is not None
    assert (state.kind, state.mac, state.mtu, state.up, state.carrier) == (
        "veth",
        "0a:58:64:40:01:0a",
        MTU,
        True,
        True,
    )
    assert state.addresses == (ipaddress.IPv4Interface("100.64.1.10/24"),)
    assert (state.default_gateway, state.tx_checksum) == (GATEWAY, False)
    assert netns.link_mac("vstale0", netns=str(host.path)) == info.mac


def test_configure_pod_interface_again_restores_drift(netns_factory: NetnsFactory) -> None:
    host, pod = netns_factory(), netns_factory()
    netns.create_veth("vconf0", str(pod.path), _pod_config(), host_netns=str(host.path))
    pod.ip("link", "set", "dev", "eth0", "down", "mtu", "1400", "address", "0a:58:00:00:00:01")
    pod.exec("ethtool", "-K", "eth0", "tx", "on")

    netns.configure_pod_interface(str(pod.path), _pod_config())
    netns.configure_pod_interface(str(pod.path), _pod_config())  # and again: nothing changes

    state = netns.read_interface(str(pod.path), "eth0")
    assert state is not None
    assert (state.mac, state.mtu, state.up, state.tx_checksum) == ("0a:58:64:40:01:0a", MTU, True, False)
    assert state.addresses == (ipaddress.IPv4Interface("100.64.1.10/24"),)
    assert state.default_gateway == GATEWAY


def test_create_veth_failures_name_the_place_and_leave_nothing(netns_factory: NetnsFactory) -> None:
    host, pod = netns_factory(), netns_factory()
    netns.create_veth("vfail0", str(pod.path), _pod_config(), host_netns=str(host.path))
    # the pod already has an eth0: the second veth cannot be made, and nothing is left of it
    with pytest.raises(
        netns.NetlinkError, match=rf"cannot create veth vfail1 / {pod.path}:eth0: File exists"
    ):
        netns.create_veth("vfail1", str(pod.path), _pod_config(), host_netns=str(host.path))
    assert not netns.link_exists("vfail1", netns=str(host.path))
    with pytest.raises(netns.NetnsGone, match="does not exist"):
        netns.create_veth("vfail2", f"{pod.path}-gone", _pod_config(), host_netns=str(host.path))
    with pytest.raises(netns.NetlinkError, match=rf"no interface eth1 in {pod.path}"):
        netns.configure_pod_interface(str(pod.path), dataclasses.replace(_pod_config(), ifname="eth1"))
    with pytest.raises(netns.NetlinkError, match=rf"no device nope0 in {host.path}"):
        netns.set_link_up("nope0", netns=str(host.path))
    # deletes are idempotent, also for a namespace that is gone
    assert netns.delete_link("vfail0", netns=str(host.path)) is True
    assert netns.delete_link("vfail0", netns=str(host.path)) is False
    assert netns.delete_link("eth0", netns=str(pod.path)) is False  # went with its peer
    assert netns.delete_link("eth0", netns=f"{pod.path}-gone") is False
    assert netns.link_mac("vfail0", netns=str(host.path)) is None
