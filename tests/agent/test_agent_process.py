"""The real `sluice-agent` process on real OVS, driven through the real `sluice-cni` binary as a kubelet does.

Each test gets a node namespace with ovsdb-server + ovs-vswitchd (no bridge: the agent builds
br-int), the lab API server holding the Node (podCIDR 100.64.1.0/24), and the agent process
running inside the node's namespace. The test stands in for the controller by installing the
flows `flows/` compiles for the pods the agent plumbed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from flows.cluster import Cluster
from flows.compiler import compile_node
from flows.ofctl import render_flows
from lab import netns as lab_netns
from lab.traffic import ping
from ovsagent import kube as agent_kube
from ovsagent.ipam import Ipam, Owner
from ovsagent.naming import port_name
from tests.agent.harness import (
    BRIDGE,
    FLOW_WAIT,
    GATEWAY,
    NODE,
    UNDERLAY,
    AgentBed,
    ControllerStandIn,
    agent_bed,
    vswitchd_stopped,
)
from tests.conftest import NetnsFactory, OvsNodeFactory
from tests.support import metric, wait_until

KINDS = ["veth", "internal"]
METRICS_PORT = 19101  # on the node namespace's own loopback: never taken by anything else
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"


@pytest.fixture(params=KINDS)
def bed(
    request: pytest.FixtureRequest, ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> Iterator[AgentBed]:
    """A node with the agent running, pods attached with the parametrized interface type."""
    with agent_bed(ovs_node_factory, netns, interface_type=request.param) as b:
        b.start_agent()
        yield b


@pytest.fixture
def veth_bed(ovs_node_factory: OvsNodeFactory, netns: NetnsFactory) -> Iterator[AgentBed]:
    """A node with the agent running (veth pods), metrics served on the node's loopback."""
    with agent_bed(ovs_node_factory, netns) as b:
        b.start_agent(metrics_address=f"127.0.0.1:{METRICS_PORT}")
        yield b


def _metrics_page(bed: AgentBed) -> str:
    """The agent's /metrics page (served by `veth_bed`), for `tests.support.metric`."""
    page: str = bed.in_node.run(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).read().decode()
    )
    return page


def _ip_records(bed: AgentBed) -> list[str]:
    alloc = bed.ipam_dir / "allocations"
    return sorted(p.name for p in alloc.iterdir() if not p.name.startswith(".")) if alloc.exists() else []


def test_node_setup_bridge_gateway_tunnel_and_annotations(veth_bed: AgentBed) -> None:
    bed = veth_bed
    node = bed.node
    assert node.vsctl("get", "Bridge", BRIDGE, "datapath_type").strip() == "netdev"
    assert node.vsctl("get", "Bridge", BRIDGE, "fail_mode").strip() == "secure"
    ann = bed.node_annotations()
    assert ann[agent_kube.NODE_TUNNEL_IP] == str(UNDERLAY.ip)
    assert (
        ann[agent_kube.NODE_TUNNEL_OFPORT]
        == "10"
        == node.vsctl("get", "Interface", "sluice-tun0", "ofport").strip()
    )
    assert int(ann[agent_kube.NODE_GATEWAY_OFPORT]) == bed.ofport("sluice-gw0")
    dpid = ann[agent_kube.NODE_DATAPATH_ID]
    assert len(dpid) == 16 and node.vsctl("get", "Bridge", BRIDGE, "datapath_id").strip().strip('"') == dpid
    assert node.vsctl("get", "Interface", "sluice-tun0", "type").strip() == "geneve"
    gw = lab_netns.Netns(node.netns).ip("-4", "addr", "show", "dev", "sluice-gw0").stdout
    assert f"inet {GATEWAY}/24" in gw
    route = lab_netns.Netns(node.netns).ip("route", "show", "100.64.1.0/24").stdout
    assert "dev sluice-gw0" in route
    # userspace tunnelling: the underlay interface is a port of br-phy, which holds its address
    assert "uplink0" in node.vsctl("list-ports", "br-phy").split()
    phys = lab_netns.Netns(node.netns).ip("-4", "addr", "show", "dev", "br-phy").stdout
    assert f"inet {UNDERLAY}" in phys
    assert "inet " not in lab_netns.Netns(node.netns).ip("-4", "addr", "show", "dev", "uplink0").stdout
    assert "br-phy" in node.appctl("ovs/route/show")
    # the metrics endpoint counts the STATUS calls the fixture made
    page = _metrics_page(bed)
    assert metric(page, "sluice_agent_cni_requests_total", code="0", command="STATUS") >= 1
    assert metric(page, "sluice_agent_ready") == 1
    # the socket: mode 0600
    mode = stat.S_IMODE(os.stat(bed.socket_path).st_mode)
    assert mode == 0o600
    # a clean start: no third-party deprecation notice (python-ovs importing eventlet) in the log
    assert "Eventlet is deprecated" not in bed.agent_log()


