"""Real OVS per node: daemons in namespaces, isolation, stop/cleanup by PID, pod traffic."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lab import netns as netns_lib
from lab.ovs import Daemon, OvsError, OvsNode
from lab.pods import attach_veth_pod, detach_veth_pod
from lab.procs import pid_alive
from lab.traffic import ping, tcp_exchange
from tests.conftest import NetnsFactory, OvsNodeFactory
from tests.support import require, require_root_and_ovs

pytestmark = pytest.mark.ovs


def _netns_inode_of_pid(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_node_runs_in_its_namespace_with_netdev_br_int(ovs_node: OvsNode) -> None:
    show = ovs_node.vsctl("show")
    assert "Bridge br-int" in show
    assert "datapath_type: netdev" in show
    assert "fail_mode: secure" in show
    assert ovs_node.vsctl("get", "Bridge", "br-int", "datapath_type").strip() == "netdev"
    assert ovs_node.vsctl("get", "Bridge", "br-int", "protocols").strip() == "[OpenFlow13, OpenFlow15]"
    assert "netdev@ovs-netdev" in ovs_node.appctl("dpif/show")
    assert ovs_node.appctl("version", daemon=Daemon.OVSDB_SERVER).startswith("ovsdb-server")
    # ovs-ofctl reaches the bridge through RUNDIR/br-int.mgmt (OVS_RUNDIR), empty: secure mode.
    assert ovs_node.paths.mgmt("br-int").exists()
    assert ovs_node.dump_flows("br-int") == []

    ns_inode = os.stat(f"/run/netns/{ovs_node.netns}").st_ino
    pids = ovs_node.pids
    assert pids.ovsdb_server is not None and pids.vswitchd is not None
    assert _netns_inode_of_pid(pids.vswitchd) == ns_inode
    assert _netns_inode_of_pid(pids.ovsdb_server) == ns_inode
    assert _netns_inode_of_pid(pids.vswitchd) != _netns_inode_of_pid(os.getpid())
    # The bridge's internal port is a tap device inside the node's namespace, not ours.
    assert netns_lib.link_exists(ovs_node.netns, "br-int")


def test_tool_errors_carry_stderr(ovs_node: OvsNode) -> None:
    with pytest.raises(OvsError) as err:
        ovs_node.vsctl("get", "Bridge", "no-such-br", "name")
    assert "no-such-br" in err.value.stderr and err.value.returncode != 0
    # Plain ovs-ofctl speaks OpenFlow10, which an OpenFlow13,OpenFlow15 bridge refuses.
    with pytest.raises(OvsError) as err:
        ovs_node.ofctl("dump-flows", "br-int", protocol=None)
    assert "version negotiation failed" in err.value.stderr
    with pytest.raises(OvsError, match="already runs ovs-vswitchd"):
        ovs_node.start_vswitchd()


def test_two_nodes_at_once_do_not_interfere(ovs_node_factory: OvsNodeFactory) -> None:
    a = ovs_node_factory(name="node-a")
    b = ovs_node_factory(name="node-b")
    assert a.netns != b.netns and a.rundir != b.rundir
    assert {a.pids.vswitchd, a.pids.ovsdb_server}.isdisjoint({b.pids.vswitchd, b.pids.ovsdb_server})

    a.ofctl("add-flow", "br-int", "cookie=0x51,table=0,priority=10,ip,actions=drop")
    b.ofctl("add-flow", "br-int", "cookie=0x52,table=0,priority=20,arp,actions=drop")
    flows_a, flows_b = a.dump_flows("br-int"), b.dump_flows("br-int")
    assert len(flows_a) == 1 and "cookie=0x51" in flows_a[0]
    assert len(flows_b) == 1 and "cookie=0x52" in flows_b[0]

    a.vsctl("set", "Bridge", "br-int", "external_ids:sluice.io/test=a")
    assert "sluice.io/test" not in b.vsctl("get", "Bridge", "br-int", "external_ids")
    assert a.vsctl("get", "Open_vSwitch", ".", "external_ids:system-id").strip() == "node-a"
    assert b.vsctl("get", "Open_vSwitch", ".", "external_ids:system-id").strip() == "node-b"


def test_stop_restart_and_close_leave_nothing(ovs_node_factory: OvsNodeFactory) -> None:
    node = ovs_node_factory()
    node.ofctl("add-flow", "br-int", "priority=5,actions=drop")
    first = node.pids
    assert first.vswitchd is not None and first.ovsdb_server is not None

    node.stop()
    assert not pid_alive(first.vswitchd) and not pid_alive(first.ovsdb_server)
    assert node.pids.vswitchd is None and not node.is_running()
    assert netns_lib.netns_exists(node.netns) and node.paths.db.exists()

    # Restart from the same database: the bridge is configured again (flows are not persisted).
    node.start()
    assert node.is_running() and node.pids.vswitchd != first.vswitchd
    assert "Bridge br-int" in node.vsctl("show")
    assert node.dump_flows("br-int") == []  # flows live in vswitchd only: a restart loses them

    # vswitchd alone restarts, keeping ovsdb-server.
    db_pid = node.pids.ovsdb_server
    node.stop_vswitchd()
    node.start_vswitchd()
    assert node.pids.ovsdb_server == db_pid and node.is_running()

    last = node.pids
    node.close()
    assert last.vswitchd is not None and last.ovsdb_server is not None
    assert not pid_alive(last.vswitchd) and not pid_alive(last.ovsdb_server)
    assert not netns_lib.netns_exists(node.netns)
    assert not node.rundir.exists()
    assert netns_lib.read_entry(node.netns) is None


def test_cleanup_leftovers_removes_a_crashed_runs_node_only(netns: NetnsFactory) -> None:
    prefix = f"slc{os.getpid():x}"
    live = netns(prefix)  # owned by this (live) process: must survive the cleanup
    crashed = textwrap.dedent(
        f"""
        import os, sys
        from lab.ovs import OvsNode
        node = OvsNode.create({prefix!r})
        node.start()
        node.add_bridge("br-int")
        print(node.netns, node.rundir, node.pids.vswitchd, node.pids.ovsdb_server, flush=True)
        os._exit(0)  # "crash": no cleanup at all
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", crashed],
        capture_output=True, text=True, check=True, timeout=60, cwd=Path(__file__).parents[2],
    ).stdout.split()  # fmt: skip
    name, rundir, vswitchd, ovsdb = out[0], Path(out[1]), int(out[2]), int(out[3])
    assert netns_lib.netns_exists(name) and pid_alive(vswitchd) and pid_alive(ovsdb)

    removed = netns_lib.cleanup_leftovers(prefix)

    assert removed == [name]
    assert not netns_lib.netns_exists(name) and not rundir.exists()
    assert not pid_alive(vswitchd) and not pid_alive(ovsdb)
    assert netns_lib.netns_exists(live.name)