def test_configured_mtu_and_tunnel_ip_win_over_the_underlays(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> None:
    with agent_bed(ovs_node_factory, netns) as bed:
        bed.start_agent(mtu=1300, tunnel_ip="198.18.0.99")
        assert bed.node_annotations()[agent_kube.NODE_TUNNEL_IP] == "198.18.0.99"
        assert lab_netns.link_info(bed.node.netns, "sluice-gw0").mtu == 1300
        sandbox = os.path.basename(bed.create_pod("web-1"))
        run, _ = bed.add_ready("web-1")
        assert run.ok()["interfaces"][1]["mtu"] == 1300
        assert lab_netns.link_info(sandbox, "eth0").mtu == 1300


def test_a_missing_underlay_interface_is_status_50_naming_it(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> None:
    with agent_bed(ovs_node_factory, netns) as bed:
        bed.start_agent(wait_ready=False, underlay_interface="nope0")
        err = _status_error(bed, 50)
        assert "underlay interface nope0 does not exist" in err["msg"], err
        bed.create_pod("web-1")
        err = bed.cni("ADD", "web-1").error()
        assert err["code"] == 11 and "underlay interface nope0 does not exist" in err["msg"], err
        assert "br-phy" not in bed.node.vsctl("list-br").split()  # nothing half made meanwhile


def test_add_waits_for_flows_then_pod_pings_gateway_and_retry_is_identical(bed: AgentBed) -> None:
    netns_path = bed.create_pod("web-1")
    run, after_flows = bed.add_ready("web-1")
    result = run.ok()
    # answered as soon as the flows appeared, not at the end of the wait
    assert after_flows < FLOW_WAIT / 2, after_flows
    pod_if = result["interfaces"][1]
    assert pod_if["name"] == "eth0" and pod_if["sandbox"] == netns_path
    address = ipaddress.IPv4Interface(result["ips"][0]["address"])
    assert address.network == ipaddress.IPv4Network("100.64.1.0/24")
    assert pod_if["mac"] == "0a:58:" + ":".join(f"{b:02x}" for b in address.ip.packed)
    assert result["ips"][0]["gateway"] == str(GATEWAY) and result["ips"][0]["interface"] == 1
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": str(GATEWAY)}]
    assert result["interfaces"][0]["name"] == port_name("default", "web-1")
    # the annotations the controller reads, in one update
    ann = bed.annotations("web-1")
    assert ann[agent_kube.POD_PORT_NAME] == port_name("default", "web-1")
    status = json.loads(ann[NETWORK_STATUS])
    assert status == [
        {
            "name": "sluice",
            "interface": "eth0",
            "ips": [str(address.ip)],
            "mac": pod_if["mac"],
            "default": True,
        }
    ]
    # the pod reaches the node through its gateway port (sluice-gw0) and the pipeline. (The
    # gateway address itself is not answered: flows/ drops every podCIDR address without a pod,
    # the gateway's included; reported to the lead.)
    pod_ns = os.path.basename(netns_path)
    first = ping(pod_ns, UNDERLAY.ip, count=2)
    assert first.ok and "DUP" not in first.output, first.output
    # the pod learned the gateway's MAC from OVS, never the veth's from the node's kernel
    neigh = lab_netns.Netns(pod_ns).ip("neigh", "show", str(GATEWAY)).stdout
    assert "0a:58:64:40:01:01" in neigh, neigh
    if bed.interface_type == "veth":
        arp_ignore = lab_netns.Netns(bed.node.netns).exec(
            "cat", f"/proc/sys/net/ipv4/conf/{port_name('default', 'web-1')}/arp_ignore"
        )
        assert arp_ignore.stdout.strip() == "8"
    # a retried ADD returns the same result and does not flap the pod
    again = bed.cni("ADD", "web-1").ok()
    assert again == result
    assert ping(pod_ns, UNDERLAY.ip, count=1).received >= 1
    # CHECK passes on the healthy pod
    bed.cni("CHECK", "web-1", prevResult=result).ok()


def test_add_fails_with_11_when_flows_never_come_and_retry_succeeds(veth_bed: AgentBed) -> None:
    bed = veth_bed
    bed.create_pod("web-1")
    started = time.monotonic()
    err = bed.cni("ADD", "web-1").error()
    assert err["code"] == 11 and "flows" in err["msg"], err
    assert FLOW_WAIT - 0.5 <= time.monotonic() - started < FLOW_WAIT + 5
    # nothing a retry needs was undone: port, IP and annotation are there
    port = port_name("default", "web-1")
    assert bed.ofport(port) is not None
    records = _ip_records(bed)
    assert len(records) == 1
    assert NETWORK_STATUS in bed.annotations("web-1")
    run, _ = bed.add_ready("web-1")
    result = run.ok()
    assert ipaddress.IPv4Interface(result["ips"][0]["address"]).ip == ipaddress.IPv4Address(records[0])
    assert _ip_records(bed) == records
    # what an operator sees: one wait timed out, the retry's was answered; one address of 253 in use
    page = _metrics_page(bed)
    assert metric(page, "sluice_agent_flow_wait_seconds_count", result="timeout") == 1
    assert metric(page, "sluice_agent_flow_wait_seconds_sum", result="timeout") >= FLOW_WAIT - 0.5
    assert metric(page, "sluice_agent_flow_wait_seconds_count", result="ready") == 1
    assert (
        metric(page, "sluice_agent_ipam_allocated_addresses"),
        metric(page, "sluice_agent_ipam_usable_addresses"),
    ) == (1, 253)
    bed.cni("DEL", "web-1").ok()
    page = _metrics_page(bed)
    # still reported (a sample line, not only its HELP), now as none
    assert "\nsluice_agent_ipam_allocated_addresses 0.0\n" in page
    assert metric(page, "sluice_agent_ipam_allocated_addresses") == 0


def test_del_releases_everything_and_is_idempotent(bed: AgentBed) -> None:
    netns_path = bed.create_pod("web-1")
    run, _ = bed.add_ready("web-1")
    run.ok()
    port = port_name("default", "web-1")
    bed.cni("DEL", "web-1").ok()
    assert bed.ofport(port) is None
    assert port not in bed.node.vsctl("list-ports", BRIDGE).split()
    assert not lab_netns.link_exists(bed.node.netns, port)
    assert not lab_netns.link_exists(os.path.basename(netns_path), "eth0")
    assert _ip_records(bed) == []
    ann = bed.annotations("web-1")
    assert NETWORK_STATUS not in ann and agent_kube.POD_PORT_NAME not in ann
    # twice, with an empty CNI_NETNS, and for a container never added
    bed.cni("DEL", "web-1").ok()
    bed.cni("DEL", "web-1", netns="").ok()
    bed.cni("DEL", "web-1", container_id="never-added").ok()


def test_del_without_pod_args_finds_the_attachment_by_container_id(veth_bed: AgentBed) -> None:
    # A runtime that is not the kubelet (cnitool, say) sends no K8S_POD_* on DEL: the CNI spec
    # identifies an attachment by container id and ifname, which the port's identity records.
    bed = veth_bed
    bed.create_pod("web-1")
    bed.create_pod("web-2")
    for name in ("web-1", "web-2"):
        run, _ = bed.add_ready(name)
        run.ok()
    web2_ip = json.loads(bed.annotations("web-2")[NETWORK_STATUS])[0]["ips"][0]
    bed.cni("DEL", "web-1", args="").ok()
    assert bed.ofport(port_name("default", "web-1")) is None
    assert NETWORK_STATUS not in bed.annotations("web-1")
    assert _ip_records(bed) == [web2_ip]
    assert bed.ofport(port_name("default", "web-2")) is not None  # the other pod untouched
    bed.cni("DEL", "web-1", args="").ok()  # and again: nothing left, still fine


def test_stale_del_leaves_the_live_pod_alone(veth_bed: AgentBed) -> None:
    bed = veth_bed
    bed.create_pod("web-1")
    run, _ = bed.add_ready("web-1", container_id="live-sandbox")
    result = run.ok()
    bed.cni("DEL", "web-1", container_id="old-sandbox").ok()
    assert bed.ofport(port_name("default", "web-1")) is not None
    assert len(_ip_records(bed)) == 1
    assert NETWORK_STATUS in bed.annotations("web-1")
    bed.cni("CHECK", "web-1", container_id="live-sandbox", prevResult=result).ok()


def test_a_new_sandbox_of_the_pod_replaces_the_old_one_and_waits_for_its_own_flows(
    veth_bed: AgentBed,
) -> None:
    # The pod's sandbox died and the runtime made another one; its DEL of the old one comes
    # later, if ever. The new sandbox gets the next address: the old one's flows (same pod, same
    # cookie) do not make it ready, and the controller has not caught up here (the test is it).
    bed = veth_bed
    old_netns = bed.create_pod("web-1")
    run, _ = bed.add_ready("web-1", container_id="sandbox-1")
    old = run.ok()
    old_ip = old["ips"][0]["address"]
    new_netns = str(bed.netns_factory().path)
    err = bed.cni("ADD", "web-1", container_id="sandbox-2", netns=new_netns).error()
    status = json.loads(bed.annotations("web-1")[NETWORK_STATUS])[0]
    new_ip = status["ips"][0]
    assert new_ip != old_ip.split("/")[0]
    assert err["code"] == 11 and f"for {new_ip} are not on br-int" in err["msg"], err
    # the old attachment is gone: its address, its interface; the port is the new sandbox's
    assert _ip_records(bed) == [new_ip]
    assert not lab_netns.link_exists(os.path.basename(old_netns), "eth0")
    port = port_name("default", "web-1")
    assert bed.node.vsctl("get", "Interface", port, "external_ids:sluice.io/container-id").strip('"\n') == (
        "sandbox-2"
    )
    # once the controller has programmed the new address, the retried ADD answers
    bed.reinstall_flows(["web-1"])
    new = bed.cni("ADD", "web-1", container_id="sandbox-2", netns=new_netns).ok()
    assert new["ips"][0]["address"] == f"{new_ip}/24"
    bed.cni("CHECK", "web-1", container_id="sandbox-2", netns=new_netns, prevResult=new).ok()
    assert ping(os.path.basename(new_netns), GATEWAY, count=1).received >= 1
    # the old sandbox's late DEL leaves the new one alone
    bed.cni("DEL", "web-1", container_id="sandbox-1", netns=old_netns).ok()
    assert bed.ofport(port) is not None and _ip_records(bed) == [new_ip]
    bed.cni("CHECK", "web-1", container_id="sandbox-2", netns=new_netns, prevResult=new).ok()


def test_a_port_of_another_pod_under_the_same_name_is_refused_and_kept(veth_bed: AgentBed) -> None:
    # Port names are a hash of the pod's namespace and name: two pods may collide.
    bed = veth_bed
    bed.create_pod("web-1")
    port = port_name("default", "web-1")
    bed.node.vsctl(
        "add-port", BRIDGE, port, "--", "set", "Interface", port, "type=internal",
        "external_ids:sluice.io/namespace=default", "external_ids:sluice.io/name=other",
    )  # fmt: skip
    err = bed.cni("ADD", "web-1").error()
    assert err["code"] == 104 and "belongs to pod default/other" in err["msg"], err
    assert "hash collision" in err["msg"], err
    assert bed.ofport(port) is not None and _ip_records(bed) == []
    assert not lab_netns.link_exists(os.path.basename(bed.pods["web-1"]), "eth0")


def test_add_for_a_pod_the_api_server_does_not_know_is_11_and_del_releases_it(veth_bed: AgentBed) -> None:
    # The Pod was deleted between the runtime's decision and the ADD: the network status cannot
    # be published, the runtime's DEL (which follows a failed ADD) releases what was made.
    bed = veth_bed
    sandbox = str(bed.netns_factory().path)
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=ghost;K8S_POD_UID=0123"
    err = bed.cni("ADD", "ghost", netns=sandbox, args=args).error()
    assert err["code"] == 11 and "Pod default/ghost does not exist in the API server" in err["msg"], err
    bed.cni("DEL", "ghost", netns=sandbox, args=args).ok()
    assert bed.ofport(port_name("default", "ghost")) is None and _ip_records(bed) == []
    assert not lab_netns.link_exists(os.path.basename(sandbox), "eth0")


def test_check_names_what_is_missing(veth_bed: AgentBed) -> None:
    bed = veth_bed
    netns_path = bed.create_pod("web-1")
    run, _ = bed.add_ready("web-1")
    result = run.ok()
    bed.cni("CHECK", "web-1", prevResult=result).ok()
    lab_netns.Netns(os.path.basename(netns_path)).ip("link", "del", "eth0")
    err = bed.cni("CHECK", "web-1", prevResult=result).error()
    assert err["code"] == 100 and "interface eth0 is missing" in err["msg"], err
    # a prevResult with another address is named too
    wrong = json.loads(json.dumps(result))
    wrong["ips"][0]["address"] = "100.64.1.200/24"
    err = bed.cni("CHECK", "web-1", prevResult=wrong).error()
    assert "100.64.1.200/24" in err["msg"], err
    # another sandbox of the pod, which holds no address here: both named
    err = bed.cni("CHECK", "web-1", container_id="other-sandbox", prevResult=result).error()
    assert err["code"] == 100 and "no IPAM record for other-sandbox/eth0" in err["msg"], err
    assert "belongs to container c-web-1" in err["msg"], err
    # the port deleted under the pod
    port = port_name("default", "web-1")
    bed.node.vsctl("del-port", BRIDGE, port)
    err = bed.cni("CHECK", "web-1", prevResult=result).error()
    assert err["code"] == 100 and f"OVS port {port} is missing" in err["msg"], err
    # nothing of the container on this node at all: 3 (unknown container)
    bed.create_pod("web-2")
    err = bed.cni("CHECK", "web-2", prevResult=result).error()
    assert err["code"] == 3 and "no attachment c-web-2/eth0 on this node" in err["msg"], err


def test_add_without_pod_args_is_a_clear_error(veth_bed: AgentBed) -> None:
    bed = veth_bed
    bed.create_pod("web-1")
    err = bed.cni("ADD", "web-1", args="IgnoreUnknown=1").error()
    assert err["code"] == 4 and "K8S_POD_NAMESPACE" in err["msg"] and "K8S_POD_NAME" in err["msg"]


def test_static_ip_requests(veth_bed: AgentBed) -> None:
    bed = veth_bed
    bed.create_pod("web-1")
    bed.create_pod("web-2")
    run, _ = bed.add_ready("web-1", runtimeConfig={"ips": ["100.64.1.77/24"]})
    assert run.ok()["ips"][0]["address"] == "100.64.1.77/24"
    err = bed.cni("ADD", "web-2", runtimeConfig={"ips": ["100.64.1.77/24"]}).error()
    assert err["code"] == 102 and "100.64.1.77" in err["msg"], err
    err = bed.cni("ADD", "web-2", runtimeConfig={"ips": ["100.64.9.7/24"]}).error()
    assert err["code"] == 7 and "not in the node's podCIDR" in err["msg"], err


def _status_error(bed: AgentBed, code: int) -> dict[str, Any]:
    """STATUS's error once it is `code` (the agent's OVSDB replica follows within moments)."""
    deadline = time.monotonic() + 10
    while (err := bed.cni("STATUS").error())["code"] != code:
        assert time.monotonic() < deadline, err
        time.sleep(0.05)
    return err


def test_status_0_then_51_while_the_bridge_or_its_ports_are_gone_then_50_without_ovs(
    veth_bed: AgentBed,
) -> None:
    bed = veth_bed
    bed.cni("STATUS").ok()
    # While ovs-vswitchd is stopped the agent cannot build anything again, so STATUS stays 51.
    with vswitchd_stopped(bed.node):
        # the underlay interface taken off br-phy, then the Geneve port deleted under the agent:
        # pods on other nodes are cut off
        bed.node.vsctl("--no-wait", "del-port", "br-phy", "uplink0")
        err = _status_error(bed, 51)
        assert "uplink0 gone" in err["msg"], err
        bed.node.vsctl("--no-wait", "del-port", BRIDGE, "sluice-tun0")
        err = _status_error(bed, 51)
        assert "uplink0, sluice-tun0 gone" in err["msg"], err
        # br-phy deleted, and the node's underlay address with its internal port
        bed.node.vsctl("--no-wait", "del-br", "br-phy")
        err = _status_error(bed, 51)
        assert "br-phy is gone" in err["msg"] and "underlay address" in err["msg"], err
        bed.node.vsctl("--no-wait", "del-br", BRIDGE)
        err = _status_error(bed, 51)
        assert BRIDGE in err["msg"] and "is gone" in err["msg"], err
    # vswitchd runs again: the agent builds both bridges and br-int's ports again, and br-phy
    # gets back the underlay address
    wait_until(
        lambda: bed.cni("STATUS").returncode == 0,
        20,
        "STATUS 0 once br-int and br-phy are built again",
        detail=bed.agent_log,
    )
    phys = lab_netns.Netns(bed.node.netns).ip("-4", "-o", "addr", "show", "dev", "br-phy").stdout
    assert str(UNDERLAY) in phys, phys
    assert "uplink0" in bed.node.vsctl("list-ports", "br-phy").split()
    # OVS gone altogether: ADD cannot be served
    bed.node.stop()
    err = _status_error(bed, 50)
    assert "OVSDB" in err["msg"], err


def test_status_50_until_the_node_has_a_pod_cidr(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> None:
    with agent_bed(ovs_node_factory, netns, pod_cidr=None) as bed:
        bed.start_agent(wait_ready=False)
        err = bed.cni("STATUS").error()
        assert err["code"] == 50 and "podCIDR" in err["msg"], err
        bed.create_pod("web-1")
        err = bed.cni("ADD", "web-1").error()
        assert err["code"] == 11 and "podCIDR" in err["msg"], err
        bed.in_node.run(bed.core.patch_node, NODE, {"spec": {"podCIDR": "100.64.1.0/24"}})
        wait_until(
            lambda: bed.cni("STATUS").returncode == 0, 15, "STATUS 0", interval=0.2, detail=bed.agent_log
        )
        assert bed.node_annotations()[agent_kube.NODE_TUNNEL_IP] == str(UNDERLAY.ip)


def _gc_config(key: str, attachments: list[dict[str, str]]) -> dict[str, Any]:
    """GC's network config addition listing `attachments` under `key`."""
    return {key: attachments}


def test_gc_removes_attachments_not_listed(veth_bed: AgentBed) -> None:
    bed = veth_bed
    for name in ("web-1", "web-2"):
        bed.create_pod(name)
        run, _ = bed.add_ready(name)
        run.ok()
    # without a list GC does nothing
    bed.cni("GC").ok()
    assert len(_ip_records(bed)) == 2
    keep = [{"containerID": "c-web-1", "ifname": "eth0"}]
    bed.cni("GC", **_gc_config("cni.dev/valid-attachments", keep)).ok()
    assert bed.ofport(port_name("default", "web-1")) is not None
    assert bed.ofport(port_name("default", "web-2")) is None
    assert len(_ip_records(bed)) == 1
    assert NETWORK_STATUS not in bed.annotations("web-2")
    assert NETWORK_STATUS in bed.annotations("web-1")
    # the legacy key works too
    bed.cni("GC", **_gc_config("cni.dev/attachments", [])).ok()
    assert bed.ofport(port_name("default", "web-1")) is None
    assert _ip_records(bed) == []


def test_twenty_parallel_adds_get_twenty_distinct_ips(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> None:
    with agent_bed(ovs_node_factory, netns) as bed:
        # a generous wait: on a loaded 2-core machine the stand-in controller may lag
        bed.start_agent(flow_wait_seconds=30.0)
        _twenty_parallel_adds(bed)


def _twenty_parallel_adds(bed: AgentBed) -> None:
    names = [f"par-{i}" for i in range(20)]
    for name in names:
        bed.create_pod(name)
    results: dict[str, Any] = {}

    def add(name: str) -> None:
        results[name] = bed.cni("ADD", name, timeoutSeconds=60)

    threads = [threading.Thread(target=add, args=(name,)) for name in names]
    with ControllerStandIn(bed):
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
    ips = [results[name].ok()["ips"][0]["address"] for name in names]
    assert len(set(ips)) == 20
    assert sorted(f"{r}/24" for r in _ip_records(bed)) == sorted(ips)
    for name in names:
        assert bed.ofport(port_name("default", name)) is not None


def test_concurrent_adds_and_dels_of_many_pods_leave_exactly_the_live_ones(veth_bed: AgentBed) -> None:
    # Churn: every pod goes ADD, DEL, ADD (and the odd ones DEL again), all pods at once, so
    # adds and deletions of different pods share OVSDB transactions while the agent's row
    # index is rebuilt under them. Afterwards the node holds exactly the live pods.
    bed = veth_bed
    names = [f"churn-{i}" for i in range(12)]
    for name in names:
        bed.create_pod(name)
    failures: list[str] = []
    added: dict[str, Any] = {}

    def churn(i: int, name: str) -> None:
        for step in ["ADD", "DEL", "ADD"] + (["DEL"] if i % 2 else []):
            run = bed.cni(step, name, timeoutSeconds=60)
            if run.returncode != 0:
                failures.append(f"{step} {name}: {run.stdout!r}")
            elif step == "ADD":
                added[name] = run.output

    threads = [threading.Thread(target=churn, args=(i, name)) for i, name in enumerate(names)]
    with ControllerStandIn(bed):
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert failures == []
        live = [name for i, name in enumerate(names) if i % 2 == 0]
        for name in live:
            bed.cni("CHECK", name, prevResult=added[name]).ok()
    ports = set(bed.node.vsctl("list-ports", BRIDGE).split())
    assert {n for n in names if port_name("default", n) in ports} == set(live)
    assert sorted(f"{r}/24" for r in _ip_records(bed)) == sorted(added[n]["ips"][0]["address"] for n in live)
    for name in names:
        assert (NETWORK_STATUS in bed.annotations(name)) == (name in live), name


def _ifindex(netns_name: str, ifname: str) -> int:
    out = lab_netns.Netns(netns_name).ip("-o", "link", "show", "dev", ifname).stdout
    return int(out.split(":", 1)[0])


def test_restart_reconciles_stale_pods_and_keeps_live_ones(veth_bed: AgentBed) -> None:
    bed = veth_bed
    netns_path = bed.create_pod("web-1")
    bed.create_pod("web-2")
    web3_netns = bed.create_pod("web-3")
    for name in ("web-1", "web-2", "web-3"):
        run, _ = bed.add_ready(name)
        run.ok()
    live_port = port_name("default", "web-1")
    before = (
        bed.ofport(live_port),
        _ifindex(bed.node.netns, live_port),
        _ifindex(os.path.basename(netns_path), "eth0"),
    )
    records = _ip_records(bed)
    assert bed.agent is not None and bed.agent.stop() == 0
    # while the agent is down: web-2 is deleted, web-3's sandbox is removed without a DEL (its
    # Pod stays), and an ADD crashed after allocating an address
    bed.in_node.run(bed.core.delete_namespaced_pod, "web-2", "default")
    subprocess.run(["ip", "netns", "delete", os.path.basename(web3_netns)], check=True)
    with Ipam(bed.ipam_dir, "100.64.1.0/24") as ipam:
        orphan = ipam.allocate(Owner("crashed-sandbox", "eth0", "default", "gone"))
    bed.start_agent()
    # the live pod is untouched: same ofport, same devices (no flap), same address
    after = (
        bed.ofport(live_port),
        _ifindex(bed.node.netns, live_port),
        _ifindex(os.path.basename(netns_path), "eth0"),
    )
    assert after == before
    web1_ip = json.loads(bed.annotations("web-1")[NETWORK_STATUS])[0]["ips"][0]
    assert _ip_records(bed) == [web1_ip]
    assert web1_ip in records and str(orphan.ip) not in _ip_records(bed)
    # the deleted pod's and the removed sandbox's ports and host ends are gone
    for stale_port in (port_name("default", "web-2"), port_name("default", "web-3")):
        assert bed.ofport(stale_port) is None
        assert not lab_netns.link_exists(bed.node.netns, stale_port)
    assert "sandbox c-web-3" in bed.agent_log() and "is gone: stale" in bed.agent_log()
    assert ping(os.path.basename(netns_path), UNDERLAY.ip, count=1).received >= 1


def _plumb_then_stop_the_agent(bed: AgentBed, pod: str) -> str:
    """ADD `pod` (its flows installed), then stop the agent; return the pod's address."""
    bed.create_pod(pod)
    run, _ = bed.add_ready(pod)
    address = str(run.ok()["ips"][0]["address"]).split("/")[0]
    assert bed.agent is not None and bed.agent.stop() == 0
    return address


def test_a_lost_ipam_store_is_rebuilt_from_the_live_ports(veth_bed: AgentBed) -> None:
    bed = veth_bed
    held = _plumb_then_stop_the_agent(bed, "web-1")
    shutil.rmtree(bed.ipam_dir)  # the state directory wiped, OVSDB kept
    bed.start_agent()
    assert "had no IPAM record: recorded again" in bed.agent_log()
    assert _ip_records(bed) == [held]
    with Ipam(bed.ipam_dir, "100.64.1.0/24") as ipam:
        (allocation,) = ipam.allocations()
    assert allocation.owner == Owner(
        "c-web-1", "eth0", "default", "web-1", bed.pod_uid("web-1"), bed.pods["web-1"]
    )
    # the next pod gets another address, and web-1's DEL frees its own
    bed.create_pod("web-2")
    run, _ = bed.add_ready("web-2")
    assert run.ok()["ips"][0]["address"].split("/")[0] != held
    bed.cni("DEL", "web-1").ok()
    assert held not in _ip_records(bed)


def test_records_of_earlier_agents_get_the_netns_so_their_pods_can_be_restored(veth_bed: AgentBed) -> None:
    bed = veth_bed
    held = _plumb_then_stop_the_agent(bed, "web-1")
    record = bed.ipam_dir / "allocations" / held
    doc = json.loads(record.read_text())
    del doc["netns"]  # as an agent before the netns was recorded wrote it
    record.write_text(json.dumps(doc))
    bed.start_agent()
    assert json.loads(record.read_text())["netns"] == bed.pods["web-1"]
    bed.node.vsctl("del-br", BRIDGE)
    wait_until(
        lambda: bed.ofport(port_name("default", "web-1")) is not None,
        15,
        "web-1 restored on a new br-int",
        detail=bed.agent_log,
    )
    assert _ip_records(bed) == [held]


# a network beyond the underlay subnet, reached through the other node: its route must follow the
# underlay address to br-phy
BEYOND = "198.19.0.0/24"


@contextlib.contextmanager
def _two_nodes_with_a_pod_each(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> Iterator[tuple[list[AgentBed], dict[str, str]]]:
    """node-1 with pod web-1 and node-2 with web-2, each node's uplink0 on one underlay bridge,
    both pods ADDed and their flows installed; yields the beds and the pods' IPs."""
    fabric = netns()
    fabric.ip("link", "add", "fabric0", "type", "bridge")
    fabric.ip("link", "set", "fabric0", "up")
    nodes = [
        ("node-1", "100.64.1.0/24", "198.18.0.11/24", "web-1", "198.18.0.12"),
        ("node-2", "100.64.2.0/24", "198.18.0.12/24", "web-2", "198.18.0.11"),
    ]
    with contextlib.ExitStack() as stack:
        beds: list[AgentBed] = []
        for i, (name, cidr, underlay, _, other) in enumerate(nodes, start=1):
            bed = stack.enter_context(
                agent_bed(
                    ovs_node_factory,
                    netns,
                    "veth",
                    cidr,
                    node_name=name,
                    underlay=ipaddress.IPv4Interface(underlay),
                    peer=(fabric.name, f"n{i}"),
                )
            )
            fabric.ip("link", "set", f"n{i}", "master", "fabric0")
            lab_netns.Netns(bed.node.netns).ip("route", "add", BEYOND, "via", other, "dev", "uplink0")
            bed.start_agent()
            beds.append(bed)
        runs: dict[str, Any] = {}
        threads = []
        for bed, (_, _, _, pod, _) in zip(beds, nodes, strict=True):
            bed.create_pod(pod)
            thread = threading.Thread(target=lambda b=bed, p=pod: runs.setdefault(p, b.cni("ADD", p)))
            thread.start()
            threads.append(thread)
        # the controller's part: both nodes' flows, from what the agents published
        deadline = time.monotonic() + FLOW_WAIT
        specs = []
        for bed, (_, _, _, pod, _) in zip(beds, nodes, strict=True):
            while (spec := bed.pod_spec(pod)).ofport is None:
                assert time.monotonic() < deadline, f"{pod} has no port"
                time.sleep(0.02)
            specs.append(spec)
        cluster = Cluster(tuple(b.node_spec() for b in beds), tuple(specs))
        for bed in beds:
            bed.node.add_flows(BRIDGE, render_flows(compile_node(cluster, bed.node_name)))
        for thread in threads:
            thread.join(30)
        results = {pod: run.ok() for pod, run in runs.items()}
        yield beds, {pod: result["ips"][0]["address"].split("/")[0] for pod, result in results.items()}


def _pods_talk(beds: list[AgentBed], ips: dict[str, str]) -> None:
    web1_ns, web2_ns = (os.path.basename(beds[i].pods[f"web-{i + 1}"]) for i in range(2))
    # the first packet may go while OVS resolves the remote tunnel endpoint's MAC (it ARPs
    # through br-phy and drops the packet meanwhile): warm up, then expect no loss
    ping(web1_ns, ips["web-2"], count=1)
    assert ping(web1_ns, ips["web-2"], count=3).received >= 3
    assert ping(web2_ns, ips["web-1"], count=2).received >= 2


def test_two_nodes_pods_talk_through_the_geneve_tunnel_over_br_phy(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> None:
    with _two_nodes_with_a_pod_each(ovs_node_factory, netns) as (beds, ips):
        _pods_talk(beds, ips)
        # the underlay's gateway route moved to br-phy with the address
        routes = lab_netns.Netns(beds[0].node.netns).ip("route", "show", BEYOND).stdout
        assert "via 198.18.0.12 dev br-phy" in routes, routes


@pytest.mark.parametrize("agent", ["running", "stopped"])
def test_deleted_br_phy_comes_back_with_the_underlay_address_and_routes(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory, agent: str
) -> None:
    # `ovs-vsctl del-br br-phy` takes the node's underlay address with br-phy's internal port:
    # nothing on the node still has it but the agent's record
    with _two_nodes_with_a_pod_each(ovs_node_factory, netns) as (beds, ips):
        bed = beds[0]
        ns = lab_netns.Netns(bed.node.netns)
        old_mac = lab_netns.link_info(bed.node.netns, "br-phy").mac
        if agent == "stopped":
            assert bed.agent is not None and bed.agent.stop() == 0
        bed.node.vsctl("del-br", "br-phy")
        assert "198.18.0.11" not in ns.ip("-4", "-o", "addr", "show").stdout
        if agent == "stopped":
            bed.start_agent()

        def underlay_back() -> bool:
            return "198.18.0.11/24" in ns.ip("-4", "-o", "addr", "show", "dev", "br-phy", check=False).stdout

        wait_until(underlay_back, 15, "br-phy back with 198.18.0.11/24", detail=bed.agent_log)
        assert "uplink0" in bed.node.vsctl("list-ports", "br-phy").split()
        routes = ns.ip("route", "show", BEYOND).stdout
        assert "via 198.18.0.12 dev br-phy" in routes, routes
        assert lab_netns.link_info(bed.node.netns, "br-phy").mac != old_mac  # a new device
        assert "putting back ['198.18.0.11/24']" in bed.agent_log()
        wait_until(lambda: bed.cni("STATUS").returncode == 0, 15, "STATUS 0", detail=bed.agent_log)
        # node-2 learned the new br-phy's MAC (announced): the pods talk across the tunnel again
        _pods_talk(beds, ips)


def test_agent_killed_during_add_then_restarted_leaks_nothing(veth_bed: AgentBed) -> None:
    bed = veth_bed
    bed.create_pod("web-1")
    bed.create_pod("web-2")
    run, _ = bed.add_ready("web-2")
    run.ok()
    port = port_name("default", "web-1")
    runs: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: runs.setdefault("add", bed.cni("ADD", "web-1")))
    thread.start()
    deadline = time.monotonic() + FLOW_WAIT
    while NETWORK_STATUS not in bed.annotations("web-1"):  # plumbed and published: waiting for flows
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert bed.agent is not None
    bed.agent.proc.kill()  # SIGKILL: no clean-up at all, the socket file stays behind
    bed.agent.proc.wait(5)
    thread.join(30)
    assert runs["add"].error()["code"] == 11  # the plugin reports the lost agent as "try again"
    # web-2's pod was deleted while the agent was down
    bed.in_node.run(bed.core.delete_namespaced_pod, "web-2", "default")
    bed.start_agent()
    # web-2's port and address are gone; web-1 (pod and sandbox alive) keeps its port and address
    assert bed.ofport(port_name("default", "web-2")) is None
    records = _ip_records(bed)
    assert len(records) == 1 and bed.ofport(port) is not None
    # and the retried ADD completes
    run, _ = bed.add_ready("web-1")
    assert ipaddress.IPv4Interface(run.ok()["ips"][0]["address"]).ip == ipaddress.IPv4Address(records[0])
    assert _ip_records(bed) == records


def test_internal_pod_is_attached_again_after_a_vswitchd_restart(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> None:
    with agent_bed(ovs_node_factory, netns, interface_type="internal") as bed:
        bed.start_agent()
        netns_path = bed.create_pod("web-1")
        run, _ = bed.add_ready("web-1")
        result = run.ok()
        pod_ns = os.path.basename(netns_path)
        assert bed.agent is not None and bed.agent.stop() == 0
        # a userspace vswitchd restart: the pod keeps a dead tap, vswitchd makes a fresh one
        bed.node.stop_vswitchd()
        bed.node.start_vswitchd()
        bed.start_agent()
        assert "attaching it again" in bed.agent.log()  # it was dead, and the agent noticed
        bed.cni("CHECK", "web-1", prevResult=result).ok()
        # the controller would push the flows again (a restarted vswitchd has none)
        bed.reinstall_flows(["web-1"])
        assert ping(pod_ns, UNDERLAY.ip, count=2).received >= 2


def _devices(bed: AgentBed, pods: list[str]) -> dict[str, tuple[int, int]]:
    """Each veth pod's (host end, pod interface) ifindexes."""
    devices = {}
    for name in pods:
        port, pod_ns = port_name("default", name), os.path.basename(bed.pods[name])
        devices[name] = (_ifindex(bed.node.netns, port), _ifindex(pod_ns, "eth0"))
    return devices


@pytest.mark.parametrize("kind", KINDS)
def test_deleted_bridge_is_rebuilt_at_once_and_its_pods_restored(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory, kind: str
) -> None:
    with agent_bed(ovs_node_factory, netns, interface_type=kind) as bed:
        bed.start_agent()  # the periodic resync (every 60 s) is not what notices
        pods = ["web-1", "web-2"]
        results = {}
        for name in pods:
            bed.create_pod(name)
            run, _ = bed.add_ready(name)
            results[name] = run.ok()
        records = _ip_records(bed)
        statuses = {name: bed.annotations(name)[NETWORK_STATUS] for name in pods}
        old_gateway = bed.node_annotations()["sluice.io/gateway-ofport"]
        devices = _devices(bed, pods) if kind == "veth" else {}  # (internal: no host end)
        bed.node.vsctl("del-br", BRIDGE)
        wait_until(
            lambda: all(bed.ofport(port_name("default", name)) for name in pods),
            15,
            "the agent to rebuild br-int and restore both pods' ports",
            detail=bed.agent_log,
        )
        bed.cni("STATUS").ok()
        # same addresses, nothing freed or published anew; the interfaces are as ADD made them
        assert _ip_records(bed) == records
        assert {name: bed.annotations(name)[NETWORK_STATUS] for name in pods} == statuses
        for name in pods:
            bed.cni("CHECK", name, prevResult=results[name]).ok()
        if kind == "veth":  # the pairs were intact: kept as they were, the pods saw nothing
            assert _devices(bed, pods) == devices
        # the gateway port is published again (a new bridge may number it differently)
        gateway = bed.node.ofport("sluice-gw0")
        assert bed.node_annotations()["sluice.io/gateway-ofport"] == str(gateway), old_gateway
        bed.reinstall_flows(pods)
        web1 = os.path.basename(bed.pods["web-1"])
        assert ping(web1, GATEWAY, count=1).received >= 1
        web2_ip = json.loads(statuses["web-2"])[0]["ips"][0]
        assert ping(web1, ipaddress.IPv4Address(web2_ip), count=1).received >= 1
        # and the pods are served as before
        bed.cni("DEL", "web-2").ok()
        assert web2_ip not in _ip_records(bed)


def test_deleted_gateway_and_geneve_ports_are_put_back_at_once(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> None:
    with agent_bed(ovs_node_factory, netns) as bed:
        bed.start_agent(resync_seconds=0)  # no periodic resync at all
        tunnel_ofport = bed.node.ofport("sluice-tun0")
        bed.node.vsctl("del-port", BRIDGE, "sluice-tun0", "--", "del-port", BRIDGE, "sluice-gw0")

        def repaired() -> bool:  # (ovs-vsctl returned once they were gone)
            ports = (bed.ofport("sluice-tun0"), bed.ofport("sluice-gw0"))
            return None not in ports and bed.cni("STATUS").returncode == 0

        wait_until(
            repaired,
            15,
            "both ports back and STATUS 0",
            detail=bed.agent_log,
        )
        assert bed.node.ofport("sluice-tun0") == tunnel_ofport  # the configured, fixed one
        assert bed.node_annotations()["sluice.io/gateway-ofport"] == str(bed.node.ofport("sluice-gw0"))
        bed.create_pod("web-1")
        run, _ = bed.add_ready("web-1")
        run.ok()
        assert ping(os.path.basename(bed.pods["web-1"]), GATEWAY, count=1).received >= 1


def test_ovs_restarted_under_the_running_agent_keeps_pods_and_serves_again(veth_bed: AgentBed) -> None:
    # ovsdb-server and ovs-vswitchd both restarted (an Open vSwitch upgrade does this), the
    # database kept: the agent reconnects, the pods keep their ports and addresses
    bed = veth_bed
    bed.create_pod("web-1")
    run, _ = bed.add_ready("web-1")
    run.ok()
    port = port_name("default", "web-1")
    before = (bed.ofport(port), _ifindex(bed.node.netns, port), _ip_records(bed))
    bed.node.stop()
    _status_error(bed, 50)  # no OVSDB: ADD cannot be served
    bed.node.start()
    wait_until(
        lambda: bed.cni("STATUS").returncode == 0,
        20,
        "STATUS 0 after OVS came back",
        detail=bed.agent_log,
    )
    assert (bed.ofport(port), _ifindex(bed.node.netns, port), _ip_records(bed)) == before
    bed.reinstall_flows(["web-1"])  # a restarted vswitchd has no flows until the controller's push
    assert ping(os.path.basename(bed.pods["web-1"]), GATEWAY, count=1).received >= 1
    bed.create_pod("web-2")
    run, _ = bed.add_ready("web-2")
    run.ok()
    bed.cni("DEL", "web-1").ok()
    assert bed.ofport(port) is None


def test_ovs_restarted_with_an_empty_database_gets_br_int_and_its_pods_back(veth_bed: AgentBed) -> None:
    # OVS restarted under the running agent having lost its database (reinstalled, or a node
    # image that does not keep /etc/openvswitch): everything the agent made is gone
    bed = veth_bed
    bed.create_pod("web-1")
    run, _ = bed.add_ready("web-1")
    result = run.ok()
    records = _ip_records(bed)
    bed.node.stop()
    bed.node.paths.db.unlink()
    bed.node.start()  # creates an empty database
    wait_until(
        lambda: bed.ofport(port_name("default", "web-1")) is not None and bed.cni("STATUS").returncode == 0,
        20,
        "br-int and web-1's port back, STATUS 0",
        detail=bed.agent_log,
    )
    assert _ip_records(bed) == records
    bed.cni("CHECK", "web-1", prevResult=result).ok()
    bed.reinstall_flows(["web-1"])
    assert ping(os.path.basename(bed.pods["web-1"]), GATEWAY, count=1).received >= 1


def test_bridge_deleted_while_the_agent_is_down_is_rebuilt_at_start_with_live_pods_only(
    veth_bed: AgentBed,
) -> None:
    bed = veth_bed
    pods = ["web-1", "web-2", "web-3", "web-4"]
    for name in pods:
        bed.create_pod(name)
        run, _ = bed.add_ready(name)
        run.ok()
    ips = {name: json.loads(bed.annotations(name)[NETWORK_STATUS])[0]["ips"][0] for name in pods}
    devices = _devices(bed, ["web-1", "web-4"])
    assert bed.agent is not None and bed.agent.stop() == 0
    # while the agent is down: the bridge is deleted, web-2's Pod too, web-3's sandbox too, and
    # web-4's veth pair
    bed.node.vsctl("del-br", BRIDGE)
    lab_netns.Netns(bed.node.netns).ip("link", "del", port_name("default", "web-4"))
    bed.in_node.run(bed.core.delete_namespaced_pod, "web-2", "default")
    # (`ip netns delete`, as a runtime removes a sandbox; the fixture's registry entry stays)
    subprocess.run(["ip", "netns", "delete", os.path.basename(bed.pods["web-3"])], check=True)
    bed.start_agent()
    log = bed.agent.log()
    assert "web-1" in log and "restored" in log, log
    assert "sandbox's namespace is gone" in log, log
    # web-1 is back with its address and its very pair; web-4 with its address and a new pair;
    # web-2 and web-3 are gone, addresses and host ends alike
    for name in ("web-1", "web-4"):
        assert bed.ofport(port_name("default", name)) is not None
    assert _devices(bed, ["web-1"]) == {"web-1": devices["web-1"]}
    assert _devices(bed, ["web-4"]) != {"web-4": devices["web-4"]}
    assert _ip_records(bed) == sorted([ips["web-1"], ips["web-4"]])
    for name in ("web-2", "web-3"):
        assert bed.ofport(port_name("default", name)) is None
        assert not lab_netns.link_exists(bed.node.netns, port_name("default", name))
    bed.reinstall_flows(["web-1", "web-4"])
    for name in ("web-1", "web-4"):
        assert ping(os.path.basename(bed.pods[name]), GATEWAY, count=1).received >= 1


def test_internal_pod_is_attached_again_soon_after_vswitchd_restarts_under_the_agent(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> None:
    with agent_bed(ovs_node_factory, netns, interface_type="internal") as bed:
        bed.start_agent()  # the periodic resync (every 60 s) is not what notices
        bed.create_pod("web-1")
        run, _ = bed.add_ready("web-1")
        result = run.ok()
        bed.node.stop_vswitchd()
        bed.node.start_vswitchd()  # the pod keeps a dead tap, vswitchd makes a fresh one
        wait_until(
            lambda: bed.cni("CHECK", "web-1", prevResult=result).returncode == 0,
            15,
            "web-1 attached again",
            detail=bed.agent_log,
        )
        log = bed.agent_log()
        assert "ovs-vswitchd restarted" in log and "attaching it again" in log, log
        bed.reinstall_flows(["web-1"])  # as the controller does for the restarted vswitchd
        assert ping(os.path.basename(bed.pods["web-1"]), GATEWAY, count=2).received >= 2


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_older_runtimes_get_the_result_in_their_version(veth_bed: AgentBed, version: str) -> None:
    bed = veth_bed
    bed.create_pod("web-1")
    run, _ = bed.add_ready("web-1", version=version)
    result = run.ok()
    assert result["cniVersion"] == version
    assert "mtu" not in result["interfaces"][1]
    assert ("version" in result["ips"][0]) is (version == "0.4.0")
    bed.cni("CHECK", "web-1", version=version, prevResult=result).ok()
    bed.cni("DEL", "web-1", version=version).ok()
    assert _ip_records(bed) == []


def test_add_into_a_missing_netns_fails_with_8_and_keeps_nothing(bed: AgentBed) -> None:
    bed.create_pod("web-1")
    err = bed.cni("ADD", "web-1", netns="/run/netns/sluice-test-no-such-ns").error()
    assert err["code"] == 8 and "sluice-test-no-such-ns" in err["msg"], err
    assert _ip_records(bed) == []
    assert bed.ofport(port_name("default", "web-1")) is None
    assert NETWORK_STATUS not in bed.annotations("web-1")


def test_periodic_resync_removes_what_belongs_to_nothing_and_keeps_live_pods(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> None:
    with agent_bed(ovs_node_factory, netns) as bed:
        bed.start_agent(resync_seconds=0.3)
        live_ns = os.path.basename(bed.create_pod("web-1"))
        bed.create_pod("web-2")
        for name in ("web-1", "web-2"):
            run, _ = bed.add_ready(name)
            run.ok()
        live_port = port_name("default", "web-1")
        before = (bed.ofport(live_port), _ifindex(bed.node.netns, live_port), _ifindex(live_ns, "eth0"))
        web1_ip = json.loads(bed.annotations("web-1")[NETWORK_STATUS])[0]["ips"][0]
        # while the agent runs: web-2's Pod is deleted and no DEL ever comes, another process
        # leaves an address of nothing in the store, and a veth named like a pod port is left
        bed.in_node.run(bed.core.delete_namespaced_pod, "web-2", "default")
        with Ipam(bed.ipam_dir, "100.64.1.0/24") as ipam:
            orphan = ipam.allocate(Owner("crashed-sandbox", "eth0", "default", "gone"))
        lab_netns.Netns(bed.node.netns).ip("link", "add", "orphan-0123abcd", "type", "veth")
        # ... and a port with a Sluice identity that cannot be read (no address, no sandbox)
        bed.node.vsctl(
            "add-port", BRIDGE, "garbled0", "--", "set", "Interface", "garbled0", "type=internal",
            "external_ids:sluice.io/namespace=default", "external_ids:sluice.io/name=web-9",
        )  # fmt: skip
        stale_port = port_name("default", "web-2")
        # The whole end state: a resync frees web-2's address a moment after it removes its port,
        # and the orphan address can go one resync earlier (one that listed the Pods just before
        # web-2's was deleted), so no single part of it says the resync is done.
        wait_until(
            lambda: (
                bed.ofport(stale_port) is None
                and bed.ofport("garbled0") is None
                and _ip_records(bed) == [web1_ip]
                and not lab_netns.link_exists(bed.node.netns, "orphan-0123abcd")
            ),
            15,
            "the resync to remove the stale port and address, the garbled port, the orphan address and link",
            detail=lambda: f"IPAM records {_ip_records(bed)}\n{bed.agent_log()}",
        )
        assert "port garbled0: unreadable identity" in bed.agent_log()
        assert not lab_netns.link_exists(bed.node.netns, stale_port)
        assert _ip_records(bed) == [web1_ip] and str(orphan.ip) != web1_ip
        after = (bed.ofport(live_port), _ifindex(bed.node.netns, live_port), _ifindex(live_ns, "eth0"))
        assert after == before
        assert ping(live_ns, GATEWAY, count=1).received >= 1
        # ADDs keep working while resyncs run
        bed.create_pod("web-3")
        run, _ = bed.add_ready("web-3")
        run.ok()
        assert len(_ip_records(bed)) == 2
        # the API server goes away: the Pods cannot be listed, so nothing may count as gone
        records, ports = _ip_records(bed), bed.node.vsctl("list-ports", BRIDGE)
        bed.in_node.run(bed.apiserver.stop)
        wait_until(
            lambda: bed.agent_log().count("reconcile skipped: cannot list this node's Pods") >= 2,
            15,
            "two resyncs skipped for want of the Pod list",
            detail=bed.agent_log,
        )
        assert (_ip_records(bed), bed.node.vsctl("list-ports", BRIDGE)) == (records, ports)
        assert ping(live_ns, GATEWAY, count=1).received >= 1


def test_exhausted_range_is_a_clear_error_and_never_a_duplicate(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> None:
    # a /30: the gateway takes .1, one address (.2) is left for pods
    with agent_bed(ovs_node_factory, netns, pod_cidr="100.64.1.0/30") as bed:
        bed.start_agent()
        bed.create_pod("web-1")
        bed.create_pod("web-2")
        run, _ = bed.add_ready("web-1")
        assert run.ok()["ips"][0]["address"] == "100.64.1.2/30"
        err = bed.cni("ADD", "web-2").error()
        assert err["code"] == 101 and "100.64.1.0/30" in err["msg"], err
        assert _ip_records(bed) == ["100.64.1.2"]
        assert bed.ofport(port_name("default", "web-2")) is None
        # once web-1 is gone its address serves web-2
        bed.cni("DEL", "web-1").ok()
        run, _ = bed.add_ready("web-2")
        assert run.ok()["ips"][0]["address"] == "100.64.1.2/30"


def test_gc_keeps_going_past_errors_and_reports_them_all(veth_bed: AgentBed) -> None:
    bed = veth_bed
    for name in ("web-1", "web-2"):
        bed.create_pod(name)
        run, _ = bed.add_ready(name)
        run.ok()
    # the API server goes away: clearing each pod's annotations fails, removing the rest does not
    bed.in_node.run(bed.apiserver.stop)
    err = bed.cni("GC", **_gc_config("cni.dev/valid-attachments", [])).error()
    assert err["code"] == 105 and "2 error(s)" in err["msg"], err
    assert err["details"].count("cannot remove the network status") == 2, err
    for name in ("web-1", "web-2"):
        assert bed.ofport(port_name("default", name)) is None
    assert _ip_records(bed) == []