def test_delete_refuses_a_namespace_that_is_not_ours() -> None:
    require_root_and_ovs()
    with pytest.raises(netns_lib.NotOursError):
        netns_lib.delete_netns("sluice-never-registered")
    with pytest.raises(ValueError):
        netns_lib.cleanup_leftovers("", include_live=True)


def test_pods_ping_and_tcp_through_explicit_flows(ovs_node: OvsNode, netns: NetnsFactory) -> None:
    for tool in ("ethtool", "ping"):
        require(shutil.which(tool) is not None, f"needs {tool}: `make test` installs it")
    pod1, pod2 = netns("sltp"), netns("sltp")
    p1 = attach_veth_pod(
        ovs_node, pod1.name, host_ifname="vp1", ip="100.64.1.2/24",
        mac="0a:58:64:40:01:02", mtu=1450, ofport=1,
    )  # fmt: skip
    p2 = attach_veth_pod(
        ovs_node, pod2.name, host_ifname="vp2", ip="100.64.1.3/24",
        mac="0a:58:64:40:01:03", mtu=1450, ofport=2,
    )  # fmt: skip
    assert (p1.ofport, p2.ofport) == (1, 2)
    assert p1.mac == "0a:58:64:40:01:02" and p1.mtu == 1450
    assert "tx-checksumming: off" in pod1.exec("ethtool", "-k", "eth0").stdout

    # fail_mode=secure and no flows: the bridge drops everything.
    assert ping(pod1.name, p2.ip.ip, count=1, wait=0.5).received == 0

    ovs_node.ofctl("add-flow", "br-int", "table=0,priority=100,in_port=1,actions=output:2")
    ovs_node.ofctl("add-flow", "br-int", "table=0,priority=100,in_port=2,actions=output:1")
    result = ping(pod1.name, p2.ip.ip, count=3)
    assert result.ok, result.output
    exchange = tcp_exchange(pod2.name, pod1.name, p2.ip.ip, size=1 << 20)
    assert exchange.size == 1 << 20

    stats = ovs_node.ofctl("dump-flows", "br-int", "in_port=1")
    assert "n_packets=0" not in stats

    detach_veth_pod(ovs_node, p1)
    assert not netns_lib.link_exists(ovs_node.netns, "vp1")
    assert not netns_lib.link_exists(pod1.name, "eth0")
    assert "vp1" not in ovs_node.vsctl("list-ports", "br-int")
